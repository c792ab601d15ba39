//! The Redis store against Redis as production runs it, all real servers
//! on loopback (`crate::redis_setups`): TLS with a client certificate and an
//! ACL user, a Sentinel failover, and a Redis Cluster.

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton::claims::TokenId;
use baton::clock::{Clock, SystemClock};
use baton::store::mirror::RevocationMirror;
use baton::store::redis::{RedisStore, MASTER_RECHECK};
use baton::store::redis_target::{RedisTarget, RedisTls, RedisUrl};
use baton::store::{Retention, RevocationStore, Status, StoreError};
use futures_util::StreamExt;

use crate::redis_server::RedisServer;
use crate::redis_setups::{
    ask_sentinel, query, query_as_user, wait_until, RedisCluster, SentinelSet, TlsFiles, TlsRedis, MASTER, PASSWORD,
    SENTINEL_PASSWORD, USER,
};
use crate::redis_store::{bounded, keeps_the_contract, lineage};

/// How long a failover may take, from the master's death to a promoted
/// replica serving: 1 s to declare it down, an election, the promotion, on
/// a loaded machine.
const FAILOVER_BOUND: Duration = Duration::from_secs(60);
/// The revocation mirrors' staleness bound: wide, so that a loaded machine
/// cannot make them fail closed while nothing fails.
const MIRROR_STALENESS: Duration = Duration::from_secs(5);

async fn connect(url: &str, tls: &RedisTls, prefix: &str) -> Result<RedisStore, StoreError> {
    let target = RedisTarget::new(&RedisUrl::new(url), tls)?;
    RedisStore::connect_to(target, prefix, Retention::default()).await
}

async fn mirror(url: &str, tls: &RedisTls, prefix: &str) -> RevocationMirror {
    let target = RedisTarget::new(&RedisUrl::new(url), tls).unwrap();
    RevocationMirror::connect_to(target, prefix, MIRROR_STALENESS, Arc::new(SystemClock)).await.unwrap()
}

