//! The Redis store's connection: opened from its source (one server, the
//! master the Sentinels name, or a Cluster), used by every call, and
//! dropped and opened afresh when it stops serving.
//!
//! One server: the client library reconnects by itself when a connection
//! drops, but not when one merely stops answering (a peer gone without a
//! reset), which could last until the kernel gives up on it; so a call that
//! times out drops the connection. Sentinel: besides, a connection refused
//! or lost, or a write refused as `READONLY`, means the master may have
//! changed, so the next call asks the Sentinels again which node is master;
//! and at most every [`MASTER_RECHECK`] a call asks them whether the node
//! in use is still the one they name, since an old master that is alive
//! (a planned failover, a partition) goes on answering, stale, until the
//! Sentinels demote it, seconds later.
//! Cluster: the library follows slot moves and failovers itself; a timeout
//! drops the connection as for one server.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use ::redis::cluster::{ClusterClient, ClusterConfig};
use ::redis::cluster_async::ClusterConnection;
use ::redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisError, RedisFuture,
    RedisResult, ServerErrorKind, TlsCertificates, Value,
};

use super::StoreError;

/// How long one connection attempt may take.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);
/// How long Redis may take to answer one request on an open connection.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// The most any store call waits, whatever the connection is doing: past it
/// the call fails, so callers answer 503 quickly instead of queueing.
pub const CALL_DEADLINE: Duration = Duration::from_secs(2);
/// Reconnection attempts behind one failed connection, beyond the first:
/// few, so that an outage fails calls quickly rather than queueing them.
const RECONNECT_RETRIES: usize = 1;
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(100);
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(200);

/// How often, at most, the Sentinels are asked whether the master in use
/// is still theirs: the bound on how long a node keeps using an old master
/// after they switched.
pub const MASTER_RECHECK: Duration = Duration::from_millis(500);

/// How long a master no Sentinel has confirmed stays in use: past it the
/// connection is dropped and calls fail (503) until a Sentinel names a
/// master again, for an old master cut off with this node goes on answering
/// with what it had (DESIGN.md §2.5: stale beyond a bound fails closed).
pub const UNCONFIRMED_LIMIT: Duration = Duration::from_secs(2);

/// How long one Sentinel may take to answer: one that hangs (a host gone,
/// packets dropped) must leave time to ask the next within a recheck.
const SENTINEL_ANSWER: Duration = Duration::from_millis(200);

/// Where connections come from.
// One a store, made once: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Source {
    /// One server.
    Server(Client),
    /// The master named by Sentinels; asked again after each lost link.
    Sentinel(Sentinels),
    /// A Redis Cluster.
    Cluster {
        /// The cluster's client.
        client: ClusterClient,
        /// For a client to one node of the cluster.
        node: NodeTemplate,
    },
}

/// What every data node's connection shares: the credentials, database and
/// TLS files, for a client to a node found at run time.
pub(crate) struct NodeTemplate {
    /// A node's connection details; only the address changes.
    pub(crate) info: ConnectionInfo,
    /// The TLS files, when the nodes speak TLS.
    pub(crate) certificates: Option<TlsCertificates>,
}

/// A set of Sentinels watching one master, asked as Redis asks clients to
/// (its Sentinel client guidelines): the first Sentinel that answers names
/// the master (`SENTINEL GET-MASTER-ADDR-BY-NAME`, which names a promoted
/// replica as soon as it is promoted), and that node must say it is master
/// (`ROLE`) before it is used.
pub(crate) struct Sentinels {
    sentinels: Vec<Sentinel>,
    /// The Sentinel that answered last, asked first next time: one that is
    /// down costs a connection timeout only when the others fail too.
    preferred: AtomicUsize,
    master: String,
    node: NodeTemplate,
}

/// One Sentinel: a client, and the connection kept open to it.
struct Sentinel {
    client: Client,
    connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

/// A connection any call can use: cheap to clone, shared by concurrent calls.
#[derive(Clone)]
pub(crate) enum Connection {
    /// To one server (directly or as named by Sentinels).
    Server(ConnectionManager),
    /// To a Cluster, routing each request by its keys' slot.
    Cluster(ClusterConnection),
}

/// The connection in use, numbered so that concurrent calls that all saw it
/// fail drop it once; none until the next call opens one.
struct Current {
    generation: u64,
    connection: Option<Connection>,
    /// Under Sentinel, the master the connection goes to.
    master: Option<Master>,
}

/// The master in use under Sentinel.
struct Master {
    address: String,
    /// When a call last took it upon itself to ask the Sentinels.
    checked_at: Instant,
    /// When a Sentinel last named it.
    confirmed_at: Instant,
}

/// A source and the connection opened from it.
pub(super) struct Link {
    source: Source,
    current: RwLock<Current>,
}

impl Source {
    /// Opens a connection (the server's connect on first use), with the
    /// master's address under Sentinel.
    async fn open(&self) -> RedisResult<(Connection, Option<String>)> {
        match self {
            Source::Server(client) => {
                let manager = ConnectionManager::new_lazy_with_config(client.clone(), manager_config())?;
                Ok((Connection::Server(manager), None))
            }
            Source::Sentinel(sentinels) => {
                let (client, address) = sentinels.master().await?;
                let manager = ConnectionManager::new_lazy_with_config(client, manager_config())?;
                Ok((Connection::Server(manager), Some(address)))
            }
            Source::Cluster { client, .. } => {
                let config = ClusterConfig::new()
                    .set_connection_timeout(CONNECTION_TIMEOUT)
                    .set_response_timeout(RESPONSE_TIMEOUT);
                Ok((Connection::Cluster(client.get_pending_async_connection_with_config(config)), None))
            }
        }
    }

