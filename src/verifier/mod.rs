//! The verifier for APIs that receive Baton tokens (DESIGN.md §7).
//!
//! An API builds one [`Verifier`] with [`Verifier::builder`] and puts
//! [`VerifierLayer`] in front of its routes. Each request's bearer token is
//! checked in the order RFC 9068 §4 and RFC 8725 give: explicit type, the
//! algorithm allow-list, the signature against the issuer's JWKS (found by
//! discovery, cached, refetched on an unknown `kid` at most once per
//! [`JWKS_REFETCH_INTERVAL`]), issuer, audience, times, the `delegation`
//! path (only narrowing, within the depth limit), required scopes, and
//! revocation. A DPoP-bound token (RFC 9449) passes only under the `DPoP`
//! scheme with a proof of its key, for this request, used once; presented
//! as `Bearer` it is refused. The handler receives the caller as a typed
//! [`Caller`].
//!
//! An API may describe itself to clients by RFC 9728 protected resource
//! metadata ([`VerifierBuilder::publish_metadata`], [`metadata_routes`]),
//! which names Baton as its authorization server; its `Bearer` refusals then
//! point there (`resource_metadata`), so that an MCP client, or any client
//! that follows RFC 9728, finds where to get a token. [`ToolScopesLayer`]
//! asks each MCP tool's own scopes on `tools/call`, and [`McpSessionsLayer`]
//! keeps each MCP session to the caller that opened it.
//!
//! There is no way to switch signature checking off. Skipping the revocation
//! check is possible only through [`danger`], and says so.

pub mod danger;
mod introspection;
mod jwks;
mod layer;
mod mcp_sessions;
mod metadata;
mod tool_scopes;

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

pub use jwks::{published_keys, JwksError};
pub use layer::{VerifierLayer, VerifierService};
pub use mcp_sessions::{McpSessionsLayer, McpSessionsService};
pub use metadata::{metadata_routes, ResourceMetadata};
pub use tool_scopes::{ToolScopesLayer, ToolScopesService};

use crate::claims::{Claims, ScopeSet};
use crate::clock::{Clock, SystemClock};
use crate::dpop::{self, ProofError};
use crate::ids::{AgentId, Audience, Issuer, Subject};
use crate::keys::Algorithm;
use crate::store::memory::MemoryStore;
use crate::store::{Lineage, ReplayStore, RevocationStore, Status, Use};
use crate::token::{self, AudienceRule, Validation, VerifyError};

/// The shortest time between two JWKS fetches caused by unknown `kid`s, so
/// that a stream of forged tokens cannot make the API hammer the issuer.
pub const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// The longest an introspection answer may be cached: a revocation is seen
/// by the API within this time.
pub const MAX_INTROSPECTION_CACHE: Duration = Duration::from_secs(10);

/// How revocation is checked.
#[derive(Clone)]
pub(crate) enum RevocationSource {
    /// The broker's own state store (its Redis, or its embedded store when
    /// the API runs in the same process): one lookup per request.
    Store(Arc<dyn RevocationStore>),
    /// The broker's introspection endpoint (RFC 7662), answers cached
    /// briefly: one call per token per cache period.
    Introspection(Arc<introspection::Introspector>),
    /// No check at all: only through [`danger::without_revocation_check`].
    Unchecked,
}

/// A caller whose token passed every check. Only the verifier makes one.
#[derive(Debug, Clone)]
pub struct Caller {
    claims: Claims,
}

impl Caller {
    /// Whose authority flows (the chain's subject).
    pub fn subject(&self) -> &Subject {
        &self.claims.sub
    }

    /// The agent calling now: the one that obtained this token.
    pub fn agent(&self) -> &AgentId {
        &self.claims.client_id
    }

    /// The agents that exchanged the token on its way here, newest first.
    pub fn chain(&self) -> Vec<&AgentId> {
        self.claims.chain()
    }

    /// The granted scopes.
    pub fn scope(&self) -> &ScopeSet {
        &self.claims.scope
    }

