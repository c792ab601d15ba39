//! Scopes per MCP tool. An MCP server takes every call at one URL, so the
//! scope a call needs is in its body: a JSON-RPC `tools/call` names the
//! tool. This layer reads that name before the MCP service runs the tool and
//! refuses a token without the tool's scopes with the MCP scope challenge
//! (HTTP 403, `insufficient_scope`, the scopes to ask for, the metadata
//! URL), so that a client steps up and tries again.
//!
//! It sits inside [`super::VerifierLayer`], which has already checked the
//! token and the scopes every request needs. Every tool the server offers is
//! listed, with the scopes it needs beyond those (none, for some): a call of
//! a tool not listed is refused, so that a tool added to the server and
//! forgotten here is closed, not open to every token.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{to_bytes, Body};
use axum::http::{Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use tower::{Layer, Service};

use super::{Caller, Verifier};
use crate::claims::ScopeSet;

/// The largest request body read to find the tool: MCP calls are small,
/// and a body this layer cannot read whole is refused, not passed on unread.
pub const MAX_CALL_BYTES: usize = 1024 * 1024;

/// Refuses a `tools/call` whose token lacks the tool's scopes.
#[derive(Clone)]
pub struct ToolScopesLayer {
    verifier: Arc<Verifier>,
    tools: Arc<HashMap<String, ScopeSet>>,
}

impl ToolScopesLayer {
    /// No tool may be called until [`ToolScopesLayer::tool`] lists it. The
    /// verifier answers the refusals, so that they name its metadata.
    pub fn new(verifier: Arc<Verifier>) -> Self {
        ToolScopesLayer { verifier, tools: Arc::new(HashMap::new()) }
    }

    /// The scopes a call of the tool `name` needs beyond those every request
    /// needs; an empty set opens it to every token the verifier accepts.
    pub fn tool(mut self, name: impl Into<String>, scopes: ScopeSet) -> Self {
        Arc::make_mut(&mut self.tools).insert(name.into(), scopes);
        self
    }

    /// The scopes the calls in a JSON-RPC body need together.
    fn needed(&self, body: &[u8]) -> Result<ScopeSet, Unacceptable> {
        let mut needed = ScopeSet::default();
        for message in messages(body).map_err(|Malformed| Unacceptable::Malformed)? {
            if message.method.as_deref() == Some("tools/call") {
                let name = message.params.and_then(|params| params.name).ok_or(Unacceptable::Malformed)?;
                let scopes = self.tools.get(&name).ok_or(Unacceptable::Unlisted(name))?;
                needed = needed.union(scopes);
            }
        }
        Ok(needed)
    }
}

/// Why a body is refused before any tool runs.
enum Unacceptable {
    /// It cannot be read as MCP messages, or could be read two ways.
    Malformed,
    /// It calls a tool this layer does not list.
    Unlisted(String),
}

/// A body that is not JSON-RPC messages as this layer reads them.
struct Malformed;

/// A JSON-RPC body: one message (an object) or a batch (an array of them).
/// The shape is checked first, because derived types also read an array as
/// a struct's fields in order; then the fields are read with derived types,
/// which refuse a repeated key, so that the tool checked here is the tool
/// the server runs.
fn messages(body: &[u8]) -> Result<Vec<Message>, Malformed> {
    match serde_json::from_slice::<serde_json::Value>(body).map_err(|_| Malformed)? {
        serde_json::Value::Object(_) => Ok(vec![serde_json::from_slice(body).map_err(|_| Malformed)?]),
        serde_json::Value::Array(items) if items.iter().all(serde_json::Value::is_object) => {
            serde_json::from_slice(body).map_err(|_| Malformed)
        }
        _ => Err(Malformed),
    }
}

#[derive(Deserialize)]
struct Message {
    method: Option<String>,
    params: Option<Params>,
}

#[derive(Deserialize)]
struct Params {
    name: Option<String>,
}

impl<S> Layer<S> for ToolScopesLayer {
    type Service = ToolScopesService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ToolScopesService { scopes: self.clone(), inner }
    }
}

/// The service [`ToolScopesLayer`] makes.
#[derive(Clone)]
pub struct ToolScopesService<S> {
    scopes: ToolScopesLayer,
    inner: S,
}

