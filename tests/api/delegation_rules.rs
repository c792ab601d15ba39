//! Delegation rules (DESIGN.md §2.2, §2.3): an agent acts at most once in a
//! chain unless its registration allows it explicitly, and then the hop is
//! marked so that every verifier agrees; `may_act` names one agent exactly;
//! the clock leeway never lets a token outlive its parent.

use baton::error::oauth::UNACCEPTABLE_TOKEN;
use baton::store::AuditDecision;
use serde_json::{json, Value};

use crate::harness::*;

const API: &str = "https://api.example";

/// Agents `a`, `b`, `c`, `d` (secret `s`) that may exchange anything for
/// anyone; `c` alone is registered to act again in a chain it acted in.
fn folder() -> tempfile::TempDir {
    let secret = secret_hash("s");
    let agents: String = ["a", "b", "c", "d"]
        .iter()
        .map(|id| {
            let again = if *id == "c" { "may_act_again = true\n" } else { "" };
            format!(
                "[[agents]]\nid='{id}'\nowner='o'\npurpose='p'\nexpires=2030-01-01\nsecret_sha256='{secret}'\n{again}"
            )
        })
        .collect();
    let resources = format!(
        "[[resources]]\nuri='{API}'\nname='API'\nscopes=['read']\nttl=300\nclient_id='api'\nsecret_sha256='{}'\n",
        secret_hash("api-secret")
    );
    policy_folder(&agents, &resources, "permit (principal, action, resource);")
}

struct Setup {
    harness: Harness,
    _policies: tempfile::TempDir,
}

fn setup(clock_leeway_seconds: i64) -> Setup {
    let policies = folder();
    let harness =
        Harness::with(Options { policies: policies.path().to_owned(), clock_leeway_seconds, ..Options::default() });
    Setup { harness, _policies: policies }
}

impl Setup {
    /// `a`'s own token, addressed to `holder`.
    async fn root(&self, holder: &str) -> String {
        let root =
            self.harness.token(Some(("a", "s")), &[("grant_type", "client_credentials"), ("audience", holder)]).await;
        assert_eq!(root.status, 200, "{}", root.body);
        root.token().to_owned()
    }

    async fn exchange(&self, agent: &str, subject_token: &str, target: &str) -> Response {
        let form = [
            ("grant_type", EXCHANGE),
            ("subject_token", subject_token),
            ("subject_token_type", ACCESS_TOKEN),
            ("audience", target),
        ];
        self.harness.token(Some((agent, "s")), &form).await
    }

    /// An exchange that must succeed: the child token.
    async fn hop(&self, agent: &str, subject_token: &str, target: &str) -> String {
        let response = self.exchange(agent, subject_token, target).await;
        assert_eq!(response.status, 200, "{agent} for {target}: {}", response.body);
        response.token().to_owned()
    }

    async fn issued(&self) -> usize {
        self.harness.events().await.iter().filter(|event| event.decision == AuditDecision::Issued).count()
    }
}

/// RFC 8693 §2.2.2: invalid_request, the one neutral description, no token.
#[track_caller]
fn assert_refused(response: &Response, case: &str) {
    assert_eq!(response.status, 400, "{case}: {}", response.body);
    assert_eq!(response.body["error"], "invalid_request", "{case}: {}", response.body);
    assert_eq!(response.body["error_description"], UNACCEPTABLE_TOKEN, "{case}: {}", response.body);
    assert!(response.body.get("access_token").is_none(), "{case}: {}", response.body);
}

