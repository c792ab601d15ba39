//! The admin API's errors, as sent: one enum, each variant with its code,
//! status and description. A broker error keeps the answer the one OAuth
//! mapping gives it ([`crate::error::oauth`]), so the admin API and the token
//! endpoint say the same of the same failure.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::error::ErrorResponse;
use crate::error::oauth::OAuthError;
use crate::error::EndpointError;

/// A refused admin request.
#[derive(Debug)]
pub(super) enum AdminError {
    /// The admin API is off (no admin token is configured): answered as an
    /// unknown route is, so that a scan learns nothing.
    Off,
    /// No admin credential, or not the configured one (RFC 6750 §3).
    Unauthenticated,
    /// The body or query is not what the route reads.
    MalformedRequest,
    /// A policy question that does not parse or lacks a field; the text
    /// names the field (DESIGN.md §10) and comes from the authenticated
    /// admin's own request.
    InvalidQuestion(String),
    /// No token with this id was issued here.
    UnknownToken,
    /// The broker could not do it: answered through the OAuth mapping.
    Grant(EndpointError),
}

impl<E: Into<EndpointError>> From<E> for AdminError {
    fn from(error: E) -> Self {
        AdminError::Grant(error.into())
    }
}

impl AdminError {
    /// The `error` code sent.
    pub(super) fn code(&self) -> &'static str {
        match self {
            AdminError::Off | AdminError::UnknownToken => "not_found",
            AdminError::Unauthenticated => "invalid_token",
            AdminError::MalformedRequest | AdminError::InvalidQuestion(_) => "invalid_request",
            AdminError::Grant(error) => OAuthError::from(error).code.as_str(),
        }
    }

    /// The HTTP status sent.
    pub(super) fn status(&self) -> StatusCode {
        match self {
            AdminError::Off | AdminError::UnknownToken => StatusCode::NOT_FOUND,
            AdminError::Unauthenticated => StatusCode::UNAUTHORIZED,
            AdminError::MalformedRequest | AdminError::InvalidQuestion(_) => StatusCode::BAD_REQUEST,
            AdminError::Grant(error) => OAuthError::from(error).status,
        }
    }

    /// The `error_description` sent, if any: none when the API is off, as
    /// for an unknown route.
    pub(super) fn description(&self) -> Option<&str> {
        match self {
            AdminError::Off => None,
            AdminError::Unauthenticated => Some("admin credential required"),
            AdminError::MalformedRequest => Some("the request body or query is malformed"),
            AdminError::InvalidQuestion(description) => Some(description),
            AdminError::UnknownToken => Some("no token with this id was issued here"),
            AdminError::Grant(error) => Some(OAuthError::from(error).description),
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        // A broker error also carries the headers its OAuth answer has
        // (`Retry-After` when state cannot be checked).
        if let AdminError::Grant(error) = &self {
            return ErrorResponse::from(error).into_response();
        }
        let body = match self.description() {
            Some(description) => json!({ "error": self.code(), "error_description": description }),
            None => json!({ "error": self.code() }),
        };
        let mut response = (self.status(), Json(body)).into_response();
        if let AdminError::Unauthenticated = self {
            // RFC 6750 §3: name the scheme the endpoint expects.
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"baton-admin\""));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ApprovalError;
    use crate::store::{ApprovalState, StoreError};

    #[test]
    fn each_variant_has_its_code_status_and_description() {
        let cases = [
            (AdminError::Off, 404, "not_found", None),
            (AdminError::Unauthenticated, 401, "invalid_token", Some("admin credential required")),
            (AdminError::MalformedRequest, 400, "invalid_request", Some("the request body or query is malformed")),
            (
                AdminError::InvalidQuestion("unknown field `x`".into()),
                400,
                "invalid_request",
                Some("unknown field `x`"),
            ),
            (AdminError::UnknownToken, 404, "not_found", Some("no token with this id was issued here")),
            (ApprovalError::NotFound.into(), 404, "invalid_request", Some("no approval with this id")),
            (
                ApprovalError::WrongApprover.into(),
                403,
                "access_denied",
                Some("this approver may not decide this request"),
            ),
            (
                ApprovalError::AlreadyDecided(ApprovalState::Denied).into(),
                409,
                "invalid_request",
                Some("the approval was already decided"),
            ),
            (
                StoreError::Unavailable("down".into()).into(),
                503,
                "temporarily_unavailable",
                Some("state could not be checked; try again later"),
            ),
        ];
        for (error, status, code, description) in cases {
            assert_eq!((error.status().as_u16(), error.code(), error.description()), (status, code, description));
        }
    }

    #[test]
    fn the_credential_challenge_names_the_bearer_scheme() {
        let response = AdminError::Unauthenticated.into_response();
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer realm=\"baton-admin\"");
        let unavailable = AdminError::from(EndpointError::from(StoreError::ReadOnly)).into_response();
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(unavailable.headers().contains_key(header::RETRY_AFTER), "the OAuth answer's headers are kept");
    }
}
