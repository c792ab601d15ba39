//! Why a request that needs a person's approval gets no token yet.

use crate::store::{ApprovalId, ApprovalState};

/// An approval the client should poll for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingApproval {
    /// Its id, to send back as `approval_id`.
    pub id: ApprovalId,
    /// Seconds to wait between polls.
    pub interval: i64,
    /// Seconds until it expires.
    pub expires_in: i64,
}

/// Why a request that needs approval gets no token (yet), or why an
/// approver's decision is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    /// Waiting for the approver.
    #[error("authorization pending: approval {} waits for a decision", .0.id)]
    Pending(PendingApproval),
    /// The approver denied the request.
    #[error("the approver denied the request")]
    Denied,
    /// The approval expired before it was decided or used.
    #[error("the approval expired")]
    Expired,
    /// No approval with that id is kept.
    #[error("unknown approval id")]
    Unknown,
    /// The approval covers another request (subject, agent, parent, target or scopes differ).
    #[error("the approval covers another request")]
    Mismatch,
    /// The approval was already used for a token.
    #[error("the approval was already used")]
    Used,
    /// The admin API was asked about an approval that is not kept.
    #[error("no approval with this id")]
    NotFound,
    /// The named approver is not the one configured for this request.
    #[error("this approver may not decide this request")]
    WrongApprover,
    /// The approval was already decided.
    #[error("the approval is already {}", .0.as_str())]
    AlreadyDecided(ApprovalState),
    /// The agent already has as many requests waiting for approval as
    /// allowed: a new one is refused until one is decided or expires.
    #[error("the agent has too many requests waiting for approval")]
    TooManyPending,
}

impl ApprovalError {
    /// The label metrics and the audit trail count this refusal by: the
    /// variant, never the approval's id or state.
    pub fn reason(&self) -> &'static str {
        match self {
            ApprovalError::Pending(_) => "approval_pending",
            ApprovalError::Denied => "approval_denied",
            ApprovalError::Expired => "approval_expired",
            ApprovalError::Unknown => "approval_unknown",
            ApprovalError::Mismatch => "approval_mismatch",
            ApprovalError::Used => "approval_used",
            ApprovalError::NotFound => "approval_not_found",
            ApprovalError::WrongApprover => "approval_wrong_approver",
            ApprovalError::AlreadyDecided(_) => "approval_already_decided",
            ApprovalError::TooManyPending => "approval_too_many_pending",
        }
    }
}
