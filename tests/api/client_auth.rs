//! Client authentication (RFC 6749 §2.3, RFC 7523): one method a request,
//! secrets checked by hash, assertions single-use; failures are 401
//! `invalid_client` with `WWW-Authenticate`.

use baton::client_auth::ASSERTION_TYPE;
use josekit::jwk::Jwk;
use serde_json::{json, Value};

use crate::harness::*;

pub struct KeyAgent {
    pub harness: Harness,
    pub key: Jwk,
    _policies: tempfile::TempDir,
}

/// A broker whose agent `signer` authenticates with `private_key_jwt`, and
/// whose agent `holder` uses a secret.
fn key_agent() -> KeyAgent {
    key_agent_with(None)
}

/// The same, on the given stores.
pub fn key_agent_with(stores: Option<baton::context::Stores>) -> KeyAgent {
    key_agent_options(Options { stores, ..Options::default() })
}

/// The same, with these harness options (the policies are the test's own).
fn key_agent_options(options: Options) -> KeyAgent {
    let key = Jwk::generate_ec_key(josekit::jwk::alg::ec::EcCurve::P256).unwrap();
    let mut public = key.to_public_key().unwrap();
    public.set_key_id("signer-key-1");
    let jwk = Value::Object(public.as_ref().clone());
    let jwk_toml =
        format!("{{ kty = \"EC\", crv = \"P-256\", kid = \"signer-key-1\", x = {}, y = {} }}", jwk["x"], jwk["y"]);
    let agents = format!(
        "[[agents]]\nid = 'signer'\nowner = 'o'\npurpose = 'p'\nexpires = 2030-01-01\njwks = {{ keys = [ {jwk_toml} ] }}\n\
         [[agents]]\nid = 'holder'\nowner = 'o'\npurpose = 'p'\nexpires = 2030-01-01\nsecret_sha256 = '{}'\n",
        secret_hash("holder-secret")
    );
    let resources = "[[resources]]\nuri = 'https://api.example'\nname = 'API'\nscopes = ['read']\nttl = 300\n";
    let folder = policy_folder(&agents, resources, "permit (principal, action == Action::\"issue\", resource);");
    let harness = Harness::with(Options { policies: folder.path().to_owned(), ..options });
    KeyAgent { harness, key, _policies: folder }
}

pub fn assertion_claims(jti: &str) -> Value {
    json!({"iss": "signer", "sub": "signer", "aud": ISSUER, "exp": START.0 + 120, "iat": START.0, "jti": jti})
}

pub async fn with_assertion(harness: &Harness, assertion: &str) -> Response {
    harness
        .token(
            None,
            &[
                ("grant_type", "client_credentials"),
                ("audience", "https://api.example"),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", assertion),
            ],
        )
        .await
}

#[track_caller]
fn assert_invalid_client(response: &Response) {
    response.assert_error(401, "invalid_client");
    assert!(response.headers["www-authenticate"].to_str().unwrap().starts_with("Basic"), "{:?}", response.headers);
}

#[tokio::test]
async fn private_key_jwt_authenticates_once_per_assertion() {
    let setup = key_agent();
    let header = json!({"alg": "ES256", "kid": "signer-key-1"});
    let assertion = sign(&setup.key, &header, &assertion_claims("one"));
    let first = with_assertion(&setup.harness, &assertion).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(json_of(first.token())["sub"], "signer");
    // RFC 7523 §3 item 7: the same jti is refused until the assertion expires.
    assert_invalid_client(&with_assertion(&setup.harness, &assertion).await);
    let fresh = sign(&setup.key, &header, &assertion_claims("two"));
    assert_eq!(with_assertion(&setup.harness, &fresh).await.status, 200);
    // Without a kid the registered keys are tried.
    let no_kid = sign(&setup.key, &json!({"alg": "ES256"}), &assertion_claims("three"));
    assert_eq!(with_assertion(&setup.harness, &no_kid).await.status, 200);
}

