//! Approvals in Redis, shared by every node. Keys, under the prefix
//! (`baton:` below), beside those in the table of [`super::redis`]:
//!
//! | key | type | holds | expires |
//! |---|---|---|---|
//! | `baton:approval:{id}` | hash | `state` and `record` (the approval as JSON) | its expiry + one day |
//! | `baton:approvals:pending` | sorted set | ids of pending approvals, by expiry: `ZCOUNT` is the gauge | never; expired ids are pruned |
//! | `baton:approvals:request:{key}` | string | `{expiry} {id}` of the request's pending approval | its expiry + one day; removed once decided |
//! | `baton:approvals:agent:{agent}` | sorted set | ids of the agent's pending approvals, by expiry: its cap | the latest approval's expiry + one day |
//! | `baton:approvals:list:{state}[/{agent}]` | sorted set | `{created_at, 20 digits}:{id}`, all at score 0, read newest first by `ZREVRANGEBYLEX` | never (the per-agent ones as the agent set); pruned after two days |
//!
//! A create and a state change are each one script, so the indexes move with
//! the record. The scripts name the keys they touch in `KEYS`.

use async_trait::async_trait;

use super::approvals::{
    decode, encode, listing, ApprovalPage, ApprovalQuery, Creation, Cursor, Pager, KEEP_AFTER_EXPIRY,
};
use super::redis::RedisStore;
use super::{Approval, ApprovalId, ApprovalState, ApprovalStore, StoreError};
use crate::clock::UnixTime;

/// Records a pending approval unless its request already has one, or its
/// agent is at its cap. KEYS: the request, the approval, the pending set,
/// the agent's pending set, the pending listing, the agent's pending
/// listing. ARGV: now, id, record, expiry, keep-until, the cap, the listing
/// member, the listings' pruning bound. Returns {0, id} when created,
/// {1, id} for the waiting approval, {2, ''} at the cap.
const CREATE_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
if current then
  local space = string.find(current, ' ', 1, true)
  if space and tonumber(string.sub(current, 1, space - 1)) > tonumber(ARGV[1]) then
    local waiting = string.sub(current, space + 1)
    if redis.call('ZSCORE', KEYS[3], waiting) then
      return {1, waiting}
    end
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[6]) then
  return {2, ''}
end
redis.call('HSET', KEYS[2], 'state', 'pending', 'record', ARGV[3])
redis.call('EXPIREAT', KEYS[2], ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[2])
redis.call('EXPIREAT', KEYS[4], ARGV[5], 'NX')
redis.call('EXPIREAT', KEYS[4], ARGV[5], 'GT')
redis.call('SET', KEYS[1], ARGV[4] .. ' ' .. ARGV[2], 'EXAT', ARGV[5])
for index = 5, 6 do
  redis.call('ZADD', KEYS[index], 0, ARGV[7])
  redis.call('ZREMRANGEBYLEX', KEYS[index], '-', ARGV[8])
end
redis.call('EXPIREAT', KEYS[6], ARGV[5], 'NX')
redis.call('EXPIREAT', KEYS[6], ARGV[5], 'GT')
return {0, ARGV[2]}
";

/// Moves an approval from one state to the next if it is in the first now,
/// and its index entries with it. KEYS: the approval, the pending set, the
/// request, the agent's pending set, the listings of the old state (all,
/// the agent's), of the new state (all, the agent's). ARGV: the expected
/// state, the next state, the next record, the id, the listing member,
/// keep-until, expiry, the listings' pruning bound.
///
/// In both scripts a shared set or listing keeps the latest keep-until of
/// its members (`EXPIREAT … NX` for a key new here, `GT` for one that
/// exists), never an earlier one: a member decided late must not take the
/// others with it.
const TRANSITION_SCRIPT: &str = r"
if redis.call('HGET', KEYS[1], 'state') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'record', ARGV[3])
if ARGV[1] == 'pending' and ARGV[2] ~= 'pending' then
  redis.call('ZREM', KEYS[2], ARGV[4])
  redis.call('ZREM', KEYS[4], ARGV[4])
  if redis.call('GET', KEYS[3]) == ARGV[7] .. ' ' .. ARGV[4] then
    redis.call('DEL', KEYS[3])
  end
