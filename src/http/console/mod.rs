//! The console for security teams (`/console`): pages rendered on the
//! server from what the admin API serves, through the same broker calls
//! (no second path to the store). On when the admin API is on.
//!
//! Signing in takes the admin credential and opens a session named by an
//! `HttpOnly`, `SameSite=Strict` cookie (`Secure` when the issuer is https)
//! that lasts [`session::SESSION_SECONDS`] at most. Every state change is a
//! POST carrying the session's CSRF token. Every response forbids scripts
//! and styles from anywhere but the console itself (a strict
//! Content-Security-Policy), and every asset is in the binary.

mod pages;
mod session;
mod tree;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Router};

use crate::broker::Broker;
use crate::claims::TokenId;
use crate::clock::UnixTime;
use crate::ids::AgentId;
use crate::store::approvals::{ApprovalQuery, Cursor};
use crate::store::{ApprovalId, AuditFilter, Principal};
use session::{Session, Sessions, COOKIE, SESSION_SECONDS};

/// Nothing but the console's own style sheet: no script, no image, no
/// fetch, no frame; forms posted only to the console.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const STYLE_SHEET: &str = include_str!("console.css");

/// The console's routes.
pub(super) fn router(broker: Arc<Broker>) -> Router<Arc<Broker>> {
    Router::new()
        .route("/console", get(home))
        .route("/console/sign-in", get(sign_in_form).post(sign_in))
        .route("/console/sign-out", axum::routing::post(sign_out))
        .route("/console/agents", get(agents))
        .route("/console/trace", get(trace).post(search))
        .route("/console/revoke", get(revoke_form).post(revoke))
        .route("/console/approvals", get(approvals).post(decide))
        .route("/console/approval", get(approval))
        .route("/console/deprovision", get(deprovision_form).post(deprovision))
        .route("/console/console.css", get(style_sheet))
        .route_layer(axum::middleware::from_fn(same_site_posts))
        .route_layer(axum::middleware::from_fn_with_state(broker, only_with_admin))
        .layer(Extension(Arc::new(Sessions::default())))
        .layer(axum::middleware::map_response(security_headers))
}

/// The console is off, and looks absent, while the admin API is.
async fn only_with_admin(State(broker): State<Arc<Broker>>, request: Request, next: Next) -> Response {
    if !broker.admin_enabled() {
        return page(StatusCode::NOT_FOUND, pages::message("Not found", "Nothing here."));
    }
    next.run(request).await
}

/// A POST another site's page made the browser send is refused before it is
/// read (`Sec-Fetch-Site`, sent by every current browser), whatever cookie
/// or token it carries.
async fn same_site_posts(request: Request, next: Next) -> Response {
    let cross_site = request
        .headers()
        .get("sec-fetch-site")
        .is_some_and(|site| !matches!(site.as_bytes(), b"same-origin" | b"none"));
    if request.method() == axum::http::Method::POST && cross_site {
        return page(
            StatusCode::FORBIDDEN,
            pages::message("Refused", "A request from another site: nothing was done."),
        );
    }
    next.run(request).await
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// The session the request's cookie names, if it is live.
fn session(broker: &Broker, sessions: &Sessions, headers: &HeaderMap) -> Option<(String, Session)> {
    let id = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('=').map(str::to_owned))?;
    let session = sessions.find(&id, broker.context().now())?;
    Some((id, session))
}

/// The value of `name` in a form body, when it is there once.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    let mut values = form_urlencoded::parse(body).filter(|(key, _)| key == name).map(|(_, value)| value.into_owned());
    match (values.next(), values.next()) {
        (Some(value), None) => Some(value),
        _ => None,
    }
}

