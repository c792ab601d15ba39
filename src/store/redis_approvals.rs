//! Approvals in Redis, shared by every node (keys in the table of
//! [`super::redis`]): one hash per approval, `state` beside the JSON
//! `record`, so that a compare-and-set is one small script, and a sorted set
//! of the pending ones for the approvers' list.

use async_trait::async_trait;

use super::approvals::{decode, encode, MAX_LISTED};
use super::redis::RedisStore;
use super::{Approval, ApprovalId, ApprovalState, ApprovalStore, StoreError};
use crate::clock::UnixTime;

/// Moves an approval from one state to the next if it is in the first now.
/// KEYS[1]: the approval; KEYS[2]: the pending set. ARGV[1]: the expected
/// state; ARGV[2]: the next state; ARGV[3]: the next record; ARGV[4]: the id.
const TRANSITION_SCRIPT: &str = r"
if redis.call('HGET', KEYS[1], 'state') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'record', ARGV[3])
if ARGV[2] ~= 'pending' then
  redis.call('ZREM', KEYS[2], ARGV[4])
end
return 1
";

impl RedisStore {
    fn approval_key(&self, id: &str) -> String {
        self.prefixed(&format!("approval:{id}"))
    }

    fn pending_key(&self) -> String {
        self.prefixed("approvals:pending")
    }
}

#[async_trait]
impl ApprovalStore for RedisStore {
    async fn create(&self, approval: &Approval) -> Result<(), StoreError> {
        let json = encode(approval)?;
        let key = self.approval_key(&approval.id.0);
        let mut pipeline = ::redis::pipe();
        pipeline.atomic();
        pipeline
            .cmd("HSET")
            .arg(&key)
            .arg("state")
            .arg(ApprovalState::Pending.as_str())
            .arg("record")
            .arg(json)
            .ignore();
        pipeline.cmd("EXPIREAT").arg(&key).arg(approval.keep_until().0.max(1)).ignore();
        pipeline.cmd("ZADD").arg(self.pending_key()).arg(approval.expires_at.0).arg(&approval.id.0).ignore();
        // Ids whose approval expired leave the pending set as new ones come.
        pipeline.cmd("ZREMRANGEBYSCORE").arg(self.pending_key()).arg("-inf").arg(approval.created_at.0).ignore();
        self.call("approval create", |mut manager| async move { pipeline.query_async::<()>(&mut manager).await }).await
    }

    async fn approval(&self, id: &ApprovalId) -> Result<Option<Approval>, StoreError> {
        let mut command = ::redis::cmd("HGET");
        command.arg(self.approval_key(&id.0)).arg("record");
        let json: Option<String> =
            self.call("approval read", |mut manager| async move { command.query_async(&mut manager).await }).await?;
        json.as_deref().map(decode).transpose()
    }

    async fn transition(&self, from: ApprovalState, next: &Approval) -> Result<bool, StoreError> {
        let mut command = ::redis::cmd("EVAL");
        command
            .arg(TRANSITION_SCRIPT)
            .arg(2)
            .arg(self.approval_key(&next.id.0))
            .arg(self.pending_key())
            .arg(from.as_str())
            .arg(next.state.as_str())
            .arg(encode(next)?)
            .arg(&next.id.0);
        let replaced: i64 = self
            .call("approval transition", |mut manager| async move { command.query_async(&mut manager).await })
            .await?;
        Ok(replaced == 1)
    }

    async fn pending(&self, now: UnixTime) -> Result<Vec<Approval>, StoreError> {
        let mut command = ::redis::cmd("ZRANGEBYSCORE");
        command.arg(self.pending_key()).arg(format!("({}", now.0)).arg("+inf").arg("LIMIT").arg(0).arg(MAX_LISTED);
        let ids: Vec<String> =
            self.call("approvals list", |mut manager| async move { command.query_async(&mut manager).await }).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipeline = ::redis::pipe();
        for id in &ids {
            pipeline.cmd("HGET").arg(self.approval_key(id)).arg("record");
        }
        let records: Vec<Option<String>> =
            self.call("approvals list", |mut manager| async move { pipeline.query_async(&mut manager).await }).await?;
        let mut pending = Vec::new();
        // A record gone (kept no longer) yields nothing.
        for json in records.iter().flatten() {
            let approval = decode(json)?;
            if approval.state == ApprovalState::Pending && !approval.is_expired(now) {
                pending.push(approval);
            }
        }
        pending.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(pending)
    }
}
