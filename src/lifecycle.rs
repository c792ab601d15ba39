//! The lifecycle of agents and subjects (DESIGN.md §2.4, §5): deprovisioned
//! by the admin API, removed from the inventory or past their expiry, and
//! reinstated. A deprovisioning kills every token naming the principal
//! issued up to now, in the store, so that verifiers that read only the
//! store see it too.

use crate::audit::{Evidence, Operator};
use crate::context::Context;
use crate::error::EndpointError;
use crate::metrics::DeprovisionCause;
use std::collections::BTreeSet;

use crate::store::{AuditDecision, Blocking, Cutoff, LifecycleStore, Principal};

/// Deprovisions an agent or a subject now (admin API): every token naming
/// it that exists is dead, and it stays blocked (an agent cannot
/// authenticate, no token naming it lives) until it is reinstated.
pub async fn deprovision(context: &Context, principal: &Principal, by: &Operator) -> Result<(), EndpointError> {
    deprovision_for(context, principal, DeprovisionCause::Admin, Some(by)).await
}

async fn deprovision_for(
    context: &Context,
    principal: &Principal,
    cause: DeprovisionCause,
    by: Option<&Operator>,
) -> Result<(), EndpointError> {
    let now = context.now();
    // Every token issued up to now expires within the longest lifetime
    // any token can have, whatever `max_token_ttl` was when it was issued.
    // The cut-off is exact and lands with the block in one write: a
    // token issued after a later reinstatement lives at once, and none
    // slips between a cut-off and its block.
    let cutoff =
        Cutoff { at: context.now_micros(), until: now.plus(crate::token::MAX_LIFETIME), block: Blocking::Block };
    context.stores.revocation.deprovision(principal, &cutoff).await?;
    context.record(principal_event("deprovision", principal, now, by)).await?;
    context.metrics().count_deprovisioning(matches!(principal, Principal::Agent(_)), cause);
    Ok(())
}

/// Writes a deprovisioning for every agent of the inventory that is past
/// its `expires` and not retired at that `expires` yet, each by the node
/// whose claim lands (see [`LifecycleStore::claim`]): verifiers that read
/// the store, not the inventory, then see its tokens dead too. The cut-off
/// only: an agent whose `expires` is extended later gets new tokens, never
/// its old ones back. Returns the agents written.
pub async fn retire_expired_agents(
    context: &Context,
    store: &dyn LifecycleStore,
) -> Result<Vec<String>, EndpointError> {
    let now = context.now();
    let mut retired = Vec::new();
    let policy = context.policy();
    for agent in policy.inventory().agents().filter(|agent| !agent.is_active(now)) {
        let expires = agent.expires.to_string();
        if store.is_retired(&agent.id, &expires).await?
            || !store.claim(&format!("retire:{}:{expires}", agent.id)).await?
        {
            continue;
        }
        let principal = Principal::Agent(agent.id.clone().into());
        let cutoff =
            Cutoff { at: context.now_micros(), until: now.plus(crate::token::MAX_LIFETIME), block: Blocking::Keep };
        context.stores.revocation.deprovision(&principal, &cutoff).await?;
        context.record(principal_event("expired", &principal, now, None)).await?;
        // Done only now: a failure before leaves it to the next claim.
        store.mark_retired(&agent.id, &expires).await?;
        context.metrics().count_deprovisioning(true, DeprovisionCause::Expired);
        retired.push(agent.id.clone());
    }
    Ok(retired)
}

/// Deprovisions every agent the inventory had and no longer has, each by
/// the node whose claim lands. Removing an agent from `agents.toml` kills
/// its tokens in the store, for verifiers that read only the store, and
/// blocks it, so that adding it back revives none of its old tokens.
/// Returns the agents written.
pub async fn deprovision_removed_agents(
    context: &Context,
    store: &dyn LifecycleStore,
) -> Result<Vec<String>, EndpointError> {
    let current: BTreeSet<String> = context.policy().inventory().agents().map(|agent| agent.id.clone()).collect();
    let mut removed = Vec::new();
    for id in store.known_agents_missing(&current).await? {
        if !store.claim(&format!("remove:{id}")).await? {
            continue;
        }
        deprovision_for(context, &Principal::Agent(id.clone().into()), DeprovisionCause::Removed, None).await?;
        // Forgotten only now: a failure before leaves it to the next claim.
        store.forget_known(&id).await?;
        removed.push(id);
    }
    Ok(removed)
}

/// Lifts a deprovisioned principal's block (admin API): tokens issued from
/// now on live; those cut off by the deprovisioning stay dead, and so
/// does any that named the principal while it was blocked (the cut-off
/// moves to now with the block's lifting, in one write).
pub async fn reinstate(context: &Context, principal: &Principal, by: &Operator) -> Result<(), EndpointError> {
    let now = context.now();
    let cutoff =
        Cutoff { at: context.now_micros(), until: now.plus(crate::token::MAX_LIFETIME), block: Blocking::Lift };
    context.stores.revocation.deprovision(principal, &cutoff).await?;
    context.record(principal_event("reinstate", principal, now, Some(by))).await?;
    Ok(())
}

/// The event of `action` on `principal`, made `by` an operator, or by the
/// broker itself (an expiry, a removal from the inventory) when `None`.
fn principal_event(
    action: &str,
    principal: &Principal,
    now: crate::clock::UnixTime,
    by: Option<&Operator>,
) -> crate::store::AuditEvent {
    let (agent, subject) = match principal {
        Principal::Agent(id) => (Some(id.to_string()), None),
        Principal::Subject(id) => (None, Some(id.to_string())),
    };
    let evidence = Evidence { action: action.into(), agent, subject, ..Evidence::default() };
    let mut event = evidence.event(now, AuditDecision::Revoked, None, None);
    event.by = by.map(Operator::to_string);
    event
}
