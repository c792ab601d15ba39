//! Console sessions in Redis, so that every node behind a balancer knows a
//! signed-in browser. Keys, under the prefix (`baton:` below), beside those
//! in the table of [`super::redis`]:
//!
//! | key | type | holds | expires |
//! |---|---|---|---|
//! | `baton:console-session:{sha256 of the id}` | string | the session as JSON | when the session ends (`EXAT`) |

use async_trait::async_trait;

use super::redis::RedisStore;
use super::sessions::{SessionKey, SessionRecord, SessionStore};
use super::StoreError;
use crate::clock::UnixTime;

impl RedisStore {
    fn session_key(&self, key: &SessionKey) -> String {
        self.prefixed(&format!("console-session:{}", key.as_str()))
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn open_session(&self, key: &SessionKey, session: &SessionRecord, now: UnixTime) -> Result<(), StoreError> {
        if session.expires_at.0 <= now.0 {
            return Ok(());
        }
        let record = serde_json::to_string(session).map_err(|error| StoreError::Corrupt(error.to_string()))?;
        let mut command = ::redis::cmd("SET");
        command.arg(self.session_key(key)).arg(record).arg("EXAT").arg(session.expires_at.0);
        self.call("session open", |mut manager| async move { command.query_async::<()>(&mut manager).await }).await
    }

    async fn session(&self, key: &SessionKey, now: UnixTime) -> Result<Option<SessionRecord>, StoreError> {
        let mut command = ::redis::cmd("GET");
        command.arg(self.session_key(key));
        let record: Option<String> =
            self.call("session read", |mut manager| async move { command.query_async(&mut manager).await }).await?;
        let Some(record) = record else { return Ok(None) };
        let session: SessionRecord =
            serde_json::from_str(&record).map_err(|error| StoreError::Corrupt(format!("console session: {error}")))?;
        // Redis ends the key at that second; a clock ahead of Redis's is not trusted past it.
        Ok((session.expires_at.0 > now.0).then_some(session))
    }

    async fn close_session(&self, key: &SessionKey) -> Result<(), StoreError> {
        let mut command = ::redis::cmd("DEL");
        command.arg(self.session_key(key));
        self.call("session close", |mut manager| async move { command.query_async::<()>(&mut manager).await }).await
    }
}
