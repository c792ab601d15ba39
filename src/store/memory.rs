//! In-process state for one node, lost on restart. For tests and tools; a
//! served broker uses the embedded or the Redis store.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::approvals::{ApprovalPage, ApprovalQuery, Creation, InMemory};
use super::lifecycle::LocalLifecycle;
use super::sessions::LocalSessions;
use super::OneNode;
use super::{
    outlives, verdict, Approval, ApprovalId, ApprovalState, ApprovalStore, AuditDecision, AuditEvent, AuditFilter,
    AuditStore, Blocking, Cutoff, Lineage, Principal, ReplayStore, Retention, RevocationStore, Status, StoreError, Use,
};
use crate::claims::TokenId;
use crate::clock::{UnixMicros, UnixTime};

/// Replay, revocation, audit and approval state held in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    used: Mutex<UsedIds>,
    revoked: Mutex<HashMap<TokenId, UnixTime>>,
    deprovisioned: Mutex<HashMap<Principal, UnixMicros>>,
    blocked: Mutex<std::collections::HashSet<Principal>>,
    events: Mutex<Vec<AuditEvent>>,
    approvals: Mutex<InMemory>,
    /// How long audit events are kept, when bounded.
    retention: Option<Retention>,
    sessions: LocalSessions,
    lifecycle: LocalLifecycle,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that keeps audit events for `retention` (and the
    /// issuance of a token still alive, however old). [`MemoryStore::new`]
    /// keeps them all.
    pub fn with_retention(retention: Retention) -> Self {
        MemoryStore { retention: Some(retention), ..Self::default() }
    }

    /// The audit events recorded so far, oldest first.
    pub fn events(&self) -> Vec<AuditEvent> {
        self.events.lock().map(|events| events.clone()).unwrap_or_default()
    }
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError::Poisoned("in-memory state is poisoned".into())
}

/// Used ids with their expiry, swept of expired ones whenever the map has
/// doubled since the last sweep, so the sweeps cost O(1) per insert.
#[derive(Debug, Default)]
struct UsedIds {
    until: HashMap<String, UnixTime>,
    sweep_at: usize,
}

impl OneNode for MemoryStore {
    fn sessions(&self) -> &LocalSessions {
        &self.sessions
    }

    fn lifecycle(&self) -> &LocalLifecycle {
        &self.lifecycle
    }
}

#[async_trait]
impl ReplayStore for MemoryStore {
    async fn use_once(&self, id: &str, until: UnixTime, now: UnixTime) -> Result<Use, StoreError> {
        let mut used = self.used.lock().map_err(poisoned)?;
        if used.until.get(id).is_some_and(|expiry| *expiry > now) {
            return Ok(Use::Replayed);
        }
        if used.until.len() >= used.sweep_at {
            used.until.retain(|_, expiry| *expiry > now);
            used.sweep_at = (used.until.len() * 2).max(1024);
        }
        used.until.insert(id.to_owned(), until);
        Ok(Use::First)
    }
}

#[async_trait]
impl RevocationStore for MemoryStore {
    async fn revoke(&self, jti: &TokenId, until: UnixTime) -> Result<bool, StoreError> {
        let mut revoked = self.revoked.lock().map_err(poisoned)?;
        let first = !revoked.contains_key(jti);
        let end = revoked.entry(jti.clone()).or_insert(until);
        *end = (*end).max(until);
        Ok(first)
    }

    async fn deprovision(&self, principal: &Principal, cutoff: &Cutoff) -> Result<(), StoreError> {
        // Both locks held: the cut-off and the block land together.
        let mut deprovisioned = self.deprovisioned.lock().map_err(poisoned)?;
        let mut blocked = self.blocked.lock().map_err(poisoned)?;
        match cutoff.block {
            Blocking::Block => {
                blocked.insert(principal.clone());
            }
            Blocking::Lift => {
                if !blocked.remove(principal) {
                    return Ok(());
                }
            }
            Blocking::Keep => {}
        }
        let entry = deprovisioned.entry(principal.clone()).or_insert(cutoff.at);
        *entry = (*entry).max(cutoff.at);
        Ok(())
    }

