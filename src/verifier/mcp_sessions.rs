//! MCP sessions kept to the caller that opened them. Every request to an MCP
//! server behind the verifier is authorized by its own token, but the
//! streamable HTTP transport also names a session (`Mcp-Session-Id`), and
//! whoever names it can read the session's stream, cancel its calls or end
//! it. This layer records who opened each session (the subject and the
//! agent of the token that initialized it, which a stepped-up token of the
//! same chain shares) and answers any other caller as if the session did not
//! exist: 404, which tells an MCP client to start a session of its own.
//!
//! The record is bounded: past [`DEFAULT_CAPACITY`] sessions the oldest is
//! forgotten, and a session this layer does not know is refused, never
//! served unowned. It sits inside [`super::VerifierLayer`].

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tower::{Layer, Service};

use super::Caller;

/// The transport's session header (MCP, streamable HTTP transport).
const SESSION_HEADER: &str = "mcp-session-id";

/// How many sessions are remembered by default.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// Whose authority, in whose hands.
type Owner = (String, String);

fn owner(caller: &Caller) -> Owner {
    (caller.subject().to_string(), caller.agent().to_string())
}

/// The sessions opened through the layer, oldest first.
struct Sessions {
    owners: HashMap<String, Owner>,
    /// Ids in the order they were opened; may hold ids already ended, which
    /// are skipped when the oldest is forgotten.
    opened: VecDeque<String>,
    capacity: usize,
}

impl Sessions {
    fn owner(&self, id: &str) -> Option<&Owner> {
        self.owners.get(id)
    }

    fn open(&mut self, id: String, owner: Owner) {
        while self.owners.len() >= self.capacity {
            let Some(oldest) = self.opened.pop_front() else { break };
            self.owners.remove(&oldest);
        }
        if self.opened.len() >= 2 * self.capacity {
            let owners = &self.owners;
            self.opened.retain(|id| owners.contains_key(id));
        }
        self.owners.insert(id.clone(), owner);
        self.opened.push_back(id);
    }

    fn end(&mut self, id: &str) {
        self.owners.remove(id);
    }
}

/// Keeps each MCP session to the caller that opened it.
#[derive(Clone)]
pub struct McpSessionsLayer {
    sessions: Arc<Mutex<Sessions>>,
}

impl Default for McpSessionsLayer {
    fn default() -> Self {
        McpSessionsLayer::with_capacity(DEFAULT_CAPACITY)
    }
}

impl McpSessionsLayer {
    /// A layer remembering at most `capacity` sessions (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        let sessions = Sessions { owners: HashMap::new(), opened: VecDeque::new(), capacity: capacity.max(1) };
        McpSessionsLayer { sessions: Arc::new(Mutex::new(sessions)) }
    }

    fn with<T>(&self, work: impl FnOnce(&mut Sessions) -> T) -> T {
        // A panic elsewhere while holding the lock leaves a consistent map.
        work(&mut self.sessions.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl<S> Layer<S> for McpSessionsLayer {
    type Service = McpSessionsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        McpSessionsService { sessions: self.clone(), inner }
    }
}

/// The service [`McpSessionsLayer`] makes.
#[derive(Clone)]
pub struct McpSessionsService<S> {
    sessions: McpSessionsLayer,
    inner: S,
}

/// The request's one session id; `Err` when it names several or an unreadable one.
fn session_id(headers: &HeaderMap) -> Result<Option<String>, ()> {
    let mut values = headers.get_all(SESSION_HEADER).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(value), None) => value.to_str().map(|id| Some(id.to_owned())).map_err(|_| ()),
        (Some(_), Some(_)) => Err(()),
    }
}

impl<S> Service<Request<Body>> for McpSessionsService<S>
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
        let sessions = self.sessions.clone();
        // The clone that was polled ready serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let Some(caller) = request.extensions().get::<Caller>().map(owner) else {
                // Mounted outside the verifier's layer: a server bug.
                return Ok(refused(StatusCode::INTERNAL_SERVER_ERROR, "server_error"));
            };
            let Ok(named) = session_id(request.headers()) else {
                return Ok(refused(StatusCode::BAD_REQUEST, "invalid_request"));
            };
            let ending = request.method() == Method::DELETE;
            let Some(id) = named else {
                // No session yet: the answer to an initialize opens one.
                let response = inner.call(request).await?;
                if let Ok(Some(id)) = session_id(response.headers()) {
                    sessions.with(|sessions| sessions.open(id, caller));
                }
                return Ok(response);
            };
            // Another caller's session, or one not (or no longer) known here,
            // is answered alike: the session does not exist for this caller.
            if sessions.with(|sessions| sessions.owner(&id) != Some(&caller)) {
                return Ok(refused(StatusCode::NOT_FOUND, "not_found"));
            }
            let response = inner.call(request).await?;
            let ended = ending && response.status().is_success();
            if ended || response.status() == StatusCode::NOT_FOUND {
                sessions.with(|sessions| sessions.end(&id));
            }
            Ok(response)
        })
    }
}

fn refused(status: StatusCode, error: &'static str) -> Response {
    (status, Json(serde_json::json!({ "error": error }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(name: &str) -> Owner {
        ("person".to_owned(), name.to_owned())
    }

    #[test]
    fn past_its_capacity_the_oldest_session_is_forgotten() {
        let layer = McpSessionsLayer::with_capacity(2);
        layer.with(|sessions| {
            sessions.open("a".into(), owner("booker"));
            sessions.open("b".into(), owner("scout"));
            sessions.end("b");
            sessions.open("c".into(), owner("booker"));
            sessions.open("d".into(), owner("booker"));
            assert_eq!(sessions.owner("a"), None);
            assert_eq!(sessions.owner("c"), Some(&owner("booker")));
            assert_eq!(sessions.owner("d"), Some(&owner("booker")));
            assert!(sessions.owners.len() <= 2);
        });
    }

    #[test]
    fn the_record_of_opened_sessions_stays_bounded_as_sessions_end() {
        let layer = McpSessionsLayer::with_capacity(3);
        layer.with(|sessions| {
            for round in 0..100 {
                let id = format!("s{round}");
                sessions.open(id.clone(), owner("booker"));
                sessions.end(&id);
            }
            assert!(sessions.opened.len() <= 6, "{}", sessions.opened.len());
        });
    }

    #[test]
    fn one_session_id_is_read_and_several_are_refused() {
        let mut headers = HeaderMap::new();
        assert_eq!(session_id(&headers), Ok(None));
        headers.append(SESSION_HEADER, "abc".parse().unwrap());
        assert_eq!(session_id(&headers), Ok(Some("abc".to_owned())));
        headers.append(SESSION_HEADER, "def".parse().unwrap());
        assert_eq!(session_id(&headers), Err(()));
    }
}
