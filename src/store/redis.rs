//! The Redis store: replay, revocation and audit state shared by every node
//! of a deployment (DESIGN.md §6).
//!
//! Keys, all under the configured prefix (`baton:` below):
//!
//! | key | type | holds | expires |
//! |---|---|---|---|
//! | `baton:used:{id}` | string | `1` | at the id's end (`EXAT until`) |
//! | `baton:revoked:{jti}` | string | `1` | the revoked token's expiry + [`KEEP_AFTER_END`] |
//! | `baton:deprovisioned:{agent:…\|subject:…}` | string | the latest cut-off, `<microseconds>us` (a bare number is an older whole-seconds cut-off) | the last covered token's expiry + [`KEEP_AFTER_END`] |
//! | `baton:blocked:{agent:…\|subject:…}` | string | `1` while blocked | never; deleted on reinstatement |
//! | `baton:audit` | stream | one `event` field (JSON) per entry | entries older than the retention (by Redis's clock) are trimmed as new ones come |
//! | `baton:audit:issued:{jti}` | string | the token's issuance event (JSON) | the later of the token's expiry and the retention |
//! | `baton:audit:children:{jti}` | list | the ids of the tokens issued from `jti`, oldest first | as their issuance events |
//! | `baton:audit:jti:{jti}` | list | ids of the stream entries naming `jti` (the latest [`AUDIT_SCAN_LIMIT`]) | the token's expiry + one day |
//! | `baton:audit:parent:{jti}` | list | ids of the stream entries whose parent is `jti` (the latest [`AUDIT_SCAN_LIMIT`]) | the token's expiry + one day |
//! | `baton:approval:{id}` | hash | `state` and `record` (the approval as JSON) | the approval's expiry + one day |
//! | `baton:approvals:pending` | sorted set | ids of pending approvals, scored by their expiry | never; expired ids are pruned |
//!
//! A deprovisioning writes its cut-off and its block in one `MULTI`. The
//! issuance keys are written only for issued tokens, so no number of
//! refusals or revocations naming a token hides it from a trace; and the
//! stream is trimmed by age, never by count, so junk cannot push real
//! evidence out (only what is older than the retention goes).
//!
//! Every revocation and deprovisioning is also published, in the transaction
//! that writes it, on the channel `baton:revocations` as a JSON
//! [`RevocationNotice`], so nodes and verifiers may keep a pushed copy.
//!
//! Every call is bounded ([`CALL_DEADLINE`]): when Redis cannot be reached the
//! call fails and its caller fails closed (DESIGN.md §2.5); the connection is
//! re-established by itself once Redis answers again.
//!
//! Writes are acknowledged by Redis once applied; they are durable when the
//! server runs with `appendonly yes` and `appendfsync always`.
//!
//! Under Sentinel (or wherever [`RedisTarget::with_replica_acks`] asks), a
//! revocation, deprovisioning or block is acknowledged only once a replica
//! has it too (`WAIT`): the master may then die and the Sentinels promote a
//! replica without losing it (they promote the replica furthest along).
//! In a planned failover or a partition the old master may go on
//! acknowledging until the store next asks the Sentinels
//! ([`MASTER_RECHECK`]); only acknowledgements from every replica keep
//! those. When too few replicas acknowledge within [`REPLICA_WAIT`], the
//! call fails (503) though the master applied it; a retry is harmless.
//!
//! The check reads several keys in one `MGET`, and the scripts and
//! transactions write several at once, so every key must hash to one slot of
//! a Redis Cluster: there the prefix must carry a hash tag (`{baton}:`), and
//! one shard holds all of Baton's state (see [`RedisStore::connect_to`]).

use std::fmt;
use std::future::Future;
use std::time::Duration;

use ::redis::streams::{StreamId, StreamRangeReply};
use ::redis::{Pipeline, RedisResult, Value};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub(super) use super::redis_link::describe;
use super::redis_link::{Connection, Link};
pub use super::redis_link::{CALL_DEADLINE, CONNECTION_TIMEOUT, MASTER_RECHECK, RESPONSE_TIMEOUT, UNCONFIRMED_LIMIT};
use super::redis_target::{RedisTarget, RedisTls, RedisUrl, Topology};
use super::{
    verdict, AuditDecision, AuditEvent, AuditFilter, AuditStore, Blocking, Cutoff, Lineage, Principal, ReplayStore,
    Retention, RevocationStore, Status, StoreError, Take, Use,
};
use crate::claims::TokenId;
use crate::clock::{UnixMicros, UnixTime};

