//! The admin API under `/admin`, for security teams: revoke, deprovision
//! and reinstate, trace, a subject's or an agent's tokens, the agent inventory, the audit trail and policy
//! dry runs. Behind the admin credential ([`super::admin_auth`]).

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::admin_error::AdminError;
use crate::admin::{Operator, TokenQuery};
use crate::broker::Broker;
use crate::claims::TokenId;
use crate::error::EndpointError;
use crate::policy::explain::{ExplainError, Question};
use crate::store::{AuditFilter, Principal};

/// The admin routes, behind the admin credential.
pub(super) fn router(broker: Arc<Broker>) -> Router<Arc<Broker>> {
    Router::new()
        .route("/admin/revoke", post(revoke))
        .route("/admin/deprovision", post(deprovision))
        .route("/admin/reinstate", post(reinstate))
        .route("/admin/trace/{jti}", get(trace))
        .route("/admin/tokens", get(tokens))
        .route("/admin/agents", get(agents))
        .route("/admin/audit", get(audit))
        .route("/admin/policy/explain", post(explain))
        .route_layer(axum::middleware::from_fn_with_state(broker, super::admin_auth::authorize))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    jti: TokenId,
}

async fn revoke(
    State(broker): State<Arc<Broker>>,
    body: Result<Json<RevokeBody>, JsonRejection>,
) -> Result<Json<Value>, AdminError> {
    let Ok(Json(body)) = body else { return Err(AdminError::MalformedRequest) };
    match broker.revoke_jti(&body.jti, &Operator::AdminApi).await? {
        Some(until) => Ok(Json(json!({ "revoked": body.jti, "until": until }))),
        None => Err(AdminError::UnknownToken),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeprovisionBody {
    agent: Option<crate::ids::AgentId>,
    subject: Option<crate::ids::Subject>,
}

/// One agent or one subject, exactly.
fn principal_of(body: Result<Json<DeprovisionBody>, JsonRejection>) -> Result<Principal, AdminError> {
    match body {
        Ok(Json(DeprovisionBody { agent: Some(agent), subject: None })) => Ok(Principal::Agent(agent)),
        Ok(Json(DeprovisionBody { agent: None, subject: Some(subject) })) => Ok(Principal::Subject(subject)),
        _ => Err(AdminError::MalformedRequest),
    }
}

async fn deprovision(
    State(broker): State<Arc<Broker>>,
    body: Result<Json<DeprovisionBody>, JsonRejection>,
) -> Result<Json<Value>, AdminError> {
    let principal = principal_of(body)?;
    broker.deprovision(&principal, &Operator::AdminApi).await?;
    Ok(Json(json!({ "deprovisioned": principal })))
}

async fn reinstate(
    State(broker): State<Arc<Broker>>,
    body: Result<Json<DeprovisionBody>, JsonRejection>,
) -> Result<Json<Value>, AdminError> {
    let principal = principal_of(body)?;
    broker.reinstate(&principal, &Operator::AdminApi).await?;
    Ok(Json(json!({ "reinstated": principal })))
}

async fn trace(State(broker): State<Arc<Broker>>, Path(jti): Path<String>) -> Result<Response, AdminError> {
    match broker.trace(&TokenId(jti)).await? {
        Some(trace) => Ok(Json(trace).into_response()),
        None => Err(AdminError::UnknownToken),
    }
}

/// The tokens of a subject or an agent (`?subject=…`, `?agent=…`, both, and
/// `limit`), newest first, each with its status.
async fn tokens(
    State(broker): State<Arc<Broker>>,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Result<Json<Value>, AdminError> {
    let Ok(Query(query)) = query else { return Err(AdminError::MalformedRequest) };
    let tokens = broker.tokens(&query).await?.ok_or(AdminError::MalformedRequest)?;
    Ok(Json(json!({ "tokens": tokens })))
}

async fn agents(State(broker): State<Arc<Broker>>) -> Result<Json<Value>, AdminError> {
    let reports = broker.agent_reports().await?;
    Ok(Json(json!({ "agents": reports })))
}

async fn audit(
    State(broker): State<Arc<Broker>>,
    filter: Result<Query<AuditFilter>, QueryRejection>,
) -> Result<Json<Value>, AdminError> {
    let Ok(Query(filter)) = filter else { return Err(AdminError::MalformedRequest) };
    let events = broker.audit_events(&filter).await?;
    Ok(Json(json!({ "events": events })))
}

/// A dry run against the policy in force: the request as JSON (a
/// [`Question`]), the answer scope by scope, and for a refusal the OAuth
/// error the client would get.
async fn explain(
    State(broker): State<Arc<Broker>>,
    body: Result<Json<Question>, JsonRejection>,
) -> Result<Json<Value>, AdminError> {
    let question = match body {
        Ok(Json(question)) => question,
        // An unknown or misspelt field is named (DESIGN.md §10).
        Err(rejection) => return Err(AdminError::InvalidQuestion(rejection.body_text())),
    };
    match broker.explain(&question) {
        Ok(explanation) => Ok(Json(crate::error::oauth::explanation_json(&explanation))),
        Err(ExplainError::Question(error)) => Err(AdminError::InvalidQuestion(error.to_string())),
        Err(ExplainError::Policy(error)) => Err(AdminError::Grant(EndpointError::Policy(error))),
    }
}
