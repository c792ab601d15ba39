//! `baton serve`: load everything, refuse to start on any problem, listen.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::grant::webhook::Webhook;
use crate::grant::{ApprovalSettings, Broker, RefusalSettings, Settings, Stores, ThrottleSettings};
use crate::keys::{self, KeySet};
use crate::policy::Policy;
use crate::store::embedded::EmbeddedStore;
use crate::store::redis::RedisStore;
use crate::store::{Retention, StateStore};

pub(super) fn run(config: Config) -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let runtime = tokio::runtime::Runtime::new().map_err(|error| error.to_string())?;
    runtime.block_on(serve(config))
}

/// Builds the broker the config describes, generating a first key when the
/// key folder has none.
pub async fn build(config: &Config, clock: Arc<dyn Clock>) -> Result<Broker, String> {
    let now = clock.now();
    if !keys::has_current_key(&config.keys_dir, config.max_token_ttl, now).map_err(|error| error.to_string())? {
        let kid = keys::generate(&config.keys_dir, config.signing_algorithm, config.max_token_ttl, now)
            .map_err(|error| error.to_string())?;
        tracing::info!(%kid, dir = %config.keys_dir.display(), "generated a signing key");
    }
    let keys = KeySet::load(&config.keys_dir, config.max_token_ttl, now).map_err(|error| error.to_string())?;
    let policy =
        Policy::load(&config.policies_dir, super::lifetimes(config)).map_err(|error| format!("policy: {error}"))?;
    let settings = Settings {
        issuer: config.issuer.clone(),
        max_depth: config.max_depth,
        max_token_bytes: config.max_token_bytes,
        max_body_bytes: config.max_body_bytes,
        lifetimes: super::lifetimes(config),
        admin_token_sha256: config.admin_token_sha256.clone(),
        dpop_nonce: config.dpop_nonce,
        clock_leeway_seconds: config.clock_leeway_seconds,
    };
    let store = open_store(config).await?;
    let webhook =
        config.approval_webhook.as_deref().map(Webhook::new).transpose().map_err(|error| error.to_string())?;
    let approvals = ApprovalSettings {
        store: store.clone(),
        approver: config.approver,
        ttl: config.approval_ttl,
        max_pending_per_agent: config.max_pending_approvals_per_agent,
        webhook,
    };
    let stores = Stores { replay: store.clone(), revocation: store.clone(), audit: store };
    let throttle = ThrottleSettings {
        per_client: config.auth_failures_per_client,
        per_address: config.auth_failures_per_address,
        ..ThrottleSettings::default()
    };
    let refusals = RefusalSettings { interval: config.refusal_interval, max_keys: config.refusal_max_keys };
    Ok(Broker::new(settings, keys, policy, stores, clock)
        .with_approvals(approvals)
        .with_abuse_limits(throttle, refusals)
        .with_trusted_proxies(config.trusted_proxies.clone()))
}

/// Redis when `redis_url` is set (several nodes share it), else the embedded
/// file database under `data_dir` (one node).
async fn open_store(config: &Config) -> Result<Arc<dyn StateStore>, String> {
    let retention = Retention::days(config.audit_retention_days);
    match &config.redis_url {
        Some(url) => {
            let store = RedisStore::connect_with_retention(url, &config.redis_prefix, retention)
                .await
                .map_err(|error| format!("redis: {error}"))?;
            tracing::info!(prefix = %config.redis_prefix, "state in Redis");
            Ok(Arc::new(store))
        }
        None => {
            let store = EmbeddedStore::open_with_retention(&config.data_dir, retention)
                .map_err(|error| format!("data folder: {error}"))?;
            tracing::info!(dir = %config.data_dir.display(), "state in the embedded store");
            Ok(Arc::new(store))
        }
    }
}

/// The agents of the inventory last loaded, kept in `data_dir/known-agents.json`:
/// those missing from the inventory now are deprovisioned, and the file then
/// holds the agents of this inventory.
pub async fn deprovision_removed_agents(broker: &Broker, data_dir: &Path) -> Result<Vec<String>, String> {
    let path = data_dir.join("known-agents.json");
    let known: Vec<String> = read_json(&path)?.unwrap_or_default();
    let removed = broker.deprovision_removed_agents(&known).await.map_err(|error| error.to_string())?;
    // Only the agents of this inventory: one removed is deprovisioned once,
    // not again at every reload (which would undo a reinstatement).
    let all: BTreeSet<String> = broker.policy().inventory().agents().map(|agent| agent.id.clone()).collect();
    write_json(data_dir, &path, &all)?;
    Ok(removed)
}

