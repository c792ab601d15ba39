//! Discovery (RFC 8414, OIDC Discovery), the JWKS (RFC 7517), and health.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::broker::Broker;
use crate::client_auth::{AuthMethod, ASSERTION_ALGORITHMS};
use crate::grant::{CLIENT_CREDENTIALS, TOKEN_EXCHANGE};
use crate::keys::Algorithm;

/// The one `response_type` the authorization endpoint knows: `none` (OAuth
/// 2.0 Multiple Response Type Encoding Practices §4), whose success returns
/// no code, token nor ID token.
const RESPONSE_TYPE_NONE: &str = "none";

/// One document serves both well-known paths, so they cannot disagree:
/// RFC 8414 §2 metadata, with the two fields OpenID Connect Discovery 1.0 §3
/// requires of every provider besides (RFC 8414 §7.1.2 registers them for
/// authorization servers too). Every field is true of what the broker does:
///
/// - `response_types_supported` is REQUIRED and strict clients refuse it
///   empty, but no grant Baton supports uses the authorization endpoint
///   (RFC 8414 erratum 7793 would make the field optional for such a
///   server). It lists `none`, the response type that returns no
///   credential: the truth about the authorization endpoint, which issues
///   none, and which answers every other response type
///   `unsupported_response_type` ([`authorize`]).
/// - The introspection and revocation endpoints authenticate clients as the
///   token endpoint does, with the same methods, and the same assertion
///   algorithms for `private_key_jwt` (RFC 7523), so the three pairs of
///   lists agree.
/// - `grant_types_supported` names the two grants; without it, RFC 8414
///   would have clients assume `authorization_code` and `implicit`.
/// - `subject_types_supported` is `public`: a token's `sub` is the same
///   value whoever receives it; nothing is pairwise.
/// - `id_token_signing_alg_values_supported` is `RS256`: OpenID Discovery
///   §3 requires the list and `RS256` in it, and authlib and other strict
///   clients refuse the document otherwise. Baton issues no ID token at all
///   (no response type returns one, nor does the token endpoint), so no
///   client can receive one signed with any algorithm: the entry is
///   vacuous, not a promise of RSA keys, which Baton does not have. The
///   algorithms of the tokens it does issue are
///   `access_token_signing_alg_values_supported`.
pub(super) async fn metadata(State(broker): State<Arc<Broker>>) -> Json<Value> {
    let issuer = &broker.settings().issuer;
    let policy = broker.policy();
    let inventory = policy.inventory();
    let scopes: Vec<String> = inventory.all_scopes().iter().map(ToString::to_string).collect();
    let resources: Vec<&str> = inventory.resources().map(|resource| resource.uri.as_str()).collect();
    let methods = AuthMethod::ALL.map(AuthMethod::name);
    let assertion_algorithms = ASSERTION_ALGORITHMS.map(Algorithm::name);
    Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "introspection_endpoint": format!("{issuer}/introspect"),
        "revocation_endpoint": format!("{issuer}/revoke"),
        "grant_types_supported": [CLIENT_CREDENTIALS, TOKEN_EXCHANGE],
        "response_types_supported": [RESPONSE_TYPE_NONE],
        "token_endpoint_auth_methods_supported": methods,
        "token_endpoint_auth_signing_alg_values_supported": assertion_algorithms,
        "introspection_endpoint_auth_methods_supported": methods,
        "introspection_endpoint_auth_signing_alg_values_supported": assertion_algorithms,
        "revocation_endpoint_auth_methods_supported": methods,
        "revocation_endpoint_auth_signing_alg_values_supported": assertion_algorithms,
        "access_token_signing_alg_values_supported": broker.keys().algorithms(),
        "dpop_signing_alg_values_supported": crate::dpop::ALGORITHMS.map(Algorithm::name),
        "scopes_supported": scopes,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        // RFC 9728 §4: the registered APIs whose tokens this server issues,
        // named as a request's `resource` (RFC 8707); agents are targets too,
        // named as `audience`, and are not listed.
        "protected_resources": resources,
    }))
}

/// The authorization endpoint the metadata names. RFC 8414 §2 lets a server
/// without one leave it out, but MCP's TypeScript SDK, among other clients,
/// refuses metadata without it. Baton issues no authorization codes nor
/// tokens here, and no client has a registered redirect URI, so nothing is
/// ever redirected (RFC 6749 §4.1.2.1): a request for `none`, the one
/// response type published, fails for want of a redirect URI
/// (`invalid_request`); any other is `unsupported_response_type`.
pub(super) async fn authorize(RawQuery(query): RawQuery, body: String) -> (StatusCode, Json<Value>) {
    // RFC 6749 §3.1: GET sends the parameters in the query; a POST form
    // sends them in the body.
    let asked = [query.unwrap_or_default(), body].iter().find_map(|text| {
        form_urlencoded::parse(text.as_bytes())
            .find(|(name, _)| name == "response_type")
            .map(|(_, value)| value.into_owned())
    });
    let (error, description) = if asked.as_deref() == Some(RESPONSE_TYPE_NONE) {
        ("invalid_request", "no client has a registered redirect URI: nothing can be returned")
    } else {
        (
            "unsupported_response_type",
            "no authorization codes are issued: agents use client credentials or token exchange",
        )
    };
    (StatusCode::BAD_REQUEST, Json(json!({ "error": error, "error_description": description })))
}

pub(super) async fn jwks(State(broker): State<Arc<Broker>>) -> Json<Value> {
    Json(broker.keys().jwks())
}

pub(super) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when keys and policy are loaded (always, in a running broker) and
/// the state store answers; not ready (503) while it does not.
pub(super) async fn readyz(State(broker): State<Arc<Broker>>) -> (StatusCode, Json<Value>) {
    match broker.ping_store().await {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ready", "rules": broker.policy().rules().len() }))),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "unavailable", "store": "unreachable" }))),
    }
}
