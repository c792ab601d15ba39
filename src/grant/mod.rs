//! The token endpoint's grants: `client_credentials` (an agent's own token)
//! and RFC 8693 token exchange. One handler per grant, each reading only the
//! broker's settings, keys, policy and stores.
//!
//! Every outcome, issued or refused, is recorded as an audit event before
//! the response leaves (DESIGN.md §2.7); refusals of requests whose client
//! never authenticated are counted together instead, one event per interval,
//! and failed client authentication is throttled (DESIGN.md §12; both in
//! `client_authentication`).

pub mod admin;
pub mod approval;
mod client_authentication;
mod client_credentials;
pub mod error;
mod governance;
mod introspection;
pub mod params;
pub mod refusals;
pub mod revocation;
pub mod throttle;
mod token_exchange;
pub mod webhook;

use std::sync::{Arc, RwLock};

use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};

use client_authentication::{claimed_client, proves_identity};

pub use approval::{ApprovalError, ApprovalSettings, Approver, PendingApproval};
pub use error::{GrantError, RequestError, Unacceptable};
pub use introspection::{ActiveToken, Introspection};
pub use params::TokenParams;
pub use refusals::RefusalSettings;
pub use revocation::NotAHolder;
pub use throttle::{ThrottleSettings, Throttled};

use crate::claims::{Claims, ScopeSet, TokenId};
use crate::client_auth::ClientAuthError;
use crate::clock::{Clock, UnixMicros, UnixTime};
use crate::dpop::{self, nonce::Nonces, Proof, ProofError};
use crate::keys::{Algorithm, KeySet};
use crate::metrics::Metrics;
use crate::policy::{Lifetimes, Policy, Target};
use crate::store::{
    Approval, AuditApproval, AuditDecision, AuditEvent, AuditStore, Lineage, Principal, ReplayStore, RevocationStore,
    Status, StoreError, Use,
};
use crate::token::Validation;
use crate::upstream::Providers;

/// `grant_type` for token exchange (RFC 8693 §2.1).
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// `grant_type` for an agent's own token (RFC 6749 §4.4).
pub const CLIENT_CREDENTIALS: &str = "client_credentials";
/// The `action` of the event for a refusal at the introspection or
/// revocation endpoint after the client proved its credential.
pub const CLIENT_AUTHENTICATION: &str = "client_authentication";
/// The token type of an access token (RFC 8693 §3).
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// The token type of a JWT (RFC 8693 §3).
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// The token type of an OpenID Connect ID token (RFC 8693 §3).
pub const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";

/// The broker's fixed settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Issuer identifier.
    pub issuer: String,
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
    settings: Settings,
    /// The rules this broker's own tokens are checked by, built once.
    validation: Validation,
    keys: RwLock<Arc<KeySet>>,
    /// Swapped whole on reload; each request takes one snapshot.
    policy: RwLock<Arc<Policy>>,
    stores: Stores,
    approvals: ApprovalSettings,
    clock: Arc<dyn Clock>,
    random: SystemRandom,
    /// The trusted identity providers' discovered keys.
    providers: Providers,
    metrics: Metrics,
    /// Failed client authentication, counted per address and client.
    throttle: throttle::Throttle,
    /// Refusals of unauthenticated requests since the last aggregate event.
    refusals: refusals::Refusals,
    refusal_settings: RefusalSettings,
    /// The proxies whose forwarded client address is believed.
    trusted_proxies: Vec<std::net::IpAddr>,
    /// The tokens this node is revoking right now.
    revoking: revocation::Revoking,
}

/// A token request as the HTTP layer hands it over.
#[derive(Default)]
pub struct TokenRequest {
    /// The `Authorization` header's value, if any.
    pub authorization: Option<String>,
    /// The form parameters.
    pub params: TokenParams,
    /// The client's network address, for the audit trail.
    pub client_address: Option<String>,
    /// Every `DPoP` header's value (RFC 9449 §4.1; more than one is refused).
    pub dpop_proofs: Vec<String>,
}

