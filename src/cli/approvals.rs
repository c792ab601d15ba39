//! `baton approvals list|approve|deny`: approvers decide pending requests
//! through the admin API, authenticated with the admin token.

use std::path::PathBuf;

use clap::Subcommand;
use serde::Deserialize;
use serde_json::{json, Value};

use super::admin::{AdminClient, AdminError};
use super::AdminArgs;
use crate::clock::UnixTime;

/// What to do with approvals.
#[derive(Subcommand, Debug)]
pub(super) enum ApprovalsAction {
    /// List approvals, newest first, one page at a time (pending ones by default).
    List {
        /// Print the broker's JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Only those in this state: pending (waiting, not expired), approved, denied or consumed.
        #[arg(long, default_value = "pending")]
        state: String,
        /// Only this agent's.
        #[arg(long)]
        agent: Option<String>,
        /// At most this many (1 to 200).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Start after this place: the `next` a previous page printed.
        #[arg(long, allow_hyphen_values = true)]
        before: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Approve a pending request: the agent's next poll gets its token.
    Approve {
        /// The approval's id.
        #[arg(allow_hyphen_values = true)]
        id: String,
        /// Who approves: the configured approver of the request (the agent's
        /// owner, or the subject).
        #[arg(long = "as", value_name = "APPROVER")]
        approver: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Deny a pending request: the agent's next poll gets `access_denied`.
    Deny {
        /// The approval's id.
        #[arg(allow_hyphen_values = true)]
        id: String,
        /// Who denies: the configured approver of the request.
        #[arg(long = "as", value_name = "APPROVER")]
        approver: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// One approval as `GET /admin/approvals` lists it.
#[derive(Debug, Deserialize)]
struct Row {
    id: String,
    request: Request,
    approver: String,
    expires_at: UnixTime,
}

#[derive(Debug, Deserialize)]
struct Request {
    subject: String,
    agent: String,
    target: String,
    scope: String,
}

#[derive(Debug, Deserialize)]
struct Listing {
    approvals: Vec<Row>,
    /// Where the next page starts, if there may be more.
    #[serde(default)]
    next: Option<String>,
}

/// Runs `action`; the config is read only for the default URL.
pub(super) fn execute(action: ApprovalsAction, config: Option<PathBuf>) -> Result<(), String> {
    let admin = match &action {
        ApprovalsAction::List { admin, .. }
        | ApprovalsAction::Approve { admin, .. }
        | ApprovalsAction::Deny { admin, .. } => admin,
    };
    let token = admin.token()?.ok_or_else(|| AdminError::NoToken.to_string())?;
    let url = match &admin.url {
        Some(url) => url.clone(),
        None => super::load_config(config)?.issuer.into_string(),
    };
    let client = AdminClient::new(&url, token).map_err(|error| error.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the runtime: {error}"))?;
    let text = runtime.block_on(perform(&client, action)).map_err(|error| error.to_string())?;
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    Ok(())
}

async fn perform(client: &AdminClient, action: ApprovalsAction) -> Result<String, AdminError> {
    let unexpected = |error: serde_json::Error| AdminError::Unexpected(error.to_string());
    match action {
        ApprovalsAction::List { json, state, agent, limit, before, .. } => {
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.append_pair("state", &state).append_pair("limit", &limit.to_string());
            if let Some(agent) = &agent {
                query.append_pair("agent", agent);
            }
            if let Some(before) = &before {
                query.append_pair("before", before);
            }
            let body = client.get(&format!("/admin/approvals?{}", query.finish())).await?;
            if json {
                return Ok(serde_json::to_string_pretty(&body).map_err(unexpected)? + "\n");
            }
            let listing: Listing = serde_json::from_value(body).map_err(unexpected)?;
            let mut text = table(&listing.approvals, &state);
            if let Some(next) = listing.next {
                text.push_str(&format!("more: repeat with --before {next}\n"));
            }
            Ok(text)
        }
        ApprovalsAction::Approve { id, approver, .. } => {
            decide(client, &id, &approver, "approve").await?;
            Ok(format!("approved {id} as {approver}: the agent's next request with this approval_id gets its token\n"))
        }
        ApprovalsAction::Deny { id, approver, .. } => {
            decide(client, &id, &approver, "deny").await?;
            Ok(format!(
                "denied {id} as {approver}: the agent's next request with this approval_id gets access_denied\n"
            ))
        }
    }
}

async fn decide(client: &AdminClient, id: &str, approver: &str, verb: &str) -> Result<Value, AdminError> {
    // The id goes into the path: keep it to the characters ids are made of.
    if id.is_empty() || !id.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"-_".contains(&byte)) {
        return Err(AdminError::Unexpected(format!("`{id}` is not an approval id")));
    }
    client.post(&format!("/admin/approvals/{id}/{verb}"), &json!({ "approver": approver })).await
}

/// The approvals as an aligned table, one a row.
fn table(rows: &[Row], state: &str) -> String {
    if rows.is_empty() {
        return format!("no {state} approvals\n");
    }
    let header = ["ID", "AGENT", "SUBJECT", "TARGET", "SCOPES", "APPROVER", "EXPIRES"].map(str::to_owned);
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|row| {
            [
                row.id.clone(),
                row.request.agent.clone(),
                row.request.subject.clone(),
                row.request.target.clone(),
                row.request.scope.clone(),
                row.approver.clone(),
                row.expires_at.to_string(),
            ]
        })
        .collect();
    let mut widths = [0usize; 7];
    for row in std::iter::once(&header).chain(&cells) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&cells) {
        let line: Vec<String> = row.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_each_pending_request() {
        let rows = vec![Row {
            id: "abc".into(),
            request: Request {
                subject: "orchestrator".into(),
                agent: "booker".into(),
                target: "https://api.airline.example".into(),
                scope: "flights.book".into(),
            },
            approver: "travel-team@example.com".into(),
            expires_at: UnixTime(0),
        }];
        let text = table(&rows, "pending");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ID   AGENT   SUBJECT"), "{text}");
        assert!(lines[1].contains("booker") && lines[1].contains("travel-team@example.com"), "{text}");
        assert!(lines[1].ends_with("1970-01-01T00:00:00Z"), "{text}");
        assert_eq!(table(&[], "pending"), "no pending approvals\n");
        assert_eq!(table(&[], "denied"), "no denied approvals\n");
    }
}
