//! The tower layer that puts the verifier in front of an axum router, and
//! the extractor that hands the [`Caller`] to handlers. Refusals follow
//! RFC 6750 §3: 401 with `WWW-Authenticate: Bearer`, `error="invalid_token"`
//! for a bad token, 403 `error="insufficient_scope"` for a missing scope;
//! and RFC 9449 §7 for DPoP: the `DPoP` scheme with one `DPoP` proof, and
//! a `DPoP` challenge naming `invalid_dpop_proof` when the proof fails;
//! RFC 9728 §5.1: each `Bearer` challenge names the API's metadata, when it
//! publishes one.

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

use super::{Caller, Presented, Rejection, Verifier};
use crate::dpop::ProofError;

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
            let outcome = match credentials(&request) {
                Some(Credentials { scheme: Scheme::Bearer, token }) => {
                    verifier.verify_presented(Presented::Bearer(&token)).await
                }
                Some(Credentials { scheme: Scheme::Dpop, token }) => match proof(&request) {
                    Ok(proof) => {
                        let method = request.method().as_str();
                        // As this service sees it: behind a `nest`, the
                        // public URL must include the nest's prefix.
                        let path = request.uri().path();
                        verifier.verify_presented(Presented::Dpop { token: &token, proof: &proof, method, path }).await
                    }
                    Err(rejection) => Err(rejection),
                },
                None => Err(Rejection::Missing),
            };
            match outcome {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(rejection) => Ok(verifier.refusal(&rejection)),
            }
        })
    }
}

enum Scheme {
    Bearer,
    Dpop,
}

struct Credentials {
    scheme: Scheme,
    token: String,
}

/// The one `Authorization` header's token, under `Bearer` (RFC 6750 §2.1)
/// or `DPoP` (RFC 9449 §7.1).
fn credentials(request: &Request<Body>) -> Option<Credentials> {
    let mut values = request.headers().get_all(header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let text = value.to_str().ok()?;
    let (scheme, token) = text.split_once(' ')?;
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Scheme::Dpop
    } else {
        return None;
    };
    let token = token.trim();
    (!token.is_empty()).then(|| Credentials { scheme, token: token.to_owned() })
}

/// The request's one `DPoP` header (RFC 9449 §4.3 step 1).
fn proof(request: &Request<Body>) -> Result<String, Rejection> {
    let mut values = request.headers().get_all("dpop").iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        let several = request.headers().get_all("dpop").iter().count() > 1;
        return Err(Rejection::Proof(if several { ProofError::Several } else { ProofError::Required }));
    };
    value.to_str().map(str::to_owned).map_err(|_| Rejection::Proof(ProofError::Malformed))
}

impl Verifier {
    /// The answer to a refused request (RFC 6750 §3, RFC 9449 §7.1), for
    /// the layer's own refusals and for a handler's, such as a scope that
    /// only one operation asks ([`Caller::require`]). Every `Bearer`
    /// challenge names the API's metadata when it publishes one (RFC 9728
    /// §5.1), and a 401 names the scopes to ask for first, so that a client
    /// without a token learns where to get one and how little to ask.
    pub fn refusal(&self, rejection: &Rejection) -> Response {
        let (status, challenge, error) = self.challenge(rejection);
        let mut response = (status, Json(serde_json::json!({ "error": error }))).into_response();
        // A realm or URL that cannot be a header value still leaves a challenge.
        let value = HeaderValue::from_str(&challenge).unwrap_or(HeaderValue::from_static("Bearer"));
        response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        response
    }

    fn challenge(&self, rejection: &Rejection) -> (StatusCode, String, &'static str) {
        let realm = self.realm().replace('"', "");
        let algs = crate::dpop::ALGORITHMS.map(crate::keys::Algorithm::name).join(" ");
        let metadata = self.metadata_url().map(|url| format!(", resource_metadata=\"{}\"", url.replace('"', "")));
        let metadata = metadata.as_deref().unwrap_or_default();
        let first_scopes = match self.required_scopes().is_empty() {
            true => String::new(),
            false => format!(", scope=\"{}\"", self.required_scopes()),
        };
        match rejection {
            // RFC 9449 §7.1: a failed proof is answered with a DPoP challenge.
            Rejection::Proof(_) => (
                StatusCode::UNAUTHORIZED,
                format!("DPoP realm=\"{realm}\", error=\"invalid_dpop_proof\", algs=\"{algs}\""),
                "invalid_dpop_proof",
            ),
            // Both schemes are named, so that the client learns which it must use.
            Rejection::WrongScheme => (
                StatusCode::UNAUTHORIZED,
                format!(
                    "Bearer realm=\"{realm}\", error=\"invalid_token\"{metadata}, DPoP realm=\"{realm}\", error=\"invalid_token\", algs=\"{algs}\""
                ),
                "invalid_token",
            ),
            // RFC 6750 §3.1: no error code when no credentials were sent.
            Rejection::Missing => (
                StatusCode::UNAUTHORIZED,
                format!("Bearer realm=\"{realm}\"{metadata}{first_scopes}"),
                "invalid_request",
            ),
            Rejection::Invalid(_) | Rejection::WrongAudience | Rejection::Revoked => (
                StatusCode::UNAUTHORIZED,
                format!("Bearer realm=\"{realm}\", error=\"invalid_token\"{metadata}{first_scopes}"),
                "invalid_token",
            ),
            Rejection::InsufficientScope { ask_for } => (
                StatusCode::FORBIDDEN,
                format!("Bearer realm=\"{realm}\", error=\"insufficient_scope\", scope=\"{ask_for}\"{metadata}"),
                "insufficient_scope",
            ),
            Rejection::Unavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, format!("Bearer realm=\"{realm}\""), "temporarily_unavailable")
            }
        }
    }
}

/// Handlers behind the layer take the caller as an argument.
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = StatusCode;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Absent only when a route is mounted outside the layer: a server bug.
        parts.extensions.get::<Caller>().cloned().ok_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}
