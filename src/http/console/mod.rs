//! The console for security teams (`/console`): pages rendered on the
//! server from what the admin API serves, through the same broker calls
//! (no second path to the store). On when the admin API is on.
//!
//! Signing in takes the admin credential, or a listed member's sign-in at
//! the configured identity provider ([`provider`]), and opens a session
//! named by an `HttpOnly`, `SameSite=Strict` cookie (`Secure` when the
//! issuer is https) that lasts [`session::SESSION_SECONDS`] at most, kept by
//! the state store ([`session`]). Every state change is a
//! POST carrying the session's CSRF token ([`extract::Posted`]), and a POST
//! another site made the browser send is refused unread. Every response
//! forbids everything but the console's own style sheet (a strict
//! Content-Security-Policy): no page runs a script, and every asset is in
//! the binary.

mod extract;
mod link;
mod pages;
mod provider;
mod session;
mod tree;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::admin::TokenQuery;
use crate::broker::Broker;
use crate::claims::TokenId;
use crate::clock::UnixTime;
use crate::error::EndpointError;
use crate::ids::AgentId;
use crate::policy::explain::{ExplainError, Question};
use crate::store::approvals::{ApprovalQuery, Cursor};
use crate::store::{ApprovalId, AuditFilter, Principal};
use extract::{field, Posted, SignedIn};
use pages::{page, unavailable, Seen};
use session::{Admission, COOKIE, SESSION_SECONDS};

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
        .route("/console/sign-in/provider", get(provider::start))
        .route("/console/callback", get(provider::callback))
        .route("/console/sign-out", post(sign_out))
        .route("/console/agents", get(agents))
        .route("/console/trace", get(trace).post(search))
        .route("/console/tokens", get(tokens))
        .route("/console/revoke", get(revoke_form).post(revoke))
        .route("/console/deprovision", get(deprovision_form).post(deprovision))
        .route("/console/approvals", get(approvals).post(decide))
        .route("/console/approval", get(approval))
        .route("/console/audit", get(audit))
        .route("/console/explain", get(explain))
        .route("/console/console.css", get(style_sheet))
        .route_layer(axum::middleware::from_fn(same_site_posts))
        .route_layer(axum::middleware::from_fn_with_state(broker, only_with_admin))
        .layer(axum::middleware::map_response(security_headers))
}

