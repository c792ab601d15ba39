//! Announcing new pending approvals to the approvers: one JSON
//! `POST` to a configured URL per approval, sent in the background with a
//! bounded timeout. A webhook that fails is logged and changes nothing: the
//! request already got its `authorization_pending`, and approvers can list
//! pending approvals through the admin API (`GET /admin/approvals`).
//!
//! One post per approval: the broker announces only an approval the store
//! says it created, and the store creates one per request, atomically, so a
//! request repeated (even by concurrent calls) is announced once.
//!
//! The notice names the request, never a token: the agent's token stays with
//! the agent.

use std::time::Duration;

use serde::Serialize;

use crate::claims::{ScopeSet, TokenId};
use crate::clock::UnixTime;
use crate::store::{Approval, ApprovalId};

/// The most one announcement may take, connection included.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// A webhook that cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// Only `http://` URLs: this build's HTTP client has no TLS.
    #[error("the approval webhook must be an http:// URL (this build has no TLS client); use a local relay for https")]
    NotHttp,
    /// The HTTP client could not be built.
    #[error("the approval webhook's HTTP client: {0}")]
    Client(String),
}

/// Where pending approvals are announced.
#[derive(Debug, Clone)]
pub struct Webhook {
    url: String,
    client: reqwest::Client,
}

/// What the webhook receives for one new pending approval.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ApprovalNotice {
    /// Always `approval_requested`.
    pub event: &'static str,
    /// The approval's id, for `baton approvals approve|deny`.
    pub approval_id: ApprovalId,
    /// Whose authority the token would carry.
    pub subject: String,
    /// The agent asking.
    pub agent: String,
    /// The token the agent exchanges, by id; none for an agent's own token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_jti: Option<TokenId>,
    /// The target the token would be addressed to.
    pub target: String,
    /// Every scope the token would carry.
    pub scopes: ScopeSet,
    /// The scopes among them that need the approval.
    pub scopes_needing_approval: ScopeSet,
    /// Who may decide.
    pub approver: String,
    /// When it was asked for.
    pub created_at: UnixTime,
    /// When it expires.
    pub expires_at: UnixTime,
}

impl ApprovalNotice {
    /// The notice for `approval`.
    pub fn of(approval: &Approval) -> ApprovalNotice {
        ApprovalNotice {
            event: "approval_requested",
            approval_id: approval.id.clone(),
            subject: approval.request.subject.clone(),
            agent: approval.request.agent.clone(),
            parent_jti: approval.request.parent_jti.clone(),
            target: approval.request.target.clone(),
            scopes: approval.request.scope.clone(),
            scopes_needing_approval: approval.scopes_needing_approval.clone(),
            approver: approval.approver.clone(),
            created_at: approval.created_at,
            expires_at: approval.expires_at,
        }
    }
}

impl Webhook {
    /// A webhook posting to `url`. Redirects are not followed: the notice
    /// goes to the configured URL or nowhere.
    pub fn new(url: &str) -> Result<Webhook, WebhookError> {
        if !url.starts_with("http://") {
            return Err(WebhookError::NotHttp);
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(WEBHOOK_TIMEOUT)
            .connect_timeout(WEBHOOK_TIMEOUT)
            .build()
            .map_err(|error| WebhookError::Client(error.to_string()))?;
        Ok(Webhook { url: url.to_owned(), client })
    }

    /// Posts the notice for `approval` in the background; the caller does not
    /// wait, and a failure is only logged.
    pub fn announce(&self, approval: &Approval) {
        let notice = ApprovalNotice::of(approval);
        let webhook = self.clone();
        tokio::spawn(async move {
            if let Err(reason) = webhook.send(&notice).await {
                tracing::warn!(approval = %notice.approval_id, %reason, "approval webhook failed; approvers can list pending approvals through the admin API");
            }
        });
    }

    async fn send(&self, notice: &ApprovalNotice) -> Result<(), String> {
        let response = self.client.post(&self.url).json(notice).send().await.map_err(|error| {
            // The URL may carry credentials: name the failure, not the address.
            if error.is_timeout() {
                "timed out".to_owned()
            } else if error.is_connect() {
                "could not connect".to_owned()
            } else {
                "request failed".to_owned()
            }
        })?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered {}", response.status()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_are_accepted() {
        assert!(matches!(Webhook::new("https://hooks.example/approvals"), Err(WebhookError::NotHttp)));
        assert!(matches!(Webhook::new("ftp://x"), Err(WebhookError::NotHttp)));
        assert!(Webhook::new("http://127.0.0.1:9/approvals").is_ok());
    }
}