    /// Every claim.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// That the token holds every scope of `scopes`. When it does not, the
    /// refusal asks for what it holds and what it lacks together, so that a
    /// client that steps up (RFC 6750 §3.1, the MCP scope challenge) keeps
    /// the rights it had.
    pub fn require(&self, scopes: &ScopeSet) -> Result<(), Rejection> {
        if scopes.is_subset(&self.claims.scope) {
            Ok(())
        } else {
            Err(Rejection::InsufficientScope { ask_for: self.claims.scope.union(scopes) })
        }
    }
}

/// Why a request is refused (RFC 6750 §3.1).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Rejection {
    /// No bearer token, or more than one.
    #[error("no bearer token")]
    Missing,
    /// The token does not verify.
    #[error("invalid token: {0}")]
    Invalid(VerifyError),
    /// The token is for another API.
    #[error("token is for another audience")]
    WrongAudience,
    /// The token lacks a required scope.
    #[error("insufficient scope")]
    InsufficientScope {
        /// The scopes a new token should carry: those held and those lacking.
        ask_for: ScopeSet,
    },
    /// It, an ancestor, or a principal of its chain was revoked.
    #[error("token revoked")]
    Revoked,
    /// A DPoP-bound token presented as a bearer token (RFC 9449 §7.1), or
    /// an unbound one under the `DPoP` scheme.
    #[error("token presented under the wrong scheme")]
    WrongScheme,
    /// The DPoP proof is missing or not acceptable (RFC 9449 §4.3).
    #[error("DPoP proof: {0}")]
    Proof(ProofError),
    /// The issuer's keys or the revocation state cannot be read: fail closed.
    #[error("verification unavailable: {0}")]
    Unavailable(String),
}

/// What a request presents: a token, and under the `DPoP` scheme its proof.
#[derive(Debug, Clone, Copy)]
pub enum Presented<'a> {
    /// `Authorization: Bearer` (RFC 6750).
    Bearer(&'a str),
    /// `Authorization: DPoP` with the request's one `DPoP` header (RFC 9449 §7.1).
    Dpop {
        /// The access token.
        token: &'a str,
        /// The proof.
        proof: &'a str,
        /// The request's method.
        method: &'a str,
        /// The request's path (the API's public URL is put before it).
        path: &'a str,
    },
}

/// Checks Baton tokens for one API.
pub struct Verifier {
    audience: String,
    required_scopes: ScopeSet,
    rules: Validation,
    keys: jwks::JwksCache,
    revocation: RevocationSource,
    clock: Arc<dyn Clock>,
    realm: String,
    /// Where clients reach this API: the start of every proof's `htu`.
    public_url: Option<String>,
    /// Single use of proof `jti`s.
    replay: Arc<dyn ReplayStore>,
    /// What the API publishes about itself (RFC 9728 §2).
    metadata: ResourceMetadata,
    /// Where that document is, when published: named in `Bearer` refusals
    /// (RFC 9728 §5.1).
    metadata_url: Option<String>,
}

impl Verifier {
    /// A builder for the issuer at `issuer`.
    pub fn builder(issuer: impl Into<String>) -> VerifierBuilder {
        VerifierBuilder {
            issuer: issuer.into(),
            audience: None,
            required_scopes: ScopeSet::default(),
            algorithms: vec![Algorithm::Es256, Algorithm::EdDsa],
            leeway: 30,
            max_depth: 5,
            revocation: None,
            clock: Arc::new(SystemClock),
            http: None,
            introspection: None,
            public_url: None,
            replay: None,
            scopes_supported: None,
            resource_name: None,
            metadata: Publish::No,
        }
    }

    /// The scopes every request must hold.
    pub fn required_scopes(&self) -> &ScopeSet {
        &self.required_scopes
    }

    /// The realm named in `WWW-Authenticate`.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The API's protected resource metadata (RFC 9728 §2).
    pub fn metadata(&self) -> &ResourceMetadata {
        &self.metadata
    }

    /// Where the metadata is published, when the API publishes it
    /// ([`VerifierBuilder::publish_metadata`], [`VerifierBuilder::metadata_url`]).
    pub fn metadata_url(&self) -> Option<&str> {
        self.metadata_url.as_deref()
    }

