//! Redis as production runs it, started by the tests on loopback: a server
//! behind TLS with client certificates and an ACL user, a master with two
//! replicas watched by three Sentinels, and a three-master Cluster. Every
//! wait polls with a bounded deadline.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use baton::store::redis_target::RedisTls;

use crate::redis_server::RedisServer;

/// The master's name the Sentinels watch.
pub const MASTER: &str = "baton-master";
/// The ACL user the TLS server knows, and its password.
pub const USER: &str = "baton";
pub const PASSWORD: &str = "s3cret-pw";
/// The password the test Sentinels require (`requirepass`).
pub const SENTINEL_PASSWORD: &str = "sentinel-s3cret";

/// Polls `ready` every 50 ms until it holds, panicking with `what` after
/// `within`.
pub fn wait_until(what: &str, within: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ready() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One request to the Redis (or Sentinel) on a plain loopback `port`.
pub fn query<T: redis::FromRedisValue>(port: u16, command: &redis::Cmd) -> redis::RedisResult<T> {
    request(&format!("redis://127.0.0.1:{port}/"), command)
}

/// One request to the Sentinel on a plain loopback `port`, with its password.
pub fn ask_sentinel<T: redis::FromRedisValue>(port: u16, command: &redis::Cmd) -> redis::RedisResult<T> {
    request(&format!("redis://:{SENTINEL_PASSWORD}@127.0.0.1:{port}/"), command)
}

/// One request as [`USER`] to the Redis on a plain loopback `port`.
pub fn query_as_user<T: redis::FromRedisValue>(port: u16, command: &redis::Cmd) -> redis::RedisResult<T> {
    request(&format!("redis://{USER}:{PASSWORD}@127.0.0.1:{port}/"), command)
}

fn request<T: redis::FromRedisValue>(url: &str, command: &redis::Cmd) -> redis::RedisResult<T> {
    let client = redis::Client::open(url)?;
    let mut connection = client.get_connection_with_timeout(Duration::from_secs(1))?;
    connection.set_read_timeout(Some(Duration::from_secs(2)))?;
    command.query(&mut connection)
}

/// A throwaway certificate authority, a server certificate for 127.0.0.1
/// and a client certificate, made by `openssl` in a temporary folder.
pub struct TlsFiles {
    dir: tempfile::TempDir,
}

impl TlsFiles {
    pub fn generate() -> TlsFiles {
        let files = TlsFiles { dir: tempfile::tempdir().unwrap() };
        files.authority("ca");
        // The servers' certificate is a client's too: replicas and Sentinels
        // show it to the servers they connect to.
        files.issue(
            "server",
            "ca",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        );
        files.issue("client", "ca", "extendedKeyUsage=clientAuth\n");
        // An authority that signed neither: trusting it alone must fail.
        files.authority("stranger");
        files
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The files a client that trusts the right authority and shows its
    /// certificate uses.
    pub fn client(&self) -> RedisTls {
        RedisTls {
            ca: Some(self.path("ca.pem")),
            cert: Some(self.path("client.pem")),
            key: Some(self.path("client.key")),
        }
    }

    /// A server's (or Sentinel's) arguments for TLS on `tls_port`, client
    /// certificates required, and TLS to the servers it connects to.
    pub fn server_arguments(&self, tls_port: u16) -> Vec<String> {
        let path = |name: &str| self.path(name).to_string_lossy().into_owned();
        vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            path("server.pem"),
            "--tls-key-file".into(),
            path("server.key"),
            "--tls-ca-cert-file".into(),
            path("ca.pem"),
            "--tls-auth-clients".into(),
            "yes".into(),
            "--tls-replication".into(),
            "yes".into(),
        ]
    }

    fn authority(&self, name: &str) {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=baton test {name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ]);
    }

    fn issue(&self, name: &str, authority: &str, extensions: &str) {
        let extensions_file = format!("{name}.ext");
        std::fs::write(
            self.path(&extensions_file),
            format!("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n{extensions}"),
        )
        .unwrap();
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN=baton test {name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{authority}.pem"),
            "-CAkey",
            &format!("{authority}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &extensions_file,
            "-out",
            &format!("{name}.pem"),
        ]);
    }

    fn openssl(&self, args: &[&str]) {
        let output = Command::new("openssl").args(args).current_dir(self.dir.path()).output().unwrap();
        assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
}

/// A server answering TLS (client certificates required) on `tls_port`, with
/// the default user off and [`USER`] allowed everything; its plain port
/// only tells the tests it is up (it answers `NOAUTH`).
pub struct TlsRedis {
    /// Kept for its lifetime: the server stops when it is dropped.
    _server: RedisServer,
    pub tls_port: u16,
}

impl TlsRedis {
    pub fn start(files: &TlsFiles) -> TlsRedis {
        let tls_port = crate::process::free_port();
        let server = RedisServer::start_with(files.server_arguments(tls_port).into_iter().chain(acl()).collect());
        TlsRedis { _server: server, tls_port }
    }

    /// `rediss://` with `user` and `password`.
    pub fn url(&self, user: &str, password: &str) -> String {
        format!("rediss://{user}:{password}@127.0.0.1:{}/", self.tls_port)
    }
}

/// Arguments that turn the default user off and let [`USER`] do anything
/// with [`PASSWORD`]: one argument a word, as the config file's `user` lines.
fn acl() -> Vec<String> {
    ["--user", "default", "off", "--user", USER, "on", &format!(">{PASSWORD}"), "~*", "&*", "+@all"]
        .map(String::from)
        .to_vec()
}

/// A master, two replicas and three Sentinels (quorum 2) that declare a
/// master down after 3 s without an answer (a fsync stalled by a loaded
/// machine must not pass for a dead master). The data nodes know [`USER`]
/// only (ACL), among themselves too; the Sentinels use them on the data
/// nodes, and require [`SENTINEL_PASSWORD`] of clients and of each other. With TLS files, every link between them
/// is TLS, and so are the ports they name to clients.
pub struct SentinelSet {
    /// Each data node with the port the Sentinels name it by.
    pub servers: Vec<(RedisServer, u16)>,
    /// Each Sentinel with the port clients reach it on.
    pub sentinels: Vec<(RedisServer, u16)>,
    tls: bool,
}

impl SentinelSet {
    pub fn start() -> SentinelSet {
        SentinelSet::start_with(None)
    }

    pub fn start_with(tls: Option<&TlsFiles>) -> SentinelSet {
        // Every data node may become a replica (a demoted master too): each
        // knows the credentials to replicate with.
        let as_replica = ["--masteruser", USER, "--masterauth", PASSWORD].map(String::from);
        let node =
            |extra: Vec<String>| data_node(tls, acl().into_iter().chain(as_replica.clone()).chain(extra).collect());
        let master = node(Vec::new());
        let follow = || ["--replicaof", "127.0.0.1", &master.1.to_string()].map(String::from).to_vec();
        let replicas = [node(follow()), node(follow())];
        wait_until("two replicas in sync", Duration::from_secs(30), || {
            query_as_user::<String>(master.0.port(), redis::cmd("INFO").arg("replication"))
                .is_ok_and(|info| info.matches("state=online").count() == 2)
        });
        let sentinels: Vec<(RedisServer, u16)> = (0..3)
            .map(|_| {
                let tls_port = crate::process::free_port();
                let mut config = format!(
                    "sentinel monitor {MASTER} 127.0.0.1 {} 2\n\
                     sentinel down-after-milliseconds {MASTER} 3000\n\
                     sentinel failover-timeout {MASTER} 10000\n\
                     sentinel parallel-syncs {MASTER} 2\n\
                     sentinel auth-user {MASTER} {USER}\n\
                     sentinel auth-pass {MASTER} {PASSWORD}\n\
                     requirepass {SENTINEL_PASSWORD}\n\
                     sentinel sentinel-pass {SENTINEL_PASSWORD}\n",
                    master.1
                );
                if let Some(files) = tls {
                    // The config file's lines are the arguments without `--`.
                    let arguments = files.server_arguments(tls_port);
                    for pair in arguments.chunks(2) {
                        config.push_str(&format!("{} {}\n", pair[0].trim_start_matches("--"), pair[1]));
                    }
                }
                let sentinel = RedisServer::start_sentinel(&config);
                let port = if tls.is_some() { tls_port } else { sentinel.port() };
                (sentinel, port)
            })
            .collect();
        // A failover needs the Sentinels to know each other and the replicas
        // (they learn both from hello messages, every 2 s).
        for (sentinel, _) in &sentinels {
            wait_until("the Sentinels know each other and both replicas", Duration::from_secs(30), || {
                let others = ask_sentinel::<Vec<redis::Value>>(
                    sentinel.port(),
                    redis::cmd("SENTINEL").arg("SENTINELS").arg(MASTER),
                );
                let replicas = ask_sentinel::<Vec<redis::Value>>(
                    sentinel.port(),
                    redis::cmd("SENTINEL").arg("REPLICAS").arg(MASTER),
                );
                others.is_ok_and(|others| others.len() == 2) && replicas.is_ok_and(|replicas| replicas.len() == 2)
            });
        }
        let mut servers = vec![master];
        servers.extend(replicas);
        SentinelSet { servers, sentinels, tls: tls.is_some() }
    }

    /// `redis+sentinel://` (`rediss+sentinel://` with TLS) with [`USER`]'s
    /// credentials, naming all three Sentinels, with their password.
    pub fn url(&self) -> String {
        let sentinels: Vec<String> = self.sentinels.iter().map(|(_, port)| format!("127.0.0.1:{port}")).collect();
        let scheme = if self.tls { "rediss+sentinel" } else { "redis+sentinel" };
        format!("{scheme}://{USER}:{PASSWORD}@{}/{MASTER}?sentinel_password={SENTINEL_PASSWORD}", sentinels.join(","))
    }

    /// The port of the master the first Sentinel that answers names.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|(sentinel, _)| {
            let address: Vec<String> =
                ask_sentinel(sentinel.port(), redis::cmd("SENTINEL").arg("GET-MASTER-ADDR-BY-NAME").arg(MASTER))
                    .ok()?;
            address.get(1)?.parse().ok()
        })
    }

    /// Kills the current master abruptly (SIGKILL); answers its port.
    pub fn kill_master(&mut self) -> u16 {
        let port = self.master_port().unwrap();
        let (master, _) = self.servers.iter_mut().find(|(_, named)| *named == port).unwrap();
        master.kill();
        port
    }
}

