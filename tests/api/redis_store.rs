//! The Redis store against the contract, an outage, pub/sub and two nodes,
//! on a real `redis-server`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton::claims::TokenId;
use baton::clock::{Clock, SystemClock, UnixMicros, UnixTime};
use baton::store::redis::RedisStore;
use baton::store::redis_target::{RedisTarget, RedisTls, RedisUrl};
use baton::store::{
    AuditDecision, AuditEvent, AuditStore, Blocking, Cutoff, Lineage, Principal, ReplayStore, Retention,
    RevocationStore, StateStore, Status, Use,
};
use serde_json::json;

use crate::redis_server::{RedisServer, SilentLink};

/// How long a call may take while Redis is down: a bound on hanging, not a
/// performance target.
const HANG_BOUND: Duration = Duration::from_secs(5);

pub fn lineage(jti: &str, issued_at: UnixTime, agent: &str) -> Lineage {
    Lineage::at(
        vec![TokenId(jti.to_owned())],
        UnixMicros::start_of(issued_at),
        [Principal::Subject("someone".into()), Principal::Agent(agent.into())],
    )
}

/// A deprovisioning in whole seconds, as the tests write them.
fn cutoff(at: UnixTime, until: UnixTime) -> Cutoff {
    Cutoff { at: UnixMicros::end_of(at), until, block: Blocking::Keep }
}

fn event(time: UnixTime) -> AuditEvent {
    AuditEvent {
        time,
        decision: AuditDecision::Refused,
        reason: Some("outage".into()),
        action: "client_credentials".into(),
        subject: None,
        agent: Some("a".into()),
        chain: vec![],
        target: None,
        scopes_asked: None,
        scopes_granted: None,
        jti: None,
        parent_jti: None,
        expires_at: None,
        iat_micros: None,
        dpop_jkt: None,
        rules: vec![],
        claimed_client: None,
        client_address: None,
        by: None,
        approval: None,
        refusals: Vec::new(),
    }
}

/// Awaits `call`, failing the test if it hangs past [`HANG_BOUND`].
pub async fn bounded<T>(what: &str, call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(HANG_BOUND, call).await.unwrap_or_else(|_| panic!("{what} hung while Redis was down"))
}

/// Runs the store contract on stores connected to `url` (with `tls`) under
/// `prefix`.
pub async fn keeps_the_contract(url: String, tls: RedisTls, prefix: &'static str, tag: &str) {
    crate::store_contract::run(
        move || {
            let target = RedisTarget::new(&RedisUrl::new(url.as_str()), &tls).unwrap();
            async move {
                Arc::new(RedisStore::connect_to(target, prefix, Retention::default()).await.unwrap())
                    as Arc<dyn StateStore>
            }
        },
        tag,
    )
    .await;
}

#[tokio::test]
async fn redis_store_keeps_the_contract() {
    let server = RedisServer::start();
    keeps_the_contract(server.url(), RedisTls::default(), "baton:", "redis").await;
}

