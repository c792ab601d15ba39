//! The revocation mirror (DESIGN.md §6, §7) on a real `redis-server`: the
//! load, notices, an outage and a silent connection failing closed, a
//! resynchronisation, a verifier that checks from memory, and what a check
//! costs.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request};
use axum::routing::get;
use axum::Router;
use baton::claims::TokenId;
use baton::clock::{Clock, SystemClock, UnixMicros, UnixTime};
use baton::context::Stores;
use baton::store::mirror::RevocationMirror;
use baton::store::redis::RedisStore;
use baton::store::{Blocking, Cutoff, Lineage, Principal, RevocationStore, Status};
use baton::verifier::{Caller, Verifier, VerifierLayer};
use serde_json::json;
use tower::ServiceExt;

use crate::harness::*;
use crate::redis_server::{RedisServer, SilentLink};

const PREFIX: &str = "mirror:";
/// The staleness bound of most tests: short, so that outages show quickly.
const STALENESS: Duration = Duration::from_millis(600);
/// The bound of tests about something else: wide, so that a loaded machine
/// cannot make them fail closed.
const WIDE: Duration = Duration::from_secs(10);
/// How long a notice may take to reach the mirror: a bound on waiting, not a
/// performance target.
const PROPAGATION: Duration = Duration::from_secs(2);
/// How long the mirror may take to notice an outage, or to come back after
/// one (reconnection backoff included).
const RECOVERY: Duration = Duration::from_secs(10);

fn lineage(jti: &str, issued_at: UnixTime, agent: &str) -> Lineage {
    Lineage::at(
        vec![TokenId(jti.to_owned()), TokenId(format!("{jti}-parent"))],
        UnixMicros::start_of(issued_at),
        [Principal::Subject("someone".into()), Principal::Agent(agent.into())],
    )
}

/// A deprovisioning in whole seconds, as the tests write them.
fn cutoff(at: UnixTime, until: UnixTime) -> Cutoff {
    Cutoff { at: UnixMicros::end_of(at), until, block: Blocking::Keep }
}

/// Polls `probe` until it holds, failing the test after `within`.
async fn eventually<F, Fut>(what: &str, within: Duration, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !probe().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn status(mirror: &RevocationMirror, lineage: &Lineage) -> Option<Status> {
    mirror.check(lineage).await.ok()
}

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url()).unwrap().get_multiplexed_async_connection().await.unwrap()
}

async fn subscribers(connection: &mut redis::aio::MultiplexedConnection) -> i64 {
    let counts: Vec<(String, i64)> =
        redis::cmd("PUBSUB").arg("NUMSUB").arg(format!("{PREFIX}revocations")).query_async(connection).await.unwrap();
    counts[0].1
}

