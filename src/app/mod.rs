//! The application: the one place that wires config, keys, policy, stores
//! and the broker together, starts the background tasks, and serves. The
//! command line only parses arguments and calls in here.

mod reload;
mod tasks;

pub use reload::DEBOUNCE;

use std::sync::Arc;

use crate::abuse::{RefusalSettings, ThrottleSettings};
use crate::approvals::webhook::Webhook;
use crate::approvals::ApprovalSettings;
use crate::broker::Broker;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Listen};
use crate::context::{Settings, Stores};
use crate::keys::{self, KeySet};
use crate::policy::{Lifetimes, Policy};
use crate::store::embedded::EmbeddedStore;
use crate::store::redis::RedisStore;
use crate::store::redis_target::RedisTarget;
use crate::store::{LifecycleStore, Retention, SessionStore, StateStore};
use crate::upstream::sign_in::{SignIn, SignInSettings};

/// The token lifetimes the config sets.
pub fn lifetimes(config: &Config) -> Lifetimes {
    Lifetimes { max_token_ttl: config.max_token_ttl, agent_token_ttl: config.agent_token_ttl }
}

/// Builds the broker the config describes, generating a first key when the
/// key folder has none. The key comes last: a broker refused for its policy,
/// its webhook or its store leaves no key behind to be found, or mistaken for
/// the one a working start would publish.
pub async fn build(config: &Config, clock: Arc<dyn Clock>) -> Result<Broker, String> {
    let policy = Policy::load(&config.policies_dir, lifetimes(config)).map_err(|error| format!("policy: {error}"))?;
    let webhook =
        config.approval_webhook.as_deref().map(Webhook::new).transpose().map_err(|error| error.to_string())?;
    let settings = Settings {
        issuer: config.issuer.clone(),
        max_depth: config.max_depth,
        max_token_bytes: config.max_token_bytes,
        max_body_bytes: config.max_body_bytes,
        lifetimes: lifetimes(config),
        admin_token_sha256: config.admin_token_sha256.clone(),
        dpop_nonce: config.dpop_nonce,
        clock_leeway_seconds: config.clock_leeway_seconds,
    };
    let store = open_store(config).await?;
    let now = clock.now();
    if !keys::has_current_key(&config.keys_dir, config.max_token_ttl, now).map_err(|error| error.to_string())? {
        let kid = keys::generate(&config.keys_dir, config.signing_algorithm, config.max_token_ttl, now)
            .map_err(|error| error.to_string())?;
        tracing::info!(%kid, dir = %config.keys_dir.display(), "generated a signing key");
    }
    let keys = KeySet::load(&config.keys_dir, config.max_token_ttl, now).map_err(|error| error.to_string())?;
    let approvals = ApprovalSettings {
        store: store.clone(),
        approver: config.approver,
        ttl: config.approval_ttl,
        max_pending_per_agent: config.max_pending_approvals_per_agent,
        webhook,
    };
    let sessions: Arc<dyn SessionStore> = store.clone();
    let lifecycle: Arc<dyn LifecycleStore> = store.clone();
    let stores = Stores { replay: store.clone(), revocation: store.clone(), audit: store };
    let throttle = ThrottleSettings {
        per_client: config.auth_failures_per_client,
        per_address: config.auth_failures_per_address,
        ..ThrottleSettings::default()
    };
    let refusals = RefusalSettings { interval: config.refusal_interval, max_keys: config.refusal_max_keys };
    let broker = Broker::new(settings, keys, policy, stores, clock.clone())
        .with_console_sessions(sessions)
        .with_lifecycle_store(lifecycle)
        .with_approvals(approvals)
        .with_abuse_limits(throttle, refusals)
        .with_trusted_proxies(config.trusted_proxies.clone());
    Ok(match &config.console_sign_in {
        Some(console) => {
            let settings = SignInSettings {
                issuer: console.issuer.clone(),
                client_id: console.client_id.clone(),
                client_secret: console.client_secret(),
                redirect_uri: format!("{}/console/callback", config.issuer),
                members: console.members.clone(),
            };
            broker.with_console_sign_in(SignIn::new(settings, clock).map_err(|error| error.to_string())?)
        }
        None => broker,
    })
}

/// Redis when `redis_url` is set (several nodes share it), else the embedded
/// file database under `data_dir` (one node).
async fn open_store(config: &Config) -> Result<Arc<dyn StateStore>, String> {
    let retention = Retention::days(config.audit_retention_days);
    match &config.redis_url {
        Some(url) => {
            let mut target = RedisTarget::new(url, &config.redis_tls).map_err(|error| format!("redis: {error}"))?;
            if let Some(acks) = config.redis_replica_acks {
                target = target.with_replica_acks(acks);
            }
            let topology = target.topology();
            let store = RedisStore::connect_to(target, &config.redis_prefix, retention)
                .await
                .map_err(|error| format!("redis: {error}"))?;
            tracing::info!(prefix = %config.redis_prefix, ?topology, "state in Redis");
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

/// Binds `listen`, resolving a host name now: the first of its addresses
/// that can be bound, IPv4 first, so that `localhost:8080` binds
/// `127.0.0.1:8080` wherever the resolver lists `::1` first (one socket:
/// the server serves one listener).
async fn bind(listen: &Listen) -> std::io::Result<tokio::net::TcpListener> {
    let mut addresses: Vec<std::net::SocketAddr> = tokio::net::lookup_host(listen.as_str()).await?.collect();
    addresses.sort_by_key(std::net::SocketAddr::is_ipv6);
    let mut last_error = None;
    for address in addresses {
        match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => return Ok(listener),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "resolves to no address")))
}

/// Builds the broker, starts its background tasks and serves it on
/// `config.listen` until Ctrl-C or `SIGTERM`.
pub async fn serve(config: Config) -> Result<(), String> {
    let broker = Arc::new(build(&config, Arc::new(SystemClock)).await?);
    for id in broker.deprovision_removed_agents().await.map_err(|error| error.to_string())? {
        tracing::info!(agent = %id, "agent removed from the inventory: deprovisioned");
    }
    tasks::spawn(&broker, &config);
    reload::spawn(broker.clone(), config.clone())?;
    let listener = bind(&config.listen).await.map_err(|error| format!("listen on {}: {error}", config.listen))?;
    let bound = listener.local_addr().map_err(|error| format!("listen on {}: {error}", config.listen))?;
    tracing::info!(listen = %config.listen, %bound, issuer = %config.issuer, "baton is serving");
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
