//! State behind the broker: single-use ids (replay), revocation, the audit
//! trail (DESIGN.md §6) and pending human approvals. One trait each; every
//! implementation passes the same contract suite (`tests/api/store_contract.rs`).
//!
//! Every write returns only once it is durable: a caller that got `Ok` may
//! tell its client the revocation, the used id or the audit event is kept.
//!
//! ## A token's life (DESIGN.md §2.4)
//!
//! - **Exact cut-offs.** Deprovisioning a principal records a cut-off
//!   instant in microseconds ([`UnixMicros`], from the broker's clock) and,
//!   for an admin's deprovisioning, blocks it, in one atomic write
//!   ([`RevocationStore::deprovision`]). Baton tokens carry their issue
//!   instant in `delegation.iat_micros` (and each ancestor's in its hop), so
//!   a token issued after a reinstatement, even within the same second as
//!   the deprovisioning, is not cut off. `iat` and `exp` stay whole seconds.
//! - **Status follows the ancestors.** A principal is compared with the
//!   issue instant of the first token of the lineage that named it
//!   ([`Lineage::of`]): the subject from the root, an agent from the first
//!   token it obtained or that was addressed to it. An exchange is made by
//!   the agent the parent is addressed to, so a child minted from a parent
//!   issued before its agent's cut-off (in the race with the
//!   deprovisioning) is dead with its parent, after reinstatement too; and
//!   a child of a revoked parent carries the parent's id. A token only
//!   Baton's older releases issued, or a person's sign-in at a provider,
//!   counts from the first microsecond of its `iat`; a cut-off recorded in
//!   whole seconds counts as the last microsecond of its second, so older
//!   state kills exactly what it killed before.
//! - **Reinstatement moves the cut-off.** Lifting an admin's block also
//!   moves the cut-off to that instant, in the same write
//!   ([`Blocking::Lift`]): a chain's first token (an agent's own, or the
//!   first hop of a person's chain), which nothing before it names, minted
//!   in the instant between its agent's block check and the deprovisioning's
//!   write, stays dead too. What is issued after the reinstatement lives.
//! - **What is left.** On several nodes, cut-offs and issue instants are as
//!   ordered as the nodes' clocks are.
//!
//! ## Evidence
//!
//! An audit store keeps issuance events in indexes of their own
//! ([`AuditStore::issued`], [`AuditStore::children`]), so a trace finds a
//! token, its ancestors and its children whatever number of refusals or
//! revocations name it; a repeated revocation is not recorded again
//! ([`RevocationStore::revoke`] tells whether it is the first). Events are
//! kept for a [`Retention`] (default [`DEFAULT_AUDIT_RETENTION_DAYS`] days),
//! except the issuance or revocation of a token that has not expired. (On
//! Redis the stream is trimmed by age alone: a retention of at least a day,
//! the longest any token lives, keeps every live token's events there; a
//! shorter one, for tests, leaves its issuance in its issuance key only.
//! Tokens a Redis store recorded before it kept issuance keys are still
//! found, but not their children.)

pub mod approvals;
pub mod data_dir;
pub mod embedded;
mod embedded_approvals;
pub mod lifecycle;
pub mod memory;
pub mod mirror;
pub mod redis;
mod redis_approvals;
mod redis_lifecycle;
mod redis_link;
mod redis_sessions;
pub mod redis_target;
pub mod sessions;

use std::collections::BTreeSet;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use approvals::{Approval, ApprovalId, ApprovalState, ApprovalStore, Decision, Fingerprint};
pub use lifecycle::LifecycleStore;
pub use sessions::{SessionKey, SessionRecord, SessionStore};

use crate::claims::{Claims, TokenId};
use crate::clock::{UnixMicros, UnixTime};
use crate::ids::{AgentId, Subject};