    /// The address of the master the Sentinels name now; none for the others.
    pub(crate) async fn named_master(&self) -> RedisResult<Option<String>> {
        match self {
            // Bounded on its own: a recheck must not make its call late.
            Source::Sentinel(sentinels) => match tokio::time::timeout(MASTER_RECHECK, sentinels.named()).await {
                Ok(named) => named.map(|(host, port)| Some(format!("{host}:{port}"))),
                Err(_) => Err(RedisError::from((::redis::ErrorKind::Io, "no Sentinel answered in time"))),
            },
            Source::Server(_) | Source::Cluster { .. } => Ok(None),
        }
    }

    /// A client for the one node that holds `key`: the server, the master
    /// the Sentinels name now (with its address, to compare with theirs
    /// later), or the cluster node serving `key`'s slot (a subscriber there
    /// hears the channels of that slot, and a `SCAN` there reads its keys).
    pub(crate) async fn node_for(&self, key: &str) -> RedisResult<(Client, Option<String>)> {
        match self {
            Source::Server(client) => Ok((client.clone(), None)),
            Source::Sentinel(sentinels) => sentinels.master().await.map(|(client, address)| (client, Some(address))),
            Source::Cluster { client, node } => {
                let mut cluster = client.get_pending_async_connection_with_config(
                    ClusterConfig::new()
                        .set_connection_timeout(CONNECTION_TIMEOUT)
                        .set_response_timeout(RESPONSE_TIMEOUT),
                );
                let slot: i64 = ::redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query_async(&mut cluster).await?;
                let slots: Vec<Value> = ::redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut cluster).await?;
                let (host, port) = slot_owner(&slots, slot).ok_or_else(|| {
                    RedisError::from((::redis::ErrorKind::Client, "no cluster node serves the keys' slot"))
                })?;
                Ok((node.client(&host, port)?, None))
            }
        }
    }

    /// Whether `error` means the connection should be dropped and the next
    /// call open another (see the module's doc).
    fn drops_connection_on(&self, error: &RedisError) -> bool {
        match self {
            Source::Server(_) | Source::Cluster { .. } => error.is_timeout(),
            Source::Sentinel(_) => {
                error.is_timeout()
                    || error.is_io_error()
                    || error.is_connection_refusal()
                    || error.is_connection_dropped()
                    || matches!(error.kind(), ::redis::ErrorKind::Server(ServerErrorKind::ReadOnly))
            }
        }
    }
}

impl NodeTemplate {
    /// A client for the node at `host:port`.
    fn client(&self, host: &str, port: u16) -> RedisResult<Client> {
        let scheme = if self.certificates.is_some() { "rediss" } else { "redis" };
        let info = format!("{scheme}://{host}:{port}/")
            .into_connection_info()?
            .set_redis_settings(self.info.redis_settings().clone());
        match &self.certificates {
            Some(certificates) => Client::build_with_tls(info, certificates.clone()),
            None => Client::open(info),
        }
    }
}

impl Sentinels {
    /// Sentinels, each as a client (without credentials), watching `master`
    /// whose nodes are reached as `node` says.
    pub(crate) fn new(sentinels: Vec<Client>, master: &str, node: NodeTemplate) -> Sentinels {
        let sentinels = sentinels
            .into_iter()
            .map(|client| Sentinel { client, connection: tokio::sync::Mutex::new(None) })
            .collect();
        Sentinels { sentinels, preferred: AtomicUsize::new(0), master: master.to_owned(), node }
    }

