//! What one token costs: raw signature verification and signing as the
//! baselines, then Baton's verification, the verifier with its revocation
//! check, the revocation check alone, minting, the Cedar decision for one
//! exchange, and one whole exchange in process. After the measurements it
//! prints each one's mean as a ratio to its baseline (verification to raw
//! verification, minting and the whole exchange to raw signing).
//!
//! `cargo bench --bench core`

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]

use std::sync::Arc;

use base64::Engine;
use baton::broker::Broker;
use baton::claims::Claims;
use baton::claims::ScopeSet;
use baton::clock::{Clock, FixedClock, SystemClock};
use baton::context::{Settings, Stores};
use baton::grant::TokenRequest;
use baton::ids::{AgentId, Audience};
use baton::keys::{self, Algorithm, KeyLookup, KeySet, VerifyingKey};
use baton::params::TokenParams;
use baton::policy::{Action, Ask, Lifetimes, Policy};
use baton::store::embedded::EmbeddedStore;
use baton::store::{Lineage, RevocationStore};
use criterion::Criterion;

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const GROUP: &str = "token";

/// A measurement: its id (criterion's folder name) and what it is.
struct Measured(&'static str, &'static str);

const RAW_VERIFY: Measured = Measured("raw_verify", "raw ES256 verify with ring (baseline)");
const BATON_VERIFY: Measured = Measured(
    "baton_verify",
    "Baton's verification, every check, signature included (keys that remember nothing), no revocation",
);
const BATON_VERIFY_AGAIN: Measured = Measured(
    "baton_verify_again",
    "Baton's verification of a token its key set verified before: every check but the signature",
);
const VERIFIER: Measured = Measured("verifier", "the verifier: every check and the embedded revocation check");
const CHECK_EMBEDDED: Measured = Measured("check_embedded", "revocation check, embedded store");
const CHECK_REDIS: Measured = Measured("check_redis", "revocation check, Redis over loopback (one round trip)");
const RAW_SIGN: Measured = Measured("raw_sign", "raw ES256 sign with ring (baseline)");
const MINT: Measured = Measured("mint", "minting a child (claims, encoding, ES256 signature)");
const POLICY: Measured =
    Measured("policy", "the policy decision of one exchange (Cedar, the example rules), a new request each time");
const POLICY_AGAIN: Measured =
    Measured("policy_again", "the policy decision of one exchange decided before under the same rules");
const EXCHANGE_IN_PROCESS: Measured =
    Measured("exchange", "one exchange in process (auth, policy, revocation, mint, durable audit)");

/// Each measurement and the baseline it is a ratio to.
const RATIOS: [(&Measured, &Measured); 10] = [
    (&BATON_VERIFY, &RAW_VERIFY),
    (&BATON_VERIFY_AGAIN, &RAW_VERIFY),
    (&VERIFIER, &RAW_VERIFY),
    (&CHECK_EMBEDDED, &RAW_VERIFY),
    (&CHECK_REDIS, &RAW_VERIFY),
    (&MINT, &RAW_SIGN),
    (&POLICY, &RAW_SIGN),
    (&POLICY_AGAIN, &RAW_SIGN),
    (&EXCHANGE_IN_PROCESS, &RAW_VERIFY),
    (&EXCHANGE_IN_PROCESS, &RAW_SIGN),
];
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
}

struct Fixture {
    issuer: String,
    broker: Arc<Broker>,
    store: Arc<EmbeddedStore>,
    clock: Arc<FixedClock>,
    root: String,
    hop1: String,
    _dir: tempfile::TempDir,
}

async fn token(broker: &Broker, agent: &str, form: &[(&str, &str)]) -> String {
    let request = TokenRequest {
        authorization: Some(basic(agent, &format!("dev-only-{agent}-secret"))),
        params: TokenParams::from_pairs(form.iter().copied()).expect("form"),
        client_address: None,
        dpop_proofs: Vec::new(),
    };
    broker.token(request).await.expect("token").access_token
}

