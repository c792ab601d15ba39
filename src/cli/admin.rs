//! `baton revoke token|agent|subject`, `baton agents` and `baton audit`: the admin API
//! (DESIGN.md §3) over HTTP, authenticated with the admin token.
//!
//! The admin token is a secret: it travels only in the `Authorization`
//! header, its `Debug` is redacted, and no output of these commands, not even
//! an error, contains it.

use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::claims::TokenId;
use crate::clock::UnixTime;
use crate::config::ADMIN_TOKEN_VARIABLE;
use crate::policy::lifecycle::AgentWarning;
use crate::token;

/// The most one admin call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The admin token, as given on the command line or in
/// `BATON_ADMIN_TOKEN`: redacted in `Debug` (`AdminToken(***)`) and
/// zeroized when dropped.
#[derive(Clone)]
pub struct AdminToken(SecretString);

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

impl From<String> for AdminToken {
    fn from(text: String) -> Self {
        AdminToken(SecretString::from(text))
    }
}

impl FromStr for AdminToken {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(AdminToken(SecretString::from(text)))
    }
}

/// What to ask of the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Revoke a token, given by its `jti` or whole, and so its descendants.
    RevokeToken(String),
    /// Deprovision an agent.
    DeprovisionAgent(String),
    /// Deprovision a subject.
    DeprovisionSubject(String),
    /// Lift the block of a deprovisioned agent.
    ReinstateAgent(String),
    /// Lift the block of a deprovisioned subject.
    ReinstateSubject(String),
    /// List the inventory, as a table or as the raw JSON.
    Agents {
        /// Print the broker's JSON instead of a table.
        json: bool,
    },
    /// Read the audit trail.
    Audit {
        /// The query string of `GET /admin/audit`.
        query: String,
        /// The most events asked for.
        limit: usize,
        /// Print the broker's JSON instead of one line an event.
        json: bool,
    },
}

/// Why an admin call failed. Never carries the admin token.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No admin token was given.
    #[error(
        "no admin token: pass --admin-token, or set {ADMIN_TOKEN_VARIABLE} or {ADMIN_TOKEN_VARIABLE}_FILE (a file \
         holding it)"
    )]
    NoToken,
    /// The URL is neither an `https://` nor an `http://` URL.
    #[error("the broker URL `{0}` must start with https:// or http://")]
    BadUrl(String),
    /// The broker could not be reached, or its answer could not be read.
    #[error("{0}")]
    Unreachable(String),
    /// The broker answered with an error status.
    #[error("{}", refused(*status, error.as_deref(), description.as_deref()))]
    Refused {
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// The JSON `error`, when there was one.
        error: Option<String>,
        /// The JSON `error_description`, when there was one.
        description: Option<String>,
    },
    /// The broker knows no token with this id, and revoked nothing.
    #[error(
        "no token with id `{0}` is known to the broker (never issued there, or long expired): nothing was revoked"
    )]
    UnknownToken(String),
    /// The argument has two dots but is not a token whose `jti` can be read.
    #[error("cannot read the jti of that token: {0}")]
    Unreadable(String),
    /// The broker answered success with a body that is not what the admin
    /// API sends.
    #[error("unexpected answer from the broker: {0}")]
    Unexpected(String),
}

fn refused(status: reqwest::StatusCode, error: Option<&str>, description: Option<&str>) -> String {
    let mut text = format!("the broker answered {status}");
    match (error, description) {
        (Some(error), Some(description)) => text.push_str(&format!(": {error}: {description}")),
        (Some(error), None) => text.push_str(&format!(": {error}")),
        (None, Some(description)) => text.push_str(&format!(": {description}")),
        (None, None) => {}
    }
    // The admin API answers a bare `not_found`, without a description, when
    // it is off; other 404s (an unknown token or approval) describe what was
    // asked.
    if status == reqwest::StatusCode::NOT_FOUND
        && description.is_none()
        && error.is_none_or(|error| error == "not_found")
    {
        text.push_str(" (the admin API is off unless the broker has `admin_token_sha256` configured)");
    }
    text
}

/// What `POST /admin/revoke` answers.
#[derive(Debug, Deserialize)]
struct Revoked {
    revoked: TokenId,
    until: UnixTime,
}

/// One agent of `GET /admin/agents`.
#[derive(Debug, Deserialize)]
struct AgentRow {
    id: String,
    owner: String,
    purpose: String,
    expires: String,
    active: bool,
    /// Deprovisioned and not reinstated; absent from brokers older than the
    /// field.
    #[serde(default)]
    blocked: bool,
    last_use: Option<UnixTime>,
    tokens_issued_last_day: u64,
    /// Computed by the broker; absent from brokers older than the field.
    #[serde(default)]
    warnings: Vec<AgentWarning>,
}

