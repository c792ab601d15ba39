//! A local copy of a Redis store's revocations, kept current by the
//! broker's pub/sub (DESIGN.md §6, §7), so that a verifier checks a valid
//! token without a network round trip.
//!
//! [`RevocationMirror::connect`] subscribes to `{prefix}revocations` first,
//! then loads every `{prefix}revoked:*` and `{prefix}deprovisioned:*` key
//! with its expiry: a revocation published during the load arrives on the
//! subscription, one made before it is in the keys, so none is lost. A
//! background task then applies every [`RevocationNotice`]; entries are kept
//! as long as Redis keeps their keys (the covered tokens' end plus
//! [`KEEP_AFTER_END`]), and a deprovisioning's `at` only moves forward.
//!
//! The copy is fresh only while its subscription is proven alive: every
//! `max_staleness / 3` the task sends `PING` on the subscription's own
//! connection. Redis answers in order with the messages it pushes there, so
//! once the answer is back every notice published before the `PING` was sent
//! has been applied, and that moment becomes the latest proof. [`check`]
//! fails (callers fail closed, a verifier answers 503) when the latest proof
//! is older than `max_staleness` or the subscription dropped. A dropped or
//! silent subscription is replaced with bounded backoff, and the full state
//! reloaded, before the copy is fresh again.
//!
//! Each subscription, and the load behind it, goes to the node holding the
//! store's keys (one server, the master the Sentinels name at that moment,
//! or the cluster node serving the prefix's hash tag), over TLS where the
//! target says so; after a failover the next subscription follows the
//! promotion.
//!
//! The mirror publishes nothing, so it cannot disturb other subscribers; it
//! ignores notices of kinds it does not know (another tool's heartbeats),
//! and resynchronises from the keys on a notice of a known kind it cannot
//! read.
//!
//! [`check`]: RevocationStore::check

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ::redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use ::redis::{AsyncConnectionConfig, Client, Msg, RedisResult, Value};
use async_trait::async_trait;
use futures_util::{FutureExt, StreamExt};
use serde::Deserialize;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::redis::{
    check_prefix, cutoff_of, describe, RevocationNotice, CALL_DEADLINE, CONNECTION_TIMEOUT, KEEP_AFTER_END,
    RESPONSE_TIMEOUT,
};
use super::redis_link::Source as RedisSource;
use super::redis_target::{RedisTarget, RedisTls, RedisUrl};
use super::{verdict, Cutoff, Lineage, Principal, RevocationStore, Status, StoreError};
use crate::claims::TokenId;
use crate::clock::{Clock, SystemClock, UnixMicros, UnixTime};
use crate::ids::{AgentId, Subject};

/// The first wait before reconnecting a dropped subscription; doubled on
/// each failed attempt up to [`RECONNECT_MAX_DELAY`].
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(100);
/// The longest wait between two reconnection attempts.
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(2);
/// The shortest time between two liveness proofs, whatever the bound.
const MIN_HEARTBEAT: Duration = Duration::from_millis(10);
/// How often entries past their end are dropped: their end is in seconds,
/// and an entry kept a little late only refuses tokens already expired.
const PRUNE_INTERVAL: Duration = Duration::from_secs(30);
/// Keys asked per `SCAN` step, and so per pipeline of the load.
const SCAN_COUNT: usize = 1000;
/// The notice kinds [`RevocationNotice`] is tagged with. A notice of one of
/// them that does not decode is a revocation we cannot read: resynchronise.
const KNOWN_KINDS: [&str; 2] = ["token", "principal"];

/// A read-only, in-memory copy of a Redis store's revocations and
/// deprovisionings, kept current by pub/sub. Its [`check`] reads memory
/// only, and fails closed when the copy may be stale. Dropping it stops its
/// background task.
///
/// [`check`]: RevocationStore::check
pub struct RevocationMirror {
    shared: Arc<Shared>,
    task: AbortHandle,
    address: String,
    prefix: String,
}