/// The `Authorization` header carries credentials: never printed.
impl std::fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRequest")
            .field("authorization", &self.authorization.as_ref().map(|_| "***"))
            .field("params", &self.params)
            .field("client_address", &self.client_address)
            .field("dpop_proofs", &self.dpop_proofs.len())
            .finish()
    }
}

/// A successful token response (RFC 6749 §5.1, RFC 8693 §2.2.1).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenResponse {
    /// The token.
    pub access_token: String,
    /// Set for token exchange.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
    /// `DPoP` for a token bound to the client's key (RFC 9449 §5), else `Bearer`.
    pub token_type: &'static str,
    /// Seconds until expiry.
    pub expires_in: i64,
    /// The granted scopes.
    pub scope: ScopeSet,
}

/// What is known of a request as it is processed, for its audit event.
#[derive(Debug, Default)]
pub(crate) struct Evidence {
    grant_type: String,
    claimed_client: Option<String>,
    subject: Option<String>,
    agent: Option<String>,
    chain: Vec<String>,
    target: Option<String>,
    scopes_asked: Option<String>,
    parent_jti: Option<TokenId>,
    rules: Vec<String>,
    approval: Option<AuditApproval>,
    /// The approval this request spent, as it stood approved: not evidence,
    /// but what to put back if no token leaves after all.
    spent_approval: Option<Approval>,
}

impl Evidence {
    fn issued(self, time: UnixTime, issued: &Issued, client_address: Option<String>) -> AuditEvent {
        let mut event = self.event(time, AuditDecision::Issued, None, client_address);
        event.jti = Some(issued.jti.clone());
        event.scopes_granted = Some(issued.response.scope.to_string());
        event.expires_at = Some(issued.expires_at);
        event.iat_micros = issued.iat_micros;
        event
    }

    fn refused(self, time: UnixTime, error: &GrantError, client_address: Option<String>) -> AuditEvent {
        // A request put to a person is not refused: it waits.
        let decision = match error {
            GrantError::Approval(ApprovalError::Pending(_)) => AuditDecision::Pending,
            _ => AuditDecision::Refused,
        };
        self.event(time, decision, Some(error.to_string()), client_address)
    }

    fn event(
        self,
        time: UnixTime,
        decision: AuditDecision,
        reason: Option<String>,
        client_address: Option<String>,
    ) -> AuditEvent {
        AuditEvent {
            time,
            decision,
            reason,
            action: self.grant_type,
            subject: self.subject,
            agent: self.agent,
            chain: self.chain,
            target: self.target,
            scopes_asked: self.scopes_asked,
            scopes_granted: None,
            jti: None,
            parent_jti: self.parent_jti,
            expires_at: None,
            iat_micros: None,
            rules: self.rules,
            claimed_client: self.claimed_client,
            client_address,
            approval: self.approval,
            refusals: Vec::new(),
        }
    }
}

/// Request text kept as evidence, cut to a bounded length so that a hostile
/// request cannot flood the audit trail (or paste a token into it whole).
pub(crate) fn clip(text: &str) -> String {
    const MAX: usize = 256;
    if text.len() <= MAX {
        return text.to_owned();
    }
    format!("{}…", prefix(text, MAX))
}

