//! The admin API under `/admin`, for security teams. Off unless an admin
//! token is configured; each request carries it as a bearer token, checked
//! against its configured SHA-256 in constant time.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::error::ErrorResponse;
use crate::claims::TokenId;
use crate::grant::{Broker, GrantError};
use crate::policy::explain::{ExplainError, Question};
use crate::store::{AuditFilter, Principal};

/// The admin routes, behind the admin credential.
pub(super) fn router(broker: Arc<Broker>) -> Router<Arc<Broker>> {
    Router::new()
        .route("/admin/revoke", post(revoke))
        .route("/admin/deprovision", post(deprovision))
        .route("/admin/reinstate", post(reinstate))
        .route("/admin/trace/{jti}", get(trace))
        .route("/admin/agents", get(agents))
        .route("/admin/audit", get(audit))
        .route("/admin/policy/explain", post(explain))
        .route("/admin/approvals", get(super::approvals::list))
        .route("/admin/approvals/{id}/approve", post(super::approvals::approve))
        .route("/admin/approvals/{id}/deny", post(super::approvals::deny))
        .route_layer(axum::middleware::from_fn_with_state(broker, authorize))
}

async fn authorize(State(broker): State<Arc<Broker>>, request: Request, next: Next) -> Response {
    if !broker.admin_enabled() {
        return (StatusCode::NOT_FOUND, Json(json!({ "error": "not_found" }))).into_response();
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        // RFC 7235 §2.1: the scheme is case-insensitive.
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    if presented.is_some_and(|token| broker.is_admin(token)) {
        return next.run(request).await;
    }
    let mut response = (
        StatusCode::UNAUTHORIZED,
        Json(json!({ "error": "invalid_token", "error_description": "admin credential required" })),
    )
        .into_response();
    // RFC 6750 §3: name the scheme the endpoint expects.
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"baton-admin\""));
    response
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    jti: TokenId,
}

async fn revoke(
    State(broker): State<Arc<Broker>>,
    body: Result<Json<RevokeBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(body)) = body else { return bad_body() };
    match broker.revoke_jti(&body.jti).await {
        Ok(until) => Json(json!({ "revoked": body.jti, "until": until })).into_response(),
        Err(error) => ErrorResponse::from(&error).into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeprovisionBody {
    agent: Option<String>,
    subject: Option<String>,
}

/// One agent or one subject, exactly.
fn principal_of(body: Result<Json<DeprovisionBody>, axum::extract::rejection::JsonRejection>) -> Option<Principal> {
    match body {
        Ok(Json(DeprovisionBody { agent: Some(agent), subject: None })) => Some(Principal::Agent(agent)),
        Ok(Json(DeprovisionBody { agent: None, subject: Some(subject) })) => Some(Principal::Subject(subject)),
        _ => None,
    }
}

async fn deprovision(
    State(broker): State<Arc<Broker>>,
    body: Result<Json<DeprovisionBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Some(principal) = principal_of(body) else { return bad_body() };
    match broker.deprovision(&principal).await {
        Ok(()) => Json(json!({ "deprovisioned": principal })).into_response(),
        Err(error) => ErrorResponse::from(&error).into_response(),
    }
}

async fn reinstate(
    State(broker): State<Arc<Broker>>,
    body: Result<Json<DeprovisionBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Some(principal) = principal_of(body) else { return bad_body() };
    match broker.reinstate(&principal).await {
        Ok(()) => Json(json!({ "reinstated": principal })).into_response(),
        Err(error) => ErrorResponse::from(&error).into_response(),
    }
}

async fn trace(State(broker): State<Arc<Broker>>, Path(jti): Path<String>) -> Response {
    match broker.trace(&TokenId(jti)).await {
        Ok(Some(trace)) => Json(trace).into_response(),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "not_found", "error_description": "no token with this id was issued here" })),
        )
            .into_response(),
        Err(error) => ErrorResponse::from(&error).into_response(),
    }
}

async fn agents(State(broker): State<Arc<Broker>>) -> Response {
    match broker.agent_reports().await {
        Ok(reports) => Json(json!({ "agents": reports })).into_response(),
        Err(error) => ErrorResponse::from(&error).into_response(),
    }
}

async fn audit(
    State(broker): State<Arc<Broker>>,
    filter: Result<Query<AuditFilter>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(filter)) = filter else { return bad_body() };
    match broker.audit_events(&filter).await {
        Ok(events) => Json(json!({ "events": events })).into_response(),
        Err(error) => ErrorResponse::from(&error).into_response(),
    }
}

/// A dry run against the policy in force: the request as JSON (a
/// [`Question`]), the answer scope by scope, and for a refusal the OAuth
/// error the client would get.
async fn explain(
    State(broker): State<Arc<Broker>>,
    body: Result<Json<Question>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let question = match body {
        Ok(Json(question)) => question,
        // An unknown or misspelt field is named (DESIGN.md §10).
        Err(rejection) => return bad_question(rejection.body_text()),
    };
    match broker.explain(&question) {
        Ok(explanation) => Json(crate::oauth::explanation_json(&explanation)).into_response(),
        Err(ExplainError::Question(error)) => bad_question(error.to_string()),
        Err(ExplainError::Policy(error)) => ErrorResponse::from(&GrantError::Policy(error)).into_response(),
    }
}

fn bad_question(description: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": "invalid_request", "error_description": description })))
        .into_response()
}

pub(super) fn bad_body() -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": "invalid_request", "error_description": "the request body or query is malformed" })),
    )
        .into_response()
}