    /// Checks a bearer token. A DPoP-bound token is refused here: it is
    /// accepted only with a proof, through [`Verifier::verify_presented`].
    pub async fn verify(&self, token: &str) -> Result<Caller, Rejection> {
        self.verify_presented(Presented::Bearer(token)).await
    }

    /// Checks what a request presents: a bearer token, or a DPoP-bound
    /// token with its proof (RFC 9449 §7.1).
    pub async fn verify_presented(&self, presented: Presented<'_>) -> Result<Caller, Rejection> {
        let token = match presented {
            Presented::Bearer(token) | Presented::Dpop { token, .. } => token,
        };
        let claims = self.signed_for_this_api(token).await?;
        // The holder is proven before anything else is looked at, so that a
        // thief without the key learns nothing from scope or revocation.
        match (presented, claims.jkt()) {
            (Presented::Bearer(_), None) => {}
            (Presented::Dpop { proof, method, path, .. }, Some(jkt)) => {
                self.check_proof(token, (proof, method, path, jkt)).await?;
            }
            (Presented::Bearer(_), Some(_)) | (Presented::Dpop { .. }, None) => return Err(Rejection::WrongScheme),
        }
        let caller = Caller { claims };
        caller.require(&self.required_scopes)?;
        self.check_revocation(token, &caller.claims).await?;
        Ok(caller)
    }

    /// RFC 9449 §4.3 at a resource server, with step 13: the proof's key is
    /// the token's, and its `jti` is used once.
    async fn check_proof(
        &self,
        token: &str,
        (proof, method, path, jkt): (&str, &str, &str, &str),
    ) -> Result<(), Rejection> {
        let base = self.public_url.as_deref().unwrap_or(&self.audience);
        let uri = format!("{}{path}", base.trim_end_matches('/'));
        let now = self.clock.now();
        let expected = dpop::Expected { method, uri: &uri, access_token: Some(token), nonce: None };
        let proof = dpop::check(proof, &expected, now).map_err(Rejection::Proof)?;
        if proof.jkt() != jkt {
            return Err(Rejection::Proof(ProofError::KeyMismatch));
        }
        match self.replay.use_once(&proof.replay_id(), proof.replay_until(), now).await {
            Ok(Use::First) => Ok(()),
            Ok(Use::Replayed) => Err(Rejection::Proof(ProofError::Replayed)),
            Err(error) => Err(Rejection::Unavailable(error.detail().to_owned())),
        }
    }

    /// RFC 9068 §4: the token verifies with the issuer's keys and is for this API.
    async fn signed_for_this_api(&self, token: &str) -> Result<Claims, Rejection> {
        let keys = self.keys.current().await.map_err(|error| Rejection::Unavailable(error.to_string()))?;
        let verified = match token::verify(token, keys.as_ref(), &self.rules, self.clock.as_ref()) {
            // A key we do not know yet may be a rotation at the issuer.
            Err(VerifyError::UnknownKey) => {
                let keys = self.keys.refetch().await.map_err(|error| Rejection::Unavailable(error.to_string()))?;
                token::verify(token, keys.as_ref(), &self.rules, self.clock.as_ref())
            }
            other => other,
        }
        .map_err(|error| match error {
            VerifyError::WrongAudience => Rejection::WrongAudience,
            other => Rejection::Invalid(other),
        })?;
        Ok(verified.into_claims())
    }

    /// That neither the token nor its lineage is revoked.
    async fn check_revocation(&self, token: &str, claims: &Claims) -> Result<(), Rejection> {
        match &self.revocation {
            RevocationSource::Store(store) => match store.check(&Lineage::of(claims)).await {
                Ok(Status::Active) => {}
                Ok(Status::Revoked | Status::Deprovisioned) => return Err(Rejection::Revoked),
                Err(error) => return Err(Rejection::Unavailable(error.detail().to_owned())),
            },
            RevocationSource::Introspection(introspector) => match introspector.is_active(token, &claims.jti).await {
                Ok(true) => {}
                Ok(false) => return Err(Rejection::Revoked),
                Err(reason) => return Err(Rejection::Unavailable(reason)),
            },
            RevocationSource::Unchecked => {}
        }
        Ok(())
    }
}

