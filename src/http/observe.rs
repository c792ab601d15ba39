//! What operators see of each request: an id (`X-Request-Id`) on its log
//! span and on its answer, and its duration per matched route in the
//! metrics. A client's own id is kept when it is short and plain, so that a
//! request can be followed from the caller's logs into the broker's; any
//! other is replaced, so that nothing a client sends can forge a log line.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::broker::Broker;

/// The header that carries a request's id, both ways.
pub(super) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Gives the request an id, logs under it, and answers with it. With
/// traces on, the request's span continues the caller's trace when it sent
/// a W3C `traceparent`; the token endpoint names on it the grant type, the
/// acting agent and the decision.
pub(super) async fn request_id(request: Request, next: Next) -> Response {
    let id = id_of(request.headers());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
        grant_type = tracing::field::Empty,
        agent = tracing::field::Empty,
        decision = tracing::field::Empty,
    );
    let caller = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
    // Without traces on there is no trace to join: nothing to do.
    let _ = span.set_parent(caller);
    let mut response = next.run(request).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_REQUEST_ID, value);
    }
    response
}

/// Records how long a request to a route took, by the route's pattern
/// (`/admin/trace/{jti}`): a fixed set, whatever paths clients send.
pub(super) async fn duration(State(broker): State<Arc<Broker>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    // A route layer: only requests that matched a route come here.
    let endpoint = request.extensions().get::<MatchedPath>().map_or("", MatchedPath::as_str).to_owned();
    let response = next.run(request).await;
    broker.metrics().observe_request(&endpoint, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

/// The client's id when it is 1 to 64 characters of letters, digits and
/// `-_.:`; else a new one, 128 random bits.
fn id_of(headers: &HeaderMap) -> String {
    let plain = |id: &&str| {
        (1..=64).contains(&id.len()) && id.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"-_.:".contains(&byte))
    };
    if let Some(id) = headers.get(X_REQUEST_ID).and_then(|value| value.to_str().ok()).filter(plain) {
        return id.to_owned();
    }
    // Without randomness the request has no id of its own; it goes on.
    crate::ids::random_text::<16>().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(id: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(X_REQUEST_ID, HeaderValue::from_str(id).unwrap());
        headers
    }

    #[test]
    fn a_plain_id_is_kept_and_any_other_replaced() {
        assert_eq!(id_of(&with("req-42:a.b_c")), "req-42:a.b_c");
        for odd in ["has space", "quote\"", &"x".repeat(65), "a/b", "tab\tin", ""] {
            let id = id_of(&with(odd));
            assert_ne!(id, odd);
            assert_eq!(id.len(), 22);
        }
        assert_ne!(id_of(&HeaderMap::new()), id_of(&HeaderMap::new()));
    }
}