end
if ARGV[1] ~= ARGV[2] then
  redis.call('ZREM', KEYS[5], ARGV[5])
  redis.call('ZREM', KEYS[6], ARGV[5])
  for index = 7, 8 do
    redis.call('ZADD', KEYS[index], 0, ARGV[5])
    redis.call('ZREMRANGEBYLEX', KEYS[index], '-', ARGV[8])
  end
  redis.call('EXPIREAT', KEYS[8], ARGV[6], 'NX')
  redis.call('EXPIREAT', KEYS[8], ARGV[6], 'GT')
end
return 1
";

/// Listing entries read per round trip.
const LIST_BATCH: usize = 250;
/// Listing entries older than this (seconds before the approval written)
/// are pruned: past the longest TTL plus the keeping time, their records are gone.
const LISTED_FOR: i64 = 86_400 + KEEP_AFTER_EXPIRY;

/// A listing entry: the creation time in 20 digits, so that text order is
/// time order, then the id.
fn member(created_at: UnixTime, id: &str) -> String {
    format!("{:020}:{id}", created_at.0.max(0))
}

/// The place a listing entry stands for.
fn place(member: &str) -> Option<Cursor> {
    let (created_at, id) = member.split_once(':')?;
    Some(Cursor { created_at: UnixTime(created_at.parse().ok()?), id: ApprovalId(id.to_owned()) })
}

/// The bound below which listing entries written with `approval` are pruned.
fn pruned_before(approval: &Approval) -> String {
    format!("({}", member(approval.created_at.plus(-LISTED_FOR), ""))
}

impl RedisStore {
    fn approval_key(&self, id: &str) -> String {
        self.prefixed(&format!("approval:{id}"))
    }

    fn pending_key(&self) -> String {
        self.prefixed("approvals:pending")
    }

    fn request_key(&self, approval: &Approval) -> String {
        self.prefixed(&format!("approvals:request:{}", approval.request_key()))
    }

    fn agent_pending_key(&self, agent: &str) -> String {
        self.prefixed(&format!("approvals:agent:{agent}"))
    }

    fn listing_key(&self, listing: &str) -> String {
        self.prefixed(&format!("approvals:list:{listing}"))
    }

    /// The two listings of `approval` were it in `state`.
    fn listing_keys(&self, approval: &Approval, state: ApprovalState) -> [String; 2] {
        [self.listing_key(&listing(state, None)), self.listing_key(&listing(state, Some(&approval.request.agent)))]
    }
}

#[async_trait]
impl ApprovalStore for RedisStore {
    async fn create(&self, approval: &Approval, max_pending_per_agent: usize) -> Result<Creation, StoreError> {
        let [listed, agent_listed] = self.listing_keys(approval, ApprovalState::Pending);
        let mut command = ::redis::cmd("EVAL");
        command
            .arg(CREATE_SCRIPT)
            .arg(6)
            .arg(self.request_key(approval))
            .arg(self.approval_key(&approval.id.0))
            .arg(self.pending_key())
            .arg(self.agent_pending_key(&approval.request.agent))
            .arg(listed)
            .arg(agent_listed)
            .arg(approval.created_at.0)
            .arg(&approval.id.0)
            .arg(encode(approval)?)
            .arg(approval.expires_at.0)
            .arg(approval.keep_until().0.max(1))
            .arg(max_pending_per_agent)
            .arg(member(approval.created_at, &approval.id.0))
            .arg(pruned_before(approval));
        let (outcome, id): (i64, String) =
            self.call("approval create", |mut manager| async move { command.query_async(&mut manager).await }).await?;
        match outcome {
            0 => Ok(Creation::Created),
            2 => Ok(Creation::Full),
            _ => match self.approval(&ApprovalId(id)).await? {
                Some(waiting) => Ok(Creation::Waiting(Box::new(waiting))),
                // Gone between the two calls (decided and past keeping):
                // fail this request closed rather than create a second one.
                None => Err(StoreError::Corrupt("a pending approval vanished while it was read".into())),
            },
        }
    }

