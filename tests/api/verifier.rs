//! The verifier for APIs (DESIGN.md §7) in front of a real axum API, against
//! a broker served on a real socket: discovery, the JWKS, audience, scope,
//! revocation, and RFC 6750 answers.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request};
use axum::routing::get;
use axum::{Json, Router};
use baton::claims::ScopeSet;
use baton::verifier::{danger, Caller, Verifier, VerifierLayer};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::harness::*;

/// The airline API: says who calls through whom.
fn airline_api(verifier: Verifier) -> Router {
    Router::new()
        .route(
            "/bookings",
            get(|caller: Caller| async move {
                Json(json!({ "subject": caller.subject(), "agent": caller.agent(), "chain": caller.chain() }))
            }),
        )
        .layer(VerifierLayer::new(Arc::new(verifier)))
}

async fn call(api: &Router, authorization: Option<&str>) -> (u16, Option<String>, Value) {
    let mut request = Request::get("/bookings");
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    let response = api.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let challenge = response.headers().get(header::WWW_AUTHENTICATE).map(|value| value.to_str().unwrap().to_owned());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, challenge, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn builder(harness: &Harness, issuer: &str) -> baton::verifier::VerifierBuilder {
    Verifier::builder(issuer).audience(AIRLINE).clock(harness.clock.clone()).revocation(harness.store.clone())
}

#[tokio::test]
async fn the_api_sees_who_calls_through_whom() {
    let (harness, issuer) = Harness::served(Options::default()).await;
    let api = airline_api(
        builder(&harness, &issuer).require_scopes(ScopeSet::parse("flights.book").unwrap()).build().unwrap(),
    );
    let [root, hop1, hop2] = harness.walk().await;

    let (status, _, body) = call(&api, Some(&format!("Bearer {hop2}"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"subject": "orchestrator", "agent": "booker", "chain": ["booker", "planner"]}));

    // Not for this API.
    let (status, challenge, _) = call(&api, Some(&format!("Bearer {hop1}"))).await;
    assert_eq!(status, 401);
    assert!(challenge.unwrap().contains("error=\"invalid_token\""));
    // No token: a challenge without an error code (RFC 6750 §3.1).
    let (status, challenge, _) = call(&api, None).await;
    assert_eq!(status, 401);
    assert!(!challenge.unwrap().contains("error="));
    let (status, _, _) = call(&api, Some("Basic abc")).await;
    assert_eq!(status, 401);

    // Revoking an ancestor is seen at once.
    use baton::store::RevocationStore;
    harness.store.revoke(&claims_of(&root).jti, START.plus(3600)).await.unwrap();
    let (status, challenge, _) = call(&api, Some(&format!("Bearer {hop2}"))).await;
    assert_eq!(status, 401);
    assert!(challenge.unwrap().contains("invalid_token"));
}

#[tokio::test]
async fn a_missing_scope_is_403_insufficient_scope() {
    let (harness, issuer) = Harness::served(Options::default()).await;
    let api = airline_api(
        builder(&harness, &issuer).require_scopes(ScopeSet::parse("flights.read").unwrap()).build().unwrap(),
    );
    let [_, _, hop2] = harness.walk().await;
    let (status, challenge, body) = call(&api, Some(&format!("Bearer {hop2}"))).await;
    assert_eq!(status, 403, "{body}");
    let challenge = challenge.unwrap();
    // RFC 6750 §3.1, and the MCP scope challenge: the scopes to ask for,
    // the one lacking with those held, so that stepping up loses nothing.
    assert!(
        challenge.contains("error=\"insufficient_scope\"") && challenge.contains("scope=\"flights.book flights.read\""),
        "{challenge}"
    );
    // An API that publishes no metadata names none (RFC 9728 §5.1 is for
    // those that do: see the MCP tests).
    assert!(!challenge.contains("resource_metadata"), "{challenge}");
}

#[tokio::test]
async fn a_rotated_key_is_fetched_without_a_restart() {
    let (harness, issuer) = Harness::served(Options::default()).await;
    let api = airline_api(builder(&harness, &issuer).build().unwrap());
    let [_, _, before] = harness.walk().await;
    assert_eq!(call(&api, Some(&format!("Bearer {before}"))).await.0, 200);
    baton::keys::rotate(&harness.keys_dir(), baton::keys::Algorithm::EdDsa, 3600, START).unwrap();
    harness.broker.replace_keys(baton::keys::KeySet::load(&harness.keys_dir(), 3600, START).unwrap());
    let [_, _, after] = harness.walk().await;
    assert_eq!(header_of(&after)["alg"], "EdDSA");
    // The verifier has not seen this kid: it refetches the JWKS once.
    assert_eq!(call(&api, Some(&format!("Bearer {after}"))).await.0, 200);
    assert_eq!(call(&api, Some(&format!("Bearer {before}"))).await.0, 200, "the retired key still verifies");
}

#[tokio::test]
async fn an_unreachable_issuer_fails_closed() {
    let harness = Harness::new();
    let verifier = builder(&harness, "http://127.0.0.1:9").build().unwrap();
    let api = airline_api(verifier);
    let [_, _, hop2] = harness.walk().await;
    assert_eq!(call(&api, Some(&format!("Bearer {hop2}"))).await.0, 503);
}

#[test]
fn the_builder_insists_on_audience_and_revocation() {
    assert!(Verifier::builder(ISSUER).revocation(Arc::new(baton::store::memory::MemoryStore::new())).build().is_err());
    assert!(Verifier::builder(ISSUER).audience(AIRLINE).build().is_err());
    assert!(danger::without_revocation_check(Verifier::builder(ISSUER).audience(AIRLINE)).build().is_ok());
    assert!(Verifier::builder(ISSUER)
        .audience(AIRLINE)
        .algorithms(vec![])
        .revocation(Arc::new(baton::store::memory::MemoryStore::new()))
        .build()
        .is_err());
}

#[tokio::test]
async fn introspection_as_the_revocation_source() {
    let (harness, issuer) = Harness::served(Options::default()).await;
    let verifier = Verifier::builder(&issuer)
        .audience(AIRLINE)
        .clock(harness.clock.clone())
        .introspection("airline-api", "dev-only-airline-api-secret", std::time::Duration::ZERO)
        .build()
        .unwrap();
    let api = airline_api(verifier);
    let [_, hop1, hop2] = harness.walk().await;
    assert_eq!(call(&api, Some(&format!("Bearer {hop2}"))).await.0, 200);
    use baton::store::RevocationStore;
    harness.store.revoke(&claims_of(&hop1).jti, START.plus(3600)).await.unwrap();
    assert_eq!(call(&api, Some(&format!("Bearer {hop2}"))).await.0, 401, "the broker says inactive");

    let wrong = Verifier::builder(&issuer)
        .audience(AIRLINE)
        .clock(harness.clock.clone())
        .introspection("airline-api", "wrong", std::time::Duration::ZERO)
        .build()
        .unwrap();
    let [_, _, fresh] = harness.walk().await;
    assert_eq!(call(&airline_api(wrong), Some(&format!("Bearer {fresh}"))).await.0, 503, "cannot check: fail closed");
}

#[tokio::test]
async fn a_silent_issuer_cannot_stall_the_api() {
    // Accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer = format!("http://{}", silent.local_addr().unwrap());
    let harness = Harness::new();
    let verifier = builder(&harness, &issuer).build().unwrap();
    let [_, _, hop2] = harness.walk().await;
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(20), verifier.verify(&hop2)).await;
    assert!(matches!(outcome, Ok(Err(baton::verifier::Rejection::Unavailable(_)))), "{outcome:?}");
    drop(silent);
}

#[test]
fn introspection_answers_are_cached_briefly_at_most() {
    let long = Verifier::builder(ISSUER)
        .audience(AIRLINE)
        .introspection("api", "secret", std::time::Duration::from_secs(3600))
        .build();
    assert!(long.is_err(), "a revocation must reach the API within seconds");
}