fn page(status: StatusCode, markup: maud::Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

async fn home(
    State(broker): State<Arc<Broker>>,
    Extension(sessions): Extension<Arc<Sessions>>,
    headers: HeaderMap,
) -> Redirect {
    match session(&broker, &sessions, &headers) {
        Some(_) => Redirect::to("/console/agents"),
        None => Redirect::to("/console/sign-in"),
    }
}

async fn sign_in_form() -> Response {
    page(StatusCode::OK, pages::sign_in(false))
}

async fn sign_in(
    State(broker): State<Arc<Broker>>,
    Extension(sessions): Extension<Arc<Sessions>>,
    body: Bytes,
) -> Response {
    let presented = form_field(&body, "admin_token");
    if !presented.is_some_and(|token| broker.is_admin(&token)) {
        return page(StatusCode::UNAUTHORIZED, pages::sign_in(true));
    }
    let Some((id, _)) = sessions.open(broker.context().now()) else {
        return page(StatusCode::SERVICE_UNAVAILABLE, pages::message("Unavailable", "No session could be opened."));
    };
    let secure = if broker.settings().issuer.starts_with("https://") { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECONDS}{secure}");
    let mut response = Redirect::to("/console/agents").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn sign_out(
    State(broker): State<Arc<Broker>>,
    Extension(sessions): Extension<Arc<Sessions>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((id, session)) = session(&broker, &sessions, &headers) else {
        return page(StatusCode::FORBIDDEN, pages::message("Refused", "You are not signed in: nothing was done."));
    };
    if !form_field(&body, "csrf").is_some_and(|csrf| session.allows(&csrf)) {
        return page(StatusCode::FORBIDDEN, pages::message("Refused", "That form is stale: nothing was done."));
    }
    sessions.close(&id);
    let mut response = Redirect::to("/console/sign-in").into_response();
    let cleared = format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(value) = HeaderValue::from_str(&cleared) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn agents(
    State(broker): State<Arc<Broker>>,
    Extension(sessions): Extension<Arc<Sessions>>,
    headers: HeaderMap,
) -> Response {
    let Some((_, session)) = session(&broker, &sessions, &headers) else {
        return Redirect::to("/console/sign-in").into_response();
    };
    match broker.agent_reports().await {
        Ok(reports) => page(StatusCode::OK, pages::agents(&reports, &session.csrf)),
        // The store cannot be read: say so, and show nothing stale.
        Err(_) => {
            page(StatusCode::SERVICE_UNAVAILABLE, pages::message("Unavailable", "The state store cannot be read."))
        }
    }
}

/// The token a search names: a token id, or a token pasted whole, whose id
/// is read without checking it (it is only looked up).
fn searched_jti(query: &str) -> Option<TokenId> {
    let query = query.trim();
    if query.is_empty() || query.len() > 16 * 1024 {
        return None;
    }
    if query.matches('.').count() == 2 {
        return crate::token::insecure_peek(query).ok().map(|peeked| peeked.claims.jti);
    }
    Some(TokenId(query.to_owned()))
}

/// The `name` parameter of a query string.
fn query_field(query: Option<&str>, name: &str) -> String {
    form_field(query.unwrap_or_default().as_bytes(), name).unwrap_or_default()
}

async fn trace(
    State(broker): State<Arc<Broker>>,
    Extension(sessions): Extension<Arc<Sessions>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let Some((_, session)) = session(&broker, &sessions, &headers) else {
        return Redirect::to("/console/sign-in").into_response();
    };
    let query = query_field(uri.query(), "q");
    let Some(jti) = searched_jti(&query) else {
        return page(StatusCode::OK, pages::trace(&query, None, &session.csrf));
    };
    let found = match broker.trace(&jti).await {
        Ok(found) => found,
        Err(_) => {
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                pages::message("Unavailable", "The state store cannot be read."),
            )
        }
    };
    let Some(trace) = found else {
        return page(StatusCode::NOT_FOUND, pages::trace(&query, None, &session.csrf));
    };
    let filter = AuditFilter { jti: Some(jti), limit: Some(50), ..AuditFilter::default() };
    // An audit trail that cannot be read is said so, not shown empty.
    let events = broker.audit_events(&filter).await.ok();
    page(StatusCode::OK, pages::trace(&query, Some((&trace, events.as_deref())), &session.csrf))
}

/// A search posted from the trace page: the token is read here and the
/// answer is the page of its id, so that no token lands in a URL.
async fn search(
    State(broker): State<Arc<Broker>>,
    Extension(sessions): Extension<Arc<Sessions>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((_, session)) = session(&broker, &sessions, &headers) else {
        return page(StatusCode::FORBIDDEN, pages::message("Refused", "You are not signed in."));
    };
    if !form_field(&body, "csrf").is_some_and(|csrf| session.allows(&csrf)) {
        return page(StatusCode::FORBIDDEN, pages::message("Refused", "That form is stale."));
    }
    match form_field(&body, "q").as_deref().and_then(searched_jti) {
        Some(jti) => Redirect::to(&format!("/console/trace?q={}", pages::url_encoded(&jti.0))).into_response(),
        None => page(StatusCode::NOT_FOUND, pages::trace("", None, &session.csrf)),
    }
}

async fn revoke_form(
    State(broker): State<Arc<Broker>>,
    Extension(sessions): Extension<Arc<Sessions>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let Some((_, session)) = session(&broker, &sessions, &headers) else {
        return Redirect::to("/console/sign-in").into_response();
    };
    let jti = TokenId(query_field(uri.query(), "jti"));
    match broker.trace(&jti).await {
        Ok(Some(trace)) => page(StatusCode::OK, pages::revoke(&trace, &session.csrf)),
        Ok(None) => page(StatusCode::NOT_FOUND, pages::message("Not found", "No token with that id is known.")),
        Err(_) => {
            page(StatusCode::SERVICE_UNAVAILABLE, pages::message("Unavailable", "The state store cannot be read."))
        }
    }
}

async fn revoke(
    State(broker): State<Arc<Broker>>,
    Extension(sessions): Extension<Arc<Sessions>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((_, session)) = session(&broker, &sessions, &headers) else {
        return page(StatusCode::FORBIDDEN, pages::message("Refused", "You are not signed in: nothing was done."));
    };
    if !form_field(&body, "csrf").is_some_and(|csrf| session.allows(&csrf)) {
        return page(StatusCode::FORBIDDEN, pages::message("Refused", "That form is stale: nothing was done."));
    }
    let Some(jti) = form_field(&body, "jti").map(TokenId) else {
        return page(StatusCode::BAD_REQUEST, pages::message("Refused", "No token was named: nothing was done."));
    };
    match broker.revoke_jti(&jti).await {
        Ok(_) => Redirect::to(&format!("/console/trace?q={}", pages::url_encoded(&jti.0))).into_response(),
        Err(_) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::message("Unavailable", "The revocation could not be recorded."),
        ),
    }
}

async fn deprovision_form(
    State(broker): State<Arc<Broker>>,
    Extension(sessions): Extension<Arc<Sessions>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let Some((_, session)) = session(&broker, &sessions, &headers) else {
        return Redirect::to("/console/sign-in").into_response();
    };
    let agent = query_field(uri.query(), "agent");
    let jti = TokenId(query_field(uri.query(), "jti"));
    match broker.trace(&jti).await {
        Ok(Some(trace)) if !agent.is_empty() => page(StatusCode::OK, pages::deprovision(&trace, &agent, &session.csrf)),
        Ok(_) => page(StatusCode::NOT_FOUND, pages::message("Not found", "No token with that id is known.")),
        Err(_) => {
            page(StatusCode::SERVICE_UNAVAILABLE, pages::message("Unavailable", "The state store cannot be read."))
        }
    }
}

async fn deprovision(
    State(broker): State<Arc<Broker>>,
    Extension(sessions): Extension<Arc<Sessions>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((_, session)) = session(&broker, &sessions, &headers) else {
        return page(StatusCode::FORBIDDEN, pages::message("Refused", "You are not signed in: nothing was done."));
    };
    if !form_field(&body, "csrf").is_some_and(|csrf| session.allows(&csrf)) {
        return page(StatusCode::FORBIDDEN, pages::message("Refused", "That form is stale: nothing was done."));
    }
    let agent = form_field(&body, "agent").filter(|agent| (1..=256).contains(&agent.len()));
    let (Some(agent), Some(jti)) = (agent, form_field(&body, "jti")) else {
        return page(StatusCode::BAD_REQUEST, pages::message("Refused", "No agent was named: nothing was done."));
    };
    match broker.deprovision(&Principal::Agent(AgentId::new(agent))).await {
        Ok(()) => Redirect::to(&format!("/console/trace?q={}", pages::url_encoded(&jti))).into_response(),
        Err(_) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::message("Unavailable", "The deprovisioning could not be recorded."),
        ),
    }
}

