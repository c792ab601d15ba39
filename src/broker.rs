//! The broker: the state every endpoint reads (settings, keys, the policy
//! in force, the stores, the clock, metrics) and the checks they share,
//! built once at start. The endpoints live in their own modules: `grant`
//! (the token endpoint), `introspection`, `revocation`, `admin`,
//! `approvals`, `governance`, and `abuse` for client authentication.

use std::sync::{Arc, RwLock};

use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};

use crate::abuse::{refusals, throttle, RefusalSettings, ThrottleSettings};
use crate::approvals::ApprovalSettings;
use crate::claims::{Claims, TokenId};
use crate::clock::{Clock, UnixMicros, UnixTime};
use crate::jose::Verified;
use crate::keys::{Algorithm, KeySet};
use crate::metrics::Metrics;
use crate::policy::{Lifetimes, Policy, Target};
use crate::revocation::Revoking;
use crate::store::{AuditEvent, AuditStore, Lineage, Principal, ReplayStore, RevocationStore, Status, StoreError};
use crate::token::{MintError, Validation, VerifyError};
use crate::upstream::Providers;

/// The broker's fixed settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Issuer identifier.
    pub issuer: crate::ids::Issuer,
    /// Largest delegation depth a token may have.
    pub max_depth: u32,
    /// Longest token accepted as `subject_token` or `actor_token`, in bytes.
    pub max_token_bytes: usize,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Token lifetimes.
    pub lifetimes: Lifetimes,
    /// SHA-256 (hex) of the admin token; the admin API is off when absent.
    pub admin_token_sha256: Option<String>,
    /// Whether DPoP proofs must carry a server nonce (RFC 9449 §8).
    pub dpop_nonce: bool,
    /// Seconds of clock difference tolerated with other nodes, clients and
    /// identity providers (`clock_leeway_seconds`). A child's `exp` is still
    /// capped by its parent's, so no leeway makes a token outlive its parent.
    pub clock_leeway_seconds: i64,
}

/// The state a broker is built from.
pub struct Stores {
    /// Single-use ids.
    pub replay: Arc<dyn ReplayStore>,
    /// Revocations.
    pub revocation: Arc<dyn RevocationStore>,
    /// The audit trail.
    pub audit: Arc<dyn AuditStore>,
}

/// Everything the token endpoint needs, built once at start.
pub struct Broker {
    pub(crate) settings: Settings,
    /// The rules this broker's own tokens are checked by, built once.
    pub(crate) validation: Validation,
    pub(crate) keys: RwLock<Arc<KeySet>>,
    /// Swapped whole on reload; each request takes one snapshot.
    pub(crate) policy: RwLock<Arc<Policy>>,
    pub(crate) stores: Stores,
    pub(crate) approvals: ApprovalSettings,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) random: SystemRandom,
    /// The trusted identity providers' discovered keys.
    pub(crate) providers: Providers,
    pub(crate) metrics: Metrics,
    /// Failed client authentication, counted per address and client.
    pub(crate) throttle: throttle::Throttle,
    /// Refusals of unauthenticated requests since the last aggregate event.
    pub(crate) refusals: refusals::Refusals,
    pub(crate) refusal_settings: RefusalSettings,
    /// The proxies whose forwarded client address is believed.
    pub(crate) trusted_proxies: Vec<std::net::IpAddr>,
    /// The tokens this node is revoking right now.
    pub(crate) revoking: Revoking,
}

