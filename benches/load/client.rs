//! The load client: hyper's HTTP/1.1 client connection, one per simulated
//! client, the requests it sends, and one measured run.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;

use crate::servers::Endpoint;
use crate::usage::{self, CpuSample, CpuUse};
use crate::Settings;

/// A request (a walk) not answered by then is an error, and its connection
/// is dropped: a stalled server cannot hold the run past its end for long.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait before a run for the machine to quiet down.
pub const QUIET_WAIT: Duration = Duration::from_secs(10);
/// Other processes using more CPUs than this during a run make its figures
/// suspect: the run is marked.
pub const DISTURBED_CPU: f64 = 0.2;

type Sender = SendRequest<Full<Bytes>>;

/// A server's loopback address, and the `Host` header that names it.
#[derive(Clone)]
pub struct Target {
    address: SocketAddr,
    host: HeaderValue,
}

impl Target {
    pub fn loopback(port: u16) -> Target {
        Target {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            host: HeaderValue::from_str(&format!("127.0.0.1:{port}")).unwrap(),
        }
    }

    pub fn issuer(&self) -> String {
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

/// HTTP Basic credentials (`client_secret_basic`).
pub fn basic(id: &str, secret: &str) -> HeaderValue {
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    HeaderValue::from_str(&format!("Basic {credentials}")).unwrap()
}

/// The credentials of an agent of the example policies.
pub fn agent(id: &str) -> HeaderValue {
    basic(id, &format!("dev-only-{id}-secret"))
}

pub fn form<V: AsRef<str>>(pairs: &[(&str, V)]) -> String {
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
pub async fn obtain<V: AsRef<str>>(target: &Target, authorization: &HeaderValue, pairs: &[(&str, V)]) -> String {
    let mut sender = connect(target).await.unwrap_or_else(|error| panic!("{}: {error}", target.issuer()));
    let body = post(&mut sender, target, "/token", Some(authorization), Bytes::from(form(pairs)), "access_token")
        .await
        .unwrap_or_else(|error| panic!("setting up at {}: {error}", target.issuer()));
    access_token(&body).unwrap()
}

/// `count` tokens, each the answer to its own `POST /token` of `pairs`
/// (the same request, so many different tokens), on 64 connections at once.
pub async fn obtain_many<V: AsRef<str>>(
    target: &Target,
    authorization: &HeaderValue,
    pairs: &[(&str, V)],
    count: usize,
) -> Vec<String> {
    let body = Bytes::from(form(pairs));
    let asked = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (target, authorization, body, asked) =
                (target.clone(), authorization.clone(), body.clone(), asked.clone());
            tokio::spawn(async move {
                let mut sender = connect(&target).await.unwrap_or_else(|error| panic!("{}: {error}", target.issuer()));
                let mut tokens = Vec::new();
                while asked.fetch_add(1, Ordering::Relaxed) < count {
                    let answer =
                        post(&mut sender, &target, "/token", Some(&authorization), body.clone(), "access_token")
                            .await
                            .unwrap_or_else(|error| panic!("setting up at {}: {error}", target.issuer()));
                    tokens.push(access_token(&answer).unwrap());
                }
                tokens
            })
        })
        .collect();
    let mut tokens = Vec::with_capacity(count);
    for task in tasks {
        tokens.extend(task.await.expect("a setup task panicked"));
    }
    tokens
}

// ---------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------

/// One request, the same every time.
pub struct Call {
    path: &'static str,
    authorization: Option<HeaderValue>,
    body: Bytes,
    expect: &'static str,
}

impl Call {
    pub fn token<V: AsRef<str>>(authorization: HeaderValue, pairs: &[(&str, V)]) -> Call {
        Call {
            path: "/token",
            authorization: Some(authorization),
            body: Bytes::from(form(pairs)),
            expect: "access_token",
        }
    }

