//! The three-hop walk and the promises of DESIGN.md §2: only narrower (1),
//! the broker writes the chain (2), bound to its holder (3).

use baton::claims::ScopeSet;
use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn three_hops_narrow_and_carry_the_whole_chain() {
    let harness = Harness::new();
    let [root, hop1, hop2] = harness.walk().await;
    let (root, hop1, hop2) = (claims_of(&root), claims_of(&hop1), claims_of(&hop2));

    assert_eq!(root.sub, "orchestrator");
    assert_eq!(root.act, None);
    assert_eq!(root.delegation.depth, 0);
    assert_eq!(root.scope, ScopeSet::parse("flights.read flights.book calendar.read calendar.write").unwrap());

    assert_eq!((hop1.sub.as_str(), hop1.aud.as_str(), hop1.client_id.as_str()), ("orchestrator", "booker", "planner"));
    assert_eq!(hop1.scope, ScopeSet::parse("flights.read flights.book calendar.read").unwrap());

    assert_eq!((hop2.sub.as_str(), hop2.aud.as_str(), hop2.client_id.as_str()), ("orchestrator", AIRLINE, "booker"));
    assert_eq!(hop2.scope, ScopeSet::parse("flights.book").unwrap());
    assert_eq!(json_of(&harness.walk().await[2])["act"], json!({"sub": "booker", "act": {"sub": "planner"}}));
    assert_eq!(hop2.delegation.depth, 2);
    let ancestry: Vec<_> = hop2.delegation.ancestry().cloned().collect();
    assert_eq!(ancestry, vec![root.jti.clone(), hop1.jti.clone()]);
    assert_eq!(hop2.delegation.hops[1].agent, "planner");
    assert_eq!(hop2.delegation.hops[1].aud, "booker");

    // Lifetimes: the target's TTL, never past the parent's.
    assert_eq!(root.exp, START.plus(3600));
    assert_eq!(hop1.exp, START.plus(1800));
    assert_eq!(hop2.exp, START.plus(300));
    for (child, parent) in [(&hop1, &root), (&hop2, &hop1)] {
        assert!(child.scope.is_subset(&parent.scope) && child.scope != parent.scope);
        assert!(child.exp < parent.exp);
    }
}

#[tokio::test]
async fn issued_tokens_are_rfc9068_access_tokens() {
    let harness = Harness::new();
    let root = harness.as_agent("orchestrator", &[("grant_type", "client_credentials")]).await;
    assert_eq!(root.status, 200, "{}", root.body);
    assert_eq!(root.body["token_type"], "Bearer");
    assert_eq!(root.body["expires_in"], 3600);
    assert!(root.body.get("issued_token_type").is_none());
    // `default_audience` of the orchestrator is the planner.
    assert_eq!(json_of(root.token())["aud"], "planner");
    let header = header_of(root.token());
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["kid"], harness.broker_kid());
    let claims = json_of(root.token());
    for claim in ["iss", "sub", "aud", "client_id", "scope", "iat", "exp", "jti", "delegation"] {
        assert!(claims.get(claim).is_some(), "missing {claim}");
    }

    let hop1 = harness.exchange("planner", root.token(), &[("audience", "booker")]).await;
    assert_eq!(hop1.body["issued_token_type"], ACCESS_TOKEN);
    assert_eq!(hop1.headers["cache-control"], "no-store");
}

#[tokio::test]
async fn eddsa_keys_sign_when_chosen() {
    let harness = Harness::with(Options { algorithm: baton::keys::Algorithm::EdDsa, ..Options::default() });
    let [_, _, last] = harness.walk().await;
    assert_eq!(header_of(&last)["alg"], "EdDSA");
}

#[tokio::test]
async fn a_scope_beyond_the_parent_is_invalid_scope() {
    let harness = Harness::new();
    let root = harness
        .as_agent(
            "orchestrator",
            &[("grant_type", "client_credentials"), ("audience", "planner"), ("scope", "flights.read")],
        )
        .await;
    let widened = harness
        .exchange("planner", root.token(), &[("audience", "booker"), ("scope", "flights.read flights.book")])
        .await;
    widened.assert_error(400, "invalid_scope");
    // Omitted scope: the parent's, intersected with what policy permits.
    let narrowed = harness.exchange("planner", root.token(), &[("audience", "booker")]).await;
    assert_eq!(narrowed.body["scope"], "flights.read");
}

