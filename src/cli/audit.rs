//! `baton audit`: the audit trail through the admin API (`GET /admin/audit`),
//! with its filters, printed one event a line (or as the broker's JSON).

use std::fmt::Write as _;

use clap::Args;
use serde::Deserialize;
use serde_json::Value;

use super::AdminArgs;
use crate::clock::UnixTime;
use crate::store::{AuditDecision, AuditEvent, AuditFilter};

/// Which events to ask for: the admin API's filters, every one optional.
#[derive(Args, Debug)]
pub(super) struct AuditArgs {
    /// Events of this agent (the authenticated client).
    #[arg(long, allow_hyphen_values = true)]
    agent: Option<String>,
    /// Events of this subject.
    #[arg(long, allow_hyphen_values = true)]
    subject: Option<String>,
    /// Events about this token id.
    // A jti may start with `-`: base64url.
    #[arg(long, allow_hyphen_values = true)]
    jti: Option<String>,
    /// Events of tokens exchanged from this token id.
    #[arg(long, allow_hyphen_values = true)]
    parent_jti: Option<String>,
    /// Events of this action: a grant type (`client_credentials`, the token
    /// exchange URN), `revoke`, `admin_revoke`, `deprovision`, `reinstate`,
    /// `expired`, `approval_approve`…
    #[arg(long)]
    action: Option<String>,
    /// Events of this decision.
    #[arg(long, value_parser = ["issued", "refused", "revoked", "pending", "approved", "denied"])]
    decision: Option<String>,
    /// Events at or after this time: RFC 3339 (`2026-11-25T03:00:00Z`) or Unix seconds.
    #[arg(long, allow_hyphen_values = true)]
    since: Option<String>,
    /// Events at or before this time: RFC 3339 or Unix seconds.
    #[arg(long, allow_hyphen_values = true)]
    until: Option<String>,
    /// At most this many events, newest first (1 to 1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
    limit: u16,
    /// Print the broker's JSON instead of one line an event.
    #[arg(long)]
    pub(super) json: bool,
    #[command(flatten)]
    pub(super) admin: AdminArgs,
}

impl AuditArgs {
    /// The query string of `GET /admin/audit`, times as Unix seconds.
    pub(super) fn query(&self) -> Result<String, String> {
        let mut query = form_urlencoded::Serializer::new(String::new());
        let text_filters = [
            ("agent", &self.agent),
            ("subject", &self.subject),
            ("jti", &self.jti),
            ("parent_jti", &self.parent_jti),
            ("action", &self.action),
            ("decision", &self.decision),
        ];
        for (name, value) in text_filters {
            if let Some(value) = value {
                query.append_pair(name, value);
            }
        }
        for (name, value) in [("since", &self.since), ("until", &self.until)] {
            if let Some(text) = value {
                query.append_pair(name, &instant(name, text)?.0.to_string());
            }
        }
        query.append_pair("limit", &self.limit.to_string());
        Ok(query.finish())
    }

    /// How many events were asked for at most.
    pub(super) fn limit(&self) -> usize {
        usize::from(self.limit)
    }
}

/// `--since` or `--until`: RFC 3339, or Unix seconds.
fn instant(option: &str, text: &str) -> Result<UnixTime, String> {
    if let Ok(seconds) = text.parse::<i64>() {
        return Ok(UnixTime(seconds));
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|moment| UnixTime(moment.unix_timestamp()))
        .map_err(|error| format!("--{option} `{text}`: neither RFC 3339 nor Unix seconds: {error}"))
}

#[derive(Deserialize)]
struct Events {
    events: Vec<AuditEvent>,
}

/// The broker's answer as text: its JSON, or one line an event, newest
/// first, with a closing line when the page may have been cut at `limit`.
pub(super) fn render(body: Value, json: bool, limit: usize) -> Result<String, serde_json::Error> {
    if json {
        return Ok(serde_json::to_string_pretty(&body)? + "\n");
    }
    let Events { events } = serde_json::from_value(body)?;
    if events.is_empty() {
        return Ok("no audit events match\n".to_owned());
    }
    let mut out = String::new();
    for event in &events {
        out.push_str(&line(event));
        out.push('\n');
        for count in &event.refusals {
            let _ = write!(out, "    {} x {}", count.count, inert(&count.reason));
            if let Some(claimed) = &count.claimed_client {
                let _ = write!(out, "  claimed {}", inert(claimed));
            }
            if let Some(address) = &count.client_address {
                let _ = write!(out, "  from {}", inert(address));
            }
            if count.overflow {
                out.push_str("  (past the interval's bound: client and address not kept)");
            }
            out.push('\n');
        }
    }
    if events.len() >= limit {
        let _ = writeln!(
            out,
            "(the newest {limit} shown; there may be more: narrow with --since/--until, or raise --limit up to {})",
            AuditFilter::MAX_LIMIT
        );
    }
    Ok(out)
}

/// `text` with its control characters escaped (`\u{1b}`, `\n`…): a
/// client's own text (the client id it claimed) must not move the cursor,
/// colour, or forge a line on the terminal reading the trail.
fn inert(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let escaped = text
        .chars()
        .map(
            |character| {
                if character.is_control() {
                    character.escape_default().to_string()
                } else {
                    character.to_string()
                }
            },
        )
        .collect();
    std::borrow::Cow::Owned(escaped)
}

