//! The servers under test, as processes started up front and stopped when
//! the benchmark ends: the broker on the embedded store, `redis-server` and
//! the broker on Redis, the peer (`oidc-provider`), the bare endpoint.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::Target;
use crate::keys::{AgentKey, BareKey};
use crate::report::Report;
use crate::{bare, Settings, AIRLINE, KEY_AGENT};

/// A server under test, as the report names it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Embedded,
    Redis,
    Peer,
    Bare,
}

impl Server {
    pub const ALL: [Server; 4] = [Server::Embedded, Server::Redis, Server::Peer, Server::Bare];

    pub fn name(self) -> &'static str {
        match self {
            Server::Embedded => "Baton, embedded store",
            Server::Redis => "Baton, Redis store",
            Server::Peer => "oidc-provider (peer)",
            Server::Bare => "bare endpoint",
        }
    }

    /// A word for identifiers made per server.
    pub fn slug(self) -> &'static str {
        match self {
            Server::Embedded => "embedded",
            Server::Redis => "redis",
            Server::Peer => "peer",
            Server::Bare => "bare",
        }
    }

    pub fn is_broker(self) -> bool {
        matches!(self, Server::Embedded | Server::Redis)
    }
}

/// Where a run sends its requests, and whose CPU and memory it measures.
pub struct Endpoint {
    pub server: Server,
    pub target: Target,
    /// The server's processes, the one whose RSS is measured first (the
    /// Redis broker's `redis-server` second).
    pub pids: Vec<u32>,
    /// The embedded store's file.
    pub store_file: Option<PathBuf>,
}

/// Every server, running.
pub struct Servers {
    embedded: Broker,
    redis: Option<(Redis, Broker)>,
    peer: Option<Peer>,
    bare: Option<Bare>,
}

impl Servers {
    /// Starts every server the settings ask for; one that cannot start (no
    /// Node, no `redis-server`) is left out, and the report says why.
    pub fn start(settings: &Settings, agent_key: &AgentKey, bare_key: &BareKey, report: &mut Report) -> Servers {
        let embedded = Broker::start(None, agent_key);
        let redis = if !settings.redis {
            report.note("The Redis runs were skipped: BATON_LOAD_REDIS=0.".to_owned());
            None
        } else {
            match Redis::start() {
                Ok(redis) => {
                    report.redis_version = redis.version.clone();
                    let broker = Broker::start(Some(&redis.url()), agent_key);
                    Some((redis, broker))
                }
                Err(why) => {
                    report.note(format!("The Redis runs were skipped: {why}."));
                    None
                }
            }
        };
        let peer = if !settings.peer {
            report.note("The peer (oidc-provider) was not run: BATON_LOAD_PEER=0.".to_owned());
            None
        } else {
            match Peer::start() {
                Ok(peer) => {
                    report.peer_version = peer.version.clone();
                    Some(peer)
                }
                Err(why) => {
                    report.note(format!("The peer (oidc-provider) was not run: {why}."));
                    None
                }
            }
        };
        let bare = match Bare::start(bare_key) {
            Ok(bare) => Some(bare),
            Err(why) => {
                report.note(format!("The bare endpoint was not run: {why}."));
                None
            }
        };
        Servers { embedded, redis, peer, bare }
    }

    /// The brokers: embedded store first, then Redis.
    pub fn brokers(&self) -> Vec<Endpoint> {
        let embedded = Endpoint {
            server: Server::Embedded,
            target: self.embedded.target.clone(),
            pids: vec![self.embedded.child.id()],
            store_file: Some(self.embedded.folder.path().join("data").join("baton.redb")),
        };
        let redis = self.redis.as_ref().map(|(redis, broker)| Endpoint {
            server: Server::Redis,
            target: broker.target.clone(),
            pids: vec![broker.child.id(), redis.child.id()],
            store_file: None,
        });
        std::iter::once(embedded).chain(redis).collect()
    }

    pub fn peer(&self) -> Option<Endpoint> {
        self.peer.as_ref().map(|peer| Endpoint {
            server: Server::Peer,
            target: peer.target.clone(),
            pids: vec![peer.child.id()],
            store_file: None,
        })
    }