/// State that cannot be read or written. Callers fail closed whatever the
/// variant (DESIGN.md §2.5); the variant tells an operator where to look.
/// Every text is the store's own, never a value from a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The backend does not answer, not in time, or not any more (a Redis
    /// server down, a stopped writer, a mirror too stale to trust).
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// Stored data, or a backend's reply, is not what was written or what
    /// the protocol promises; or a value cannot be encoded to be stored.
    #[error("state store unavailable: {0}")]
    Corrupt(String),
    /// The local database or its folder cannot be created, opened, read or
    /// written.
    #[error("state store unavailable: {0}")]
    Io(String),
    /// The store is configured so that it cannot work (a Redis URL it cannot use).
    #[error("state store unavailable: {0}")]
    Misconfigured(String),
    /// A write was asked of a store that only reads (a revocation mirror).
    #[error("state store unavailable: read-only mirror")]
    ReadOnly,
    /// In-process state was left half-changed by a panic elsewhere.
    #[error("state store unavailable: {0}")]
    Poisoned(String),
}

impl StoreError {
    /// What went wrong, without the "state store unavailable" prefix.
    pub fn detail(&self) -> &str {
        match self {
            StoreError::Unavailable(detail)
            | StoreError::Corrupt(detail)
            | StoreError::Io(detail)
            | StoreError::Misconfigured(detail)
            | StoreError::Poisoned(detail) => detail,
            StoreError::ReadOnly => "read-only mirror",
        }
    }
}

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
    Agent(AgentId),
    /// A chain's subject.
    Subject(Subject),
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
/// and every principal it names, each with the instant it was first named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineage {
    /// The token and its ancestors, the token first.
    pub jtis: Vec<TokenId>,
    /// Its subject, every agent that obtained it or an ancestor or held one,
    /// and the agent it is addressed to; each once.
    pub principals: Vec<Named>,
}

/// A principal a token names, and since when its lineage names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// Who.
    pub principal: Principal,
    /// The issue instant of the first token of the lineage (root first) that
    /// named them. A deprovisioning's cut-off is compared with this, not with
    /// the token's own issue: a child minted after the cut-off, from a parent
    /// minted before it, is as dead as its parent.
    pub since: UnixMicros,
}

impl Lineage {
    /// The lineage of a Baton token. Its holder (`aud`) counts too: a token
    /// addressed to a deprovisioned agent must not be exchanged into a fresh
    /// one that outlives the deprovisioning.
    ///
    /// Each principal is named since the first token of the path that names
    /// it: the subject from the root; an agent from the first hop it obtained
    /// or was addressed to. A token (or hop) minted before Baton recorded
    /// issue instants counts from the first microsecond of its `iat`.
    pub fn of(claims: &Claims) -> Lineage {
        let mut jtis = vec![claims.jti.clone()];
        jtis.extend(claims.delegation.ancestry().cloned());
        let own = claims.delegation.iat_micros.unwrap_or(UnixMicros::start_of(claims.iat));
        let hops = &claims.delegation.hops;
        let root = hops.first().map_or(own, |hop| hop.iat_micros.unwrap_or(UnixMicros::start_of(hop.iat)));
        let mut lineage = Lineage { jtis, principals: Vec::new() };
        lineage.name(Principal::Subject(claims.sub.clone()), root);
        // A chain's root from an identity provider names that provider's
        // client and audience, not agents.
        for hop in hops.iter().filter(|hop| hop.iss.is_none()) {
            let since = hop.iat_micros.unwrap_or(UnixMicros::start_of(hop.iat));
            lineage.name(Principal::Agent(hop.agent.clone()), since);
            lineage.name(Principal::Agent(AgentId::of_audience(&hop.aud)), since);
        }
        lineage.name(Principal::Agent(claims.client_id.clone()), own);
        lineage.name(Principal::Agent(AgentId::of_audience(&claims.aud)), own);
        lineage
    }

    /// A lineage whose principals are all named since `since`.
    pub fn at(jtis: Vec<TokenId>, since: UnixMicros, principals: impl IntoIterator<Item = Principal>) -> Lineage {
        let mut lineage = Lineage { jtis, principals: Vec::new() };
        for principal in principals {
            lineage.name(principal, since);
        }
        lineage
    }

    /// Names `principal` since `since`, unless it is named already (by an
    /// earlier token of the path).
    pub fn name(&mut self, principal: Principal, since: UnixMicros) {
        if !self.principals.iter().any(|named| named.principal == principal) {
            self.principals.push(Named { principal, since });
        }
    }
}

/// A principal's cut-off, written in one step with what it does to the
/// principal's block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoff {
    /// Tokens naming the principal since this instant or before are dead.
    pub at: UnixMicros,
    /// When the last of those expires.
    pub until: UnixTime,
    /// What happens to the block, in the same write.
    pub block: Blocking,
}