/// Seconds a revocation or deprovisioning is kept after the end its caller
/// gave: the nodes' clocks and Redis's may differ, and verifiers accept a
/// token for a short leeway after its `exp`.
pub const KEEP_AFTER_END: i64 = 300;
/// The most entries one audit query reads before it stops.
pub const AUDIT_SCAN_LIMIT: usize = 100_000;

/// How long a revocation waits for replicas to acknowledge it: well within
/// [`RESPONSE_TIMEOUT`], so that a missing replica is told apart from a
/// Redis that stopped answering (whose connection is replaced).
pub const REPLICA_WAIT: Duration = Duration::from_millis(500);
/// Audit indexes outlive the token they index by this many seconds.
const AUDIT_INDEX_AFTER_END: i64 = 86_400;
/// Stream entries read (or fetched by id) per round trip of a query.
const AUDIT_PAGE: usize = 1000;
/// Seconds an event's `time` may differ from the Redis clock that stamped its
/// stream id; a time-windowed query reads this much wider, then filters.
const AUDIT_CLOCK_SKEW: i64 = 300;
/// Expiry times are clamped to 9999-12-31, which Redis accepts.
const LATEST_EXPIRY: i64 = 253_402_300_799;

/// Raises a principal's cut-off, never lowering it, and pushes its expiry
/// later, never earlier, with what it does to the block, and publishes the
/// notices: one atomic step. `EXPIREAT … NX` covers a key created here (no
/// expiry yet), `GT` one that exists. A stored bare number is an older
/// whole-seconds cut-off: the last microsecond of that second. A lift
/// changes nothing for a principal that is not blocked.
/// KEYS[1]: the principal's cut-off key; KEYS[2]: its block key.
/// ARGV[1]: the cut-off in microseconds; ARGV[2]: keep until; ARGV[3]:
/// `block`, `lift` or `keep`; ARGV[4]: the channel; ARGV[5]: the cut-off's
/// notice; ARGV[6]: the block's notice.
const DEPROVISION_SCRIPT: &str = r"
local stored = redis.call('GET', KEYS[1])
local current = nil
if stored then
  if string.sub(stored, -2) == 'us' then
    current = tonumber(string.sub(stored, 1, -3))
  elseif tonumber(stored) then
    current = tonumber(stored) * 1000000 + 999999
  end
  if not current then
    return redis.error_reply('ERR unreadable deprovisioning time')
  end
end
local mode = ARGV[3]
if mode == 'lift' and redis.call('DEL', KEYS[2]) == 0 then
  return 0
end
if mode == 'block' then
  redis.call('SET', KEYS[2], 1)
  redis.call('PUBLISH', ARGV[4], ARGV[6])
end
if not current or tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1] .. 'us', 'KEEPTTL')
end
redis.call('EXPIREAT', KEYS[1], ARGV[2], 'NX')
redis.call('EXPIREAT', KEYS[1], ARGV[2], 'GT')
redis.call('PUBLISH', ARGV[4], ARGV[5])
if mode == 'lift' then
  redis.call('PUBLISH', ARGV[4], ARGV[6])
end
return 1
";

/// Appends an event to the stream, trimming entries older than the
/// retention by Redis's own clock (the one its ids are made of), and its id
/// to each index list; an issuance also goes to its issuance key and its
/// parent's children list. One atomic step, since the id is only known once
/// `XADD` ran.
/// KEYS[1]: the stream; KEYS[2..n+1]: index lists; then, for an issuance,
/// its key and, when it has a parent, the parent's children list.
/// ARGV[1]: the event (JSON); ARGV[2]: the index lists' expiry; ARGV[3]:
/// the retention in seconds; ARGV[4]: the index lists' cap; ARGV[5]: n;
/// ARGV[6]: the issuance keys' expiry; ARGV[7]: the issued token's id.
const RECORD_SCRIPT: &str = r"
local now = redis.call('TIME')
local horizon = (tonumber(now[1]) - tonumber(ARGV[3])) * 1000
if horizon < 0 then horizon = 0 end
local id = redis.call('XADD', KEYS[1], 'MINID', string.format('%d', horizon), '*', 'event', ARGV[1])
local lists = tonumber(ARGV[5])
for index = 2, lists + 1 do
  redis.call('RPUSH', KEYS[index], id)
  redis.call('LTRIM', KEYS[index], -tonumber(ARGV[4]), -1)
  redis.call('EXPIREAT', KEYS[index], ARGV[2], 'NX')
  redis.call('EXPIREAT', KEYS[index], ARGV[2], 'GT')
