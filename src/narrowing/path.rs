//! A verified token's path, checked from the token alone (DESIGN.md §4):
//! whole, consistent, and narrowing at every hop under the one rule that
//! derives a child ([`Bounds::narrow_to`]).

use super::{within_limit, Bounds, Widening};
use crate::claims::{Claims, Hop};
use crate::ids::AgentId;

/// Checks that the token's path is whole and only narrows (DESIGN.md §4):
/// depth within the limit and equal to the number of hops and of actors,
/// every hop exchanged by the agent its predecessor was addressed to,
/// no agent acting twice unless that hop is marked as allowed to, and
/// each hop, down to this token, narrowing its parent under the rule
/// [`crate::chain::derive()`] applies ([`Bounds::narrow_to`]).
///
/// The rule's binding clause ([`crate::chain::stays_bound`]) is left to
/// the broker, which refuses an unbound child of a bound token before
/// minting: applied here, it would be a refusal the verifier never made.
pub fn check_path(claims: &Claims, max_depth: u32) -> Result<(), PathError> {
    let delegation = &claims.delegation;
    within_limit(delegation.depth, max_depth)?;
    let chain = claims.chain();
    if usize::try_from(delegation.depth).ok() != Some(delegation.hops.len()) || chain.len() != delegation.hops.len() {
        return Err(PathError::Inconsistent);
    }
    // Each exchange's agent, oldest first: the agents of the hops after
    // the root, then this token's own client.
    let exchangers = delegation
        .hops
        .iter()
        .skip(1)
        .map(|hop| &hop.agent)
        .chain((!delegation.hops.is_empty()).then_some(&claims.client_id));
    if !exchangers.eq(chain.iter().rev().copied()) {
        return Err(PathError::Inconsistent);
    }
    // Only a chain's root may come from an identity provider.
    if delegation.hops.iter().skip(1).any(|hop| hop.iss.is_some()) {
        return Err(PathError::Inconsistent);
    }
    // An agent acts at most once, unless the broker marked the hop as one
    // its policy allowed; a mark where no agent repeats is not the broker's.
    let mut earlier: Vec<&AgentId> = Vec::with_capacity(delegation.hops.len().saturating_add(1));
    for (agent, acts_again) in claims.obtainers() {
        match (earlier.contains(&agent), acts_again) {
            (true, false) => return Err(PathError::ActsAgain),
            (false, true) => return Err(PathError::Inconsistent),
            _ => earlier.push(agent),
        }
    }
    if delegation.hops.iter().any(|hop| hop.iss.is_some() && hop.acts_again) {
        return Err(PathError::Inconsistent);
    }
    // Every hop, then this token, only narrows its parent under the one
    // rule that derived it, and was exchanged by an agent the parent was
    // addressed to.
    let mut hops = delegation.hops.iter();
    let Some(root) = hops.next() else { return Ok(()) };
    let (mut parent, mut bounds) = (root, Bounds::of_hop(root, 0));
    for hop in hops {
        holds(parent, &hop.agent)?;
        bounds = bounds.narrow_to(&hop.scope, hop.exp, max_depth)?;
        parent = hop;
    }
    holds(parent, &claims.client_id)?;
    bounds.narrow_to(&claims.scope, claims.exp, max_depth)?;
    Ok(())
}

/// Refuses a child held by `holder` unless this hop was addressed to it.
fn holds(hop: &Hop, holder: &AgentId) -> Result<(), PathError> {
    // A person's token is addressed to the identity provider's client;
    // which agents may start a chain from it is the broker's to decide.
    let from_provider = hop.iss.is_some();
    if !from_provider && !hop.aud.is_agent(holder) {
        return Err(PathError::WrongHolder);
    }
    Ok(())
}

/// A token whose recorded path is not one the broker would have written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Deeper than the limit.
    #[error("deeper than the limit")]
    TooDeep,
    /// `delegation.depth`, `delegation.hops` and `act` disagree.
    #[error("act chain and delegation hops disagree")]
    Inconsistent,
    /// A hop was exchanged by an agent its parent was not addressed to.
    #[error("a hop was exchanged by an agent the parent was not addressed to")]
    WrongHolder,
    /// A hop holds a scope its parent did not.
    #[error("a hop widened the scopes")]
    ScopeWidened,
    /// A hop outlives its parent.
    #[error("a hop outlives its parent")]
    LifetimeExtended,
    /// An agent acts twice in the chain, and the hop is not marked as allowed to.
    #[error("an agent acts twice in the chain")]
    ActsAgain,
}