#[derive(Debug, Deserialize)]
struct Inventory {
    agents: Vec<AgentRow>,
}

/// A client of one broker's admin API.
#[derive(Debug)]
pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: AdminToken,
}

impl AdminClient {
    /// A client for the broker at `base` (its issuer URL). Redirects are not
    /// followed, so the admin token goes nowhere but `base`.
    pub fn new(base: &str, token: AdminToken) -> Result<AdminClient, AdminError> {
        // Say so here rather than fail with "builder error" deep in reqwest.
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(AdminError::BadUrl(base.to_owned()));
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(CALL_TIMEOUT)
            .build()
            .map_err(|error| AdminError::Unreachable(chain(&error)))?;
        Ok(AdminClient { http, base: base.trim_end_matches('/').to_owned(), token })
    }

    /// `POST /admin/revoke`: revokes `jti` and every token descending from it.
    async fn revoke(&self, jti: &str) -> Result<Revoked, AdminError> {
        let body = self.call(self.http.post(self.url("/admin/revoke")).json(&json!({ "jti": jti }))).await?;
        serde_json::from_value(body).map_err(|error| AdminError::Unexpected(error.to_string()))
    }

    /// `POST /admin/deprovision` with `{"agent": id}` or `{"subject": id}`.
    async fn deprovision(&self, kind: &str, id: &str) -> Result<(), AdminError> {
        self.call(self.http.post(self.url("/admin/deprovision")).json(&json!({ kind: id }))).await.map(drop)
    }

    /// `POST /admin/reinstate` with `{"agent": id}` or `{"subject": id}`.
    async fn reinstate(&self, kind: &str, id: &str) -> Result<(), AdminError> {
        self.call(self.http.post(self.url("/admin/reinstate")).json(&json!({ kind: id }))).await.map(drop)
    }

    /// `GET /admin/trace/{jti}`: ancestors and descendants with their status.
    pub(super) async fn trace(&self, jti: &str) -> Result<Value, AdminError> {
        self.call(self.http.get(self.url(&format!("/admin/trace/{jti}")))).await
    }

    /// `GET /admin/agents`, as the broker sent it.
    async fn agents(&self) -> Result<Value, AdminError> {
        self.call(self.http.get(self.url("/admin/agents"))).await
    }

    /// `GET path` on the admin API.
    pub(super) async fn get(&self, path: &str) -> Result<Value, AdminError> {
        self.call(self.http.get(self.url(path))).await
    }

    /// `POST path` with a JSON `body` on the admin API.
    pub(super) async fn post(&self, path: &str, body: &Value) -> Result<Value, AdminError> {
        self.call(self.http.post(self.url(path)).json(body)).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `request` with the admin token; any status but success is an
    /// error carrying the body's `error` and `error_description`.
    async fn call(&self, request: reqwest::RequestBuilder) -> Result<Value, AdminError> {
        // `bearer_auth` marks the header sensitive, so reqwest never shows it.
        let response = request
            .bearer_auth(self.token.0.expose_secret())
            .send()
            .await
            .map_err(|error| AdminError::Unreachable(chain(&error)))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|error| AdminError::Unreachable(chain(&error)))?;
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        if !status.is_success() {
            let field =
                |name: &str| body.as_ref().and_then(|body| body.get(name)).and_then(Value::as_str).map(str::to_owned);
            return Err(AdminError::Refused { status, error: field("error"), description: field("error_description") });
        }
        body.ok_or_else(|| AdminError::Unexpected(format!("{status} without a JSON body")))
    }
}

/// An error with its causes, `outer: inner: …`: reqwest's own message names
/// only the outermost ("error sending request"), not why.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Runs `action` against the broker at `url`, printing the outcome.
pub fn run(action: Action, url: &str, token: Option<AdminToken>) -> Result<(), AdminError> {
    let token = token.filter(|token| !token.0.expose_secret().is_empty()).ok_or(AdminError::NoToken)?;
    let client = AdminClient::new(url, token)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| AdminError::Unreachable(format!("cannot start the runtime: {error}")))?;
    let text = runtime.block_on(perform(&client, action))?;
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    Ok(())
}

