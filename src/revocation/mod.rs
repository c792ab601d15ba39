//! Token revocation (RFC 7009) by the agents that hold a token or one of its
//! ancestors. Revoking a token revokes every token that descends from it:
//! each descendant carries the revoked `jti` in its ancestry.

mod error;
mod in_flight;

pub use error::NotAHolder;
pub(crate) use in_flight::{Revoking, RevokingClaim};

use crate::audit::Evidence;
use crate::claims::{Claims, TokenId};
use crate::client_auth::ClientAuthError;
use crate::clock::UnixTime;
use crate::grant::{Broker, GrantError, TokenParams};
use crate::metrics::{DeprovisionCause, RevokedVia};
use crate::store::{AuditDecision, AuditFilter, Blocking, Cutoff, Principal, StoreError};

impl Broker {
    /// Handles `POST /revoke`. Unknown, invalid or expired tokens get 200
    /// (RFC 7009 §2.2): there is nothing left to revoke.
    pub async fn revoke(
        &self,
        authorization: Option<&str>,
        params: &TokenParams,
        client_address: Option<String>,
    ) -> Result<(), GrantError> {
        let client = self.authenticate_client(authorization, params, client_address.as_deref()).await?;
        let agent = client.into_agent().ok_or(ClientAuthError::NotAnAgent)?;
        self.ensure_not_blocked(agent.id(), None).await?;
        let token = params.require("token")?;
        let Ok(verified) = self.verify(token) else {
            return Ok(());
        };
        let claims = verified.claims();
        let mut evidence = Evidence {
            grant_type: "revoke".into(),
            subject: Some(claims.sub.to_string()),
            agent: Some(agent.id().to_string()),
            chain: claims.chain().into_iter().map(ToString::to_string).collect(),
            target: Some(claims.aud.to_string()),
            ..Evidence::default()
        };
        if !holds(agent.id(), claims) {
            let error = GrantError::NotAHolder(NotAHolder);
            self.record(std::mem::take(&mut evidence).refused(self.now(), &error, client_address)).await?;
            return Err(error);
        }
        // Descendants never outlive the revoked token: its expiry bounds the entry.
        let via = RevokedVia::RevocationEndpoint;
        let Some(_recording) = self.revoke_once(&claims.jti, claims.exp, via).await? else {
            // Already revoked: still 200 (RFC 7009 §2.2), but nothing new
            // happened, so no new evidence that would crowd out the rest.
            return Ok(());
        };
        let mut event = evidence.event(self.now(), AuditDecision::Revoked, None, client_address);
        event.jti = Some(claims.jti.clone());
        event.expires_at = Some(claims.exp);
        self.record(event).await?;
        Ok(())
    }

