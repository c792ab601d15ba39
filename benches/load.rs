//! The load benchmark: the real `baton` binary over real HTTP on loopback,
//! on the embedded store and on Redis, side by side with `oidc-provider`.
//!
//! `cargo bench --bench load` (cargo builds `target/release/baton` first).
//!
//! Each run keeps N connections busy (HTTP/1.1 keep-alive, one request in
//! flight on each) for a warm-up and then a measured window, and stops at
//! the window's end or at a request cap, whichever comes first. It reports
//! throughput, p50/p99/p99.9 latency, errors (any transport error or non-2xx
//! answer, or a body without what it must hold) and the server's peak RSS
//! (`VmHWM`, reset before each run). The table is printed and written to
//! `benches/RESULTS.md`; `benches/README.md` says what each run does.
//!
//! Invoked without `--bench` (as `cargo test` and nextest do, `--list`
//! included) it does nothing and prints nothing.
//!
//! Settings, all optional: `BATON_LOAD_DURATION` (seconds measured, 10),
//! `BATON_LOAD_WARMUP` (seconds, 2), `BATON_LOAD_CONNECTIONS` (64),
//! `BATON_LOAD_MAX_REQUESTS` (per run, 2000000), `BATON_LOAD_CLIENT_THREADS`
//! (1), `BATON_LOAD_REDIS` and `BATON_LOAD_PEER` (0 skips those runs),
//! `BATON_LOAD_RESULTS` (where the table goes; `-` for nowhere).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use baton::clock::{Clock, SystemClock};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const AIRLINE: &str = "https://api.airline.example";
/// The agent registered for the `private_key_jwt` runs: the booker's rights,
/// with a key instead of a secret.
const KEY_AGENT: &str = "booker-jwt";
const KEY_ID: &str = "load-key-1";
/// How far ahead of signing the pre-signed assertions expire (Baton accepts
/// at most 300 s, RFC 7523 §3 item 4).
const ASSERTION_LIFETIME: i64 = 290;

// The performance targets and reference figures, for the table.
const TARGET_EXCHANGE_EMBEDDED: f64 = 12_000.0;
const TARGET_EXCHANGE_REDIS: f64 = 10_000.0;
const TARGET_INTROSPECTION: f64 = 15_000.0;
const TARGET_P99_MS: f64 = 5.0;
const TARGET_RSS_MIB: f64 = 100.0;
const TARGET_PEER_RATIO: f64 = 3.0;
const REFERENCE_BARE: f64 = 19_000.0;
const REFERENCE_BARE_REDIS: f64 = 18_000.0;
/// Other processes using more CPU than this during a run make its figures
/// suspect: the run is marked.
const DISTURBED_CPU: f64 = 0.2;
/// A request (a walk) not answered by then is an error, and its connection
/// is dropped: a stalled server cannot hold the run past its end for long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait before a run for the machine to quiet down.
const QUIET_WAIT: Duration = Duration::from_secs(10);