impl Broker {
    /// Builds a broker.
    pub fn new(settings: Settings, keys: KeySet, policy: Policy, stores: Stores, clock: Arc<dyn Clock>) -> Broker {
        let validation = Validation {
            issuer: settings.issuer.clone(),
            max_token_bytes: settings.max_token_bytes,
            max_depth: settings.max_depth,
            algorithms: vec![Algorithm::Es256, Algorithm::EdDsa],
            leeway: settings.clock_leeway_seconds,
            // Introspection and revocation read tokens for any audience; the exchange asks for its agent.
            audience: crate::token::AudienceRule::Any,
        };
        Broker {
            settings,
            validation,
            keys: RwLock::new(Arc::new(keys)),
            policy: RwLock::new(Arc::new(policy)),
            stores,
            providers: Providers::new(clock.clone()),
            approvals: ApprovalSettings::default(),
            random: SystemRandom::new(),
            metrics: Metrics::new(),
            throttle: throttle::Throttle::new(ThrottleSettings::default(), clock.clone()),
            refusals: refusals::Refusals::new(RefusalSettings::default()),
            refusal_settings: RefusalSettings::default(),
            trusted_proxies: Vec::new(),
            revoking: Revoking::default(),
            clock,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The signing and published keys, as of the last load.
    pub fn keys(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(keys) => keys.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Swaps in a freshly loaded key set (after `baton keys rotate`, or when
    /// a retired key's publication ends).
    pub fn replace_keys(&self, keys: KeySet) {
        let keys = Arc::new(keys);
        match self.keys.write() {
            Ok(mut current) => *current = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
    }

    /// The policy in force now: a snapshot that a reload does not change
    /// under its holder. A request takes one and uses it throughout.
    pub fn policy(&self) -> Arc<Policy> {
        match self.policy.read() {
            Ok(policy) => policy.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The broker's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The trusted identity providers, as discovered.
    pub(crate) fn providers(&self) -> &Providers {
        &self.providers
    }

    /// Whether a verified token is alive (DESIGN.md §2.4): neither it nor an
    /// ancestor revoked, and neither its subject nor any agent of its chain
    /// deprovisioned since it was issued, whether by the admin API or by the
    /// inventory (an agent removed from `agents.toml` or past its expiry).
    pub async fn status(&self, claims: &Claims) -> Result<Status, StoreError> {
        self.status_in(&self.policy(), claims).await
    }

    /// [`Broker::status`] against the request's policy snapshot.
    pub(crate) async fn status_in(&self, policy: &Policy, claims: &Claims) -> Result<Status, StoreError> {
        self.status_of(policy, &Lineage::of(claims)).await
    }

    /// The status of a lineage: the inventory first, then the store.
    pub(crate) async fn status_of(&self, policy: &Policy, lineage: &Lineage) -> Result<Status, StoreError> {
        let now = self.now();
        let inventory = policy.inventory();
        let retired = lineage.principals.iter().any(|named| match &named.principal {
            // An agent removed or past its expiry; an API that is no longer
            // registered counts the same for the tokens addressed to it.
            Principal::Agent(id) => match inventory.target(id) {
                Some(Target::Agent(agent)) => !agent.is_active(now),
                Some(Target::Resource(_)) => false,
                None => true,
            },
            Principal::Subject(_) => false,
        });
        if retired {
            return Ok(Status::Deprovisioned);
        }
        self.stores.revocation.check(lineage).await
    }

    /// Whether the state store answers now (readiness).
    pub async fn ping_store(&self) -> Result<(), StoreError> {
        self.stores.revocation.ping().await
    }

    /// Logs an audit event as a structured `tracing` event and persists it.
    pub(crate) async fn record(&self, event: AuditEvent) -> Result<(), StoreError> {
        tracing::info!(target: "baton::audit", event = %serde_json::to_string(&event).unwrap_or_default());
        self.stores.audit.record(event).await
    }

    /// Verifies one of this broker's own tokens.
    pub(crate) fn verify(&self, token: &str) -> Result<Verified<Claims>, VerifyError> {
        crate::token::verify(token, self.keys().as_ref(), &self.validation, self.clock.as_ref())
    }

    pub(crate) fn now(&self) -> UnixTime {
        self.clock.now()
    }

    /// Now, in microseconds (an issue instant or a deprovisioning's cut-off).
    pub(crate) fn now_micros(&self) -> UnixMicros {
        self.clock.now_micros()
    }

    /// A fresh, unguessable token id: 128 random bits.
    pub(crate) fn new_jti(&self) -> Result<TokenId, MintError> {
        let mut bytes = [0u8; 16];
        self.random.fill(&mut bytes).map_err(|_| MintError::new("no randomness available"))?;
        Ok(TokenId(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
    }
}