/// Builds a [`Verifier`] with safe defaults: ES256 and EdDSA only, 30 s of
/// leeway, depth at most 5, and a revocation source required.
pub struct VerifierBuilder {
    issuer: String,
    audience: Option<String>,
    required_scopes: ScopeSet,
    algorithms: Vec<Algorithm>,
    leeway: i64,
    max_depth: u32,
    revocation: Option<RevocationSource>,
    clock: Arc<dyn Clock>,
    http: Option<reqwest::Client>,
    introspection: Option<(String, SecretString, Duration)>,
    public_url: Option<String>,
    replay: Option<Arc<dyn ReplayStore>>,
    scopes_supported: Option<ScopeSet>,
    resource_name: Option<String>,
    metadata: Publish,
}

/// Whether, and where, the API publishes its metadata.
enum Publish {
    No,
    AtWellKnown,
    At(String),
}

/// A verifier that cannot be built as configured.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BuildError {
    /// No audience: every API must say which tokens are its own.
    #[error("an audience is required")]
    NoAudience,
    /// No revocation source: use the broker's store, or say so through `danger`.
    #[error("a revocation source is required")]
    NoRevocationSource,
    /// Both a store and introspection were given.
    #[error("give one revocation source, not two")]
    TwoRevocationSources,
    /// The HTTP client could not be built.
    #[error("the HTTP client could not be built")]
    HttpClient,
    /// The introspection cache is longer than [`MAX_INTROSPECTION_CACHE`].
    #[error("introspection answers may be cached for at most 10 seconds")]
    IntrospectionCache,
    /// The algorithm list is empty.
    #[error("at least one algorithm is required")]
    NoAlgorithm,
    /// Leeway must be between 0 and 300 seconds.
    #[error("leeway must be between 0 and 300 seconds")]
    Leeway,
    /// The metadata's URL is not one the API can serve it at: an absolute
    /// http(s) URL without query or fragment, whose path is a plain route
    /// (from the audience, for the well-known URL).
    #[error("the metadata URL must be an absolute http(s) URL without query or fragment, with a plain path")]
    MetadataUrl,
}

impl VerifierBuilder {
    /// The API's own identifier: tokens must carry it as `aud`.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Scopes every request must hold.
    pub fn require_scopes(mut self, scopes: ScopeSet) -> Self {
        self.required_scopes = scopes;
        self
    }

    /// Accepted algorithms, within ES256 and EdDSA.
    pub fn algorithms(mut self, algorithms: Vec<Algorithm>) -> Self {
        self.algorithms = algorithms;
        self
    }

    /// Tolerated clock difference, in seconds (0 to 300).
    pub fn leeway(mut self, seconds: i64) -> Self {
        self.leeway = seconds;
        self
    }

    /// The deepest delegation accepted.
    pub fn max_depth(mut self, depth: u32) -> Self {
        self.max_depth = depth;
        self
    }

    /// Where revocation is checked.
    pub fn revocation(mut self, store: Arc<dyn RevocationStore>) -> Self {
        self.revocation = Some(RevocationSource::Store(store));
        self
    }

    /// Where revocation is checked: the broker's introspection endpoint
    /// (found by discovery), authenticated as the API's introspection client
    /// with `client_secret_basic`; answers are cached for `cache`.
    pub fn introspection(
        mut self,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        cache: Duration,
    ) -> Self {
        self.introspection = Some((client_id.into(), SecretString::from(client_secret.into()), cache));
        self
    }

    /// Where clients reach this API (scheme, host and port, and the prefix
    /// of a `nest` the layer sits under), the start of the `htu` of DPoP
    /// proofs [default: the audience].
    pub fn public_url(mut self, url: impl Into<String>) -> Self {
        self.public_url = Some(url.into());
        self
    }