    /// Revokes `jti` until `until`, and tells whether this call is the one
    /// to record it (`None`: it is not). Every call writes the revocation,
    /// so that no call answers success for one that was not kept; the event
    /// is written by the first, or by a later call that finds the first
    /// one's event never landed (its answer was lost, or its record failed
    /// and its caller was told 503), so no revocation stays without
    /// evidence. A call that meets another on this node recording the same
    /// token leaves the event to it.
    pub(super) async fn revoke_once(
        &self,
        jti: &TokenId,
        until: UnixTime,
        via: RevokedVia,
    ) -> Result<Option<RevokingClaim<'_>>, StoreError> {
        let first = self.stores.revocation.revoke(jti, until).await?;
        if first {
            self.metrics().count_revocation(via);
        }
        let Some(claim) = self.revoking.claim(jti) else { return Ok(None) };
        if !first && self.revocation_recorded(jti).await? {
            return Ok(None);
        }
        Ok(Some(claim))
    }

    /// Whether the revocation of `jti` is in the audit trail.
    async fn revocation_recorded(&self, jti: &TokenId) -> Result<bool, StoreError> {
        let filter = AuditFilter {
            jti: Some(jti.clone()),
            decision: Some(AuditDecision::Revoked),
            limit: Some(1),
            ..Default::default()
        };
        Ok(!self.stores.audit.query(&filter).await?.is_empty())
    }

    /// Deprovisions an agent or a subject now (admin API): every token naming
    /// it that exists is dead, and it stays blocked (an agent cannot
    /// authenticate, no token naming it lives) until it is reinstated.
    pub async fn deprovision(&self, principal: &Principal) -> Result<(), GrantError> {
        self.deprovision_for(principal, DeprovisionCause::Admin).await
    }

    async fn deprovision_for(&self, principal: &Principal, cause: DeprovisionCause) -> Result<(), GrantError> {
        let now = self.now();
        // Every token issued up to now expires within the longest lifetime
        // any token can have, whatever `max_token_ttl` was when it was issued.
        // The cut-off is exact and lands with the block in one write: a
        // token issued after a later reinstatement lives at once, and none
        // slips between a cut-off and its block.
        let cutoff =
            Cutoff { at: self.now_micros(), until: now.plus(crate::token::MAX_LIFETIME), block: Blocking::Block };
        self.stores.revocation.deprovision(principal, &cutoff).await?;
        self.record(principal_event("deprovision", principal, now)).await?;
        self.metrics().count_deprovisioning(matches!(principal, Principal::Agent(_)), cause);
        Ok(())
    }

    /// Writes a deprovisioning for every agent of the inventory that is past
    /// its `expires` and not yet in `done`, so that verifiers reading the
    /// store, not the inventory, see its tokens dead too. The cut-off only:
    /// an agent whose `expires` is extended later gets new tokens, never
    /// its old ones back. Returns the agents written.
    pub async fn retire_expired_agents(
        &self,
        done: &std::collections::HashSet<String>,
    ) -> Result<Vec<String>, GrantError> {
        let now = self.now();
        let mut retired = Vec::new();
        let policy = self.policy();
        for agent in policy.inventory().agents().filter(|agent| !agent.is_active(now) && !done.contains(&agent.id)) {
            let principal = Principal::Agent(agent.id.clone().into());
            let cutoff =
                Cutoff { at: self.now_micros(), until: now.plus(crate::token::MAX_LIFETIME), block: Blocking::Keep };
            self.stores.revocation.deprovision(&principal, &cutoff).await?;
            self.record(principal_event("expired", &principal, now)).await?;
            self.metrics().count_deprovisioning(true, DeprovisionCause::Expired);
            retired.push(agent.id.clone());
        }
        Ok(retired)
    }

    /// Deprovisions every agent of `known` that the inventory no longer has:
    /// removing an agent from `agents.toml` kills its tokens in the store,
    /// for verifiers that read only the store, and blocks it, so that adding
    /// it back revives none of its old tokens. Returns the agents written.
    pub async fn deprovision_removed_agents(&self, known: &[String]) -> Result<Vec<String>, GrantError> {
        let policy = self.policy();
        let inventory = policy.inventory();
        let mut removed = Vec::new();
        for id in known.iter().filter(|id| inventory.agent(id).is_none()) {
            self.deprovision_for(&Principal::Agent(id.clone().into()), DeprovisionCause::Removed).await?;
            removed.push(id.clone());
        }
        Ok(removed)
    }

    /// Lifts a deprovisioned principal's block (admin API): tokens issued from
    /// now on live; those cut off by the deprovisioning stay dead, and so
    /// does any that named the principal while it was blocked (the cut-off
    /// moves to now with the block's lifting, in one write).
    pub async fn reinstate(&self, principal: &Principal) -> Result<(), GrantError> {
        let now = self.now();
        let cutoff =
            Cutoff { at: self.now_micros(), until: now.plus(crate::token::MAX_LIFETIME), block: Blocking::Lift };
        self.stores.revocation.deprovision(principal, &cutoff).await?;
        self.record(principal_event("reinstate", principal, now)).await?;
        Ok(())
    }
}

fn principal_event(action: &str, principal: &Principal, now: crate::clock::UnixTime) -> crate::store::AuditEvent {
    let (agent, subject) = match principal {
        Principal::Agent(id) => (Some(id.to_string()), None),
        Principal::Subject(id) => (None, Some(id.to_string())),
    };
    let evidence = Evidence { grant_type: action.into(), agent, subject, ..Evidence::default() };
    evidence.event(now, AuditDecision::Revoked, None, None)
}

/// DESIGN.md §10: the client a token was issued to, the agent it is addressed
/// to, or the holder of any ancestor (the agent that obtained it or the one
/// it was addressed to).
fn holds(agent: &str, claims: &Claims) -> bool {
    claims.client_id == agent
        || claims.aud == agent
        || claims.delegation.hops.iter().any(|hop| hop.agent == agent || hop.aud == agent)
}

impl NotAHolder {
    /// The label metrics and the audit trail count this refusal by.
    pub fn reason(&self) -> &'static str {
        "not_a_holder"
    }
}
