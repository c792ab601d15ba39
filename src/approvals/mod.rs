//! Human approval at impact thresholds, at the token endpoint.
//!
//! After the policy allowed a request, an allowance whose scopes include one
//! marked for approval is not issued at once. A request without `approval_id` creates a
//! pending approval for exactly that request and answers
//! `authorization_pending` with the id and a polling interval, the way a CIBA
//! client polls with its `auth_req_id` (OpenID CIBA Core §7.3, §11). The
//! approver decides through the admin API; the agent then repeats the same
//! request, with `approval_id` or without (a client library that cannot add
//! the parameter), and gets its token, whose `delegation` records the
//! approval. An approval covers one request and is used once.
//!
//! Pending approvals are bounded and de-duplicated (DESIGN.md §11): the same
//! request asked again gets its waiting approval's id, found through the
//! store's index on the request; an agent with
//! [`ApprovalSettings::max_pending_per_agent`] approvals waiting gets no new
//! one ([`ApprovalError::TooManyPending`], audited like any refusal) until
//! one is decided or expires.

mod settings;
pub mod webhook;

pub use crate::error::{ApprovalError, PendingApproval};
pub use settings::{ApprovalSettings, Approver, DEFAULT_APPROVAL_TTL, DEFAULT_MAX_PENDING_PER_AGENT};

use crate::audit::{clip, Evidence, Operator};
use crate::claims::HopApproval;
use crate::clock::UnixTime;
use crate::context::Context;
use crate::error::EndpointError;
use crate::params::TokenParams;
use crate::policy::Allowance;
use crate::store::approvals::{ApprovalPage, ApprovalQuery, Creation};
use crate::store::{Approval, ApprovalId, ApprovalState, AuditApproval, AuditDecision, Decision, Fingerprint};

/// Seconds a client waits between two polls (CIBA Core §7.3 `interval`).
pub const POLL_INTERVAL: i64 = 5;
/// The request parameter carrying the approval's id, like CIBA's `auth_req_id`.
pub const APPROVAL_ID: &str = "approval_id";

/// The request an allowance would answer, for its approval's fingerprint.
pub(crate) struct Asked<'a> {
    pub grant_type: &'a str,
    pub subject: &'a crate::ids::Subject,
    pub agent: &'a crate::ids::AgentId,
    pub parent_jti: Option<&'a crate::claims::TokenId>,
}

fn pending(approval: &Approval, now: UnixTime) -> ApprovalError {
    ApprovalError::Pending(PendingApproval {
        id: approval.id.clone(),
        interval: POLL_INTERVAL,
        expires_in: approval.expires_at.seconds_since(now),
    })
}

/// Approvals at impact thresholds: where they are kept, who decides them,
/// where they are announced.
pub struct Approvals {
    settings: ApprovalSettings,
}

impl Approvals {
    /// Approvals kept, decided and announced as `settings` say.
    pub fn new(settings: ApprovalSettings) -> Approvals {
        Approvals { settings }
    }

