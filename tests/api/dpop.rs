//! DPoP across hops (RFC 9449, DESIGN.md §2.3): each agent's token is bound
//! to that agent's key, the `delegation` hops record every key, and a bound
//! token is useless without its key, at the broker and at the API.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use baton::clock::Clock;
use baton::dpop::{ProofFor, ProofKey};
use baton::verifier::{Caller, Verifier, VerifierLayer};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::harness::*;

const TOKEN_ENDPOINT: &str = "http://127.0.0.1:8080/token";
const BOOKINGS: &str = "https://api.airline.example/bookings";

fn token_proof(harness: &Harness, key: &ProofKey) -> String {
    let uri = format!("{}/token", harness.broker.settings().issuer);
    key.proof(ProofFor { method: "POST", uri: &uri, ..ProofFor::default() }, harness.clock.now()).unwrap()
}

/// A fresh proof id for hand-made proofs.
fn next_jti() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!("hand-made-{}", COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// A request to the token endpoint as `agent`, with one proof by `key`.
async fn bound(harness: &Harness, agent: &str, key: &ProofKey, form: &[(&str, &str)]) -> Response {
    let secret = format!("dev-only-{agent}-secret");
    harness.token_with_proofs(Some((agent, &secret)), form, &[&token_proof(harness, key)]).await
}

fn exchange_form<'a>(subject_token: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut form =
        vec![("grant_type", EXCHANGE), ("subject_token", subject_token), ("subject_token_type", ACCESS_TOKEN)];
    form.extend_from_slice(extra);
    form
}

pub(crate) struct Agents {
    pub(crate) orchestrator: ProofKey,
    pub(crate) planner: ProofKey,
    pub(crate) booker: ProofKey,
}

pub(crate) fn agents() -> Agents {
    Agents {
        orchestrator: ProofKey::generate().unwrap(),
        planner: ProofKey::generate().unwrap(),
        booker: ProofKey::generate().unwrap(),
    }
}

/// The example walk, each hop bound to the key of the agent that obtained it.
pub(crate) async fn bound_walk(harness: &Harness, keys: &Agents) -> [String; 3] {
    let root = bound(
        harness,
        "orchestrator",
        &keys.orchestrator,
        &[("grant_type", "client_credentials"), ("audience", "planner")],
    )
    .await;
    assert_eq!(root.status, StatusCode::OK, "{}", root.body);
    let hop1 = bound(harness, "planner", &keys.planner, &exchange_form(root.token(), &[("audience", "booker")])).await;
    assert_eq!(hop1.status, StatusCode::OK, "{}", hop1.body);
    let form = exchange_form(hop1.token(), &[("resource", AIRLINE), ("scope", "flights.read")]);
    let hop2 = bound(harness, "booker", &keys.booker, &form).await;
    assert_eq!(hop2.status, StatusCode::OK, "{}", hop2.body);
    [root.token().to_owned(), hop1.token().to_owned(), hop2.token().to_owned()]
}

#[tokio::test]
async fn every_hop_is_bound_to_its_agents_key_and_the_path_records_them() {
    let harness = Harness::new();
    let keys = agents();
    let root = bound(&harness, "orchestrator", &keys.orchestrator, &[("grant_type", "client_credentials")]).await;
    assert_eq!(root.status, StatusCode::OK, "{}", root.body);
    assert_eq!(root.body["token_type"], "DPoP", "RFC 9449 §5");
    assert_eq!(claims_of(root.token()).jkt(), Some(keys.orchestrator.jkt()));

    let [root, hop1, hop2] = bound_walk(&harness, &keys).await;
    assert_eq!(claims_of(&hop1).jkt(), Some(keys.planner.jkt()), "bound to the exchanging agent, not the parent's");
    let last = claims_of(&hop2);
    assert_eq!(last.jkt(), Some(keys.booker.jkt()));
    let recorded: Vec<Option<&str>> = last.delegation.hops.iter().map(|hop| hop.jkt.as_deref()).collect();
    assert_eq!(recorded, vec![Some(keys.orchestrator.jkt()), Some(keys.planner.jkt())]);
    assert!(last.path_is_bound());
    assert_eq!(claims_of(&root).delegation.hops.len(), 0);
}

#[tokio::test]
async fn a_bound_chain_stays_bound() {
    let harness = Harness::new();
    let keys = agents();
    let [_, hop1, _] = bound_walk(&harness, &keys).await;
    // The booker holds the planner's bound token but sends no proof.
    let refused = harness.exchange("booker", &hop1, &[("resource", AIRLINE)]).await;
    refused.assert_error(400, "invalid_dpop_proof");
    let issued = harness.events().await.into_iter().filter(|event| event.jti.is_some()).count();
    assert_eq!(issued, 3, "nothing issued for the unbound attempt");
}