/// A broker on the example policies, served on loopback so that a verifier
/// can fetch its JWKS, with the planner's token for the booker in hand.
async fn fixture() -> Fixture {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let issuer = format!("http://{}", listener.local_addr().expect("address"));
    let dir = tempfile::tempdir().expect("tempdir");
    let now = SystemClock.now();
    keys::generate(&dir.path().join("keys"), Algorithm::Es256, 3600, now).expect("key");
    let keys = KeySet::load(&dir.path().join("keys"), 3600, now).expect("keys");
    let lifetimes = Lifetimes { max_token_ttl: 3600, agent_token_ttl: 900 };
    let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let policy = Policy::load(&policies, lifetimes).expect("policy");
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("data")).expect("store"));
    let stores = Stores { replay: store.clone(), revocation: store.clone(), audit: store.clone() };
    let settings = Settings {
        issuer: issuer.clone().into(),
        max_depth: 5,
        max_token_bytes: 16 * 1024,
        max_body_bytes: 64 * 1024,
        lifetimes,
        admin_token_sha256: None,
        dpop_nonce: false,
        clock_leeway_seconds: 30,
    };
    let clock = Arc::new(FixedClock::new(now));
    let broker = Arc::new(Broker::new(settings, keys, policy, stores, clock.clone()));
    let router = baton::http::router(broker.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let root = token(&broker, "orchestrator", &[("grant_type", "client_credentials"), ("audience", "planner")]).await;
    let hop1 = token(
        &broker,
        "planner",
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", &root),
            ("subject_token_type", ACCESS_TOKEN),
            ("audience", "booker"),
        ],
    )
    .await;
    Fixture { issuer, broker, store, clock, root, hop1, _dir: dir }
}

fn costs(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let fixture = runtime.block_on(fixture());
    let keys = fixture.broker.keys();
    let kid = keys.signing().kid().to_owned();
    let key = keys.verifying(&kid).expect("key");
    let rules = baton::token::Validation {
        issuer: fixture.issuer.clone().into(),
        max_token_bytes: 16 * 1024,
        max_depth: 5,
        algorithms: vec![Algorithm::Es256],
        leeway: 0,
        audience: baton::token::AudienceRule::Any,
    };
    let hop1 = fixture.hop1.clone();
    let claims: Claims = baton::token::insecure_peek(&hop1).expect("peek").claims;

    let mut group = c.benchmark_group("token");
    // The baseline: ring's ES256 verification of the token's signature alone.
    let (signing_input, signature) = hop1.rsplit_once('.').expect("compact JWS");
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature).expect("base64url");
    group.bench_function(RAW_VERIFY.0, |b| b.iter(|| assert!(key.verify(signing_input.as_bytes(), &signature))));
    // A bare map of the key remembers nothing: every check, every time. The
    // broker's key set remembers the token after its first verification.
    let bare_keys =
        std::collections::BTreeMap::from([(kid.clone(), VerifyingKey::from_jwk(key.public_jwk()).expect("key"))]);
    group.bench_function(BATON_VERIFY.0, |b| {
        b.iter(|| baton::token::verify(&hop1, &bare_keys, &rules, fixture.clock.as_ref()).expect("verifies"))
    });
    group.bench_function(BATON_VERIFY_AGAIN.0, |b| {
        b.iter(|| baton::token::verify(&hop1, keys.as_ref(), &rules, fixture.clock.as_ref()).expect("verifies"))
    });
    let verifier = baton::verifier::Verifier::builder(&fixture.issuer)
        .audience("booker")
        .clock(fixture.clock.clone())
        .revocation(fixture.store.clone())
        .build()
        .expect("verifier");
    group.bench_function(VERIFIER.0, |b| b.iter(|| runtime.block_on(verifier.verify(&hop1)).expect("verifies")));
    group.bench_function(CHECK_EMBEDDED.0, |b| {
        let lineage = Lineage::of(&claims);
        b.iter(|| runtime.block_on(fixture.store.check(&lineage)).expect("checks"))
    });
    // The same check on Redis: one MGET over loopback, against a server this
    // benchmark starts (skipped, and said so, where redis-server is absent).
    match RedisForBench::start() {
        Some(redis) => {
            let store = runtime
                .block_on(baton::store::redis::RedisStore::connect(&redis.url(), "bench:"))
                .expect("redis store");
            let lineage = Lineage::of(&claims);
            group
                .bench_function(CHECK_REDIS.0, |b| b.iter(|| runtime.block_on(store.check(&lineage)).expect("checks")));
        }
        None => eprintln!("redis-server not found: the Redis revocation check is not measured"),
    }
    group.bench_function(RAW_SIGN.0, |b| b.iter(|| keys.signing().sign(signing_input.as_bytes()).expect("signs")));
    let derived = baton::chain::danger::derived_unchecked(claims.clone());
    group.bench_function(MINT.0, |b| b.iter(|| derived.sign(keys.signing()).expect("mints")));
    // The booker's hop of the walk: the asked scope, out of the parent's,
    // decided against every rule of the example folder.
    let policy = fixture.broker.policy();
    let asked = ScopeSet::parse("flights.read").expect("scope");
    let ask = Ask {
        action: Action::Exchange,
        agent: &AgentId::new("booker"),
        subject: &claims.sub,
        target: Some(Audience::new("https://api.airline.example")),
        requested: Some(&asked),
        parent_scopes: Some(&claims.scope),
        depth: claims.delegation.depth + 1,
        chain: claims.chain(),
        expires_no_later_than: Some(claims.exp),
        dpop_bound: false,
        chain_dpop_bound: false,
        now: fixture.clock.now(),
    };
    // A subject of its own each time: a request the rules never decided.
    let mut people = 0_u64;
    group.bench_function(POLICY.0, |b| {
        b.iter_batched(
            || {
                people += 1;
                baton::ids::Subject::of_agent(&AgentId::new(format!("person-{people}")))
            },
            |subject| policy.decide(&Ask { subject: &subject, ..ask.clone() }).expect("evaluates").expect("granted"),
            criterion::BatchSize::SmallInput,
        )
    });
    group.bench_function(POLICY_AGAIN.0, |b| b.iter(|| policy.decide(&ask).expect("evaluates").expect("granted")));
    group.bench_function(EXCHANGE_IN_PROCESS.0, |b| {
        b.iter(|| {
            runtime.block_on(token(
                &fixture.broker,
                "booker",
                &[
                    ("grant_type", EXCHANGE),
                    ("subject_token", &fixture.hop1),
                    ("subject_token_type", ACCESS_TOKEN),
                    ("resource", "https://api.airline.example"),
                    // flights.book would wait for a person's approval.
                    ("scope", "flights.read"),
                ],
            ))
        })
    });
    group.finish();
    drop(fixture.root);
}

