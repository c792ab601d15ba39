//! The report: the ratios between servers measured in this run, against the
//! targets, then every run, the machine and the notes. Printed, and written
//! to `BATON_LOAD_RESULTS`.

use std::fmt::Write as _;
use std::process::Command;

use baton::clock::{Clock, SystemClock};

use crate::client::{Measured, DISTURBED_CPU};
use crate::servers::Server;
use crate::{Settings, PEER_WARMUP};

/// Baton's exchange and introspection against the peer's, by rate and by
/// CPU time per request: at least this many times.
const TARGET_PEER_RATIO: f64 = 3.0;
/// Baton's exchange against the bare endpoint's: at least this share.
const TARGET_BARE_SHARE: f64 = 0.6;
/// p99 ÷ p50 of Baton's exchange runs: at most this.
const TARGET_SPREAD: f64 = 3.0;
/// Each broker's peak RSS over the benchmark: under this.
const TARGET_RSS_MIB: f64 = 100.0;
/// The machine and load the targets are stated for.
const TARGET_CPUS: usize = 2;
const TARGET_CONNECTIONS: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    ClientCredentials,
    /// (b), `client_secret_basic`.
    Exchange,
    /// (b′): (b) on a subject token never presented before.
    ExchangeFresh,
    /// (d), `private_key_jwt`.
    ExchangeByKey,
    Walk,
    Introspection,
    Junk,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::ClientCredentials => "(a) client credentials",
            Workload::Exchange => "(b) token exchange, one hop",
            Workload::ExchangeFresh => "(b′) token exchange, one hop, each on a new subject token",
            Workload::ExchangeByKey => "(d) token exchange, one hop",
            Workload::Walk => "three-hop walk (3 requests)",
            Workload::Introspection => "(c) introspection",
            Workload::Junk => "junk: unknown clients, refused",
        }
    }

    fn auth(self) -> &'static str {
        match self {
            Workload::ExchangeByKey => "private_key_jwt",
            _ => "client_secret_basic",
        }
    }
}

struct Row {
    server: Server,
    workload: Workload,
    measured: Measured,
}

#[derive(Default)]
pub struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
    pub peer_version: String,
    pub redis_version: String,
    /// The machine's load average when the benchmark started.
    load_average: String,
}

impl Report {
    pub fn new() -> Report {
        Report {
            load_average: std::fs::read_to_string("/proc/loadavg")
                .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_default(),
            ..Report::default()
        }
    }

    pub fn note(&mut self, note: String) {
        println!("note: {note}");
        self.notes.push(note);
    }

    pub fn errors(&self) -> u64 {
        self.rows.iter().map(|row| row.measured.errors).sum()
    }

    pub fn add(&mut self, server: Server, workload: Workload, measured: Measured) {
        let m = &measured;
        println!(
            "{} · {} · {}: {:.0}/s ({} in {:.1} s, stopped by {}), p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, \
             {} errors, peak RSS {} MiB, CPUs used (server / client / other) {}, CPU µs a request (server / \
             client) {} / {}{}",
            server.name(),
            workload.name(),
            workload.auth(),
            m.rate(),
            m.units,
            m.seconds,
            m.stopped_by,
            m.percentile(0.5),
            m.percentile(0.99),
            m.percentile(0.999),
            m.errors,
            mib(m.peak_rss_kib),
            cpus(m),
            micros(m.server_micros()),
            micros(m.client_micros()),
            if m.disturbed() { " (disturbed: other processes were busy)" } else { "" },
        );
        for sample in &m.samples {
            eprintln!("  error: {sample}");
        }
        self.rows.push(Row { server, workload, measured });
    }

    fn find(&self, server: Server, workload: Workload) -> Option<&Measured> {
        self.rows.iter().find(|row| row.server == server && row.workload == workload).map(|row| &row.measured)
    }

    /// The server's peak RSS over the whole benchmark, KiB: the largest of
    /// its runs' peaks and of its peaks between runs.
    fn peak_rss_kib(&self, server: Server) -> Option<u64> {
        self.rows
            .iter()
            .filter(|row| row.server == server)
            .flat_map(|row| [row.measured.peak_rss_kib, row.measured.earlier_peak_rss_kib])
            .flatten()
            .max()
    }

    pub fn render(&self, settings: &Settings) -> String {
        let mut out = String::new();
        self.render_setting(&mut out, settings);
        self.render_ratios(&mut out, settings);
        self.render_runs(&mut out);
        self.render_notes(&mut out);
        out
    }