/// The console is off, and looks absent, while the admin API is.
async fn only_with_admin(State(broker): State<Arc<Broker>>, request: Request, next: Next) -> Response {
    if !broker.admin_enabled() {
        // As an unknown route is answered, so that a scan learns nothing.
        return super::error::not_found().await.into_response();
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
    if request.method() == Method::POST && cross_site {
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

/// The `name` parameter of a query string.
fn query_field(uri: &Uri, name: &str) -> String {
    field(uri.query().unwrap_or_default().as_bytes(), name).unwrap_or_default()
}

fn refused(status: StatusCode, text: &str) -> Response {
    page(status, pages::message("Refused", text))
}

/// A redirect to the trace page of `jti`.
fn to_trace(jti: &str) -> Response {
    Redirect::to(&link::trace(jti)).into_response()
}

async fn home(signed_in: Result<SignedIn, Response>) -> Redirect {
    match signed_in {
        Ok(_) => Redirect::to("/console/agents"),
        Err(_) => Redirect::to("/console/sign-in"),
    }
}

async fn sign_in_form(State(broker): State<Arc<Broker>>) -> Response {
    page(StatusCode::OK, pages::sign_in(false, broker.console_sign_in().map(|provider| provider.issuer())))
}

async fn sign_in(State(broker): State<Arc<Broker>>, request: Request) -> Response {
    let client_address = super::client_address::of(&request, broker.trusted_proxies());
    let Ok(body) = Bytes::from_request(request, &broker).await else {
        return refused(StatusCode::BAD_REQUEST, "The form could not be read.");
    };
    let presented = field(&body, "admin_token");
    match broker.admit_admin(presented.as_deref(), client_address.as_deref()) {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(client_address = client_address.as_deref().unwrap_or("?"), "console sign-in refused");
            let provider = broker.console_sign_in().map(|provider| provider.issuer());
            // 403, not 401: a form, not an HTTP authentication scheme, asked for it.
            return page(StatusCode::FORBIDDEN, pages::sign_in(true, provider));
        }
        Err(throttled) => {
            let mut response =
                refused(StatusCode::TOO_MANY_REQUESTS, "Too many wrong credentials from here: wait, then try again.");
            if let Ok(value) = HeaderValue::from_str(&throttled.retry_after.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            return response;
        }
    }
    let Ok((id, _)) = session::open(&broker, Admission::AdminToken).await else {
        return page(StatusCode::SERVICE_UNAVAILABLE, pages::message("Unavailable", "No session could be opened."));
    };
    with_cookie(Redirect::to("/console/agents").into_response(), &session_cookie(&id, &broker))
}

/// `; Secure` when the broker is reached over https.
fn secure_attribute(broker: &Broker) -> &'static str {
    if broker.settings().issuer.starts_with("https://") {
        "; Secure"
    } else {
        ""
    }
}

/// The cookie naming session `id`: for the console's paths only, out of
/// scripts' reach, never sent from another site, for a working day at most.
fn session_cookie(id: &str, broker: &Broker) -> String {
    let secure = secure_attribute(broker);
    format!("{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECONDS}{secure}")
}

async fn sign_out(State(broker): State<Arc<Broker>>, form: Posted) -> Response {
    if session::close(&broker, &form.signed_in.id).await.is_err() {
        // Not ended where every node looks: the browser is not told it is.
        return unavailable();
    }
    let cleared =
        format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{}", secure_attribute(&broker));
    with_cookie(Redirect::to("/console/sign-in").into_response(), &cleared)
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn agents(State(broker): State<Arc<Broker>>, signed_in: SignedIn) -> Response {
    match broker.agent_reports().await {
        Ok(reports) => page(StatusCode::OK, pages::agents(&reports, &signed_in.session)),
        Err(_) => unavailable(),
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

async fn trace(State(broker): State<Arc<Broker>>, signed_in: SignedIn, uri: Uri) -> Response {
    let session = &signed_in.session;
    // A token id only: a whole token is searched by posting it, so that it
    // never stands in a URL.
    let query = query_field(&uri, "q");
    if query.is_empty() {
        return page(StatusCode::OK, pages::trace("", None, session));
    }
    if query.contains('.') || query.len() > 256 {
        return page(StatusCode::BAD_REQUEST, pages::trace("", None, session));
    }
    let jti = TokenId(query.clone());
    let trace = match broker.trace(&jti).await {
        Ok(Some(trace)) => trace,
        Ok(None) => return page(StatusCode::NOT_FOUND, pages::trace(&query, None, session)),
        Err(_) => return unavailable(),
    };
    let filter = AuditFilter { jti: Some(jti), limit: Some(50), ..AuditFilter::default() };
    // An audit trail that cannot be read is said so, not shown empty.
    let events = broker.audit_events(&filter).await.ok();
    page(StatusCode::OK, pages::trace(&query, Some((&trace, events.as_deref())), session))
}

/// A search posted from the trace page: the token is read here and the
/// answer is the page of its id, so that no token lands in a URL.
async fn search(form: Posted) -> Response {
    match form.field("q").as_deref().and_then(searched_jti) {
        Some(jti) => to_trace(&jti.0),
        None => page(StatusCode::NOT_FOUND, pages::message("Not found", "That is neither a token nor a token id.")),
    }
}

async fn revoke_form(State(broker): State<Arc<Broker>>, signed_in: SignedIn, uri: Uri) -> Response {
    match broker.trace(&TokenId(query_field(&uri, "jti"))).await {
        Ok(Some(trace)) => page(StatusCode::OK, pages::revoke(&trace, &signed_in.session)),
        Ok(None) => page(StatusCode::NOT_FOUND, pages::message("Not found", "No token with that id is known.")),
        Err(_) => unavailable(),
    }
}

async fn revoke(State(broker): State<Arc<Broker>>, form: Posted) -> Response {
    let Some(jti) = form.field("jti").map(TokenId) else {
        return refused(StatusCode::BAD_REQUEST, "No token was named: nothing was done.");
    };
    match broker.revoke_jti(&jti, &form.operator()).await {
        Ok(_) => to_trace(&jti.0),
        Err(_) => unavailable(),
    }
}

/// An agent named in a form or a query: a registered id is short.
fn agent_named(name: Option<String>) -> Option<String> {
    name.filter(|name| (1..=256).contains(&name.len()))
}

/// The confirmation before deprovisioning an agent: seen from the tree of
/// the token `jti` when the query names one, else from the agent's tokens.
async fn deprovision_form(State(broker): State<Arc<Broker>>, signed_in: SignedIn, uri: Uri) -> Response {
    let Some(agent) = agent_named(Some(query_field(&uri, "agent"))) else {
        return refused(StatusCode::BAD_REQUEST, "No agent was named.");
    };
    let session = &signed_in.session;
    let jti = query_field(&uri, "jti");
    if jti.is_empty() {
        let query = TokenQuery { agent: Some(agent.clone()), ..TokenQuery::default() };
        return match broker.tokens(&query).await {
            Ok(tokens) => {
                page(StatusCode::OK, pages::deprovision(&agent, Seen::Tokens(&tokens.unwrap_or_default()), session))
            }
            Err(_) => unavailable(),
        };
    }
    match broker.trace(&TokenId(jti)).await {
        Ok(Some(trace)) => page(StatusCode::OK, pages::deprovision(&agent, Seen::Tree(&trace), session)),
        Ok(None) => page(StatusCode::NOT_FOUND, pages::message("Not found", "No token with that id is known.")),
        Err(_) => unavailable(),
    }
}

/// Deprovisions the agent, then shows where it was confirmed from, updated.
async fn deprovision(State(broker): State<Arc<Broker>>, form: Posted) -> Response {
    let Some(agent) = agent_named(form.field("agent")) else {
        return refused(StatusCode::BAD_REQUEST, "No agent was named: nothing was done.");
    };
    if broker.deprovision(&Principal::Agent(AgentId::new(agent.clone())), &form.operator()).await.is_err() {
        return unavailable();
    }
    match form.field("jti") {
        Some(jti) => to_trace(&jti),
        None => Redirect::to(&link::tokens_of_agent(&agent)).into_response(),
    }
}

/// The filled fields of a form sent as a query string, each trimmed, empty
/// ones left out.
fn filled<'a>(uri: &Uri, fields: &[(&'a str, &str)]) -> Vec<(&'a str, String)> {
    let query = uri.query().unwrap_or_default().as_bytes();
    fields
        .iter()
        .filter_map(|(name, _)| field(query, name).map(|value| (*name, value.trim().to_owned())))
        .filter(|(_, value)| !value.is_empty())
        .collect()
}

/// The tokens of a subject or an agent, each with its state.
async fn tokens(State(broker): State<Arc<Broker>>, signed_in: SignedIn, uri: Uri) -> Response {
    let filled = filled(&uri, &pages::TOKEN_FIELDS);
    let named = |name: &str| filled.iter().find(|(filled, _)| *filled == name).map(|(_, value)| value.clone());
    let query = TokenQuery { subject: named("subject"), agent: named("agent"), limit: Some(100) };
    let session = &signed_in.session;
    match broker.tokens(&query).await {
        Ok(found) => page(StatusCode::OK, pages::tokens(&filled, found.as_deref().map(Ok), session)),
        Err(_) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::tokens(&filled, Some(Err("The audit trail cannot be read now.")), session),
        ),
    }
}

async fn approvals(State(broker): State<Arc<Broker>>, signed_in: SignedIn, uri: Uri) -> Response {
    // The broker sets the query's time; older pages start `before` a cursor.
    let mut query = ApprovalQuery::pending(UnixTime(0));
    query.before = Cursor::parse(&query_field(&uri, "before"));
    match broker.list_approvals(query).await {
        Ok(listed) => {
            let older = listed.next.map(|next| next.to_string());
            page(StatusCode::OK, pages::approvals(&listed.approvals, older.as_deref(), &signed_in.session))
        }
        Err(_) => unavailable(),
    }
}

async fn approval(State(broker): State<Arc<Broker>>, signed_in: SignedIn, uri: Uri) -> Response {
    match broker.pending_approval(&ApprovalId(query_field(&uri, "id"))).await {
        Ok(Some(approval)) => page(StatusCode::OK, pages::approval(&approval, &signed_in.session)),
        Ok(None) => page(StatusCode::NOT_FOUND, pages::message("Not waiting", "No such request waits for a person.")),
        Err(_) => unavailable(),
    }
}

async fn decide(State(broker): State<Arc<Broker>>, form: Posted) -> Response {
    let (Some(id), Some(approver), Some(verdict)) = (form.field("id"), form.field("approver"), form.field("verdict"))
    else {
        return refused(StatusCode::BAD_REQUEST, "The decision was incomplete: nothing was done.");
    };
    let approve = match verdict.as_str() {
        "approve" => true,
        "deny" => false,
        _ => return refused(StatusCode::BAD_REQUEST, "No such decision: nothing was done."),
    };
    match broker.decide_approval(&ApprovalId(id), approver.trim(), approve, &form.operator()).await {
        Ok(_) => Redirect::to("/console/approvals").into_response(),
        Err(EndpointError::Store(_)) => unavailable(),
        // Decided already, expired, or not this approver's: the queue shows what stands.
        Err(_) => page(
            StatusCode::CONFLICT,
            pages::message("Not decided", "It was decided already, has expired, or is not yours to decide."),
        ),
    }
}

/// The audit search's filters from a query string, as the admin API reads
/// them; empty fields are no filter, and times may be RFC 3339.
fn audit_filter(filled: &[(&str, String)]) -> Result<AuditFilter, String> {
    let mut json = serde_json::Map::new();
    for (name, value) in filled {
        let value = match *name {
            "since" | "until" => {
                let seconds = value.parse::<i64>().ok().or_else(|| {
                    time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
                        .ok()
                        .map(time::OffsetDateTime::unix_timestamp)
                });
                serde_json::Value::from(seconds.ok_or_else(|| format!("`{name}` is not a time"))?)
            }
            "limit" => serde_json::Value::from(value.parse::<u64>().map_err(|_| "`limit` is not a number".to_owned())?),
            _ => serde_json::Value::from(value.as_str()),
        };
        json.insert((*name).to_owned(), value);
    }
    let filter: AuditFilter = serde_json::from_value(serde_json::Value::Object(json))
        .map_err(|_| "a filter is not one the audit trail has".to_owned())?;
    if filter.limit.is_some_and(|limit| !(1..=AuditFilter::MAX_LIMIT).contains(&limit)) {
        return Err("`limit` must be between 1 and 1000".to_owned());
    }
    Ok(AuditFilter { limit: filter.limit.or(Some(50)), ..filter })
}

async fn audit(State(broker): State<Arc<Broker>>, signed_in: SignedIn, uri: Uri) -> Response {
    let filled = filled(&uri, &pages::AUDIT_FILTERS);
    let session = &signed_in.session;
    let filter = match audit_filter(&filled) {
        Ok(filter) => filter,
        Err(reason) => return page(StatusCode::BAD_REQUEST, pages::audit(&filled, Err(&reason), session)),
    };
    match broker.audit_events(&filter).await {
        Ok(events) => page(StatusCode::OK, pages::audit(&filled, Ok(&events), session)),
        Err(_) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::audit(&filled, Err("The audit trail cannot be read now."), session),
        ),
    }
}

