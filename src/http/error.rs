//! OAuth error responses (RFC 6749 §5.2) from [`OAuthError`], and the
//! token endpoint's `authorization_pending` answer with the fields a
//! polling client needs.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use std::sync::Arc;

use axum::extract::{Request, State};

use crate::broker::Broker;
use crate::error::oauth::{ErrorCode, OAuthError};
use crate::error::{ApprovalError, EndpointError, PendingApproval, RequestError};

/// A refused request, as sent.
pub struct ErrorResponse {
    error: OAuthError,
    /// Seconds to wait before trying again, where the refusal says.
    retry_after: Option<u64>,
    /// The approval a person has yet to decide, for `authorization_pending`.
    pending: Option<PendingApproval>,
}

impl From<&EndpointError> for ErrorResponse {
    fn from(error: &EndpointError) -> Self {
        let retry_after = match error {
            EndpointError::Throttled(throttled) => Some(throttled.retry_after),
            _ => None,
        };
        let pending = match error {
            EndpointError::Approval(ApprovalError::Pending(pending)) => Some(pending.clone()),
            _ => None,
        };
        ErrorResponse { error: OAuthError::from(error), retry_after, pending }
    }
}

/// An error decided before any grant logic ran (at the connection), which
/// asks for no particular wait.
impl From<OAuthError> for ErrorResponse {
    fn from(error: OAuthError) -> Self {
        ErrorResponse { error, retry_after: None, pending: None }
    }
}

impl IntoResponse for ErrorResponse {
    fn into_response(self) -> Response {
        let OAuthError { code, status, description } = self.error;
        let mut body = serde_json::json!({ "error": code.as_str(), "error_description": description });
        // CIBA Core §7.3, §11: the client repeats its request with
        // `approval_id` every `interval` seconds until `expires_in`.
        if let (Some(pending), Some(fields)) = (self.pending, body.as_object_mut()) {
            fields.insert("approval_id".into(), serde_json::json!(pending.id));
            fields.insert("interval".into(), pending.interval.into());
            fields.insert("expires_in".into(), pending.expires_in.into());
        }
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match code {
            // RFC 6749 §5.2: a 401 for invalid_client names the scheme.
            ErrorCode::InvalidClient => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"baton\", charset=\"UTF-8\""),
                );
            }
            ErrorCode::TemporarilyUnavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ErrorCode::InvalidRequest
            | ErrorCode::InvalidDpopProof
            | ErrorCode::UseDpopNonce
            | ErrorCode::UnauthorizedClient
            | ErrorCode::UnsupportedGrantType
            | ErrorCode::InvalidScope
            | ErrorCode::InvalidTarget
            | ErrorCode::ServerError
            | ErrorCode::InvalidGrant
            | ErrorCode::AuthorizationPending
            | ErrorCode::AccessDenied
            | ErrorCode::ExpiredToken => {}
        }
        // RFC 9110 §10.2.3: in seconds.
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        response
    }
}

pub(super) async fn method_not_allowed(State(broker): State<Arc<Broker>>, request: Request) -> ErrorResponse {
    let client_address = super::client_address::of(&request, broker.trusted_proxies());
    ErrorResponse::from(&broker.refuse(RequestError::MethodNotAllowed, client_address).await)
}

pub(super) async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, Json(serde_json::json!({ "error": "not_found" })))
}