#[tokio::test]
async fn an_outage_fails_calls_and_service_resumes() {
    let mut server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), "baton:").await.unwrap();
    let now = SystemClock.now();
    store.revoke(&TokenId("before-outage".into()), now.plus(600)).await.unwrap();
    let revoked = lineage("before-outage", now, "a");
    assert_eq!(store.check(&revoked).await.unwrap(), Status::Revoked);

    server.kill();
    assert!(bounded("check", store.check(&revoked)).await.is_err(), "check fails closed");
    assert!(bounded("revoke", store.revoke(&TokenId("during".into()), now.plus(600))).await.is_err());
    assert!(bounded("deprovision", store.deprovision(&Principal::Agent("a".into()), &cutoff(now, now.plus(600))))
        .await
        .is_err());
    assert!(bounded("use_once", store.use_once("during", now.plus(60), now)).await.is_err());
    assert!(bounded("record", store.record(event(now))).await.is_err());
    assert!(bounded("query", store.query(&Default::default())).await.is_err());
    assert!(bounded("ping", store.ping()).await.is_err());
    // Still failing, not hanging, on later calls.
    assert!(bounded("ping", store.ping()).await.is_err());

    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.ping().await.is_err() {
        assert!(Instant::now() < deadline, "the store did not reconnect within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(store.check(&revoked).await.unwrap(), Status::Revoked, "the revocation survived a SIGKILL");
    assert_eq!(store.use_once("after-outage", now.plus(60), now).await.unwrap(), Use::First);
    store.record(event(now)).await.unwrap();
}

#[tokio::test]
async fn a_connection_that_goes_silent_is_replaced() {
    let server = RedisServer::start();
    let link = SilentLink::to(&server).await;
    let store = RedisStore::connect(&link.url(), "baton:").await.unwrap();
    let now = SystemClock.now();
    store.revoke(&TokenId("before-silence".into()), now.plus(600)).await.unwrap();
    let revoked = lineage("before-silence", now, "a");

    // No reset ever comes: only timeouts tell the store the path is gone.
    link.silence();
    assert!(bounded("check", store.check(&revoked)).await.is_err(), "check fails closed");
    assert!(bounded("use_once", store.use_once("silent", now.plus(60), now)).await.is_err());
    assert!(bounded("ping", store.ping()).await.is_err());

    // The old connection stays stuck for good; the store must leave it behind.
    link.heal();
    let deadline = Instant::now() + Duration::from_secs(10);
    while bounded("ping", store.ping()).await.is_err() {
        assert!(Instant::now() < deadline, "the store did not reconnect within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(store.check(&revoked).await.unwrap(), Status::Revoked);
}

#[tokio::test]
async fn connect_fails_clearly_when_it_cannot_serve() {
    let mut server = RedisServer::start();
    let url = server.url();
    server.kill();
    let down = bounded("connect", RedisStore::connect(&url, "baton:")).await.unwrap_err();
    assert!(down.detail().contains("cannot reach Redis at 127.0.0.1:"), "{down}");

    let tls = bounded("connect", RedisStore::connect(&url.replace("redis://", "rediss://:secret@"), "baton:"))
        .await
        .unwrap_err();
    assert!(tls.detail().contains("cannot reach Redis"), "{tls}");
    assert!(!tls.detail().contains("secret"), "the URL's password is not echoed");
    let other = RedisStore::connect("http://:secret@127.0.0.1:6380/", "baton:").await.unwrap_err();
    assert!(!other.detail().contains("secret"), "the URL's password is not echoed");
}

#[tokio::test]
async fn revocations_are_published() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), "pubsub:").await.unwrap();
    assert_eq!(store.revocation_channel(), "pubsub:revocations");

    // A plain subscriber on its own (blocking) connection, as any node or
    // verifier could run.
    let client = redis::Client::open(server.url()).unwrap();
    let (ready, subscribed) = tokio::sync::oneshot::channel();
    let listener = tokio::task::spawn_blocking(move || {
        let mut connection = client.get_connection().unwrap();
        let mut pubsub = connection.as_pubsub();
        pubsub.set_read_timeout(Some(HANG_BOUND)).unwrap();
        pubsub.subscribe("pubsub:revocations").unwrap();
        ready.send(()).unwrap();
        (0..2)
            .map(|_| {
                let message = pubsub.get_message().unwrap();
                assert_eq!(message.get_channel_name(), "pubsub:revocations");
                serde_json::from_str::<serde_json::Value>(&message.get_payload::<String>().unwrap()).unwrap()
            })
            .collect::<Vec<_>>()
    });
    subscribed.await.unwrap();

    store.revoke(&TokenId("published".into()), UnixTime(2_000_000_000)).await.unwrap();
    let agent = Principal::Agent("gone".into());
    store.deprovision(&agent, &cutoff(UnixTime(1_900_000_000), UnixTime(2_000_000_600))).await.unwrap();

    let messages = listener.await.unwrap();
    assert_eq!(messages[0], json!({"kind": "token", "jti": "published", "until": 2_000_000_000}));
    assert_eq!(
        messages[1],
        json!({
            "kind": "principal",
            "principal": {"kind": "agent", "id": "gone"},
            "at": 1_900_000_000,
            "at_micros": 1_900_000_000_999_999_i64,
            "until": 2_000_000_600
        })
    );
}

#[tokio::test]
async fn two_nodes_share_revocations_and_replay() {
    let server = RedisServer::start();
    let one = RedisStore::connect(&server.url(), "baton:").await.unwrap();
    let two = RedisStore::connect(&server.url(), "baton:").await.unwrap();
    let now = SystemClock.now();

    let token = lineage("shared", now, "agent-shared");
    assert_eq!(two.check(&token).await.unwrap(), Status::Active);
    one.revoke(&TokenId("shared".into()), now.plus(600)).await.unwrap();
    assert_eq!(two.check(&token).await.unwrap(), Status::Revoked, "seen by the other node at once");

    let other = lineage("other", now, "agent-gone");
    two.deprovision(&Principal::Agent("agent-gone".into()), &cutoff(now, now.plus(600))).await.unwrap();
    assert_eq!(one.check(&other).await.unwrap(), Status::Deprovisioned);

    assert_eq!(one.use_once("shared-id", now.plus(60), now).await.unwrap(), Use::First);
    assert_eq!(two.use_once("shared-id", now.plus(60), now).await.unwrap(), Use::Replayed);

    // A different prefix is a different deployment.
    let elsewhere = RedisStore::connect(&server.url(), "elsewhere:").await.unwrap();
    assert_eq!(elsewhere.check(&token).await.unwrap(), Status::Active);
    assert_eq!(elsewhere.use_once("shared-id", now.plus(60), now).await.unwrap(), Use::First);
}

#[tokio::test]
async fn redis_store_keeps_the_audit_retention() {
    let server = RedisServer::start();
    let url = server.url();
    crate::store_contract::retention(
        move |retention| {
            let url = url.clone();
            async move {
                Arc::new(RedisStore::connect_with_retention(&url, "baton:", retention).await.unwrap())
                    as Arc<dyn StateStore>
            }
        },
        // The stream is trimmed by Redis's own clock: let the events age.
        tokio::time::sleep(Duration::from_millis(2_100)),
        "redis",
    )
    .await;
}