/// The longest start of `text` of at most `max` bytes that ends on a
/// character boundary.
pub(crate) fn prefix(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

/// A token the grant handlers minted, with what the audit trail needs.
pub(crate) struct Issued {
    response: TokenResponse,
    jti: TokenId,
    expires_at: UnixTime,
    iat_micros: Option<UnixMicros>,
}

impl Issued {
    fn new(claims: Claims, access_token: String, issued_token_type: Option<&'static str>, now: UnixTime) -> Issued {
        Issued {
            response: TokenResponse {
                access_token,
                issued_token_type,
                token_type: if claims.cnf.is_some() { "DPoP" } else { "Bearer" },
                expires_in: claims.exp.seconds_since(now),
                scope: claims.scope,
            },
            jti: claims.jti,
            expires_at: claims.exp,
            iat_micros: claims.delegation.iat_micros,
        }
    }
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
            revoking: revocation::Revoking::default(),
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

    /// Handles `POST /token`, recording the outcome.
    pub async fn token(&self, request: TokenRequest) -> Result<TokenResponse, GrantError> {
        // One policy for the whole request, even if a reload lands meanwhile.
        let policy = self.policy();
        let mut evidence = Evidence::default();
        let outcome = self.grant(&policy, &request, &mut evidence).await;
        let outcome = match (outcome, &evidence.agent) {
            // Refused after the client proved its credential: the agent is
            // known for certain, and the refusal is an event of its own.
            (Err(error), None) if proves_identity(&error) => {
                evidence.agent = evidence.claimed_client.clone();
                Err(error)
            }
            // No client authenticated: counted with the others of its kind,
            // not an event of its own, so that junk cannot flood the trail.
            (Err(error), None) => {
                self.count_refusal(&error, evidence.claimed_client.take(), request.client_address.as_deref());
                self.metrics.count_token(error::grant_type_label(request.params.get("grant_type")), (&error).into());
                return Err(error);
            }
            (outcome, _) => outcome,
        };
        let spent_approval = evidence.spent_approval.take();
        let event = match &outcome {
            Ok(issued) => evidence.issued(self.clock.now(), issued, request.client_address.clone()),
            Err(error) => evidence.refused(self.clock.now(), error, request.client_address.clone()),
        };
        // A token whose issuance cannot be recorded is not handed out.
        let answer = match self.record(event).await {
            Ok(()) => outcome.map(|issued| issued.response),
            Err(unavailable) => Err(unavailable.into()),
        };
        if let (Err(_), Some(approved)) = (&answer, spent_approval) {
            approval::restore(self, approved).await;
        }
        let counted = answer.as_ref().err().map_or(crate::metrics::TokenOutcome::Issued, Into::into);
        self.metrics.count_token(error::grant_type_label(request.params.get("grant_type")), counted);
        answer
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
    pub(crate) async fn record(&self, event: AuditEvent) -> Result<(), crate::store::StoreError> {
        tracing::info!(target: "baton::audit", event = %serde_json::to_string(&event).unwrap_or_default());
        self.stores.audit.record(event).await
    }

    async fn grant(
        &self,
        policy: &Policy,
        request: &TokenRequest,
        evidence: &mut Evidence,
    ) -> Result<Issued, GrantError> {
        let params = &request.params;
        // Until authentication succeeds, the evidence names the client the
        // request claims to be, so that attempts against one client show.
        let claimed = claimed_client(request.authorization.as_deref(), params);
        evidence.claimed_client = claimed.as_deref().map(clip);
        let grant_type = params.require("grant_type")?;
        evidence.grant_type = clip(grant_type);
        evidence.scopes_asked = params.get("scope").map(clip);
        if grant_type != CLIENT_CREDENTIALS && grant_type != TOKEN_EXCHANGE {
            return Err(RequestError::UnsupportedGrantType.into());
        }
        let address = request.client_address.as_deref();
        let client =
            self.authenticate_in(policy, request.authorization.as_deref(), params, claimed.as_deref(), address).await?;
        evidence.agent = Some(client.id().to_owned());
        // RFC 6749 §5.2: an API's introspection credentials obtain no tokens.
        let agent = client.into_agent().ok_or(ClientAuthError::NotAnAgent)?;
        let proof = self.dpop_proof(&request.dpop_proofs).await?;
        if grant_type == TOKEN_EXCHANGE {
            token_exchange::handle(self, policy, &agent, params, proof.as_ref(), evidence).await
        } else {
            // The token would carry the agent as its subject too.
            self.ensure_not_blocked(agent.id(), Some(agent.id())).await?;
            client_credentials::handle(self, policy, &agent, params, proof.as_ref(), evidence).await
        }
    }

    /// The request's DPoP proof, checked (RFC 9449 §4.3) and its `jti` spent
    /// on every node; `None` when the client sent none.
    async fn dpop_proof(&self, proofs: &[String]) -> Result<Option<Proof>, GrantError> {
        let proof = match proofs {
            [] => return Ok(None),
            [proof] => proof,
            _ => return Err(ProofError::Several.into()),
        };
        let now = self.now();
        let nonces = self.dpop_nonces()?;
        let token_endpoint = format!("{}/token", self.settings.issuer);
        let expected =
            dpop::Expected { method: "POST", uri: &token_endpoint, access_token: None, nonce: nonces.as_ref() };
        let proof = dpop::check(proof, &expected, now)?;
        match self.stores.replay.use_once(&proof.replay_id(), proof.replay_until(), now).await? {
            Use::First => Ok(Some(proof)),
            Use::Replayed => Err(ProofError::Replayed.into()),
        }
    }

    /// The server nonce DPoP proofs must carry now, when nonces are on: the
    /// HTTP layer hands it out in a `DPoP-Nonce` header (RFC 9449 §8).
    pub fn dpop_nonce(&self) -> Option<String> {
        self.dpop_nonces().ok().flatten().map(|nonces| nonces.current(self.now()))
    }

    fn dpop_nonces(&self) -> Result<Option<Nonces>, GrantError> {
        if !self.settings.dpop_nonce {
            return Ok(None);
        }
        let secret = self
            .keys()
            .signing()
            .derive_secret(b"dpop nonce")
            .ok_or_else(|| GrantError::Mint(crate::token::MintError::new("no nonce secret")))?;
        Ok(Some(Nonces::new(&secret)))
    }

    /// Refuses a deprovisioned agent until it is reinstated (DESIGN.md §2.4).
    /// An exchange needs no separate call: the parent's revocation check
    /// names its holder, the acting agent, and asks here only when it fails.
    pub(crate) async fn ensure_not_blocked(&self, agent: &str, subject: Option<&str>) -> Result<(), GrantError> {
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

    /// Verifies one of this broker's own tokens.
    fn verify(&self, token: &str) -> Result<crate::token::Verified<Claims>, crate::token::VerifyError> {
        crate::token::verify(token, self.keys().as_ref(), &self.validation, self.clock.as_ref())
    }

    fn now(&self) -> UnixTime {
        self.clock.now()
    }

    /// Now, in microseconds (an issue instant or a deprovisioning's cut-off).
    fn now_micros(&self) -> UnixMicros {
        self.clock.now_micros()
    }

    /// A fresh, unguessable token id: 128 random bits.
    fn new_jti(&self) -> Result<TokenId, GrantError> {
        let mut bytes = [0u8; 16];
        self.random
            .fill(&mut bytes)
            .map_err(|_| GrantError::Mint(crate::token::MintError::new("no randomness available")))?;
        Ok(TokenId(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
    }
}

/// The asked scopes, if any, parsed.
fn asked_scopes(params: &TokenParams) -> Result<Option<ScopeSet>, GrantError> {
    params
        .get("scope")
        .map(|text| ScopeSet::parse(text).map_err(|_| GrantError::Request(RequestError::MalformedScope)))
        .transpose()
}

/// The one target named by `audience` and/or `resource` (RFC 8693 §2.1, RFC 8707).
fn named_target(params: &TokenParams) -> Result<Option<&str>, GrantError> {
    // RFC 8707 §2: a resource is an absolute URI without a fragment; agents
    // are named with `audience`.
    if params.get("resource").is_some_and(|resource| !resource.contains("://") || resource.contains('#')) {
        return Err(RequestError::ResourceNotUri.into());
    }
    match (params.get("audience"), params.get("resource")) {
        (Some(audience), Some(resource)) if audience != resource => Err(RequestError::ConflictingTargets.into()),
        (Some(target), _) | (None, Some(target)) => Ok(Some(target)),
        (None, None) => Ok(None),
    }
}