async fn approvals(
    State(broker): State<Arc<Broker>>,
    Extension(sessions): Extension<Arc<Sessions>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let Some((_, session)) = session(&broker, &sessions, &headers) else {
        return Redirect::to("/console/sign-in").into_response();
    };
    // The broker sets the query's time; older pages start `before` a cursor.
    let mut query = ApprovalQuery::pending(UnixTime(0));
    query.before = Cursor::parse(&query_field(uri.query(), "before"));
    match broker.list_approvals(query).await {
        Ok(listed) => {
            let older = listed.next.map(|next| next.to_string());
            page(StatusCode::OK, pages::approvals(&listed.approvals, older.as_deref(), &session.csrf))
        }
        Err(_) => {
            page(StatusCode::SERVICE_UNAVAILABLE, pages::message("Unavailable", "The state store cannot be read."))
        }
    }
}

async fn approval(
    State(broker): State<Arc<Broker>>,
    Extension(sessions): Extension<Arc<Sessions>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let Some((_, session)) = session(&broker, &sessions, &headers) else {
        return Redirect::to("/console/sign-in").into_response();
    };
    let id = query_field(uri.query(), "id");
    let mut query = ApprovalQuery::pending(UnixTime(0));
    query.limit = crate::store::approvals::MAX_PAGE;
    match broker.list_approvals(query).await {
        Ok(listed) => match listed.approvals.iter().find(|approval| approval.id.0 == id) {
            Some(approval) => page(StatusCode::OK, pages::approval(approval, &session.csrf)),
            None => page(StatusCode::NOT_FOUND, pages::message("Not waiting", "No such request waits for a person.")),
        },
        Err(_) => {
            page(StatusCode::SERVICE_UNAVAILABLE, pages::message("Unavailable", "The state store cannot be read."))
        }
    }
}

