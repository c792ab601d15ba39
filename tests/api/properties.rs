//! A property test over random chains: whatever is asked, every issued token
//! is narrower than its parent, and its chain is the broker's own writing.

use baton::claims::{Actor, Claims, ScopeSet};
use baton::clock::UnixTime;
use baton::error::oauth::ErrorCode;
use baton::grant::TokenRequest;
use baton::ids::AgentId;
use baton::params::TokenParams;
use proptest::prelude::*;

use crate::harness::*;

const AGENTS: [&str; 3] = ["a", "b", "c"];
const SCOPES: [&str; 4] = ["read", "write", "admin", "audit"];

/// A policy that permits a random-looking but fixed pattern, so that
/// requests are sometimes granted, sometimes narrowed, sometimes refused.
fn folder() -> tempfile::TempDir {
    let secret = secret_hash("s");
    let agents: String = AGENTS
        .iter()
        .map(|id| format!("[[agents]]\nid='{id}'\nowner='o'\npurpose='p'\nexpires=2030-01-01\ntoken_ttl=900\nsecret_sha256='{secret}'\n{}", again(id)))
        .collect();
    let resources =
        "[[resources]]\nuri='https://api.example'\nname='API'\nscopes=['read','write','admin','audit']\nttl=120\n";
    let rules = r#"
        permit (principal, action == Action::"issue", resource);
        permit (principal, action == Action::"exchange", resource == Scope::"read");
        permit (principal == Agent::"b", action == Action::"exchange", resource);
        permit (principal == Agent::"c", action == Action::"exchange", resource == Scope::"write") when { context.depth <= 2 };
        forbid (principal, action == Action::"exchange", resource == Scope::"admin") when { context.chain.contains("c") };
    "#;
    policy_folder(&agents, resources, rules)
}

/// Only `c` may act again in a chain it already acted in.
fn again(id: &str) -> &'static str {
    if id == "c" {
        "may_act_again = true\n"
    } else {
        ""
    }
}

#[derive(Debug, Clone)]
struct Step {
    next: usize,
    scopes: Option<Vec<usize>>,
    wait: i64,
}

fn step() -> impl Strategy<Value = Step> {
    (0..4usize, proptest::option::of(proptest::collection::vec(0..4usize, 1..4)), 0..400i64)
        .prop_map(|(next, scopes, wait)| Step { next, scopes, wait })
}

fn scope_text(indices: &[usize]) -> String {
    indices.iter().map(|index| SCOPES[*index]).collect::<Vec<_>>().join(" ")
}

/// What the rules above permit, computed independently of the broker:
/// the oracle the property test holds every answer to.
fn permitted(holder: &str, depth: u32, earlier_agents: &[&str]) -> ScopeSet {
    let mut allowed: Vec<&str> = vec!["read"];
    if holder == "b" {
        allowed.extend(SCOPES);
    }
    if holder == "c" && depth <= 2 {
        allowed.push("write");
    }
    if earlier_agents.contains(&"c") {
        allowed.retain(|scope| *scope != "admin");
    }
    ScopeSet::parse(&allowed.join(" ")).unwrap()
}

/// The answer the broker must give, from the parent, the request and the oracle.
fn expected(parent: &Claims, holder: &str, requested: Option<&ScopeSet>, now: UnixTime) -> Result<ScopeSet, ErrorCode> {
    let depth = parent.delegation.depth + 1;
    // Every chain starts with `a`'s own token; an agent acts once, but `c`.
    let acted = holder == "a" || parent.chain().contains(&&AgentId::new(holder));
    if parent.exp <= now || depth > MAX_DEPTH || (acted && holder != "c") {
        return Err(ErrorCode::InvalidRequest);
    }
    if requested.is_some_and(|asked| !asked.is_subset(&parent.scope)) {
        return Err(ErrorCode::InvalidScope);
    }
    let grantable = parent.scope.intersection(&permitted(
        holder,
        depth,
        &parent.chain().iter().map(|agent| agent.as_str()).collect::<Vec<_>>(),
    ));
    if grantable.is_empty() {
        return Err(ErrorCode::InvalidTarget);
    }
    match requested {
        Some(asked) if !asked.is_subset(&grantable) => Err(ErrorCode::InvalidScope),
        Some(asked) => Ok(asked.clone()),
        None => Ok(grantable),
    }
}

