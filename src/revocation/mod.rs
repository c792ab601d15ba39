//! Token revocation (RFC 7009) by the agents that hold a token or one of its
//! ancestors. Revoking a token revokes every token that descends from it:
//! each descendant carries the revoked `jti` in its ancestry.

mod in_flight;
#[cfg(test)]
mod tests;

pub use crate::error::NotAHolder;
use in_flight::{Revoking, RevokingClaim};

use crate::abuse::Guard;
use crate::audit::Evidence;
use crate::claims::{Claims, TokenId};
use crate::client_auth::ClientAuthError;
use crate::clock::UnixTime;
use crate::context::Context;
use crate::error::EndpointError;
use crate::ids::AgentId;
use crate::metrics::RevokedVia;
use crate::params::TokenParams;
use crate::store::{AuditDecision, AuditFilter, StoreError};

/// Revocation at this node: the revocations under way, so that a
/// concurrent call for the same token records it once.
#[derive(Default)]
pub struct Revocations {
    revoking: Revoking,
}

impl Revocations {
    /// Handles `POST /revoke`. Unknown, invalid or expired tokens get 200
    /// (RFC 7009 §2.2): there is nothing left to revoke.
    pub async fn revoke(
        &self,
        context: &Context,
        guard: &Guard,
        authorization: Option<&str>,
        params: &TokenParams,
        client_address: Option<String>,
    ) -> Result<(), EndpointError> {
        let client = guard.authenticate_client(context, authorization, params, client_address.as_deref()).await?;
        let agent = client.into_agent().ok_or(ClientAuthError::NotAnAgent)?;
        context.ensure_not_blocked(agent.id(), None).await?;
        let token = params.require("token")?;
        // RFC 7009 §2.1: a holder may revoke a token addressed to anyone.
        let Ok(verified) = context.verify(token) else {
            return Ok(());
        };
        let claims = verified.claims();
        let mut evidence = Evidence {
            action: "revoke".into(),
            subject: Some(claims.sub.to_string()),
            agent: Some(agent.id().to_string()),
            chain: claims.chain().into_iter().map(ToString::to_string).collect(),
            target: Some(claims.aud.to_string()),
            ..Evidence::default()
        };
        if !holds(agent.id(), claims) {
            let error = EndpointError::NotAHolder(NotAHolder);
            context.record(std::mem::take(&mut evidence).refused(context.now(), &error, client_address)).await?;
            return Err(error);
        }
        // Descendants never outlive the revoked token: its expiry bounds the entry.
        let via = RevokedVia::RevocationEndpoint;
        let Some(_recording) = self.revoke_once(context, &claims.jti, claims.exp, via).await? else {
            // Already revoked: still 200 (RFC 7009 §2.2), but nothing new
            // happened, so no new evidence that would crowd out the rest.
            return Ok(());
        };
        let mut event = evidence.event(context.now(), AuditDecision::Revoked, None, client_address);
        event.jti = Some(claims.jti.clone());
        event.expires_at = Some(claims.exp);
        context.record(event).await?;
        Ok(())
    }

    /// Revokes `jti` until `until`, and tells whether this call is the one
    /// to record it (`None`: it is not). Every call writes the revocation,
    /// so that no call answers success for one that was not kept; the event
    /// is written by a call that claims the token on this node and finds no
    /// event of its revocation in the trail: the first, or a later one where
    /// the first one's event never landed (its answer was lost, or its record
    /// failed and its caller was told 503), so no revocation stays without
    /// evidence and, on one node, none has two (nodes sharing a store can
    /// each record one). A call that meets another on this node recording
    /// the same token leaves the event to it.
    pub(crate) async fn revoke_once(
        &self,
        context: &Context,
        jti: &TokenId,
        until: UnixTime,
        via: RevokedVia,
    ) -> Result<Option<RevokingClaim<'_>>, StoreError> {
        let first = context.measured("revoke", context.stores.revocation.revoke(jti, until)).await?;
        if first {
            context.metrics().count_revocation(via);
        }
        let Some(claim) = self.revoking.claim(jti) else { return Ok(None) };
        // Even the first write may find the event recorded: a call that
        // wrote after it can have claimed, found no event and recorded one
        // before this call claimed.
        match self.revocation_recorded(context, jti).await {
            Ok(true) => Ok(None),
            Ok(false) => Ok(Some(claim)),
            // The first write records whatever the trail says: an event
            // twice is better than none.
            Err(_) if first => Ok(Some(claim)),
            Err(error) => Err(error),
        }
    }

    /// Whether the revocation of `jti` is in the audit trail.
    async fn revocation_recorded(&self, context: &Context, jti: &TokenId) -> Result<bool, StoreError> {
        let filter = AuditFilter {
            jti: Some(jti.clone()),
            decision: Some(AuditDecision::Revoked),
            limit: Some(1),
            ..Default::default()
        };
        Ok(!context.stores.audit.query(&filter).await?.is_empty())
    }
}

/// DESIGN.md §10: the client a token was issued to, the agent it is addressed
/// to, or the holder of any ancestor (the agent that obtained it or the one
/// it was addressed to).
fn holds(agent: &AgentId, claims: &Claims) -> bool {
    claims.client_id == *agent
        || claims.aud.is_agent(agent)
        || claims.delegation.hops.iter().any(|hop| hop.agent == *agent || hop.aud.is_agent(agent))
}