async fn decide(
    State(broker): State<Arc<Broker>>,
    Extension(sessions): Extension<Arc<Sessions>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((_, session)) = session(&broker, &sessions, &headers) else {
        return page(StatusCode::FORBIDDEN, pages::message("Refused", "You are not signed in: nothing was done."));
    };
    if !form_field(&body, "csrf").is_some_and(|csrf| session.allows(&csrf)) {
        return page(StatusCode::FORBIDDEN, pages::message("Refused", "That form is stale: nothing was done."));
    }
    let fields = (form_field(&body, "id"), form_field(&body, "approver"), form_field(&body, "verdict"));
    let (Some(id), Some(approver), Some(verdict)) = fields else {
        return page(
            StatusCode::BAD_REQUEST,
            pages::message("Refused", "The decision was incomplete: nothing was done."),
        );
    };
    let approve = match verdict.as_str() {
        "approve" => true,
        "deny" => false,
        _ => return page(StatusCode::BAD_REQUEST, pages::message("Refused", "No such decision: nothing was done.")),
    };
    match broker.decide_approval(&ApprovalId(id), approver.trim(), approve).await {
        Ok(_) => Redirect::to("/console/approvals").into_response(),
        // Decided already, expired, or not this approver's: the queue shows what stands.
        Err(_) => page(
            StatusCode::CONFLICT,
            pages::message("Not decided", "It was decided already, has expired, or the store cannot be read."),
        ),
    }
}

async fn style_sheet() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE_SHEET)
}
