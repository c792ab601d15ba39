//! The load benchmark: the real `baton` binary over real HTTP on loopback,
//! on the embedded store and on Redis, measured in the same run as
//! `oidc-provider` (the peer) and as a bare endpoint that does only what an
//! exchange cannot avoid (the ceiling for that request on this machine).
//!
//! `cargo bench --bench load` (cargo builds `target/release/baton` first).
//!
//! This machine's speed drifts from day to day, so only figures taken side
//! by side mean anything: every server is started up front, each workload
//! runs on every server in turn, and the report opens with the ratios
//! between them. Each run keeps N connections busy (HTTP/1.1 keep-alive, one
//! request in flight on each) for a warm-up and then a measured window. It
//! reports throughput, p50/p99/p99.9 latency, errors, each server's peak RSS
//! and the CPU time each server and the client spent per request in the
//! window. The report is printed and written to `benches/RESULTS.md`;
//! `benches/README.md` says what each run does.
//!
//! | file | what |
//! |---|---|
//! | `main.rs` | the settings and the order of the runs |
//! | `client.rs` | the load client: connections, requests, workloads, one measured run |
//! | `usage.rs` | what a process used, from `/proc`: CPU time and peak RSS |
//! | `servers.rs` | the servers under test as processes: brokers, `redis-server`, the peer, the bare endpoint |
//! | `bare.rs` | the bare endpoint, served by this binary re-executed |
//! | `keys.rs` | the keys the benchmark makes and what it signs with them |
//! | `report.rs` | the ratios and the table of every run |
//!
//! Invoked without `--bench` (as `cargo test` and nextest do, `--list`
//! included) it does nothing and prints nothing.
//!
//! Settings, all optional: `BATON_LOAD_DURATION` (seconds measured, 10),
//! `BATON_LOAD_WARMUP` (seconds, 8), `BATON_LOAD_CONNECTIONS` (64),
//! `BATON_LOAD_MAX_REQUESTS` (per run, 2000000), `BATON_LOAD_CLIENT_THREADS`
//! (1), `BATON_LOAD_REDIS` and `BATON_LOAD_PEER` (0 skips those runs),
//! `BATON_LOAD_RESULTS` (where the report goes; `-` for nowhere).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod bare;
mod client;
mod keys;
mod report;
mod servers;
mod usage;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use client::{agent, basic, form, measure, obtain, obtain_many, Call, Hop, Target, Work, QUIET_WAIT, REQUEST_TIMEOUT};
use keys::{AgentKey, BareKey};
use report::{Report, Workload};
use servers::{Endpoint, Server, Servers};

/// The bench binary uses the allocator the `baton` binary uses, for the
/// bare endpoint it serves (and for its load client).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const AIRLINE: &str = "https://api.airline.example";
/// The agent registered for the `private_key_jwt` runs: the booker's rights,
/// with a key instead of a secret.
const KEY_AGENT: &str = "booker-jwt";
/// How far ahead of signing the pre-signed assertions expire (Baton accepts
/// at most 300 s, RFC 7523 §3 item 4).
const ASSERTION_LIFETIME: Duration = Duration::from_secs(290);
/// The subject tokens (b′) takes in turn: more than a broker remembers
/// verified signatures of (16,384), so that none is remembered when it
/// comes round again.
const FRESH_TOKENS: usize = 40_000;
/// The warm-up the peer needs, and the default: V8 is still compiling
/// oidc-provider's code over its first few thousand requests, which cost it
/// about three times the CPU of a warm one (see benches/README.md).
const PEER_WARMUP: Duration = Duration::from_secs(8);

fn main() {
    // Before anything else: this binary, re-executed, is the bare endpoint.
    if let Some(listen) = bare::requested() {
        bare::serve(&listen);
        return;
    }
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
    let mut report = Report::new();
    println!("load benchmark: {}", settings.describe());
    println!("broker: {}", env!("CARGO_BIN_EXE_baton"));

    let agent_key = AgentKey::generate();
    let bare_key = BareKey::generate();
    let servers = Servers::start(&settings, &agent_key, &bare_key, &mut report);
    runtime.block_on(run_all(&servers, &agent_key, &bare_key, &settings, &mut report));
    drop(servers);

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
    /// The `BATON_LOAD_*` variables that were set, for the report.
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
        // Shorter warm-ups than the peer needs are for trying the benchmark out.
        let warmup = Duration::from_secs(number("BATON_LOAD_WARMUP", PEER_WARMUP.as_secs(), 0..=60));
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

    /// Whether client assertions signed over `signing` still hold when the
    /// last request of the run that follows is answered: the signing, the
    /// longest wait for quiet (and its last half-second look), the warm-up,
    /// the window, the longest a request may take, and a second for `iat`
    /// rounded down.
    fn assertions_outlive_run(&self, signing: Duration) -> bool {
        let slack = Duration::from_secs(2);
        let needed = signing + QUIET_WAIT + self.warmup + self.duration + REQUEST_TIMEOUT + slack;
        needed < ASSERTION_LIFETIME
    }
}

