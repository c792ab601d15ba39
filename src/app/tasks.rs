//! The broker's background work: evidence flushed, the throttle pruned, keys
//! reloaded, expired agents retired. Each loop runs until the process ends.

use std::sync::Arc;

use crate::broker::Broker;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::keys::{self, KeySet};

/// Starts every background loop on the current runtime.
pub(super) fn spawn(broker: &Arc<Broker>, config: &Config) {
    tokio::spawn(reload_keys(broker.clone(), config.clone(), Arc::new(SystemClock)));
    tokio::spawn(retire_expired_agents_every_minute(broker.clone()));
    tokio::spawn(flush_refusals_every_interval(broker.clone()));
    tokio::spawn(prune_throttle_every_few_seconds(broker.clone()));
    tokio::spawn(watch_store_every_few_seconds(broker.clone()));
}

/// How often the state store is asked whether it answers.
const STORE_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// Every few seconds, asks the state store whether it answers. The metrics
/// show it, and the log says, once each, when it stops answering and when
/// it answers again; meanwhile every request that needs it is answered 503.
async fn watch_store_every_few_seconds(broker: Arc<Broker>) {
    let mut ticks = tokio::time::interval(STORE_CHECK);
    let mut was_up = true;
    loop {
        ticks.tick().await;
        let answered = broker.ping_store().await;
        // The gauge first: whoever reads the log line finds it set.
        broker.metrics().set_store_up(answered.is_ok());
        let up = answered.is_ok();
        match answered {
            Ok(()) if !was_up => tracing::info!("state store reachable again"),
            Err(error) if was_up => {
                tracing::warn!(%error, "state store unreachable: requests that need it are answered 503 until it is back");
            }
            _ => {}
        }
        was_up = up;
    }
}

/// Every interval, writes the refusals of unauthenticated requests counted
/// since the last as one audit event. Counts that cannot be written wait
/// for the next interval.
async fn flush_refusals_every_interval(broker: Arc<Broker>) {
    let mut ticks = tokio::time::interval(broker.refusal_interval());
    ticks.tick().await;
    loop {
        ticks.tick().await;
        if let Err(error) = broker.flush_refusals().await {
            tracing::warn!(%error, "refusals of unauthenticated requests not recorded yet; retrying");
        }
    }
}

/// Every few seconds, lets the throttle forget the budgets that are whole
/// again, so that its tables rarely fill: a full table is pruned in the
/// request too, but that costs the request.
async fn prune_throttle_every_few_seconds(broker: Arc<Broker>) {
    let mut ticks = tokio::time::interval(crate::abuse::throttle::PRUNE_INTERVAL);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        broker.prune_throttle();
    }
}

/// Reloads the key folder every few seconds, so that `baton keys rotate`
/// takes effect without a restart and retired keys leave the JWKS on time.
/// A folder that fails to load is logged and the keys in use stay, and so
/// do keys that did not change, with the signatures they remember.
async fn reload_keys(broker: Arc<Broker>, config: Config, clock: Arc<dyn Clock>) {
    let period = std::time::Duration::from_secs(keys::RELOAD_INTERVAL.unsigned_abs());
    let mut ticks = tokio::time::interval(period);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        match KeySet::load(&config.keys_dir, config.max_token_ttl, clock.now()) {
            Ok(keys) if keys.same_keys(&broker.keys()) => {}
            Ok(keys) => {
                if keys.signing().kid() != broker.keys().signing().kid() {
                    tracing::info!(kid = %keys.signing().kid(), "signing with a new key");
                }
                broker.replace_keys(keys);
            }
            Err(error) => tracing::warn!(%error, "key folder did not reload; keeping the keys in use"),
        }
    }
}

/// Once a minute, from the start, records in the store the agents that have
/// passed their `expires`, so that verifiers reading the store see their
/// tokens dead.
async fn retire_expired_agents_every_minute(broker: Arc<Broker>) {
    let mut ticks = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        ticks.tick().await;
        match broker.retire_expired_agents().await {
            Ok(retired) => {
                for id in retired {
                    tracing::info!(agent = %id, "agent past its expiry: its tokens are dead");
                }
            }
            Err(error) => tracing::warn!(%error, "expired agents not recorded yet; retrying"),
        }
    }
}