#[tokio::test]
async fn an_agent_that_already_acted_in_the_chain_is_refused() {
    let setup = setup(0);
    // a → b → a: the root's agent comes back.
    let root = setup.root("b").await;
    let back_to_a = setup.hop("b", &root, "a").await;
    let before = setup.issued().await;
    let refused = setup.exchange("a", &back_to_a, API).await;
    assert_refused(&refused, "a acting again after b");
    let event = setup.harness.events().await.pop().unwrap();
    assert_eq!(event.decision, AuditDecision::Refused);
    assert_eq!(event.agent.as_deref(), Some("a"));
    assert!(event.reason.as_deref().unwrap().contains("already acted"), "{:?}", event.reason);

    // a → b → d → b: an agent of the act chain comes back.
    let to_d = setup.hop("b", &root, "d").await;
    let back_to_b = setup.hop("d", &to_d, "b").await;
    assert_refused(&setup.exchange("b", &back_to_b, API).await, "b acting again after d");
    // A token addressed to the agent that obtained it: exchanging it is acting twice.
    let to_self = setup.hop("b", &root, "b").await;
    assert_refused(&setup.exchange("b", &to_self, API).await, "b exchanging its own token");
    assert_eq!(setup.issued().await, before + 3, "only the hops that go forward were issued");

    // The control: an agent new to the chain.
    let fresh = setup.exchange("d", &to_d, API).await;
    assert_eq!(fresh.status, 200, "{}", fresh.body);
    assert!(!json_of(fresh.token())["delegation"].as_object().unwrap().contains_key("acts_again"));
}

#[tokio::test]
async fn an_agent_registered_with_may_act_again_may_and_the_hop_says_so() {
    let setup = setup(0);
    // a → c → b → c: c is registered with `may_act_again = true`.
    let root = setup.root("c").await;
    let to_b = setup.hop("c", &root, "b").await;
    let back_to_c = setup.hop("b", &to_b, "c").await;
    let again = setup.hop("c", &back_to_c, "d").await;
    let claims = claims_of(&again);
    assert_eq!(claims.chain(), vec!["c", "b", "c"]);
    assert!(claims.delegation.acts_again, "the repeated hop is marked");
    assert!(claims.delegation.hops.iter().all(|hop| !hop.acts_again));
    assert_eq!(baton::narrowing::check_path(&claims, 5), Ok(()));
    // The broker verifies the marked token as a parent, and the mark moves
    // into the hop with it.
    let after = setup.hop("d", &again, API).await;
    let after = claims_of(&after);
    assert!(after.delegation.hops.last().unwrap().acts_again);
    assert!(!after.delegation.acts_again);
    // The opt-in is c's alone: b still acts once.
    assert_refused(&setup.exchange("b", &setup.hop("c", &back_to_c, "b").await, API).await, "b, not registered");
}

#[tokio::test]
async fn a_repeated_agent_without_the_mark_is_not_a_token_the_broker_wrote() {
    let setup = setup(0);
    let harness = &setup.harness;
    let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": harness.broker_kid()});
    let hop = |jti: &str, agent: &str, aud: &str, again: bool| {
        let mut hop =
            json!({"jti": jti, "agent": agent, "aud": aud, "scope": "read", "iat": START.0, "exp": START.0 + 300});
        if again {
            hop["acts_again"] = json!(true);
        }
        hop
    };
    // a → b → a, signed with the broker's own key, addressed to d.
    let forged = |marked: bool| {
        let mut delegation = json!({"depth": 2, "hops": [hop("t0", "a", "b", false), hop("t1", "b", "a", false)]});
        if marked {
            delegation["acts_again"] = json!(true);
        }
        let claims = json!({
            "iss": ISSUER, "sub": "a", "aud": "d", "client_id": "a", "scope": "read",
            "iat": START.0, "exp": START.0 + 300, "jti": format!("forged-{marked}"),
            "act": {"sub": "a", "act": {"sub": "b"}}, "delegation": delegation,
        });
        harness.sign_with_broker_key(&header, &claims)
    };
    assert_refused(&setup.exchange("d", &forged(false), API).await, "an unmarked repeat");
    // Marked, it is a path the broker writes for an agent allowed to act again.
    let marked = setup.exchange("d", &forged(true), API).await;
    assert_eq!(marked.status, 200, "{}", marked.body);
}