async fn perform(client: &AdminClient, action: Action) -> Result<String, AdminError> {
    match action {
        Action::RevokeToken(argument) => {
            let jti = jti_of(&argument)?;
            let revoked = client.revoke(&jti).await.map_err(|error| match error {
                AdminError::Refused {
                    status: reqwest::StatusCode::NOT_FOUND,
                    error: Some(code),
                    description: Some(_),
                } if code == "not_found" => AdminError::UnknownToken(jti.clone()),
                other => other,
            })?;
            Ok(format!(
                "revoked token {} and every token that descends from it; the revocation is kept until {}, when the \
                 last of them has expired\n",
                revoked.revoked, revoked.until
            ))
        }
        Action::DeprovisionAgent(id) => {
            client.deprovision("agent", &id).await?;
            Ok(format!(
                "deprovisioned agent {id}: every token it obtained, is addressed to, or appears in the chain of is \
                 now dead, and it cannot authenticate until `baton reinstate agent {id}`\n"
            ))
        }
        Action::DeprovisionSubject(id) => {
            client.deprovision("subject", &id).await?;
            Ok(format!(
                "deprovisioned subject {id}: every token on its authority is now dead, and stays so until \
                 `baton reinstate subject {id}`\n"
            ))
        }
        Action::ReinstateAgent(id) => {
            client.reinstate("agent", &id).await?;
            Ok(format!("reinstated agent {id}: tokens issued from now on live; those cut off stay dead\n"))
        }
        Action::ReinstateSubject(id) => {
            client.reinstate("subject", &id).await?;
            Ok(format!("reinstated subject {id}: tokens issued from now on live; those cut off stay dead\n"))
        }
        Action::Agents { json } => {
            let body = client.agents().await?;
            if json {
                let text =
                    serde_json::to_string_pretty(&body).map_err(|error| AdminError::Unexpected(error.to_string()))?;
                return Ok(text + "\n");
            }
            let inventory: Inventory =
                serde_json::from_value(body).map_err(|error| AdminError::Unexpected(error.to_string()))?;
            Ok(table(&inventory.agents) + &warnings(&inventory.agents))
        }
        Action::Audit { query, limit, json } => {
            let body = client.get(&format!("/admin/audit?{query}")).await?;
            super::audit::render(body, json, limit).map_err(|error| AdminError::Unexpected(error.to_string()))
        }
    }
}

/// The `jti` to revoke: the argument itself, or the `jti` claim of a whole
/// token (shaped as a compact JWS: three parts).
fn jti_of(argument: &str) -> Result<String, AdminError> {
    let argument = argument.trim();
    if argument.is_empty() {
        return Err(AdminError::Unreadable("an empty argument is neither a jti nor a token".into()));
    }
    if !crate::jose::is_compact_shaped(argument) {
        return Ok(argument.to_owned());
    }
    // Read without verifying the signature: only the id is taken from it, and
    // the broker revokes that id whoever signed the token. A forged token can
    // only name a jti the admin could have typed.
    let unverified = token::insecure_peek(argument).map_err(|error| AdminError::Unreadable(error.to_string()))?;
    Ok(unverified.claims.jti.0)
}

/// The inventory as an aligned table, one agent a row.
fn table(agents: &[AgentRow]) -> String {
    let header = ["ID", "OWNER", "PURPOSE", "EXPIRES", "ACTIVE", "LAST USE", "ISSUED (24H)"].map(str::to_owned);
    let rows: Vec<[String; 7]> = agents
        .iter()
        .map(|agent| {
            [
                agent.id.clone(),
                agent.owner.clone(),
                agent.purpose.clone(),
                agent.expires.clone(),
                activity(agent).to_owned(),
                agent.last_use.map_or_else(|| "never".to_owned(), |time| time.to_string()),
                agent.tokens_issued_last_day.to_string(),
            ]
        })
        .collect();
    let mut widths = [0usize; 7];
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The `ACTIVE` cell: `blocked` for an agent deprovisioned and not
/// reinstated, whatever its registered life says, since it can do nothing;
/// else whether it is within its registered life.
fn activity(agent: &AgentRow) -> &'static str {
    match (agent.blocked, agent.active) {
        (true, _) => "blocked",
        (false, true) => "yes",
        (false, false) => "no",
    }
}

