//! State behind the broker: single-use ids (replay), revocation, the audit
//! trail (DESIGN.md §6) and pending human approvals. One trait each; every
//! implementation passes the same contract suite (`tests/api/store_contract.rs`).
//!
//! Every write returns only once it is durable: a caller that got `Ok` may
//! tell its client the revocation, the used id or the audit event is kept.

pub mod approvals;
pub mod data_dir;
pub mod embedded;
mod embedded_approvals;
pub mod memory;
pub mod mirror;
pub mod redis;
mod redis_approvals;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use approvals::{Approval, ApprovalId, ApprovalState, ApprovalStore, Decision, Fingerprint};

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
    /// already recorded. The entry is kept until `until` and may be forgotten
    /// after it (`now` tells how long that is).
    async fn use_once(&self, id: &str, until: UnixTime, now: UnixTime) -> Result<Use, StoreError>;
}

/// Someone whose deprovisioning kills the tokens naming them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "id")]
pub enum Principal {
    /// A registered agent, anywhere in a token's chain.
    Agent(String),
    /// A chain's subject.
    Subject(String),
}

impl Principal {
    /// A stable text key, `agent:<id>` or `subject:<id>`.
    pub fn key(&self) -> String {
        match self {
            Principal::Agent(id) => format!("agent:{id}"),
            Principal::Subject(id) => format!("subject:{id}"),
        }
    }
}

/// Whether a token may still be used (DESIGN.md §2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Nothing kills it.
    Active,
    /// It or an ancestor was revoked.
    Revoked,
    /// Its subject or an agent of its chain was deprovisioned after it was
    /// issued, or is blocked now.
    Deprovisioned,
}

/// What a revocation check needs to know of a token: its id, its ancestry,
/// when it was issued, and every principal it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineage {
    /// The token and its ancestors, the token first.
    pub jtis: Vec<TokenId>,
    /// When the token was issued.
    pub issued_at: UnixTime,
    /// Its subject, every agent that obtained it or an ancestor, and the
    /// agent it is addressed to.
    pub principals: Vec<Principal>,
}

impl Lineage {
    /// The lineage of a Baton token. Its holder (`aud`) counts too: a token
    /// addressed to a deprovisioned agent must not be exchanged into a fresh
    /// one that outlives the deprovisioning.
    pub fn of(claims: &Claims) -> Lineage {
        let mut jtis = vec![claims.jti.clone()];
        jtis.extend(claims.delegation.ancestry().cloned());
        let mut principals = vec![Principal::Subject(claims.sub.clone())];
        // A chain's root from an identity provider names that provider's
        // client, not an agent.
        let hop_agents = claims.delegation.hops.iter().filter(|hop| hop.iss.is_none()).map(|hop| &hop.agent);
        let agents = hop_agents.chain([&claims.client_id, &claims.aud]);
        for agent in agents {
            let principal = Principal::Agent(agent.clone());
            if !principals.contains(&principal) {
                principals.push(principal);
            }
        }
        Lineage { jtis, issued_at: claims.iat, principals }
    }
}

/// Revoked tokens and deprovisioned principals.
#[async_trait]
pub trait RevocationStore: Send + Sync {
    /// Revokes `jti`, and so every token descending from it, until `until`:
    /// the expiry of the revoked token, which no descendant outlives.
    async fn revoke(&self, jti: &TokenId, until: UnixTime) -> Result<(), StoreError>;

    /// Deprovisions `principal` at `at`: every token naming it that was issued
    /// at or before `at` is dead. `until` is when the last of those expires.
    /// A later deprovisioning moves `at` forward, never back.
    async fn deprovision(&self, principal: &Principal, at: UnixTime, until: UnixTime) -> Result<(), StoreError>;

    /// Blocks a principal, or lifts the block: while blocked, an agent cannot
    /// authenticate and every token naming the principal is dead, whenever it
    /// was issued. Lifting the block revives nothing that a deprovisioning
    /// cut off; it only lets new tokens live.
    async fn block(&self, principal: &Principal, blocked: bool) -> Result<(), StoreError>;

    /// Whether anything in `lineage` kills the token: one lookup.
    async fn check(&self, lineage: &Lineage) -> Result<Status, StoreError>;

