//! The agents' lifecycle in Redis, shared by every node. Keys, under the
//! prefix (`baton:` below), beside those in the table of [`super::redis`]:
//!
//! | key | type | holds | expires |
//! |---|---|---|---|
//! | `baton:agents:known` | set | the agents of the inventory last loaded by any node | never |
//! | `baton:agents:retired` | hash | agent → the `expires` it was retired at | never |
//!
//! Each change is one script on one key, so two nodes that see the same
//! removal or expiry at once get it answered to one of them.

use std::collections::BTreeSet;

use async_trait::async_trait;

use super::lifecycle::LifecycleStore;
use super::redis::RedisStore;
use super::StoreError;

/// Replaces the known set with ARGV, answering the members it had that ARGV
/// lacks. KEYS: the known set.
const REPLACE_SCRIPT: &str = r"
local before = redis.call('SMEMBERS', KEYS[1])
redis.call('DEL', KEYS[1])
local now = {}
for _, id in ipairs(ARGV) do
  now[id] = true
  redis.call('SADD', KEYS[1], id)
end
local gone = {}
for _, id in ipairs(before) do
  if not now[id] then table.insert(gone, id) end
end
return gone
";

/// Sets ARGV[1] to ARGV[2] unless it holds that already: 1 when set.
/// KEYS: the retired hash.
const CLAIM_SCRIPT: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
";

/// Removes ARGV[1] when it holds ARGV[2]. KEYS: the retired hash.
const RELEASE_SCRIPT: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
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
    async fn replace_known_agents(&self, current: &BTreeSet<String>) -> Result<Vec<String>, StoreError> {
        let mut command = ::redis::cmd("EVAL");
        command.arg(REPLACE_SCRIPT).arg(1).arg(self.known_agents_key()).arg(current.iter().collect::<Vec<_>>());
        self.call("known agents", |mut manager| async move { command.query_async(&mut manager).await }).await
    }

    async fn keep_known(&self, agents: &[String]) -> Result<(), StoreError> {
        if agents.is_empty() {
            return Ok(());
        }
        let mut command = ::redis::cmd("SADD");
        command.arg(self.known_agents_key()).arg(agents);
        self.call("known agents", |mut manager| async move { command.query_async::<()>(&mut manager).await }).await
    }

    async fn claim_retirement(&self, agent: &str, expires: &str) -> Result<bool, StoreError> {
        let mut command = ::redis::cmd("EVAL");
        command.arg(CLAIM_SCRIPT).arg(1).arg(self.retired_agents_key()).arg(agent).arg(expires);
        let claimed: i64 =
            self.call("retirement claim", |mut manager| async move { command.query_async(&mut manager).await }).await?;
        Ok(claimed == 1)
    }

    async fn release_retirement(&self, agent: &str, expires: &str) -> Result<(), StoreError> {
        let mut command = ::redis::cmd("EVAL");
        command.arg(RELEASE_SCRIPT).arg(1).arg(self.retired_agents_key()).arg(agent).arg(expires);
        self.call("retirement release", |mut manager| async move { command.query_async::<()>(&mut manager).await })
            .await
    }
}
