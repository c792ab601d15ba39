//! What the admin API does for a security team (DESIGN.md §3): revoke by
//! `jti`, deprovision, trace a token's ancestors and descendants, list the
//! inventory with its use, and read the audit trail.

use serde::{Deserialize, Serialize};

use crate::audit::Evidence;
pub use crate::audit::Operator;
use crate::claims::TokenId;
use crate::clock::{UnixMicros, UnixTime};
use crate::context::Context;
use crate::error::EndpointError;
use crate::grant::{CLIENT_CREDENTIALS, TOKEN_EXCHANGE};
use crate::metrics::RevokedVia;
use crate::policy::inventory::SecretHash;
use crate::policy::lifecycle::{self, AgentWarning};
use crate::policy::Policy;
use crate::revocation::Revocations;
use crate::store::{AuditDecision, AuditEvent, AuditFilter, Lineage, Principal, Status, StoreError};

/// The most tokens one trace walks, so that a huge grant tree cannot make
/// one request unbounded.
const MAX_TRACE_NODES: usize = 1000;

/// One token in a trace, from its audit record.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TraceNode {
    /// Token id.
    pub jti: TokenId,
    /// The agent that obtained it.
    pub agent: Option<String>,
    /// Its subject.
    pub subject: Option<String>,
    /// Its target.
    pub target: Option<String>,
    /// Its scopes.
    pub scope: Option<String>,
    /// Issued at.
    pub issued_at: UnixTime,
    /// Expires at.
    pub expires_at: Option<UnixTime>,
    /// Alive or dead, and why.
    pub status: Status,
    /// Whether it has expired.
    pub expired: bool,
    /// The person's approval its issuance used, when it needed one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    /// The thumbprint of the key it is bound to, when it is DPoP-bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dpop_jkt: Option<String>,
    /// Its children, for descendants.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<TraceNode>,
}

/// A token's place in its grant tree.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Trace {
    /// The ancestors, root first.
    pub ancestors: Vec<TraceNode>,
    /// The token itself, with its descendants as children.
    pub token: TraceNode,
    /// Whether the walk stopped at the node limit.
    pub truncated: bool,
}

/// An agent of the inventory with its recent use.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AgentReport {
    /// Client id.
    pub id: String,
    /// Who answers for it.
    pub owner: String,
    /// What it is for.
    pub purpose: String,
    /// Last day it may act.
    pub expires: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Whether it is within its registered life (`expires`), whatever an
    /// admin did.
    pub active: bool,
    /// Whether it was deprovisioned by an admin and not reinstated: it
    /// cannot authenticate, and every token naming it is dead.
    pub blocked: bool,
    /// When it last asked for a token as the authenticated client, whether
    /// issued, refused or put to an approver. Events that only name it (an
    /// admin's deprovisioning or reinstatement, its expiry, an approver's
    /// decision) are not use.
    pub last_use: Option<UnixTime>,
    /// Tokens issued to it in the last 24 hours, counted up to
    /// [`AuditFilter::MAX_COUNT`] (100,000). With the Redis store the count
    /// reads at most the newest 100,000 audit events of the day, of every
    /// agent, so on a busier deployment it can fall short.
    pub tokens_issued_last_day: usize,
    /// What needs attention: expired or expiring within 14 days, unused
    /// for 30 days or never used, without an owner.
    pub warnings: Vec<AgentWarning>,
}

/// Whether `presented` is the admin token. Always false when none is
/// configured: the admin API is then off.
pub fn is_admin(context: &Context, presented: &str) -> bool {
    let Some(hash) = context.settings.admin_token_sha256.as_deref().and_then(SecretHash::from_hex) else {
        return false;
    };
    hash.matches(presented)
}

/// Whether the admin API is on.
pub fn admin_enabled(context: &Context) -> bool {
    context.settings.admin_token_sha256.is_some()
}

/// Revokes a token by id, and so its descendants, returning until when the
/// revocation is kept; `None`, and nothing done, for an id the broker knows
/// nothing of. Revoking a token already revoked changes nothing and records
/// nothing.
///
/// Known ids are the tokens issued here (their issuance is kept while they
/// live, whatever the retention) and a person's sign-in at a trusted
/// provider that a chain issued here started from. Any other id names no
/// token this broker would accept, and a typo must not pass for a
/// revocation.
pub async fn revoke_jti(
    context: &Context,
    revocations: &Revocations,
    jti: &TokenId,
    by: &Operator,
) -> Result<Option<UnixTime>, EndpointError> {
    let issued = context.stores.audit.issued(jti).await?;
    if issued.is_none() && context.stores.audit.children(jti, 1).await?.is_empty() {
        return Ok(None);
    }
    let now = context.now();
    // A sign-in, whose lifetime the broker never saw, or an issuance
    // recorded without its expiry: cover the longest lifetime any token can
    // have.
    let until = issued.and_then(|event| event.expires_at).unwrap_or(now.plus(crate::token::MAX_LIFETIME));
    let Some(_recording) = revocations.revoke_once(context, jti, until, RevokedVia::Admin).await? else {
        return Ok(Some(until));
    };
    let mut event =
        Evidence { action: "admin_revoke".into(), ..Default::default() }.event(now, AuditDecision::Revoked, None, None);
    event.jti = Some(jti.clone());
    event.expires_at = Some(until);
    event.by = Some(by.to_string());
    context.record(event).await?;
    Ok(Some(until))
}

