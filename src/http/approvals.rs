//! Approvals over HTTP (issue 7): the `authorization_pending` answer of the
//! token endpoint, with the fields a polling client needs, and the admin
//! routes where approvers list, approve and deny.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::error::ErrorResponse;
use crate::grant::{ApprovalError, Broker, GrantError};
use crate::store::ApprovalId;

/// A token endpoint error as sent. `authorization_pending` also carries
/// `approval_id`, `interval` and `expires_in` (CIBA Core §7.3, §11): the
/// client repeats its request with `approval_id` every `interval` seconds.
pub(super) fn token_error(error: &GrantError) -> Response {
    let mut response = ErrorResponse::from(error).into_response();
    if let GrantError::Approval(ApprovalError::Pending(pending)) = error {
        let body = json!({
            "error": "authorization_pending",
            "error_description": crate::oauth::OAuthError::from(error).description,
            "approval_id": pending.id,
            "interval": pending.interval,
            "expires_in": pending.expires_in,
        });
        let status = response.status();
        let headers = response.headers().clone();
        response = (status, Json(body)).into_response();
        response.headers_mut().extend(headers);
    }
    response
}

/// An approver's decision: who decides.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DecisionBody {
    approver: String,
}

/// `GET /admin/approvals`: the pending approvals, oldest first.
pub(super) async fn list(State(broker): State<Arc<Broker>>) -> Response {
    match broker.pending_approvals().await {
        Ok(approvals) => Json(json!({ "approvals": approvals })).into_response(),
        Err(error) => ErrorResponse::from(&error).into_response(),
    }
}

/// `POST /admin/approvals/{id}/approve` with `{"approver": …}`.
pub(super) async fn approve(
    State(broker): State<Arc<Broker>>,
    Path(id): Path<String>,
    body: Result<Json<DecisionBody>, JsonRejection>,
) -> Response {
    decide(&broker, id, body, true).await
}

/// `POST /admin/approvals/{id}/deny` with `{"approver": …}`.
pub(super) async fn deny(
    State(broker): State<Arc<Broker>>,
    Path(id): Path<String>,
    body: Result<Json<DecisionBody>, JsonRejection>,
) -> Response {
    decide(&broker, id, body, false).await
}

async fn decide(
    broker: &Broker,
    id: String,
    body: Result<Json<DecisionBody>, JsonRejection>,
    approve: bool,
) -> Response {
    let Ok(Json(DecisionBody { approver })) = body else { return super::admin::bad_body() };
    match broker.decide_approval(&ApprovalId(id), approver.trim(), approve).await {
        Ok(approval) => Json(json!({ "approval": approval })).into_response(),
        Err(error) => ErrorResponse::from(&error).into_response(),
    }
}
