//! Malformed and hostile requests get the RFC's code, a neutral description
//! and `no-store`; never a panic, never a token. State that cannot be
//! checked fails closed.

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, Request};
use baton::clock::UnixTime;
use baton::context::Stores;
use baton::store::{
    AuditEvent, AuditFilter, AuditStore, Lineage, Principal, ReplayStore, RevocationStore, Status, StoreError, Use,
};

use crate::harness::*;

#[tokio::test]
async fn malformed_requests_are_invalid_request() {
    let harness = Harness::new();
    let [root, ..] = harness.walk().await;
    let events_before = harness.events().await.len();

    harness
        .token(Some(("orchestrator", "dev-only-orchestrator-secret")), &[])
        .await
        .assert_error(400, "invalid_request");
    harness
        .as_agent("orchestrator", &[("grant_type", "client_credentials"), ("grant_type", "client_credentials")])
        .await
        .assert_error(400, "invalid_request");
    harness
        .as_agent("orchestrator", &[("grant_type", "client_credentials"), ("scope", "a"), ("scope", "b")])
        .await
        .assert_error(400, "invalid_request");
    harness.as_agent("orchestrator", &[("grant_type", "password")]).await.assert_error(400, "unsupported_grant_type");
    harness
        .as_agent("orchestrator", &[("grant_type", "client_credentials"), ("scope", "bad\"scope")])
        .await
        .assert_error(400, "invalid_scope");
    harness
        .as_agent(
            "orchestrator",
            &[("grant_type", "client_credentials"), ("audience", "planner"), ("audience", "booker")],
        )
        .await
        .assert_error(400, "invalid_target");

    // Token exchange parameters (RFC 8693 §2.1).
    let exchange = |extra: Vec<(&'static str, String)>| {
        let mut form: Vec<(&str, String)> = vec![("grant_type", EXCHANGE.into())];
        form.extend(extra);
        form
    };
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("no subject_token", exchange(vec![("subject_token_type", ACCESS_TOKEN.into())])),
        ("no subject_token_type", exchange(vec![("subject_token", root.clone())])),
        (
            "unknown subject_token_type",
            exchange(vec![
                ("subject_token", root.clone()),
                ("subject_token_type", "urn:ietf:params:oauth:token-type:saml2".into()),
            ]),
        ),
        (
            "unknown requested_token_type",
            exchange(vec![
                ("subject_token", root.clone()),
                ("subject_token_type", ACCESS_TOKEN.into()),
                ("requested_token_type", "urn:ietf:params:oauth:token-type:refresh_token".into()),
            ]),
        ),
        (
            "actor_token_type without actor_token",
            exchange(vec![
                ("subject_token", root.clone()),
                ("subject_token_type", ACCESS_TOKEN.into()),
                ("actor_token_type", ACCESS_TOKEN.into()),
            ]),
        ),
        (
            "repeated subject_token",
            exchange(vec![
                ("subject_token", root.clone()),
                ("subject_token", root.clone()),
                ("subject_token_type", ACCESS_TOKEN.into()),
            ]),
        ),
    ];
    for (case, form) in cases {
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let response = harness.as_agent("planner", &form).await;
        assert_eq!((response.status.as_u16(), response.error()), (400, "invalid_request"), "{case}: {}", response.body);
        assert!(!response.body.to_string().contains(&root[..40]), "{case}: token echoed");
    }
    // Every refusal is still evidence; nothing was issued.
    let events = harness.events().await;
    assert!(events.len() > events_before);
    assert!(events[events_before..].iter().all(|event| event.decision == baton::store::AuditDecision::Refused));
}

#[tokio::test]
async fn wrong_methods_content_types_and_sizes_are_clear_4xx() {
    let harness = Harness::new();
    let get = harness.get("/token").await;
    get.assert_error(405, "invalid_request");
    assert_eq!(get.headers[header::ALLOW], "POST");

    let json_body = harness
        .send(
            Request::post("/token")
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::AUTHORIZATION, basic_header("orchestrator", "dev-only-orchestrator-secret"))
                .body(Body::from(r#"{"grant_type":"client_credentials"}"#))
                .unwrap(),
        )
        .await;
    json_body.assert_error(400, "invalid_request");

    let huge = format!("grant_type=client_credentials&padding={}", "x".repeat(100 * 1024));
    let oversize = harness
        .send(
            Request::post("/token")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::AUTHORIZATION, basic_header("orchestrator", "dev-only-orchestrator-secret"))
                .body(Body::from(huge))
                .unwrap(),
        )
        .await;
    oversize.assert_error(413, "invalid_request");

    let two_auth = harness
        .send(
            Request::post("/token")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::AUTHORIZATION, basic_header("orchestrator", "dev-only-orchestrator-secret"))
                .header(header::AUTHORIZATION, basic_header("planner", "dev-only-planner-secret"))
                .body(Body::from("grant_type=client_credentials"))
                .unwrap(),
        )
        .await;
    two_auth.assert_error(400, "invalid_request");
    let binary_credentials = harness
        .send(
            Request::post("/token")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::AUTHORIZATION, axum::http::HeaderValue::from_bytes(b"Basic \xff\xfe").unwrap())
                .body(Body::from("grant_type=client_credentials"))
                .unwrap(),
        )
        .await;
    binary_credentials.assert_error(401, "invalid_client");
    // Refused before the body was read, and still evidence: counted together
    // with the other refusals of unauthenticated requests, in one event.
    assert_eq!(harness.broker.flush_refusals().await.unwrap(), 5);
    let refusals = harness.events().await;
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert!(refusals.iter().all(|event| event.decision == baton::store::AuditDecision::Refused));
    assert_eq!(refusals[0].refusals.iter().map(|count| count.count).sum::<u64>(), 5, "{refusals:?}");

    let not_found = harness.get("/nowhere").await;
    assert_eq!(not_found.status, 404);
    assert_eq!(not_found.headers[header::CACHE_CONTROL], "no-store");
}

