//! What every console handler needs before it does anything: a live
//! session ([`SignedIn`]), and for a state change, a form posted with that
//! session's CSRF token ([`Posted`]). A request without them is answered
//! here, so no handler can forget to ask.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use super::pages;
use super::session::{self, Session, COOKIE};
use crate::admin::Operator;
use crate::broker::Broker;
use crate::store::StoreError;

/// The live session the request's cookie names. Every value the browser
/// sends under the cookie's name is tried: a cookie planted on a longer path
/// comes first, and must not shadow the real one.
pub async fn session(broker: &Broker, headers: &HeaderMap) -> Result<Option<(String, Session)>, StoreError> {
    // Bounded: a browser sends a handful; a forged header is cut short.
    for id in cookie_values(headers, COOKIE).take(8) {
        if let Some(session) = session::find(broker, id).await? {
            return Ok(Some((id.to_owned(), session)));
        }
    }
    Ok(None)
}

/// Every value the browser sends under the cookie `name`, in its order.
pub fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(move |pair| pair.trim().strip_prefix(name)?.strip_prefix('='))
}

/// The value of `name` in a form or query string, when it is there once.
pub fn field(text: &[u8], name: &str) -> Option<String> {
    let mut values = form_urlencoded::parse(text).filter(|(key, _)| key == name).map(|(_, value)| value.into_owned());
    match (values.next(), values.next()) {
        (Some(value), None) => Some(value),
        _ => None,
    }
}

/// A request from a signed-in session; others are sent to sign in.
pub struct SignedIn {
    /// The session's id (the cookie's value).
    pub id: String,
    /// The session.
    pub session: Session,
}

impl FromRequestParts<Arc<Broker>> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, broker: &Arc<Broker>) -> Result<Self, Response> {
        match session(broker, &parts.headers).await {
            Ok(Some((id, session))) => Ok(SignedIn { id, session }),
            Ok(None) => Err(Redirect::to("/console/sign-in").into_response()),
            // Who is signed in cannot be told: nothing is shown, nothing done.
            Err(_) => Err(pages::unavailable()),
        }
    }
}

/// A form posted from a signed-in session with its CSRF token; anything
/// else is refused before the handler runs, and nothing is done.
pub struct Posted {
    /// Who posted it.
    pub signed_in: SignedIn,
    body: Bytes,
}

impl Posted {
    /// A field of the form.
    pub fn field(&self, name: &str) -> Option<String> {
        field(&self.body, name)
    }

    /// Who posted it, as the audit trail names them.
    pub fn operator(&self) -> Operator {
        Operator::Console(self.signed_in.session.who.clone())
    }
}

impl FromRequest<Arc<Broker>> for Posted {
    type Rejection = Response;

    async fn from_request(request: Request, broker: &Arc<Broker>) -> Result<Self, Response> {
        let (parts, body) = request.into_parts();
        let refused = |text: &str| pages::page(StatusCode::FORBIDDEN, pages::message("Refused", text));
        let signed_in = match session(broker, &parts.headers).await {
            Ok(Some((id, session))) => SignedIn { id, session },
            Ok(None) => return Err(refused("You are not signed in: nothing was done.")),
            Err(_) => return Err(pages::unavailable()),
        };
        let body =
            Bytes::from_request(Request::from_parts(parts, body), broker).await.map_err(IntoResponse::into_response)?;
        if !field(&body, "csrf").is_some_and(|csrf| session::allows(&signed_in.session, &csrf)) {
            return Err(refused("That form is stale: nothing was done."));
        }
        Ok(Posted { signed_in, body })
    }
}