/// A data node with `extra` arguments, over TLS with `tls`; with the port
/// it is named by (its TLS port with TLS: its plain port, answering
/// NOAUTH, then only tells the tests it is up).
fn data_node(tls: Option<&TlsFiles>, extra: Vec<String>) -> (RedisServer, u16) {
    match tls {
        Some(files) => {
            let tls_port = crate::process::free_port();
            let arguments = files.server_arguments(tls_port).into_iter().chain(extra).collect();
            (RedisServer::start_with(arguments), tls_port)
        }
        None => {
            let server = RedisServer::start_with(extra);
            let port = server.port();
            (server, port)
        }
    }
}

/// Three masters sharing the 16384 slots, no replicas, knowing [`USER`]
/// only (ACL). With TLS files, clients and the cluster bus speak TLS.
pub struct RedisCluster {
    /// Each node with the port it is named by.
    pub nodes: Vec<(RedisServer, u16)>,
    tls: bool,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        RedisCluster::start_with(None, 0)
    }

    /// Three masters, each with `replicas` replicas (which replicate as
    /// [`USER`]); over TLS with `tls`.
    pub fn start_with(tls: Option<&TlsFiles>, replicas: usize) -> RedisCluster {
        let nodes: Vec<(RedisServer, u16)> = (0..3 * (1 + replicas))
            .map(|_| {
                // The bus port is given, not derived (port + 10000 may not exist).
                let bus = crate::process::free_port();
                let mut cluster = vec![
                    "--cluster-enabled".to_owned(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    "nodes.conf".into(),
                    "--cluster-port".into(),
                    bus.to_string(),
                    "--cluster-node-timeout".into(),
                    "2000".into(),
                ];
                if tls.is_some() {
                    cluster.extend(["--tls-cluster".to_owned(), "yes".into()]);
                }
                let as_replica = ["--masteruser", USER, "--masterauth", PASSWORD].map(String::from);
                data_node(tls, cluster.into_iter().chain(acl()).chain(as_replica).collect())
            })
            .collect();
        let addresses: Vec<String> = nodes.iter().map(|(_, port)| format!("127.0.0.1:{port}")).collect();
        let mut create = Command::new("redis-cli");
        create.args(["--user", USER, "--pass", PASSWORD, "--no-auth-warning"]);
        if let Some(files) = tls {
            create.arg("--tls").arg("--cacert").arg(files.path("ca.pem"));
            create.arg("--cert").arg(files.path("client.pem")).arg("--key").arg(files.path("client.key"));
        }
        create.args(["--cluster", "create"]).args(&addresses);
        create.args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]);
        let output = create.output().unwrap();
        assert!(
            output.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        for (node, _) in &nodes {
            wait_until("the cluster is ok on every node", Duration::from_secs(30), || {
                query_as_user::<String>(node.port(), &redis::cmd("CLUSTER").arg("INFO").clone())
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            });
        }
        RedisCluster { nodes, tls: tls.is_some() }
    }

    /// `redis+cluster://` (`rediss+cluster://` with TLS) with [`USER`]'s
    /// credentials, naming every node.
    pub fn url(&self) -> String {
        let addresses: Vec<String> = self.nodes.iter().map(|(_, port)| format!("127.0.0.1:{port}")).collect();
        let scheme = if self.tls { "rediss+cluster" } else { "redis+cluster" };
        format!("{scheme}://{USER}:{PASSWORD}@{}", addresses.join(","))
    }

    /// A plain `redis://` URL to each node, with [`USER`]'s credentials.
    pub fn node_urls(&self) -> Vec<String> {
        self.nodes.iter().map(|(node, _)| format!("redis://{USER}:{PASSWORD}@127.0.0.1:{}/", node.port())).collect()
    }

    /// The ports of the masters, as the nodes name them.
    pub fn master_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|(node, _)| {
                query_as_user::<Vec<redis::Value>>(node.port(), &redis::cmd("ROLE"))
                    .is_ok_and(|role| role.first() == Some(&redis::Value::BulkString(b"master".to_vec())))
            })
            .map(|(_, port)| *port)
            .collect()
    }

    /// Kills the master that holds keys (SIGKILL); answers its port.
    pub fn kill_master_with_keys(&mut self) -> u16 {
        let masters = self.master_ports();
        let counts = self.key_counts();
        let index = (0..self.nodes.len())
            .find(|index| masters.contains(&self.nodes[*index].1) && counts[*index] > 0)
            .expect("a master holds the keys");
        self.nodes[index].0.kill();
        self.nodes[index].1
    }

    /// How many keys each node holds.
    pub fn key_counts(&self) -> Vec<u64> {
        // A killed node counts none.
        self.nodes.iter().map(|(node, _)| query_as_user(node.port(), &redis::cmd("DBSIZE")).unwrap_or(0)).collect()
    }
}
