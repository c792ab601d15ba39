//! The admin routes where approvers list, approve and deny the requests
//! that wait for a person (DESIGN.md §11), behind the admin credential
//! ([`super::admin_auth`]). The token endpoint's `authorization_pending`
//! answer is an error response like the others ([`super::error`]).

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::admin_error::AdminError;
use crate::admin::Operator;
use crate::broker::Broker;
use crate::store::approvals::{ApprovalQuery, Cursor, DEFAULT_PAGE, MAX_PAGE};
use crate::store::{ApprovalId, ApprovalState};

/// The approvals routes, behind the admin credential.
pub(super) fn router(broker: Arc<Broker>) -> Router<Arc<Broker>> {
    Router::new()
        .route("/admin/approvals", get(list))
        .route("/admin/approvals/{id}/approve", post(approve))
        .route("/admin/approvals/{id}/deny", post(deny))
        .route_layer(axum::middleware::from_fn_with_state(broker, super::admin_auth::authorize))
}

/// An approver's decision: who decides.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    approver: String,
}

/// What `GET /admin/approvals` may be asked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
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
async fn list(
    State(broker): State<Arc<Broker>>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Value>, AdminError> {
    let query = params.ok().and_then(|Query(params)| query_of(params)).ok_or(AdminError::MalformedRequest)?;
    let page = broker.list_approvals(query).await?;
    Ok(Json(json!({ "approvals": page.approvals, "next": page.next.map(|next| next.to_string()) })))
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
async fn approve(
    State(broker): State<Arc<Broker>>,
    Path(id): Path<String>,
    body: Result<Json<DecisionBody>, JsonRejection>,
) -> Result<Json<Value>, AdminError> {
    decide(&broker, id, body, true).await
}

/// `POST /admin/approvals/{id}/deny` with `{"approver": …}`.
async fn deny(
    State(broker): State<Arc<Broker>>,
    Path(id): Path<String>,
    body: Result<Json<DecisionBody>, JsonRejection>,
) -> Result<Json<Value>, AdminError> {
    decide(&broker, id, body, false).await
}

async fn decide(
    broker: &Broker,
    id: String,
    body: Result<Json<DecisionBody>, JsonRejection>,
    approve: bool,
) -> Result<Json<Value>, AdminError> {
    let Ok(Json(DecisionBody { approver })) = body else { return Err(AdminError::MalformedRequest) };
    let approval = broker.decide_approval(&ApprovalId(id), approver.trim(), approve, &Operator::AdminApi).await?;
    Ok(Json(json!({ "approval": approval })))
}
