//! Forged and tampered subject tokens (RFC 8725): each is refused with the
//! same code and the same neutral description, and nothing is issued.

use serde_json::{json, Value};

use crate::harness::*;

fn good_claims() -> Value {
    json!({
        "iss": ISSUER, "sub": "orchestrator", "aud": "planner", "client_id": "orchestrator",
        "scope": "flights.read", "iat": START.0, "exp": START.0 + 600, "jti": "forged",
        "delegation": {"depth": 0, "hops": []}
    })
}

async fn assert_refused(harness: &Harness, token: &str, case: &str) {
    let before = harness.events().await.len();
    let response = harness.exchange("planner", token, &[("audience", "booker")]).await;
    assert_eq!((response.status.as_u16(), response.error()), (400, "invalid_request"), "{case}: {}", response.body);
    assert_eq!(response.body["error_description"], baton::error::oauth::UNACCEPTABLE_TOKEN, "{case}");
    assert!(!response.body.to_string().contains(token.split('.').next().unwrap()), "{case}: the token is echoed");
    let events = harness.events().await;
    assert_eq!(events.len(), before + 1);
    assert_eq!(events.last().unwrap().decision, baton::store::AuditDecision::Refused, "{case}");
}

#[tokio::test]
async fn a_token_signed_by_the_broker_with_good_claims_is_accepted() {
    // The control for every forgery below: the same construction, unforged.
    let harness = Harness::new();
    let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": harness.broker_kid()});
    let token = harness.sign_with_broker_key(&header, &good_claims());
    assert_eq!(harness.exchange("planner", &token, &[("audience", "booker")]).await.status, 200);
}

#[tokio::test]
async fn forged_tokens_are_refused() {
    let harness = Harness::new();
    let kid = harness.broker_kid();
    let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": kid});
    let encode = |value: &Value| b64(value.to_string().as_bytes());

    // alg: none, with and without a signature part.
    let none = json!({"alg": "none", "typ": "at+jwt", "kid": kid});
    assert_refused(&harness, &format!("{}.{}.", encode(&none), encode(&good_claims())), "alg none").await;
    assert_refused(&harness, &format!("{}.{}", encode(&none), encode(&good_claims())), "alg none, two parts").await;

    // HS256 keyed with the broker's public key (RFC 8725 §2.1).
    let public = harness.broker.keys().jwks()["keys"][0].to_string();
    let hs_header = json!({"alg": "HS256", "typ": "at+jwt", "kid": kid});
    let input = format!("{}.{}", encode(&hs_header), encode(&good_claims()));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, public.as_bytes());
    let tag = ring::hmac::sign(&key, input.as_bytes());
    assert_refused(&harness, &format!("{input}.{}", b64(tag.as_ref())), "HS256 with the public key").await;

    // Signed by another key, claiming the broker's kid, and under a kid nobody knows.
    let stranger = josekit::jwk::Jwk::generate_ec_key(josekit::jwk::alg::ec::EcCurve::P256).unwrap();
    assert_refused(&harness, &sign(&stranger, &header, &good_claims()), "foreign key, broker kid").await;
    let unknown_kid = json!({"alg": "ES256", "typ": "at+jwt", "kid": "nobody"});
    assert_refused(&harness, &harness.sign_with_broker_key(&unknown_kid, &good_claims()), "unknown kid").await;
    let no_kid = json!({"alg": "ES256", "typ": "at+jwt"});
    assert_refused(&harness, &harness.sign_with_broker_key(&no_kid, &good_claims()), "no kid").await;
    // EdDSA header over an ES256 key.
    let wrong_alg = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid});
    assert_refused(&harness, &harness.sign_with_broker_key(&wrong_alg, &good_claims()), "alg/key mismatch").await;

    // Wrong or missing typ (RFC 9068 §4, RFC 8725 §3.11).
    for typ in [Some("JWT"), Some("jwt"), None] {
        let mut typed = header.clone();
        match typ {
            Some(typ) => typed["typ"] = json!(typ),
            None => {
                typed.as_object_mut().unwrap().remove("typ");
            }
        }
        assert_refused(&harness, &harness.sign_with_broker_key(&typed, &good_claims()), &format!("typ {typ:?}")).await;
    }
    let critical = json!({"alg": "ES256", "typ": "at+jwt", "kid": kid, "crit": ["exp"]});
    assert_refused(&harness, &harness.sign_with_broker_key(&critical, &good_claims()), "crit").await;

    // Tampered payload under the original signature.
    let genuine = harness.sign_with_broker_key(&header, &good_claims());
    let mut widened = good_claims();
    widened["scope"] = json!("flights.read flights.book");
    let parts: Vec<&str> = genuine.split('.').collect();
    assert_refused(&harness, &format!("{}.{}.{}", parts[0], encode(&widened), parts[2]), "tampered payload").await;
    // A flipped signature byte.
    let mut signature = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, parts[2]).unwrap();
    signature[5] ^= 1;
    assert_refused(&harness, &format!("{}.{}.{}", parts[0], parts[1], b64(&signature)), "flipped signature").await;

    // Claims that are not acceptable, correctly signed.
    let mutate = |edit: &dyn Fn(&mut Value)| {
        let mut claims = good_claims();
        edit(&mut claims);
        harness.sign_with_broker_key(&header, &claims)
    };
    assert_refused(&harness, &mutate(&|c| c["iss"] = json!("https://evil.example")), "foreign issuer").await;
    assert_refused(&harness, &mutate(&|c| c["exp"] = json!(START.0)), "expired").await;
    assert_refused(&harness, &mutate(&|c| c["iat"] = json!(START.0 + 60)), "issued in the future").await;
    assert_refused(&harness, &mutate(&|c| c["aud"] = json!(["planner"])), "aud as array").await;
    assert_refused(&harness, &mutate(&|c| c["extra"] = json!(1)), "unknown claim").await;
    assert_refused(&harness, &mutate(&|c| c["delegation"]["depth"] = json!(1)), "depth without hops").await;
    assert_refused(&harness, &mutate(&|c| c["act"] = json!({"sub": "mallory"})), "act without a matching hop").await;

    // Not a JWT at all, and oversize.
    assert_refused(&harness, "not-a-token", "garbage").await;
    assert_refused(&harness, &"a".repeat(20 * 1024), "oversize").await;
    assert_refused(&harness, &format!("{}.{}.{}", "%%%", "%%%", "%%%"), "bad base64").await;
}

#[tokio::test]
async fn a_widened_hop_in_the_path_is_refused_even_when_signed() {
    // A token whose recorded path widens is not one this broker would issue.
    let harness = Harness::new();
    let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": harness.broker_kid()});
    let claims = json!({
        "iss": ISSUER, "sub": "orchestrator", "aud": "booker", "client_id": "planner",
        "scope": "flights.read flights.book", "iat": START.0, "exp": START.0 + 600, "jti": "child",
        "act": {"sub": "planner"},
        "delegation": {"depth": 1, "hops": [
            {"jti": "root", "agent": "orchestrator", "aud": "planner", "scope": "flights.read", "iat": START.0, "exp": START.0 + 900}
        ]}
    });
    let token = harness.sign_with_broker_key(&header, &claims);
    let response = harness.exchange("booker", &token, &[("resource", AIRLINE)]).await;
    response.assert_error(400, "invalid_request");
}