/// What a cut-off does to its principal's block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocking {
    /// Blocks the principal: an admin's deprovisioning.
    Block,
    /// Lifts the block, if there is one, and only then moves the cut-off (to
    /// the instant the block is lifted): a reinstatement. Whatever was
    /// issued while the principal was blocked, a token that slipped past the
    /// block check as the deprovisioning landed included, stays dead; what
    /// is issued from then on lives. A principal not blocked is left alone.
    Lift,
    /// Leaves the block as it is: an agent past its registered life.
    Keep,
}

/// Revoked tokens and deprovisioned principals.
#[async_trait]
pub trait RevocationStore: Send + Sync {
    /// Revokes `jti`, and so every token descending from it, until `until`:
    /// the expiry of the revoked token, which no descendant outlives.
    /// Answers whether the token was not revoked before (a repeated
    /// revocation only keeps the later `until`).
    async fn revoke(&self, jti: &TokenId, until: UnixTime) -> Result<bool, StoreError>;

    /// Deprovisions `principal` at `cutoff.at`, and blocks it or lifts its
    /// block as `cutoff.block` says, in one atomic write: every token whose
    /// lineage named the principal at or before `at` is dead. A later
    /// cut-off moves `at` forward, never back.
    async fn deprovision(&self, principal: &Principal, cutoff: &Cutoff) -> Result<(), StoreError>;

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

/// The rule every store applies to what it read for a lineage: revoked if
/// any id is; else deprovisioned if any principal is blocked, or was cut off
/// at or after the instant the lineage first named it; else active.
pub(crate) fn verdict(
    revoked: bool,
    blocked: impl IntoIterator<Item = bool>,
    cutoffs: impl IntoIterator<Item = (UnixMicros, Option<UnixMicros>)>,
) -> Status {
    if revoked {
        return Status::Revoked;
    }
    let cut = cutoffs.into_iter().any(|(since, cutoff)| cutoff.is_some_and(|at| at >= since));
    if blocked.into_iter().any(|blocked| blocked) || cut {
        Status::Deprovisioned
    } else {
        Status::Active
    }
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
    /// When the issued token was issued, in microseconds (its
    /// `delegation.iat_micros`): a trace orders it against cut-offs exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat_micros: Option<UnixMicros>,
    /// The thumbprint of the key the issued token is bound to (its
    /// `cnf.jkt`, RFC 9449 §6), when it is DPoP-bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_jkt: Option<String>,
    /// The rules that permitted the grant.
    #[serde(default)]
    pub rules: Vec<String>,
    /// The client the request claimed to be, authenticated or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_client: Option<String>,
    /// The client's network address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_address: Option<String>,
    /// Who made an admin action: `admin API`, or `console: <who signed in>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
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
    /// A token request waits for a person's approval.
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

    /// The issuance event of token `jti`, looked for among every event that
    /// names it.
    pub fn issuance_of(jti: &TokenId) -> AuditFilter {
        AuditFilter {
            jti: Some(jti.clone()),
            decision: Some(AuditDecision::Issued),
            limit: Some(1),
            ..AuditFilter::default()
        }
    }

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

    /// The issuance event of token `jti`, found through an index of
    /// issuances only, so that no number of refusals or revocations naming
    /// the token can hide it. The default asks [`AuditStore::query`] for it
    /// by decision, which is correct but reads every event naming `jti`.
    async fn issued(&self, jti: &TokenId) -> Result<Option<AuditEvent>, StoreError> {
        Ok(self.query(&AuditFilter::issuance_of(jti)).await?.into_iter().next())
    }

    /// The issuance events of tokens exchanged from `parent`, at most `limit`
    /// of them (capped at [`AuditFilter::MAX_LIMIT`]), oldest first, found
    /// through an index of issuances only. The default asks
    /// [`AuditStore::query`], reading every event naming `parent` as parent.
    async fn children(&self, parent: &TokenId, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let filter = AuditFilter {
            parent_jti: Some(parent.clone()),
            decision: Some(AuditDecision::Issued),
            limit: Some(limit),
            ..AuditFilter::default()
        };
        let mut children = self.query(&filter).await?;
        children.reverse();
        Ok(children)
    }
}

/// Where a store's scan hands each matching event, newest first; it answers
/// true once it wants no more, and the scan stops.
pub(crate) type Take<'a> = dyn FnMut(AuditEvent) -> bool + Send + 'a;

/// A store for one node: its console sessions and its agents' lifecycle
/// are that node's own ([`sessions::LocalSessions`],
/// [`lifecycle::LocalLifecycle`]); the traits follow from these two.
pub trait OneNode {
    /// The node's console sessions.
    fn sessions(&self) -> &sessions::LocalSessions;
    /// The node's record of its agents' lifecycle.
    fn lifecycle(&self) -> &lifecycle::LocalLifecycle;
}

#[async_trait]
impl<T: OneNode + Send + Sync> SessionStore for T {
    async fn open_session(&self, key: &SessionKey, session: &SessionRecord, now: UnixTime) -> Result<(), StoreError> {
        self.sessions().open_session(key, session, now).await
    }