#[tokio::test]
async fn may_act_on_the_brokers_own_tokens_names_one_agent_exactly() {
    let setup = setup(0);
    let harness = &setup.harness;
    let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": harness.broker_kid()});
    let token = |may_act: Value, jti: &str| {
        let claims = json!({
            "iss": ISSUER, "sub": "alice", "aud": "c", "client_id": "a", "scope": "read",
            "iat": START.0, "exp": START.0 + 300, "jti": jti, "may_act": may_act,
            "delegation": {"depth": 0, "hops": []},
        });
        harness.sign_with_broker_key(&header, &claims)
    };
    let cases = [
        ("another agent", json!({"sub": "d"})),
        ("other case", json!({"sub": "C"})),
        ("trailing space", json!({"sub": "c "})),
        ("zero-width space", json!({"sub": "c\u{200B}"})),
        ("Cyrillic es", json!({"sub": "\u{441}"})),
        ("another issuer", json!({"sub": "c", "iss": "https://elsewhere.example"})),
        ("not an object", json!("c")),
    ];
    for (index, (case, may_act)) in cases.into_iter().enumerate() {
        let refused = setup.exchange("c", &token(may_act, &format!("case-{index}")), API).await;
        assert_refused(&refused, case);
    }
    for (index, may_act) in [json!({"sub": "c"}), json!({"sub": "c", "iss": ISSUER})].into_iter().enumerate() {
        let allowed = setup.exchange("c", &token(may_act.clone(), &format!("control-{index}")), API).await;
        assert_eq!(allowed.status, 200, "{may_act}: {}", allowed.body);
    }
}

#[tokio::test]
async fn the_clock_leeway_tolerates_a_node_ahead_and_never_extends_a_lifetime() {
    let (strict, lenient) = (setup(0), setup(30));
    for (setup, leeway) in [(&strict, 0), (&lenient, 30)] {
        let harness = &setup.harness;
        let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": harness.broker_kid()});
        // Minted by a node whose clock is `ahead` seconds ahead of this one.
        let minted = |ahead: i64, exp: i64| {
            let claims = json!({
                "iss": ISSUER, "sub": "a", "aud": "b", "client_id": "a", "scope": "read",
                "iat": START.0 + ahead, "exp": exp, "jti": format!("ahead-{ahead}-{exp}"),
                "delegation": {"depth": 0, "hops": []},
            });
            harness.sign_with_broker_key(&header, &claims)
        };
        let twenty = setup.exchange("b", &minted(20, START.0 + 300), API).await;
        if leeway == 0 {
            assert_refused(&twenty, "20 s ahead without leeway");
        } else {
            assert_eq!(twenty.status, 200, "20 s ahead within 30 s of leeway: {}", twenty.body);
            assert!(claims_of(twenty.token()).exp <= START.plus(300));
        }
        assert_refused(&setup.exchange("b", &minted(40, START.0 + 300), API).await, "40 s ahead");
        // Expired 10 s ago: within the leeway it verifies, but no child may
        // outlive it, so nothing is issued.
        let before = setup.issued().await;
        let expired = setup.exchange("b", &minted(-600, START.0 - 10), API).await;
        assert_refused(&expired, "expired");
        assert_eq!(setup.issued().await, before, "leeway {leeway}");
    }
}

#[tokio::test]
async fn the_clock_leeway_never_keeps_an_expired_token_active_at_introspection() {
    let setup = setup(30);
    let token = setup.hop("b", &setup.root("b").await, API).await;
    let introspect = || async {
        let request = axum::http::Request::post("/introspect")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", basic_header("api", "api-secret"))
            .body(axum::body::Body::from(form_body(&[("token", token.as_str())])))
            .unwrap();
        let response = setup.harness.send(request).await;
        assert_eq!(response.status, 200, "{}", response.body);
        response.body
    };
    assert_eq!(introspect().await["active"], true);
    let exp = claims_of(&token).exp;
    setup.harness.clock.advance(exp.seconds_since(START) + 10);
    assert_eq!(introspect().await, json!({"active": false}), "10 s past exp, within 30 s of leeway");
}