    pub fn bare(&self) -> Option<Endpoint> {
        self.bare.as_ref().map(|bare| Endpoint {
            server: Server::Bare,
            target: bare.target.clone(),
            pids: vec![bare.child.id()],
            store_file: None,
        })
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET path` answers 200, over plain std sockets with bounded waits.
fn answers(port: u16, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200")
}

fn wait_until(what: &str, child: &mut Child, ready: impl Fn() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{what} exited ({status})"));
        }
        if Instant::now() > deadline {
            return Err(format!("{what} did not come up in 30 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// `baton serve` in a temporary folder: the example policies (agents kept
/// alive whatever the date, bookings without the approval step) plus `booker-jwt`.
struct Broker {
    child: Child,
    folder: tempfile::TempDir,
    target: Target,
}

impl Broker {
    fn start(redis_url: Option<&str>, key: &AgentKey) -> Broker {
        let folder = tempfile::tempdir().unwrap();
        let policies = folder.path().join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        for entry in std::fs::read_dir(examples).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                // The booking is measured as a machine-paced exchange: the
                // person's approval the example asks for is left out.
                let text = std::fs::read_to_string(&path)
                    .unwrap()
                    .replace("expires = 2030-06-30", "expires = 9999-12-31")
                    .replace("approval = [\"flights.book\"]", "");
                std::fs::write(policies.join(path.file_name().unwrap()), text).unwrap();
            }
        }
        append(
            &policies.join("agents.toml"),
            &format!(
                "\n[[agents]]\nid = \"{KEY_AGENT}\"\nowner = \"travel-team@example.com\"\n\
                 purpose = \"The booker, authenticating with a key (private_key_jwt), for the load benchmark\"\n\
                 expires = 9999-12-31\ngroups = [\"travel\"]\ntoken_ttl = 1800\njwks = {{ keys = [ {} ] }}\n",
                key.public_jwk_toml()
            ),
        );
        append(
            &policies.join("travel.cedar"),
            &format!(
                "\n@id(\"load-planner-to-{KEY_AGENT}\")\n\
                 permit (principal == Agent::\"planner\", action == Action::\"exchange\", resource in Resource::\"{AIRLINE}\")\n\
                 when {{ context.target == \"{KEY_AGENT}\" }};\n\
                 \n@id(\"load-{KEY_AGENT}-to-airline\")\n\
                 permit (principal == Agent::\"{KEY_AGENT}\", action == Action::\"exchange\", resource in Resource::\"{AIRLINE}\")\n\
                 when {{ context.target == \"{AIRLINE}\" }};\n"
            ),
        );
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_baton"));
        command
            .arg("serve")
            .current_dir(folder.path())
            .env_clear()
            .env("BATON_LISTEN", format!("127.0.0.1:{port}"))
            // Every connection of a run comes from this one address: allow
            // as many as `BATON_LOAD_CONNECTIONS` may ask for.
            .env("BATON_MAX_CONNECTIONS_PER_ADDRESS", "1024")
            // The refusals of junk are written every second, not every
            // minute, so that the junk run's state growth shows within it
            // (sixty times the default's worst case).
            .env("BATON_REFUSAL_INTERVAL", "1")
            .stdin(Stdio::null())
            // The audit lines the broker logs are written (write(2) is made)
            // but not kept; the durable audit trail is in the store.
            .stdout(Stdio::null())
            .stderr(File::create(folder.path().join("broker.err")).unwrap());
        if let Some(url) = redis_url {
            command.env("BATON_REDIS_URL", url);
        }
        let mut child = command.spawn().unwrap_or_else(|error| panic!("cannot start the broker: {error}"));
        if let Err(why) = wait_until("the broker", &mut child, || answers(port, "/healthz")) {
            let log = std::fs::read_to_string(folder.path().join("broker.err")).unwrap_or_default();
            stop(&mut child);
            panic!("{why}\n{log}");
        }
        Broker { child, folder, target: Target::loopback(port) }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

fn append(path: &Path, text: &str) {
    std::fs::OpenOptions::new().append(true).open(path).unwrap().write_all(text.as_bytes()).unwrap();
}

/// A `redis-server` on a free loopback port, append-only with an fsync every
/// second (its usual durable setting), in a temporary folder.
struct Redis {
    child: Child,
    port: u16,
    version: String,
    _folder: tempfile::TempDir,
}

impl Redis {
    fn start() -> Result<Redis, String> {
        let version = Command::new("redis-server")
            .arg("--version")
            .output()
            .map_err(|_| "redis-server is not installed (./scripts/test.sh installs it)".to_owned())?;
        let version = String::from_utf8_lossy(&version.stdout)
            .split_whitespace()
            .find_map(|word| word.strip_prefix("v="))
            .unwrap_or("?")
            .to_owned();
        let folder = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--protected-mode", "yes"])
            .args(["--appendonly", "yes", "--appendfsync", "everysec"])
            .arg("--dir")
            .arg(folder.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| format!("cannot start redis-server: {error}"))?;
        let ping = || {
            let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
            let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
            let mut reply = [0u8; 7];
            stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
        };
        if let Err(why) = wait_until("redis-server", &mut child, ping) {
            stop(&mut child);
            return Err(why);
        }
        Ok(Redis { child, port, version, _folder: folder })
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// `node benches/peer/server.mjs`: oidc-provider with a token-exchange grant.
struct Peer {
    child: Child,
    target: Target,
    version: String,
    _logs: tempfile::TempDir,
}

impl Peer {
    fn start() -> Result<Peer, String> {
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peer");
        let node = Command::new("node").arg("--version").output().map_err(|_| "node is not installed".to_owned())?;
        let node = String::from_utf8_lossy(&node.stdout).trim().to_owned();
        let installed = folder.join("node_modules/oidc-provider/package.json");
        if !installed.exists() {
            println!("peer: npm ci in {}", folder.display());
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&folder)
                .stdin(Stdio::null())
                .status()
                .map_err(|error| format!("cannot run npm ci: {error}"))?;
            if !status.success() {
                return Err(format!("npm ci in benches/peer failed ({status})"));
            }
        }
        let package: serde_json::Value = serde_json::from_slice(&std::fs::read(&installed).map_err(|e| e.to_string())?)
            .map_err(|error| error.to_string())?;
        let version = format!("oidc-provider {} on Node {node}", package["version"].as_str().unwrap_or("?"));
        let logs = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut child = Command::new("node")
            .args(["server.mjs", &port.to_string()])
            .current_dir(&folder)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(logs.path().join("peer.err")).unwrap())
            .spawn()
            .map_err(|error| format!("cannot start node: {error}"))?;
        if let Err(why) = wait_until("the peer", &mut child, || answers(port, "/.well-known/openid-configuration")) {
            stop(&mut child);
            let log = std::fs::read_to_string(logs.path().join("peer.err")).unwrap_or_default();
            return Err(format!("{why}: {}", log.trim()));
        }
        println!("peer: {version} at http://127.0.0.1:{port}");
        Ok(Peer { child, target: Target::loopback(port), version, _logs: logs })
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// The bare endpoint (`bare.rs`): this benchmark's own binary, re-executed.
struct Bare {
    child: Child,
    target: Target,
    _logs: tempfile::TempDir,
}

impl Bare {
    fn start(key: &BareKey) -> Result<Bare, String> {
        let program = std::env::current_exe().map_err(|error| format!("cannot find this binary: {error}"))?;
        let logs = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut child = Command::new(program)
            .env_clear()
            .env(bare::LISTEN, format!("127.0.0.1:{port}"))
            .env(bare::KEY, key.to_environment())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(logs.path().join("bare.err")).unwrap())
            .spawn()
            .map_err(|error| format!("cannot start it: {error}"))?;
        let listening = || TcpStream::connect(("127.0.0.1", port)).is_ok();
        if let Err(why) = wait_until("the bare endpoint", &mut child, listening) {
            stop(&mut child);
            let log = std::fs::read_to_string(logs.path().join("bare.err")).unwrap_or_default();
            return Err(format!("{why}: {}", log.trim()));
        }
        println!("bare endpoint at http://127.0.0.1:{port}");
        Ok(Bare { child, target: Target::loopback(port), _logs: logs })
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}