const MAX_DEPTH: u32 = 4;

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn child_scopes_never_exceed_parent(first in 0..3usize, steps in proptest::collection::vec(step(), 1..7)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let policies = folder();
            let harness = Harness::with(Options { policies: policies.path().to_owned(), max_depth: MAX_DEPTH, ..Options::default() });
            let root_holder = AGENTS[first];
            let root = harness.token(Some(("a", "s")), &[("grant_type", "client_credentials"), ("audience", root_holder)]).await;
            prop_assert_eq!(root.status.as_u16(), 200, "{}", root.body);
            let mut parent = root.token().to_owned();
            let mut holder = root_holder;
            for step in steps {
                harness.clock.advance(step.wait);
                // The fourth choice targets the API, which ends the chain.
                let target = AGENTS.get(step.next).copied().unwrap_or("https://api.example");
                let scope = step.scopes.as_deref().map(scope_text);
                let mut form = vec![
                    ("grant_type", EXCHANGE.to_owned()),
                    ("subject_token", parent.clone()),
                    ("subject_token_type", ACCESS_TOKEN.to_owned()),
                    ("audience", target.to_owned()),
                ];
                if let Some(scope) = &scope {
                    form.push(("scope", scope.clone()));
                }
                let request = TokenRequest {
                    authorization: Some(basic_header(holder, "s")),
                    params: TokenParams::from_pairs(form).unwrap(),
                    client_address: None,
                    dpop_proofs: Vec::new(),
                };
                let parent_claims = claims_of(&parent);
                let requested = scope.as_deref().map(|text| ScopeSet::parse(text).unwrap());
                let expectation = expected(&parent_claims, holder, requested.as_ref(), harness.clock_now());
                match (harness.broker.token(request).await, expectation) {
                    (Ok(response), Ok(scopes)) => {
                        let child = claims_of(&response.access_token);
                        prop_assert_eq!(&child.scope, &scopes, "granted differs from the oracle");
                        prop_assert!(child.scope.is_subset(&parent_claims.scope), "scope widened");
                        prop_assert!(child.exp <= parent_claims.exp, "lifetime extended");
                        prop_assert!(child.exp > harness.clock_now());
                        prop_assert_eq!(child.delegation.depth, parent_claims.delegation.depth + 1);
                        prop_assert_eq!(&child.sub, &parent_claims.sub);
                        prop_assert_eq!(&child.client_id, holder);
                        prop_assert_eq!(
                            child.act.clone(),
                            Some(Actor { sub: holder.into(), act: parent_claims.act.clone().map(Box::new) })
                        );
                        prop_assert_eq!(child.delegation.hops.last().map(|hop| &hop.jti), Some(&parent_claims.jti));
                        prop_assert!(baton::narrowing::check_path(&child, MAX_DEPTH).is_ok());
                        let acted = holder == "a" || parent_claims.chain().contains(&&AgentId::new(holder));
                        prop_assert_eq!(child.delegation.acts_again, acted, "only a repeat is marked");
                        if target == "https://api.example" {
                            break;
                        }
                        parent = response.access_token;
                        holder = target;
                    }
                    (Err(error), Err(code)) => {
                        prop_assert_eq!(baton::error::oauth::OAuthError::from(&error).code, code, "{}", error);
                    }
                    (Ok(response), Err(code)) => prop_assert!(false, "issued {} where the oracle expects {:?}", response.scope, code),
                    (Err(error), Ok(scopes)) => prop_assert!(false, "refused ({}) where the oracle grants {}", error, scopes),
                }
            }
            Ok(())
        })?;
    }
}

impl Harness {
    fn clock_now(&self) -> UnixTime {
        use baton::clock::Clock;
        self.clock.now()
    }
}