    /// Where DPoP proof `jti`s are recorded as used: the broker's store, so
    /// that every instance of the API refuses a replay [default: this
    /// process's memory].
    pub fn replay(mut self, store: Arc<dyn ReplayStore>) -> Self {
        self.replay = Some(store);
        self
    }

    /// The scopes the API's metadata lists [default: the required scopes].
    /// An API whose operations ask different scopes lists them all here.
    pub fn scopes_supported(mut self, scopes: ScopeSet) -> Self {
        self.scopes_supported = Some(scopes);
        self
    }

    /// A name for people, in the API's metadata.
    pub fn resource_name(mut self, name: impl Into<String>) -> Self {
        self.resource_name = Some(name.into());
        self
    }

    /// The API serves its metadata ([`metadata_routes`]) at the well-known
    /// URL its audience gives (RFC 9728 §3.1), and every refusal names it
    /// (§5.1). The audience must then be an http(s) URL: where clients
    /// reach the API, as MCP clients expect.
    pub fn publish_metadata(mut self) -> Self {
        self.metadata = Publish::AtWellKnown;
        self
    }

    /// The same as [`VerifierBuilder::publish_metadata`], at another URL:
    /// for an API reached elsewhere than at its identifier.
    pub fn metadata_url(mut self, url: impl Into<String>) -> Self {
        self.metadata = Publish::At(url.into());
        self
    }

    /// The clock (tests use a fixed one).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The HTTP client used for discovery and the JWKS.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    pub(crate) fn unchecked_revocation(mut self) -> Self {
        self.revocation = Some(RevocationSource::Unchecked);
        self
    }

    /// Builds the verifier. Keys are fetched on first use.
    pub fn build(self) -> Result<Verifier, BuildError> {
        let audience = self.audience.ok_or(BuildError::NoAudience)?;
        // A silent issuer must not stall the API: every call is bounded.
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(5))
                .build()
                .map_err(|_| BuildError::HttpClient)?,
        };
        let revocation = match (self.revocation, self.introspection) {
            (Some(_), Some(_)) => return Err(BuildError::TwoRevocationSources),
            (Some(source), None) => source,
            (None, Some((_, _, cache))) if cache > MAX_INTROSPECTION_CACHE => {
                return Err(BuildError::IntrospectionCache)
            }
            (None, Some((client_id, secret, cache))) => RevocationSource::Introspection(Arc::new(
                introspection::Introspector::new(self.issuer.clone(), http.clone(), client_id, secret, cache),
            )),
            (None, None) => return Err(BuildError::NoRevocationSource),
        };
        if self.algorithms.is_empty() {
            return Err(BuildError::NoAlgorithm);
        }
        if !(0..=300).contains(&self.leeway) {
            return Err(BuildError::Leeway);
        }
        let audience_rule = AudienceRule::Is(Audience::new(audience.clone()));
        let metadata = ResourceMetadata::new(
            &audience,
            &self.issuer,
            self.scopes_supported.as_ref().unwrap_or(&self.required_scopes),
            self.resource_name,
        );
        let metadata_url = match self.metadata {
            Publish::No => None,
            Publish::AtWellKnown => Some(metadata::well_known_url(&audience).ok_or(BuildError::MetadataUrl)?),
            Publish::At(url) => Some(url),
        };
        if metadata_url.as_deref().is_some_and(|url| !metadata::is_servable(url)) {
            return Err(BuildError::MetadataUrl);
        }
        Ok(Verifier {
            realm: audience.clone(),
            audience,
            required_scopes: self.required_scopes,
            rules: Validation {
                issuer: Issuer::new(self.issuer.clone()),
                max_token_bytes: 16 * 1024,
                max_depth: self.max_depth,
                algorithms: self.algorithms,
                leeway: self.leeway,
                audience: audience_rule,
            },
            keys: jwks::JwksCache::new(self.issuer, http),
            revocation,
            clock: self.clock,
            public_url: self.public_url,
            replay: self.replay.unwrap_or_else(|| Arc::new(MemoryStore::new())),
            metadata,
            metadata_url,
        })
    }
}