end
local issued = KEYS[lists + 2]
if issued then
  redis.call('SET', issued, ARGV[1], 'EXAT', ARGV[6])
  local children = KEYS[lists + 3]
  if children then
    redis.call('RPUSH', children, ARGV[7])
    redis.call('EXPIREAT', children, ARGV[6], 'NX')
    redis.call('EXPIREAT', children, ARGV[6], 'GT')
  end
end
return id
";

/// A revocation as published on `{prefix}revocations`, for nodes and
/// verifiers that keep a pushed copy. A copy applies a principal's `at` as
/// a maximum, like the store: a notice never moves it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RevocationNotice {
    /// A token, and so its descendants, was revoked.
    Token {
        /// The revoked token's id.
        jti: TokenId,
        /// When the revoked token expires.
        until: UnixTime,
    },
    /// A principal was deprovisioned.
    Principal {
        /// Who.
        principal: Principal,
        /// The cut-off's second, for readers that predate `at_micros`.
        at: UnixTime,
        /// Tokens whose lineage named them at or before this instant are
        /// dead. Absent from older writers: then the last microsecond of `at`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at_micros: Option<UnixMicros>,
        /// When the last of those expires.
        until: UnixTime,
    },
    /// A principal was blocked, or its block lifted.
    Block {
        /// Who.
        principal: Principal,
        /// Whether it is blocked now.
        blocked: bool,
    },
}

/// Replay, revocation and audit state in Redis, shared by every node.
pub struct RedisStore {
    link: Link,
    address: String,
    keys: Keys,
    retention: Retention,
    /// Replicas that must acknowledge a revocation before it is
    /// ([`RedisTarget::with_replica_acks`]).
    replicas: u32,
}

impl fmt::Debug for RedisStore {
    // By hand: the connection details may carry a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore").field("address", &self.address).field("prefix", &self.keys.prefix).finish()
    }
}

impl RedisStore {
    /// Connects to the Redis at `url` (any form of [`RedisUrl`]; a `rediss`
    /// one trusts the platform's roots), keeping every key under `prefix`.
    /// Fails when Redis cannot be reached now; after that, an outage fails
    /// calls, never the store. Audit events are kept for the default
    /// [`Retention`].
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisStore, StoreError> {
        RedisStore::connect_with_retention(url, prefix, Retention::default()).await
    }

    /// [`RedisStore::connect`], keeping audit events for `retention` (by
    /// Redis's clock); the issuance of a token is kept until it expires,
    /// however short the retention.
    pub async fn connect_with_retention(
        url: &str,
        prefix: &str,
        retention: Retention,
    ) -> Result<RedisStore, StoreError> {
        let target = RedisTarget::new(&RedisUrl::new(url), &RedisTls::default())?;
        RedisStore::connect_to(target, prefix, retention).await
    }

    /// Connects to `target` (with its TLS files), keeping every key under
    /// `prefix` and audit events for `retention`.
    ///
    /// On a Redis Cluster the prefix must carry a hash tag (`{baton}:`), so
    /// that every key lands in one slot: a lineage check reads keys of many
    /// tokens and principals in one `MGET`, and the audit and approval
    /// scripts write the stream or the pending set with per-token keys, so
    /// no finer tag would keep them whole. The cost: one shard (with its
    /// replicas) holds and serves all of Baton's state; the others hold
    /// none of it. A cluster still brings its failover.
    pub async fn connect_to(target: RedisTarget, prefix: &str, retention: Retention) -> Result<RedisStore, StoreError> {
        check_prefix(target.topology(), prefix)?;
        let RedisTarget { source, address, replica_acks: replicas, .. } = target;
        let store = RedisStore { link: Link::new(source), address, keys: Keys::new(prefix), retention, replicas };
        store.ping().await.map_err(|error| {
            StoreError::Unavailable(format!("cannot reach Redis at {}: {}", store.address, error.detail()))
        })?;
        Ok(store)
    }

    /// The pub/sub channel revocations are published on (as [`RevocationNotice`]s).
    pub fn revocation_channel(&self) -> String {
        self.keys.revocations()
    }

