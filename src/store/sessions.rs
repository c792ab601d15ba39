//! Console sessions, kept where every node sees them (DESIGN.md §6): with
//! Redis, a signed-in browser is signed in on any node behind a balancer;
//! the embedded store, one node's, keeps them in memory, so a restart signs
//! everyone out, which is the safe side.
//!
//! A session is kept under the SHA-256 of its id, never the id itself, so
//! that whoever reads the store cannot sign in with what they find there.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::clock::UnixTime;

/// A signed-in console session, as kept.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionRecord {
    /// The token every state change must carry in its form.
    pub csrf: String,
    /// Who signed in: `admin token`, or the member an identity provider
    /// signed in.
    pub who: String,
    /// What admitted them, so that the session ends when that does: a
    /// fingerprint of the admin token's hash, or the provider's issuer.
    pub admitted_by: String,
    /// When it ends.
    pub expires_at: UnixTime,
}

impl std::fmt::Debug for SessionRecord {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SessionRecord")
            .field("who", &self.who)
            .field("admitted_by", &self.admitted_by)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What a session is kept under: the SHA-256 of its id, in hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey(String);

impl SessionKey {
    /// The key of the session named `id`.
    pub fn of(id: &str) -> SessionKey {
        let digest = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
        SessionKey(digest.as_ref().iter().map(|byte| format!("{byte:02x}")).collect())
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where console sessions are kept.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Keeps `session` under `key`, opened at `now`, until it ends.
    async fn open_session(&self, key: &SessionKey, session: &SessionRecord, now: UnixTime) -> Result<(), StoreError>;

    /// The session under `key`, while it lasts at `now`.
    async fn session(&self, key: &SessionKey, now: UnixTime) -> Result<Option<SessionRecord>, StoreError>;

    /// Ends the session under `key`.
    async fn close_session(&self, key: &SessionKey) -> Result<(), StoreError>;
}

/// The most sessions one node keeps in memory; past it, the one closest to
/// its end goes first.
const MAX_LOCAL_SESSIONS: usize = 1000;

/// Sessions kept in this process, bounded: the embedded store's, for one node.
#[derive(Debug, Default)]
pub struct LocalSessions {
    sessions: Mutex<HashMap<SessionKey, SessionRecord>>,
}

#[async_trait]
impl SessionStore for LocalSessions {
    async fn open_session(&self, key: &SessionKey, session: &SessionRecord, now: UnixTime) -> Result<(), StoreError> {
        self.open(key, session, now);
        Ok(())
    }

    async fn session(&self, key: &SessionKey, now: UnixTime) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.find(key, now))
    }

    async fn close_session(&self, key: &SessionKey) -> Result<(), StoreError> {
        self.close(key);
        Ok(())
    }
}

impl LocalSessions {
    /// Keeps `session`, forgetting ended ones, and the soonest to end when full.
    fn open(&self, key: &SessionKey, session: &SessionRecord, now: UnixTime) {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.retain(|_, kept| kept.expires_at.0 > now.0);
        if sessions.len() >= MAX_LOCAL_SESSIONS {
            let first_to_end = sessions.iter().min_by_key(|(_, kept)| kept.expires_at.0).map(|(key, _)| key.clone());
            if let Some(key) = first_to_end {
                sessions.remove(&key);
            }
        }
        sessions.insert(key.clone(), session.clone());
    }

    /// The session under `key`, while it lasts at `now`.
    fn find(&self, key: &SessionKey, now: UnixTime) -> Option<SessionRecord> {
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.get(key).filter(|session| session.expires_at.0 > now.0).cloned()
    }

    /// Ends the session under `key`.
    fn close(&self, key: &SessionKey) {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
    }

    /// How many are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(expires_at: i64) -> SessionRecord {
        SessionRecord {
            csrf: "c".into(),
            who: "admin token".into(),
            admitted_by: "admin:0".into(),
            expires_at: UnixTime(expires_at),
        }
    }

    #[test]
    fn the_key_is_a_hash_of_the_id() {
        let key = SessionKey::of("session-id");
        assert_eq!(key.as_str().len(), 64);
        assert!(!key.as_str().contains("session-id"));
        assert_eq!(key, SessionKey::of("session-id"));
        assert_ne!(key, SessionKey::of("session-id2"));
    }

    #[test]
    fn the_sessions_kept_are_bounded_and_end_at_their_time() {
        let sessions = LocalSessions::default();
        let keys: Vec<SessionKey> = (0..MAX_LOCAL_SESSIONS + 5).map(|n| SessionKey::of(&n.to_string())).collect();
        for (n, key) in keys.iter().enumerate() {
            sessions.open(key, &record(1000 + n as i64), UnixTime(0));
        }
        assert_eq!(sessions.len(), MAX_LOCAL_SESSIONS);
        // The first to end went first.
        assert!(sessions.find(&keys[0], UnixTime(1)).is_none());
        let last = keys.last().unwrap();
        assert!(sessions.find(last, UnixTime(1)).is_some());
        assert!(sessions.find(last, UnixTime(1000 + MAX_LOCAL_SESSIONS as i64 + 4)).is_none());
        sessions.close(last);
        assert!(sessions.find(last, UnixTime(1)).is_none());
    }
}