// ---------------------------------------------------------------------------
// The order of the runs
// ---------------------------------------------------------------------------

/// Every run: each workload on every server that serves it, one after the
/// other, so that the figures compared are minutes apart. Exchange and
/// introspection first, where the peer and the bare endpoint take part;
/// junk last, as it spends the address's failure budget.
async fn run_all(
    servers: &Servers,
    agent_key: &AgentKey,
    bare_key: &BareKey,
    settings: &Settings,
    report: &mut Report,
) {
    let brokers = servers.brokers();

    // (b) One hop: the booker exchanges the planner's token for the airline API.
    let mut exchange_rates = Vec::new();
    for broker in &brokers {
        let parent = baton_hop1(&broker.target, "booker").await;
        let measured = measure(broker, exchange(&parent), settings).await;
        exchange_rates.push(measured.rate());
        report.add(broker.server, Workload::Exchange, measured);
    }
    if let Some(peer) = servers.peer() {
        let parent = peer_hop1(&peer.target).await;
        report.add(Server::Peer, Workload::Exchange, measure(&peer, exchange(&parent), settings).await);
    }
    if let Some(bare) = servers.bare() {
        let parent = bare_key.parent_token(&bare.target.issuer());
        report.add(Server::Bare, Workload::Exchange, measure(&bare, exchange(&parent), settings).await);
    }

    // (b′) The hop of (b), each time on a subject token the broker has not
    // seen: what (b) costs where no token is presented twice (the broker
    // remembers the signatures it verified).
    for broker in &brokers {
        let root = obtain(&broker.target, &agent("orchestrator"), &orchestrator_form()).await;
        let started = Instant::now();
        let parents =
            obtain_many(&broker.target, &agent("planner"), &planner_form(&root, "booker"), FRESH_TOKENS).await;
        println!(
            "  obtained {FRESH_TOKENS} subject tokens in {:.1} s (before the run)",
            started.elapsed().as_secs_f64()
        );
        let work = Work::Rotate {
            hop: walk_hop("booker", "resource", AIRLINE, Some("flights.book")),
            tokens: parents,
            next: AtomicUsize::new(0),
        };
        report.add(broker.server, Workload::ExchangeFresh, measure(broker, work, settings).await);
    }

    // (c) The airline API introspects a valid token addressed to it.
    for broker in &brokers {
        let parent = baton_hop1(&broker.target, "booker").await;
        let token = obtain(&broker.target, &agent("booker"), &exchange_form(&parent, AIRLINE)).await;
        report.add(broker.server, Workload::Introspection, measure(broker, introspection(&token), settings).await);
    }
    if let Some(peer) = servers.peer() {
        // oidc-provider introspects only opaque tokens: the booker's own.
        let pairs = [("grant_type", "client_credentials"), ("scope", "flights.book")];
        let token = obtain(&peer.target, &agent("booker"), &pairs).await;
        report.add(Server::Peer, Workload::Introspection, measure(&peer, introspection(&token), settings).await);
    }

    // (a) The orchestrator's own token.
    for broker in &brokers {
        let work = Work::Repeat(Call::token(agent("orchestrator"), &orchestrator_form()));
        report.add(broker.server, Workload::ClientCredentials, measure(broker, work, settings).await);
    }

    // The whole walk: orchestrator → planner → booker → airline API.
    for broker in &brokers {
        let work = Work::Walk {
            first: Call::token(agent("orchestrator"), &orchestrator_form()),
            hops: vec![
                walk_hop("planner", "audience", "booker", None),
                walk_hop("booker", "resource", AIRLINE, Some("flights.book")),
            ],
        };
        report.add(broker.server, Workload::Walk, measure(broker, work, settings).await);
    }

    // (d) The hop of (b), authenticated with private_key_jwt.
    if settings.assertions_outlive_run(Duration::ZERO) {
        for (broker, exchange_rate) in brokers.iter().zip(exchange_rates) {
            private_key_jwt(broker, agent_key, settings, exchange_rate, report).await;
        }
    } else {
        report.note(format!(
            "The private_key_jwt runs were skipped: their pre-signed assertions live {} s, shorter than a run \
             with this warm-up and duration.",
            ASSERTION_LIFETIME.as_secs()
        ));
    }

    // Junk, last: it spends the address's failure budget.
    for broker in &brokers {
        junk(broker, settings, report).await;
    }
}