    /// `suffix` under this store's key prefix.
    pub(super) fn prefixed(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.keys.prefix)
    }

    /// Runs one request on the current connection, bounded by [`CALL_DEADLINE`].
    pub(super) async fn call<T, F, Fut>(&self, operation: &'static str, request: F) -> Result<T, StoreError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.link.call(operation, request).await
    }

    /// Runs `pipeline`, a `MULTI … EXEC` whose `EXEC` (or single command)
    /// comes last, followed by a `WAIT` for the replicas a revocation needs;
    /// answers the last reply but the `WAIT`'s.
    async fn replicated(&self, operation: &'static str, mut pipeline: Pipeline) -> Result<Value, StoreError> {
        if self.replicas > 0 {
            let wait = u64::try_from(REPLICA_WAIT.as_millis()).unwrap_or(u64::MAX);
            pipeline.cmd("WAIT").arg(self.replicas).arg(wait);
        }
        let mut replies: Vec<Value> =
            self.call(operation, |mut connection| async move { pipeline.query_async(&mut connection).await }).await?;
        if self.replicas > 0 {
            let acknowledged = match replies.pop() {
                Some(Value::Int(count)) => count,
                _ => return Err(StoreError::Corrupt(format!("redis {operation}: unexpected reply to WAIT"))),
            };
            if acknowledged < i64::from(self.replicas) {
                // Applied on the master, not yet safe from its loss: the
                // caller is told it failed, and may retry.
                return Err(StoreError::Unavailable(format!(
                    "redis {operation}: no replica acknowledged within {REPLICA_WAIT:?}"
                )));
            }
        }
        replies.pop().ok_or_else(|| StoreError::Corrupt(format!("redis {operation}: no reply")))
    }

    /// Hands `take` the events matching `filter`, newest first, until it
    /// wants no more. An index names every event that can match; the jti's
    /// is the shorter.
    async fn scan(&self, filter: &AuditFilter, take: &mut Take<'_>) -> Result<(), StoreError> {
        match (&filter.jti, &filter.parent_jti) {
            (Some(jti), _) => self.scan_index(self.keys.audit_by_jti(jti), filter, take).await,
            (None, Some(parent)) => self.scan_index(self.keys.audit_by_parent(parent), filter, take).await,
            (None, None) => self.scan_stream(filter, take).await,
        }
    }

    /// Events named by an index list, newest first.
    async fn scan_index(&self, index: String, filter: &AuditFilter, take: &mut Take<'_>) -> Result<(), StoreError> {
        let mut command = ::redis::cmd("LRANGE");
        command.arg(&index).arg(negative(AUDIT_SCAN_LIMIT)).arg(-1);
        let ids: Vec<String> =
            self.call("query", |mut manager| async move { command.query_async(&mut manager).await }).await?;
        let stream = self.keys.audit();
        for chunk in ids.rchunks(AUDIT_PAGE) {
            let mut pipeline = ::redis::pipe();
            for id in chunk.iter().rev() {
                pipeline.cmd("XRANGE").arg(&stream).arg(id).arg(id);
            }
            let replies: Vec<StreamRangeReply> =
                self.call("query", |mut manager| async move { pipeline.query_async(&mut manager).await }).await?;
            // An id whose entry was trimmed from the stream yields nothing.
            for entry in replies.into_iter().flat_map(|reply| reply.ids) {
                if offer(entry, filter, take)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Events in the stream, newest first, read backwards page by page, at
    /// most [`AUDIT_SCAN_LIMIT`] entries of it.
    async fn scan_stream(&self, filter: &AuditFilter, take: &mut Take<'_>) -> Result<(), StoreError> {
        let stream = self.keys.audit();
        // Stream ids are Redis's milliseconds, close to but not the events'
        // own times: read a little wider, `matches` keeps the exact window.
        let mut end = filter.until.map_or_else(
            || "+".to_owned(),
            |until| milliseconds(until.plus(AUDIT_CLOCK_SKEW).plus(1)).saturating_sub(1).to_string(),
        );
        let start = filter
            .since
            .map_or_else(|| "-".to_owned(), |since| milliseconds(since.plus(-AUDIT_CLOCK_SKEW)).to_string());
        let mut scanned = 0;
        loop {
            let mut command = ::redis::cmd("XREVRANGE");
            command.arg(&stream).arg(&end).arg(&start).arg("COUNT").arg(AUDIT_PAGE);
            let page: StreamRangeReply =
                self.call("query", |mut manager| async move { command.query_async(&mut manager).await }).await?;
            let count = page.ids.len();
            let last = page.ids.last().map(|entry| format!("({}", entry.id));
            for entry in page.ids {
                if offer(entry, filter, take)? {
                    return Ok(());
                }
            }
            scanned += count;
            match last {
                Some(next) if count == AUDIT_PAGE && scanned < AUDIT_SCAN_LIMIT => end = next,
                _ => return Ok(()),
            }
        }
    }
}

#[async_trait]
impl ReplayStore for RedisStore {
    async fn use_once(&self, id: &str, until: UnixTime, now: UnixTime) -> Result<Use, StoreError> {
        // An end already past still records the id briefly, so that two
        // concurrent uses cannot both be first.
        let end = if until <= now { now.plus(1) } else { until };
        let mut command = ::redis::cmd("SET");
        command.arg(self.keys.used(id)).arg(1).arg("NX").arg("EXAT").arg(expiry(end));
        let reply: Value =
            self.call("use_once", |mut manager| async move { command.query_async(&mut manager).await }).await?;
        match reply {
            Value::Okay => Ok(Use::First),
            Value::SimpleString(text) if text == "OK" => Ok(Use::First),
            Value::Nil => Ok(Use::Replayed),
            _ => Err(StoreError::Corrupt("redis use_once: unexpected reply to SET".into())),
        }
    }
}

#[async_trait]
impl RevocationStore for RedisStore {
    async fn revoke(&self, jti: &TokenId, until: UnixTime) -> Result<bool, StoreError> {
        let key = self.keys.revoked(jti);
        let keep_until = expiry(until.plus(KEEP_AFTER_END));
        let notice = notice(&RevocationNotice::Token { jti: jti.clone(), until })?;
        let mut pipeline = ::redis::pipe();
        // NX then EXPIREAT GT: a second revocation never shortens the first,
        // and the NX tells whether it is the first. `MULTI` by hand, so that
        // a `WAIT` can follow the `EXEC` on the same connection.
        pipeline.cmd("MULTI").ignore();
        pipeline.cmd("SET").arg(&key).arg(1).arg("NX").arg("EXAT").arg(keep_until).ignore();
        pipeline.cmd("EXPIREAT").arg(&key).arg(keep_until).arg("GT").ignore();
        pipeline.cmd("PUBLISH").arg(self.keys.revocations()).arg(notice).ignore();
        pipeline.cmd("EXEC");
        let set = match self.replicated("revoke", pipeline).await? {
            Value::Array(mut replies) if replies.len() == 3 => replies.swap_remove(0),
            _ => return Err(StoreError::Corrupt("redis revoke: unexpected reply to EXEC".into())),
        };
        match set {
            Value::Nil => Ok(false),
            Value::Okay => Ok(true),
            Value::SimpleString(text) if text == "OK" => Ok(true),
            _ => Err(StoreError::Corrupt("redis revoke: unexpected reply to SET".into())),
        }
    }

    async fn deprovision(&self, principal: &Principal, cutoff: &Cutoff) -> Result<(), StoreError> {
        let notice = notice(&RevocationNotice::Principal {
            principal: principal.clone(),
            at: cutoff.at.second(),
            at_micros: Some(cutoff.at),
            until: cutoff.until,
        })?;
        let (mode, blocked) = match cutoff.block {
            Blocking::Block => ("block", true),
            Blocking::Lift => ("lift", false),
            Blocking::Keep => ("keep", false),
        };
        let block_notice = self::notice(&RevocationNotice::Block { principal: principal.clone(), blocked })?;
        // One script: the cut-off and the block land together, for every
        // reader, and a block is published before its cut-off, a lifting after.
        let mut pipeline = ::redis::pipe();
        pipeline
            .cmd("EVAL")
            .arg(DEPROVISION_SCRIPT)
            .arg(2)
            .arg(self.keys.deprovisioned(principal))
            .arg(self.keys.blocked(principal))
            .arg(cutoff.at.0)
            .arg(expiry(cutoff.until.plus(KEEP_AFTER_END)))
            .arg(mode)
            .arg(self.keys.revocations())
            .arg(notice)
            .arg(block_notice);
        self.replicated("deprovision", pipeline).await.map(drop)
    }

    async fn block(&self, principal: &Principal, blocked: bool) -> Result<(), StoreError> {
        let notice = notice(&RevocationNotice::Block { principal: principal.clone(), blocked })?;
        let mut pipeline = ::redis::pipe();
        pipeline.cmd("MULTI").ignore();
        // A block lasts until it is lifted: no expiry.
        if blocked {
            pipeline.cmd("SET").arg(self.keys.blocked(principal)).arg(1).ignore();
        } else {
            pipeline.cmd("DEL").arg(self.keys.blocked(principal)).ignore();
        }
        pipeline.cmd("PUBLISH").arg(self.keys.revocations()).arg(notice).ignore();
        pipeline.cmd("EXEC");
        self.replicated("block", pipeline).await.map(drop)
    }

    async fn check(&self, lineage: &Lineage) -> Result<Status, StoreError> {
        let revoked = lineage.jtis.iter().map(|jti| self.keys.revoked(jti));
        let blocked = lineage.principals.iter().map(|named| self.keys.blocked(&named.principal));
        let deprovisioned = lineage.principals.iter().map(|named| self.keys.deprovisioned(&named.principal));
        let keys: Vec<String> = revoked.chain(blocked).chain(deprovisioned).collect();
        if keys.is_empty() {
            return Ok(Status::Active); // names nothing that could be revoked
        }
        let mut command = ::redis::cmd("MGET");
        command.arg(&keys);
        // One round trip for the token, its ancestry and every principal.
        let values: Vec<Option<String>> =
            self.call("check", |mut manager| async move { command.query_async(&mut manager).await }).await?;
        if values.len() != keys.len() {
            return Err(StoreError::Corrupt("redis check: MGET answered a different number of keys".into()));
        }
        let (revoked, principals) = values.split_at(lineage.jtis.len().min(values.len()));
        let (blocked, deprovisioned) = principals.split_at(lineage.principals.len().min(principals.len()));
        let mut cutoffs = Vec::with_capacity(deprovisioned.len());
        for (named, stored) in lineage.principals.iter().zip(deprovisioned) {
            let cutoff = stored
                .as_deref()
                .map(|text| {
                    cutoff_of(text).ok_or_else(|| StoreError::Corrupt("redis check: unreadable cut-off".into()))
                })
                .transpose()?;
            cutoffs.push((named.since, cutoff));
        }
        Ok(verdict(revoked.iter().any(Option::is_some), blocked.iter().map(Option::is_some), cutoffs))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let reply: String = self
            .call("ping", |mut manager| async move { ::redis::cmd("PING").query_async(&mut manager).await })
            .await?;
        if reply == "PONG" {
            Ok(())
        } else {
            Err(StoreError::Corrupt("redis ping: unexpected reply".into()))
        }
    }
}

#[async_trait]
impl AuditStore for RedisStore {
    async fn record(&self, event: AuditEvent) -> Result<(), StoreError> {
        let json =
            serde_json::to_string(&event).map_err(|_| StoreError::Corrupt("audit event cannot be encoded".into()))?;
        let mut keys = vec![self.keys.audit()];
        keys.extend(event.jti.as_ref().map(|jti| self.keys.audit_by_jti(jti)));
        keys.extend(event.parent_jti.as_ref().map(|parent| self.keys.audit_by_parent(parent)));
        let lists = keys.len() - 1;
        let issued = match (&event.jti, event.decision) {
            (Some(jti), AuditDecision::Issued) => Some(jti),
            _ => None,
        };
        if let Some(jti) = issued {
            keys.push(self.keys.audit_issued(jti));
            keys.extend(event.parent_jti.as_ref().map(|parent| self.keys.audit_children(parent)));
        }
        let index_expiry = expiry(event.expires_at.unwrap_or(event.time).plus(AUDIT_INDEX_AFTER_END));
        // A trace finds the token while it lives and as long as its stream
        // entry is kept.
        let retained = event.time.plus(self.retention.as_seconds());
        // Past the token's end by the same margin as revocations, so that a
        // Redis clock a little ahead, or a verifier's leeway, never finds a
        // live token without its evidence.
        let lives_until = event.expires_at.map(|expires_at| expires_at.plus(KEEP_AFTER_END));
        let issued_expiry = expiry(lives_until.map_or(retained, |until| until.max(retained)));
        let mut command = ::redis::cmd("EVAL");
        command
            .arg(RECORD_SCRIPT)
            .arg(keys.len())
            .arg(&keys)
            .arg(json)
            .arg(index_expiry)
            .arg(self.retention.as_seconds())
            .arg(AUDIT_SCAN_LIMIT)
            .arg(lists)
            .arg(issued_expiry)
            .arg(issued.map_or("", |jti| jti.0.as_str()));
        // The reply (the entry's id) comes once Redis applied, and with
        // `appendfsync always` persisted, the whole script.
        let _id: String =
            self.call("record", |mut manager| async move { command.query_async(&mut manager).await }).await?;
        Ok(())
    }

    async fn query(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let mut events = Vec::new();
        self.scan(filter, &mut |event| {
            events.push(event);
            events.len() >= filter.limit()
        })
        .await?;
        Ok(events)
    }

    /// Counts within what one scan reads: at most [`AUDIT_SCAN_LIMIT`]
    /// entries of the stream, of every agent, newest first.
    async fn count(&self, filter: &AuditFilter) -> Result<usize, StoreError> {
        let mut count = 0;
        self.scan(filter, &mut |_| {
            count += 1;
            count >= AuditFilter::MAX_COUNT
        })
        .await?;
        Ok(count)
    }

    async fn issued(&self, jti: &TokenId) -> Result<Option<AuditEvent>, StoreError> {
        let mut command = ::redis::cmd("GET");
        command.arg(self.keys.audit_issued(jti));
        let json: Option<String> =
            self.call("issued", |mut manager| async move { command.query_async(&mut manager).await }).await?;
        if let Some(json) = json {
            return serde_json::from_str(&json)
                .map(Some)
                .map_err(|_| StoreError::Corrupt("unreadable issuance event".into()));
        }
        // Recorded before issuance keys existed: the token's index list,
        // read whole for its issuance.
        Ok(self.query(&AuditFilter::issuance_of(jti)).await?.into_iter().next())
    }

    async fn children(&self, parent: &TokenId, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let limit = limit.min(AuditFilter::MAX_LIMIT);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut command = ::redis::cmd("LRANGE");
        command.arg(self.keys.audit_children(parent)).arg(0).arg(limit.saturating_sub(1));
        let jtis: Vec<String> =
            self.call("children", |mut manager| async move { command.query_async(&mut manager).await }).await?;
        if jtis.is_empty() {
            return Ok(Vec::new());
        }
        let mut command = ::redis::cmd("MGET");
        for jti in jtis {
            command.arg(self.keys.audit_issued(&TokenId(jti)));
        }
        let events: Vec<Option<String>> =
            self.call("children", |mut manager| async move { command.query_async(&mut manager).await }).await?;
        // A child whose issuance key has expired is past its retention.
        events
            .into_iter()
            .flatten()
            .map(|json| {
                serde_json::from_str(&json).map_err(|_| StoreError::Corrupt("unreadable issuance event".into()))
            })
            .collect()
    }
}

/// Key names, all under one prefix.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn new(prefix: &str) -> Keys {
        Keys { prefix: prefix.to_owned() }
    }

    fn used(&self, id: &str) -> String {
        format!("{}used:{id}", self.prefix)
    }

    fn revoked(&self, jti: &TokenId) -> String {
        format!("{}revoked:{}", self.prefix, jti.0)
    }

    fn deprovisioned(&self, principal: &Principal) -> String {
        format!("{}deprovisioned:{}", self.prefix, principal.key())
    }

    fn blocked(&self, principal: &Principal) -> String {
        format!("{}blocked:{}", self.prefix, principal.key())
    }

    fn revocations(&self) -> String {
        format!("{}revocations", self.prefix)
    }

    fn audit(&self) -> String {
        format!("{}audit", self.prefix)
    }

    fn audit_by_jti(&self, jti: &TokenId) -> String {
        format!("{}audit:jti:{}", self.prefix, jti.0)
    }

    fn audit_by_parent(&self, parent: &TokenId) -> String {
        format!("{}audit:parent:{}", self.prefix, parent.0)
    }

    fn audit_issued(&self, jti: &TokenId) -> String {
        format!("{}audit:issued:{}", self.prefix, jti.0)
    }

    fn audit_children(&self, parent: &TokenId) -> String {
        format!("{}audit:children:{}", self.prefix, parent.0)
    }
}

