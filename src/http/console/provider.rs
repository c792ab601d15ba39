//! Signing in to the console at an identity provider, for the listed
//! members of the security team ([`crate::upstream::sign_in`]).
//!
//! The browser leaves with a `state` that is also set in a short-lived
//! cookie, so that only the browser that started a sign-in can finish it
//! (no one can sign a victim in to their own session). That cookie is
//! `SameSite=Lax`, because the provider sends the browser back from another
//! site; the session cookie stays `Strict`. A `Strict` cookie set on that
//! cross-site return would not be sent on a redirect from it, so the
//! callback answers with a page that moves on by itself, a navigation of
//! the console's own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;

use super::extract::{cookie_values, field};
use super::pages::{self, page};
use super::session::Sessions;
use crate::broker::Broker;
use crate::clock::UnixTime;
use crate::upstream::sign_in::{Pending, SignInError};

/// The cookie that ties a sign-in to the browser that started it.
const COOKIE: &str = "baton_console_sign_in";

/// How long a browser may take at the provider, in seconds.
const PENDING_SECONDS: i64 = 600;

/// The most sign-ins waiting at once; past it, the oldest is forgotten.
const MAX_PENDING: usize = 1000;

/// Sign-ins waiting for the browser's return, by `state`.
#[derive(Default)]
pub struct PendingSignIns {
    pending: Mutex<HashMap<String, (Pending, UnixTime)>>,
}

impl PendingSignIns {
    fn keep(&self, pending: Pending, now: UnixTime) {
        let mut waiting = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        waiting.retain(|_, (_, until)| until.0 > now.0);
        if waiting.len() >= MAX_PENDING {
            let oldest = waiting.iter().min_by_key(|(_, (_, until))| until.0).map(|(state, _)| state.clone());
            if let Some(state) = oldest {
                waiting.remove(&state);
            }
        }
        waiting.insert(pending.state.clone(), (pending, now.plus(PENDING_SECONDS)));
    }

    /// The sign-in named `state`, once: a second return with it finds nothing.
    fn take(&self, state: &str, now: UnixTime) -> Option<Pending> {
        let mut waiting = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        waiting.remove(state).filter(|(_, until)| until.0 > now.0).map(|(pending, _)| pending)
    }
}

/// Sends the browser to the provider.
pub async fn start(State(broker): State<Arc<Broker>>, Extension(pending): Extension<Arc<PendingSignIns>>) -> Response {
    let Some(sign_in) = broker.console_sign_in() else {
        return page(StatusCode::NOT_FOUND, pages::message("Not found", "No identity provider is configured."));
    };
    let (url, started) = match sign_in.start().await {
        Ok(started) => started,
        Err(error) => {
            tracing::warn!(%error, "console sign-in could not start");
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                pages::message("Unavailable", "The identity provider cannot be reached now."),
            );
        }
    };
    let cookie = format!(
        "{COOKIE}={}; Path=/console/callback; HttpOnly; SameSite=Lax; Max-Age={PENDING_SECONDS}{}",
        started.state,
        super::secure_attribute(&broker)
    );
    pending.keep(started, broker.context().now());
    super::with_cookie(Redirect::to(&url).into_response(), &cookie)
}

/// Where the provider sends the browser back: the code becomes a session
/// when the state is this browser's and the person is listed.
pub async fn callback(
    State(broker): State<Arc<Broker>>,
    Extension(pending): Extension<Arc<PendingSignIns>>,
    Extension(sessions): Extension<Arc<Sessions>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let refused = |text: &str| page(StatusCode::FORBIDDEN, pages::message("Not signed in", text));
    let Some(sign_in) = broker.console_sign_in() else {
        return page(StatusCode::NOT_FOUND, pages::message("Not found", "No identity provider is configured."));
    };
    let query = uri.query().unwrap_or_default().as_bytes();
    let state = field(query, "state").unwrap_or_default();
    // Only the browser that left with this state may come back with it.
    let ours = cookie_values(&headers, COOKIE).any(|value| !state.is_empty() && value == state);
    let now = broker.context().now();
    let Some(started) = ours.then(|| pending.take(&state, now)).flatten() else {
        return refused("This sign-in was not started here, has expired, or was used already.");
    };
    let Some(code) = field(query, "code") else {
        // RFC 6749 §4.1.2.1: the provider said why in `error`; it is not repeated.
        return refused("The identity provider did not sign you in.");
    };
    let member = match sign_in.finish(started, code).await {
        Ok(member) => member,
        Err(SignInError::NotMember(person)) => {
            tracing::warn!(%person, issuer = sign_in.issuer(), "console sign-in refused: not a listed member");
            return refused("You signed in, but you are not a listed member of the security team.");
        }
        Err(error) => {
            tracing::warn!(%error, issuer = sign_in.issuer(), "console sign-in failed");
            return refused("The sign-in could not be completed.");
        }
    };
    let Some((id, _)) = sessions.open(now, &member) else {
        return page(StatusCode::SERVICE_UNAVAILABLE, pages::message("Unavailable", "No session could be opened."));
    };
    tracing::info!(%member, issuer = sign_in.issuer(), "console sign-in");
    let mut response = page(StatusCode::OK, pages::signed_in(&member));
    let secure = super::secure_attribute(&broker);
    for cookie in [
        super::session_cookie(&id, &broker),
        format!("{COOKIE}=; Path=/console/callback; HttpOnly; SameSite=Lax; Max-Age=0{secure}"),
    ] {
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}
