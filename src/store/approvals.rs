//! Pending human approvals (issue 7): what an approval covers, its state, and
//! the trait every state store implements so that an approval asked on one
//! broker node can be decided and used on another.
//!
//! An approval covers exactly one request, named by its [`Fingerprint`], and
//! moves `pending → approved | denied`, then `approved → consumed` when its
//! token is issued. Every move is a compare-and-set on the state, so two
//! nodes can never both consume one approval, nor an approver overrule a
//! decision already taken.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::claims::{ScopeSet, TokenId};
use crate::clock::UnixTime;

/// How long an approval record is kept after it expires, in seconds: long
/// enough that a late poll is told `expired_token` rather than that the id
/// is unknown, and that a used approval is still recognised as used.
pub const KEEP_AFTER_EXPIRY: i64 = 86_400;

/// The most pending approvals one listing returns.
pub const MAX_LISTED: usize = 1000;

/// An approval's id: 128 random bits, base64url, like CIBA's `auth_req_id`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ApprovalId(pub String);

impl std::fmt::Display for ApprovalId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The one request an approval covers: a repeat must match it in every field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// The chain's subject.
    pub subject: String,
    /// The acting agent.
    pub agent: String,
    /// The parent token (`subject_token`'s `jti`); none for an agent's own token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_jti: Option<TokenId>,
    /// The target the token would be addressed to.
    pub target: String,
    /// Exactly the scopes the policy granted.
    pub scope: ScopeSet,
}

/// Where an approval stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    /// Waiting for the approver.
    Pending,
    /// Approved; the next matching request gets its token.
    Approved,
    /// Denied; the request is refused with `access_denied`.
    Denied,
    /// Approved and used: its token was issued.
    Consumed,
}

impl ApprovalState {
    /// The state as stored (and compared by the stores' compare-and-set).
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Denied => "denied",
            ApprovalState::Consumed => "consumed",
        }
    }
}

/// A person's decision on an approval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Who decided.
    pub approver: String,
    /// When.
    pub at: UnixTime,
}

/// One approval, as every store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Its id.
    pub id: ApprovalId,
    /// The request it covers.
    pub request: Fingerprint,
    /// The grant type of the request (`client_credentials` or token exchange).
    pub grant_type: String,
    /// The scopes among the granted ones that need the approval.
    pub scopes_needing_approval: ScopeSet,
    /// What marked them (`resources.toml: …` or a rule id), for the approver.
    pub marked_by: Vec<String>,
    /// The one person who may decide it.
    pub approver: String,
    /// When it was asked for.
    pub created_at: UnixTime,
    /// When it stops being usable.
    pub expires_at: UnixTime,
    /// Where it stands.
    pub state: ApprovalState,
    /// The decision, once taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
}

impl Approval {
    /// Until when a store keeps the record.
    pub fn keep_until(&self) -> UnixTime {
        self.expires_at.plus(KEEP_AFTER_EXPIRY)
    }

    /// Whether it can no longer be decided or used at `now`.
    pub fn is_expired(&self, now: UnixTime) -> bool {
        now >= self.expires_at
    }
}

/// Approvals shared by every broker node.
#[async_trait]
pub trait ApprovalStore: Send + Sync {
    /// Records a new approval (in state `pending`), kept until its
    /// [`Approval::keep_until`]; `Ok` means it is durable.
    async fn create(&self, approval: &Approval) -> Result<(), StoreError>;

    /// The approval with this id, if it is kept.
    async fn approval(&self, id: &ApprovalId) -> Result<Option<Approval>, StoreError>;

    /// Replaces the approval `next.id` with `next` if, and only if, its state
    /// is `from` now: atomically, so that of two concurrent moves from one
    /// state only one succeeds. Returns whether it was replaced.
    async fn transition(&self, from: ApprovalState, next: &Approval) -> Result<bool, StoreError>;

    /// Approvals still pending and not expired at `now`, oldest first, at
    /// most [`MAX_LISTED`].
    async fn pending(&self, now: UnixTime) -> Result<Vec<Approval>, StoreError>;
}

/// An approval as JSON, for the stores that keep text.
pub(crate) fn encode(approval: &Approval) -> Result<String, StoreError> {
    serde_json::to_string(approval).map_err(|_| StoreError("an approval cannot be encoded".into()))
}

/// An approval read back from JSON.
pub(crate) fn decode(json: &str) -> Result<Approval, StoreError> {
    serde_json::from_str(json).map_err(|_| StoreError("an approval record is unreadable".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approval() -> Approval {
        Approval {
            id: ApprovalId("id".into()),
            request: Fingerprint {
                subject: "s".into(),
                agent: "a".into(),
                parent_jti: None,
                target: "https://api.example".into(),
                scope: ScopeSet::parse("write").unwrap(),
            },
            grant_type: "client_credentials".into(),
            scopes_needing_approval: ScopeSet::parse("write").unwrap(),
            marked_by: vec!["resources.toml: https://api.example".into()],
            approver: "owner@example.com".into(),
            created_at: UnixTime(100),
            expires_at: UnixTime(700),
            state: ApprovalState::Pending,
            decision: None,
        }
    }

    #[test]
    fn an_approval_round_trips_and_expires_at_its_end() {
        let approval = approval();
        assert_eq!(decode(&encode(&approval).unwrap()).unwrap(), approval);
        assert!(!approval.is_expired(UnixTime(699)));
        assert!(approval.is_expired(UnixTime(700)));
        assert_eq!(approval.keep_until(), UnixTime(700 + KEEP_AFTER_EXPIRY));
    }

    #[test]
    fn a_fingerprint_differs_in_any_field() {
        let base = approval().request;
        let mut other = base.clone();
        other.parent_jti = Some(TokenId("p".into()));
        assert_ne!(base, other);
        let mut wider = base.clone();
        wider.scope = ScopeSet::parse("write read").unwrap();
        assert_ne!(base, wider);
    }
}
