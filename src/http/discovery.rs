//! Discovery (RFC 8414, OIDC Discovery), the JWKS (RFC 7517), and health.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::broker::Broker;
use crate::client_auth::AuthMethod;
use crate::grant::{CLIENT_CREDENTIALS, TOKEN_EXCHANGE};
use crate::keys::Algorithm;

/// One document serves both well-known paths, so they cannot disagree.
pub(super) async fn metadata(State(broker): State<Arc<Broker>>) -> Json<Value> {
    let issuer = &broker.settings().issuer;
    let policy = broker.policy();
    let inventory = policy.inventory();
    let scopes: Vec<String> = inventory.all_scopes().iter().map(ToString::to_string).collect();
    let resources: Vec<&str> = inventory.resources().map(|resource| resource.uri.as_str()).collect();
    Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "introspection_endpoint": format!("{issuer}/introspect"),
        "revocation_endpoint": format!("{issuer}/revoke"),
        "grant_types_supported": [CLIENT_CREDENTIALS, TOKEN_EXCHANGE],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": [
            AuthMethod::ClientSecretBasic.name(),
            AuthMethod::ClientSecretPost.name(),
            AuthMethod::PrivateKeyJwt.name(),
        ],
        "token_endpoint_auth_signing_alg_values_supported": [Algorithm::Es256.name(), Algorithm::EdDsa.name()],
        "introspection_endpoint_auth_methods_supported": [
            AuthMethod::ClientSecretBasic.name(),
            AuthMethod::ClientSecretPost.name(),
            AuthMethod::PrivateKeyJwt.name(),
        ],
        "revocation_endpoint_auth_methods_supported": [
            AuthMethod::ClientSecretBasic.name(),
            AuthMethod::ClientSecretPost.name(),
            AuthMethod::PrivateKeyJwt.name(),
        ],
        "access_token_signing_alg_values_supported": broker.keys().algorithms(),
        "dpop_signing_alg_values_supported": crate::dpop::ALGORITHMS.map(Algorithm::name),
        "scopes_supported": scopes,
        // RFC 9728 §4: the registered APIs whose tokens this server issues,
        // named as a request's `resource` (RFC 8707); agents are targets too,
        // named as `audience`, and are not listed.
        "protected_resources": resources,
    }))
}

/// The authorization endpoint the metadata names. RFC 8414 §2 lets a server
/// without one leave it out, but MCP's TypeScript SDK, among other clients,
/// refuses metadata without it. Baton issues no authorization codes, so
/// every request is refused; no client has a registered redirect URI, so it
/// is refused here rather than redirected (RFC 6749 §4.1.2.1).
pub(super) async fn authorize() -> (StatusCode, Json<Value>) {
    let description = "no authorization codes are issued: agents use client credentials or token exchange";
    (StatusCode::BAD_REQUEST, Json(json!({ "error": "unsupported_response_type", "error_description": description })))
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