/// Retires the agents of the inventory past their `expires` (see
/// [`Broker::retire_expired_agents`]) that are not retired yet. Those
/// retired are kept in `data_dir/retired-agents.json` with the `expires`
/// they were retired at, so that a restart writes no second deprovisioning,
/// audit event or metric for them, while an agent whose `expires` was moved
/// is retired again once it passes the new one.
pub async fn retire_expired_agents(broker: &Broker, data_dir: &Path) -> Result<Vec<String>, String> {
    let path = data_dir.join("retired-agents.json");
    let recorded: BTreeMap<String, String> = read_json(&path)?.unwrap_or_default();
    let policy = broker.policy();
    let expires_now = |id: &str| policy.inventory().agent(id).map(|agent| agent.expires.to_string());
    // Retired at the `expires` the inventory still gives: done. An agent
    // whose `expires` moved, or that is gone, is dropped.
    let mut done: BTreeMap<String, String> = recorded
        .iter()
        .filter(|(id, expires)| expires_now(id).as_ref() == Some(*expires))
        .map(|(id, expires)| (id.clone(), expires.clone()))
        .collect();
    let ids: HashSet<String> = done.keys().cloned().collect();
    let retired = broker.retire_expired_agents(&ids).await.map_err(|error| error.to_string())?;
    done.extend(retired.iter().filter_map(|id| Some((id.clone(), expires_now(id)?))));
    if done != recorded {
        write_json(data_dir, &path, &done)?;
    }
    Ok(retired)
}

/// A JSON file of the data folder, `None` when there is none yet.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|error| format!("{}: {error}", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(format!("{}: {error}", path.display())),
    }
}

/// Writes a JSON file of the data folder beside and renames it, so that a
/// crash never leaves half a file.
fn write_json(data_dir: &Path, path: &Path, value: &impl serde::Serialize) -> Result<(), String> {
    let json = serde_json::to_vec_pretty(value).map_err(|error| error.to_string())?;
    crate::store::data_dir::prepare(data_dir).map_err(|error| format!("{}: {error}", data_dir.display()))?;
    let staging = path.with_extension("json.tmp");
    crate::store::data_dir::write_private(&staging, &json)
        .map_err(|error| format!("{}: {error}", staging.display()))?;
    std::fs::rename(&staging, path).map_err(|error| format!("{}: {error}", path.display()))
}

async fn serve(config: Config) -> Result<(), String> {
    let broker = Arc::new(build(&config, Arc::new(SystemClock)).await?);
    for id in deprovision_removed_agents(&broker, &config.data_dir).await? {
        tracing::info!(agent = %id, "agent removed from the inventory: deprovisioned");
    }
    tokio::spawn(reload_keys(broker.clone(), config.clone(), Arc::new(SystemClock)));
    tokio::spawn(retire_expired_agents_every_minute(broker.clone(), config.data_dir.clone()));
    tokio::spawn(flush_refusals_every_interval(broker.clone()));
    tokio::spawn(prune_throttle_every_few_seconds(broker.clone()));
    super::reload::spawn(broker.clone(), config.clone())?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|error| format!("listen on {}: {error}", config.listen))?;
    tracing::info!(listen = %config.listen, issuer = %config.issuer, "baton is serving");
    // Ctrl-C or SIGTERM (what `docker stop` sends) ends the broker gracefully.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|error| format!("signal handler: {error}"))?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    };
    let limits = crate::http::Limits {
        header_timeout: std::time::Duration::from_millis(config.header_timeout_ms),
        body_timeout: std::time::Duration::from_millis(config.body_timeout_ms),
        idle_timeout: std::time::Duration::from_millis(config.idle_timeout_ms),
        max_connections: config.max_connections,
        max_connections_per_address: config.max_connections_per_address,
    };
    let served =
        crate::http::serve(listener, broker.clone(), limits, shutdown).await.map_err(|error| error.to_string());
    // The refusals counted since the last interval are evidence too.
    if let Err(error) = broker.flush_refusals().await {
        tracing::warn!(%error, "refusals of unauthenticated requests not recorded at shutdown");
    }
    served
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
    let mut ticks = tokio::time::interval(crate::grant::throttle::PRUNE_INTERVAL);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        broker.prune_throttle();
    }
}

/// Reloads the key folder every few seconds, so that `baton keys rotate`
/// takes effect without a restart and retired keys leave the JWKS on time.
/// A folder that fails to load is logged and the keys in use stay.
async fn reload_keys(broker: Arc<Broker>, config: Config, clock: Arc<dyn Clock>) {
    let period = std::time::Duration::from_secs(keys::RELOAD_INTERVAL.unsigned_abs());
    let mut ticks = tokio::time::interval(period);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        match KeySet::load(&config.keys_dir, config.max_token_ttl, clock.now()) {
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
async fn retire_expired_agents_every_minute(broker: Arc<Broker>, data_dir: PathBuf) {
    let mut ticks = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        ticks.tick().await;
        match retire_expired_agents(&broker, &data_dir).await {
            Ok(retired) => {
                for id in retired {
                    tracing::info!(agent = %id, "agent past its expiry: its tokens are dead");
                }
            }
            Err(error) => tracing::warn!(%error, "expired agents not recorded yet; retrying"),
        }
    }
}
