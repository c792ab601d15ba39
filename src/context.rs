//! What every endpoint reads: the settings, the keys, the policy in force,
//! the stores, the clock and the metrics, built once at start, and the
//! checks they share (is a token alive, record an audit event, verify one of
//! this broker's tokens). Each endpoint's own state lives in its module.

use std::sync::{Arc, RwLock};

use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};

use crate::claims::{Claims, TokenId};
use crate::client_auth::ClientAuthError;
use crate::clock::{Clock, UnixMicros, UnixTime};
use crate::error::GrantError;
use crate::ids::{AgentId, Issuer, Subject};
use crate::jose::Verified;
use crate::keys::{Algorithm, KeySet};
use crate::metrics::Metrics;
use crate::policy::{Lifetimes, Policy, Target};
use crate::store::{AuditEvent, AuditStore, Lineage, Principal, ReplayStore, RevocationStore, Status, StoreError};
use crate::token::{MintError, Validation, VerifyError};
use crate::upstream::Providers;

/// The broker's fixed settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Issuer identifier.
    pub issuer: Issuer,
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

/// The state every endpoint shares.
pub struct Context {
    pub(crate) settings: Settings,
    /// The rules this broker's own tokens are checked by, built once.
    pub(crate) validation: Validation,
    pub(crate) keys: RwLock<Arc<KeySet>>,
    /// Swapped whole on reload; each request takes one snapshot.
    pub(crate) policy: RwLock<Arc<Policy>>,
    pub(crate) stores: Stores,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) random: SystemRandom,
    /// The trusted identity providers' discovered keys.
    pub(crate) providers: Providers,
    pub(crate) metrics: Metrics,
}

impl Context {
    /// The shared state of a broker.
    pub fn new(settings: Settings, keys: KeySet, policy: Policy, stores: Stores, clock: Arc<dyn Clock>) -> Context {
        let validation = Validation {
            issuer: settings.issuer.clone(),
            max_token_bytes: settings.max_token_bytes,
            max_depth: settings.max_depth,
            algorithms: vec![Algorithm::Es256, Algorithm::EdDsa],
            leeway: settings.clock_leeway_seconds,
            // Introspection and revocation read tokens for any audience; the exchange asks for its agent.
            audience: crate::token::AudienceRule::Any,
        };
        Context {
            settings,
            validation,
            keys: RwLock::new(Arc::new(keys)),
            policy: RwLock::new(Arc::new(policy)),
            stores,
            providers: Providers::new(clock.clone()),
            random: SystemRandom::new(),
            metrics: Metrics::new(),
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
        self.token_status(&self.policy(), claims).await
    }

    /// [`Context::status`] against the request's policy snapshot.
    pub(crate) async fn token_status(&self, policy: &Policy, claims: &Claims) -> Result<Status, StoreError> {
        self.lineage_status(policy, &Lineage::of(claims)).await
    }

    /// The status of a lineage: the inventory first, then the store.
    pub(crate) async fn lineage_status(&self, policy: &Policy, lineage: &Lineage) -> Result<Status, StoreError> {
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

    /// Refuses a deprovisioned agent until it is reinstated (DESIGN.md §2.4).
    /// An exchange needs no separate call: the parent's revocation check
    /// names its holder, the acting agent, and asks here only when it fails.
    pub(crate) async fn ensure_not_blocked(
        &self,
        agent: &AgentId,
        subject: Option<&Subject>,
    ) -> Result<(), GrantError> {
        let mut principals = vec![Principal::Agent(agent.to_owned())];
        principals.extend(subject.map(|subject| Principal::Subject(subject.to_owned())));
        // A token "issued at the end of time" is killed by a block only,
        // never by a deprovisioning's cut-off in the past.
        let own = Lineage::at(Vec::new(), UnixMicros::MAX, principals);
        match self.stores.revocation.check(&own).await? {
            Status::Active => Ok(()),
            Status::Revoked | Status::Deprovisioned => Err(ClientAuthError::Deprovisioned.into()),
        }
    }
}