#[tokio::test]
async fn bad_assertions_are_invalid_client() {
    let setup = key_agent();
    let harness = &setup.harness;
    let header = json!({"alg": "ES256", "kid": "signer-key-1"});
    let signed = |edit: &dyn Fn(&mut Value), jti: &str| {
        let mut claims = assertion_claims(jti);
        edit(&mut claims);
        sign(&setup.key, &header, &claims)
    };
    let cases: Vec<(&str, String)> = vec![
        ("wrong audience", signed(&|c| c["aud"] = json!("https://other.example"), "a1")),
        ("token endpoint as audience", signed(&|c| c["aud"] = json!(format!("{ISSUER}/token")), "a2")),
        ("audience list smuggling the issuer", signed(&|c| c["aud"] = json!(["https://other.example", ISSUER]), "a12")),
        ("expired", signed(&|c| c["exp"] = json!(START.0 - 1), "a3")),
        ("exp too far ahead", signed(&|c| c["exp"] = json!(START.0 + 3600), "a4")),
        (
            "no exp",
            signed(
                &|c| {
                    c.as_object_mut().unwrap().remove("exp");
                },
                "a5",
            ),
        ),
        (
            "no jti",
            signed(
                &|c| {
                    c.as_object_mut().unwrap().remove("jti");
                },
                "a6",
            ),
        ),
        ("sub differs from iss", signed(&|c| c["sub"] = json!("holder"), "a7")),
        ("issued in the future", signed(&|c| c["iat"] = json!(START.0 + 100), "a8")),
        ("not yet valid", signed(&|c| c["nbf"] = json!(START.0 + 100), "a9")),
        (
            "unknown client",
            signed(
                &|c| {
                    c["iss"] = json!("ghost");
                    c["sub"] = json!("ghost");
                },
                "a10",
            ),
        ),
        (
            "secret client by assertion",
            signed(
                &|c| {
                    c["iss"] = json!("holder");
                    c["sub"] = json!("holder");
                },
                "a11",
            ),
        ),
    ];
    for (case, assertion) in &cases {
        let response = with_assertion(harness, assertion).await;
        assert_eq!((response.status.as_u16(), response.error()), (401, "invalid_client"), "{case}: {}", response.body);
    }
    let typed =
        sign(&setup.key, &json!({"alg": "ES256", "kid": "signer-key-1", "typ": "at+jwt"}), &assertion_claims("b5"));
    assert_invalid_client(&with_assertion(harness, &typed).await);
    let stranger = Jwk::generate_ec_key(josekit::jwk::alg::ec::EcCurve::P256).unwrap();
    assert_invalid_client(&with_assertion(harness, &sign(&stranger, &header, &assertion_claims("b1"))).await);
    let none = format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(assertion_claims("b2").to_string().as_bytes()));
    assert_invalid_client(&with_assertion(harness, &none).await);
    assert_invalid_client(&with_assertion(harness, "garbage").await);

    // client_id in the body must match the assertion.
    let mismatch = harness
        .token(
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "holder"),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &sign(&setup.key, &header, &assertion_claims("b3"))),
            ],
        )
        .await;
    assert_invalid_client(&mismatch);
    let wrong_type = harness
        .token(
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", "urn:example:other"),
                ("client_assertion", &sign(&setup.key, &header, &assertion_claims("b4"))),
            ],
        )
        .await;
    assert_invalid_client(&wrong_type);
}