    async fn block(&self, principal: &Principal, blocked: bool) -> Result<(), StoreError> {
        let _deprovisioned = self.deprovisioned.lock().map_err(poisoned)?;
        let mut set = self.blocked.lock().map_err(poisoned)?;
        if blocked {
            set.insert(principal.clone());
        } else {
            set.remove(principal);
        }
        Ok(())
    }

    async fn check(&self, lineage: &Lineage) -> Result<Status, StoreError> {
        let revoked = self.revoked.lock().map_err(poisoned)?;
        let deprovisioned = self.deprovisioned.lock().map_err(poisoned)?;
        let blocked = self.blocked.lock().map_err(poisoned)?;
        Ok(verdict(
            lineage.jtis.iter().any(|jti| revoked.contains_key(jti)),
            lineage.principals.iter().map(|named| blocked.contains(&named.principal)),
            lineage.principals.iter().map(|named| (named.since, deprovisioned.get(&named.principal).copied())),
        ))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl AuditStore for MemoryStore {
    async fn record(&self, event: AuditEvent) -> Result<(), StoreError> {
        let mut events = self.events.lock().map_err(poisoned)?;
        // Retention: events past it go whenever a new one comes, except the
        // issuance of a token still alive.
        if let Some(retention) = self.retention {
            let horizon = event.time.plus(retention.as_seconds().saturating_neg());
            events.retain(|kept| kept.time >= horizon || outlives(kept, event.time));
        }
        events.push(event);
        Ok(())
    }

    async fn query(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let events = self.events.lock().map_err(poisoned)?;
        Ok(events.iter().rev().filter(|event| filter.matches(event)).take(filter.limit()).cloned().collect())
    }

    async fn count(&self, filter: &AuditFilter) -> Result<usize, StoreError> {
        let events = self.events.lock().map_err(poisoned)?;
        Ok(events.iter().filter(|event| filter.matches(event)).take(AuditFilter::MAX_COUNT).count())
    }

    async fn issued(&self, jti: &TokenId) -> Result<Option<AuditEvent>, StoreError> {
        let events = self.events.lock().map_err(poisoned)?;
        let issuance = |event: &&AuditEvent| event.decision == AuditDecision::Issued && event.jti.as_ref() == Some(jti);
        Ok(events.iter().find(issuance).cloned())
    }

    async fn children(&self, parent: &TokenId, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let events = self.events.lock().map_err(poisoned)?;
        let child =
            |event: &&AuditEvent| event.decision == AuditDecision::Issued && event.parent_jti.as_ref() == Some(parent);
        Ok(events.iter().filter(child).take(limit.min(AuditFilter::MAX_LIMIT)).cloned().collect())
    }
}

#[async_trait]
impl ApprovalStore for MemoryStore {
    async fn create(&self, approval: &Approval, max_pending_per_agent: usize) -> Result<Creation, StoreError> {
        Ok(self.approvals.lock().map_err(poisoned)?.create(approval, max_pending_per_agent))
    }

    async fn approval(&self, id: &ApprovalId) -> Result<Option<Approval>, StoreError> {
        Ok(self.approvals.lock().map_err(poisoned)?.approval(id))
    }

    async fn transition(&self, from: ApprovalState, next: &Approval) -> Result<bool, StoreError> {
        Ok(self.approvals.lock().map_err(poisoned)?.transition(from, next))
    }

    async fn list(&self, query: &ApprovalQuery) -> Result<ApprovalPage, StoreError> {
        Ok(self.approvals.lock().map_err(poisoned)?.list(query))
    }

    async fn count_pending(&self, now: UnixTime) -> Result<u64, StoreError> {
        Ok(self.approvals.lock().map_err(poisoned)?.count_pending(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn expired_ids_are_forgotten_and_swept() {
        let store = MemoryStore::new();
        for index in 0..1024 {
            store.use_once(&format!("old-{index}"), UnixTime(10), UnixTime(0)).await.unwrap();
        }
        store.use_once("fresh", UnixTime(100), UnixTime(50)).await.unwrap();
        assert_eq!(store.used.lock().unwrap().until.len(), 1, "expired ids were swept");
        assert_eq!(store.use_once("old-1", UnixTime(100), UnixTime(50)).await.unwrap(), Use::First);
    }
}