fn main() {
    if !std::env::args().any(|argument| argument == "--bench") {
        return;
    }
    let settings = Settings::from_env();
    let runtime = if settings.client_threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(settings.client_threads).enable_all().build()
    }
    .expect("client runtime");
    let mut report = Report {
        load_average: std::fs::read_to_string("/proc/loadavg")
            .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default(),
        ..Report::default()
    };
    println!("load benchmark: {}", settings.describe());
    println!("broker: {}", env!("CARGO_BIN_EXE_baton"));

    let peer = if settings.peer {
        match Peer::start() {
            Ok(peer) => Some(peer),
            Err(why) => {
                report.note(format!("The peer (oidc-provider) was not run: {why}."));
                None
            }
        }
    } else {
        report.note("The peer (oidc-provider) was not run: BATON_LOAD_PEER=0.".to_owned());
        None
    };
    if let Some(peer) = &peer {
        report.peer_version = peer.version.clone();
    }

    let key = AgentKey::generate();
    {
        let broker = Broker::start(None, &key);
        runtime.block_on(phase("embedded", &broker, None, peer.as_ref(), &key, &settings, &mut report));
    }
    drop(peer);
    if !settings.redis {
        report.note("The Redis runs were skipped: BATON_LOAD_REDIS=0.".to_owned());
    } else {
        match Redis::start() {
            Ok(redis) => {
                report.redis_version = redis.version.clone();
                let broker = Broker::start(Some(&redis.url()), &key);
                runtime.block_on(phase("Redis", &broker, Some(&redis), None, &key, &settings, &mut report));
            }
            Err(why) => report.note(format!("The Redis runs were skipped: {why}.")),
        }
    }

    let text = report.render(&settings);
    println!("\n{text}");
    if let Some(path) = settings.results.as_deref() {
        std::fs::write(path, &text).unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
        println!("written to {}", path.display());
    }
    if report.errors() > 0 {
        eprintln!("load benchmark: {} errors (there must be none): see above", report.errors());
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------

struct Settings {
    duration: Duration,
    warmup: Duration,
    connections: usize,
    max_requests: u64,
    client_threads: usize,
    redis: bool,
    peer: bool,
    results: Option<PathBuf>,
    /// The `BATON_LOAD_*` variables that were set, for the table.
    overrides: Vec<String>,
}

impl Settings {
    fn from_env() -> Settings {
        let mut overrides = Vec::new();
        let mut number = |name: &str, default: u64, range: std::ops::RangeInclusive<u64>| -> u64 {
            let Ok(text) = std::env::var(name) else { return default };
            let value: u64 = text.trim().parse().unwrap_or_else(|_| panic!("{name}={text}: not a whole number"));
            assert!(range.contains(&value), "{name}={value}: must be within {range:?}");
            overrides.push(format!("{name}={value}"));
            value
        };
        // At most 200 s: the tokens a run reuses (the airline API's live 300 s)
        // and the pre-signed assertions (290 s) must outlive it.
        let duration = Duration::from_secs(number("BATON_LOAD_DURATION", 10, 1..=200));
        let warmup = Duration::from_secs(number("BATON_LOAD_WARMUP", 2, 0..=60));
        let connections = number("BATON_LOAD_CONNECTIONS", 64, 1..=1024) as usize;
        let max_requests = number("BATON_LOAD_MAX_REQUESTS", 2_000_000, 1..=20_000_000);
        let client_threads = number("BATON_LOAD_CLIENT_THREADS", 1, 1..=64) as usize;
        let redis = number("BATON_LOAD_REDIS", 1, 0..=1) == 1;
        let peer = number("BATON_LOAD_PEER", 1, 0..=1) == 1;
        let results = match std::env::var("BATON_LOAD_RESULTS") {
            Ok(path) if path == "-" => None,
            Ok(path) => Some(PathBuf::from(path)),
            Err(_) => Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/RESULTS.md")),
        };
        Settings { duration, warmup, connections, max_requests, client_threads, redis, peer, results, overrides }
    }

    fn describe(&self) -> String {
        format!(
            "{} connections, {} s warm-up + {} s measured per run, at most {} requests a run, {} client thread(s)",
            self.connections,
            self.warmup.as_secs(),
            self.duration.as_secs(),
            self.max_requests,
            self.client_threads
        )
    }
}

// ---------------------------------------------------------------------------
// The HTTP client: hyper's HTTP/1.1 connection, one per simulated client.
// ---------------------------------------------------------------------------

type Sender = SendRequest<Full<Bytes>>;

#[derive(Clone)]
struct Target {
    address: SocketAddr,
    host: HeaderValue,
}

impl Target {
    fn loopback(port: u16) -> Target {
        Target {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            host: HeaderValue::from_str(&format!("127.0.0.1:{port}")).unwrap(),
        }
    }

    fn issuer(&self) -> String {
        format!("http://{}", self.address)
    }
}

async fn connect(target: &Target) -> Result<Sender, String> {
    let stream = tokio::net::TcpStream::connect(target.address).await.map_err(|error| format!("connect: {error}"))?;
    stream.set_nodelay(true).map_err(|error| format!("nodelay: {error}"))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| format!("handshake: {error}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// One `POST` with a form body; `Ok` with the body only for a 2xx answer
/// whose body contains `expect`.
async fn post(
    sender: &mut Sender,
    target: &Target,
    path: &str,
    authorization: Option<&HeaderValue>,
    body: Bytes,
    expect: &str,
) -> Result<Bytes, String> {
    sender.ready().await.map_err(|error| format!("connection: {error}"))?;
    let mut request = Request::post(path)
        .header(HOST, target.host.clone())
        .header(CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
    if let Some(authorization) = authorization {
        request = request.header(AUTHORIZATION, authorization.clone());
    }
    let request = request.body(Full::new(body)).map_err(|error| format!("request: {error}"))?;
    let response = sender.send_request(request).await.map_err(|error| format!("transport: {error}"))?;
    let status = response.status();
    let body = response.into_body().collect().await.map_err(|error| format!("reading the body: {error}"))?.to_bytes();
    let shown = || String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    if !status.is_success() {
        return Err(format!("HTTP {status}: {}", shown()));
    }
    if !body.windows(expect.len()).any(|window| window == expect.as_bytes()) {
        return Err(format!("HTTP {status} without {expect}: {}", shown()));
    }
    Ok(body)
}

/// One junk `POST /token`; `Ok` when it is refused as junk is: 401
/// `invalid_client`, or 429 once the address is throttled.
async fn refused(sender: &mut Sender, target: &Target, authorization: &HeaderValue, body: Bytes) -> Result<(), String> {
    sender.ready().await.map_err(|error| format!("connection: {error}"))?;
    let request = Request::post("/token")
        .header(HOST, target.host.clone())
        .header(CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"))
        .header(AUTHORIZATION, authorization.clone())
        .body(Full::new(body))
        .map_err(|error| format!("request: {error}"))?;
    let response = sender.send_request(request).await.map_err(|error| format!("transport: {error}"))?;
    let status = response.status().as_u16();
    response.into_body().collect().await.map_err(|error| format!("reading the body: {error}"))?;
    match status {
        401 | 429 => Ok(()),
        other => Err(format!("junk answered HTTP {other}")),
    }
}

fn basic(id: &str, secret: &str) -> HeaderValue {
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    HeaderValue::from_str(&format!("Basic {credentials}")).unwrap()
}

fn agent(id: &str) -> HeaderValue {
    basic(id, &format!("dev-only-{id}-secret"))
}

fn form<V: AsRef<str>>(pairs: &[(&str, V)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter().map(|(name, value)| (name, value)))
        .finish()
}

/// The access token from a token response.
fn access_token(body: &[u8]) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Issued {
        access_token: String,
    }
    serde_json::from_slice::<Issued>(body)
        .map(|issued| issued.access_token)
        .map_err(|error| format!("not a token response ({error}): {}", String::from_utf8_lossy(body)))
}

/// A token obtained before a run, on a connection of its own.
async fn obtain<V: AsRef<str>>(target: &Target, authorization: &HeaderValue, pairs: &[(&str, V)]) -> String {
    let mut sender = connect(target).await.unwrap_or_else(|error| panic!("{}: {error}", target.issuer()));
    let body = post(&mut sender, target, "/token", Some(authorization), Bytes::from(form(pairs)), "access_token")
        .await
        .unwrap_or_else(|error| panic!("setting up at {}: {error}", target.issuer()));
    access_token(&body).unwrap()
}

// ---------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------

/// One request, the same every time.
struct Call {
    path: &'static str,
    authorization: Option<HeaderValue>,
    body: Bytes,
    expect: &'static str,
}

impl Call {
    fn token<V: AsRef<str>>(authorization: HeaderValue, pairs: &[(&str, V)]) -> Call {
        Call {
            path: "/token",
            authorization: Some(authorization),
            body: Bytes::from(form(pairs)),
            expect: "access_token",
        }
    }

    fn introspect(authorization: HeaderValue, token: &str) -> Call {
        Call {
            path: "/introspect",
            authorization: Some(authorization),
            body: Bytes::from(form(&[("token", token)])),
            expect: "\"active\":true",
        }
    }
}

/// A hop of a walk: its subject token is the previous step's access token.
struct Hop {
    authorization: HeaderValue,
    before: String,
    after: String,
}

enum Work {
    /// The same request again and again.
    Repeat(Call),
    /// `body` followed by a fresh client assertion each time, taken from a
    /// pool signed before the run; the run ends when the pool does.
    Assertions { body: String, assertions: Vec<String>, next: AtomicUsize },
    /// The first step, then each hop on the token the step before got.
    Walk { first: Call, hops: Vec<Hop> },
    /// A client credentials request from a client nobody registered, a new
    /// one each time: refused (401, or 429 once the address is throttled).
    Junk { next: AtomicUsize },
}

impl Work {
    fn requests_per_unit(&self) -> u64 {
        match self {
            Work::Walk { hops, .. } => 1 + hops.len() as u64,
            Work::Repeat(_) | Work::Assertions { .. } | Work::Junk { .. } => 1,
        }
    }

    /// One unit of work; `Ok(false)` when there is nothing left to do.
    async fn once(&self, sender: &mut Sender, target: &Target) -> Result<bool, String> {
        match self {
            Work::Repeat(call) => {
                post(sender, target, call.path, call.authorization.as_ref(), call.body.clone(), call.expect).await?;
            }
            Work::Assertions { body, assertions, next } => {
                let Some(assertion) = assertions.get(next.fetch_add(1, Ordering::Relaxed)) else { return Ok(false) };
                let body = Bytes::from(format!("{body}&client_assertion={assertion}"));
                post(sender, target, "/token", None, body, "access_token").await?;
            }
            Work::Junk { next } => {
                let client = format!("junk-{}", next.fetch_add(1, Ordering::Relaxed));
                let body = Bytes::from_static(b"grant_type=client_credentials");
                refused(sender, target, &basic(&client, "not-a-secret"), body).await?;
            }
            Work::Walk { first, hops } => {
                let mut token = access_token(
                    &post(sender, target, first.path, first.authorization.as_ref(), first.body.clone(), first.expect)
                        .await?,
                )?;
                for hop in hops {
                    let body = Bytes::from(format!("{}{token}{}", hop.before, hop.after));
                    token = access_token(
                        &post(sender, target, "/token", Some(&hop.authorization), body, "access_token").await?,
                    )?;
                }
            }
        }
        Ok(true)
    }
}

/// What one run measured.
struct Measured {
    units: u64,
    requests_per_unit: u64,
    seconds: f64,
    /// Latency of each unit in the measured window, nanoseconds, sorted.
    latencies: Vec<u64>,
    errors: u64,
    samples: Vec<String>,
    stopped_by: &'static str,
    peak_rss_kib: Option<u64>,
    cpu: Option<CpuUse>,
}

impl Measured {
    fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.units as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// Nearest-rank percentile, in milliseconds.
    fn percentile(&self, quantile: f64) -> f64 {
        let count = self.latencies.len();
        if count == 0 {
            return f64::NAN;
        }
        let rank = ((quantile * count as f64).ceil() as usize).clamp(1, count) - 1;
        self.latencies[rank] as f64 / 1e6
    }

    fn rss_mib(&self) -> Option<f64> {
        self.peak_rss_kib.map(|kib| kib as f64 / 1024.0)
    }

    fn disturbed(&self) -> bool {
        self.cpu.is_some_and(|cpu| cpu.other > DISTURBED_CPU)
    }

    /// "server / client / other" CPUs.
    fn cpu_text(&self) -> String {
        self.cpu.map_or("?".to_owned(), |cpu| format!("{:.2} / {:.2} / {:.2}", cpu.servers, cpu.client, cpu.other))
    }
}

/// Runs `work` on `settings.connections` connections and measures it.
/// `servers` are the processes under test: the first for the peak RSS, all
/// of them for the CPU they used (the broker and its `redis-server`).
async fn measure(servers: &[u32], target: &Target, work: Work, settings: &Settings) -> Measured {
    let pid = servers[0];
    wait_for_quiet(servers).await;
    reset_peak_rss(pid);
    let cpu_before = CpuSample::take(servers);
    let work = Arc::new(work);
    let per_unit = work.requests_per_unit();
    let started = Instant::now();
    let measured_from = started + settings.warmup;
    let deadline = measured_from + settings.duration;
    let issued = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let max_requests = settings.max_requests;
    let mut tasks = Vec::with_capacity(settings.connections);
    for _ in 0..settings.connections {
        let (work, target, issued, errors, samples) =
            (work.clone(), target.clone(), issued.clone(), errors.clone(), samples.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(64 * 1024);
            let mut last_end = None;
            let mut sender: Option<Sender> = None;
            let mut stopped_by = "duration";
            let fail = |error: String| {
                errors.fetch_add(1, Ordering::Relaxed);
                let mut samples = samples.lock().unwrap();
                if samples.len() < 5 {
                    samples.push(error);
                }
            };
            loop {
                if Instant::now() >= deadline {
                    break;
                }
                if issued.fetch_add(per_unit, Ordering::Relaxed) >= max_requests {
                    stopped_by = "request cap";
                    break;
                }
                if sender.as_ref().is_none_or(Sender::is_closed) {
                    match connect(&target).await {
                        Ok(connected) => sender = Some(connected),
                        Err(error) => {
                            fail(error);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
                let began = Instant::now();
                let result = tokio::time::timeout(REQUEST_TIMEOUT, work.once(sender.as_mut().unwrap(), &target))
                    .await
                    .unwrap_or_else(|_| {
                        sender = None;
                        Err(format!("no answer in {} s", REQUEST_TIMEOUT.as_secs()))
                    });
                let ended = Instant::now();
                match result {
                    Ok(true) if began >= measured_from => {
                        latencies.push(ended.duration_since(began).as_nanos() as u64);
                        last_end = Some(ended);
                    }
                    Ok(true) => {}
                    Ok(false) => {
                        stopped_by = "assertion pool";
                        break;
                    }
                    Err(error) => fail(error),
                }
            }
            (latencies, last_end, stopped_by)
        }));
    }
    let mut latencies = Vec::new();
    let mut last_end = measured_from;
    let mut stopped_by = "duration";
    for task in tasks {
        let (mut some, end, why) = task.await.expect("a client task panicked");
        latencies.append(&mut some);
        last_end = last_end.max(end.unwrap_or(measured_from));
        if why != "duration" {
            stopped_by = why;
        }
    }
    let cpu = CpuSample::take(servers).since(&cpu_before);
    latencies.sort_unstable();
    let samples = std::mem::take(&mut *samples.lock().unwrap());
    Measured {
        units: latencies.len() as u64,
        requests_per_unit: per_unit,
        seconds: last_end.duration_since(measured_from).as_secs_f64(),
        latencies,
        errors: errors.load(Ordering::Relaxed),
        samples,
        stopped_by,
        peak_rss_kib: peak_rss_kib(pid),
        cpu,
    }
}

/// Waits, up to `QUIET_WAIT`, until the other processes on the machine use
/// less than `DISTURBED_CPU` over half a second: on a shared machine, a run
/// then more often starts on a quiet one.
async fn wait_for_quiet(servers: &[u32]) {
    let started = Instant::now();
    loop {
        let before = CpuSample::take(servers);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let quiet = CpuSample::take(servers).since(&before).is_none_or(|cpu| cpu.other <= DISTURBED_CPU);
        if quiet || started.elapsed() >= QUIET_WAIT {
            if started.elapsed() > Duration::from_secs(1) {
                let outcome = if quiet { "quiet" } else { "still busy: running anyway" };
                println!(
                    "  waited {:.0} s for other processes to quiet down ({outcome})",
                    started.elapsed().as_secs_f64()
                );
            }
            return;
        }
    }
}

/// CPU time so far, in clock ticks: the machine's busy time, the servers'
/// and this process's (the load client).
struct CpuSample {
    at: Instant,
    machine: Option<u64>,
    servers: Option<u64>,
    client: Option<u64>,
}

/// Where the run's CPU went, in CPUs (1.0 = one core busy the whole run).
#[derive(Clone, Copy)]
struct CpuUse {
    servers: f64,
    client: f64,
    /// Everything else on the machine: other processes disturb the figures.
    other: f64,
}

/// `USER_HZ`, the unit of `/proc/*/stat` times: 100 on every Linux platform
/// Rust supports.
const TICKS_PER_SECOND: f64 = 100.0;

impl CpuSample {
    fn take(servers: &[u32]) -> CpuSample {
        let machine = std::fs::read_to_string("/proc/stat").ok().and_then(|stat| {
            // cpu user nice system idle iowait irq softirq steal ...
            let ticks: Vec<u64> =
                stat.lines().next()?.split_whitespace().skip(1).take(8).filter_map(|f| f.parse().ok()).collect();
            let idle = ticks.get(3)? + ticks.get(4)?;
            Some(ticks.iter().sum::<u64>().saturating_sub(idle))
        });
        let servers = servers.iter().map(|pid| process_ticks(&pid.to_string())).sum::<Option<u64>>();
        CpuSample { at: Instant::now(), machine, servers, client: process_ticks("self") }
    }

    fn since(&self, before: &CpuSample) -> Option<CpuUse> {
        let seconds = self.at.duration_since(before.at).as_secs_f64() * TICKS_PER_SECOND;
        let servers = self.servers?.saturating_sub(before.servers?);
        let client = self.client?.saturating_sub(before.client?);
        let machine = self.machine?.saturating_sub(before.machine?);
        Some(CpuUse {
            servers: servers as f64 / seconds,
            client: client as f64 / seconds,
            other: machine.saturating_sub(servers + client) as f64 / seconds,
        })
    }
}

/// User + system time of a process, all its threads, in clock ticks.
fn process_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses: state is
    // the first, utime the 12th, stime the 13th.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Resets the process's `VmHWM` to its current RSS (Linux ≥ 4.0).
fn reset_peak_rss(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

// ---------------------------------------------------------------------------
// private_key_jwt: the agent's key and its pre-signed assertions
// ---------------------------------------------------------------------------

struct AgentKey {
    pair: EcdsaKeyPair,
}

impl AgentKey {
    fn generate() -> AgentKey {
        let random = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &random).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &random).unwrap();
        AgentKey { pair }
    }

    /// The public key as a TOML inline table, for `agents.toml`.
    fn public_jwk_toml(&self) -> String {
        let point = self.pair.public_key().as_ref(); // 0x04 ‖ x ‖ y
        let encode = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        format!(
            "{{ kty = \"EC\", crv = \"P-256\", kid = \"{KEY_ID}\", x = \"{}\", y = \"{}\" }}",
            encode(&point[1..33]),
            encode(&point[33..65])
        )
    }

    /// `count` RFC 7523 client assertions for `issuer`, each with its own
    /// `jti`, all expiring `ASSERTION_LIFETIME` seconds from now; signed on
    /// every core, before the run, so that the client's signing is not in
    /// the figures.
    fn assertions(&self, issuer: &str, run: &str, count: usize) -> Vec<String> {
        let encode = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now = SystemClock.now().0;
        let header = encode(format!(r#"{{"alg":"ES256","typ":"JWT","kid":"{KEY_ID}"}}"#).as_bytes());
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let chunk = count.div_ceil(threads).max(1);
        let random = ring::rand::SystemRandom::new();
        std::thread::scope(|scope| {
            let parts: Vec<_> = (0..count)
                .step_by(chunk)
                .map(|start| {
                    let (header, random) = (&header, &random);
                    scope.spawn(move || {
                        (start..(start + chunk).min(count))
                            .map(|index| {
                                let claims = serde_json::json!({
                                    "iss": KEY_AGENT, "sub": KEY_AGENT, "aud": issuer,
                                    "iat": now, "exp": now + ASSERTION_LIFETIME, "jti": format!("{run}-{index}"),
                                });
                                let input = format!("{header}.{}", encode(claims.to_string().as_bytes()));
                                let signature = self.pair.sign(random, input.as_bytes()).unwrap();
                                format!("{input}.{}", encode(signature.as_ref()))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            parts.into_iter().flat_map(|part| part.join().unwrap()).collect()
        })
    }
}

// ---------------------------------------------------------------------------
// The processes: the broker, redis-server, the peer
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// The runs
// ---------------------------------------------------------------------------

/// Every run on one broker, the peer's alternating with Baton's.
async fn phase(
    store: &'static str,
    broker: &Broker,
    redis: Option<&Redis>,
    peer: Option<&Peer>,
    key: &AgentKey,
    settings: &Settings,
    report: &mut Report,
) {
    let target = &broker.target;
    let servers: Vec<u32> = std::iter::once(broker.child.id()).chain(redis.map(|redis| redis.child.id())).collect();
    let servers = servers.as_slice();
    let server = if store == "embedded" { "Baton, embedded store" } else { "Baton, Redis store" };

    // (b) One hop: the booker exchanges the planner's token for the airline API.
    let hop1 = baton_hop1(target, "booker").await;
    let work = Work::Repeat(Call::token(agent("booker"), &exchange_form(&hop1, AIRLINE)));
    let exchange = measure(servers, target, work, settings).await;
    let exchange_rate = exchange.rate();
    report.add(server, Workload::Exchange, "client_secret_basic", exchange);

    if let Some(peer) = peer {
        let hop1 = peer_hop1(&peer.target).await;
        let work = Work::Repeat(Call::token(agent("booker"), &exchange_form(&hop1, AIRLINE)));
        let measured = measure(&[peer.child.id()], &peer.target, work, settings).await;
        report.add("oidc-provider (peer)", Workload::Exchange, "client_secret_basic", measured);
    }

    // (c) The airline API introspects a valid token addressed to it.
    let hop1 = baton_hop1(target, "booker").await;
    let token = obtain(target, &agent("booker"), &exchange_form(&hop1, AIRLINE)).await;
    let work = Work::Repeat(Call::introspect(basic("airline-api", "dev-only-airline-api-secret"), &token));
    let measured = measure(servers, target, work, settings).await;
    report.add(server, Workload::Introspection, "client_secret_basic", measured);

    if let Some(peer) = peer {
        // oidc-provider introspects only opaque tokens: the booker's own.
        let token =
            obtain(&peer.target, &agent("booker"), &[("grant_type", "client_credentials"), ("scope", "flights.book")])
                .await;
        let work = Work::Repeat(Call::introspect(basic("airline-api", "dev-only-airline-api-secret"), &token));
        let measured = measure(&[peer.child.id()], &peer.target, work, settings).await;
        report.add("oidc-provider (peer)", Workload::Introspection, "client_secret_basic", measured);
    }

    // (a) The orchestrator's own token.
    let work = Work::Repeat(Call::token(
        agent("orchestrator"),
        &[("grant_type", "client_credentials"), ("audience", "planner")],
    ));
    let measured = measure(servers, target, work, settings).await;
    report.add(server, Workload::ClientCredentials, "client_secret_basic", measured);

    // The whole walk: orchestrator → planner → booker → airline API.
    let work = Work::Walk {
        first: Call::token(agent("orchestrator"), &[("grant_type", "client_credentials"), ("audience", "planner")]),
        hops: vec![
            walk_hop("planner", "audience", "booker", None),
            walk_hop("booker", "resource", AIRLINE, Some("flights.book")),
        ],
    };
    let measured = measure(servers, target, work, settings).await;
    report.add(server, Workload::Walk, "client_secret_basic", measured);

    // (d) The same hop as (b), authenticated with private_key_jwt.
    let budget = settings.warmup + settings.duration + Duration::from_secs(30);
    if budget.as_secs() as i64 >= ASSERTION_LIFETIME {
        report.note(format!(
            "{server}: the private_key_jwt run was skipped: warm-up + duration must stay under {} s, the \
             lifetime of its pre-signed assertions.",
            ASSERTION_LIFETIME - 30
        ));
    } else {
        private_key_jwt(store, servers, target, key, settings, exchange_rate, report).await;
    }

    // Junk, last: it spends the address's failure budget. The state it
    // grows is that of the embedded store's file.
    let database = broker.folder.path().join("data").join("baton.redb");
    let size = || std::fs::metadata(&database).map_or(0, |metadata| metadata.len());
    let before = size();
    let measured = measure(servers, target, Work::Junk { next: AtomicUsize::new(0) }, settings).await;
    // The last interval's refusals are written within a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    if redis.is_none() {
        let sent = measured.units.max(1);
        let grown = size().saturating_sub(before);
        report.note(format!(
            "{server}: the junk run's refusals (one audit event a second) grew `baton.redb` by {} KiB over \
             its warm-up and its measured window: {:.0} bytes per thousand junk requests of the window.",
            grown / 1024,
            grown as f64 * 1000.0 / sent as f64
        ));
    }
    report.add(server, Workload::Junk, "client_secret_basic", measured);
}

/// (d): the hop of (b), authenticated with `private_key_jwt` from a pool of
/// assertions signed before the run.
async fn private_key_jwt(
    store: &'static str,
    servers: &[u32],
    target: &Target,
    key: &AgentKey,
    settings: &Settings,
    exchange_rate: f64,
    report: &mut Report,
) {
    let server = if store == "embedded" { "Baton, embedded store" } else { "Baton, Redis store" };
    let hop1 = baton_hop1(target, KEY_AGENT).await;
    // Room for three times the rate of (b), at least 10,000 a second: a
    // run that still drains the pool ends early and says so.
    let expected = (exchange_rate * 3.0).max(10_000.0) * (settings.warmup + settings.duration).as_secs_f64();
    let count = (expected as u64).min(settings.max_requests) as usize;
    let signing = Instant::now();
    let assertions = key.assertions(&target.issuer(), &format!("load-{store}"), count);
    println!("  signed {count} client assertions in {:.1} s (before the run)", signing.elapsed().as_secs_f64());
    let mut body = exchange_form(&hop1, AIRLINE);
    body.push(("client_assertion_type", ASSERTION_TYPE.to_owned()));
    let body = form(&body);
    let work = Work::Assertions { body, assertions, next: AtomicUsize::new(0) };
    let measured = measure(servers, target, work, settings).await;
    report.add(server, Workload::Exchange, "private_key_jwt", measured);
}

/// The form of one hop: `subject_token` exchanged for `resource`, one scope.
fn exchange_form(subject_token: &str, resource: &str) -> Vec<(&'static str, String)> {
    vec![
        ("grant_type", EXCHANGE.to_owned()),
        ("subject_token", subject_token.to_owned()),
        ("subject_token_type", ACCESS_TOKEN.to_owned()),
        ("resource", resource.to_owned()),
        ("scope", "flights.book".to_owned()),
    ]
}

fn walk_hop(agent_id: &str, target_parameter: &str, target: &str, scope: Option<&str>) -> Hop {
    let mut after = format!("&subject_token_type={}&{target_parameter}={}", encode(ACCESS_TOKEN), encode(target));
    if let Some(scope) = scope {
        let _ = write!(after, "&scope={}", encode(scope));
    }
    Hop { authorization: agent(agent_id), before: format!("grant_type={}&subject_token=", encode(EXCHANGE)), after }
}

fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// The planner's token for `agent_id` on Baton, from the orchestrator's own.
async fn baton_hop1(target: &Target, agent_id: &str) -> String {
    let root =
        obtain(target, &agent("orchestrator"), &[("grant_type", "client_credentials"), ("audience", "planner")]).await;
    obtain(
        target,
        &agent("planner"),
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", &root),
            ("subject_token_type", ACCESS_TOKEN),
            ("audience", agent_id),
        ],
    )
    .await
}

/// The planner's token for the booker on the peer (agents are addressed by
/// `urn:agent:<id>` there: resource indicators are absolute URIs).
async fn peer_hop1(target: &Target) -> String {
    let root = obtain(
        target,
        &agent("orchestrator"),
        &[
            ("grant_type", "client_credentials"),
            ("resource", "urn:agent:planner"),
            ("scope", "flights.read flights.book"),
        ],
    )
    .await;
    obtain(
        target,
        &agent("planner"),
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", &root),
            ("subject_token_type", ACCESS_TOKEN),
            ("resource", "urn:agent:booker"),
        ],
    )
    .await
}

// ---------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    ClientCredentials,
    Exchange,
    Walk,
    Introspection,
    Junk,
}

impl Workload {
    /// Its name in the table; `auth` tells (b) from (d).
    fn name(self, auth: &str) -> &'static str {
        match self {
            Workload::ClientCredentials => "(a) client credentials",
            Workload::Exchange if auth == "private_key_jwt" => "(d) token exchange, one hop",
            Workload::Exchange => "(b) token exchange, one hop",
            Workload::Walk => "three-hop walk (3 requests)",
            Workload::Introspection => "(c) introspection",
            Workload::Junk => "junk: unknown clients, refused",
        }
    }
}

struct Row {
    server: &'static str,
    workload: Workload,
    auth: &'static str,
    measured: Measured,
}

impl Row {
    fn is_baton(&self) -> bool {
        self.server.starts_with("Baton")
    }

    /// The issue's throughput target for this row, if it has one.
    fn target_rate(&self) -> Option<f64> {
        match (self.is_baton(), self.workload) {
            (true, Workload::Exchange) if self.server.contains("Redis") => Some(TARGET_EXCHANGE_REDIS),
            (true, Workload::Exchange) => Some(TARGET_EXCHANGE_EMBEDDED),
            (true, Workload::Introspection) => Some(TARGET_INTROSPECTION),
            _ => None,
        }
    }

    fn target_text(&self) -> String {
        let mut parts = Vec::new();
        if let Some(rate) = self.target_rate() {
            parts.push(format!("≥ {}/s", thousands(rate)));
        }
        if self.is_baton() && self.workload == Workload::Exchange {
            parts.push(format!("p99 < {TARGET_P99_MS} ms"));
        }
        if self.is_baton() {
            parts.push(format!("RSS < {TARGET_RSS_MIB} MiB"));
        }
        parts.push("0 errors".to_owned());
        parts.join(", ")
    }

    fn verdict(&self) -> &'static str {
        let m = &self.measured;
        let rate = self.target_rate().is_none_or(|target| m.rate() >= target);
        let p99 = !(self.is_baton() && self.workload == Workload::Exchange) || m.percentile(0.99) < TARGET_P99_MS;
        let rss = !self.is_baton() || m.rss_mib().is_some_and(|mib| mib < TARGET_RSS_MIB);
        if rate && p99 && rss && m.errors == 0 {
            "met"
        } else {
            "**missed**"
        }
    }
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
    peer_version: String,
    redis_version: String,
    /// The machine's load average when the benchmark started.
    load_average: String,
}

impl Report {
    fn note(&mut self, note: String) {
        println!("note: {note}");
        self.notes.push(note);
    }

    fn errors(&self) -> u64 {
        self.rows.iter().map(|row| row.measured.errors).sum()
    }

    fn add(&mut self, server: &'static str, workload: Workload, auth: &'static str, measured: Measured) {
        let m = &measured;
        println!(
            "{server} · {} · {auth}: {:.0}/s ({} in {:.1} s, stopped by {}), p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, \
             {} errors, peak RSS {}, CPUs used (server / client / other) {}{}",
            workload.name(auth),
            m.rate(),
            m.units,
            m.seconds,
            m.stopped_by,
            m.percentile(0.5),
            m.percentile(0.99),
            m.percentile(0.999),
            m.errors,
            m.rss_mib().map_or("?".to_owned(), |mib| format!("{mib:.1} MiB")),
            m.cpu_text(),
            if m.disturbed() { " (disturbed: other processes were busy)" } else { "" },
        );
        for sample in &m.samples {
            eprintln!("  error: {sample}");
        }
        self.rows.push(Row { server, workload, auth, measured });
    }

    fn find(&self, server: &str, workload: Workload, auth: &str) -> Option<&Measured> {
        self.rows
            .iter()
            .find(|row| row.server == server && row.workload == workload && row.auth == auth)
            .map(|row| &row.measured)
    }

    fn render(&self, settings: &Settings) -> String {
        let mut out = String::new();
        let now = time::OffsetDateTime::from_unix_timestamp(SystemClock.now().0).unwrap();
        let date = now.format(time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC")).unwrap();
        let cpus = std::thread::available_parallelism().map_or(0, usize::from);
        let model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| text.lines().find_map(|line| line.strip_prefix("model name").map(|rest| rest.to_owned())))
            .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_owned())
            .unwrap_or_else(|| "?".to_owned());
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| text.lines().next().map(|line| line.split_whitespace().nth(1).unwrap_or("0").to_owned()))
            .and_then(|kib| kib.parse::<u64>().ok())
            .map_or("?".to_owned(), |kib| format!("{:.0} GiB", kib as f64 / 1024.0 / 1024.0));
        let commit = Command::new("git")
            .args(["describe", "--always", "--dirty"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map_or("?".to_owned(), |output| String::from_utf8_lossy(&output.stdout).trim().to_owned());
        let command = if settings.overrides.is_empty() {
            "cargo bench --bench load".to_owned()
        } else {
            format!("{} cargo bench --bench load", settings.overrides.join(" "))
        };

        let _ = writeln!(out, "# Load benchmark results\n");
        let _ = writeln!(
            out,
            "Written by `{command}` (`benches/load.rs`; `benches/README.md` says what each run does). \
             Rerunning it replaces this file.\n"
        );
        let _ = writeln!(out, "| | |\n|---|---|");
        let _ = writeln!(out, "| date | {date} |");
        let _ = writeln!(out, "| command | `{command}` |");
        let _ = writeln!(
            out,
            "| machine | {cpus} CPUs (`nproc`), {model}, {memory} RAM; load average {} at the start |",
            self.load_average
        );
        let _ =
            writeln!(out, "| Baton | {} (commit {commit}), release build, `baton serve` |", env!("CARGO_PKG_VERSION"));
        let _ = writeln!(out, "| load | {}; the client shares the machine with the server |", settings.describe());
        if !self.redis_version.is_empty() {
            let _ = writeln!(
                out,
                "| Redis | redis-server {} on loopback, `--appendonly yes --appendfsync everysec` |",
                self.redis_version
            );
        }
        if !self.peer_version.is_empty() {
            let _ = writeln!(
                out,
                "| peer | {} (`benches/peer/server.mjs`), one Node process (its crypto partly on libuv's threads) |",
                self.peer_version
            );
        }

        let _ = writeln!(out, "\n## Every run\n");
        let _ = writeln!(
            out,
            "Rates are per second of the measured window: requests, or whole walks for the walk. Latency is per \
             request (per walk for the walk). RSS is the server's peak (`VmHWM`) during the run. CPU is what \
             the server (with its redis-server), the load client and every other process on the machine used, \
             in CPUs, averaged over the run; a run where other processes used more than {DISTURBED_CPU} CPU is \
             marked ⚠.\n"
        );
        let _ = writeln!(
            out,
            "| server | workload | client auth | rate /s | p50 ms | p99 ms | p99.9 ms | errors | peak RSS MiB | \
             CPU server / client / other | target | |"
        );
        let _ = writeln!(out, "|---|---|---|--:|--:|--:|--:|--:|--:|--:|---|---|");
        for row in &self.rows {
            let m = &row.measured;
            let mut rate = thousands(m.rate());
            if m.requests_per_unit > 1 {
                let _ = write!(rate, " walks ({} req)", thousands(m.rate() * m.requests_per_unit as f64));
            }
            if m.stopped_by != "duration" {
                let _ = write!(rate, " (stopped by the {})", m.stopped_by);
            }
            let _ = writeln!(
                out,
                "| {} | {} | {} | {rate} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {}{} |",
                row.server,
                row.workload.name(row.auth),
                row.auth,
                m.percentile(0.5),
                m.percentile(0.99),
                m.percentile(0.999),
                m.errors,
                m.rss_mib().map_or("?".to_owned(), |mib| format!("{mib:.1}")),
                m.cpu_text(),
                row.target_text(),
                row.verdict(),
                if m.disturbed() { " ⚠" } else { "" },
            );
        }

        let peer = "oidc-provider (peer)";
        let embedded = "Baton, embedded store";
        let basic = "client_secret_basic";
        if self.rows.iter().any(|row| row.server == peer) {
            let _ = writeln!(out, "\n## Baton and the peer, run alternately\n");
            let _ = writeln!(out, "| workload | Baton (embedded) /s | oidc-provider /s | Baton / peer | target |");
            let _ = writeln!(out, "|---|--:|--:|--:|---|");
            for (workload, target) in
                [(Workload::Exchange, format!("≥ {TARGET_PEER_RATIO}×")), (Workload::Introspection, "—".to_owned())]
            {
                if let (Some(baton), Some(other)) =
                    (self.find(embedded, workload, basic), self.find(peer, workload, basic))
                {
                    let ratio = baton.rate() / other.rate();
                    let verdict = match workload {
                        Workload::Exchange if ratio >= TARGET_PEER_RATIO => " met",
                        Workload::Exchange => " **missed**",
                        _ => "",
                    };
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {ratio:.2}× | {target}{verdict} |",
                        workload.name(basic),
                        thousands(baton.rate()),
                        thousands(other.rate())
                    );
                }
            }
        }

        let _ = writeln!(out, "\n## Against the issue's reference figures (not re-measured here)\n");
        let _ = writeln!(out, "| Baton run | rate /s | reference | ratio | target |");
        let _ = writeln!(out, "|---|--:|---|--:|---|");
        for (server, reference, text) in [
            (embedded, REFERENCE_BARE, "bare axum endpoint doing only the exchange crypto, 19,000/s"),
            ("Baton, Redis store", REFERENCE_BARE_REDIS, "the same plus one Redis `EXISTS`, 18,000/s"),
        ] {
            if let Some(m) = self.find(server, Workload::Exchange, basic) {
                let ratio = m.rate() / reference;
                let verdict = if ratio >= 0.6 { "met" } else { "**missed**" };
                let _ = writeln!(
                    out,
                    "| {server}, exchange | {} | {text} | {:.0}% | ≥ 60% {verdict} |",
                    thousands(m.rate()),
                    ratio * 100.0
                );
            }
        }
        if let Some(m) = self.find(embedded, Workload::ClientCredentials, basic) {
            let _ = writeln!(
                out,
                "| {embedded}, client credentials | {} | Keycloak, published: 120–200/s per vCPU ({}–{}/s on {cpus}) | {:.0}–{:.0}× | — |",
                thousands(m.rate()),
                120 * cpus,
                200 * cpus,
                m.rate() / (200 * cpus.max(1)) as f64,
                m.rate() / (120 * cpus.max(1)) as f64,
            );
        }

        let _ = writeln!(out, "\n## Notes\n");
        for note in [
            "(b) is the booker's exchange of the planner's token (depth 1, pre-obtained) for the airline API, \
             `scope=flights.book`: client authentication, subject-token verification, Cedar policy, the \
             revocation check of the whole ancestry, minting, and the audit event written to the store, per request. \
             (d) is the same hop by `booker-jwt`, an agent registered with a JWKS for this run: each request carries \
             its own pre-signed assertion (unique `jti`, `exp` at most 290 s ahead), so the broker also verifies \
             one more signature and writes the `jti` to the replay store."
                .to_owned(),
            "The walk is orchestrator (client credentials) → planner → booker → airline API, each step on the \
             token the step before returned, on one connection; its rate is whole walks per second."
                .to_owned(),
            "The peer verifies the subject token (ES256 signature, `typ`, issuer, expiry, audience = the \
             presenting client), narrows scopes, writes `act` and signs an RFC 9068 JWT; it does no policy \
             evaluation, no revocation check and keeps no audit trail, and runs in one Node process (one \
             JavaScript thread; WebCrypto on libuv's pool). \
             oidc-provider refuses to introspect JWTs, so its introspection run looks up an opaque token in its \
             memory adapter, with no signature to verify, where Baton verifies a JWT and checks its revocation."
                .to_owned(),
            "The broker's stdout (one audit log line per decision) goes to /dev/null: the writes are made, the \
             disk is not measured. The embedded store commits each audit event and each used assertion `jti` \
             durably."
                .to_owned(),
        ] {
            let _ = writeln!(out, "- {note}");
        }
        for note in &self.notes {
            let _ = writeln!(out, "- {note}");
        }
        out
    }
}

fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}
