//! The agents' lifecycle in Redis, shared by every node. Keys, under the
//! prefix (`baton:` below), beside those in the table of [`super::redis`]:
//!
//! | key | type | holds | expires |
//! |---|---|---|---|
//! | `baton:agents:known` | set | the agents of the inventories loaded, less those whose removal is written | never |
//! | `baton:agents:retired` | hash | agent → the `expires` it was retired at | never |
//! | `baton:agents:claim:{work}` | string | a node's claim on a removal or a retirement | [`CLAIM_SECONDS`] |
//!
//! Each command is on one key, so nodes that see the same change at once
//! write it once: the one whose claim lands.

use std::collections::BTreeSet;

use async_trait::async_trait;

use super::lifecycle::{LifecycleStore, CLAIM_SECONDS};
use super::redis::RedisStore;
use super::StoreError;

/// Adds ARGV to the known set and answers its members that ARGV lacks.
/// KEYS: the known set.
const MISSING_SCRIPT: &str = r"
local now = {}
for _, id in ipairs(ARGV) do
  now[id] = true
  redis.call('SADD', KEYS[1], id)
end
local missing = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if not now[id] then table.insert(missing, id) end
end
return missing
";

impl RedisStore {
    fn known_agents_key(&self) -> String {
        self.prefixed("agents:known")
    }

    fn retired_agents_key(&self) -> String {
        self.prefixed("agents:retired")
    }
}

#[async_trait]
impl LifecycleStore for RedisStore {
    async fn known_agents_missing(&self, current: &BTreeSet<String>) -> Result<Vec<String>, StoreError> {
        let mut command = ::redis::cmd("EVAL");
        command.arg(MISSING_SCRIPT).arg(1).arg(self.known_agents_key()).arg(current.iter().collect::<Vec<_>>());
        self.call("known agents", |mut manager| async move { command.query_async(&mut manager).await }).await
    }

    async fn forget_known(&self, agent: &str) -> Result<(), StoreError> {
        let mut command = ::redis::cmd("SREM");
        command.arg(self.known_agents_key()).arg(agent);
        self.call("known agents", |mut manager| async move { command.query_async::<()>(&mut manager).await }).await
    }

    async fn is_retired(&self, agent: &str, expires: &str) -> Result<bool, StoreError> {
        let mut command = ::redis::cmd("HGET");
        command.arg(self.retired_agents_key()).arg(agent);
        let retired: Option<String> =
            self.call("retired agents", |mut manager| async move { command.query_async(&mut manager).await }).await?;
        Ok(retired.as_deref() == Some(expires))
    }

    async fn mark_retired(&self, agent: &str, expires: &str) -> Result<(), StoreError> {
        let mut command = ::redis::cmd("HSET");
        command.arg(self.retired_agents_key()).arg(agent).arg(expires);
        self.call("retired agents", |mut manager| async move { command.query_async::<()>(&mut manager).await }).await
    }

    async fn claim(&self, work: &str) -> Result<bool, StoreError> {
        let mut command = ::redis::cmd("SET");
        command.arg(self.prefixed(&format!("agents:claim:{work}"))).arg(1).arg("NX").arg("EX").arg(CLAIM_SECONDS);
        let set: Option<String> =
            self.call("lifecycle claim", |mut manager| async move { command.query_async(&mut manager).await }).await?;
        Ok(set.is_some())
    }
}
