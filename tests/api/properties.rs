//! A property test over random chains: whatever is asked, every issued token
//! is narrower than its parent, and its chain is the broker's own writing.

use baton::claims::{Actor, ScopeSet};
use baton::grant::{TokenParams, TokenRequest};
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
        .map(|id| format!("[[agents]]\nid='{id}'\nowner='o'\npurpose='p'\nexpires=2030-01-01\ntoken_ttl=900\nsecret_sha256='{secret}'\n"))
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn child_scopes_never_exceed_parent(first in 0..3usize, steps in proptest::collection::vec(step(), 1..7)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let policies = folder();
            let harness = Harness::with(Options { policies: policies.path().to_owned(), max_depth: 4, ..Options::default() });
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
                };
                let parent_claims = claims_of(&parent);
                match harness.broker.token(request).await {
                    Ok(response) => {
                        let child = claims_of(&response.access_token);
                        prop_assert!(child.scope.is_subset(&parent_claims.scope), "scope widened");
                        prop_assert!(!child.scope.is_empty());
                        if let Some(scope) = &scope {
                            prop_assert_eq!(&child.scope, &ScopeSet::parse(scope).unwrap(), "granted differs from asked");
                        }
                        prop_assert!(child.exp <= parent_claims.exp, "lifetime extended");
                        prop_assert!(child.exp > harness.clock_now());
                        prop_assert_eq!(child.delegation.depth, parent_claims.delegation.depth + 1);
                        prop_assert!(child.delegation.depth <= 4);
                        prop_assert_eq!(&child.sub, &parent_claims.sub);
                        prop_assert_eq!(&child.client_id, holder);
                        prop_assert_eq!(
                            child.act.clone(),
                            Some(Actor { sub: holder.to_owned(), act: parent_claims.act.clone().map(Box::new) })
                        );
                        prop_assert_eq!(child.delegation.hops.last().map(|hop| &hop.jti), Some(&parent_claims.jti));
                        prop_assert!(baton::chain::check_path(&child, 4).is_ok());
                        if target == "https://api.example" {
                            break;
                        }
                        parent = response.access_token;
                        holder = target;
                    }
                    Err(error) => {
                        let code = baton::oauth::OAuthError::from(&error).code;
                        prop_assert!(
                            matches!(code, baton::oauth::ErrorCode::InvalidScope | baton::oauth::ErrorCode::InvalidTarget | baton::oauth::ErrorCode::InvalidRequest),
                            "unexpected {:?}: {}", code, error
                        );
                    }
                }
            }
            Ok(())
        })?;
    }
}

impl Harness {
    fn clock_now(&self) -> baton::clock::UnixTime {
        use baton::clock::Clock;
        self.clock.now()
    }
}