/// The explain form's fields as the question the admin API takes: lists
/// are space-separated, and empty fields are not asked.
fn question(filled: &[(&str, String)]) -> Result<Question, String> {
    let mut json = serde_json::Map::new();
    for (name, value) in filled {
        let words = || serde_json::Value::from(value.split_whitespace().collect::<Vec<_>>());
        let value = match *name {
            "scopes" | "parent_scopes" | "chain" => words(),
            "depth" => serde_json::Value::from(value.parse::<u32>().map_err(|_| "`depth` is not a number".to_owned())?),
            _ => serde_json::Value::from(value.as_str()),
        };
        json.insert((*name).to_owned(), value);
    }
    serde_json::from_value(serde_json::Value::Object(json))
        .map_err(|error| format!("the question cannot be asked: {error}"))
}

/// A dry run against the policy in force: asking changes nothing, so the
/// form is a GET and needs no CSRF token.
async fn explain(State(broker): State<Arc<Broker>>, signed_in: SignedIn, uri: Uri) -> Response {
    let filled = filled(&uri, &pages::EXPLAIN_FIELDS);
    let session = &signed_in.session;
    if filled.is_empty() {
        return page(StatusCode::OK, pages::explain(&filled, None, session));
    }
    let question = match question(&filled) {
        Ok(question) => question,
        Err(reason) => return page(StatusCode::BAD_REQUEST, pages::explain(&filled, Some(Err(&reason)), session)),
    };
    match broker.explain(&question) {
        Ok(explanation) => page(StatusCode::OK, pages::explain(&filled, Some(Ok(&explanation)), session)),
        Err(ExplainError::Question(error)) => {
            page(StatusCode::BAD_REQUEST, pages::explain(&filled, Some(Err(&error.to_string())), session))
        }
        // The rules could not be evaluated: the broker's fault, not the asker's.
        Err(ExplainError::Policy(_)) => unavailable(),
    }
}

async fn style_sheet() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE_SHEET)
}