/// The ancestors and descendants of a token, each with its status.
///
/// Issuances are read through the stores' issuance indexes
/// ([`AuditStore::issued`], [`AuditStore::children`]), so no number of
/// refusals or revocations naming a token hides it or its children.
///
/// [`AuditStore::issued`]: crate::store::AuditStore::issued
/// [`AuditStore::children`]: crate::store::AuditStore::children
pub async fn trace(context: &Context, jti: &TokenId) -> Result<Option<Trace>, EndpointError> {
    let Some(event) = context.stores.audit.issued(jti).await? else {
        return Ok(None);
    };
    let (path, truncated) = path_to(context, event).await?;
    // One policy for the whole trace, even if a reload lands meanwhile.
    let policy = context.policy();
    let mut ancestors = Vec::new();
    for depth in 1..path.len() {
        ancestors.push(node(context, &policy, path.get(..depth).unwrap_or_default()).await?);
    }
    let mut walk = Walk { budget: MAX_TRACE_NODES, truncated };
    let token = subtree(context, &policy, path, &mut walk).await?;
    Ok(Some(Trace { ancestors, token, truncated: walk.truncated }))
}

/// The issuance of `event`'s token with its ancestors', root first, and
/// whether the walk stopped at the node limit.
async fn path_to(context: &Context, event: AuditEvent) -> Result<(Vec<AuditEvent>, bool), StoreError> {
    // Ancestors, newest first while walking up, then reversed.
    let mut path = vec![event];
    let mut truncated = false;
    while let Some(parent) = path.last().and_then(|event| event.parent_jti.clone()) {
        if path.len() >= MAX_TRACE_NODES {
            truncated = true;
            break;
        }
        // A parent without an issuance here is a person's sign-in at an
        // identity provider, or past its retention: the walk ends.
        match context.stores.audit.issued(&parent).await? {
            Some(event) => path.push(event),
            None => break,
        }
    }
    path.reverse();
    Ok((path, truncated))
}

/// Whose tokens [`tokens`] lists: a subject's (a person, or an agent
/// acting for itself), those an agent obtained, or both at once.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenQuery {
    /// Tokens of this subject.
    pub subject: Option<String>,
    /// Tokens this agent obtained.
    pub agent: Option<String>,
    /// At most this many, newest first (default and cap: [`TokenQuery::MAX_LIMIT`]).
    pub limit: Option<usize>,
}

impl TokenQuery {
    /// The most tokens one listing returns: each is a walk up its ancestry.
    pub const MAX_LIMIT: usize = 200;
}

/// The tokens `query` selects, newest first, each with its status (as a
/// trace computes it, from its ancestry) but without its descendants.
/// `None` when the query names neither a subject nor an agent.
pub async fn tokens(context: &Context, query: &TokenQuery) -> Result<Option<Vec<TraceNode>>, EndpointError> {
    if query.subject.is_none() && query.agent.is_none() {
        return Ok(None);
    }
    let filter = AuditFilter {
        subject: query.subject.clone(),
        agent: query.agent.clone(),
        decision: Some(AuditDecision::Issued),
        limit: Some(query.limit.unwrap_or(TokenQuery::MAX_LIMIT).clamp(1, TokenQuery::MAX_LIMIT)),
        ..AuditFilter::default()
    };
    let policy = context.policy();
    let mut nodes = Vec::new();
    for event in context.stores.audit.query(&filter).await? {
        let (path, _) = path_to(context, event).await?;
        nodes.push(node(context, &policy, &path).await?);
    }
    Ok(Some(nodes))
}

