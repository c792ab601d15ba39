//! The console's pages, rendered on the server. maud escapes every value
//! put into the markup, so an agent's id, purpose or owner is shown as text,
//! whatever it holds. No page carries a script.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use super::link;
use super::session::Session;
use super::tree::{self, Standing};
use crate::admin::{AgentReport, Trace, TraceNode};
use crate::policy::explain::{Explanation, Outcome};
use crate::store::{Approval, AuditEvent};

/// `markup` as an HTML answer with `status`.
pub fn page(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// The answer when the state store cannot be read or written: nothing is
/// shown stale, and nothing was done.
pub fn unavailable() -> Response {
    page(StatusCode::SERVICE_UNAVAILABLE, message("Unavailable", "The state store cannot be reached now."))
}

/// The frame every page shares: title, style sheet, and when signed in,
/// the navigation and the sign-out form (a state change: it carries the
/// session's CSRF token).
fn frame(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    framed(title, session, None, body)
}

/// [`frame`], with a `meta refresh` when given (`"5"`: reload every five
/// seconds, to follow a queue; `"0; url=…"`: move on at once), which needs
/// no script.
fn framed(title: &str, session: Option<&Session>, refresh: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                @if let Some(refresh) = refresh { meta http-equiv="refresh" content=(refresh); }
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Baton console" }
                link rel="stylesheet" href="/console/console.css";
            }
            body {
                header {
                    span.brand { "Baton" }
                    @if let Some(session) = session {
                        nav {
                            a href="/console/agents" { "Agents" } " "
                            a href="/console/trace" { "Trace" } " "
                            a href="/console/tokens" { "Tokens" } " "
                            a href="/console/approvals" { "Approvals" } " "
                            a href="/console/audit" { "Audit" } " "
                            a href="/console/explain" { "Explain" }
                        }
                        span.who { "Signed in as " (session.who) }
                        form.sign-out method="post" action="/console/sign-out" {
                            input type="hidden" name="csrf" value=(session.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// The sign-in form, with a notice when the last attempt failed, and the
/// way to the identity provider when one is configured.
pub fn sign_in(failed: bool, provider: Option<&str>) -> Markup {
    frame(
        "Sign in",
        None,
        html! {
            @if failed { p.notice role="alert" { "That is not the admin credential." } }
            @if let Some(issuer) = provider {
                p { a #provider.button href="/console/sign-in/provider" { "Sign in at " (issuer) } }
                p { "Or with the admin credential:" }
            }
            form method="post" action="/console/sign-in" {
                label for="admin_token" { "Admin token" }
                input #admin_token type="password" name="admin_token" autocomplete="current-password" required;
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// After a sign-in at the provider: the console opens by itself (a
/// navigation of its own, which sends the new `Strict` session cookie).
pub fn signed_in(member: &str) -> Markup {
    framed(
        "Signed in",
        None,
        Some("0; url=/console/agents"),
        html! {
            p #signed-in { "Signed in as " strong { (member) } ". " a href="/console/agents" { "Open the console" } }
        },
    )
}

/// The agent inventory, as `baton agents` shows it.
pub fn agents(reports: &[AgentReport], session: &Session) -> Markup {
    frame(
        "Agents",
        Some(session),
        html! {
            table #agents {
                thead { tr {
                    th { "Agent" } th { "Owner" } th { "Purpose" } th { "Expires" } th { "Active" }
                    th { "Last use" } th { "Issued (24 h)" } th { "Warnings" } th {}
                } }
                tbody {
                    @for agent in reports {
                        tr data-agent=(agent.id) {
                            td { a href=(link::tokens_of_agent(&agent.id)) { code { (agent.id) } } }
                            td { (agent.owner) }
                            td { (agent.purpose) }
                            td { (agent.expires) }
                            td {
                                // As `baton agents` says: blocked until reinstated, whatever its dates.
                                @if agent.blocked { span.blocked { "blocked" } } @else if agent.active { "yes" } @else { "no" }
                            }
                            td { @match agent.last_use { Some(at) => (at), None => "never" } }
                            td { (agent.tokens_issued_last_day) }
                            td { @for warning in &agent.warnings { p.warning { (warning) } } }
                            td { @if !agent.blocked { a.danger href=(link::deprovision(&agent.id, None)) { "Deprovision…" } } }
                        }
                    }
                }
            }
        },
    )
}

/// A page that says one thing, with the way back.
pub fn message(title: &str, text: &str) -> Markup {
    frame(title, None, html! { p { (text) " " a href="/console" { "Back to the console" } } })
}

/// The search form for a token: its id, or the token itself. It posts, so
/// that a pasted token never lands in a URL (history, proxy logs).
fn search(query: &str, csrf: &str) -> Markup {
    html! {
        form.search method="post" action="/console/trace" {
            input type="hidden" name="csrf" value=(csrf);
            label for="q" { "Token or token id (jti)" }
            input #q type="search" name="q" value=(query) autocomplete="off" spellcheck="false";
            button type="submit" { "Trace" }
        }
        p { "Or find " a href="/console/tokens" { "a subject's or an agent's tokens" } "." }
    }
}

/// A token's tree, its details, and what the audit trail says of it.
pub fn trace(query: &str, found: Option<(&Trace, Option<&[AuditEvent]>)>, session: &Session) -> Markup {
    let csrf = session.csrf.as_str();
    frame(
        "Trace",
        Some(session),
        html! {
            (search(query, csrf))
            @match found {
                None => @if !query.is_empty() { p.notice role="status" { "No token with that id is known." } },
                Some((trace, events)) => {
                    @if trace.truncated { p.notice { "The tree is larger than shown." } }
                    div.picture { (tree::picture(trace)) }
                    (details(&trace.token))
                    @if Standing::of(&trace.token) == Standing::Live {
                        p { a.danger href=(link::revoke(&trace.token.jti.0)) { "Revoke this token and its descendants…" } }
                    }
                    @if let Some(agent) = &trace.token.agent {
                        p {
                            a.danger href=(link::deprovision(agent, Some(&trace.token.jti.0))) {
                                "Deprovision the agent " (agent) "…"
                            }
                        }
                    }
                    h2 { "Audit events" }
                    @match events {
                        Some(events) => (audit_table(events)),
                        None => p.notice role="status" { "The audit trail cannot be read now." },
                    }
                }
            }
        },
    )
}

fn details(node: &TraceNode) -> Markup {
    html! {
        dl #details data-jti=(node.jti.0) {
            dt { "Token" } dd { code { (node.jti.0) } }
            dt { "State" } dd { (Standing::of(node).name()) }
            dt { "Subject" } dd {
                @match &node.subject { Some(subject) => a href=(link::tokens_of_subject(subject)) { (subject) }, None => "?" }
            }
            dt { "Agent" } dd {
                @match &node.agent { Some(agent) => a href=(link::tokens_of_agent(agent)) { (agent) }, None => "?" }
            }
            dt { "Target" } dd { (node.target.as_deref().unwrap_or("?")) }
            dt { "Scopes" } dd { (node.scope.as_deref().unwrap_or("")) }
            dt { "Issued" } dd { (node.issued_at) }
            dt { "Expires" } dd { @match node.expires_at { Some(at) => (at), None => "?" } }
            @if let Some(approval) = &node.approval {
                dt { "Approved by a person" } dd { code { (approval) } }
            }
            @if let Some(jkt) = &node.dpop_jkt {
                dt { "Bound to a key (DPoP)" } dd { "thumbprint " code { (jkt) } }
            }
        }
    }
}

fn audit_table(events: &[AuditEvent]) -> Markup {
    html! {
        table.audit {
            thead { tr {
                th { "Time" } th { "Action" } th { "Decision" } th { "Subject" } th { "Agent" } th { "Target" }
                th { "Scopes" } th { "Reason" } th { "By" } th { "Token" }
            } }
            tbody {
                @for event in events {
                    tr {
                        td { (event.time) }
                        td { (event.action) }
                        td { (format!("{:?}", event.decision).to_lowercase()) }
                        td { (event.subject.as_deref().unwrap_or("")) }
                        td { (event.agent.as_deref().unwrap_or("")) }
                        td { (event.target.as_deref().unwrap_or("")) }
                        td { (event.scopes_granted.as_deref().or(event.scopes_asked.as_deref()).unwrap_or("")) }
                        td { (event.reason.as_deref().unwrap_or("")) }
                        td.by { (event.by.as_deref().unwrap_or("")) }
                        td { @if let Some(jti) = &event.jti { a href=(link::trace(&jti.0)) { code { (jti.0) } } } }
                    }
                }
            }
        }
    }
}

/// The live tokens among those counted, and the agents holding them.
#[derive(Default)]
pub struct Tally {
    /// How many live tokens.
    pub live: usize,
    /// Their holders, sorted, each once.
    pub holders: Vec<String>,
}

impl Tally {
    /// Counts `node` when it is live.
    fn count(&mut self, node: &TraceNode) {
        if Standing::of(node) != Standing::Live {
            return;
        }
        self.live += 1;
        if let Some(holder) = node.agent.as_ref().filter(|holder| !self.holders.contains(holder)) {
            self.holders.push(holder.clone());
            self.holders.sort();
        }
    }

    /// "2 live tokens, held by booker, planner".
    fn said(&self) -> Markup {
        html! {
            strong { (self.live) } " live " @if self.live == 1 { "token" } @else { "tokens" }
            @if !self.holders.is_empty() { ", held by " (self.holders.join(", ")) }
        }
    }
}

/// What revoking `node` kills: it and its descendants.
pub fn blast_radius(node: &TraceNode) -> Tally {
    let mut tally = Tally::default();
    let mut stack = vec![node];
    while let Some(node) = stack.pop() {
        tally.count(node);
        stack.extend(node.children.iter());
    }
    tally
}

/// The confirmation before a revocation: exactly what will die.
pub fn revoke(trace: &Trace, session: &Session) -> Markup {
    let csrf = session.csrf.as_str();
    frame(
        "Revoke",
        Some(session),
        html! {
            p #blast-radius {
                "Revoking " code { (trace.token.jti.0) } " kills " (blast_radius(&trace.token).said())
                ". Its ancestors stay live."
            }
            div.picture { (tree::picture(trace)) }
            form method="post" action="/console/revoke" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="jti" value=(trace.token.jti.0);
                button.danger type="submit" { "Revoke" }
                " " a href=(link::trace(&trace.token.jti.0)) { "Cancel" }
            }
        },
    )
}

/// How often the approvals page reloads itself, in seconds.
pub const APPROVALS_REFRESH: u32 = 5;

/// The requests waiting for a person, newest first, each linking to the
/// page where it is decided. The queue reloads itself and holds no button,
/// so that a row moving under the pointer is never decided by mistake.
pub fn approvals(pending: &[Approval], older: Option<&str>, session: &Session) -> Markup {
    framed(
        "Approvals",
        Some(session),
        Some(&APPROVALS_REFRESH.to_string()),
        html! {
            @if pending.is_empty() { p #no-approvals { "Nothing waits for a person." } }
            @else {
                table #approvals {
                    thead { tr {
                        th { "Approval" } th { "Agent" } th { "Subject" } th { "Target" } th { "Scopes" }
                        th { "Approver" } th { "Expires" }
                    } }
                    tbody {
                        @for approval in pending {
                            tr data-approval=(approval.id.0) {
                                td { a.decide href={ "/console/approval?id=" (link::encoded(&approval.id.0)) } { code { (approval.id.0) } } }
                                td { (approval.request.agent) }
                                td { (approval.request.subject) }
                                td { (approval.request.target) }
                                td { (approval.request.scope) }
                                td { (approval.approver) }
                                td { (approval.expires_at) }
                            }
                        }
                    }
                }
            }
            @if let Some(before) = older {
                p { a #older href={ "/console/approvals?before=" (link::encoded(before)) } { "Older requests…" } }
            }
        },
    )
}

/// One request waiting for a person: what it asks, from which parent, and
/// the decision, which the approver signs by typing the name the broker
/// expects (as `baton approvals approve --as` does).
pub fn approval(approval: &Approval, session: &Session) -> Markup {
    let csrf = session.csrf.as_str();
    frame(
        "Decide",
        Some(session),
        html! {
            dl #details data-approval=(approval.id.0) {
                dt { "Approval" } dd { code { (approval.id.0) } }
                dt { "Agent" } dd { (approval.request.agent) }
                dt { "Subject" } dd { (approval.request.subject) }
                dt { "Target" } dd { (approval.request.target) }
                dt { "Scopes" } dd { (approval.request.scope) }
                dt { "Needs a person for" } dd { (approval.scopes_needing_approval) " (" (approval.marked_by.join(", ")) ")" }
                @if let Some(parent) = &approval.request.parent_jti {
                    dt { "Parent token" } dd { a href=(link::trace(&parent.0)) { code { (parent.0) } } }
                }
                dt { "Approver" } dd { (approval.approver) }
                dt { "Expires" } dd { (approval.expires_at) }
            }
            form.decide method="post" action="/console/approvals" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="id" value=(approval.id.0);
                label for="approver" { "Your name, as the approver" }
                input #approver type="text" name="approver" autocomplete="off" required;
                button.approve type="submit" name="verdict" value="approve" { "Approve" }
                " "
                button.deny type="submit" name="verdict" value="deny" { "Deny" }
            }
        },
    )
}

/// What deprovisioning `agent` kills in `trace`: every token the agent
/// obtained, is addressed to, or descends from one of those (it is then in
/// the chain).
pub fn agent_blast_radius(trace: &Trace, agent: &str) -> Tally {
    let names = |node: &TraceNode| node.agent.as_deref() == Some(agent) || node.target.as_deref() == Some(agent);
    let mut tally = Tally::default();
    let mut above = false;
    for ancestor in &trace.ancestors {
        above = above || names(ancestor);
        if above {
            tally.count(ancestor);
        }
    }
    let mut stack = vec![(&trace.token, above)];
    while let Some((node, inherited)) = stack.pop() {
        let dies = inherited || names(node);
        if dies {
            tally.count(node);
        }
        stack.extend(node.children.iter().map(|child| (child, dies)));
    }
    tally
}

/// Where a deprovisioning is confirmed from: the tree of one token, or the
/// list of the agent's own tokens.
pub enum Seen<'a> {
    /// The tree of a token the agent is in.
    Tree(&'a Trace),
    /// The newest tokens the agent obtained.
    Tokens(&'a [TraceNode]),
}

/// The confirmation before an agent is deprovisioned: what dies among what
/// is shown, and that the agent is blocked until reinstated.
pub fn deprovision(agent: &str, seen: Seen<'_>, session: &Session) -> Markup {
    let csrf = session.csrf.as_str();
    let dies = match seen {
        Seen::Tree(trace) => html! { "in this tree " (agent_blast_radius(trace, agent).said()) "." },
        Seen::Tokens(tokens) => {
            let mut tally = Tally::default();
            tokens.iter().for_each(|token| tally.count(token));
            html! { "of the newest " (tokens.len()) " it obtained, " (tally.said()) ", and whatever descends from them." }
        }
    };
    frame(
        "Deprovision",
        Some(session),
        html! {
            p #blast-radius {
                "Deprovisioning " code { (agent) } " kills every token it obtained, is addressed to or appears in the chain of, everywhere; "
                (dies)
                " It cannot authenticate until it is reinstated (" code { "baton reinstate agent " (agent) } ")."
            }
            @match seen {
                Seen::Tree(trace) => div.picture { (tree::picture(trace)) },
                Seen::Tokens(tokens) => (token_table(tokens)),
            }
            form method="post" action="/console/deprovision" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="agent" value=(agent);
                @if let Seen::Tree(trace) = seen { input type="hidden" name="jti" value=(trace.token.jti.0); }
                button.danger type="submit" { "Deprovision" }
                " "
                @match seen {
                    Seen::Tree(trace) => a href=(link::trace(&trace.token.jti.0)) { "Cancel" },
                    Seen::Tokens(_) => a href=(link::tokens_of_agent(agent)) { "Cancel" },
                }
            }
        },
    )
}

/// A form of text fields, sent as a query string (asking changes nothing),
/// each refilled with what was `filled` in.
fn filter_form(action: &str, fields: &[(&str, &str)], filled: &[(&str, String)], button: &str) -> Markup {
    html! {
        form.filters method="get" action=(action) {
            @for (name, label) in fields {
                @let value = filled.iter().find(|(filled, _)| filled == name).map_or("", |(_, value)| value.as_str());
                label for=(name) { (label) }
                input id=(name) type="text" name=(name) value=(value) autocomplete="off";
            }
            button type="submit" { (button) }
        }
    }
}

/// The fields of the token search.
pub const TOKEN_FIELDS: [(&str, &str); 2] =
    [("subject", "Subject (a person, or an agent for itself)"), ("agent", "Agent that obtained them")];

/// The tokens of a subject or an agent: the search, refilled, and what it
/// found or why it could not be read.
pub fn tokens(filled: &[(&str, String)], found: Option<Result<&[TraceNode], &str>>, session: &Session) -> Markup {
    let agent = filled.iter().find(|(name, _)| *name == "agent").map(|(_, value)| value.as_str());
    frame(
        "Tokens",
        Some(session),
        html! {
            (filter_form("/console/tokens", &TOKEN_FIELDS, filled, "Find"))
            @match found {
                None => p { "Name a subject, an agent, or both." },
                Some(Err(reason)) => p.notice role="alert" { (reason) },
                Some(Ok(tokens)) => {
                    p #found { (tokens.len()) @if tokens.len() == 1 { " token" } @else { " tokens" } ", newest first" }
                    (token_table(tokens))
                    @if let Some(agent) = agent {
                        p { a.danger href=(link::deprovision(agent, None)) { "Deprovision the agent " (agent) "…" } }
                    }
                }
            }
        },
    )
}

/// Tokens as rows: state, id (linking to its tree), who, for what, when.
fn token_table(tokens: &[TraceNode]) -> Markup {
    html! {
        table #tokens {
            thead { tr {
                th { "State" } th { "Token" } th { "Agent" } th { "Subject" } th { "Target" } th { "Scopes" }
                th { "Issued" } th { "Expires" } th { "Marks" }
            } }
            tbody {
                @for token in tokens {
                    @let standing = Standing::of(token).name();
                    tr data-jti=(token.jti.0) data-status=(standing) {
                        td class={ "state " (standing) } { (standing) }
                        td { a href=(link::trace(&token.jti.0)) { code { (token.jti.0) } } }
                        td { (token.agent.as_deref().unwrap_or("?")) }
                        td { (token.subject.as_deref().unwrap_or("?")) }
                        td { (token.target.as_deref().unwrap_or("?")) }
                        td { (token.scope.as_deref().unwrap_or("")) }
                        td { (token.issued_at) }
                        td { @match token.expires_at { Some(at) => (at), None => "?" } }
                        td {
                            @if token.approval.is_some() { span.approved { "approved" } " " }
                            @if token.dpop_jkt.is_some() { span.dpop { "DPoP" } }
                        }
                    }
                }
            }
        }
    }
}

/// The filters of the audit search, as the admin API has them.
pub const AUDIT_FILTERS: [(&str, &str); 8] = [
    ("agent", "Agent"),
    ("subject", "Subject"),
    ("jti", "Token id"),
    ("action", "Action"),
    ("decision", "Decision (issued, refused, revoked, pending, approved, denied)"),
    ("since", "Since (RFC 3339 or Unix seconds)"),
    ("until", "Until (RFC 3339 or Unix seconds)"),
    ("limit", "At most (1 to 1000)"),
];

/// The audit search: its filters, refilled, and what they found or why
/// they could not be read.
pub fn audit(filled: &[(&str, String)], found: Result<&[AuditEvent], &str>, session: &Session) -> Markup {
    frame(
        "Audit",
        Some(session),
        html! {
            (filter_form("/console/audit", &AUDIT_FILTERS, filled, "Search"))
            @match found {
                Ok(events) => {
                    p #found { (events.len()) @if events.len() == 1 { " event" } @else { " events" } ", newest first" }
                    (audit_table(events))
                }
                Err(reason) => p.notice role="alert" { (reason) },
            }
        },
    )
}

/// The fields of the policy explain form: a token request, as
/// `baton policy explain` and the admin API take it.
pub const EXPLAIN_FIELDS: [(&str, &str); 8] = [
    ("action", "Action (issue: the agent's own token; exchange: a hop)"),
    ("agent", "Acting agent"),
    ("target", "Target (a resource URI or an agent)"),
    ("scopes", "Scopes asked (space-separated; empty: all allowed)"),
    ("subject", "Subject (for an exchange)"),
    ("parent_scopes", "Parent token's scopes (for an exchange)"),
    ("chain", "Agents before it, newest first (space-separated)"),
    ("depth", "Depth of the new token"),
];

/// The policy explain form, refilled, and the answer: what the broker would
/// issue and the rules that decided each scope, or why it would refuse.
pub fn explain(filled: &[(&str, String)], answer: Option<Result<&Explanation, &str>>, session: &Session) -> Markup {
    frame(
        "Explain",
        Some(session),
        html! {
            (filter_form("/console/explain", &EXPLAIN_FIELDS, filled, "Explain"))
            @match answer {
                None => {},
                Some(Err(reason)) => p.notice role="alert" { (reason) },
                Some(Ok(explanation)) => {
                    @match &explanation.outcome {
                        Outcome::Granted { scopes, expires_in, rules, approval } => {
                            p #outcome data-result="granted" {
                                "Granted: " strong { (scopes.join(" ")) } " for " (explanation.target.as_deref().unwrap_or("?"))
                                ", " (expires_in) " s, by " (rules.join(", ")) "."
                                @if let Some(approval) = approval {
                                    " A person must approve " (approval.scopes.join(" ")) " first (" (approval.marked_by.join(", ")) ")."
                                }
                            }
                        }
                        Outcome::Refused { refusal } => {
                            p #outcome data-result="refused" { "Refused (" code { (refusal.code()) } "): " (refusal) }
                        }
                    }
                    @if !explanation.scopes.is_empty() {
                        table #scopes {
                            thead { tr { th { "Scope" } th { "Asked" } th { "Granted" } th { "Permitted by" } th { "Forbidden by" } th { "Failed" } } }
                            tbody {
                                @for scope in &explanation.scopes {
                                    tr data-scope=(scope.scope) {
                                        td { code { (scope.scope) } }
                                        td { @if scope.asked { "yes" } @else { "no" } }
                                        td { @if scope.verdict.allowed { "yes" } @else { "no" } }
                                        td { (scope.verdict.permitted_by.join(", ")) }
                                        td { (scope.verdict.forbidden_by.join(", ")) }
                                        td { (scope.verdict.failed.join(", ")) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}