#[tokio::test]
async fn revocations_before_and_after_connecting_are_seen() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), PREFIX).await.unwrap();
    let now = SystemClock.now();
    store.revoke(&TokenId("before".into()), now.plus(600)).await.unwrap();
    store.deprovision(&Principal::Agent("gone-before".into()), &cutoff(now, now.plus(600))).await.unwrap();

    let mirror = RevocationMirror::connect(&server.url(), PREFIX, WIDE).await.unwrap();
    mirror.ping().await.unwrap();
    // The load.
    assert_eq!(mirror.check(&lineage("before", now, "a")).await.unwrap(), Status::Revoked);
    assert_eq!(mirror.check(&lineage("x", now, "gone-before")).await.unwrap(), Status::Deprovisioned);
    assert_eq!(mirror.check(&lineage("x", now.plus(1), "gone-before")).await.unwrap(), Status::Active, "issued after");

    // Notices: an ancestor revoked, an agent deprovisioned.
    let other_prefix = RedisStore::connect(&server.url(), "elsewhere:").await.unwrap();
    other_prefix.revoke(&TokenId("foreign".into()), now.plus(600)).await.unwrap();
    store.revoke(&TokenId("after-parent".into()), now.plus(600)).await.unwrap();
    let after = lineage("after", now, "a");
    eventually("the revocation notice", PROPAGATION, || async {
        status(&mirror, &after).await == Some(Status::Revoked)
    })
    .await;
    store.deprovision(&Principal::Agent("gone-after".into()), &cutoff(now, now.plus(600))).await.unwrap();
    let gone = lineage("y", now, "gone-after");
    eventually("the deprovisioning notice", PROPAGATION, || async {
        status(&mirror, &gone).await == Some(Status::Deprovisioned)
    })
    .await;
    // A later deprovisioning at an earlier `at` moves nothing back.
    store.deprovision(&Principal::Agent("gone-after".into()), &cutoff(now.plus(-100), now.plus(600))).await.unwrap();
    store.revoke(&TokenId("marker".into()), now.plus(600)).await.unwrap();
    let marker = lineage("marker", now, "a");
    eventually("the marker", PROPAGATION, || async { status(&mirror, &marker).await == Some(Status::Revoked) }).await;
    assert_eq!(mirror.check(&gone).await.unwrap(), Status::Deprovisioned);

    assert_eq!(mirror.check(&lineage("unrelated", now, "a")).await.unwrap(), Status::Active);
    assert_eq!(mirror.check(&lineage("foreign", now, "a")).await.unwrap(), Status::Active, "another prefix");
    assert_eq!(mirror.check(&Lineage { jtis: vec![], principals: vec![] }).await.unwrap(), Status::Active);

    // Read-only.
    assert_eq!(mirror.revoke(&TokenId("z".into()), now).await.unwrap_err().detail(), "read-only mirror");
    assert!(mirror.deprovision(&Principal::Subject("s".into()), &cutoff(now, now)).await.is_err());

    // Dropping the mirror ends its subscription.
    let mut connection = raw(&server).await;
    assert_eq!(subscribers(&mut connection).await, 1);
    drop(mirror);
    let deadline = Instant::now() + PROPAGATION;
    while subscribers(&mut connection).await != 0 {
        assert!(Instant::now() < deadline, "the subscription outlived the mirror");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn other_notices_are_ignored_and_an_unreadable_one_reloads() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), PREFIX).await.unwrap();
    let mirror = RevocationMirror::connect(&server.url(), PREFIX, WIDE).await.unwrap();
    let now = SystemClock.now();
    let mut connection = raw(&server).await;
    let channel = store.revocation_channel();

    // Another tool's heartbeat on the channel changes nothing.
    let _: i64 = redis::cmd("PUBLISH")
        .arg(&channel)
        .arg(json!({"kind": "heartbeat", "node": "n1", "at": 1}).to_string())
        .query_async(&mut connection)
        .await
        .unwrap();
    store.revoke(&TokenId("seen".into()), now.plus(600)).await.unwrap();
    let seen = lineage("seen", now, "a");
    eventually("a notice after a heartbeat", PROPAGATION, || async {
        status(&mirror, &seen).await == Some(Status::Revoked)
    })
    .await;

    // A key written without a notice is picked up by the reload that an
    // unreadable notice causes.
    let _: () = redis::cmd("SET")
        .arg(format!("{PREFIX}revoked:unannounced"))
        .arg(1)
        .arg("EX")
        .arg(600)
        .query_async(&mut connection)
        .await
        .unwrap();
    let _: i64 =
        redis::cmd("PUBLISH").arg(&channel).arg(r#"{"kind":"token"}"#).query_async(&mut connection).await.unwrap();
    let unannounced = lineage("unannounced", now, "a");
    eventually("the reload", RECOVERY, || async { status(&mirror, &unannounced).await == Some(Status::Revoked) }).await;
    assert_eq!(mirror.check(&seen).await.unwrap(), Status::Revoked, "nothing forgotten");
}

#[tokio::test]
async fn an_outage_fails_closed_and_a_restart_resumes() {
    let mut server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), PREFIX).await.unwrap();
    let now = SystemClock.now();
    store.revoke(&TokenId("before-outage".into()), now.plus(600)).await.unwrap();
    let mirror = RevocationMirror::connect(&server.url(), PREFIX, STALENESS).await.unwrap();
    let before = lineage("before-outage", now, "a");
    // Positive answers are awaited, not asserted at once: on a loaded machine
    // a 600 ms bound may rightly fail closed for a moment.
    eventually("the load", RECOVERY, || async { status(&mirror, &before).await == Some(Status::Revoked) }).await;
    // Fresh again well past the bound: only heartbeats can prove it alive.
    tokio::time::sleep(STALENESS * 3).await;
    let active = lineage("other", now, "a");
    eventually("fresh after the bound", RECOVERY, || async { status(&mirror, &active).await == Some(Status::Active) })
        .await;

    server.kill();
    eventually("failing closed", STALENESS + RECOVERY, || async { mirror.check(&active).await.is_err() }).await;
    let error = mirror.check(&before).await.unwrap_err();
    assert!(mirror.ping().await.is_err(), "{error}");

    server.restart();
    let store = RedisStore::connect(&server.url(), PREFIX).await.unwrap();
    store.revoke(&TokenId("after-restart".into()), now.plus(600)).await.unwrap();
    let after = lineage("after-restart", now, "a");
    eventually("fresh again", RECOVERY, || async { status(&mirror, &after).await == Some(Status::Revoked) }).await;
    eventually("the old revocation", RECOVERY, || async { status(&mirror, &before).await == Some(Status::Revoked) })
        .await;
    eventually("the rest active", RECOVERY, || async { status(&mirror, &active).await == Some(Status::Active) }).await;
    eventually("ping", RECOVERY, || async { mirror.ping().await.is_ok() }).await;
}