/// A throwaway redis-server on a free loopback port, without persistence.
struct RedisForBench {
    child: std::process::Child,
    port: u16,
}

impl RedisForBench {
    fn start() -> Option<RedisForBench> {
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .ok()?;
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(RedisForBench { child, port });
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        None
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisForBench {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    costs(&mut criterion);
    criterion.final_summary();
    // Only a measuring run (`cargo bench`) has figures to compare; a listing
    // (`--list`, as test runners ask) or a test run prints nothing more.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|arg| arg == "--bench") && !args.iter().any(|arg| arg == "--list") {
        print_ratios();
    }
}

/// Each measurement's mean over its baseline's, read back from what
/// criterion wrote (`target/criterion/token/<id>/new/estimates.json`); a
/// measurement this run filtered out is left out.
fn print_ratios() {
    // Where criterion writes: CRITERION_HOME, else the target folder's `criterion`.
    let root = match (std::env::var_os("CRITERION_HOME"), std::env::var_os("CARGO_TARGET_DIR")) {
        (Some(home), _) => std::path::PathBuf::from(home),
        (None, Some(target)) => std::path::PathBuf::from(target).join("criterion"),
        (None, None) => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("criterion"),
    };
    let mean_ns = |measured: &Measured| -> Option<f64> {
        let path = root.join(GROUP).join(measured.0).join("new").join("estimates.json");
        let estimates: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        estimates["mean"]["point_estimate"].as_f64()
    };
    println!("\n| measurement | mean | ratio to its baseline |");
    println!("|---|--:|---|");
    for baseline in [&RAW_VERIFY, &RAW_SIGN] {
        if let Some(mean) = mean_ns(baseline) {
            println!("| {} | {:.1} µs | — |", baseline.1, mean / 1000.0);
        }
    }
    for (measured, baseline) in RATIOS {
        if let (Some(mean), Some(base)) = (mean_ns(measured), mean_ns(baseline)) {
            println!(
                "| {} | {:.1} µs | {:.2}× {} ({:.0}% of its rate) |",
                measured.1,
                mean / 1000.0,
                mean / base,
                baseline.0,
                100.0 * base / mean
            );
        }
    }
}