#[tokio::test]
async fn a_scope_the_policy_does_not_permit_is_invalid_scope() {
    let harness = Harness::new();
    let [root, hop1, _] = harness.walk().await;
    // The planner may not hand calendar.write to the booker.
    harness
        .exchange("planner", &root, &[("audience", "booker"), ("scope", "calendar.write")])
        .await
        .assert_error(400, "invalid_scope");
    // Calendar scopes do not belong to the airline API.
    harness
        .exchange("booker", &hop1, &[("resource", AIRLINE), ("scope", "calendar.read")])
        .await
        .assert_error(400, "invalid_scope");
    // A scope nobody registered.
    harness
        .exchange("booker", &hop1, &[("resource", AIRLINE), ("scope", "flights.cancel")])
        .await
        .assert_error(400, "invalid_scope");
    assert!(
        harness.events().await.iter().filter(|event| event.decision == baton::store::AuditDecision::Refused).count()
            >= 3
    );
}

#[tokio::test]
async fn a_forbid_rule_overrides_permits() {
    // The booker's own chain did not pass through the planner: a token for the
    // booker straight from the orchestrator cannot carry flights.book onward.
    let agents = std::fs::read_to_string(example_policies().join("agents.toml")).unwrap();
    let resources = std::fs::read_to_string(example_policies().join("resources.toml")).unwrap();
    let rules = std::fs::read_to_string(example_policies().join("travel.cedar")).unwrap()
        + "\npermit (principal == Agent::\"orchestrator\", action == Action::\"issue\", resource) when { context.target == \"booker\" };";
    let folder = policy_folder(&agents, &resources, &rules);
    let harness = Harness::with(Options { policies: folder.path().to_owned(), ..Options::default() });
    let direct =
        harness.as_agent("orchestrator", &[("grant_type", "client_credentials"), ("audience", "booker")]).await;
    assert_eq!(direct.status, 200, "{}", direct.body);
    harness
        .exchange("booker", direct.token(), &[("resource", AIRLINE), ("scope", "flights.book")])
        .await
        .assert_error(400, "invalid_scope");
    let read = harness.exchange("booker", direct.token(), &[("resource", AIRLINE)]).await;
    assert_eq!(read.body["scope"], "flights.read", "{}", read.body);
}

#[tokio::test]
async fn a_target_not_permitted_or_unknown_is_invalid_target() {
    let harness = Harness::new();
    let [root, hop1, _] = harness.walk().await;
    harness.exchange("booker", &hop1, &[("resource", CALENDAR)]).await.assert_error(400, "invalid_target");
    harness.exchange("planner", &root, &[("resource", AIRLINE)]).await.assert_error(400, "invalid_target");
    harness
        .exchange("planner", &root, &[("audience", "https://unknown.example")])
        .await
        .assert_error(400, "invalid_target");
    harness
        .exchange("planner", &root, &[("audience", "booker"), ("resource", AIRLINE)])
        .await
        .assert_error(400, "invalid_target");
    // No target and no default: the planner has no default_audience.
    harness.exchange("planner", &root, &[]).await.assert_error(400, "invalid_target");
}

#[tokio::test]
async fn a_child_never_outlives_its_parent() {
    let harness = Harness::new();
    let root = harness.as_agent("orchestrator", &[("grant_type", "client_credentials")]).await;
    harness.clock.advance(3600 - 100);
    let hop1 = harness.exchange("planner", root.token(), &[("audience", "booker")]).await;
    assert_eq!(hop1.body["expires_in"], 100, "{}", hop1.body);
    assert_eq!(claims_of(hop1.token()).exp, claims_of(root.token()).exp);
    harness.clock.advance(100);
    harness.exchange("booker", hop1.token(), &[("resource", AIRLINE)]).await.assert_error(400, "invalid_request");
}

