//! The narrowing rule, without HTTP: unit tests of each clause, and property
//! tests over random chains derived hop by hop.

use proptest::prelude::*;

use super::*;
use crate::claims::{MayAct, Scope, ScopeSet};
use crate::narrowing::tests::{masked, UNIVERSE};
use crate::narrowing::{check_path, PathError};

const AGENTS: [&str; 4] = ["a", "b", "c", "d"];
const API: &str = "https://api.example";
/// Deep enough for every chain built here; tests pick smaller limits.
const ROOMY: u32 = 16;

fn scopes(text: &str) -> ScopeSet {
    ScopeSet::parse(text).unwrap()
}

fn issuance(jti: &str, bound: bool) -> Issuance {
    Issuance {
        issuer: "https://baton.example".into(),
        issued_at: UnixTime(100),
        iat_micros: UnixMicros(100_000_000),
        jti: TokenId(jti.into()),
        bound_to: bound.then(|| format!("key-{jti}")),
        approval: None,
    }
}

fn allowance(target: &str, scope: &ScopeSet, exp: i64) -> Allowance {
    Allowance::for_tests(target, scope.clone(), UnixTime(exp))
}

/// `a`'s own token for `b`, with scopes `s0 s1 s2` until 1000.
fn a_for_b(bound: bool) -> Claims {
    own_token(&"a".into(), &allowance("b", &scopes("s0 s1 s2"), 1000), issuance("root", bound)).into_claims()
}

/// A person's sign-in at a provider as a chain's root hop.
fn sign_in(scope: Option<&str>, exp: i64) -> Hop {
    Hop {
        jti: TokenId("sign-in".into()),
        agent: "web-app".into(),
        aud: "web-app".into(),
        scope: scope.map(scopes).unwrap_or_default(),
        iat: UnixTime(50),
        exp: UnixTime(exp),
        jkt: None,
        iss: Some("https://idp.example".into()),
        approval: None,
        acts_again: false,
        iat_micros: None,
    }
}

#[test]
fn a_child_one_past_the_depth_limit_is_refused() {
    let root = a_for_b(false);
    let narrower = allowance("c", &scopes("s0"), 900);
    // The limit is the largest depth a token may have (DESIGN.md §10).
    assert_eq!(
        child_of(&root, &"b".into(), &narrower, 0, Reentry::Refuse, issuance("t1", false)),
        Err(ChainError::Widened(Widening::TooDeep { depth: 1, limit: 0 }))
    );
    let child = child_of(&root, &"b".into(), &narrower, 1, Reentry::Refuse, issuance("t1", false)).unwrap();
    assert_eq!(child.claims().delegation.depth, 1);
    assert_eq!(check_path(child.claims(), 1), Ok(()));
    assert_eq!(check_path(child.claims(), 0), Err(PathError::TooDeep));
    assert_eq!(child_depth(4, 5), Ok(5));
    assert_eq!(child_depth(5, 5), Err(Widening::TooDeep { depth: 6, limit: 5 }));
}

/// a's token for b, exchanged by b for a: the next hop would be a's again.
fn b_back_to_a() -> Claims {
    let root = a_for_b(false);
    let back = allowance("a", &scopes("s0"), 900);
    child_of(&root, &"b".into(), &back, ROOMY, Reentry::Refuse, issuance("t1", false)).unwrap().into_claims()
}

#[test]
fn the_depth_limit_is_reported_before_an_agent_acting_again() {
    let back_to_a = b_back_to_a();
    assert_eq!(
        child_of(
            &back_to_a,
            &"a".into(),
            &allowance(API, &scopes("s0"), 800),
            1,
            Reentry::Refuse,
            issuance("t2", false)
        ),
        Err(ChainError::Widened(Widening::TooDeep { depth: 2, limit: 1 }))
    );
}

#[test]
fn an_agent_acts_again_only_where_its_registration_allows_and_the_hop_says_so() {
    let back_to_a = b_back_to_a();
    assert!(!back_to_a.delegation.acts_again, "b is new to the chain");
    let again = allowance(API, &scopes("s0"), 800);
    assert_eq!(
        child_of(&back_to_a, &"a".into(), &again, ROOMY, Reentry::Refuse, issuance("t2", false)),
        Err(ChainError::ActsAgain)
    );
    assert_eq!(acts_again(&back_to_a, &"a".into(), Reentry::Refuse), Err(ChainError::ActsAgain));
    assert_eq!(acts_again(&back_to_a, &"c".into(), Reentry::Refuse), Ok(false));
    let allowed = child_of(&back_to_a, &"a".into(), &again, ROOMY, Reentry::Allow, issuance("t2", false)).unwrap();
    assert!(allowed.claims().delegation.acts_again, "the repeat is marked");
    assert_eq!(check_path(allowed.claims(), ROOMY), Ok(()));
    // Unmarked, the same path is one the broker did not write.
    let mut unmarked = allowed.into_claims();
    unmarked.delegation.acts_again = false;
    assert_eq!(check_path(&unmarked, ROOMY), Err(PathError::ActsAgain));
}