#[tokio::test]
async fn a_silent_subscription_fails_closed_and_is_replaced() {
    let server = RedisServer::start();
    let link = SilentLink::to(&server).await;
    let store = RedisStore::connect(&server.url(), PREFIX).await.unwrap();
    let mirror = RevocationMirror::connect(&link.url(), PREFIX, STALENESS).await.unwrap();
    let now = SystemClock.now();

    // No reset ever comes: only the missing heartbeat answers tell.
    link.silence();
    let active = lineage("other", now, "a");
    eventually("failing closed", STALENESS + RECOVERY, || async { mirror.check(&active).await.is_err() }).await;
    assert!(mirror.ping().await.is_err());
    // Made while the mirror hears nothing: the reload must find it.
    store.revoke(&TokenId("during-silence".into()), now.plus(600)).await.unwrap();

    link.heal();
    let during = lineage("during-silence", now, "a");
    eventually("fresh again", RECOVERY, || async { status(&mirror, &during).await == Some(Status::Revoked) }).await;
    eventually("the rest active", RECOVERY, || async { status(&mirror, &active).await == Some(Status::Active) }).await;
}

/// An API behind the verifier.
fn api(verifier: Verifier) -> Router {
    Router::new()
        .route("/bookings", get(|caller: Caller| async move { caller.subject().to_string() }))
        .layer(VerifierLayer::new(Arc::new(verifier)))
}

async fn call(api: &Router, token: &str) -> u16 {
    let request = Request::get("/bookings").header(header::AUTHORIZATION, format!("Bearer {token}"));
    api.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_verifier_checks_revocation_from_memory() {
    let mut server = RedisServer::start();
    let redis = Arc::new(RedisStore::connect(&server.url(), "baton:").await.unwrap());
    let stores = Stores { replay: redis.clone(), revocation: redis.clone(), audit: redis.clone() };
    let (harness, issuer) = Harness::served(Options { stores: Some(stores), ..Options::default() }).await;
    let mirror =
        RevocationMirror::connect_with_clock(&server.url(), "baton:", WIDE, harness.clock.clone()).await.unwrap();
    let verifier =
        Verifier::builder(&issuer).audience(AIRLINE).clock(harness.clock.clone()).revocation(Arc::new(mirror)).build();
    let api = api(verifier.unwrap());
    let [root, _, hop2] = harness.walk().await;
    assert_eq!(call(&api, &hop2).await, 200);

    // The broker revokes the root: the API refuses its descendant.
    let revoked = harness
        .send(
            Request::post("/admin/revoke")
                .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(json!({"jti": claims_of(&root).jti}).to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    eventually("the API to refuse", PROPAGATION, || async { call(&api, &hop2).await == 401 }).await;

    // A fresh chain is fine, until the copy cannot be trusted: then 503.
    let [_, _, fresh] = harness.walk().await;
    assert_eq!(call(&api, &fresh).await, 200);
    server.kill();
    eventually("503 once the subscription is lost", RECOVERY, || async { call(&api, &fresh).await == 503 }).await;
}

/// Prints what a check costs, from memory and over loopback; asserts nothing
/// about time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_check_costs() {
    const CHECKS: u32 = 100_000;
    const ROUND_TRIPS: u32 = 1_000;
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), PREFIX).await.unwrap();
    let now = SystemClock.now();
    for index in 0..1_000 {
        store.revoke(&TokenId(format!("revoked-{index}")), now.plus(600)).await.unwrap();
    }
    for index in 0..100 {
        store
            .deprovision(&Principal::Agent(format!("agent-{index}").into()), &cutoff(now, now.plus(600)))
            .await
            .unwrap();
    }
    // A generous bound: a loop that never yields must not outlast it.
    let mirror = RevocationMirror::connect(&server.url(), PREFIX, Duration::from_secs(30)).await.unwrap();
    // A three-hop token: its id and two ancestors, a subject and three agents.
    let lineage = Lineage::at(
        vec![TokenId("t3".into()), TokenId("t2".into()), TokenId("t1".into())],
        UnixMicros::start_of(now.plus(1)),
        [
            Principal::Subject("orchestrator".into()),
            Principal::Agent("planner".into()),
            Principal::Agent("booker".into()),
            Principal::Agent("agent-7".into()),
        ],
    );
    assert_eq!(mirror.check(&lineage).await.unwrap(), Status::Active);

    let started = Instant::now();
    for _ in 0..CHECKS {
        assert_eq!(mirror.check(&lineage).await.unwrap(), Status::Active);
    }
    let from_memory = started.elapsed() / CHECKS;
    let started = Instant::now();
    for _ in 0..ROUND_TRIPS {
        assert_eq!(store.check(&lineage).await.unwrap(), Status::Active);
    }
    let over_loopback = started.elapsed() / ROUND_TRIPS;
    eprintln!(
        "revocation check of a three-hop lineage: {from_memory:?} from the mirror ({CHECKS} checks), \
         {over_loopback:?} from Redis over loopback ({ROUND_TRIPS} checks)"
    );
}