/// (d): the hop of (b) by `booker-jwt`, each request with its own client
/// assertion from a pool signed just before the run (so that the client's
/// signing is not in the figures, and the assertions are fresh).
async fn private_key_jwt(
    broker: &Endpoint,
    key: &AgentKey,
    settings: &Settings,
    exchange_rate: f64,
    report: &mut Report,
) {
    let parent = baton_hop1(&broker.target, KEY_AGENT).await;
    // Twice the rate of (b), at least 10,000 a second: (d) does what (b)
    // does and checks one more signature. A run that still drains the pool
    // ends early and says so.
    let expected = (exchange_rate * 2.0).max(10_000.0) * (settings.warmup + settings.duration).as_secs_f64();
    let count = (expected as u64).min(settings.max_requests) as usize;
    let signing = Instant::now();
    let assertions = key.assertions(&broker.target.issuer(), &format!("load-{}", broker.server.slug()), count);
    let signed_in = signing.elapsed();
    println!("  signed {count} client assertions in {:.1} s (before the run)", signed_in.as_secs_f64());
    if !settings.assertions_outlive_run(signed_in) {
        report.note(format!(
            "{}: the private_key_jwt run was skipped: signing its assertions took {:.0} s, and they would \
             have expired before the run's end.",
            broker.server.name(),
            signed_in.as_secs_f64()
        ));
        return;
    }
    let mut body = exchange_form(&parent, AIRLINE);
    body.push(("client_assertion_type", ASSERTION_TYPE.to_owned()));
    let work = Work::Assertions { body: form(&body), assertions, next: AtomicUsize::new(0) };
    report.add(broker.server, Workload::ExchangeByKey, measure(broker, work, settings).await);
}

/// Junk: client credentials for clients nobody registered. On the embedded
/// store, how much the refusals grew its file.
async fn junk(broker: &Endpoint, settings: &Settings, report: &mut Report) {
    let size = || broker.store_file.as_ref().map(|file| std::fs::metadata(file).map_or(0, |metadata| metadata.len()));
    let before = size();
    let measured = measure(broker, Work::Junk { next: AtomicUsize::new(0) }, settings).await;
    // The last interval's refusals are written within a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    if let (Some(before), Some(after)) = (before, size()) {
        let grown = after.saturating_sub(before);
        report.note(format!(
            "{}: the junk run's refusals (one audit event a second) grew `baton.redb` by {} KiB over its \
             warm-up and its measured window: {:.0} bytes per thousand junk requests of the window.",
            broker.server.name(),
            grown / 1024,
            grown as f64 * 1000.0 / measured.units.max(1) as f64
        ));
    }
    report.add(broker.server, Workload::Junk, measured);
}

// ---------------------------------------------------------------------------
// The requests of the travel example
// ---------------------------------------------------------------------------

/// (b): the same exchange of `parent` for the airline API, again and again.
fn exchange(parent: &str) -> Work {
    Work::Repeat(Call::token(agent("booker"), &exchange_form(parent, AIRLINE)))
}

/// (c): the airline API introspects `token`.
fn introspection(token: &str) -> Work {
    Work::Repeat(Call::introspect(basic("airline-api", "dev-only-airline-api-secret"), token))
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

/// The orchestrator's client credentials request, for the planner.
fn orchestrator_form() -> [(&'static str, &'static str); 2] {
    [("grant_type", "client_credentials"), ("audience", "planner")]
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
    let root = obtain(target, &agent("orchestrator"), &orchestrator_form()).await;
    obtain(target, &agent("planner"), &planner_form(&root, agent_id)).await
}

/// The planner's exchange of the orchestrator's `root` for `agent_id`.
fn planner_form<'a>(root: &'a str, agent_id: &'a str) -> [(&'static str, &'a str); 4] {
    [("grant_type", EXCHANGE), ("subject_token", root), ("subject_token_type", ACCESS_TOKEN), ("audience", agent_id)]
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