impl fmt::Debug for RevocationMirror {
    // By hand: the client's connection details may carry a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevocationMirror")
            .field("address", &self.address)
            .field("prefix", &self.prefix)
            .field("max_staleness", &self.shared.max_staleness)
            .finish()
    }
}

impl RevocationMirror {
    /// Subscribes to the revocations of the Redis store at `url` under
    /// `prefix`, loads what it already holds, and follows it from then on;
    /// checks fail once the copy may be more than `max_staleness` behind.
    /// Fails when Redis cannot be reached now; after that, an outage fails
    /// checks, never the mirror, which reconnects by itself.
    pub async fn connect(url: &str, prefix: &str, max_staleness: Duration) -> Result<RevocationMirror, StoreError> {
        RevocationMirror::connect_with_clock(url, prefix, max_staleness, Arc::new(SystemClock)).await
    }

    /// [`RevocationMirror::connect`], with the clock that decides when an
    /// entry has ended and may be dropped.
    pub async fn connect_with_clock(
        url: &str,
        prefix: &str,
        max_staleness: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<RevocationMirror, StoreError> {
        let target = RedisTarget::new(&RedisUrl::new(url), &RedisTls::default())?;
        RevocationMirror::connect_to(target, prefix, max_staleness, clock).await
    }

    /// [`RevocationMirror::connect_with_clock`], to a target that may carry
    /// TLS files. Each subscription goes to the node that holds the
    /// store's keys: the server, the master the Sentinels name at that
    /// moment (a failover ends the subscription, and the next one follows
    /// the promotion), or the cluster node serving the prefix's hash tag.
    pub async fn connect_to(
        target: RedisTarget,
        prefix: &str,
        max_staleness: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<RevocationMirror, StoreError> {
        check_prefix(target.topology, prefix)?;
        let RedisTarget { source: target, address, .. } = target;
        let source = Source { target, names: Names::new(prefix), clock };
        let shared = Arc::new(Shared { max_staleness, state: RwLock::new(State::default()) });
        let subscription = source.open(&shared).await.map_err(|error| {
            StoreError::Unavailable(format!("cannot mirror the revocations at {address}: {}", error.detail()))
        })?;
        let task = tokio::spawn(follow_forever(subscription, source, shared.clone())).abort_handle();
        Ok(RevocationMirror { shared, task, address, prefix: prefix.to_owned() })
    }
}

impl Drop for RevocationMirror {
    fn drop(&mut self) {
        // Dropping the task drops its subscription, whose connection closes.
        self.task.abort();
    }
}

#[async_trait]
impl RevocationStore for RevocationMirror {
    async fn revoke(&self, _jti: &TokenId, _until: UnixTime) -> Result<bool, StoreError> {
        Err(StoreError::ReadOnly)
    }

    async fn deprovision(&self, _principal: &Principal, _cutoff: &Cutoff) -> Result<(), StoreError> {
        Err(StoreError::ReadOnly)
    }

    async fn block(&self, _principal: &Principal, _blocked: bool) -> Result<(), StoreError> {
        Err(StoreError::ReadOnly)
    }

    async fn check(&self, lineage: &Lineage) -> Result<Status, StoreError> {
        let state = self.shared.read()?;
        self.shared.fresh(&state)?;
        Ok(state.status(lineage))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.shared.fresh(&*self.shared.read()?)
    }
}

/// What the mirror and its task share.
struct Shared {
    max_staleness: Duration,
    state: RwLock<State>,
}

impl Shared {
    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, State>, StoreError> {
        self.state.read().map_err(|_| StoreError::Poisoned("the revocation mirror is poisoned".into()))
    }

    fn write(&self) -> Result<std::sync::RwLockWriteGuard<'_, State>, StoreError> {
        self.state.write().map_err(|_| StoreError::Poisoned("the revocation mirror is poisoned".into()))
    }

    /// Ok while the latest proof of a live subscription is recent enough.
    fn fresh(&self, state: &State) -> Result<(), StoreError> {
        match state.proven_at {
            None => Err(StoreError::Unavailable("the revocation mirror is not subscribed".into())),
            Some(proven_at) => {
                let age = proven_at.elapsed();
                if age > self.max_staleness {
                    Err(StoreError::Unavailable(format!(
                        "the revocation mirror may be stale: its subscription was last proven alive {age:?} ago"
                    )))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Records that every notice published before `sent` is applied.
    fn prove(&self, sent: Instant) -> Result<(), StoreError> {
        let mut state = self.write()?;
        state.proven_at = Some(state.proven_at.map_or(sent, |proven_at| proven_at.max(sent)));
        Ok(())
    }

    /// The subscription is gone: stale until a new one is loaded.
    fn lose(&self) {
        if let Ok(mut state) = self.state.write() {
            state.proven_at = None;
        }
    }
}

/// The copy itself.
#[derive(Debug, Default)]
struct State {
    /// Revoked token ids, each with when its entry ends.
    revoked: HashMap<TokenId, UnixTime>,
    /// Deprovisioned principals.
    deprovisioned: HashMap<Principal, Deprovisioning>,
    /// Blocked principals.
    blocked: std::collections::HashSet<Principal>,
    /// When the subscription was last proven to have delivered everything
    /// published before; `None` while it is down or not yet loaded.
    proven_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Deprovisioning {
    /// Tokens whose lineage named the principal at or before this are dead.
    at: UnixMicros,
    /// When the entry ends.
    until: UnixTime,
}

impl State {
    /// The stores' rule ([`verdict`]), on the copy.
    fn status(&self, lineage: &Lineage) -> Status {
        verdict(
            lineage.jtis.iter().any(|jti| self.revoked.contains_key(jti)),
            lineage.principals.iter().map(|named| self.blocked.contains(&named.principal)),
            lineage
                .principals
                .iter()
                .map(|named| (named.since, self.deprovisioned.get(&named.principal).map(|entry| entry.at))),
        )
    }

    /// Keeps the later end of two revocations of one id.
    fn revoke(&mut self, jti: TokenId, until: UnixTime) {
        let end = self.revoked.entry(jti).or_insert(until);
        *end = (*end).max(until);
    }

    /// Keeps the later `at` and the later end, as the store's script does.
    fn deprovision(&mut self, principal: Principal, at: UnixMicros, until: UnixTime) {
        let entry = self.deprovisioned.entry(principal).or_insert(Deprovisioning { at, until });
        entry.at = entry.at.max(at);
        entry.until = entry.until.max(until);
    }

    /// Applies a notice; its entry lasts as long as the store keeps the key.
    fn apply(&mut self, notice: RevocationNotice) {
        match notice {
            RevocationNotice::Token { jti, until } => self.revoke(jti, until.plus(KEEP_AFTER_END)),
            RevocationNotice::Principal { principal, at, at_micros, until } => {
                let at = at_micros.unwrap_or(UnixMicros::end_of(at));
                self.deprovision(principal, at, until.plus(KEEP_AFTER_END));
            }
            RevocationNotice::Block { principal, blocked: true } => {
                self.blocked.insert(principal);
            }
            RevocationNotice::Block { principal, blocked: false } => {
                self.blocked.remove(&principal);
            }
        }
    }

    /// Merges a loaded copy, never forgetting an entry this one holds: a
    /// revocation outlives a Redis that lost it until its own end.
    fn merge(&mut self, loaded: State) {
        for (jti, until) in loaded.revoked {
            self.revoke(jti, until);
        }
        for (principal, entry) in loaded.deprovisioned {
            self.deprovision(principal, entry.at, entry.until);
        }
        // Blocks are state, not history: the store's current set replaces
        // this one, so that a block lifted while disconnected is lifted here.
        self.blocked = loaded.blocked;
    }

    /// Drops entries that ended before `now`.
    fn prune(&mut self, now: UnixTime) {
        self.revoked.retain(|_, until| *until >= now);
        self.deprovisioned.retain(|_, entry| entry.until >= now);
    }
}

/// What a payload on the revocation channel says.
#[derive(Debug, PartialEq, Eq)]
enum Notice {
    /// A revocation or deprovisioning.
    Revocation(RevocationNotice),
    /// Something else on the channel (a heartbeat of another tool, a kind
    /// added later that this build cannot apply anyway): ignored.
    Other,
    /// A known kind that does not decode, or not a notice at all.
    Unreadable,
}

fn read_notice(payload: &[u8]) -> Notice {
    #[derive(Deserialize)]
    struct Tagged {
        kind: String,
    }
    if let Ok(notice) = serde_json::from_slice::<RevocationNotice>(payload) {
        return Notice::Revocation(notice);
    }
    match serde_json::from_slice::<Tagged>(payload) {
        Ok(Tagged { kind }) if !KNOWN_KINDS.contains(&kind.as_str()) => Notice::Other,
        _ => Notice::Unreadable,
    }
}

/// Key names and the channel, all under one prefix (see [`super::redis`]).
#[derive(Debug, Clone)]
struct Names {
    channel: String,
    revoked: String,
    deprovisioned: String,
    blocked: String,
}

impl Names {
    fn new(prefix: &str) -> Names {
        Names {
            channel: format!("{prefix}revocations"),
            revoked: format!("{prefix}revoked:"),
            deprovisioned: format!("{prefix}deprovisioned:"),
            blocked: format!("{prefix}blocked:"),
        }
    }
}

/// A principal from its [`Principal::key`].
fn principal_of(key: &str) -> Option<Principal> {
    match key.split_once(':')? {
        ("agent", id) => Some(Principal::Agent(AgentId::new(id))),
        ("subject", id) => Some(Principal::Subject(Subject::new(id))),
        _ => None,
    }
}

/// A `SCAN MATCH` pattern for every key starting with `start`.
fn pattern(start: &str) -> String {
    let mut pattern = String::with_capacity(start.len() + 1);
    for character in start.chars() {
        if matches!(character, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(character);
    }
    pattern.push('*');
    pattern
}

/// When an entry whose key has `pttl` milliseconds left ends: `None` when
/// the key is gone, never when it has no expiry.
fn end_of(pttl: i64, now: UnixTime) -> Option<UnixTime> {
    match pttl {
        -1 => Some(UnixTime(i64::MAX)),
        pttl if pttl >= 0 => Some(now.plus(pttl.saturating_add(999) / 1000)),
        _ => None,
    }
}

/// Awaits one Redis request for at most `deadline`.
async fn bounded<T>(
    operation: &str,
    deadline: Duration,
    request: impl Future<Output = RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(deadline, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(StoreError::Unavailable(format!("redis {operation}: {}", describe(&error)))),
        Err(_) => Err(StoreError::Unavailable(format!("redis {operation}: no answer within {deadline:?}"))),
    }
}

/// Where the copy comes from.
struct Source {
    target: RedisSource,
    names: Names,
    clock: Arc<dyn Clock>,
}

/// A subscription whose state was loaded.
struct Subscription {
    sink: PubSubSink,
    stream: PubSubStream,
    /// Under Sentinel, the master subscribed to.
    master: Option<String>,
}

impl Source {
    /// Subscribes, then loads every entry into `shared`, which is fresh from
    /// then on as of the moment before the subscription was asked for.
    async fn open(&self, shared: &Shared) -> Result<Subscription, StoreError> {
        // Everything published before this moment is in the keys the load
        // reads; everything after, on the subscription.
        let subscribed_at = Instant::now();
        let (client, master) = bounded("subscribe", CALL_DEADLINE, self.target.node_for(&self.names.channel)).await?;
        let pubsub = bounded("subscribe", CONNECTION_TIMEOUT, client.get_async_pubsub()).await?;
        let (mut sink, stream) = pubsub.split();
        bounded("subscribe", RESPONSE_TIMEOUT, sink.subscribe(&self.names.channel)).await?;
        let loaded = self.load(&client).await?;
        let (revoked, deprovisioned) = (loaded.revoked.len(), loaded.deprovisioned.len());
        let mut state = shared.write()?;
        state.merge(loaded);
        state.proven_at = Some(subscribed_at);
        drop(state);
        tracing::info!(revoked, deprovisioned, "revocation mirror: subscribed and loaded");
        Ok(Subscription { sink, stream, master })
    }

    /// Whether the Sentinels still name `master`: `Ok(true)` when one says
    /// so, `Ok(false)` when none answers (the copy is then not proven
    /// fresh again, and fails closed once older than its bound, for an old
    /// master cut off with this node goes on answering), an error when they
    /// name another.
    async fn still_named(&self, master: &str) -> Result<bool, StoreError> {
        match bounded("recheck", CALL_DEADLINE, self.target.named_master()).await {
            Ok(Some(named)) if named != master => {
                Err(StoreError::Unavailable("the Sentinels name another master".into()))
            }
            Ok(_) => Ok(true),
            Err(error) => {
                tracing::warn!(reason = %error.detail(), "revocation mirror: no Sentinel confirms the master");
                Ok(false)
            }
        }
    }

    /// Every revocation and deprovisioning the store holds now.
    async fn load(&self, client: &Client) -> Result<State, StoreError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let mut connection =
            bounded("load", CALL_DEADLINE, client.get_multiplexed_async_connection_with_config(&config)).await?;
        let mut state = State::default();
        let mut cursor = 0u64;
        loop {
            let (next, keys) = scan(&mut connection, cursor, &pattern(&self.names.revoked)).await?;
            let pttls = pttls(&mut connection, &keys).await?;
            let now = self.clock.now();
            for (key, pttl) in keys.iter().zip(pttls) {
                let (Some(jti), Some(until)) = (key.strip_prefix(&self.names.revoked), end_of(pttl, now)) else {
                    continue; // gone since the scan
                };
                state.revoke(TokenId(jti.to_owned()), until);
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        cursor = 0;
        loop {
            let (next, keys) = scan(&mut connection, cursor, &pattern(&self.names.deprovisioned)).await?;
            let ats = if keys.is_empty() {
                Vec::new()
            } else {
                let mut command = ::redis::cmd("MGET");
                command.arg(&keys);
                bounded::<Vec<Option<String>>>("load", CALL_DEADLINE, command.query_async(&mut connection)).await?
            };
            let pttls = pttls(&mut connection, &keys).await?;
            if ats.len() != keys.len() {
                return Err(StoreError::Corrupt("redis load: MGET answered a different number of keys".into()));
            }
            let now = self.clock.now();
            for ((key, at), pttl) in keys.iter().zip(ats).zip(pttls) {
                let principal = key.strip_prefix(&self.names.deprovisioned).and_then(principal_of);
                let (Some(principal), Some(at), Some(until)) = (principal, at, end_of(pttl, now)) else {
                    continue; // gone since the scan, or not a principal's key
                };
                // Unreadable here fails the load, as it fails the store's check.
                let at = cutoff_of(&at).ok_or_else(|| StoreError::Corrupt("redis load: unreadable cut-off".into()))?;
                state.deprovision(principal, at, until);
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        cursor = 0;
        loop {
            let (next, keys) = scan(&mut connection, cursor, &pattern(&self.names.blocked)).await?;
            for key in &keys {
                if let Some(principal) = key.strip_prefix(&self.names.blocked).and_then(principal_of) {
                    state.blocked.insert(principal);
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Ok(state)
    }
}

/// One `SCAN` step: the next cursor and the keys found, those that are text.
async fn scan(
    connection: &mut MultiplexedConnection,
    cursor: u64,
    pattern: &str,
) -> Result<(u64, Vec<String>), StoreError> {
    let mut command = ::redis::cmd("SCAN");
    command.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(SCAN_COUNT);
    let (next, keys): (u64, Vec<Vec<u8>>) = bounded("load", CALL_DEADLINE, command.query_async(connection)).await?;
    // A key that is not text names no token id or principal.
    Ok((next, keys.into_iter().filter_map(|key| String::from_utf8(key).ok()).collect()))
}

/// The `PTTL` of each key, in one pipeline.
async fn pttls(connection: &mut MultiplexedConnection, keys: &[String]) -> Result<Vec<i64>, StoreError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipeline = ::redis::pipe();
    for key in keys {
        pipeline.cmd("PTTL").arg(key);
    }
    let pttls: Vec<i64> = bounded("load", CALL_DEADLINE, pipeline.query_async(connection)).await?;
    if pttls.len() == keys.len() {
        Ok(pttls)
    } else {
        Err(StoreError::Corrupt("redis load: PTTL answered a different number of keys".into()))
    }
}

/// A liveness proof under way: when its `PING` was sent, and the answer.
type Heartbeat = (Instant, Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>);

/// Follows subscriptions until the mirror is dropped: each until it fails,
/// then a new one, with bounded backoff, fully reloaded.
async fn follow_forever(first: Subscription, source: Source, shared: Arc<Shared>) {
    let mut subscription = Some(first);
    let mut delay = RECONNECT_MIN_DELAY;
    loop {
        if let Some(live) = subscription.take() {
            let (reason, proven) = follow(live, &source, &shared).await;
            shared.lose();
            tracing::warn!(reason = %reason.detail(), "revocation mirror: subscription lost; checks fail until it is back");
            if proven {
                delay = RECONNECT_MIN_DELAY;
            }
        }
        tokio::time::sleep(delay).await;
        match source.open(&shared).await {
            Ok(live) => subscription = Some(live),
            Err(error) => {
                tracing::warn!(reason = %error.detail(), "revocation mirror: cannot resubscribe");
                delay = delay.saturating_mul(2).min(RECONNECT_MAX_DELAY);
            }
        }
    }
}

/// Applies notices and proves the subscription alive until it fails; says
/// why, and whether it was proven alive at least once.
async fn follow(subscription: Subscription, source: &Source, shared: &Shared) -> (StoreError, bool) {
    let Subscription { sink, mut stream, master } = subscription;
    let mut heartbeat = tokio::time::interval((shared.max_staleness / 3).max(MIN_HEARTBEAT));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Past this, a `PING` is lost and the connection with it.
    let answer_deadline = shared.max_staleness.max(RESPONSE_TIMEOUT);
    let mut prune = tokio::time::interval(PRUNE_INTERVAL);
    let mut in_flight: Option<Heartbeat> = None;
    let mut proven = false;
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else {
                    return (StoreError::Unavailable("the subscription dropped".into()), proven);
                };
                if let Err(error) = apply(shared, &message) {
                    return (error, proven);
                }
            }
            _ = heartbeat.tick(), if in_flight.is_none() => {
                let mut sink = sink.clone();
                let ping = async move { bounded("ping", answer_deadline, sink.ping::<Value>()).await.map(drop) };
                in_flight = Some((Instant::now(), Box::pin(ping)));
            }
            (sent, answer) = answer(&mut in_flight) => {
                in_flight = None;
                // The answer came after every message pushed before it: once
                // those are applied, the copy is current as of `sent`.
                let proof = answer.and_then(|()| drain(&mut stream, shared));
                // A live old master (a planned failover, a partition) answers
                // but hears no more revocations: under Sentinel the proof
                // holds only while the Sentinels still name it.
                let confirmed = match (proof, &master) {
                    (Ok(()), Some(master)) => source.still_named(master).await,
                    (proof, _) => proof.map(|()| true),
                };
                match confirmed.and_then(|confirmed| if confirmed { shared.prove(sent).map(|()| true) } else { Ok(false) }) {
                    Ok(true) => proven = true,
                    // Unconfirmed: the copy ages toward its staleness bound.
                    Ok(false) => {}
                    Err(error) => return (error, proven),
                }
            }
            _ = prune.tick() => {
                if let Ok(mut state) = shared.write() {
                    state.prune(source.clock.now());
                }
            }
        }
    }
}

/// The answer to the `PING` in flight; never, when there is none.
async fn answer(in_flight: &mut Option<Heartbeat>) -> (Instant, Result<(), StoreError>) {
    match in_flight {
        Some((sent, ping)) => (*sent, ping.await),
        None => std::future::pending().await,
    }
}

/// Applies every message already received, without waiting for more.
fn drain(stream: &mut PubSubStream, shared: &Shared) -> Result<(), StoreError> {
    loop {
        // Unconstrained: the runtime's cooperative budget must not make a
        // received message look absent.
        match tokio::task::unconstrained(stream.next()).now_or_never() {
            Some(Some(message)) => apply(shared, &message)?,
            Some(None) => return Err(StoreError::Unavailable("the subscription dropped".into())),
            None => return Ok(()),
        }
    }
}

/// Applies one message; an unreadable revocation ends the subscription, so
/// that the copy is reloaded from the keys.
fn apply(shared: &Shared, message: &Msg) -> Result<(), StoreError> {
    match read_notice(message.get_payload_bytes()) {
        Notice::Revocation(notice) => {
            shared.write()?.apply(notice);
            Ok(())
        }
        Notice::Other => Ok(()),
        Notice::Unreadable => Err(StoreError::Corrupt("an unreadable revocation notice; reloading".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lineage(jtis: &[&str], issued_at: i64, principals: Vec<Principal>) -> Lineage {
        let jtis = jtis.iter().map(|jti| TokenId((*jti).to_owned())).collect();
        Lineage::at(jtis, UnixMicros::start_of(UnixTime(issued_at)), principals)
    }

    fn micros(seconds: i64) -> UnixMicros {
        UnixMicros::end_of(UnixTime(seconds))
    }

    #[test]
    fn the_rule_is_the_stores() {
        let mut state = State::default();
        state.revoke(TokenId("parent".into()), UnixTime(1_000));
        state.deprovision(Principal::Agent("a".into()), micros(100), UnixTime(1_000));
        let agent = || vec![Principal::Subject("s".into()), Principal::Agent("a".into())];
        assert_eq!(state.status(&lineage(&["child", "parent"], 50, agent())), Status::Revoked);
        assert_eq!(state.status(&lineage(&["child"], 100, agent())), Status::Deprovisioned, "at == iat is dead");
        assert_eq!(state.status(&lineage(&["child"], 101, agent())), Status::Active, "issued after");
        assert_eq!(state.status(&lineage(&["other"], 50, vec![Principal::Subject("a".into())])), Status::Active);
        assert_eq!(state.status(&lineage(&[], 0, vec![])), Status::Active);
    }

    #[test]
    fn deprovisioning_moves_forward_only_and_ends_are_kept_longest() {
        let mut state = State::default();
        let agent = Principal::Agent("a".into());
        state.deprovision(agent.clone(), micros(200), UnixTime(900));
        state.apply(RevocationNotice::Principal {
            principal: agent.clone(),
            at: UnixTime(100),
            at_micros: None,
            until: UnixTime(50),
        });
        assert_eq!(state.deprovisioned[&agent], Deprovisioning { at: micros(200), until: UnixTime(900) });
        state.apply(RevocationNotice::Principal {
            principal: agent.clone(),
            at: UnixTime(300),
            at_micros: Some(UnixMicros(300_000_001)),
            until: UnixTime(900),
        });
        assert_eq!(state.deprovisioned[&agent].at, UnixMicros(300_000_001), "the exact cut-off is taken");
        state.apply(RevocationNotice::Token { jti: TokenId("j".into()), until: UnixTime(1_000) });
        state.revoke(TokenId("j".into()), UnixTime(10));
        assert_eq!(state.revoked[&TokenId("j".into())], UnixTime(1_000 + KEEP_AFTER_END));
    }

    #[test]
    fn ended_entries_are_pruned_and_a_merge_forgets_nothing() {
        let mut state = State::default();
        state.revoke(TokenId("old".into()), UnixTime(10));
        state.revoke(TokenId("new".into()), UnixTime(30));
        state.deprovision(Principal::Subject("s".into()), micros(1), UnixTime(10));
        let mut loaded = State::default();
        loaded.revoke(TokenId("loaded".into()), UnixTime(30));
        state.merge(loaded);
        assert_eq!(state.revoked.len(), 3);
        state.prune(UnixTime(20));
        assert!(state.deprovisioned.is_empty());
        let mut left: Vec<_> = state.revoked.keys().map(|jti| jti.0.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["loaded", "new"]);
    }

    #[test]
    fn notices_of_other_kinds_are_ignored_and_broken_ones_reload() {
        let token = br#"{"kind":"token","jti":"j1","until":100}"#;
        assert_eq!(
            read_notice(token),
            Notice::Revocation(RevocationNotice::Token { jti: TokenId("j1".into()), until: UnixTime(100) })
        );
        assert_eq!(read_notice(br#"{"kind":"heartbeat","node":"n1","at":5}"#), Notice::Other);
        assert_eq!(read_notice(br#"{"kind":"token","jti":"j1"}"#), Notice::Unreadable);
        assert_eq!(read_notice(br#"{"kind":"principal","at":"soon"}"#), Notice::Unreadable);
        assert_eq!(read_notice(b"not json"), Notice::Unreadable);
        assert_eq!(read_notice(br#"{"jti":"j1"}"#), Notice::Unreadable);
    }

    #[test]
    fn the_known_kinds_are_the_notices_tags() {
        let notices = [
            RevocationNotice::Token { jti: TokenId("j".into()), until: UnixTime(1) },
            RevocationNotice::Principal {
                principal: Principal::Agent("a".into()),
                at: UnixTime(1),
                at_micros: None,
                until: UnixTime(2),
            },
        ];
        let kinds: Vec<String> = notices
            .iter()
            .map(|notice| serde_json::to_value(notice).unwrap()["kind"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(kinds, KNOWN_KINDS);
    }

    #[test]
    fn keys_name_principals_and_patterns_match_literally() {
        assert_eq!(principal_of("agent:a:b"), Some(Principal::Agent("a:b".into())));
        assert_eq!(principal_of("subject:s"), Some(Principal::Subject("s".into())));
        assert_eq!(principal_of("group:g"), None);
        assert_eq!(principal_of("agent"), None);
        for principal in [Principal::Agent("x".into()), Principal::Subject("y:z".into())] {
            assert_eq!(principal_of(&principal.key()), Some(principal));
        }
        assert_eq!(pattern("baton:revoked:"), "baton:revoked:*");
        assert_eq!(pattern("a*b?[c]\\:"), "a\\*b\\?\\[c\\]\\\\:*");
    }

    #[test]
    fn expiries_become_ends() {
        let now = UnixTime(1_000);
        assert_eq!(end_of(-2, now), None, "gone");
        assert_eq!(end_of(-1, now), Some(UnixTime(i64::MAX)), "no expiry");
        assert_eq!(end_of(0, now), Some(now));
        assert_eq!(end_of(1, now), Some(UnixTime(1_001)), "rounded up");
        assert_eq!(end_of(2_000, now), Some(UnixTime(1_002)));
    }
}