#[tokio::test]
async fn a_stolen_bound_actor_token_is_useless_without_its_key() {
    // The example rules, and the booker may have its own token for the airline.
    let rules = std::fs::read_to_string(example_policies().join("travel.cedar")).unwrap()
        + r#"permit (principal == Agent::"booker", action == Action::"issue", resource == Scope::"flights.read")
             when { context.target == "https://api.airline.example" };"#;
    let folder = example_folder_with_rules(&rules);
    let harness = Harness::with(Options { policies: folder.path().to_owned(), ..Options::default() });
    let keys = agents();
    let [_, hop1, _] = bound_walk(&harness, &keys).await;
    let own = bound(&harness, "booker", &keys.booker, &[("grant_type", "client_credentials"), ("resource", AIRLINE)]);
    let own = own.await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.body);
    let actor = [
        ("resource", AIRLINE),
        ("scope", "flights.read"),
        ("actor_token", own.token()),
        ("actor_token_type", ACCESS_TOKEN),
    ];
    let form = exchange_form(&hop1, &actor);
    // With a proof of another key (the thief's), the actor token is refused.
    let thief = ProofKey::generate().unwrap();
    bound(&harness, "booker", &thief, &form).await.assert_error(400, "invalid_dpop_proof");
    // With the booker's key it passes.
    let ok = bound(&harness, "booker", &keys.booker, &form).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
}

/// The example inventory with other rules.
fn example_folder_with_rules(rules: &str) -> tempfile::TempDir {
    let agents = std::fs::read_to_string(example_policies().join("agents.toml")).unwrap();
    let resources = std::fs::read_to_string(example_policies().join("resources.toml")).unwrap();
    policy_folder(&agents, &resources, rules)
}

#[tokio::test]
async fn rfc9449_section_4_3_at_the_token_endpoint() {
    let harness = Harness::new();
    let key = ProofKey::generate().unwrap();
    let form = [("grant_type", "client_credentials")];
    let secret = "dev-only-orchestrator-secret";
    let send = |proofs: Vec<String>| {
        let harness = &harness;
        async move {
            let proofs: Vec<&str> = proofs.iter().map(String::as_str).collect();
            harness.token_with_proofs(Some(("orchestrator", secret)), &form, &proofs).await
        }
    };
    let now = harness.clock.now();
    let good = || token_proof(&harness, &key);
    let claims = |overrides: Value| {
        let mut claims = json!({ "jti": next_jti(), "htm": "POST", "htu": TOKEN_ENDPOINT, "iat": now.0 });
        for (name, value) in overrides.as_object().unwrap() {
            claims[name] = value.clone();
        }
        claims
    };
    let mut header = key.header();
    header["typ"] = json!("JWT");
    let wrong_type = key.sign(&header, &claims(json!({}))).unwrap();
    let mut header = key.header();
    header["alg"] = json!("HS256");
    let symmetric = key.sign(&header, &claims(json!({}))).unwrap();
    let mut header = key.header();
    header["jwk"]["d"] = json!("AAAA");
    let private = key.sign(&header, &claims(json!({}))).unwrap();
    let foreign = ProofKey::generate().unwrap().sign(&key.header(), &claims(json!({}))).unwrap();
    let cases = [
        ("one header", vec![good(), good()]),
        ("a JWT", vec!["not.a.proof".to_owned()]),
        ("typ", vec![wrong_type]),
        ("asymmetric alg", vec![symmetric]),
        ("signature", vec![foreign]),
        ("no private key", vec![private]),
        ("htm", vec![key.sign(&key.header(), &claims(json!({"htm": "GET"}))).unwrap()]),
        ("htu", vec![key.sign(&key.header(), &claims(json!({"htu": "http://127.0.0.1:8080/revoke"}))).unwrap()]),
        ("iat", vec![key.sign(&key.header(), &claims(json!({"iat": now.0 - 3600}))).unwrap()]),
        (
            "claims",
            vec![key.sign(&key.header(), &json!({"htm": "POST", "htu": TOKEN_ENDPOINT, "iat": now.0})).unwrap()],
        ),
    ];
    for (check, proofs) in cases {
        let response = send(proofs).await;
        assert_eq!(
            (response.status.as_u16(), response.error()),
            (400, "invalid_dpop_proof"),
            "{check}: {}",
            response.body
        );
    }
    // jti single use: the same proof twice.
    let once = good();
    assert_eq!(send(vec![once.clone()]).await.status, StatusCode::OK);
    send(vec![once]).await.assert_error(400, "invalid_dpop_proof");
    let refusals = harness
        .events()
        .await
        .into_iter()
        .filter(|event| event.reason.as_deref().is_some_and(|r| r.contains("DPoP")))
        .count();
    assert_eq!(refusals, 11, "every refusal is audited");
}

