//! In-process state for one node. Nothing survives a restart: a replayed
//! client assertion is still refused for as long as the node runs, which
//! covers its whole life when assertions live only minutes.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;

use super::{AuditEvent, AuditSink, ReplayStore, RevocationStore, Status, StoreError, Use};
use crate::claims::{Claims, TokenId};
use crate::clock::UnixTime;

/// Replay, revocation and audit state held in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    used: Mutex<UsedIds>,
    revoked: Mutex<HashSet<TokenId>>,
    events: Mutex<Vec<AuditEvent>>,
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
    async fn revoke(&self, jti: &TokenId, _until: UnixTime) -> Result<(), StoreError> {
        self.revoked.lock().map_err(poisoned)?.insert(jti.clone());
        Ok(())
    }

    async fn check(&self, claims: &Claims) -> Result<Status, StoreError> {
        let revoked = self.revoked.lock().map_err(poisoned)?;
        let dead = revoked.contains(&claims.jti) || claims.delegation.ancestry().any(|jti| revoked.contains(jti));
        Ok(if dead { Status::Revoked } else { Status::Active })
    }
}

#[async_trait]
impl AuditSink for MemoryStore {
    async fn record(&self, event: AuditEvent) -> Result<(), StoreError> {
        self.events.lock().map_err(poisoned)?.push(event);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_id_is_used_once() {
        let store = MemoryStore::new();
        assert_eq!(store.use_once("a", UnixTime(10), UnixTime(0)).await.unwrap(), Use::First);
        assert_eq!(store.use_once("a", UnixTime(10), UnixTime(9)).await.unwrap(), Use::Replayed);
        assert_eq!(store.use_once("b", UnixTime(10), UnixTime(0)).await.unwrap(), Use::First);
    }

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