/// Refuses, on a Redis Cluster, a prefix without a hash tag: its keys would
/// spread over slots that no script or `MGET` may span.
pub(super) fn check_prefix(topology: Topology, prefix: &str) -> Result<(), StoreError> {
    if topology == Topology::Cluster && hash_tag(prefix).is_none() {
        return Err(StoreError::Misconfigured(
            "on a Redis Cluster the key prefix needs a hash tag, such as {baton}:, so that every key lands in one slot"
                .into(),
        ));
    }
    Ok(())
}

/// The hash tag of a key that starts with `prefix`, as Redis Cluster reads
/// it: what lies between the first `{` and the next `}`, when not empty.
pub fn hash_tag(prefix: &str) -> Option<&str> {
    let (_, after) = prefix.split_once('{')?;
    let (tag, _) = after.split_once('}')?;
    (!tag.is_empty()).then_some(tag)
}

fn notice(notice: &RevocationNotice) -> Result<String, StoreError> {
    serde_json::to_string(notice).map_err(|_| StoreError::Corrupt("revocation notice cannot be encoded".into()))
}

/// An expiry Redis accepts: `EXAT`/`EXPIREAT` refuse 0 and below, and
/// overflow in milliseconds far in the future. A time in the past deletes
/// the key, which is right: nothing it covers is alive.
fn expiry(at: UnixTime) -> i64 {
    at.0.clamp(1, LATEST_EXPIRY)
}