/// Polls until `mirror` answers `expected` for `jti`'s lineage (it fails
/// closed while it resubscribes), within `within`.
async fn mirror_sees(mirror: &RevocationMirror, jti: &str, expected: Status, within: Duration) {
    let deadline = Instant::now() + within;
    let lineage = lineage(jti, SystemClock.now(), "a");
    while mirror.check(&lineage).await.ok() != Some(expected) {
        assert!(Instant::now() < deadline, "the mirror did not see {jti} as {expected:?} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn redis_store_over_tls_with_a_client_certificate_keeps_the_contract() {
    let files = TlsFiles::generate();
    let redis = TlsRedis::start(&files);
    keeps_the_contract(redis.url(USER, PASSWORD), files.client(), "baton:", "redis-tls").await;
}

#[tokio::test]
async fn tls_refuses_a_wrong_password_a_missing_certificate_and_a_stranger_authority() {
    let files = TlsFiles::generate();
    let redis = TlsRedis::start(&files);
    let store = connect(&redis.url(USER, PASSWORD), &files.client(), "baton:").await.unwrap();
    assert!(!format!("{store:?}").contains(PASSWORD), "the password is not printed");

    let wrong = bounded("connect", connect(&redis.url(USER, "not-it"), &files.client(), "baton:")).await.unwrap_err();
    assert!(matches!(wrong, StoreError::Unavailable(_)), "{wrong}");
    assert!(!wrong.detail().contains("not-it"), "the password is not echoed: {wrong}");

    let anonymous = RedisTls { cert: None, key: None, ..files.client() };
    let refused = bounded("connect", connect(&redis.url(USER, PASSWORD), &anonymous, "baton:")).await;
    assert!(refused.is_err(), "the server asks for a client certificate");

    let stranger = RedisTls { ca: Some(files.path("stranger.pem")), ..files.client() };
    let refused = bounded("connect", connect(&redis.url(USER, PASSWORD), &stranger, "baton:")).await;
    assert!(refused.is_err(), "a server certificate from another authority is refused");

    let plain = format!("redis://{USER}:{PASSWORD}@127.0.0.1:{}/", redis.tls_port);
    assert!(bounded("connect", connect(&plain, &RedisTls::default(), "baton:")).await.is_err(), "no plain text");

    // A verifier's revocation mirror reads and subscribes over TLS too.
    let now = SystemClock.now();
    store.revoke(&TokenId("loaded-over-tls".into()), now.plus(600)).await.unwrap();
    let mirror = mirror(&redis.url(USER, PASSWORD), &files.client(), "baton:").await;
    mirror_sees(&mirror, "loaded-over-tls", Status::Revoked, Duration::from_secs(2)).await;
    store.revoke(&TokenId("pushed-over-tls".into()), now.plus(600)).await.unwrap();
    mirror_sees(&mirror, "pushed-over-tls", Status::Revoked, Duration::from_secs(5)).await;
}

/// Sentinel: the store follows the master through a failover, with one of
/// the three Sentinels down. A revocation
/// acknowledged before the master died (so held by a replica, `WAIT`) is
/// there after the promotion; while no master serves, calls fail (the
/// broker's 503), none hangs; after it, writes are acknowledged again.
#[tokio::test]
async fn redis_store_on_sentinel_keeps_the_contract_and_every_acknowledged_revocation_through_a_failover() {
    let mut set = SentinelSet::start();
    let url = set.url();
    keeps_the_contract(url.clone(), RedisTls::default(), "contract:", "redis-sentinel").await;

    // The first Sentinel listed is down from now on: the others answer, and
    // two of three still elect a leader for the failover.
    set.sentinels[0].0.kill();
    let store = RedisStore::connect(&url, "baton:").await.unwrap();
    let mirror = mirror(&url, &RedisTls::default(), "baton:").await;
    let now = SystemClock.now();
    assert!(store.revoke(&TokenId("before-failover".into()), now.plus(600)).await.unwrap());
    let revoked = lineage("before-failover", now, "a");
    let old_master = set.kill_master();
    let killed = Instant::now();

    let mut refused = 0;
    let promoted = loop {
        match bounded("check", store.check(&revoked)).await {
            Ok(status) => {
                assert_eq!(status, Status::Revoked, "the acknowledged revocation survived the failover");
                break killed.elapsed();
            }
            Err(error) => {
                assert!(matches!(error, StoreError::Unavailable(_)), "{error}");
                refused += 1;
            }
        }
        assert!(killed.elapsed() < FAILOVER_BOUND, "no master served within {FAILOVER_BOUND:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let new_master = set.master_port().unwrap();
    assert_ne!(new_master, old_master, "a replica was promoted");

    // A revocation is acknowledged once the other replica follows the new
    // master. One refused before then may have been applied: the retry says so.
    let during = TokenId("after-failover".into());
    let acknowledged = loop {
        match bounded("revoke", store.revoke(&during, now.plus(600))).await {
            Ok(_) => break killed.elapsed(),
            Err(error) => assert!(matches!(error, StoreError::Unavailable(_)), "{error}"),
        }
        assert!(killed.elapsed() < FAILOVER_BOUND, "no revocation acknowledged within {FAILOVER_BOUND:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(store.check(&lineage("after-failover", now, "a")).await.unwrap(), Status::Revoked);
    assert_eq!(store.check(&lineage("untouched", now, "a")).await.unwrap(), Status::Active);
    // The mirror resubscribed to the promoted master and reloaded.
    mirror_sees(&mirror, "after-failover", Status::Revoked, FAILOVER_BOUND).await;
    mirror_sees(&mirror, "before-failover", Status::Revoked, Duration::from_secs(1)).await;
    eprintln!(
        "failover: {refused} checks refused, the revocation read back {promoted:?} after the kill, \
         writes acknowledged again after {acknowledged:?}"
    );
}

/// Cluster: every key under the hash-tagged prefix lands on one node, so the
/// scripts, transactions and multi-key reads of the contract all work.
#[tokio::test]
async fn redis_store_on_a_cluster_keeps_the_contract_in_one_slot() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let untagged = RedisStore::connect(&url, "baton:").await.unwrap_err();
    assert!(untagged.detail().contains("hash tag"), "{untagged}");
    let wrong = url.replace(PASSWORD, "not-it");
    let refused = bounded("connect", RedisStore::connect(&wrong, "{baton}:")).await.unwrap_err();
    assert!(!refused.detail().contains("not-it"), "the password is not echoed: {refused}");

    keeps_the_contract(url, RedisTls::default(), "{baton}:", "redis-cluster").await;
    let counts = cluster.key_counts();
    assert_eq!(counts.iter().filter(|count| **count > 0).count(), 1, "one node holds every key: {counts:?}");
}

/// Revocations are published with a plain `PUBLISH`, which a cluster carries
/// to every node: a subscriber on any node hears them. A revocation mirror
/// loads from, and subscribes at, the node serving the prefix's slot.
#[tokio::test]
async fn revocations_published_on_a_cluster_reach_every_node() {
    let cluster = RedisCluster::start();
    let store = RedisStore::connect(&cluster.url(), "{baton}:").await.unwrap();
    let now = SystemClock.now();
    store.revoke(&TokenId("before-the-mirror".into()), now.plus(600)).await.unwrap();
    let mirror = mirror(&cluster.url(), &RedisTls::default(), "{baton}:").await;
    mirror_sees(&mirror, "before-the-mirror", Status::Revoked, Duration::from_secs(2)).await;
    let channel = store.revocation_channel();
    let mut listeners = Vec::new();
    for node in cluster.node_urls() {
        let client = redis::Client::open(node).unwrap();
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        pubsub.subscribe(&channel).await.unwrap();
        listeners.push(pubsub);
    }
    store.revoke(&TokenId("published-on-a-cluster".into()), now.plus(600)).await.unwrap();
    for mut pubsub in listeners {
        let message = tokio::time::timeout(Duration::from_secs(10), pubsub.on_message().next())
            .await
            .expect("the notice reaches every node")
            .unwrap();
        let payload: String = message.get_payload().unwrap();
        assert!(payload.contains("published-on-a-cluster"), "{payload}");
    }
    mirror_sees(&mirror, "published-on-a-cluster", Status::Revoked, Duration::from_secs(5)).await;
}

/// Sentinel over TLS: the store asks the Sentinels and reaches the master
/// over TLS with its client certificate, and follows a failover there too.
#[tokio::test]
async fn redis_store_follows_a_sentinel_failover_over_tls() {
    let files = TlsFiles::generate();
    let mut set = SentinelSet::start_with(Some(&files));
    let url = set.url();
    assert!(url.starts_with("rediss+sentinel://"));
    let store = connect(&url, &files.client(), "baton:").await.unwrap();
    let now = SystemClock.now();
    assert!(store.revoke(&TokenId("before-failover".into()), now.plus(600)).await.unwrap());
    let anonymous = RedisTls { cert: None, key: None, ..files.client() };
    assert!(bounded("connect", connect(&url, &anonymous, "baton:")).await.is_err(), "no client certificate");
    let (without, _) = url.split_once('?').unwrap();
    let refused = bounded("connect", connect(without, &files.client(), "baton:")).await.unwrap_err();
    assert!(matches!(refused, StoreError::Unavailable(_)), "the Sentinels want their password: {refused}");
    assert!(!refused.detail().contains(SENTINEL_PASSWORD) && !format!("{store:?}").contains(SENTINEL_PASSWORD));

    set.kill_master();
    let killed = Instant::now();
    let revoked = lineage("before-failover", now, "a");
    loop {
        if let Ok(status) = bounded("check", store.check(&revoked)).await {
            assert_eq!(status, Status::Revoked);
            break;
        }
        assert!(killed.elapsed() < FAILOVER_BOUND, "no master served within {FAILOVER_BOUND:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Cluster over TLS: the store and a revocation mirror reach the nodes, and
/// the node serving the prefix's slot, over TLS with a client certificate.
#[tokio::test]
async fn redis_store_and_mirror_on_a_cluster_over_tls() {
    let files = TlsFiles::generate();
    let cluster = RedisCluster::start_with(Some(&files), 0);
    let url = cluster.url();
    assert!(url.starts_with("rediss+cluster://"));
    let store = connect(&url, &files.client(), "{baton}:").await.unwrap();
    let now = SystemClock.now();
    store.revoke(&TokenId("loaded-over-tls".into()), now.plus(600)).await.unwrap();
    assert_eq!(store.check(&lineage("loaded-over-tls", now, "a")).await.unwrap(), Status::Revoked);
    let mirror = mirror(&url, &files.client(), "{baton}:").await;
    mirror_sees(&mirror, "loaded-over-tls", Status::Revoked, Duration::from_secs(2)).await;
    store.revoke(&TokenId("pushed-over-tls".into()), now.plus(600)).await.unwrap();
    mirror_sees(&mirror, "pushed-over-tls", Status::Revoked, Duration::from_secs(5)).await;
    let anonymous = RedisTls { cert: None, key: None, ..files.client() };
    assert!(bounded("connect", connect(&url, &anonymous, "{baton}:")).await.is_err(), "no client certificate");
}

/// `redis_replica_acks` on one server with a replica: a revocation is
/// acknowledged once the replica has it; with the replica gone it fails
/// (the broker's 503) although the master applied it, and once the replica
/// is back a retry is acknowledged and changes nothing.
#[tokio::test]
async fn a_revocation_no_replica_acknowledges_fails_and_a_retry_is_harmless() {
    let master = RedisServer::start();
    let mut replica =
        RedisServer::start_with(["--replicaof", "127.0.0.1", &master.port().to_string()].map(String::from).to_vec());
    let in_sync = || {
        wait_until("the replica in sync", Duration::from_secs(30), || {
            query::<String>(master.port(), redis::cmd("INFO").arg("replication"))
                .is_ok_and(|info| info.contains("state=online"))
        })
    };
    in_sync();
    let target = RedisTarget::new(&RedisUrl::new(master.url()), &RedisTls::default()).unwrap().with_replica_acks(1);
    let store = RedisStore::connect_to(target, "baton:", Retention::default()).await.unwrap();
    let now = SystemClock.now();
    assert!(store.revoke(&TokenId("acknowledged".into()), now.plus(600)).await.unwrap());

    replica.kill();
    let alone = TokenId("unacknowledged".into());
    let refused = bounded("revoke", store.revoke(&alone, now.plus(600))).await.unwrap_err();
    assert!(refused.detail().contains("no replica acknowledged"), "{refused}");
    assert_eq!(store.check(&lineage("unacknowledged", now, "a")).await.unwrap(), Status::Revoked, "applied");

    replica.restart();
    in_sync();
    assert!(!store.revoke(&alone, now.plus(600)).await.unwrap(), "the retry finds it revoked");
    assert_eq!(store.check(&lineage("acknowledged", now, "a")).await.unwrap(), Status::Revoked);
}

/// A planned failover (`SENTINEL FAILOVER`): the old master lives on,
/// answering, until the Sentinels demote it seconds later. The store reads
/// from the master they name within [`MASTER_RECHECK`] of the switch, a
/// revocation mirror within a heartbeat; and
/// with every replica asked to acknowledge (`redis_replica_acks` = 2), no
/// revocation it acknowledged, before, during or after, is lost.
#[tokio::test]
async fn a_planned_sentinel_failover_loses_no_revocation_acknowledged_by_every_replica() {
    let set = SentinelSet::start();
    let target = RedisTarget::new(&RedisUrl::new(set.url()), &RedisTls::default()).unwrap().with_replica_acks(2);
    let store = RedisStore::connect_to(target, "baton:", Retention::default()).await.unwrap();
    let mirror = mirror(&set.url(), &RedisTls::default(), "baton:").await;
    let now = SystemClock.now();
    let old_master = set.master_port().unwrap();
    let mut acknowledged = Vec::new();
    let revoke = |index: usize| {
        let jti = TokenId(format!("planned-{index}"));
        let store = &store;
        async move { store.revoke(&jti, now.plus(600)).await.map(|_| jti) }
    };
    acknowledged.push(revoke(0).await.unwrap());

    let (sentinel, _) = &set.sentinels[0];
    let _: String = ask_sentinel(sentinel.port(), redis::cmd("SENTINEL").arg("FAILOVER").arg(MASTER)).unwrap();
    let started = Instant::now();
    let mut attempts = 1;
    let mut switched = None;
    // Revocations through the failover, until one is acknowledged by the
    // new master's two replicas (the old master demoted among them).
    loop {
        if switched.is_none() && set.master_port().is_some_and(|port| port != old_master) {
            switched = Some(started.elapsed());
            // Written on the new master by someone else: the store must
            // read it there soon, although the old master still answers.
            let new_master = set.master_port().unwrap();
            let _: () =
                query_as_user(new_master, redis::cmd("SET").arg("baton:revoked:direct").arg(1).arg("EX").arg(600))
                    .unwrap();
            let direct = lineage("direct", now, "a");
            let written = Instant::now();
            while store.check(&direct).await.ok() != Some(Status::Revoked) {
                assert!(
                    written.elapsed() < MASTER_RECHECK * 4 + Duration::from_secs(2),
                    "still reading the old master"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            eprintln!("planned failover: the store read the new master {:?} after the switch", written.elapsed());
            // The mirror's heartbeat finds the Sentinels name another master,
            // resubscribes there and reloads, long before the old master is
            // demoted (which took over ten seconds here).
            mirror_sees(&mirror, "direct", Status::Revoked, MIRROR_STALENESS + Duration::from_secs(3)).await;
            eprintln!("planned failover: the mirror followed {:?} after the switch", written.elapsed());
        }
        match bounded("revoke", revoke(attempts)).await {
            Ok(jti) => {
                acknowledged.push(jti);
                if switched.is_some() && set.master_port().is_some_and(|port| port != old_master) {
                    break;
                }
            }
            Err(error) => assert!(matches!(error, StoreError::Unavailable(_)), "{error}"),
        }
        attempts += 1;
        assert!(started.elapsed() < FAILOVER_BOUND, "no revocation acknowledged within {FAILOVER_BOUND:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new_master = set.master_port().unwrap();
    for jti in &acknowledged {
        let key = format!("baton:revoked:{}", jti.0);
        let kept: i64 = query_as_user(new_master, redis::cmd("EXISTS").arg(&key)).unwrap();
        assert_eq!(kept, 1, "{key}, acknowledged, is on the promoted master");
    }
    eprintln!(
        "planned failover: switched after {switched:?}; {} of {attempts} revocations acknowledged, none lost; \
         acknowledged again {:?} after the failover began",
        acknowledged.len(),
        started.elapsed()
    );
}

/// Cluster with a replica per master: the master holding the store's slot
/// is killed, its replica takes over, and the store carries on without a
/// restart; a revocation acknowledged by the replica (`redis_replica_acks`
/// = 1) before the kill is there after it.
#[tokio::test]
async fn redis_store_follows_a_cluster_failover() {
    let mut cluster = RedisCluster::start_with(None, 1);
    let target = RedisTarget::new(&RedisUrl::new(cluster.url()), &RedisTls::default()).unwrap().with_replica_acks(1);
    let store = RedisStore::connect_to(target, "{baton}:", Retention::default()).await.unwrap();
    let now = SystemClock.now();
    // The replicas may still be syncing: a revocation is acknowledged once
    // one has it.
    let before = TokenId("before-failover".into());
    let started = Instant::now();
    while bounded("revoke", store.revoke(&before, now.plus(600))).await.is_err() {
        assert!(started.elapsed() < FAILOVER_BOUND, "no replica acknowledged within {FAILOVER_BOUND:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.kill_master_with_keys();
    let killed = Instant::now();
    let revoked = lineage("before-failover", now, "a");
    let mut refused = 0;
    loop {
        match bounded("check", store.check(&revoked)).await {
            Ok(status) => {
                assert_eq!(status, Status::Revoked, "the acknowledged revocation survived the failover");
                break;
            }
            Err(error) => {
                assert!(matches!(error, StoreError::Unavailable(_)), "{error}");
                refused += 1;
            }
        }
        assert!(killed.elapsed() < FAILOVER_BOUND, "the cluster did not serve within {FAILOVER_BOUND:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("cluster failover: {refused} checks refused, served again {:?} after the kill", killed.elapsed());
    // The promoted replica has no replica of its own: a revocation is
    // applied but not acknowledged (the broker's 503) until one joins.
    let after = TokenId("after-failover".into());
    let refused = bounded("revoke", store.revoke(&after, now.plus(600))).await.unwrap_err();
    assert!(refused.detail().contains("no replica acknowledged"), "{refused}");
    assert_eq!(store.check(&lineage("after-failover", now, "a")).await.unwrap(), Status::Revoked);
}

/// Cut off from every Sentinel, a node cannot tell whether the master it
/// reads is still theirs: within a bound the store and the mirror refuse
/// (503) rather than answer from what may be an old master.
#[tokio::test]
async fn with_no_sentinel_answering_the_store_and_the_mirror_fail_closed() {
    let mut set = SentinelSet::start();
    let url = set.url();
    let store = RedisStore::connect(&url, "baton:").await.unwrap();
    let mirror = mirror(&url, &RedisTls::default(), "baton:").await;
    let now = SystemClock.now();
    let revoked = lineage("cut-off", now, "a");
    assert!(store.revoke(&TokenId("cut-off".into()), now.plus(600)).await.unwrap());
    mirror_sees(&mirror, "cut-off", Status::Revoked, MIRROR_STALENESS).await;
    for (sentinel, _) in &mut set.sentinels {
        sentinel.kill();
    }
    // The master is alive and answers; only the Sentinels are gone.
    let cut = Instant::now();
    let bound = baton::store::redis::UNCONFIRMED_LIMIT + MIRROR_STALENESS + Duration::from_secs(10);
    let mut store_refuses = false;
    let mut mirror_refuses = false;
    while !(store_refuses && mirror_refuses) {
        store_refuses |= matches!(bounded("check", store.check(&revoked)).await, Err(StoreError::Unavailable(_)));
        mirror_refuses |= matches!(mirror.check(&revoked).await, Err(StoreError::Unavailable(_)));
        assert!(cut.elapsed() < bound, "still answering {:?} after the Sentinels went", cut.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("cut off from the Sentinels: failed closed within {:?}", cut.elapsed());
}