    /// The master's address as the first Sentinel that answers names it,
    /// starting with the one that answered last.
    async fn named(&self) -> RedisResult<(String, u16)> {
        let mut last = RedisError::from((::redis::ErrorKind::Client, "no Sentinel is configured"));
        let count = self.sentinels.len();
        let first = self.preferred.load(Ordering::Relaxed);
        for index in (0..count).map(|offset| first.wrapping_add(offset) % count) {
            let Some(sentinel) = self.sentinels.get(index) else { continue };
            match self.ask(sentinel).await {
                Ok(Some(address)) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(address);
                }
                Ok(None) => last = RedisError::from((::redis::ErrorKind::Client, "the Sentinels know no such master")),
                Err(error) => last = error,
            }
        }
        Err(last)
    }

    /// What `sentinel` names, on the connection kept to it (opened when
    /// there is none, dropped when it fails).
    /// Bounded by [`SENTINEL_ANSWER`]: a Sentinel that hangs loses its kept
    /// connection and leaves the question to the next.
    async fn ask(&self, sentinel: &Sentinel) -> RedisResult<Option<(String, u16)>> {
        let mut kept = sentinel.connection.lock().await;
        let reused = kept.take();
        let asking = async {
            let mut connection = match reused {
                Some(connection) => connection,
                None => sentinel.client.get_multiplexed_async_connection_with_config(&connection_config()).await?,
            };
            let asked = ::redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(&self.master)
                .query_async::<Option<(String, u16)>>(&mut connection)
                .await?;
            Ok((asked, connection))
        };
        match tokio::time::timeout(SENTINEL_ANSWER, asking).await {
            Ok(Ok((asked, connection))) => {
                *kept = Some(connection);
                Ok(asked)
            }
            Ok(Err(error)) => Err(error),
            Err(_) => Err(RedisError::from((::redis::ErrorKind::Io, "the Sentinel did not answer in time"))),
        }
    }

    /// A client for the master the Sentinels name, once it says it is
    /// master; with its address.
    async fn master(&self) -> RedisResult<(Client, String)> {
        let (host, port) = self.named().await?;
        let client = self.node.client(&host, port)?;
        let mut connection = client.get_multiplexed_async_connection_with_config(&connection_config()).await?;
        let role: Vec<Value> = ::redis::cmd("ROLE").query_async(&mut connection).await?;
        match role.first() {
            Some(Value::BulkString(role)) if role.as_slice() == b"master" => Ok((client, format!("{host}:{port}"))),
            _ => Err(RedisError::from((::redis::ErrorKind::Client, "the node the Sentinels name is not master (yet)"))),
        }
    }
}

impl Link {
    /// A link that opens its first connection on the first call.
    pub(super) fn new(source: Source) -> Link {
        Link { source, current: RwLock::new(Current { generation: 0, connection: None, master: None }) }
    }