/// A stored cut-off: `<microseconds>us`, or an older whole-seconds one,
/// which killed every token of its second.
pub(super) fn cutoff_of(text: &str) -> Option<UnixMicros> {
    match text.strip_suffix("us") {
        Some(micros) => micros.parse().ok().map(UnixMicros),
        None => text.parse().ok().map(|seconds| UnixMicros::end_of(UnixTime(seconds))),
    }
}

/// A Unix time as stream-id milliseconds (ids start at 0).
fn milliseconds(at: UnixTime) -> u64 {
    u64::try_from(at.0.clamp(0, LATEST_EXPIRY)).unwrap_or(0).saturating_mul(1000)
}

/// `-count`, as a list index counting from the end.
fn negative(count: usize) -> i64 {
    i64::try_from(count).map_or(i64::MIN, |count| -count)
}

/// Decodes a stream entry and hands it to `take` when it matches; true once
/// `take` wants no more.
fn offer(entry: StreamId, filter: &AuditFilter, take: &mut Take<'_>) -> Result<bool, StoreError> {
    let unreadable = || StoreError::Corrupt(format!("unreadable audit entry {}", entry.id));
    let json: String = entry.get("event").ok_or_else(unreadable)?;
    let event: AuditEvent = serde_json::from_str(&json).map_err(|_| unreadable())?;
    Ok(filter.matches(&event) && take(event))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_are_tagged_json() {
        let token = RevocationNotice::Token { jti: TokenId("j1".into()), until: UnixTime(100) };
        assert_eq!(notice(&token).unwrap(), r#"{"kind":"token","jti":"j1","until":100}"#);
        let principal = RevocationNotice::Principal {
            principal: Principal::Agent("a1".into()),
            at: UnixTime(5),
            at_micros: Some(UnixMicros(5_000_007)),
            until: UnixTime(9),
        };
        let json = notice(&principal).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"principal","principal":{"kind":"agent","id":"a1"},"at":5,"at_micros":5000007,"until":9}"#
        );
        assert_eq!(serde_json::from_str::<RevocationNotice>(&json).unwrap(), principal);
        let older = r#"{"kind":"principal","principal":{"kind":"agent","id":"a1"},"at":5,"until":9}"#;
        assert_eq!(
            serde_json::from_str::<RevocationNotice>(older).unwrap(),
            RevocationNotice::Principal {
                principal: Principal::Agent("a1".into()),
                at: UnixTime(5),
                at_micros: None,
                until: UnixTime(9)
            }
        );
    }

    #[test]
    fn cutoffs_read_both_forms() {
        assert_eq!(cutoff_of("5000007us"), Some(UnixMicros(5_000_007)));
        assert_eq!(cutoff_of("5"), Some(UnixMicros(5_999_999)), "an older whole-seconds cut-off");
        assert_eq!(cutoff_of("soon"), None);
        assert_eq!(cutoff_of("us"), None);
    }

    #[test]
    fn expiries_stay_within_what_redis_accepts() {
        assert_eq!(expiry(UnixTime(0)), 1);
        assert_eq!(expiry(UnixTime(-5)), 1);
        assert_eq!(expiry(UnixTime(1_800_000_000)), 1_800_000_000);
        assert_eq!(expiry(UnixTime(i64::MAX)), LATEST_EXPIRY);
        assert_eq!(milliseconds(UnixTime(-1)), 0);
        assert_eq!(milliseconds(UnixTime(2)), 2000);
        assert_eq!(negative(3), -3);
    }

    #[test]
    fn hash_tags_are_read_as_redis_cluster_reads_them() {
        assert_eq!(hash_tag("{baton}:"), Some("baton"));
        assert_eq!(hash_tag("tenant-{b1}:"), Some("b1"));
        assert_eq!(hash_tag("{}baton:"), None, "an empty tag hashes the whole key");
        assert_eq!(hash_tag("baton:"), None);
        assert_eq!(hash_tag("baton{:"), None);
    }

    #[test]
    fn keys_live_under_the_prefix() {
        let keys = Keys::new("baton:");
        assert_eq!(keys.used("x"), "baton:used:x");
        assert_eq!(keys.revoked(&TokenId("j".into())), "baton:revoked:j");
        assert_eq!(keys.deprovisioned(&Principal::Subject("s".into())), "baton:deprovisioned:subject:s");
        assert_eq!(keys.audit_by_parent(&TokenId("p".into())), "baton:audit:parent:p");
    }
}
