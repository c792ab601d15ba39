//! The admin credential, checked in front of every admin route (the admin
//! API's own and the approvals'): a bearer token compared with its
//! configured SHA-256 in constant time, throttled per client address like
//! a client's secret. Off unless an admin token is configured.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::admin_error::AdminError;
use crate::broker::Broker;

/// Lets a request through to `next` only with the admin credential.
pub(super) async fn authorize(State(broker): State<Arc<Broker>>, request: Request, next: Next) -> Response {
    if !broker.admin_enabled() {
        return AdminError::Off.into_response();
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        // RFC 7235 §2.1: the scheme is case-insensitive.
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let client_address = super::client_address::of(&request, broker.trusted_proxies());
    match broker.admit_admin(presented, client_address.as_deref()) {
        Ok(true) => next.run(request).await,
        Ok(false) => AdminError::Unauthenticated.into_response(),
        Err(throttled) => AdminError::from(throttled).into_response(),
    }
}
