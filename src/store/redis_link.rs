//! The Redis store's connection: opened from its source (one server, the
//! master the Sentinels name, or a Cluster), used by every call, and
//! dropped and opened afresh when it stops serving.
//!
//! One server: the client library reconnects by itself when a connection
//! drops, but not when one merely stops answering (a peer gone without a
//! reset), which could last until the kernel gives up on it; so a call that
//! times out drops the connection. Sentinel: besides, a connection refused
//! or lost, or a write refused as `READONLY`, means the master may have
//! changed, so the next call asks the Sentinels again which node is master.
//! Cluster: the library follows slot moves and failovers itself; a timeout
//! drops the connection as for one server.

use std::future::Future;
use std::sync::RwLock;
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::{ClusterClient, ClusterConfig};
use ::redis::cluster_async::ClusterConnection;
use ::redis::sentinel::SentinelClient;
use ::redis::{
    Client, Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, RedisResult, ServerErrorKind,
    TlsCertificates, Value,
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

/// Where connections come from.
// One a store, made once: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Source {
    /// One server.
    Server(Client),
    /// The master named by Sentinels; asked again after each lost link. Behind
    /// a lock: the library's client caches its Sentinel connections mutably.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
    /// A Redis Cluster.
    Cluster {
        /// The cluster's client.
        client: ClusterClient,
        /// A node's connection details (credentials, TLS), for a client to
        /// one node of the cluster.
        node: ConnectionInfo,
        /// The TLS files, for that client.
        certificates: Option<TlsCertificates>,
    },
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
}

/// A source and the connection opened from it.
pub(super) struct Link {
    source: Source,
    current: RwLock<Current>,
}

impl Source {
    /// Opens a connection; the server's connect on first use.
    async fn open(&self) -> RedisResult<Connection> {
        match self {
            Source::Server(client) => {
                ConnectionManager::new_lazy_with_config(client.clone(), manager_config()).map(Connection::Server)
            }
            Source::Sentinel(sentinels) => {
                // The Sentinels' answer is checked by the library: the node
                // they name must say it is master (`ROLE`).
                let client = sentinels.lock().await.async_get_client().await?;
                ConnectionManager::new_lazy_with_config(client, manager_config()).map(Connection::Server)
            }
            Source::Cluster { client, .. } => Ok(Connection::Cluster(client.get_pending_async_connection_with_config(
                ClusterConfig::new().set_connection_timeout(CONNECTION_TIMEOUT).set_response_timeout(RESPONSE_TIMEOUT),
            ))),
        }
    }

    /// A client for the one node that holds `key`: the server, the master
    /// the Sentinels name now, or the cluster node serving `key`'s slot (a
    /// subscriber there hears the channels of that slot, and a `SCAN` there
    /// reads its keys).
    pub(crate) async fn node_for(&self, key: &str) -> RedisResult<Client> {
        match self {
            Source::Server(client) => Ok(client.clone()),
            Source::Sentinel(sentinels) => sentinels.lock().await.async_get_client().await,
            Source::Cluster { client, node, certificates } => {
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
                let scheme = if certificates.is_some() { "rediss" } else { "redis" };
                let info = format!("{scheme}://{host}:{port}/")
                    .into_connection_info()?
                    .set_redis_settings(node.redis_settings().clone());
                match certificates {
                    Some(certificates) => Client::build_with_tls(info, certificates.clone()),
                    None => Client::open(info),
                }
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

impl Link {
    /// A link that opens its first connection on the first call.
    pub(super) fn new(source: Source) -> Link {
        Link { source, current: RwLock::new(Current { generation: 0, connection: None }) }
    }

    /// Runs one request, bounded by [`CALL_DEADLINE`] (opening a connection
    /// included).
    pub(super) async fn call<T, F, Fut>(&self, operation: &'static str, request: F) -> Result<T, StoreError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let (generation, connection) = {
            let current = self
                .current
                .read()
                .map_err(|_| StoreError::Poisoned("the Redis connection state is poisoned".into()))?;
            (current.generation, current.connection.clone())
        };
        let attempt = async {
            let connection = match connection {
                Some(connection) => connection,
                None => self.open(generation).await?,
            };
            request(connection).await
        };
        match tokio::time::timeout(CALL_DEADLINE, attempt).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                if self.source.drops_connection_on(&error) {
                    self.drop_connection(generation);
                }
                Err(StoreError::Unavailable(format!("redis {operation}: {}", describe(&error))))
            }
            Err(_) => {
                self.drop_connection(generation);
                Err(StoreError::Unavailable(format!("redis {operation}: no answer within {CALL_DEADLINE:?}")))
            }
        }
    }

    /// Opens a connection and keeps it, unless another call already did.
    async fn open(&self, generation: u64) -> RedisResult<Connection> {
        let connection = self.source.open().await?;
        if let Ok(mut current) = self.current.write() {
            if current.generation == generation && current.connection.is_none() {
                current.connection = Some(connection.clone());
            }
        }
        Ok(connection)
    }

    /// Forgets the connection of `generation`, so that the next call opens
    /// another.
    fn drop_connection(&self, generation: u64) {
        let Ok(mut current) = self.current.write() else { return };
        if current.generation != generation {
            return; // another call already dropped it
        }
        *current = Current { generation: generation.wrapping_add(1), connection: None };
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