#[tokio::test]
async fn broken_form_encoding_does_not_panic() {
    let harness = Harness::new();
    for body in ["%", "grant_type=%ZZ", "&&&=&=", "grant_type=client_credentials&scope=%00", "\u{0}\u{1}"] {
        let response = harness
            .send(
                Request::post("/token")
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .header(header::AUTHORIZATION, basic_header("orchestrator", "dev-only-orchestrator-secret"))
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await;
        assert!(response.status.is_client_error(), "{body:?}: {} {}", response.status, response.body);
        assert!(response.body.get("access_token").is_none());
    }
}

/// State that cannot be reached: every call fails.
struct Unreachable;

#[async_trait]
impl ReplayStore for Unreachable {
    async fn use_once(&self, _: &str, _: UnixTime, _: UnixTime) -> Result<Use, StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
}

#[async_trait]
impl RevocationStore for Unreachable {
    async fn revoke(&self, _: &baton::claims::TokenId, _: UnixTime) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
    async fn deprovision(&self, _: &Principal, _: &baton::store::Cutoff) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
    async fn block(&self, _: &Principal, _: bool) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
    async fn check(&self, _: &Lineage) -> Result<Status, StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
}

#[async_trait]
impl AuditStore for Unreachable {
    async fn record(&self, _: AuditEvent) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
    async fn query(&self, _: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
    async fn count(&self, _: &AuditFilter) -> Result<usize, StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
}

#[tokio::test]
async fn unreachable_state_fails_closed() {
    // Revocation unreachable: an exchange cannot check its parent.
    let memory = Arc::new(baton::store::memory::MemoryStore::new());
    let revocation_down = Harness::with(Options {
        stores: Some(Stores { replay: memory.clone(), revocation: Arc::new(Unreachable), audit: memory.clone() }),
        ..Options::default()
    });
    // Whether the agent is blocked cannot be read: not even its own token.
    let root_here = revocation_down.as_agent("orchestrator", &[("grant_type", "client_credentials")]).await;
    root_here.assert_error(503, "temporarily_unavailable");
    let header = serde_json::json!({"alg": "ES256", "typ": "at+jwt", "kid": revocation_down.broker_kid()});
    let root = revocation_down.sign_with_broker_key(
        &header,
        &serde_json::json!({
            "iss": ISSUER, "sub": "orchestrator", "aud": "planner", "client_id": "orchestrator", "scope": "flights.read",
            "iat": START.0, "exp": START.0 + 600, "jti": "root-down", "delegation": {"depth": 0, "hops": []}
        }),
    );
    let refused = revocation_down.exchange("planner", &root, &[("audience", "booker")]).await;
    refused.assert_error(503, "temporarily_unavailable");
    assert!(refused.body.get("access_token").is_none());
    assert_eq!(refused.headers[header::RETRY_AFTER], "1");

    // Introspection and revocation cannot read the state either: 503, never a verdict.
    let form = |path: &'static str, basic: (&str, &str), token: &str| {
        Request::post(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::AUTHORIZATION, basic_header(basic.0, basic.1))
            .body(Body::from(form_body(&[("token", token)])))
            .unwrap()
    };
    let for_the_api = revocation_down.sign_with_broker_key(
        &header,
        &serde_json::json!({
            "iss": ISSUER, "sub": "booker", "aud": AIRLINE, "client_id": "booker", "scope": "flights.read",
            "iat": START.0, "exp": START.0 + 300, "jti": "api-down", "delegation": {"depth": 0, "hops": []}
        }),
    );
    let introspected =
        revocation_down.send(form("/introspect", ("airline-api", "dev-only-airline-api-secret"), &for_the_api)).await;
    introspected.assert_error(503, "temporarily_unavailable");
    assert!(introspected.body.get("active").is_none(), "no verdict when the state cannot be read");
    revocation_down
        .send(form("/revoke", ("planner", "dev-only-planner-secret"), &root))
        .await
        .assert_error(503, "temporarily_unavailable");

    // Audit unreachable: a token whose issuance cannot be recorded is not handed out.
    let audit_down = Harness::with(Options {
        stores: Some(Stores { replay: memory.clone(), revocation: memory.clone(), audit: Arc::new(Unreachable) }),
        ..Options::default()
    });
    audit_down
        .as_agent("orchestrator", &[("grant_type", "client_credentials")])
        .await
        .assert_error(503, "temporarily_unavailable");
}

#[tokio::test]
async fn unreachable_replay_state_fails_closed_for_assertions() {
    let memory = Arc::new(baton::store::memory::MemoryStore::new());
    let stores = Stores { replay: Arc::new(Unreachable), revocation: memory.clone(), audit: memory };
    let setup = crate::client_auth::key_agent_with(Some(stores));
    let header = serde_json::json!({"alg": "ES256", "kid": "signer-key-1"});
    let assertion = sign(&setup.key, &header, &crate::client_auth::assertion_claims("down"));
    let refused = crate::client_auth::with_assertion(&setup.harness, &assertion).await;
    refused.assert_error(503, "temporarily_unavailable");
    assert!(refused.body.get("access_token").is_none());
}