    /// Lets an allowance through when it needs no approval (`None`), or when a
    /// person approved exactly this request (named by the `approval_id` it
    /// carries, or found by the request itself), which is then used up
    /// (`Some`, to record in the token). Anything else is an error: a new
    /// pending approval, or a refusal.
    pub(crate) async fn check(
        &self,
        context: &Context,
        asked: &Asked<'_>,
        allowance: &Allowance,
        params: &TokenParams,
        evidence: &mut Evidence,
    ) -> Result<Option<HopApproval>, EndpointError> {
        let Some(need) = allowance.approval() else { return Ok(None) };
        let fingerprint = Fingerprint {
            subject: asked.subject.to_string(),
            agent: asked.agent.to_string(),
            parent_jti: asked.parent_jti.cloned(),
            target: allowance.target().to_string(),
            scope: allowance.scope().clone(),
        };
        let now = context.now();
        let Some(presented) = params.get(APPROVAL_ID) else {
            // The approval covers the request, and its id is only a handle:
            // the same request repeated after a person approved it redeems
            // that approval, for clients whose libraries cannot add a
            // parameter to a token request (the MCP SDKs among them).
            if let Some(approved) = self.approved(&fingerprint, asked.grant_type, now).await? {
                return self.redeem(approved, evidence).await;
            }
            let approver = self.approver_for(context, &fingerprint);
            let approval = Approval {
                id: ApprovalId(context.new_jti()?.0),
                request: fingerprint,
                grant_type: asked.grant_type.to_owned(),
                scopes_needing_approval: need.scopes.clone(),
                marked_by: need.marked_by.clone(),
                approver,
                created_at: now,
                expires_at: now.plus(self.settings.ttl),
                state: ApprovalState::Pending,
                decision: None,
            };
            // The same request asked again while its approval waits gets that
            // approval's id back, found through the store's index on the request
            // and atomically with creation: approvers are not asked (nor the
            // webhook posted) twice for one request, however often an agent
            // repeats it, concurrently or not.
            let approval = match self.settings.store.create(&approval, self.settings.max_pending_per_agent).await? {
                Creation::Created => {
                    if let Some(webhook) = &self.settings.webhook {
                        webhook.announce(&approval);
                    }
                    approval
                }
                Creation::Waiting(waiting) => *waiting,
                Creation::Full => return Err(ApprovalError::TooManyPending.into()),
            };
            evidence.approval = Some(AuditApproval { id: approval.id.clone(), approver: None });
            return Err(pending(&approval, now).into());
        };
        evidence.approval = Some(AuditApproval { id: ApprovalId(clip(presented)), approver: None });
        // Ids are 22 base64url characters; anything else was never issued, and
        // is not worth a store lookup.
        if presented.len() != 22 || !presented.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"-_".contains(&byte))
        {
            return Err(ApprovalError::Unknown.into());
        }
        let id = ApprovalId(presented.to_owned());
        let approval = self.settings.store.approval(&id).await?.ok_or(ApprovalError::Unknown)?;
        if approval.request != fingerprint {
            return Err(ApprovalError::Mismatch.into());
        }
        evidence.approval = Some(AuditApproval {
            id: approval.id.clone(),
            approver: approval.decision.as_ref().map(|decision| decision.approver.clone()),
        });
        match (approval.state, &approval.decision) {
            (ApprovalState::Denied, _) => Err(ApprovalError::Denied.into()),
            (ApprovalState::Consumed, _) => Err(ApprovalError::Used.into()),
            (ApprovalState::Pending | ApprovalState::Approved, _) if approval.is_expired(now) => {
                Err(ApprovalError::Expired.into())
            }
            (ApprovalState::Pending, _) => Err(pending(&approval, now).into()),
            (ApprovalState::Approved, _) => self.redeem(approval, evidence).await,
        }
    }

    /// The unexpired approved approval of exactly this request, if one is
    /// among the newest page of its agent's approved ones. One missed here
    /// costs only a new pending approval.
    async fn approved(
        &self,
        request: &Fingerprint,
        grant_type: &str,
        now: UnixTime,
    ) -> Result<Option<Approval>, EndpointError> {
        let query = ApprovalQuery {
            state: ApprovalState::Approved,
            agent: Some(request.agent.clone()),
            before: None,
            limit: crate::store::approvals::MAX_PAGE,
            now,
        };
        let page = self.settings.store.list(&query).await?;
        Ok(page.approvals.into_iter().find(|approval| {
            approval.request == *request && approval.grant_type == grant_type && !approval.is_expired(now)
        }))
    }

    /// Spends an approved approval on the token about to be issued.
    async fn redeem(&self, approval: Approval, evidence: &mut Evidence) -> Result<Option<HopApproval>, EndpointError> {
        let Some(decision) = &approval.decision else {
            return Err(crate::store::StoreError::Corrupt("an approved approval has no decision".into()).into());
        };
        let stamp =
            HopApproval { id: approval.id.0.clone(), approver: decision.approver.clone(), approved_at: decision.at };
        evidence.approval = Some(AuditApproval { id: approval.id.clone(), approver: Some(decision.approver.clone()) });
        let consumed = Approval { state: ApprovalState::Consumed, ..approval.clone() };
        // Single use: of two concurrent repeats, only one moves it on.
        if !self.settings.store.transition(ApprovalState::Approved, &consumed).await? {
            return Err(ApprovalError::Used.into());
        }
        // Spent before the token is minted and recorded, so that no second
        // repeat can get past this point meanwhile; put back by `restore` if
        // no token leaves after all.
        evidence.spent_approval = Some(approval);
        Ok(Some(stamp))
    }

    /// Makes an approval usable again when the request that spent it handed out
    /// no token (minting it or recording its issuance failed): it covers one
    /// token, and none left. Only the request holding the spent state moves it
    /// back, and only from `consumed`, so two repeats still never both get a
    /// token; a repeat that came meanwhile was told it was used, and may retry.
    /// If the store cannot be written, the approval stays spent: fail closed.
    pub(crate) async fn restore(&self, approved: Approval) {
        let id = approved.id.clone();
        match self.settings.store.transition(ApprovalState::Consumed, &approved).await {
            Ok(true) => tracing::info!(approval = %id, "no token was handed out: the approval is usable again"),
            Ok(false) => tracing::warn!(approval = %id, "the spent approval changed meanwhile; left as it is"),
            Err(error) => {
                tracing::warn!(approval = %id, %error, "no token was handed out, but the approval stays spent");
            }
        }
    }

    /// The person configured to decide `request`.
    fn approver_for(&self, context: &Context, request: &Fingerprint) -> String {
        let policy = context.policy();
        let inventory = policy.inventory();
        match self.settings.approver {
            // A chain an agent started for itself has no person as subject:
            // that agent's owner answers for it, not the agent.
            Approver::Subject => match inventory.agent(&request.subject) {
                Some(agent) => agent.owner.clone(),
                None => request.subject.clone(),
            },
            // The acting agent authenticated, so it is in the inventory; an
            // owner that is somehow missing leaves nobody able to approve.
            Approver::Owner => inventory.agent(&request.agent).map(|agent| agent.owner.clone()).unwrap_or_default(),
        }
    }

    /// One page of approvals, newest first, for the approvers: `query`'s
    /// time is set to now.
    pub async fn list(&self, context: &Context, query: ApprovalQuery) -> Result<ApprovalPage, EndpointError> {
        let query = ApprovalQuery { now: context.now(), ..query };
        Ok(self.settings.store.list(&query).await?)
    }

    /// The approval `id` while it waits for a person; `None` once decided,
    /// expired or unknown.
    pub async fn pending_approval(
        &self,
        context: &Context,
        id: &ApprovalId,
    ) -> Result<Option<Approval>, EndpointError> {
        let approval = self.settings.store.approval(id).await?;
        Ok(approval.filter(|approval| approval.is_listed_as(ApprovalState::Pending, context.now())))
    }

    /// How many approvals are pending now, from the store's counts: never
    /// reads the approvals themselves, so a scrape costs the same however
    /// many wait.
    pub async fn count_pending(&self, context: &Context) -> Result<u64, EndpointError> {
        Ok(self.settings.store.count_pending(context.now()).await?)
    }

    /// Approves (`approve`) or denies a pending approval as `approver`, who
    /// must be the one configured for its request. Audited either way,
    /// naming who made the call `by` (the admin API, or the console and who
    /// signed in there) beside the approver named.
    pub async fn decide(
        &self,
        context: &Context,
        id: &ApprovalId,
        approver: &str,
        approve: bool,
        by: &Operator,
    ) -> Result<Approval, EndpointError> {
        let now = context.now();
        let mut evidence = Evidence {
            action: if approve { "approval_approve" } else { "approval_deny" }.into(),
            approval: Some(AuditApproval { id: ApprovalId(clip(&id.0)), approver: Some(clip(approver)) }),
            ..Evidence::default()
        };
        let outcome = self.apply_decision(id, approver, approve, now, &mut evidence).await;
        let event = match &outcome {
            Ok(_) => {
                let decision = if approve { AuditDecision::Approved } else { AuditDecision::Denied };
                evidence.event(now, decision, None, None)
            }
            Err(error) => evidence.refused(now, error, None),
        };
        let mut event = event;
        event.by = Some(by.to_string());
        context.record(event).await?;
        outcome
    }

    async fn apply_decision(
        &self,
        id: &ApprovalId,
        approver: &str,
        approve: bool,
        now: UnixTime,
        evidence: &mut Evidence,
    ) -> Result<Approval, EndpointError> {
        let approval = self.settings.store.approval(id).await?.ok_or(ApprovalError::NotFound)?;
        evidence.subject = Some(approval.request.subject.clone());
        evidence.agent = Some(approval.request.agent.clone());
        evidence.target = Some(approval.request.target.clone());
        evidence.scopes_asked = Some(approval.request.scope.to_string());
        evidence.parent_jti = approval.request.parent_jti.clone();
        evidence.rules = approval.marked_by.clone();
        if approval.approver.is_empty() || approval.approver != approver {
            return Err(ApprovalError::WrongApprover.into());
        }
        if approval.state != ApprovalState::Pending {
            return Err(ApprovalError::AlreadyDecided(approval.state).into());
        }
        if approval.is_expired(now) {
            return Err(ApprovalError::Expired.into());
        }
        let decided = Approval {
            state: if approve { ApprovalState::Approved } else { ApprovalState::Denied },
            decision: Some(Decision { approver: approver.to_owned(), at: now }),
            ..approval
        };
        if !self.settings.store.transition(ApprovalState::Pending, &decided).await? {
            // Someone decided first: report what they decided.
            let state = self.settings.store.approval(id).await?.map_or(ApprovalState::Consumed, |now| now.state);
            return Err(ApprovalError::AlreadyDecided(state).into());
        }
        Ok(decided)
    }
}