#[tokio::test]
async fn server_nonces_when_configured() {
    let harness = Harness::with(Options { dpop_nonce: true, ..Options::default() });
    let key = ProofKey::generate().unwrap();
    let form = [("grant_type", "client_credentials")];
    let secret = "dev-only-orchestrator-secret";
    let first = harness.token_with_proofs(Some(("orchestrator", secret)), &form, &[&token_proof(&harness, &key)]).await;
    first.assert_error(400, "use_dpop_nonce");
    let nonce = first.headers["dpop-nonce"].to_str().unwrap().to_owned();
    let request = ProofFor { method: "POST", uri: TOKEN_ENDPOINT, nonce: Some(&nonce), ..ProofFor::default() };
    let proof = key.proof(request, harness.clock.now()).unwrap();
    let second = harness.token_with_proofs(Some(("orchestrator", secret)), &form, &[&proof]).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert!(second.headers.contains_key("dpop-nonce"), "the next nonce comes with every answer");
    // A nonce from long ago is no longer current.
    harness.clock.advance(2 * baton::dpop::nonce::NONCE_PERIOD);
    let request = ProofFor { method: "POST", uri: TOKEN_ENDPOINT, nonce: Some(&nonce), ..ProofFor::default() };
    let stale = key.proof(request, harness.clock.now()).unwrap();
    harness
        .token_with_proofs(Some(("orchestrator", secret)), &form, &[&stale])
        .await
        .assert_error(400, "use_dpop_nonce");
}

#[tokio::test]
async fn policy_can_require_a_bound_chain() {
    let rules = r#"
        permit (principal, action, resource);
        forbid (principal, action == Action::"exchange", resource in Resource::"https://api.airline.example")
        unless { context.chain_dpop_bound };
    "#;
    let folder = example_folder_with_rules(rules);
    let harness = Harness::with(Options { policies: folder.path().to_owned(), ..Options::default() });
    let keys = agents();
    // Unbound all the way: the airline's scopes do not travel.
    let root = harness.as_agent("orchestrator", &[("grant_type", "client_credentials"), ("audience", "planner")]).await;
    let hop = harness.exchange("planner", root.token(), &[("audience", "booker"), ("scope", "flights.read")]).await;
    hop.assert_error(400, "invalid_scope");
    // A bound hop after an unbound root is still not a bound chain.
    let form = exchange_form(root.token(), &[("audience", "booker"), ("scope", "flights.read")]);
    bound(&harness, "planner", &keys.planner, &form).await.assert_error(400, "invalid_scope");
    // Bound from the root: granted.
    let root = bound(
        &harness,
        "orchestrator",
        &keys.orchestrator,
        &[("grant_type", "client_credentials"), ("audience", "planner")],
    )
    .await;
    let form = exchange_form(root.token(), &[("audience", "booker"), ("scope", "flights.read")]);
    let hop = bound(&harness, "planner", &keys.planner, &form).await;
    assert_eq!(hop.status, StatusCode::OK, "{}", hop.body);
}

#[tokio::test]
async fn introspection_names_the_key() {
    let harness = Harness::new();
    let [_, _, last] = bound_walk(&harness, &agents()).await;
    let request = Request::post("/introspect")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::AUTHORIZATION, basic_header("airline-api", "dev-only-airline-api-secret"))
        .body(Body::from(form_body(&[("token", &last)])))
        .unwrap();
    let response = harness.send(request).await;
    assert_eq!(response.body["active"], true, "{}", response.body);
    assert_eq!(response.body["token_type"], "DPoP");
    assert_eq!(response.body["cnf"]["jkt"], claims_of(&last).jkt().unwrap());
}

/// The airline API, reached by its clients at `https://api.airline.example`.
fn airline_api(harness: &Harness, issuer: &str) -> Router {
    airline_api_requiring(harness, issuer, baton::claims::ScopeSet::default())
}