    /// Runs one request, bounded by [`CALL_DEADLINE`] (opening a connection
    /// included).
    pub(super) async fn call<T, F, Fut>(&self, operation: &'static str, request: F) -> Result<T, StoreError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let poisoned = || StoreError::Poisoned("the Redis connection state is poisoned".into());
        let (generation, connection, due) = {
            let current = self.current.read().map_err(|_| poisoned())?;
            let due = current.master.as_ref().is_some_and(|master| master.checked_at.elapsed() >= MASTER_RECHECK);
            (current.generation, current.connection.clone(), due)
        };
        let recheck = due && self.claim_recheck(generation);
        // The connection the request went out on: a recheck may have opened
        // another, and it is that one a failure drops.
        let used = AtomicU64::new(generation);
        let attempt = async {
            let connection = match connection {
                Some(connection) if recheck => {
                    let (connection, opened) = self.recheck(generation, connection).await?;
                    used.store(opened, Ordering::Relaxed);
                    connection
                }
                Some(connection) => connection,
                None => self.open(generation).await?,
            };
            request(connection).await
        };
        let outcome = tokio::time::timeout(CALL_DEADLINE, attempt).await;
        let used = used.load(Ordering::Relaxed);
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                if self.source.drops_connection_on(&error) {
                    self.drop_connection(used);
                }
                Err(StoreError::Unavailable(format!("redis {operation}: {}", describe(&error))))
            }
            Err(_) => {
                self.drop_connection(used);
                Err(StoreError::Unavailable(format!("redis {operation}: no answer within {CALL_DEADLINE:?}")))
            }
        }
    }

    /// Opens a connection and keeps it, unless another call already did.
    async fn open(&self, generation: u64) -> RedisResult<Connection> {
        let (connection, master) = self.source.open().await?;
        if let Ok(mut current) = self.current.write() {
            if current.generation == generation && current.connection.is_none() {
                current.connection = Some(connection.clone());
                let now = Instant::now();
                current.master = master.map(|address| Master { address, checked_at: now, confirmed_at: now });
            }
        }
        Ok(connection)
    }

    /// Whether this call rechecks the master: one call a period does, the
    /// one that marks it checked now.
    fn claim_recheck(&self, generation: u64) -> bool {
        let Ok(mut current) = self.current.write() else { return false };
        if current.generation != generation {
            return false;
        }
        match &mut current.master {
            Some(master) if master.checked_at.elapsed() >= MASTER_RECHECK => {
                master.checked_at = Instant::now();
                true
            }
            _ => false,
        }
    }

    /// `connection` while the Sentinels still name its master, else a new
    /// one to the master they name; with the generation it belongs to. When no Sentinel answers, the
    /// connection in use is kept for [`UNCONFIRMED_LIMIT`] after the last
    /// confirmation (no failover happens without them), then dropped.
    async fn recheck(&self, generation: u64, connection: Connection) -> RedisResult<(Connection, u64)> {
        let named = match self.source.named_master().await {
            Ok(named) => named,
            Err(error) => {
                tracing::warn!(reason = %describe(&error), "redis: no Sentinel confirms the master in use");
                let confirmed_at = self
                    .current
                    .read()
                    .ok()
                    .and_then(|current| current.master.as_ref().map(|master| master.confirmed_at));
                if confirmed_at.is_some_and(|at| at.elapsed() < UNCONFIRMED_LIMIT) {
                    return Ok((connection, generation));
                }
                self.drop_connection(generation);
                return Err(error);
            }
        };
        let in_use =
            self.current.read().ok().and_then(|current| current.master.as_ref().map(|master| master.address.clone()));
        if named.is_none() || named == in_use {
            if let Ok(mut current) = self.current.write() {
                let same = current.generation == generation;
                if let Some(master) = current.master.as_mut().filter(|_| same) {
                    master.confirmed_at = Instant::now();
                }
            }
            return Ok((connection, generation));
        }
        tracing::warn!("redis: the Sentinels name another master; reconnecting");
        self.drop_connection(generation);
        let generation = self.current.read().map_or(generation, |current| current.generation);
        Ok((self.open(generation).await?, generation))
    }

    /// Forgets the connection of `generation`, so that the next call opens
    /// another.
    fn drop_connection(&self, generation: u64) {
        let Ok(mut current) = self.current.write() else { return };
        if current.generation != generation {
            return; // another call already dropped it
        }
        *current = Current { generation: generation.wrapping_add(1), connection: None, master: None };
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Server(manager) => manager.req_packed_command(cmd),
            Connection::Cluster(cluster) => cluster.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Server(manager) => manager.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(cluster) => cluster.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Server(manager) => manager.get_db(),
            Connection::Cluster(cluster) => cluster.get_db(),
        }
    }
}

/// What went wrong, in words of our own: a server's message may echo the
/// arguments of a command, and arguments are ids.
pub(crate) fn describe(error: &RedisError) -> String {
    if error.is_timeout() {
        "timed out".into()
    } else if error.is_connection_refusal() {
        "connection refused".into()
    } else if error.is_connection_dropped() {
        "connection lost".into()
    } else if let Some(code) = error.code() {
        format!("{} ({code})", error.category())
    } else {
        error.category().into()
    }
}

/// The master serving `slot`, from a `CLUSTER SLOTS` reply: entries of
/// `[first, last, [host, port, …], replicas…]`.
fn slot_owner(slots: &[Value], slot: i64) -> Option<(String, u16)> {
    slots.iter().find_map(|range| {
        let Value::Array(range) = range else { return None };
        let (Some(Value::Int(first)), Some(Value::Int(last)), Some(Value::Array(master))) =
            (range.first(), range.get(1), range.get(2))
        else {
            return None;
        };
        if !(*first..=*last).contains(&slot) {
            return None;
        }
        let host = match master.first()? {
            Value::BulkString(host) => String::from_utf8(host.clone()).ok()?,
            Value::SimpleString(host) => host.clone(),
            _ => return None,
        };
        let port = match master.get(1)? {
            Value::Int(port) => u16::try_from(*port).ok()?,
            _ => return None,
        };
        Some((host, port))
    })
}

/// For the short-lived connections that ask Sentinels and check roles.
fn connection_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
}

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(RECONNECT_RETRIES)
        .set_min_delay(RECONNECT_MIN_DELAY)
        .set_max_delay(RECONNECT_MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn the_master_of_a_slot_is_read_from_cluster_slots() {
        let slots = vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                Value::Array(vec![text("10.0.0.1"), Value::Int(7000), text("id1")]),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                Value::Array(vec![text("10.0.0.2"), Value::Int(7001), text("id2")]),
                Value::Array(vec![text("10.0.0.3"), Value::Int(7002), text("id3")]),
            ]),
        ];
        assert_eq!(slot_owner(&slots, 0), Some(("10.0.0.1".into(), 7000)));
        assert_eq!(slot_owner(&slots, 5461), Some(("10.0.0.2".into(), 7001)), "the master, not a replica");
        assert_eq!(slot_owner(&slots, 16384), None);
        assert_eq!(slot_owner(&[Value::Int(1)], 0), None);
    }
}