    fn render_setting(&self, out: &mut String, settings: &Settings) {
        let now = time::OffsetDateTime::from_unix_timestamp(SystemClock.now().0).unwrap();
        let date = now.format(time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC")).unwrap();
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
            "Written by `{command}` (`benches/load/`; `benches/README.md` says what each run does). Rerunning it \
             replaces this file.\n"
        );
        let _ = writeln!(out, "| | |\n|---|---|");
        let _ = writeln!(out, "| date | {date} |");
        let _ = writeln!(out, "| command | `{command}` |");
        let _ = writeln!(
            out,
            "| machine | {} CPUs (`nproc`), {model}, {memory} RAM; load average {} at the start |",
            machine_cpus(),
            self.load_average
        );
        let _ =
            writeln!(out, "| Baton | {} (commit {commit}), release build, `baton serve` |", env!("CARGO_PKG_VERSION"));
        let _ = writeln!(out, "| load | {}; the client shares the machine with the servers |", settings.describe());
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
        if self.rows.iter().any(|row| row.server == Server::Bare) {
            let _ = writeln!(
                out,
                "| bare endpoint | the benchmark's own binary, re-executed: axum on tokio (one worker per core), \
                 mimalloc, `ring` (`benches/load/bare.rs`) |"
            );
        }
    }