#[tokio::test]
async fn only_the_agent_a_token_is_addressed_to_may_exchange_it() {
    let harness = Harness::new();
    let [root, hop1, hop2] = harness.walk().await;
    let wrong_holder = harness.exchange("booker", &root, &[("resource", AIRLINE)]).await;
    wrong_holder.assert_error(400, "invalid_request");
    harness.exchange("planner", &hop1, &[("audience", "booker")]).await.assert_error(400, "invalid_request");
    harness.exchange("booker", &hop2, &[("resource", AIRLINE)]).await.assert_error(400, "invalid_request");
    // One neutral description for every unacceptable token.
    let expired = {
        harness.clock.advance(4000);
        harness.exchange("planner", &root, &[("audience", "booker")]).await
    };
    assert_eq!(wrong_holder.body["error_description"], expired.body["error_description"]);
}

#[tokio::test]
async fn may_act_is_honoured_and_never_copied() {
    let harness = Harness::new();
    let claims = |may_act: &str| {
        json!({
            "iss": ISSUER, "sub": "alice", "aud": "planner", "client_id": "orchestrator",
            "scope": "flights.read", "iat": START.0, "exp": START.0 + 600, "jti": format!("may-act-{may_act}"),
            "may_act": {"sub": may_act}, "delegation": {"depth": 0, "hops": []}
        })
    };
    let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": harness.broker_kid()});
    let for_booker = harness.sign_with_broker_key(&header, &claims("booker"));
    harness.exchange("planner", &for_booker, &[("audience", "booker")]).await.assert_error(400, "invalid_request");

    let for_planner = harness.sign_with_broker_key(&header, &claims("planner"));
    let child = harness.exchange("planner", &for_planner, &[("audience", "booker")]).await;
    assert_eq!(child.status, 200, "{}", child.body);
    let child = json_of(child.token());
    assert!(child.get("may_act").is_none());
    assert_eq!(child["sub"], "alice");
    assert_eq!(child["act"], json!({"sub": "planner"}));
}