impl<S> Service<Request<Body>> for ToolScopesService<S>
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

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let scopes = self.scopes.clone();
        // The clone that was polled ready serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            // Only a POST carries calls; GET opens the server's stream.
            if request.method() != Method::POST {
                return inner.call(request).await;
            }
            let (parts, body) = request.into_parts();
            let Ok(bytes) = to_bytes(body, MAX_CALL_BYTES).await else {
                return Ok(refused(StatusCode::PAYLOAD_TOO_LARGE));
            };
            let Some(caller) = parts.extensions.get::<Caller>() else {
                // Mounted outside the verifier's layer: a server bug.
                return Ok(refused(StatusCode::INTERNAL_SERVER_ERROR));
            };
            let needed = match scopes.needed(&bytes) {
                Ok(needed) => needed,
                Err(Unacceptable::Malformed) => return Ok(refused(StatusCode::BAD_REQUEST)),
                Err(Unacceptable::Unlisted(name)) => {
                    // Told to the server's operator, who may have forgotten to list it.
                    // A client's text: cut short, and logged quoted.
                    let tool: String = name.chars().take(64).collect();
                    tracing::warn!(tool = ?tool, "a call of a tool not listed for its scopes was refused");
                    return Ok(refused(StatusCode::BAD_REQUEST));
                }
            };
            if let Err(rejection) = caller.require(&needed) {
                return Ok(scopes.verifier.refusal(&rejection));
            }
            inner.call(Request::from_parts(parts, Body::from(bytes))).await
        })
    }
}

fn refused(status: StatusCode) -> Response {
    (status, Json(serde_json::json!({ "error": "invalid_request" }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verifier::danger;

    fn layer() -> ToolScopesLayer {
        let verifier = danger::without_revocation_check(Verifier::builder("http://issuer.example"))
            .audience("http://127.0.0.1:9091/mcp")
            .build()
            .unwrap();
        ToolScopesLayer::new(Arc::new(verifier))
            .tool("search_flights", ScopeSet::default())
            .tool("book_flight", ScopeSet::parse("flights.book").unwrap())
    }

    fn needed(body: &str) -> Option<String> {
        layer().needed(body.as_bytes()).ok().map(|scopes| scopes.to_string())
    }

    fn unlisted(body: &str) -> Option<String> {
        match layer().needed(body.as_bytes()) {
            Err(Unacceptable::Unlisted(name)) => Some(name),
            _ => None,
        }
    }

    #[test]
    fn a_call_needs_its_tools_scopes_and_other_messages_need_none() {
        let book = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"book_flight","arguments":{}}}"#;
        assert_eq!(needed(book).as_deref(), Some("flights.book"));
        let search = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search_flights"}}"#;
        assert_eq!(needed(search).as_deref(), Some(""));
        let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        assert_eq!(needed(list).as_deref(), Some(""));
        let answer = r#"{"jsonrpc":"2.0","id":7,"result":{}}"#;
        assert_eq!(needed(answer).as_deref(), Some(""));
        assert_eq!(needed(&format!("[{search},{book}]")).as_deref(), Some("flights.book"));
    }

    #[test]
    fn a_body_read_two_ways_or_naming_no_tool_is_refused() {
        // serde_json would keep the last key; the server might read another.
        let twice = r#"{"method":"tools/call","params":{"name":"search_flights","name":"book_flight"}}"#;
        assert_eq!(needed(twice), None);
        let method_twice = r#"{"method":"tools/list","method":"tools/call","params":{"name":"book_flight"}}"#;
        assert_eq!(needed(method_twice), None);
        assert_eq!(needed(r#"{"method":"tools/call","params":{}}"#), None);
        assert_eq!(needed(r#"{"method":"tools/call","params":{"name":7}}"#), None);
        assert_eq!(needed("not json"), None);
        // Read as a struct's fields in order, these would name no method.
        let book = r#"{"method":"tools/call","params":{"name":"book_flight"}}"#;
        assert_eq!(needed(&format!("[null,{book}]")), None);
        assert_eq!(needed(&format!("[\"tools/call\",{book}]")), None);
        assert_eq!(needed("[]").as_deref(), Some(""));
    }

    #[test]
    fn a_tool_not_listed_is_closed() {
        let cancel = r#"{"method":"tools/call","params":{"name":"cancel_flight"}}"#;
        assert_eq!(unlisted(cancel).as_deref(), Some("cancel_flight"));
    }
}