    fn render_ratios(&self, out: &mut String, settings: &Settings) {
        let _ = writeln!(out, "\n## Ratios from this run\n");
        let _ = write!(
            out,
            "Every figure below was measured in this run, the servers taking turns workload by workload, so the \
             ratios hold whatever this machine's speed was today. By rate: Baton's requests a second over the \
             other server's. By CPU: the other server's CPU time per request over Baton's (how many times as \
             much work Baton gets from the same CPU). A verdict marked ⚠ rests on a run that other processes \
             disturbed."
        );
        let (cpus, connections) = (machine_cpus(), settings.connections);
        if cpus != TARGET_CPUS || connections != TARGET_CONNECTIONS {
            let _ = write!(
                out,
                " The targets are stated for {TARGET_CPUS} CPUs and {TARGET_CONNECTIONS} connections; this run had \
                 {cpus} CPUs and {connections} connections."
            );
        }
        if settings.warmup < PEER_WARMUP && self.rows.iter().any(|row| row.server == Server::Peer) {
            let _ = write!(
                out,
                " This run warmed up for {} s, less than the {} s the peer needs: the peer's figures are low, \
                 and the ratios against it flatter Baton.",
                settings.warmup.as_secs(),
                PEER_WARMUP.as_secs()
            );
        }
        let _ = writeln!(out);
        let brokers = [Server::Embedded, Server::Redis];

        let _ = writeln!(out, "\n### Token exchange (b), (b′)\n");
        let _ = writeln!(
            out,
            "| store | measure | Baton | peer | bare endpoint | Baton vs peer | target ≥ {TARGET_PEER_RATIO}× | \
             Baton vs bare | target ≥ {:.0} % |",
            TARGET_BARE_SHARE * 100.0
        );
        let _ = writeln!(out, "|---|---|--:|--:|--:|--:|---|--:|---|");
        let peer = self.find(Server::Peer, Workload::Exchange);
        let bare = self.find(Server::Bare, Workload::Exchange);
        for (broker, workload) in
            brokers.into_iter().flat_map(|broker| [(broker, Workload::Exchange), (broker, Workload::ExchangeFresh)])
        {
            let Some(baton) = self.find(broker, workload) else { continue };
            let tag = if workload == Workload::ExchangeFresh { ", (b′) new subject tokens" } else { ", (b)" };
            for measure in [Measure::Rate, Measure::Cpu] {
                let versus_peer = peer.and_then(|peer| measure.ratio(baton, peer));
                let versus_bare = bare.and_then(|bare| measure.ratio(baton, bare));
                let _ = writeln!(
                    out,
                    "| {}{tag} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    store(broker),
                    measure.name(),
                    measure.show(Some(baton)),
                    measure.show(peer),
                    measure.show(bare),
                    versus_peer.map_or("—".to_owned(), |ratio| format!("{ratio:.2}×")),
                    verdict(versus_peer.map(|ratio| ratio >= TARGET_PEER_RATIO), &[Some(baton), peer]),
                    versus_bare.map_or("—".to_owned(), |ratio| format!("{:.0} %", ratio * 100.0)),
                    verdict(versus_bare.map(|ratio| ratio >= TARGET_BARE_SHARE), &[Some(baton), bare]),
                );
            }
        }

        let _ = writeln!(out, "\n### Introspection (c)\n");
        let _ = writeln!(out, "| store | measure | Baton | peer | Baton vs peer | target ≥ {TARGET_PEER_RATIO}× |");
        let _ = writeln!(out, "|---|---|--:|--:|--:|---|");
        let peer = self.find(Server::Peer, Workload::Introspection);
        for broker in brokers {
            let Some(baton) = self.find(broker, Workload::Introspection) else { continue };
            for measure in [Measure::Rate, Measure::Cpu] {
                let versus_peer = peer.and_then(|peer| measure.ratio(baton, peer));
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} |",
                    store(broker),
                    measure.name(),
                    measure.show(Some(baton)),
                    measure.show(peer),
                    versus_peer.map_or("—".to_owned(), |ratio| format!("{ratio:.2}×")),
                    verdict(versus_peer.map(|ratio| ratio >= TARGET_PEER_RATIO), &[Some(baton), peer]),
                );
            }
        }

        let _ = writeln!(out, "\n### Latency spread of Baton's exchanges, {connections} connections\n");
        let _ = writeln!(out, "| store | workload | p50 ms | p99 ms | p99 ÷ p50 | target ≤ {TARGET_SPREAD}× |");
        let _ = writeln!(out, "|---|---|--:|--:|--:|---|");
        for broker in brokers {
            for workload in [Workload::Exchange, Workload::ExchangeFresh, Workload::ExchangeByKey] {
                let Some(baton) = self.find(broker, workload) else { continue };
                let spread = baton.percentile(0.99) / baton.percentile(0.5);
                let spread = spread.is_finite().then_some(spread);
                let _ = writeln!(
                    out,
                    "| {} | {}, {} | {:.2} | {:.2} | {} | {} |",
                    store(broker),
                    workload.name(),
                    workload.auth(),
                    baton.percentile(0.5),
                    baton.percentile(0.99),
                    spread.map_or("—".to_owned(), |spread| format!("{spread:.2}×")),
                    verdict(spread.map(|spread| spread <= TARGET_SPREAD), &[Some(baton)]),
                );
            }
        }

        let _ = writeln!(out, "\n### Peak RSS over the whole benchmark\n");
        let _ = writeln!(out, "| server | peak RSS MiB | target < {TARGET_RSS_MIB} MiB (Baton's brokers) |");
        let _ = writeln!(out, "|---|--:|---|");
        for server in Server::ALL {
            if !self.rows.iter().any(|row| row.server == server) {
                continue;
            }
            let peak = self.peak_rss_kib(server);
            let judged = if server.is_broker() {
                verdict(peak.map(|kib| (kib as f64 / 1024.0) < TARGET_RSS_MIB), &[])
            } else {
                "—"
            };
            let _ = writeln!(out, "| {} | {} | {judged} |", server.name(), mib(peak));
        }
    }

    fn render_runs(&self, out: &mut String) {
        let _ = writeln!(out, "\n## Every run\n");
        let _ = writeln!(
            out,
            "In the order they ran. Rates are per second of the measured window: requests, or whole walks for \
             the walk. Latency is per request (per walk for the walk). RSS is the server's peak (`VmHWM`) during \
             the run. CPUs are what the server (with its redis-server), the load client and every other process \
             on the machine used in the measured window, in CPUs (1.00 = one core throughout); CPU µs a request \
             is the server's, then the client's, CPU time in the window over the requests of the window (a walk \
             is 3). A run where other processes used more than {DISTURBED_CPU} CPU is marked ⚠: its figures are \
             low.\n"
        );
        let _ = writeln!(
            out,
            "| server | workload | client auth | rate /s | p50 ms | p99 ms | p99.9 ms | errors | peak RSS MiB | \
             CPUs server / client / other | CPU µs a request, server | client | |"
        );
        let _ = writeln!(out, "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|");
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
                "| {} | {} | {} | {rate} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} |",
                row.server.name(),
                row.workload.name(),
                row.workload.auth(),
                m.percentile(0.5),
                m.percentile(0.99),
                m.percentile(0.999),
                m.errors,
                mib(m.peak_rss_kib),
                cpus(m),
                micros(m.server_micros()),
                micros(m.client_micros()),
                if m.disturbed() { "⚠" } else { "" },
            );
        }
    }

    fn render_notes(&self, out: &mut String) {
        let _ = writeln!(out, "\n## Notes\n");
        for note in [
            "(b) is the booker's exchange of the planner's token (depth 1, pre-obtained) for the airline API, \
             `scope=flights.book`: client authentication, subject-token verification, Cedar policy, the \
             revocation check of the whole ancestry, minting, and the audit event written to the store, per \
             request. (d) is the same hop by `booker-jwt`, an agent registered with a JWKS for this run: each \
             request carries its own assertion, signed just before the run (unique `jti`, `exp` 290 s ahead), \
             so the broker also verifies one more signature and writes the `jti` to the replay store.",
            "(b) presents one subject token again and again, and (c) introspects one token again and again, \
             as an agent does that exchanges the token it holds for each call it makes, and as an API does \
             that introspects the token of each call it serves. Baton remembers the tokens whose signatures \
             it verified (by SHA-256 of the key and the whole token, once every check passed, for as long as \
             its keys do not change), so there it checks the signature once, and everything else on every \
             request. (b′) is the hop of (b) on a \
             new subject token each time (40,000 obtained before the run, taken in turn: more than Baton \
             remembers), so every request verifies a signature, as the bare endpoint and the peer do on every \
             request of (b). In every run the policy's decision is the same request's each time, which Baton \
             decides once per policy load and remembers (keyed by every input of the request).",
            "The bare endpoint is the ceiling for (b) on this machine: the same request over the same HTTP, \
             answered by axum with the client id read from HTTP Basic, the form parsed, the subject token's \
             ES256 signature verified and its claims decoded, its `aud` and `exp` checked, and a child with the \
             nested `act` signed: one verification and one signature per request. It does not check the client \
             secret (it reads the id only), evaluate policy, narrow scopes, check revocation or write an audit \
             event.",
            "The peer verifies the subject token (ES256 signature, `typ`, issuer, expiry, audience = the \
             presenting client), narrows scopes, writes `act` and signs an RFC 9068 JWT; it does no policy \
             evaluation, no revocation check and keeps no audit trail, and runs in one Node process (one \
             JavaScript thread; WebCrypto on libuv's pool). Its first seconds are slow while V8 compiles its \
             code: every run warms up first, 8 s by default, and only the window after is measured. \
             oidc-provider refuses to introspect JWTs, so its introspection run looks up an opaque token in its \
             memory adapter, with no signature to verify, where Baton verifies a JWT and checks its revocation.",
            "The walk is orchestrator (client credentials) → planner → booker → airline API, each step on the \
             token the step before returned, on one connection; its rate is whole walks per second.",
            "The brokers' stdout (one audit log line per decision) goes to /dev/null: the writes are made, the \
             disk is not measured. The embedded store commits each audit event and each used assertion `jti` \
             durably. The Redis broker's CPU includes its redis-server's; its RSS is the broker's alone.",
        ] {
            let _ = writeln!(out, "- {note}");
        }
        for note in &self.notes {
            let _ = writeln!(out, "- {note}");
        }
    }
}

