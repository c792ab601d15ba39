//! Discovery (RFC 8414, OpenID Connect Discovery 1.0) and the JWKS (RFC 7517).
//! Strict clients' validation of both documents is in the Python interop
//! tests (authlib).

use crate::harness::*;

#[tokio::test]
async fn both_metadata_documents_agree_and_name_the_endpoints() {
    let harness = Harness::new();
    let oauth = harness.get("/.well-known/oauth-authorization-server").await;
    let openid = harness.get("/.well-known/openid-configuration").await;
    assert_eq!(oauth.status, 200);
    assert_eq!(oauth.body, openid.body);
    assert_eq!(oauth.headers["cache-control"], "no-store");
    let metadata = &oauth.body;
    assert_eq!(metadata["issuer"], ISSUER);
    assert_eq!(metadata["token_endpoint"], format!("{ISSUER}/token"));
    assert_eq!(metadata["jwks_uri"], format!("{ISSUER}/jwks"));
    let grants = metadata["grant_types_supported"].as_array().unwrap();
    assert!(grants.contains(&EXCHANGE.into()) && grants.contains(&"client_credentials".into()));
    let methods = metadata["token_endpoint_auth_methods_supported"].as_array().unwrap();
    for method in ["client_secret_basic", "client_secret_post", "private_key_jwt"] {
        assert!(methods.contains(&method.into()), "{method}");
    }
    // Introspection and revocation authenticate clients as the token
    // endpoint does (RFC 8414 §2), assertion algorithms included.
    let algorithms = serde_json::json!(["ES256", "EdDSA"]);
    assert_eq!(metadata["token_endpoint_auth_signing_alg_values_supported"], algorithms);
    for endpoint in ["introspection", "revocation"] {
        assert_eq!(
            metadata[format!("{endpoint}_endpoint_auth_methods_supported")],
            metadata["token_endpoint_auth_methods_supported"]
        );
        assert_eq!(
            metadata[format!("{endpoint}_endpoint_auth_signing_alg_values_supported")],
            algorithms,
            "{endpoint}"
        );
    }
    let scopes = metadata["scopes_supported"].as_array().unwrap();
    assert_eq!(scopes.len(), 4);
    // RFC 9728 §4: the registered resources, which clients name as `resource`.
    let resources = metadata["protected_resources"].as_array().unwrap();
    assert!(resources.contains(&"https://api.airline.example".into()), "{resources:?}");
    assert_eq!(metadata["dpop_signing_alg_values_supported"], serde_json::json!(["ES256", "EdDSA"]));
    // What OpenID Connect Discovery 1.0 §3 requires besides: `sub` is not
    // pairwise; no ID token is issued, so the required RS256 is vacuous.
    assert_eq!(metadata["subject_types_supported"], serde_json::json!(["public"]));
    assert_eq!(metadata["id_token_signing_alg_values_supported"], serde_json::json!(["RS256"]));
}

/// The authorization endpoint exists for clients that require one in the
/// metadata, and refuses every request: no codes are issued, and with no
/// registered redirect URI nothing is redirected (RFC 6749 §4.1.2.1). The
/// one response type published is `none`, which issues nothing: a request
/// for it fails for want of a redirect URI, not as an unknown type.
#[tokio::test]
async fn the_authorization_endpoint_refuses_without_redirecting() {
    let harness = Harness::new();
    let metadata = harness.get("/.well-known/oauth-authorization-server").await.body;
    assert_eq!(metadata["authorization_endpoint"], format!("{ISSUER}/authorize"));
    assert_eq!(metadata["response_types_supported"], serde_json::json!(["none"]));
    let redirect = "client_id=booker&redirect_uri=https%3A%2F%2Fattacker.example%2Fcb&state=x";
    for (response_type, error) in [("code", "unsupported_response_type"), ("none", "invalid_request")] {
        let asked = harness.get(&format!("/authorize?response_type={response_type}&{redirect}")).await;
        assert_eq!(asked.status, 400, "{response_type}");
        assert_eq!(asked.body["error"], error, "{response_type}");
        assert!(asked.headers.get("location").is_none(), "{response_type}");
    }
}

#[tokio::test]
async fn the_jwks_holds_the_signing_key_public_only() {
    let harness = Harness::new();
    let jwks = harness.get("/jwks").await;
    let keys = jwks.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let key = &keys[0];
    assert_eq!(key["kid"], harness.broker_kid());
    assert_eq!(key["alg"], "ES256");
    assert_eq!(key["use"], "sig");
    assert!(key.get("d").is_none(), "private part published: {key}");

    // A token verifies with the published key alone.
    let token = harness.as_agent("orchestrator", &[("grant_type", "client_credentials")]).await.token().to_owned();
    let jwk = josekit::jwk::Jwk::from_map(key.as_object().unwrap().clone()).unwrap();
    let verifier = josekit::jws::ES256.verifier_from_jwk(&jwk).unwrap();
    josekit::jws::deserialize_compact(&token, &verifier).unwrap();
}

#[tokio::test]
async fn health_and_readiness() {
    let harness = Harness::new();
    assert_eq!(harness.get("/healthz").await.status, 200);
    let ready = harness.get("/readyz").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body["rules"], 8);
}
