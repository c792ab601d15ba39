//! A real `redis-server`, started by the tests on a free loopback port with
//! append-only persistence in a temporary folder, and with extra arguments
//! for the servers of a TLS, Sentinel or Cluster set-up
//! ([`crate::redis_setups`]).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;

pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    /// A config file to read first, in the server's folder (a Sentinel
    /// needs one it can rewrite).
    config: Option<String>,
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a server; panics with a clear message when `redis-server` is
    /// not installed (`./scripts/test.sh` installs it).
    pub fn start() -> RedisServer {
        RedisServer::start_with(Vec::new())
    }

    /// Starts a server with `extra` arguments after the usual ones; it is
    /// ready once its plain port answers (`PONG`, or an error such as
    /// `NOAUTH` when the default user is off).
    pub fn start_with(extra: Vec<String>) -> RedisServer {
        RedisServer::start_configured(None, extra)
    }

    /// Starts a Sentinel whose config file holds `config` (its `sentinel
    /// monitor …` lines).
    pub fn start_sentinel(config: &str) -> RedisServer {
        RedisServer::start_configured(Some(config.to_owned()), vec!["--sentinel".into()])
    }

    fn start_configured(config: Option<String>, extra: Vec<String>) -> RedisServer {
        let port = crate::process::free_port();
        let mut server = RedisServer { child: None, port, dir: tempfile::tempdir().unwrap(), config, extra };
        if let Some(config) = &server.config {
            std::fs::write(server.dir.path().join("redis.conf"), config).unwrap();
        }
        server.launch();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The plain port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server abruptly (SIGKILL): only what was fsynced survives.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and folder.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    fn launch(&mut self) {
        let mut command = Command::new("redis-server");
        if self.config.is_some() {
            command.arg(self.dir.path().join("redis.conf"));
        }
        let child = command
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "yes"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start redis-server (run ./scripts/test.sh to install it): {error}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.answers_ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }

    fn answers_ping(&self) -> bool {
        answers_ping(self.port)
    }
}

/// Whether a Redis (server or Sentinel) answers on `port`: `PONG`, or
/// `NOAUTH` from a server whose default user is off.
pub fn answers_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut reply = [0u8; 16];
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let read = stream.read(&mut reply).unwrap_or(0);
    let reply = &reply[..read];
    reply.starts_with(b"+PONG") || reply.starts_with(b"-NOAUTH")
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP relay to Redis that can go silent: once silenced, open paths keep
/// their sockets but carry nothing more (a peer gone without a reset), and
/// new connections are held unanswered; healed, new ones are relayed again.
pub struct SilentLink {
    port: u16,
    silent: watch::Sender<bool>,
}

impl SilentLink {
    pub async fn to(server: &RedisServer) -> SilentLink {
        let target = server.url().trim_start_matches("redis://").trim_end_matches('/').to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (silent, watching) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut watching = watching.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    if *watching.borrow() {
                        return std::future::pending::<()>().await;
                    }
                    let upstream = tokio::net::TcpStream::connect(target).await.unwrap();
                    tokio::select! {
                        _ = pump(&client, &upstream) => {}
                        _ = pump(&upstream, &client) => {}
                        _ = async { drop(watching.wait_for(|silent| *silent).await) } => {
                            // Hold both sockets open, forever silent.
                            std::future::pending::<()>().await;
                        }
                    }
                });
            }
        });
        SilentLink { port, silent }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// From now on, open paths carry nothing and new connections hang.
    pub fn silence(&self) {
        self.silent.send_replace(true);
    }

    /// New connections are relayed again (silenced paths stay lost).
    pub fn heal(&self) {
        self.silent.send_replace(false);
    }
}

/// Copies `from` to `to` until either closes.
async fn pump(from: &tokio::net::TcpStream, to: &tokio::net::TcpStream) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        if from.readable().await.is_err() {
            return;
        }
        let read = match from.try_read(&mut buffer) {
            Ok(0) => return,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        };
        let mut sent = 0;
        while sent < read {
            if to.writable().await.is_err() {
                return;
            }
            match to.try_write(&buffer[sent..read]) {
                Ok(written) => sent += written,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => return,
            }
        }
    }
}
