//! What one token costs: raw signature verification as the baseline, then
//! Baton's verification, the verifier with its revocation check, the
//! revocation check alone, and one whole exchange in process.
//!
//! `cargo bench --bench core`

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]

use std::sync::Arc;

use base64::Engine;
use baton::claims::Claims;
use baton::clock::{Clock, FixedClock, SystemClock};
use baton::grant::{Broker, Settings, Stores, TokenParams, TokenRequest};
use baton::keys::{self, Algorithm, KeyLookup, KeySet};
use baton::policy::{Lifetimes, Policy};
use baton::store::embedded::EmbeddedStore;
use baton::store::{Lineage, RevocationStore};
use criterion::{criterion_group, criterion_main, Criterion};

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
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
        issuer: issuer.clone(),
        max_depth: 5,
        max_token_bytes: 16 * 1024,
        max_body_bytes: 64 * 1024,
        lifetimes,
        admin_token_sha256: None,
        dpop_nonce: false,
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
        issuer: fixture.issuer.clone(),
        max_token_bytes: 16 * 1024,
        max_depth: 5,
        algorithms: vec![Algorithm::Es256],
        leeway: 0,
    };
    let hop1 = fixture.hop1.clone();
    let claims: Claims = baton::token::peek(&hop1).expect("peek").claims;

    let mut group = c.benchmark_group("token");
    // The baseline: ring's ES256 verification of the token's signature alone.
    let (signing_input, signature) = hop1.rsplit_once('.').expect("compact JWS");
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature).expect("base64url");
    group.bench_function("raw ES256 verify (baseline)", |b| {
        b.iter(|| assert!(key.verify(signing_input.as_bytes(), &signature)))
    });
    group.bench_function("baton verify (all checks, no revocation)", |b| {
        b.iter(|| baton::token::verify(&hop1, keys.as_ref(), &rules, fixture.clock.as_ref()).expect("verifies"))
    });
    let verifier = baton::verifier::Verifier::builder(&fixture.issuer)
        .audience("booker")
        .clock(fixture.clock.clone())
        .revocation(fixture.store.clone())
        .build()
        .expect("verifier");
    group.bench_function("verifier (all checks and the revocation check)", |b| {
        b.iter(|| runtime.block_on(verifier.verify(&hop1)).expect("verifies"))
    });
    group.bench_function("revocation check (embedded store)", |b| {
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
            group.bench_function("revocation check (Redis, one round trip)", |b| {
                b.iter(|| runtime.block_on(store.check(&lineage)).expect("checks"))
            });
        }
        None => eprintln!("redis-server not found: the Redis revocation check is not measured"),
    }
    group.bench_function("mint (sign a child)", |b| {
        b.iter(|| baton::token::mint(&claims, keys.signing()).expect("mints"))
    });
    group.bench_function("exchange in process (auth, policy, revocation, mint, durable audit)", |b| {
        b.iter(|| {
            runtime.block_on(token(
                &fixture.broker,
                "booker",
                &[
                    ("grant_type", EXCHANGE),
                    ("subject_token", &fixture.hop1),
                    ("subject_token_type", ACCESS_TOKEN),
                    ("resource", "https://api.airline.example"),
                    // flights.book would wait for a person's approval (issue 7).
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

criterion_group!(benches, costs);
criterion_main!(benches);