    async fn session(&self, key: &SessionKey, now: UnixTime) -> Result<Option<SessionRecord>, StoreError> {
        self.sessions().session(key, now).await
    }

    async fn close_session(&self, key: &SessionKey) -> Result<(), StoreError> {
        self.sessions().close_session(key).await
    }
}

#[async_trait]
impl<T: OneNode + Send + Sync> LifecycleStore for T {
    async fn known_agents_missing(&self, current: &BTreeSet<String>) -> Result<Vec<String>, StoreError> {
        self.lifecycle().known_agents_missing(current).await
    }

    async fn forget_known(&self, agent: &str) -> Result<(), StoreError> {
        self.lifecycle().forget_known(agent).await
    }

    async fn is_retired(&self, agent: &str, expires: &str) -> Result<bool, StoreError> {
        self.lifecycle().is_retired(agent, expires).await
    }

    async fn mark_retired(&self, agent: &str, expires: &str) -> Result<(), StoreError> {
        self.lifecycle().mark_retired(agent, expires).await
    }

    async fn claim(&self, work: &str) -> Result<bool, StoreError> {
        self.lifecycle().claim(work).await
    }
}

/// Everything a broker keeps: one store serves every trait.
pub trait StateStore:
    ReplayStore + RevocationStore + AuditStore + ApprovalStore + SessionStore + LifecycleStore
{
}

impl<T: ReplayStore + RevocationStore + AuditStore + ApprovalStore + SessionStore + LifecycleStore> StateStore for T {}

/// Days audit events are kept by default.
pub const DEFAULT_AUDIT_RETENTION_DAYS: u32 = 90;

/// How long a store keeps audit events: older ones are dropped, except the
/// issuance or revocation of a token that has not expired, which is kept
/// however old it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    seconds: i64,
}

impl Retention {
    /// Events are kept `days` days.
    pub fn days(days: u32) -> Retention {
        Retention { seconds: i64::from(days).saturating_mul(86_400) }
    }

    /// Events are kept `seconds` seconds (tests: a Redis store trims on its
    /// own clock, which cannot be moved days ahead).
    pub fn seconds(seconds: u32) -> Retention {
        Retention { seconds: i64::from(seconds) }
    }

    /// The retention in seconds.
    pub fn as_seconds(self) -> i64 {
        self.seconds
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention::days(DEFAULT_AUDIT_RETENTION_DAYS)
    }
}

/// Whether retention must keep `event` at `now`, however old it is: it is
/// the issuance (or revocation) of a token that has not expired yet.
pub(crate) fn outlives(event: &AuditEvent, now: UnixTime) -> bool {
    event.jti.is_some() && event.expires_at.is_some_and(|expires_at| expires_at > now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_keep_their_stored_forms() {
        // Keys and notices written before the ids were typed must still be read.
        let agent = Principal::Agent(AgentId::new("a1"));
        let subject = Principal::Subject(Subject::new("user:alice"));
        assert_eq!(agent.key(), "agent:a1");
        assert_eq!(subject.key(), "subject:user:alice");
        let written = r#"[{"kind":"agent","id":"a1"},{"kind":"subject","id":"user:alice"}]"#;
        let both = vec![agent, subject];
        assert_eq!(serde_json::to_string(&both).unwrap(), written);
        assert_eq!(serde_json::from_str::<Vec<Principal>>(written).unwrap(), both);
    }
}
