//! State behind the broker: single-use ids (replay), revocation, and the
//! audit trail (DESIGN.md §6). One trait each; every implementation must pass
//! the same contract tests.

pub mod memory;

use async_trait::async_trait;
use serde::Serialize;

use crate::claims::{Claims, TokenId};
use crate::clock::UnixTime;

/// State that cannot be read or written. Callers fail closed (DESIGN.md §2.5).
#[derive(Debug, Clone, thiserror::Error)]
#[error("state store unavailable: {0}")]
pub struct StoreError(pub String);

/// Whether an id was seen before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// First use: the id is now recorded.
    First,
    /// The id was already used.
    Replayed,
}

/// Single-use ids (client assertion `jti`s, later DPoP proof `jti`s).
#[async_trait]
pub trait ReplayStore: Send + Sync {
    /// Records `id` as used until `until`, atomically telling whether it was
    /// already recorded. An entry may be forgotten once `until` has passed,
    /// and is kept exactly that long (`now` tells how long that is).
    async fn use_once(&self, id: &str, until: UnixTime, now: UnixTime) -> Result<Use, StoreError>;
}

/// Whether a token may still be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Neither it nor any ancestor was revoked.
    Active,
    /// It or an ancestor was revoked.
    Revoked,
}

/// Revoked token ids, checked against a token and its whole ancestry.
#[async_trait]
pub trait RevocationStore: Send + Sync {
    /// Revokes `jti` (and so every token descending from it) until `until`,
    /// the latest expiry of anything it can cover.
    async fn revoke(&self, jti: &TokenId, until: UnixTime) -> Result<(), StoreError>;

    /// Whether `claims` or any of its ancestors was revoked: one lookup.
    async fn check(&self, claims: &Claims) -> Result<Status, StoreError>;
}

/// An issuance or a refusal, as evidence (DESIGN.md §2.7).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AuditEvent {
    /// When.
    pub time: UnixTime,
    /// What was decided.
    pub decision: AuditDecision,
    /// Why it was refused, in internal detail (never sent to clients).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The grant type.
    pub grant_type: String,
    /// The chain's subject, where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The authenticated acting agent, where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The agents of the parent's chain, newest first.
    pub chain: Vec<String>,
    /// The target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The scopes asked, as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes_asked: Option<String>,
    /// The scopes granted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes_granted: Option<String>,
    /// The issued token's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<TokenId>,
    /// The parent token's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_jti: Option<TokenId>,
    /// The rules that permitted the grant.
    pub rules: Vec<String>,
    /// The client's network address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_address: Option<String>,
}

/// The kind of decision an audit event records.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuditDecision {
    /// A token was issued.
    Issued,
    /// The request was refused.
    Refused,
}

/// Where audit events go.
#[async_trait]
pub trait AuditSink: Send + Sync {
    /// Records one event.
    async fn record(&self, event: AuditEvent) -> Result<(), StoreError>;
}