#[tokio::test]
async fn secrets_by_basic_and_by_post() {
    let harness = Harness::new();
    let form = [("grant_type", "client_credentials")];
    assert_eq!(harness.as_agent("orchestrator", &form).await.status, 200);
    let post = harness
        .token(
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "orchestrator"),
                ("client_secret", "dev-only-orchestrator-secret"),
            ],
        )
        .await;
    assert_eq!(post.status, 200, "{}", post.body);

    assert_invalid_client(&harness.token(Some(("orchestrator", "wrong")), &form).await);
    // Counted with the other refusals of unauthenticated requests, in one event.
    assert_eq!(harness.broker.flush_refusals().await.unwrap(), 1);
    let aggregate = harness.events().await.pop().unwrap();
    let attempt = &aggregate.refusals[0];
    assert_eq!(attempt.claimed_client.as_deref(), Some("orchestrator"), "a failed attempt names the client it claimed");
    assert_eq!(aggregate.agent, None, "but not as the authenticated agent");
    assert_invalid_client(&harness.token(Some(("ghost", "dev-only-orchestrator-secret")), &form).await);
    assert_invalid_client(&harness.token(None, &form).await);
    let post_wrong = harness
        .token(None, &[("grant_type", "client_credentials"), ("client_id", "orchestrator"), ("client_secret", "nope")])
        .await;
    assert_invalid_client(&post_wrong);
    // The secret is never echoed.
    assert!(!post_wrong.body.to_string().contains("nope"));
}

#[tokio::test]
async fn more_than_one_method_is_invalid_request() {
    let harness = Harness::new();
    let both = harness
        .token(
            Some(("orchestrator", "dev-only-orchestrator-secret")),
            &[("grant_type", "client_credentials"), ("client_secret", "dev-only-orchestrator-secret")],
        )
        .await;
    both.assert_error(400, "invalid_request");
    let post_and_assertion = harness
        .token(
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "orchestrator"),
                ("client_secret", "dev-only-orchestrator-secret"),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", "a.b.c"),
            ],
        )
        .await;
    post_and_assertion.assert_error(400, "invalid_request");
}

#[tokio::test]
async fn an_expired_agent_gets_nothing() {
    let harness = Harness::new();
    let [root, ..] = harness.walk().await;
    // The example agents expire on 2030-06-30: the day after, nothing.
    let after_expiry = baton::clock::UnixTime(time::macros::datetime!(2030-07-01 0:00 UTC).unix_timestamp());
    harness.clock.advance(after_expiry.seconds_since(START));
    assert_invalid_client(&harness.as_agent("orchestrator", &[("grant_type", "client_credentials")]).await);
    assert_invalid_client(&harness.exchange("planner", &root, &[("audience", "booker")]).await);
}

#[tokio::test]
async fn an_expired_target_agent_is_invalid_target() {
    let agents = std::fs::read_to_string(example_policies().join("agents.toml")).unwrap().replacen(
        "expires = 2030-06-30\ngroups = [\"travel\"]\ntoken_ttl = 1800",
        "expires = 2026-11-01\ngroups = [\"travel\"]\ntoken_ttl = 1800",
        1,
    );
    assert!(agents.contains("2026-11-01"), "the booker's expiry was rewritten");
    let resources = std::fs::read_to_string(example_policies().join("resources.toml")).unwrap();
    let rules = std::fs::read_to_string(example_policies().join("travel.cedar")).unwrap();
    let folder = policy_folder(&agents, &resources, &rules);
    let harness = Harness::with(Options { policies: folder.path().to_owned(), ..Options::default() });
    let root = harness.as_agent("orchestrator", &[("grant_type", "client_credentials")]).await;
    harness.exchange("planner", root.token(), &[("audience", "booker")]).await.assert_error(400, "invalid_target");
}