#[test]
fn the_child_of_a_bound_token_is_bound() {
    let bound = a_for_b(true);
    let narrower = allowance("c", &scopes("s0"), 900);
    assert_eq!(
        child_of(&bound, &"b".into(), &narrower, ROOMY, Reentry::Refuse, issuance("t1", false)),
        Err(ChainError::Unbound)
    );
    let child = child_of(&bound, &"b".into(), &narrower, ROOMY, Reentry::Refuse, issuance("t1", true)).unwrap();
    assert_eq!(child.claims().jkt(), Some("key-t1"));
    assert_eq!(child.claims().delegation.hops[0].jkt.as_deref(), Some("key-root"));
    assert!(child.claims().path_is_bound());
    // An unbound token's child may be bound.
    let unbound = a_for_b(false);
    assert!(child_of(&unbound, &"b".into(), &narrower, ROOMY, Reentry::Refuse, issuance("t1", true)).is_ok());
    assert_eq!(stays_bound(false, false), Ok(()));
    assert_eq!(stays_bound(true, false), Err(ChainError::Unbound));
}

#[test]
fn a_persons_root_hop_caps_the_first_hops_scopes_and_expiry() {
    let capped = sign_in(Some("s0 s1"), 600);
    let beyond = allowance("b", &scopes("s0 s2"), 500);
    assert_eq!(
        first_hop(capped.clone(), &"alice".into(), &"a".into(), &beyond, ROOMY, issuance("t1", false)),
        Err(ChainError::Widened(Widening::ScopeWidened))
    );
    let longer = allowance("b", &scopes("s0"), 601);
    assert_eq!(
        first_hop(capped.clone(), &"alice".into(), &"a".into(), &longer, ROOMY, issuance("t1", false)),
        Err(ChainError::Widened(Widening::LifetimeExtended))
    );
    let within = allowance("b", &scopes("s0 s1"), 600);
    assert_eq!(
        first_hop(capped.clone(), &"alice".into(), &"a".into(), &within, 0, issuance("t1", false)),
        Err(ChainError::Widened(Widening::TooDeep { depth: 1, limit: 0 }))
    );
    let child = first_hop(capped, &"alice".into(), &"a".into(), &within, ROOMY, issuance("t1", false)).unwrap();
    let claims = child.claims();
    assert_eq!((claims.sub.as_str(), claims.client_id.as_str(), claims.delegation.depth), ("alice", "a", 1));
    assert_eq!(claims.act, Some(Actor { sub: "a".into(), act: None }));
    assert_eq!(check_path(claims, 1), Ok(()));
    assert!(!claims.has_acted(&"web-app".into()), "the sign-in's client is not an agent of the chain");

    // A sign-in without scopes leaves them to policy (DESIGN.md §10); its
    // expiry still caps the chain.
    let uncapped = sign_in(None, 600);
    let anything = allowance("b", &scopes("s4 s5"), 600);
    let child =
        first_hop(uncapped.clone(), &"alice".into(), &"a".into(), &anything, ROOMY, issuance("t1", false)).unwrap();
    assert_eq!(check_path(child.claims(), 1), Ok(()));
    assert_eq!(
        first_hop(
            uncapped,
            &"alice".into(),
            &"a".into(),
            &allowance("b", &scopes("s4"), 700),
            ROOMY,
            issuance("t1", false)
        ),
        Err(ChainError::Widened(Widening::LifetimeExtended))
    );
}

#[test]
fn an_approval_is_recorded_on_the_token_and_kept_by_its_descendants() {
    let approval = HopApproval { id: "ap-1".into(), approver: "owner@example".into(), approved_at: UnixTime(90) };
    let approved = Issuance { approval: Some(approval.clone()), ..issuance("root", false) };
    let root = own_token(&"a".into(), &allowance("b", &scopes("s0"), 1000), approved).into_claims();
    assert_eq!(root.delegation.approval.as_ref(), Some(&approval));
    let child = child_of(
        &root,
        &"b".into(),
        &allowance("c", &scopes("s0"), 900),
        ROOMY,
        Reentry::Refuse,
        issuance("t1", false),
    )
    .unwrap()
    .into_claims();
    assert_eq!(child.delegation.approval, None, "the child needed none of its own");
    assert_eq!(child.delegation.hops[0].approval.as_ref(), Some(&approval));
}