    async fn approval(&self, id: &ApprovalId) -> Result<Option<Approval>, StoreError> {
        let mut command = ::redis::cmd("HGET");
        command.arg(self.approval_key(&id.0)).arg("record");
        let json: Option<String> =
            self.call("approval read", |mut manager| async move { command.query_async(&mut manager).await }).await?;
        json.as_deref().map(decode).transpose()
    }

    async fn transition(&self, from: ApprovalState, next: &Approval) -> Result<bool, StoreError> {
        let [from_listed, from_agent_listed] = self.listing_keys(next, from);
        let [next_listed, next_agent_listed] = self.listing_keys(next, next.state);
        let mut command = ::redis::cmd("EVAL");
        command
            .arg(TRANSITION_SCRIPT)
            .arg(8)
            .arg(self.approval_key(&next.id.0))
            .arg(self.pending_key())
            .arg(self.request_key(next))
            .arg(self.agent_pending_key(&next.request.agent))
            .arg(from_listed)
            .arg(from_agent_listed)
            .arg(next_listed)
            .arg(next_agent_listed)
            .arg(from.as_str())
            .arg(next.state.as_str())
            .arg(encode(next)?)
            .arg(&next.id.0)
            .arg(member(next.created_at, &next.id.0))
            .arg(next.keep_until().0.max(1))
            .arg(next.expires_at.0)
            .arg(pruned_before(next));
        let replaced: i64 = self
            .call("approval transition", |mut manager| async move { command.query_async(&mut manager).await })
            .await?;
        Ok(replaced == 1)
    }

    async fn list(&self, query: &ApprovalQuery) -> Result<ApprovalPage, StoreError> {
        let mut pager = Pager::new(query);
        let key = self.listing_key(&pager.listing());
        let mut before = match &query.before {
            Some(cursor) => format!("({}", member(cursor.created_at, &cursor.id.0)),
            None => "+".to_owned(),
        };
        loop {
            let mut command = ::redis::cmd("ZREVRANGEBYLEX");
            command.arg(&key).arg(&before).arg("-").arg("LIMIT").arg(0).arg(LIST_BATCH);
            let members: Vec<String> = self
                .call("approvals list", |mut manager| async move { command.query_async(&mut manager).await })
                .await?;
            let places: Vec<Cursor> = members.iter().filter_map(|entry| place(entry)).collect();
            if places.is_empty() {
                return Ok(pager.finish());
            }
            let mut pipeline = ::redis::pipe();
            for at in &places {
                pipeline.cmd("HGET").arg(self.approval_key(&at.id.0)).arg("record");
            }
            let records: Vec<Option<String>> = self
                .call("approvals list", |mut manager| async move { pipeline.query_async(&mut manager).await })
                .await?;
            for (at, json) in places.into_iter().zip(records) {
                // A record gone (kept no longer) yields nothing.
                let record = json.as_deref().map(decode).transpose()?;
                if !pager.offer(at, record) {
                    return Ok(pager.finish());
                }
            }
            match members.last() {
                Some(last) if members.len() >= LIST_BATCH => before = format!("({last}"),
                _ => return Ok(pager.finish()),
            }
        }
    }

    async fn count_pending(&self, now: UnixTime) -> Result<u64, StoreError> {
        let mut command = ::redis::cmd("ZCOUNT");
        command.arg(self.pending_key()).arg(format!("({}", now.0)).arg("+inf");
        self.call("approvals count", |mut manager| async move { command.query_async(&mut manager).await }).await
    }
}
