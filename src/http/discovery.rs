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
    let scopes: Vec<String> = broker.policy().inventory().all_scopes().iter().map(ToString::to_string).collect();
    Json(json!({
        "issuer": issuer,
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
    }))
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