/// RFC 7523 §3 items 4–6 with RFC 7519 §2 NumericDates: an assertion is made
/// for the request it comes with, so its `iat` is recent and its lifetime
/// short; fractional times are dates, extreme ones are not.
#[tokio::test]
async fn assertion_times_are_bounded_and_may_be_fractional() {
    let setup = key_agent();
    let harness = &setup.harness;
    let header = json!({"alg": "ES256", "kid": "signer-key-1"});
    let signed = |times: Value, jti: &str| {
        let mut claims = assertion_claims(jti);
        claims.as_object_mut().unwrap().remove("iat");
        for (name, value) in times.as_object().unwrap() {
            claims[name] = value.clone();
        }
        sign(&setup.key, &header, &claims)
    };
    let (now, day) = (START.0, 86_400);
    let refused = [
        ("iat a day old", json!({"iat": now - day, "exp": now + 60})),
        ("iat of -2^63", json!({"iat": i64::MIN, "exp": now + 60})),
        ("iat of 2^63 - 1", json!({"iat": i64::MAX, "exp": now + 60})),
        ("iat of 2^64 - 1", json!({"iat": u64::MAX, "exp": now + 60})),
        ("iat of 1e300", json!({"iat": 1e300, "exp": now + 60})),
        ("iat as text", json!({"iat": now.to_string(), "exp": now + 60})),
        ("nbf of -2^63", json!({"nbf": i64::MIN, "exp": now + 60})),
        ("nbf of -0.5", json!({"nbf": -0.5, "exp": now + 60})),
        ("exp of -2^63", json!({"exp": i64::MIN})),
        ("exp of 2^63 - 1", json!({"exp": i64::MAX})),
        ("exp of -1e300", json!({"exp": -1e300})),
        // Issued 100 s ago, expiring in 250 s: each bound alone is met, the
        // lifetime of 350 s is not.
        ("lifetime too long", json!({"iat": now - 100, "exp": now + 250})),
        ("iat 20 s ahead, no leeway", json!({"iat": now + 20, "exp": now + 60})),
    ];
    for (index, (case, times)) in refused.into_iter().enumerate() {
        let response = with_assertion(harness, &signed(times, &format!("refused-{index}"))).await;
        assert_eq!((response.status.as_u16(), response.error()), (401, "invalid_client"), "{case}: {}", response.body);
    }
    let accepted = [
        ("fractional exp", json!({"exp": now as f64 + 60.5})),
        (
            "fractional iat, nbf and exp",
            json!({"iat": now as f64 - 0.25, "nbf": now as f64 - 0.75, "exp": now as f64 + 60.5}),
        ),
        ("a lifetime of 250 s", json!({"iat": now - 100, "exp": now + 150})),
    ];
    for (index, (case, times)) in accepted.into_iter().enumerate() {
        let response = with_assertion(harness, &signed(times, &format!("accepted-{index}"))).await;
        assert_eq!(response.status, 200, "{case}: {}", response.body);
    }
}

/// `clock_leeway_seconds` applies to a client's clock as to the nodes'.
#[tokio::test]
async fn the_clock_leeway_tolerates_a_client_clock_a_little_off() {
    let setup = key_agent_options(Options { clock_leeway_seconds: 30, ..Options::default() });
    let header = json!({"alg": "ES256", "kid": "signer-key-1"});
    let signed = |iat: i64, exp: i64, jti: &str| {
        let mut claims = assertion_claims(jti);
        claims["iat"] = json!(iat);
        claims["exp"] = json!(exp);
        sign(&setup.key, &header, &claims)
    };
    let now = START.0;
    let ahead = with_assertion(&setup.harness, &signed(now + 20, now + 80, "ahead")).await;
    assert_eq!(ahead.status, 200, "20 s ahead: {}", ahead.body);
    let behind = with_assertion(&setup.harness, &signed(now - 70, now - 10, "behind")).await;
    assert_eq!(behind.status, 200, "expired 10 s ago: {}", behind.body);
    for (case, iat, exp) in [("40 s ahead", now + 40, now + 80), ("expired 40 s ago", now - 100, now - 40)] {
        assert_invalid_client(&with_assertion(&setup.harness, &signed(iat, exp, case)).await);
    }
}

