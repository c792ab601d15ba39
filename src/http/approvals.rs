//! Approvals over HTTP: the `authorization_pending` answer of the
//! token endpoint, with the fields a polling client needs, and the admin
//! routes where approvers list, approve and deny.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::error::ErrorResponse;
use crate::grant::{ApprovalError, Broker, GrantError};
use crate::store::approvals::{ApprovalQuery, Cursor, DEFAULT_PAGE, MAX_PAGE};
use crate::store::{ApprovalId, ApprovalState};

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

/// What `GET /admin/approvals` may be asked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    /// `pending` (the default: waiting and not expired), `approved`, `denied` or `consumed`.
    state: Option<String>,
    /// Only this agent's.
    agent: Option<String>,
    /// The previous page's `next`.
    before: Option<String>,
    /// At most this many, 1 to [`MAX_PAGE`].
    limit: Option<usize>,
}

/// `GET /admin/approvals[?state=…&agent=…&limit=…&before=…]`: one page of
/// approvals, newest first, with `next` (the `before` of the next page) when
/// there may be more.
pub(super) async fn list(
    State(broker): State<Arc<Broker>>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Response {
    let Some(query) = params.ok().and_then(|Query(params)| query_of(params)) else {
        return super::admin::bad_body();
    };
    match broker.list_approvals(query).await {
        Ok(page) => {
            Json(json!({ "approvals": page.approvals, "next": page.next.map(|next| next.to_string()) })).into_response()
        }
        Err(error) => ErrorResponse::from(&error).into_response(),
    }
}

/// The store's query for `params`, if they are valid; its time is set by the broker.
fn query_of(params: ListParams) -> Option<ApprovalQuery> {
    let state = match params.state.as_deref() {
        Some(state) => ApprovalState::parse(state)?,
        None => ApprovalState::Pending,
    };
    let before = match params.before.as_deref() {
        Some(before) => Some(Cursor::parse(before)?),
        None => None,
    };
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    // Agent ids are short; a longer one names nobody and is not worth a lookup.
    let agent_valid = params.agent.as_ref().is_none_or(|agent| (1..=256).contains(&agent.len()));
    if !(1..=MAX_PAGE).contains(&limit) || !agent_valid {
        return None;
    }
    let now = crate::clock::UnixTime(0);
    Some(ApprovalQuery { state, agent: params.agent, before, limit, now })
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