/// One hop of a generated chain: who obtains it, a mask of `UNIVERSE` its
/// scopes are taken from, how much earlier than its parent it expires, and
/// whether its requester proves a key.
#[derive(Debug, Clone)]
struct Plan {
    agent: usize,
    mask: u8,
    shorten: i64,
    bind: bool,
}

fn plan() -> impl Strategy<Value = Plan> {
    (0..AGENTS.len(), 1..64u8, 0..200i64, any::<bool>()).prop_map(|(agent, mask, shorten, bind)| Plan {
        agent,
        mask,
        shorten,
        bind,
    })
}

/// A chain the broker would write: each hop obtained by the agent its parent
/// was addressed to, narrowing as the plans say (repeats allowed, so marked).
/// The last token is addressed to `AGENTS[next]`.
fn walk(plans: &[Plan], next: usize) -> Claims {
    let target = |index: usize| plans.get(index).map_or(AGENTS[next], |plan| AGENTS[plan.agent]);
    let first = &plans[0];
    let root_grant = allowance(target(1), &masked(first.mask), 1000 - first.shorten);
    let mut token = own_token(&AGENTS[first.agent].into(), &root_grant, issuance("t0", first.bind)).into_claims();
    for (index, plan) in plans.iter().enumerate().skip(1) {
        let scope = masked(plan.mask).intersection(&token.scope);
        let exp = token.exp.0 - plan.shorten;
        let bound = plan.bind || token.cnf.is_some();
        let hop = allowance(target(index + 1), &scope, exp);
        token = child_of(
            &token,
            &AGENTS[plan.agent].into(),
            &hop,
            ROOMY,
            Reentry::Allow,
            issuance(&format!("t{index}"), bound),
        )
        .unwrap()
        .into_claims();
    }
    token
}

fn chain() -> impl Strategy<Value = Claims> {
    (proptest::collection::vec(plan(), 1..7), 0..AGENTS.len()).prop_map(|(plans, next)| walk(&plans, next))
}

/// An exchange of `parent` by the agent it is addressed to, asking for any
/// scopes and expiry (half the time scopes the parent holds, so that many
/// exchanges succeed), within any limit, with or without a proof.
#[derive(Debug, Clone)]
struct Exchange {
    mask: u8,
    within: bool,
    extend: i64,
    bound: bool,
    limit: u32,
    reentry: Reentry,
    may_act: bool,
}

fn exchange() -> impl Strategy<Value = Exchange> {
    (0..64u8, any::<bool>(), -300..300i64, any::<bool>(), 0..9u32, any::<bool>(), any::<bool>()).prop_map(
        |(mask, within, extend, bound, limit, allow, may_act)| Exchange {
            mask,
            within,
            extend,
            bound,
            limit,
            reentry: if allow { Reentry::Allow } else { Reentry::Refuse },
            may_act,
        },
    )
}

/// The scopes `ask` asks of `parent`.
fn asked_scopes(parent: &Claims, ask: &Exchange) -> ScopeSet {
    let scopes = masked(ask.mask);
    if ask.within {
        scopes.intersection(&parent.scope)
    } else {
        scopes
    }
}

/// Applies `ask` to `parent` (which may carry `may_act`): the parent as
/// exchanged, and the result.
fn exchanged(mut parent: Claims, ask: &Exchange) -> (Claims, Result<Derived, ChainError>) {
    if ask.may_act {
        parent.may_act = Some(MayAct { sub: AgentId::of_audience(&parent.aud), iss: None });
    }
    let actor = AgentId::of_audience(&parent.aud);
    let asked = allowance(API, &asked_scopes(&parent, ask), parent.exp.0 + ask.extend);
    let result = child_of(&parent, &actor, &asked, ask.limit, ask.reentry, issuance("child", ask.bound));
    (parent, result)
}