/// One event: when, the decision, the action, then each field it has.
fn line(event: &AuditEvent) -> String {
    let decision = match event.decision {
        AuditDecision::Issued => "issued",
        AuditDecision::Refused => "refused",
        AuditDecision::Revoked => "revoked",
        AuditDecision::Pending => "pending",
        AuditDecision::Approved => "approved",
        AuditDecision::Denied => "denied",
    };
    let mut out = format!("{}  {decision:<8}  {}", event.time, event.action);
    let mut field = |name: &str, value: Option<&str>| {
        if let Some(value) = value {
            let _ = write!(out, "  {name} {}", inert(value));
        }
    };
    field("agent", event.agent.as_deref());
    // The client a request claimed is worth showing only where it differs
    // from the one that authenticated (or none did).
    field("claimed", event.claimed_client.as_deref().filter(|claimed| event.agent.as_deref() != Some(claimed)));
    field("subject", event.subject.as_deref());
    let chain = (!event.chain.is_empty()).then(|| event.chain.join(" <- "));
    field("chain", chain.as_deref());
    field("target", event.target.as_deref());
    let quoted = |scopes: &Option<String>| scopes.as_ref().map(|scopes| format!("\"{scopes}\""));
    field("asked", quoted(&event.scopes_asked).as_deref());
    field("granted", quoted(&event.scopes_granted).as_deref());
    field("jti", event.jti.as_ref().map(|jti| jti.0.as_str()));
    field("parent", event.parent_jti.as_ref().map(|jti| jti.0.as_str()));
    field("expires", event.expires_at.map(|time| time.to_string()).as_deref());
    let approval = event.approval.as_ref().map(|approval| match &approval.approver {
        Some(approver) => format!("{} by {approver}", approval.id.0),
        None => approval.id.0.clone(),
    });
    field("approval", approval.as_deref());
    let rules = (!event.rules.is_empty()).then(|| event.rules.join(","));
    field("rules", rules.as_deref());
    field("from", event.client_address.as_deref());
    field("reason", event.reason.as_deref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        args: AuditArgs,
    }

    fn args(line: &[&str]) -> AuditArgs {
        Command::try_parse_from(std::iter::once("audit").chain(line.iter().copied())).unwrap().args
    }

    #[test]
    fn the_filters_become_the_admin_api_query() {
        let query = args(&[
            "--agent",
            "planner",
            "--decision",
            "issued",
            "--since",
            "1970-01-01T00:01:00Z",
            "--until",
            "120",
            "--jti",
            "-dash",
        ])
        .query()
        .unwrap();
        assert_eq!(query, "agent=planner&jti=-dash&decision=issued&since=60&until=120&limit=100");
        assert_eq!(args(&[]).query().unwrap(), "limit=100");
        let error = args(&["--since", "yesterday"]).query().unwrap_err();
        assert!(error.contains("--since `yesterday`"), "{error}");
        assert!(Command::try_parse_from(["audit", "--decision", "maybe"]).is_err());
        assert!(Command::try_parse_from(["audit", "--limit", "1001"]).is_err());
    }

    #[test]
    fn an_event_reads_as_one_line_of_its_fields() {
        let body = serde_json::json!({"events": [
            {"time": 60, "decision": "issued", "action": "client_credentials", "agent": "planner",
             "claimed_client": "planner", "subject": "orchestrator", "chain": ["orchestrator"], "target": "booker",
             "scopes_granted": "a b", "jti": "J", "parent_jti": "P", "expires_at": 120, "rules": ["r1"]},
            {"time": 0, "decision": "refused", "action": "client_authentication", "reason": "counted",
             "refusals": [{"reason": "client_wrong_secret", "claimed_client": "x", "client_address": "127.0.0.1",
                           "overflow": false, "count": 3}]},
        ]});
        let text = render(body, false, 100).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "1970-01-01T00:01:00Z  issued    client_credentials  agent planner  subject orchestrator  chain orchestrator  \
             target booker  granted \"a b\"  jti J  parent P  expires 1970-01-01T00:02:00Z  rules r1"
        );
        assert_eq!(lines[1], "1970-01-01T00:00:00Z  refused   client_authentication  reason counted");
        assert_eq!(lines[2], "    3 x client_wrong_secret  claimed x  from 127.0.0.1");
        assert_eq!(lines.len(), 3, "{text}");
        let full = render(serde_json::json!({"events": [{"time": 0, "decision": "revoked", "action": "a"}]}), false, 1);
        assert!(full.unwrap().contains("there may be more"));
        assert_eq!(render(serde_json::json!({"events": []}), false, 10).unwrap(), "no audit events match\n");
    }

    #[test]
    fn a_clients_text_cannot_drive_the_terminal() {
        assert_eq!(super::inert("booker"), "booker");
        assert_eq!(super::inert("x\u{1b}[2K\rforged\nline"), "x\\u{1b}[2K\\rforged\\nline");
    }
}