/// The broker's warnings, one line each: expired or expiring, idle or never
/// used, without an owner; and the agents blocked.
fn warnings(agents: &[AgentRow]) -> String {
    let mut out = String::new();
    for agent in agents {
        if agent.blocked {
            out.push_str(&format!(
                "warning: agent `{0}` is deprovisioned: it cannot authenticate until `baton reinstate agent {0}`\n",
                agent.id
            ));
        }
        for warning in &agent.warnings {
            out.push_str(&format!("warning: agent `{}` {warning}\n", agent.id));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, expires: &str, active: bool, last_use: Option<i64>) -> AgentRow {
        AgentRow {
            id: id.into(),
            owner: "team@example.com".into(),
            purpose: "tests".into(),
            expires: expires.into(),
            active,
            blocked: false,
            last_use: last_use.map(UnixTime),
            tokens_issued_last_day: 3,
            warnings: Vec::new(),
        }
    }

    #[test]
    fn the_table_aligns_its_columns() {
        let table = table(&[row("a", "2030-06-30", true, Some(0)), row("longer-id", "2030-06-30", false, None)]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("ID         OWNER"), "{table}");
        assert!(lines[1].starts_with("a          team@example.com"), "{table}");
        assert!(lines[1].contains("1970-01-01T00:00:00Z") && lines[1].ends_with(" 3"), "{table}");
        assert!(lines[2].contains("  no  ") && lines[2].contains("never"), "{table}");
    }

    #[test]
    fn a_blocked_agent_reads_blocked_not_active() {
        let blocked = AgentRow { blocked: true, ..row("gone", "2030-06-30", true, None) };
        let table = table(&[blocked]);
        assert!(table.lines().nth(1).unwrap().contains("  blocked  "), "{table}");
        assert!(!table.contains(" yes "), "{table}");
        let blocked = AgentRow { blocked: true, ..row("gone", "2030-06-30", true, None) };
        assert_eq!(
            warnings(&[blocked]),
            "warning: agent `gone` is deprovisioned: it cannot authenticate until `baton reinstate agent gone`\n"
        );
    }

    #[test]
    fn the_broker_s_warnings_are_printed_one_a_line() {
        let body = serde_json::json!({"agents": [
            {"id": "old", "owner": "o", "purpose": "p", "expires": "2030-06-01", "active": false, "last_use": 1,
             "tokens_issued_last_day": 0, "warnings": [{"kind": "expired", "expires": "2030-06-01"}]},
            {"id": "soon", "owner": "o", "purpose": "p", "expires": "2030-06-30", "active": true, "last_use": null,
             "tokens_issued_last_day": 0, "warnings": [
                {"kind": "expires_soon", "expires": "2030-06-30", "days_left": 10}, {"kind": "never_used"}]},
            {"id": "fine", "owner": "o", "purpose": "p", "expires": "2031-01-01", "active": true, "last_use": 1,
             "tokens_issued_last_day": 0},
        ]});
        let inventory: Inventory = serde_json::from_value(body).unwrap();
        let text = warnings(&inventory.agents);
        assert_eq!(
            text,
            "warning: agent `old` expired on 2030-06-01 and gets nothing: remove it from agents.toml or renew it\n\
             warning: agent `soon` expires on 2030-06-30 (10 days left)\n\
             warning: agent `soon` was never used\n"
        );
    }

    #[test]
    fn a_jti_is_taken_as_is_and_a_token_is_read_for_its_jti() {
        assert_eq!(jti_of(" abc_-123 ").unwrap(), "abc_-123");
        let header = base64_url(br#"{"alg":"ES256","typ":"at+jwt","kid":"k"}"#);
        let claims = base64_url(
            br#"{"iss":"http://127.0.0.1:8080","sub":"s","aud":"a","client_id":"s","scope":"x","iat":1,"exp":2,"jti":"the-jti","delegation":{"depth":0,"hops":[]}}"#,
        );
        assert_eq!(jti_of(&format!("{header}.{claims}.c2ln")).unwrap(), "the-jti");
        assert!(jti_of("not.a.token").is_err());
    }

    fn base64_url(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn errors_name_the_status_and_the_oauth_error_but_never_the_token() {
        let error = AdminError::Refused {
            status: reqwest::StatusCode::UNAUTHORIZED,
            error: Some("invalid_token".into()),
            description: Some("admin credential required".into()),
        };
        assert_eq!(error.to_string(), "the broker answered 401 Unauthorized: invalid_token: admin credential required");
        let off = AdminError::Refused {
            status: reqwest::StatusCode::NOT_FOUND,
            error: Some("not_found".into()),
            description: None,
        };
        assert!(off.to_string().contains("admin_token_sha256"), "{off}");
        assert_eq!(format!("{:?}", AdminToken(SecretString::from("secret"))), "AdminToken(***)");
        let missing = AdminError::NoToken.to_string();
        assert!(missing.contains("--admin-token") && missing.contains("BATON_ADMIN_TOKEN"), "{missing}");
    }

    #[test]
    fn a_broker_url_is_https_or_http() {
        let token = || AdminToken(SecretString::from("t"));
        assert!(AdminClient::new("https://baton.example", token()).is_ok());
        assert!(AdminClient::new("http://127.0.0.1:8080", token()).is_ok());
        let error = AdminClient::new("ftp://baton.example", token()).unwrap_err().to_string();
        assert_eq!(error, "the broker URL `ftp://baton.example` must start with https:// or http://");
    }
}