    pub fn introspect(authorization: HeaderValue, token: &str) -> Call {
        Call {
            path: "/introspect",
            authorization: Some(authorization),
            body: Bytes::from(form(&[("token", token)])),
            expect: "\"active\":true",
        }
    }
}

/// A hop of a walk: its subject token is the previous step's access token,
/// sent between `before` and `after`.
pub struct Hop {
    pub authorization: HeaderValue,
    pub before: String,
    pub after: String,
}

pub enum Work {
    /// The same request again and again.
    Repeat(Call),
    /// `body` followed by a fresh client assertion each time, taken from a
    /// pool signed before the run; the run ends when the pool does.
    Assertions { body: String, assertions: Vec<String>, next: AtomicUsize },
    /// The first step, then each hop on the token the step before got.
    Walk { first: Call, hops: Vec<Hop> },
    /// `hop` on each of `tokens` in turn, round and round.
    Rotate { hop: Hop, tokens: Vec<String>, next: AtomicUsize },
    /// A client credentials request from a client nobody registered, a new
    /// one each time: refused (401, or 429 once the address is throttled).
    Junk { next: AtomicUsize },
}

impl Work {
    fn requests_per_unit(&self) -> u64 {
        match self {
            Work::Walk { hops, .. } => 1 + hops.len() as u64,
            Work::Repeat(_) | Work::Assertions { .. } | Work::Junk { .. } | Work::Rotate { .. } => 1,
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
            Work::Rotate { hop, tokens, next } => {
                let token = &tokens[next.fetch_add(1, Ordering::Relaxed) % tokens.len()];
                let body = Bytes::from(format!("{}{token}{}", hop.before, hop.after));
                post(sender, target, "/token", Some(&hop.authorization), body, "access_token").await?;
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

// ---------------------------------------------------------------------------
// One measured run
// ---------------------------------------------------------------------------

/// What one run measured.
pub struct Measured {
    /// Requests, or walks, started in the measured window and answered.
    pub units: u64,
    pub requests_per_unit: u64,
    pub seconds: f64,
    /// Latency of each unit in the measured window, nanoseconds, sorted.
    latencies: Vec<u64>,
    pub errors: u64,
    pub samples: Vec<String>,
    pub stopped_by: &'static str,
    /// The server's peak RSS during the run, KiB.
    pub peak_rss_kib: Option<u64>,
    /// Its peak RSS from its start, or from its previous run's start, to
    /// this run's: with the runs' own peaks, the peak over the benchmark.
    pub earlier_peak_rss_kib: Option<u64>,
    /// CPU time over the measured window.
    pub cpu: Option<CpuUse>,
}

impl Measured {
    /// Units a second.
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.units as f64 / self.seconds
        } else {
            0.0
        }
    }

    pub fn requests(&self) -> u64 {
        self.units * self.requests_per_unit
    }

    /// Nearest-rank percentile, in milliseconds.
    pub fn percentile(&self, quantile: f64) -> f64 {
        let count = self.latencies.len();
        if count == 0 {
            return f64::NAN;
        }
        let rank = ((quantile * count as f64).ceil() as usize).clamp(1, count) - 1;
        self.latencies[rank] as f64 / 1e6
    }

    /// The server's CPU time per request in the window, µs.
    pub fn server_micros(&self) -> Option<f64> {
        self.cpu.and_then(|cpu| cpu.server_micros_per(self.requests()))
    }

    /// The load client's CPU time per request in the window, µs.
    pub fn client_micros(&self) -> Option<f64> {
        self.cpu.and_then(|cpu| cpu.client_micros_per(self.requests()))
    }

    /// Whether other processes took more than `DISTURBED_CPU` in the window.
    pub fn disturbed(&self) -> bool {
        self.cpu.is_some_and(|cpu| cpu.other_cpus() > DISTURBED_CPU)
    }
}

/// Runs `work` against `server` on `settings.connections` connections and
/// measures it: latencies and rate of what the window saw, the peak RSS of
/// the server's first process, and the CPU time of all its processes (the
/// broker and its `redis-server`) from the window's opening to the run's end.
pub async fn measure(server: &Endpoint, work: Work, settings: &Settings) -> Measured {
    let pids: Arc<[u32]> = server.pids.clone().into();
    let target = &server.target;
    wait_for_quiet(&pids).await;
    let earlier_peak_rss_kib = usage::peak_rss_kib(pids[0]);
    usage::reset_peak_rss(pids[0]);
    let work = Arc::new(work);
    let per_unit = work.requests_per_unit();
    let started = Instant::now();
    let measured_from = started + settings.warmup;
    let deadline = measured_from + settings.duration;
    // The CPU times as the window opens, taken by a task of their own.
    let window_opened = tokio::spawn({
        let pids = pids.clone();
        async move {
            tokio::time::sleep_until(measured_from.into()).await;
            CpuSample::take(&pids)
        }
    });
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
    let window_closed = CpuSample::take(&pids);
    // A run that ended before its window opened (the request cap, the
    // assertion pool) has no window, and no CPU figures.
    window_opened.abort();
    let cpu = match window_opened.await {
        Ok(opened) => window_closed.since(&opened),
        Err(_) => None,
    };
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
        peak_rss_kib: usage::peak_rss_kib(pids[0]),
        earlier_peak_rss_kib,
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
        let quiet = CpuSample::take(servers).since(&before).is_none_or(|cpu| cpu.other_cpus() <= DISTURBED_CPU);
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