/// What a ratio compares.
#[derive(Clone, Copy)]
enum Measure {
    /// Requests a second.
    Rate,
    /// The server's CPU µs a request.
    Cpu,
}

impl Measure {
    fn name(self) -> &'static str {
        match self {
            Measure::Rate => "requests /s",
            Measure::Cpu => "CPU µs a request",
        }
    }

    fn show(self, measured: Option<&Measured>) -> String {
        match (self, measured) {
            (_, None) => "not run".to_owned(),
            (Measure::Rate, Some(m)) => thousands(m.rate()),
            (Measure::Cpu, Some(m)) => micros(m.server_micros()),
        }
    }

    /// Baton against `other`, as many times as good: the rates' ratio, or
    /// the CPU times' inverse ratio.
    fn ratio(self, baton: &Measured, other: &Measured) -> Option<f64> {
        let ratio = match self {
            Measure::Rate => baton.rate() / other.rate(),
            Measure::Cpu => other.server_micros()? / baton.server_micros()?,
        };
        ratio.is_finite().then_some(ratio)
    }
}

/// "met" or "**missed**" (with ⚠ when a run it rests on was disturbed), or
/// "not measured".
fn verdict(met: Option<bool>, runs: &[Option<&Measured>]) -> &'static str {
    let disturbed = runs.iter().flatten().any(|run| run.disturbed());
    match (met, disturbed) {
        (None, _) => "not measured",
        (Some(true), false) => "met",
        (Some(true), true) => "met ⚠",
        (Some(false), false) => "**missed**",
        (Some(false), true) => "**missed** ⚠",
    }
}

/// A broker's store, for the ratio tables.
fn store(broker: Server) -> &'static str {
    match broker {
        Server::Embedded => "embedded",
        Server::Redis => "Redis",
        Server::Peer | Server::Bare => "—",
    }
}

fn machine_cpus() -> usize {
    std::thread::available_parallelism().map_or(0, usize::from)
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("?".to_owned(), |kib| format!("{:.1}", kib as f64 / 1024.0))
}

fn micros(value: Option<f64>) -> String {
    value.map_or("?".to_owned(), |micros| format!("{micros:.0}"))
}

/// "server / client / other" CPUs.
fn cpus(m: &Measured) -> String {
    m.cpu.map_or("?".to_owned(), |cpu| {
        format!("{:.2} / {:.2} / {:.2}", cpu.server_cpus(), cpu.client_cpus(), cpu.other_cpus())
    })
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
