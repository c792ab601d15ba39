//! The tower layer that puts the verifier in front of an axum router, and
//! the extractor that hands the [`Caller`] to handlers. Refusals follow
//! RFC 6750 §3: 401 with `WWW-Authenticate: Bearer`, `error="invalid_token"`
//! for a bad token, 403 `error="insufficient_scope"` for a missing scope.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tower::{Layer, Service};

use super::{Caller, Rejection, Verifier};

/// Verifies every request's bearer token before the inner service sees it.
#[derive(Clone)]
pub struct VerifierLayer {
    verifier: Arc<Verifier>,
}

impl VerifierLayer {
    /// A layer for `verifier`.
    pub fn new(verifier: Arc<Verifier>) -> Self {
        VerifierLayer { verifier }
    }
}

impl<S> Layer<S> for VerifierLayer {
    type Service = VerifierService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        VerifierService { verifier: self.verifier.clone(), inner }
    }
}

/// The service [`VerifierLayer`] makes.
#[derive(Clone)]
pub struct VerifierService<S> {
    verifier: Arc<Verifier>,
    inner: S,
}

impl<S> Service<Request<Body>> for VerifierService<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let verifier = self.verifier.clone();
        // The clone that was polled ready serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let outcome = match bearer(&request) {
                Some(token) => verifier.verify(&token).await,
                None => Err(Rejection::Missing),
            };
            match outcome {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(rejection) => Ok(refusal(&verifier, &rejection)),
            }
        })
    }
}

/// The one `Authorization: Bearer` token (RFC 6750 §2.1).
fn bearer(request: &Request<Body>) -> Option<String> {
    let mut values = request.headers().get_all(header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let text = value.to_str().ok()?;
    let (scheme, token) = text.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned()).filter(|token| !token.is_empty())
}

fn refusal(verifier: &Verifier, rejection: &Rejection) -> Response {
    let realm = verifier.realm().replace('"', "");
    let (status, challenge, error) = match rejection {
        // RFC 6750 §3.1: no error code when no credentials were sent.
        Rejection::Missing => (StatusCode::UNAUTHORIZED, format!("Bearer realm=\"{realm}\""), "invalid_request"),
        Rejection::Invalid(_) | Rejection::WrongAudience | Rejection::Revoked => {
            (StatusCode::UNAUTHORIZED, format!("Bearer realm=\"{realm}\", error=\"invalid_token\""), "invalid_token")
        }
        Rejection::InsufficientScope => (
            StatusCode::FORBIDDEN,
            format!("Bearer realm=\"{realm}\", error=\"insufficient_scope\", scope=\"{}\"", verifier.required_scopes()),
            "insufficient_scope",
        ),
        Rejection::Unavailable(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("Bearer realm=\"{realm}\""), "temporarily_unavailable")
        }
    };
    let mut response = (status, Json(serde_json::json!({ "error": error }))).into_response();
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// Handlers behind the layer take the caller as an argument.
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = StatusCode;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Absent only when a route is mounted outside the layer: a server bug.
        parts.extensions.get::<Caller>().cloned().ok_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}
