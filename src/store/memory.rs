//! In-process state for one node, lost on restart. For tests and tools; a
//! served broker uses the embedded or the Redis store.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::approvals::{ApprovalPage, ApprovalQuery, Creation, InMemory};
use super::{
    Approval, ApprovalId, ApprovalState, ApprovalStore, AuditEvent, AuditFilter, AuditStore, Lineage, Principal,
    ReplayStore, RevocationStore, Status, StoreError, Use,
};
use crate::claims::TokenId;
use crate::clock::UnixTime;

/// Replay, revocation, audit and approval state held in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    used: Mutex<UsedIds>,
    revoked: Mutex<HashMap<TokenId, UnixTime>>,
    deprovisioned: Mutex<HashMap<Principal, UnixTime>>,
    blocked: Mutex<std::collections::HashSet<Principal>>,
    events: Mutex<Vec<AuditEvent>>,
    approvals: Mutex<InMemory>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The audit events recorded so far, oldest first.
    pub fn events(&self) -> Vec<AuditEvent> {
        self.events.lock().map(|events| events.clone()).unwrap_or_default()
    }
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError("in-memory state is poisoned".into())
}

/// Used ids with their expiry, swept of expired ones whenever the map has
/// doubled since the last sweep, so the sweeps cost O(1) per insert.
#[derive(Debug, Default)]
struct UsedIds {
    until: HashMap<String, UnixTime>,
    sweep_at: usize,
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
    async fn revoke(&self, jti: &TokenId, until: UnixTime) -> Result<(), StoreError> {
        self.revoked.lock().map_err(poisoned)?.insert(jti.clone(), until);
        Ok(())
    }

    async fn deprovision(&self, principal: &Principal, at: UnixTime, _until: UnixTime) -> Result<(), StoreError> {
        let mut deprovisioned = self.deprovisioned.lock().map_err(poisoned)?;
        let entry = deprovisioned.entry(principal.clone()).or_insert(at);
        *entry = (*entry).max(at);
        Ok(())
    }

    async fn block(&self, principal: &Principal, blocked: bool) -> Result<(), StoreError> {
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
        if lineage.jtis.iter().any(|jti| revoked.contains_key(jti)) {
            return Ok(Status::Revoked);
        }
        let blocked = self.blocked.lock().map_err(poisoned)?;
        if lineage.principals.iter().any(|principal| blocked.contains(principal)) {
            return Ok(Status::Deprovisioned);
        }
        let deprovisioned = self.deprovisioned.lock().map_err(poisoned)?;
        let killed = lineage
            .principals
            .iter()
            .any(|principal| deprovisioned.get(principal).is_some_and(|at| *at >= lineage.issued_at));
        Ok(if killed { Status::Deprovisioned } else { Status::Active })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl AuditStore for MemoryStore {
    async fn record(&self, event: AuditEvent) -> Result<(), StoreError> {
        self.events.lock().map_err(poisoned)?.push(event);
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