fn airline_api_requiring(harness: &Harness, issuer: &str, scopes: baton::claims::ScopeSet) -> Router {
    let verifier = Verifier::builder(issuer)
        .audience(AIRLINE)
        .require_scopes(scopes)
        .public_url(AIRLINE)
        .clock(harness.clock.clone())
        .revocation(harness.store.clone())
        .replay(harness.store.clone())
        .build()
        .unwrap();
    Router::new()
        .route("/bookings", get(|caller: Caller| async move { Json(json!({ "agent": caller.agent() })) }))
        .layer(VerifierLayer::new(Arc::new(verifier)))
}

async fn call(api: &Router, authorization: &str, proofs: &[&str]) -> (u16, String) {
    let mut request = Request::get("/bookings").header(header::AUTHORIZATION, authorization);
    for proof in proofs {
        request = request.header("DPoP", *proof);
    }
    let response = api.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let challenge = response.headers().get(header::WWW_AUTHENTICATE).map(|value| value.to_str().unwrap().to_owned());
    let _ = response.into_body().collect().await.unwrap();
    (status, challenge.unwrap_or_default())
}

#[tokio::test]
async fn the_api_accepts_a_bound_token_only_with_a_proof_of_its_key() {
    let (harness, issuer) = Harness::served(Options::default()).await;
    let api = airline_api(&harness, &issuer);
    let keys = agents();
    let [_, _, token] = bound_walk(&harness, &keys).await;
    let now = harness.clock.now();
    let proof = |key: &ProofKey, method: &'static str, uri: &'static str, access_token: &str| {
        key.proof(ProofFor { method, uri, access_token: Some(access_token), nonce: None }, now).unwrap()
    };
    let dpop = format!("DPoP {token}");

    let good = proof(&keys.booker, "GET", BOOKINGS, &token);
    assert_eq!(call(&api, &dpop, &[&good]).await.0, 200);
    // The same proof again: its jti is spent.
    let (status, challenge) = call(&api, &dpop, &[&good]).await;
    assert_eq!(status, 401);
    assert!(challenge.contains("DPoP") && challenge.contains("invalid_dpop_proof"), "{challenge}");
    // Stolen: presented as a bearer token, or with the thief's own key.
    let (status, challenge) = call(&api, &format!("Bearer {token}"), &[]).await;
    assert_eq!(status, 401);
    assert!(challenge.contains("invalid_token"), "{challenge}");
    let thief = ProofKey::generate().unwrap();
    assert_eq!(call(&api, &dpop, &[&proof(&thief, "GET", BOOKINGS, &token)]).await.0, 401);
    // A proof for another request, or for another token.
    assert_eq!(call(&api, &dpop, &[&proof(&keys.booker, "POST", BOOKINGS, &token)]).await.0, 401);
    let elsewhere = "https://api.airline.example/flights";
    assert_eq!(call(&api, &dpop, &[&proof(&keys.booker, "GET", elsewhere, &token)]).await.0, 401);
    assert_eq!(call(&api, &dpop, &[&proof(&keys.booker, "GET", BOOKINGS, "another token")]).await.0, 401);
    // No proof, or two.
    assert_eq!(call(&api, &dpop, &[]).await.0, 401);
    let (one, two) = (proof(&keys.booker, "GET", BOOKINGS, &token), proof(&keys.booker, "GET", BOOKINGS, &token));
    assert_eq!(call(&api, &dpop, &[&one, &two]).await.0, 401);
    // An unbound token under the DPoP scheme is not what it claims to be.
    let [_, _, unbound] = harness.walk().await;
    let (status, _) = call(&api, &format!("DPoP {unbound}"), &[&proof(&keys.booker, "GET", BOOKINGS, &unbound)]).await;
    assert_eq!(status, 401);
    assert_eq!(call(&api, &format!("Bearer {unbound}"), &[]).await.0, 200);

    // The holder is proven first: a thief learns nothing of the token's
    // scopes; the holder is told what is missing.
    let booking = airline_api_requiring(&harness, &issuer, baton::claims::ScopeSet::parse("flights.book").unwrap());
    let (status, challenge) = call(&booking, &dpop, &[&proof(&thief, "GET", BOOKINGS, &token)]).await;
    assert_eq!(status, 401);
    assert!(challenge.contains("invalid_dpop_proof"), "{challenge}");
    let (status, challenge) = call(&booking, &dpop, &[&proof(&keys.booker, "GET", BOOKINGS, &token)]).await;
    assert_eq!(status, 403);
    assert!(challenge.contains("insufficient_scope"), "{challenge}");
}
