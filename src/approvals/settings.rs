//! How approvals are kept, announced and decided: the settings a broker is
//! built with.

use std::sync::Arc;

use serde::Deserialize;

use super::webhook;
use crate::store::memory::MemoryStore;
use crate::store::ApprovalStore;

/// How long an approval can be decided and used, unless configured.
pub const DEFAULT_APPROVAL_TTL: i64 = 600;
/// How many approvals one agent may have pending at once, unless configured:
/// enough for an agent waiting on a few people, few enough that one agent
/// cannot flood its approvers or the store.
pub const DEFAULT_MAX_PENDING_PER_AGENT: usize = 20;

/// Who decides a request that needs approval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Approver {
    /// The acting agent's owner, as registered in `agents.toml`.
    #[default]
    Owner,
    /// The chain's subject: the person whose authority flows.
    Subject,
}

/// How approvals are kept and announced.
pub struct ApprovalSettings {
    /// Where approvals live; shared by every node of a deployment.
    pub store: Arc<dyn ApprovalStore>,
    /// Who decides.
    pub approver: Approver,
    /// Seconds an approval stays usable.
    pub ttl: i64,
    /// How many approvals one agent may have pending at once; past it a new
    /// request is refused, while a repeat of a pending one still gets its id.
    pub max_pending_per_agent: usize,
    /// Where new pending approvals are announced, if anywhere.
    pub webhook: Option<webhook::Webhook>,
}

impl Default for ApprovalSettings {
    /// In-process approvals: enough for one node and for tools; a served
    /// broker is given its state store instead.
    fn default() -> Self {
        ApprovalSettings {
            store: Arc::new(MemoryStore::new()),
            approver: Approver::Owner,
            ttl: DEFAULT_APPROVAL_TTL,
            max_pending_per_agent: DEFAULT_MAX_PENDING_PER_AGENT,
            webhook: None,
        }
    }
}
