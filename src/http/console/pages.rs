//! The console's pages, rendered on the server. maud escapes every value
//! put into the markup, so an agent's id, purpose or owner is shown as text,
//! whatever it holds. No page carries a script.

use maud::{html, Markup, DOCTYPE};

use crate::admin::AgentReport;

/// The frame every page shares: title, style sheet, and when signed in,
/// the navigation and the sign-out form (a state change: it carries the
/// session's CSRF token).
fn frame(title: &str, csrf: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Baton console" }
                link rel="stylesheet" href="/console/console.css";
            }
            body {
                header {
                    span.brand { "Baton" }
                    @if let Some(csrf) = csrf {
                        nav { a href="/console/agents" { "Agents" } }
                        form.sign-out method="post" action="/console/sign-out" {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// The sign-in form, with a notice when the last attempt failed.
pub fn sign_in(failed: bool) -> Markup {
    frame(
        "Sign in",
        None,
        html! {
            @if failed { p.notice role="alert" { "That is not the admin credential." } }
            form method="post" action="/console/sign-in" {
                label for="admin_token" { "Admin token" }
                input #admin_token type="password" name="admin_token" autocomplete="current-password" required;
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// The agent inventory, as `baton agents` shows it.
pub fn agents(reports: &[AgentReport], csrf: &str) -> Markup {
    frame(
        "Agents",
        Some(csrf),
        html! {
            table #agents {
                thead { tr {
                    th { "Agent" } th { "Owner" } th { "Purpose" } th { "Expires" } th { "Active" }
                    th { "Last use" } th { "Issued (24 h)" } th { "Warnings" }
                } }
                tbody {
                    @for agent in reports {
                        tr data-agent=(agent.id) {
                            td { code { (agent.id) } }
                            td { (agent.owner) }
                            td { (agent.purpose) }
                            td { (agent.expires) }
                            td { @if agent.active { "yes" } @else { "no" } }
                            td { @match agent.last_use { Some(at) => (at), None => "never" } }
                            td { (agent.tokens_issued_last_day) }
                            td { @for warning in &agent.warnings { p.warning { (warning) } } }
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
