//! The HTTP surface (DESIGN.md §3). The only part of the broker that knows
//! about HTTP: it turns requests into domain values and results into
//! responses, and nothing more.

mod admin;
mod admin_auth;
mod admin_error;
mod approvals;
mod client_address;
mod console;
mod discovery;
mod error;
mod form;
mod observe;
mod server;

pub use server::Limits;

use std::sync::Arc;

use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::broker::Broker;

/// The broker's routes. Every response carries `Cache-Control: no-store`:
/// tokens, errors and metadata alike are never to be cached by intermediaries
/// (RFC 6749 §5.1).
pub fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/token", post(form::token).fallback(error::method_not_allowed))
        .route("/introspect", post(form::introspect).fallback(error::method_not_allowed))
        .route("/revoke", post(form::revoke).fallback(error::method_not_allowed))
        .route("/authorize", get(discovery::authorize).post(discovery::authorize).fallback(error::method_not_allowed))
        .route("/.well-known/oauth-authorization-server", get(discovery::metadata))
        .route("/.well-known/openid-configuration", get(discovery::metadata))
        .route("/jwks", get(discovery::jwks))
        .route("/healthz", get(discovery::healthz))
        .route("/readyz", get(discovery::readyz))
        .route("/metrics", get(metrics))
        .merge(admin::router(broker.clone()))
        .merge(approvals::router(broker.clone()))
        .merge(console::router(broker.clone()))
        .route_layer(axum::middleware::from_fn_with_state(broker.clone(), observe::duration))
        .fallback(error::not_found)
        .layer(axum::middleware::map_response(no_store))
        .layer(axum::middleware::from_fn(observe::request_id))
        .with_state(broker)
}

/// Serves the broker on `listener` until `shutdown` completes, recording each
/// client's address for the audit trail. `limits` bound how long a client may
/// take and how many connections it may hold; request bodies are capped at
/// the broker's `max_body_bytes`. The soft descriptor limit is raised, if
/// need be and allowed, to hold `limits.max_connections`; if it cannot be,
/// fewer connections are served.
pub async fn serve(
    listener: tokio::net::TcpListener,
    broker: Arc<Broker>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::run(listener, broker, limits, shutdown).await
}

/// `GET /metrics`: the broker's metrics, rendered; nothing in them names a
/// client, a subject or a token, so they are served like `/healthz`.
async fn metrics(axum::extract::State(broker): axum::extract::State<Arc<Broker>>) -> Response {
    use axum::response::IntoResponse;
    // The one gauge read from the store, from its counts per expiry second:
    // the scrape costs the same however many approvals wait, so this
    // unauthenticated route cannot be made slow by filling the list. If the
    // store cannot answer, the last value stays.
    if let Ok(pending) = broker.count_pending_approvals().await {
        broker.metrics().set_pending_approvals(usize::try_from(pending).unwrap_or(usize::MAX));
    }
    match broker.metrics().render() {
        Ok(text) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}
