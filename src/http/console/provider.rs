//! Signing in to the console at an identity provider, for the listed
//! members of the security team ([`crate::upstream::sign_in`]).
//!
//! The browser leaves with a `state`, and keeps what the sign-in needs on
//! its return (the state, the nonce and the PKCE verifier) in a short-lived
//! cookie of its own: only the browser that started a sign-in can finish it
//! (no one can sign a victim in to their own session), whichever node it
//! comes back to, and nobody who is not signed in makes the broker keep
//! anything. That cookie is `SameSite=Lax`, because the provider sends the
//! browser back from another site; the session cookie stays `Strict`. A
//! `Strict` cookie set on that cross-site return would not be sent on a
//! redirect from it, so the callback answers with a page that moves on by
//! itself, a navigation of the console's own.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::extract::{cookie_values, field};
use super::pages::{self, page};
use super::session;
use crate::broker::Broker;
use crate::upstream::sign_in::{Pending, SignInError};

/// The cookie that carries a sign-in, from its start to its return.
const COOKIE: &str = "baton_console_sign_in";

/// How long a browser may take at the provider, in seconds.
const PENDING_SECONDS: i64 = 600;

/// A pending sign-in as a cookie value (base64url of its JSON).
fn to_cookie(pending: &Pending) -> Option<String> {
    serde_json::to_vec(pending).ok().map(|json| URL_SAFE_NO_PAD.encode(json))
}

/// The pending sign-in a cookie value holds.
fn from_cookie(value: &str) -> Option<Pending> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(value).ok()?).ok()
}

/// Sends the browser to the provider.
pub async fn start(State(broker): State<Arc<Broker>>) -> Response {
    let Some(sign_in) = broker.console_sign_in() else {
        return page(StatusCode::NOT_FOUND, pages::message("Not found", "No identity provider is configured."));
    };
    let unavailable = || {
        page(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::message("Unavailable", "The identity provider cannot be reached now."),
        )
    };
    let (url, pending) = match sign_in.start().await {
        Ok(started) => started,
        Err(error) => {
            tracing::warn!(%error, issuer = sign_in.issuer(), "console sign-in could not start");
            return unavailable();
        }
    };
    let Some(cookie) = to_cookie(&pending) else { return unavailable() };
    let secure = super::secure_attribute(&broker);
    let cookie =
        format!("{COOKIE}={cookie}; Path=/console/callback; HttpOnly; SameSite=Lax; Max-Age={PENDING_SECONDS}{secure}");
    super::with_cookie(Redirect::to(&url).into_response(), &cookie)
}

/// Where the provider sends the browser back: the code becomes a session
/// when the state is this browser's and the person is listed.
pub async fn callback(State(broker): State<Arc<Broker>>, headers: HeaderMap, uri: Uri) -> Response {
    let refused = |text: &str| page(StatusCode::FORBIDDEN, pages::message("Not signed in", text));
    let Some(sign_in) = broker.console_sign_in() else {
        return page(StatusCode::NOT_FOUND, pages::message("Not found", "No identity provider is configured."));
    };
    let query = uri.query().unwrap_or_default().as_bytes();
    let state = field(query, "state").unwrap_or_default();
    // Only the browser that left with this state comes back with it.
    let started = cookie_values(&headers, COOKIE)
        .take(8)
        .filter_map(from_cookie)
        .find(|pending| !state.is_empty() && pending.state == state);
    let Some(started) = started else {
        return cleared(refused("This sign-in was not started in this browser, or has expired."), &broker);
    };
    let Some(code) = field(query, "code") else {
        // RFC 6749 §4.1.2.1: the provider said why in `error`; it is not repeated.
        return cleared(refused("The identity provider did not sign you in."), &broker);
    };
    // The broker keeps nothing of a sign-in: a code is good once at the
    // provider (RFC 6749 §4.1.2), so a second return fails there.
    let member = match sign_in.finish(started, code).await {
        Ok(member) => member,
        Err(SignInError::NotMember(person)) => {
            tracing::warn!(%person, issuer = sign_in.issuer(), "console sign-in refused: not a listed member");
            return cleared(refused("You signed in, but you are not a listed member of the security team."), &broker);
        }
        Err(error) => {
            tracing::warn!(%error, issuer = sign_in.issuer(), "console sign-in failed");
            return cleared(refused("The sign-in could not be completed."), &broker);
        }
    };
    let Ok((id, _)) = session::open(&broker, session::Admission::Member(&member)).await else {
        return page(StatusCode::SERVICE_UNAVAILABLE, pages::message("Unavailable", "No session could be opened."));
    };
    tracing::info!(%member, issuer = sign_in.issuer(), "console sign-in");
    let mut response = cleared(page(StatusCode::OK, pages::signed_in(&member)), &broker);
    if let Ok(value) = HeaderValue::from_str(&super::session_cookie(&id, &broker)) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// `response`, ending the sign-in's cookie: a sign-in is finished once.
fn cleared(mut response: Response, broker: &Broker) -> Response {
    let secure = super::secure_attribute(broker);
    let cookie = format!("{COOKIE}=; Path=/console/callback; HttpOnly; SameSite=Lax; Max-Age=0{secure}");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}