    /// Whether the store can be reached now (for readiness).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// An issuance or a refusal, as evidence (DESIGN.md §2.7).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditEvent {
    /// When.
    pub time: UnixTime,
    /// What was decided.
    pub decision: AuditDecision,
    /// Why it was refused, in internal detail (never sent to clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The grant type, or the admin or revocation action.
    pub action: String,
    /// The chain's subject, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The authenticated client, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The agents of the parent's chain, newest first.
    #[serde(default)]
    pub chain: Vec<String>,
    /// The target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The scopes asked, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes_asked: Option<String>,
    /// The scopes granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes_granted: Option<String>,
    /// The issued (or revoked) token's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<TokenId>,
    /// The parent token's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_jti: Option<TokenId>,
    /// When the issued token expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<UnixTime>,
    /// The rules that permitted the grant.
    #[serde(default)]
    pub rules: Vec<String>,
    /// The client the request claimed to be, authenticated or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_client: Option<String>,
    /// The client's network address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_address: Option<String>,
    /// The human approval the event concerns, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<AuditApproval>,
    /// For the one event that stands for an interval's refusals of
    /// unauthenticated requests (DESIGN.md §12): their counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refusals: Vec<RefusalCount>,
}

/// How many requests, whose client never authenticated, were refused for
/// one reason, claiming one client, from one address, in an interval.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefusalCount {
    /// Why: a fixed label, as in the metrics (`client_wrong_secret`, `not_form`…).
    pub reason: String,
    /// The client the requests claimed to be, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_client: Option<String>,
    /// The IP address they came from, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_address: Option<String>,
    /// Counted past the interval's bound on distinct keys: the claimed client
    /// and the address are not kept.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overflow: bool,
    /// How many.
    pub count: u64,
}

/// The approval an audit event concerns: its id and, once decided, who decided.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditApproval {
    /// The approval's id.
    pub id: ApprovalId,
    /// Who approved or denied it, once someone did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
}

/// The kind of decision an audit event records.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuditDecision {
    /// A token was issued.
    Issued,
    /// The request was refused.
    Refused,
    /// A token was revoked or a principal deprovisioned.
    Revoked,
    /// A token request waits for a person's approval (issue 7).
    Pending,
    /// A person approved a pending request.
    Approved,
    /// A person denied a pending request.
    Denied,
}

/// Which audit events to return. Every given field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFilter {
    /// Events of this client.
    pub agent: Option<String>,
    /// Events of this subject.
    pub subject: Option<String>,
    /// Events whose `jti` is this.
    pub jti: Option<TokenId>,
    /// Events whose `parent_jti` is this.
    pub parent_jti: Option<TokenId>,
    /// Events of this action: a grant type (`client_credentials`, the token
    /// exchange URN) for an agent's own token requests, or an admin or
    /// approver action (`deprovision`, `reinstate`, `expired`, `approval_approve`…).
    pub action: Option<String>,
    /// Events of this decision (`issued`, `refused`, `pending`…).
    pub decision: Option<AuditDecision>,
    /// Events at or after this time.
    pub since: Option<UnixTime>,
    /// Events at or before this time.
    pub until: Option<UnixTime>,
    /// At most this many events, newest first (default and cap: 1000).
    pub limit: Option<usize>,
}

impl AuditFilter {
    /// The most events one query returns.
    pub const MAX_LIMIT: usize = 1000;

    /// The most events one count reaches: it stops there, so that counting
    /// a busy agent's day stays a bounded read.
    pub const MAX_COUNT: usize = 100_000;

    /// The effective limit.
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(Self::MAX_LIMIT).clamp(1, Self::MAX_LIMIT)
    }

    /// Whether `event` matches every given field.
    pub fn matches(&self, event: &AuditEvent) -> bool {
        self.agent.as_ref().is_none_or(|agent| event.agent.as_ref() == Some(agent))
            && self.subject.as_ref().is_none_or(|subject| event.subject.as_ref() == Some(subject))
            && self.jti.as_ref().is_none_or(|jti| event.jti.as_ref() == Some(jti))
            && self.parent_jti.as_ref().is_none_or(|parent| event.parent_jti.as_ref() == Some(parent))
            && self.action.as_ref().is_none_or(|action| &event.action == action)
            && self.decision.is_none_or(|decision| event.decision == decision)
            && self.since.is_none_or(|since| event.time >= since)
            && self.until.is_none_or(|until| event.time <= until)
    }
}

/// The audit trail.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Records one event; `Ok` means it is durable.
    async fn record(&self, event: AuditEvent) -> Result<(), StoreError>;

    /// Events matching `filter`, newest first, at most `filter.limit()`.
    async fn query(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError>;

    /// How many events match `filter`, whatever its `limit`, up to
    /// [`AuditFilter::MAX_COUNT`].
    async fn count(&self, filter: &AuditFilter) -> Result<usize, StoreError>;
}

/// Where a store's scan hands each matching event, newest first; it answers
/// true once it wants no more, and the scan stops.
pub(crate) type Take<'a> = dyn FnMut(AuditEvent) -> bool + Send + 'a;

/// Everything a broker keeps: one store serves every trait.
pub trait StateStore: ReplayStore + RevocationStore + AuditStore + ApprovalStore {}

impl<T: ReplayStore + RevocationStore + AuditStore + ApprovalStore> StateStore for T {}
