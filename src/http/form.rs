//! The form endpoints (`/token`, `/introspect`, `/revoke`): each reads an
//! `application/x-www-form-urlencoded` body of bounded size and at most one
//! `Authorization` header (RFC 6749 §2.3, §3.2), and answers JSON.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::ErrorResponse;

/// The proof header (RFC 9449 §4.1).
pub(super) const DPOP: HeaderName = HeaderName::from_static("dpop");
/// The server nonce header (RFC 9449 §8.1).
const DPOP_NONCE: HeaderName = HeaderName::from_static("dpop-nonce");
use crate::broker::Broker;
use crate::error::RequestError;
use crate::grant::TokenRequest;
use crate::params::TokenParams;

pub(super) async fn token(State(broker): State<Arc<Broker>>, request: Request) -> Response {
    let outcome = match read(&broker, request).await {
        Ok(form) => broker.token(form).await,
        Err((error, client_address)) => Err(broker.refuse(error, client_address).await),
    };
    let mut response = match outcome {
        Ok(response) => Json(response).into_response(),
        Err(error) => ErrorResponse::from(&error).into_response(),
    };
    // RFC 9449 §8: the nonce the next proof must carry, when nonces are on.
    if let Some(nonce) = broker.dpop_nonce().and_then(|nonce| HeaderValue::from_str(&nonce).ok()) {
        response.headers_mut().insert(DPOP_NONCE, nonce);
    }
    response
}

pub(super) async fn introspect(State(broker): State<Arc<Broker>>, request: Request) -> Response {
    let outcome = match read(&broker, request).await {
        Ok(form) => {
            broker.introspect(form.authorization.as_deref(), &form.params, form.client_address.as_deref()).await
        }
        Err((error, client_address)) => Err(broker.refuse_unread(error, client_address.as_deref())),
    };
    match outcome {
        Ok(answer) => Json(answer).into_response(),
        Err(error) => ErrorResponse::from(&error).into_response(),
    }
}

pub(super) async fn revoke(State(broker): State<Arc<Broker>>, request: Request) -> Response {
    let outcome = match read(&broker, request).await {
        Ok(form) => broker.revoke(form.authorization.as_deref(), &form.params, form.client_address).await,
        Err((error, client_address)) => Err(broker.refuse_unread(error, client_address.as_deref())),
    };
    match outcome {
        // RFC 7009 §2.2: 200 with an empty body.
        Ok(()) => StatusCode::OK.into_response(),
        Err(error) => ErrorResponse::from(&error).into_response(),
    }
}

/// The request's form, credentials and origin; on failure, the reason and
/// the origin, so that the refusal can still be audited.
async fn read(broker: &Broker, request: Request) -> Result<TokenRequest, (RequestError, Option<String>)> {
    let client_address = super::client_address::of(&request, broker.trusted_proxies());
    let (parts, body) = request.into_parts();
    let refuse = |error| (error, client_address.clone());
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(refuse(RequestError::NotForm));
    }
    let bytes = axum::body::to_bytes(body, broker.settings().max_body_bytes)
        .await
        .map_err(|_| refuse(RequestError::TooLarge))?;
    let params = TokenParams::from_pairs(form_urlencoded::parse(&bytes)).map_err(refuse)?;
    let authorization = match parts.headers.get_all(header::AUTHORIZATION).iter().collect::<Vec<_>>().as_slice() {
        [] => None,
        // Bytes that are not text cannot be Basic credentials: client
        // authentication refuses them as malformed.
        [one] => Some(String::from_utf8_lossy(one.as_bytes()).into_owned()),
        _ => return Err(refuse(RequestError::Repeated(Some("authorization")))),
    };
    // Values that are not text cannot be proofs: they fail as malformed.
    let dpop_proofs = parts
        .headers
        .get_all(DPOP)
        .iter()
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .collect();
    Ok(TokenRequest { authorization, params, client_address, dpop_proofs })
}