#[tokio::test]
async fn request_input_never_enters_the_chain() {
    let harness = Harness::new();
    let [root, ..] = harness.walk().await;
    let child = harness
        .exchange(
            "planner",
            &root,
            &[("audience", "booker"), ("act", r#"{"sub":"mallory"}"#), ("sub", "mallory"), ("client_id", "planner")],
        )
        .await;
    assert_eq!(child.status, 200, "{}", child.body);
    let child = json_of(child.token());
    assert_eq!(child["act"], json!({"sub": "planner"}));
    assert_eq!(child["sub"], "orchestrator");
}

#[tokio::test]
async fn an_actor_token_must_be_the_clients_own() {
    let harness = Harness::new();
    let [root, ..] = harness.walk().await;
    // The planner's own token, addressed to the booker (any target will do).
    let own = harness.token(
        Some(("planner", "dev-only-planner-secret")),
        &[("grant_type", "client_credentials"), ("audience", "booker")],
    );
    // The example gives the planner no `issue` rule: its own token is refused.
    own.await.assert_error(400, "invalid_target");

    let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": harness.broker_kid()});
    let actor = |sub: &str, exp: i64| {
        harness.sign_with_broker_key(
            &header,
            &json!({"iss": ISSUER, "sub": sub, "aud": "booker", "client_id": sub, "scope": "flights.read",
                    "iat": START.0, "exp": exp, "jti": format!("actor-{sub}-{exp}"), "delegation": {"depth": 0, "hops": []}}),
        )
    };
    let with_actor = |actor_token: String| {
        let form = [("audience", "booker"), ("actor_token", actor_token.as_str()), ("actor_token_type", ACCESS_TOKEN)];
        let form: Vec<(&str, String)> = form.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        form
    };
    let run = |form: Vec<(&'static str, String)>| {
        let root = root.clone();
        let harness = &harness;
        async move {
            let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            harness.exchange("planner", &root, &pairs).await
        }
    };
    let capped = run(with_actor(actor("planner", START.0 + 60))).await;
    assert_eq!(capped.status, 200, "{}", capped.body);
    assert_eq!(capped.body["expires_in"], 60, "the actor token caps the lifetime");
    run(with_actor(actor("booker", START.0 + 60))).await.assert_error(400, "invalid_request");
    harness
        .exchange("planner", &root, &[("audience", "booker"), ("actor_token", &actor("planner", START.0 + 60))])
        .await
        .assert_error(400, "invalid_request");
}

#[tokio::test]
async fn depth_stops_at_the_limit() {
    let secret = secret_hash("s");
    let agents = format!(
        "[[agents]]\nid='a'\nowner='o'\npurpose='p'\nexpires=2030-01-01\nsecret_sha256='{secret}'\nmay_act_again=true\n\
         [[agents]]\nid='b'\nowner='o'\npurpose='p'\nexpires=2030-01-01\nsecret_sha256='{secret}'\nmay_act_again=true\n"
    );
    let resources = "[[resources]]\nuri='https://api.example'\nname='API'\nscopes=['read']\nttl=300\n";
    let rules = "permit (principal, action, resource);";
    let folder = policy_folder(&agents, resources, rules);
    let harness = Harness::with(Options { policies: folder.path().to_owned(), max_depth: 3, ..Options::default() });
    let mut token = harness
        .token(Some(("a", "s")), &[("grant_type", "client_credentials"), ("audience", "b")])
        .await
        .token()
        .to_owned();
    let mut holder = "b";
    for depth in 1..=3 {
        let next = if holder == "a" { "b" } else { "a" };
        let response = harness
            .token(
                Some((holder, "s")),
                &[
                    ("grant_type", EXCHANGE),
                    ("subject_token", &token),
                    ("subject_token_type", ACCESS_TOKEN),
                    ("audience", next),
                ],
            )
            .await;
        assert_eq!(response.status, 200, "depth {depth}: {}", response.body);
        assert_eq!(claims_of(response.token()).delegation.depth, depth);
        token = response.token().to_owned();
        holder = next;
    }
    let too_deep = harness
        .token(
            Some((holder, "s")),
            &[("grant_type", EXCHANGE), ("subject_token", &token), ("subject_token_type", ACCESS_TOKEN)],
        )
        .await;
    too_deep.assert_error(400, "invalid_request");
}

#[tokio::test]
async fn a_revoked_ancestor_kills_the_descendants() {
    use baton::store::RevocationStore;
    let harness = Harness::new();
    let [root, hop1, _] = harness.walk().await;
    harness.store.revoke(&claims_of(&root).jti, START.plus(3600)).await.unwrap();
    harness.exchange("booker", &hop1, &[("resource", AIRLINE)]).await.assert_error(400, "invalid_request");
}

#[tokio::test]
async fn every_decision_is_audited() {
    let harness = Harness::new();
    let [_, hop1, hop2] = harness.walk().await;
    harness.exchange("booker", &hop1, &[("resource", CALENDAR)]).await.assert_error(400, "invalid_target");
    let events = harness.events().await;
    // Two issued, the booking asked (pending) and approved, then issued, then refused.
    assert_eq!(events.len(), 6);
    assert_eq!(events[2].decision, baton::store::AuditDecision::Pending);
    assert_eq!(events[3].decision, baton::store::AuditDecision::Approved);
    let issued = &events[4];
    assert_eq!(issued.decision, baton::store::AuditDecision::Issued);
    assert_eq!(issued.agent.as_deref(), Some("booker"));
    assert_eq!(issued.subject.as_deref(), Some("orchestrator"));
    assert_eq!(issued.chain, vec!["planner".to_owned()]);
    assert_eq!(issued.target.as_deref(), Some(AIRLINE));
    assert_eq!(issued.scopes_asked.as_deref(), Some("flights.book"));
    assert_eq!(issued.scopes_granted.as_deref(), Some("flights.book"));
    assert_eq!(issued.jti, Some(claims_of(&hop2).jti));
    assert_eq!(issued.parent_jti, Some(claims_of(&hop1).jti));
    assert!(issued.rules.iter().any(|rule| rule.contains("booker-to-airline")), "{:?}", issued.rules);
    assert_eq!(issued.approval.as_ref().unwrap().approver.as_deref(), Some("travel-team@example.com"));
    let refused = &events[5];
    assert_eq!(refused.decision, baton::store::AuditDecision::Refused);
    assert!(refused.reason.as_deref().unwrap().contains("target"), "{:?}", refused.reason);
    assert_eq!(refused.target.as_deref(), Some(CALENDAR));
}