impl From<Widening> for PathError {
    fn from(widening: Widening) -> Self {
        match widening {
            Widening::TooDeep { .. } => PathError::TooDeep,
            Widening::ScopeWidened => PathError::ScopeWidened,
            Widening::LifetimeExtended => PathError::LifetimeExtended,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::{Actor, Delegation, ScopeSet, TokenId};
    use crate::clock::UnixTime;
    use crate::ids::{Audience, Subject};

    /// A token obtained by each of `agents` in turn, the first by
    /// `client_credentials` for the second, each addressed to the next.
    fn walked(agents: &[&str]) -> Claims {
        let scope = ScopeSet::parse("x").unwrap();
        let (first, rest) = agents.split_first().unwrap();
        let mut hops = Vec::new();
        let mut act = None;
        let mut holder = AgentId::new(*first);
        for (index, next) in rest.iter().enumerate() {
            hops.push(Hop {
                jti: TokenId(format!("t{index}")),
                agent: holder.clone(),
                aud: Audience::new(*next),
                scope: scope.clone(),
                iat: UnixTime(0),
                exp: UnixTime(100),
                jkt: None,
                iss: None,
                approval: None,
                acts_again: false,
                iat_micros: None,
            });
            act = Some(Actor { sub: AgentId::new(*next), act: act.map(Box::new) });
            holder = AgentId::new(*next);
        }
        Claims {
            iss: "i".into(),
            sub: Subject::new(*first),
            aud: "https://api.example".into(),
            client_id: holder,
            scope,
            iat: UnixTime(0),
            exp: UnixTime(100),
            jti: TokenId("last".into()),
            act,
            may_act: None,
            cnf: None,
            delegation: Delegation {
                depth: u32::try_from(hops.len()).unwrap(),
                hops,
                approval: None,
                acts_again: false,
                iat_micros: None,
            },
        }
    }

    #[test]
    fn an_agent_acts_once_in_a_chain_unless_the_hop_is_marked() {
        let straight = walked(&["a", "b", "c"]);
        assert_eq!(check_path(&straight, 5), Ok(()));
        assert!(straight.has_acted(&"a".into()) && straight.has_acted(&"b".into()) && straight.has_acted(&"c".into()));
        assert!(!straight.has_acted(&"d".into()) && !straight.has_acted(&"A".into()));

        // a → b → a: the root's agent acts again.
        let mut back = walked(&["a", "b", "a"]);
        assert_eq!(check_path(&back, 5), Err(PathError::ActsAgain));
        back.delegation.acts_again = true;
        assert_eq!(check_path(&back, 5), Ok(()));
        // b → c → b, deeper in the chain, then once more on.
        let mut loop_ = walked(&["a", "b", "c", "b", "d"]);
        assert_eq!(check_path(&loop_, 5), Err(PathError::ActsAgain));
        loop_.delegation.hops[3].acts_again = true;
        assert_eq!(check_path(&loop_, 5), Ok(()));
        // A mark where nobody repeats is not the broker's writing.
        let mut marked = walked(&["a", "b", "c"]);
        marked.delegation.hops[1].acts_again = true;
        assert_eq!(check_path(&marked, 5), Err(PathError::Inconsistent));
        let mut marked = walked(&["a", "b", "c"]);
        marked.delegation.acts_again = true;
        assert_eq!(check_path(&marked, 5), Err(PathError::Inconsistent));
    }

    #[test]
    fn a_person_signed_in_at_a_provider_is_not_an_agent_of_the_chain() {
        // The sign-in's client happens to share a name with the first agent.
        let mut started = walked(&["web-app", "orchestrator"]);
        started.delegation.hops[0].iss = Some("https://idp.example".into());
        started.delegation.hops[0].agent = "orchestrator".into();
        assert_eq!(check_path(&started, 5), Ok(()));
        assert!(started.has_acted(&"orchestrator".into()));
        assert_eq!(started.obtainers().count(), 1);
    }

    #[test]
    fn a_persons_sign_in_caps_the_path_only_where_it_carries_scopes() {
        let mut started = walked(&["web-app", "orchestrator", "booker"]);
        started.delegation.hops[0].iss = Some("https://idp.example".into());
        started.delegation.hops[0].scope = ScopeSet::parse("x").unwrap();
        assert_eq!(check_path(&started, 5), Ok(()));
        // The first agent's hop holds a scope the sign-in did not carry.
        let mut beyond = started.clone();
        beyond.delegation.hops[1].scope = ScopeSet::parse("x y").unwrap();
        assert_eq!(check_path(&beyond, 5), Err(PathError::ScopeWidened));
        // Without scopes, the sign-in leaves them to policy (DESIGN.md §10).
        beyond.delegation.hops[0].scope = ScopeSet::default();
        assert_eq!(check_path(&beyond, 5), Ok(()));
        // Its expiry caps the chain whatever it carries.
        let mut longer = started;
        longer.delegation.hops[0].exp = UnixTime(99);
        assert_eq!(check_path(&longer, 5), Err(PathError::LifetimeExtended));
    }

    #[test]
    fn the_depth_limit_is_the_deepest_path_accepted_and_is_checked_first() {
        let deep = walked(&["a", "b", "c", "d"]);
        assert_eq!(check_path(&deep, 3), Ok(()));
        assert_eq!(check_path(&deep, 2), Err(PathError::TooDeep));
        // Over the limit is reported before an agent acting twice.
        let back = walked(&["a", "b", "c", "a"]);
        assert_eq!(check_path(&back, 3), Err(PathError::ActsAgain));
        assert_eq!(check_path(&back, 2), Err(PathError::TooDeep));
    }

    #[test]
    fn a_hop_is_exchanged_by_the_agent_its_parent_was_addressed_to() {
        let mut diverted = walked(&["a", "b", "c"]);
        diverted.delegation.hops[0].aud = "mallory".into();
        assert_eq!(check_path(&diverted, 5), Err(PathError::WrongHolder));
        let mut diverted = walked(&["a", "b", "c"]);
        diverted.delegation.hops[1].aud = "mallory".into();
        assert_eq!(check_path(&diverted, 5), Err(PathError::WrongHolder));
    }
}