proptest! {
    #[test]
    fn child_scopes_never_exceed_parent(parent in chain(), ask in exchange()) {
        let (parent, result) = exchanged(parent, &ask);
        let widens = !asked_scopes(&parent, &ask).is_subset(&parent.scope);
        match result {
            Ok(child) => prop_assert!(child.claims().scope.is_subset(&parent.scope)),
            Err(error) => prop_assert!(widens || error != ChainError::Widened(Widening::ScopeWidened)),
        }
    }

    #[test]
    fn child_never_outlives_parent(parent in chain(), ask in exchange()) {
        let (parent, result) = exchanged(parent, &ask);
        match result {
            Ok(child) => prop_assert!(child.claims().exp <= parent.exp),
            Err(error) => prop_assert!(ask.extend > 0 || error != ChainError::Widened(Widening::LifetimeExtended)),
        }
    }

    #[test]
    fn child_is_one_deeper_than_parent_and_within_the_limit(parent in chain(), ask in exchange()) {
        let (parent, result) = exchanged(parent, &ask);
        let depth = parent.delegation.depth + 1;
        match result {
            Ok(child) => {
                prop_assert_eq!(child.claims().delegation.depth, depth);
                prop_assert!(depth <= ask.limit);
                prop_assert_eq!(child.claims().delegation.hops.len(), depth as usize);
            }
            Err(ChainError::Widened(Widening::TooDeep { depth: refused, limit })) => {
                prop_assert_eq!((refused, limit), (depth, ask.limit));
                prop_assert!(depth > ask.limit);
            }
            Err(_) => prop_assert!(depth <= ask.limit, "the depth is reported first"),
        }
    }

    #[test]
    fn child_act_is_the_actor_over_the_parents_act_and_never_may_act(parent in chain(), ask in exchange()) {
        let (parent, result) = exchanged(parent, &ask);
        if let Ok(child) = result {
            let expected = Actor { sub: AgentId::of_audience(&parent.aud), act: parent.act.clone().map(Box::new) };
            prop_assert_eq!(child.claims().act.as_ref(), Some(&expected));
            prop_assert_eq!(child.claims().may_act.as_ref(), None);
            prop_assert_eq!(&child.claims().sub, &parent.sub);
            prop_assert_eq!(child.claims().delegation.hops.last(), Some(&parent.as_hop()));
        }
    }

    #[test]
    fn a_bound_chain_stays_bound(parent in chain(), ask in exchange()) {
        let (parent, result) = exchanged(parent, &ask);
        match result {
            Ok(child) => prop_assert!(parent.cnf.is_none() || child.claims().cnf.is_some()),
            Err(ChainError::Unbound) => prop_assert!(parent.cnf.is_some() && !ask.bound),
            Err(_) => {}
        }
    }

    #[test]
    fn an_agent_acts_again_only_when_allowed_and_marked(parent in chain(), ask in exchange()) {
        let (parent, result) = exchanged(parent, &ask);
        let repeat = parent.has_acted(&AgentId::of_audience(&parent.aud));
        match result {
            Ok(child) => {
                prop_assert!(!repeat || ask.reentry == Reentry::Allow);
                prop_assert_eq!(child.claims().delegation.acts_again, repeat);
            }
            Err(ChainError::ActsAgain) => prop_assert!(repeat && ask.reentry == Reentry::Refuse),
            Err(_) => {}
        }
    }

    #[test]
    fn every_derived_chain_passes_check_path(parent in chain(), ask in exchange()) {
        prop_assert_eq!(check_path(&parent, ROOMY), Ok(()));
        prop_assert_eq!(check_path(&parent, parent.delegation.depth), Ok(()));
        let (_, result) = exchanged(parent, &ask);
        if let Ok(child) = result {
            prop_assert_eq!(check_path(child.claims(), ask.limit), Ok(()));
        }
    }

    #[test]
    fn widening_any_hop_fails_check_path(token in chain(), pick in any::<prop::sample::Index>(), how in 0..3u8, by in 1..100i64) {
        prop_assume!(token.delegation.depth > 0);
        let mut widened = token.clone();
        // Positions 1..=depth have a parent: the hops after the root, then the token itself.
        let position = 1 + pick.index(token.delegation.depth as usize);
        let parent = &token.delegation.hops[position - 1];
        let (parent_scope, parent_exp) = (parent.scope.clone(), parent.exp);
        let (scope, exp) = match widened.delegation.hops.get_mut(position) {
            Some(hop) => (&mut hop.scope, &mut hop.exp),
            None => (&mut widened.scope, &mut widened.exp),
        };
        match how {
            0 => {
                let extra = UNIVERSE.iter().map(|scope| scope.parse::<Scope>().unwrap())
                    .find(|scope| !parent_scope.contains(scope))
                    .unwrap_or_else(|| "outside".parse().unwrap());
                *scope = scope.iter().cloned().chain([extra]).collect();
                prop_assert_eq!(check_path(&widened, ROOMY), Err(PathError::ScopeWidened));
            }
            1 => {
                *exp = parent_exp.plus(by);
                prop_assert_eq!(check_path(&widened, ROOMY), Err(PathError::LifetimeExtended));
            }
            _ => {
                widened.delegation.depth += 1;
                prop_assert!(check_path(&widened, ROOMY).is_err());
                prop_assert_eq!(check_path(&widened, token.delegation.depth), Err(PathError::TooDeep));
            }
        }
    }
}