/// The inventory, each agent with its last use and recent issuance.
pub async fn agent_reports(context: &Context) -> Result<Vec<AgentReport>, EndpointError> {
    let now = context.now();
    let mut reports = Vec::new();
    let policy = context.policy();
    for agent in policy.inventory().agents() {
        let issued_last_day = AuditFilter {
            agent: Some(agent.id.clone()),
            decision: Some(AuditDecision::Issued),
            since: Some(now.plus(-86_400)),
            ..AuditFilter::default()
        };
        let tokens_issued_last_day = context.stores.audit.count(&issued_last_day).await?;
        let last_use = last_token_request(context, &agent.id).await?;
        reports.push(AgentReport {
            warnings: lifecycle::warnings(agent, last_use, now),
            id: agent.id.clone(),
            owner: agent.owner.clone(),
            purpose: agent.purpose.clone(),
            expires: agent.expires.to_string(),
            groups: agent.groups.clone(),
            active: agent.is_active(now),
            blocked: context.any_blocked(vec![Principal::Agent(agent.id.clone().into())]).await?,
            last_use,
            tokens_issued_last_day,
        });
    }
    Ok(reports)
}

/// When `agent` last asked the token endpoint for a token, whatever the
/// answer: the newest event of either grant type it made as the client.
async fn last_token_request(context: &Context, agent: &str) -> Result<Option<UnixTime>, StoreError> {
    let mut last = None;
    for grant_type in [CLIENT_CREDENTIALS, TOKEN_EXCHANGE] {
        let filter = AuditFilter {
            agent: Some(agent.to_owned()),
            action: Some(grant_type.to_owned()),
            limit: Some(1),
            ..AuditFilter::default()
        };
        let newest = context.stores.audit.query(&filter).await?.first().map(|event| event.time);
        last = last.max(newest);
    }
    Ok(last)
}

/// Audit events matching `filter`, newest first.
pub async fn audit_events(context: &Context, filter: &AuditFilter) -> Result<Vec<AuditEvent>, EndpointError> {
    Ok(context.stores.audit.query(filter).await?)
}

/// The node for the last token of `path` (root first), its status
/// computed from the whole path as its lineage.
async fn node(context: &Context, policy: &Policy, path: &[AuditEvent]) -> Result<TraceNode, EndpointError> {
    let Some(event) = path.last() else {
        return Err(EndpointError::Store(StoreError::Corrupt("empty trace path".into())));
    };
    // As in `Lineage::of`: the subject named from the root, each agent
    // from the first token that it obtained or that was addressed to it,
    // each token at its issue instant (an event recorded before issue
    // instants were: the first microsecond of its second).
    let instant = |step: &AuditEvent| step.iat_micros.unwrap_or(UnixMicros::start_of(step.time));
    // The tokens of the path, newest first, then what the root came from:
    // a person's sign-in, which a revocation can name too.
    let jtis = path.iter().rev().filter_map(|step| step.jti.clone());
    let sign_in = path.first().and_then(|root| root.parent_jti.clone());
    let mut lineage = Lineage { jtis: jtis.chain(sign_in).collect(), principals: Vec::new() };
    if let (Some(subject), Some(root)) = (&event.subject, path.first()) {
        lineage.name(Principal::Subject(subject.clone().into()), instant(root));
    }
    for step in path {
        for agent in step.agent.iter().chain(&step.target) {
            lineage.name(Principal::Agent(agent.clone().into()), instant(step));
        }
    }
    let now = context.now();
    Ok(TraceNode {
        jti: event.jti.clone().unwrap_or_else(|| TokenId(String::new())),
        agent: event.agent.clone(),
        subject: event.subject.clone(),
        target: event.target.clone(),
        scope: event.scopes_granted.clone(),
        issued_at: event.time,
        expires_at: event.expires_at,
        status: context.lineage_status(policy, &lineage).await?,
        expired: event.expires_at.is_some_and(|exp| exp <= now),
        approval: event.approval.as_ref().map(|approval| approval.id.0.clone()),
        dpop_jkt: event.dpop_jkt.clone(),
        children: Vec::new(),
    })
}

/// The last token of `path` with every descendant, depth first, oldest
/// child first, within the walk's budget of nodes.
async fn subtree(
    context: &Context,
    policy: &Policy,
    path: Vec<AuditEvent>,
    walk: &mut Walk,
) -> Result<TraceNode, EndpointError> {
    let mut node = node(context, policy, &path).await?;
    walk.budget = walk.budget.saturating_sub(1);
    // One more than the budget allows tells whether the walk stops short.
    let children = context.stores.audit.children(&node.jti, walk.budget.saturating_add(1)).await?;
    for child in children {
        if walk.budget == 0 {
            walk.truncated = true;
            break;
        }
        let mut child_path = path.clone();
        child_path.push(child);
        node.children.push(Box::pin(subtree(context, policy, child_path, walk)).await?);
    }
    Ok(node)
}

/// How far a trace may still walk, and whether it left tokens out.
struct Walk {
    budget: usize,
    truncated: bool,
}