/// RFC 8725 §3.10: the key is the one registered for the client, never one
/// the assertion names or carries, even when the signature is the client's.
#[tokio::test]
async fn an_assertion_naming_or_carrying_a_key_is_refused() {
    let setup = key_agent();
    let public = Value::Object(setup.key.to_public_key().unwrap().as_ref().clone());
    let members = [
        ("jku", json!("https://attacker.example/jwks")),
        ("x5u", json!("https://attacker.example/cert.pem")),
        ("jwk", public),
        ("x5c", json!(["MIIBszCCAVmgAwIBAgIU"])),
    ];
    for (name, value) in members {
        let mut header = json!({"alg": "ES256", "kid": "signer-key-1"});
        header[name] = value;
        let assertion = sign(&setup.key, &header, &assertion_claims(&format!("header-{name}")));
        assert_invalid_client(&with_assertion(&setup.harness, &assertion).await);
    }
    let plain = sign(&setup.key, &json!({"alg": "ES256", "kid": "signer-key-1"}), &assertion_claims("plain"));
    assert_eq!(with_assertion(&setup.harness, &plain).await.status, 200);
}

/// The refusals of the trail that are events of their own, not the aggregate.
async fn own_refusals(harness: &Harness) -> Vec<baton::store::AuditEvent> {
    let events = harness.events().await;
    events
        .into_iter()
        .filter(|event| event.decision == baton::store::AuditDecision::Refused)
        .filter(|event| event.action != baton::abuse::refusals::UNAUTHENTICATED_REFUSALS)
        .collect()
}

#[tokio::test]
async fn a_refusal_after_the_credential_is_proven_is_an_event_naming_the_agent() {
    let harness = Harness::new();
    let after_expiry = baton::clock::UnixTime(time::macros::datetime!(2030-07-01 0:00 UTC).unix_timestamp());
    harness.clock.advance(after_expiry.seconds_since(START));
    // A wrong secret proves nothing: counted with the junk.
    assert_invalid_client(
        &harness.token(Some(("orchestrator", "wrong")), &[("grant_type", "client_credentials")]).await,
    );
    assert!(own_refusals(&harness).await.is_empty());
    // The right secret of a deprovisioned agent: refused, and recorded as such.
    assert_invalid_client(&harness.as_agent("orchestrator", &[("grant_type", "client_credentials")]).await);
    let refused = own_refusals(&harness).await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].agent.as_deref(), Some("orchestrator"));
    assert_eq!(refused[0].action, "client_credentials");
    assert!(refused[0].reason.as_deref().unwrap().contains("deprovisioned"), "{:?}", refused[0].reason);
    // At the introspection endpoint too.
    let form = form_body(&[("token", "anything")]);
    let request = axum::http::Request::post("/introspect")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", basic_header("orchestrator", "dev-only-orchestrator-secret"))
        .body(axum::body::Body::from(form))
        .unwrap();
    assert_invalid_client(&harness.send(request).await);
    let refused = own_refusals(&harness).await;
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!(
        (refused[1].agent.as_deref(), refused[1].action.as_str()),
        (Some("orchestrator"), "client_authentication")
    );
    assert_eq!(harness.broker.flush_refusals().await.unwrap(), 1, "only the wrong secret is in the aggregate");
}

#[tokio::test]
async fn a_replayed_assertion_is_an_event_naming_the_agent() {
    let setup = key_agent();
    let header = json!({"alg": "ES256", "kid": "signer-key-1"});
    let assertion = sign(&setup.key, &header, &assertion_claims("once"));
    assert_eq!(with_assertion(&setup.harness, &assertion).await.status, 200);
    assert_invalid_client(&with_assertion(&setup.harness, &assertion).await);
    let refused = own_refusals(&setup.harness).await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].agent.as_deref(), Some("signer"));
    assert!(refused[0].reason.as_deref().unwrap().contains("replayed"), "{:?}", refused[0].reason);
    assert_eq!(setup.harness.broker.flush_refusals().await.unwrap(), 0);
}
