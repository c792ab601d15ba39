//! People's tokens from trusted identity providers (DESIGN.md §3): an ID
//! token or JWT access token that starts a chain for the person it names.
//!
//! Only providers listed in `issuers.toml` are ever contacted, at the issuer
//! URL written there: a token's `iss` only selects among them, and its
//! `jku`, `x5u` or `kid` never make Baton fetch anything. Metadata and keys
//! come from OIDC discovery through the `openidconnect` crate, are cached,
//! and are fetched again on an unknown key at most once per
//! [`REFETCH_INTERVAL`].
//!
//! Validation is the `openidconnect` crate's (OIDC Core §3.1.3.7): issuer,
//! audience, algorithm allow-list, signature with the provider's keys, and
//! expiry against Baton's clock, with the configured leeway for the clocks'
//! difference; `iat` no later than now plus that leeway. The nonce belongs
//! to the sign-in and is not Baton's to check. Before it, as for Baton's own
//! tokens (RFC 8725 §3.10), a header that names or carries a key (`jku`,
//! `x5u`, `jwk`, `x5c`) is refused: keys come from the provider's JWKS only.
//!
//! Two claims of RFC 8693 are read from the verified token:
//! - `may_act` (§4.4), an object with `sub` and optionally `iss`: where the
//!   token carries it, only the agent it names exactly may start the chain
//!   (checked by the exchange with [`MayAct::names`]); a `may_act` that is
//!   not such an object is refused.
//! - `act` (§4.1): a token that already carries a delegation history is
//!   refused. Baton cannot verify a chain another issuer wrote, and it will
//!   neither drop that history silently nor graft it into its own chain,
//!   whose every hop it vouches for.

pub mod sign_in;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openidconnect::core::{
    CoreGenderClaim, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata,
};
use openidconnect::{
    AdditionalClaims, ClaimsVerificationError, ClientId, IdToken, IdTokenClaims, IdTokenVerifier, IssuerUrl,
    JsonWebTokenType, Nonce, SignatureVerificationError,
};
use serde::{Deserialize, Serialize};

use crate::claims::{MayAct, ScopeSet, TokenId};
use crate::clock::{Clock, UnixTime};
use crate::ids::{AgentId, Audience, Issuer, Subject};
use crate::jose;
use crate::policy::TrustedIssuer;

/// The shortest time between two key fetches for one provider caused by an
/// unknown key, so that forged tokens cannot make Baton hammer it.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// The longest the provider's metadata and keys are used before they are
/// fetched again.
pub const MAX_AGE: Duration = Duration::from_secs(300);

/// A person a trusted provider vouched for. Only [`Providers::verify`]
/// makes one.
#[derive(Debug, Clone)]
pub struct Person {
    issuer: Issuer,
    subject: Subject,
    client: AgentId,
    audience: Audience,
    scope: Option<ScopeSet>,
    token_id: TokenId,
    issued_at: UnixTime,
    expires_at: UnixTime,
    jkt: Option<String>,
    may_act: Option<MayAct>,
}

impl Person {
    /// The provider's issuer identifier.
    pub fn issuer(&self) -> &Issuer {
        &self.issuer
    }

    /// The chain's subject: the person, prefixed as the provider is configured.
    pub fn subject(&self) -> &Subject {
        &self.subject
    }

    /// The client the person signed in to (`azp`, else the audience).
    pub fn client(&self) -> &AgentId {
        &self.client
    }

    /// The audience the token was checked for.
    pub fn audience(&self) -> &Audience {
        &self.audience
    }

    /// The scopes the token carries, if any: they cap the chain.
    pub fn scope(&self) -> Option<&ScopeSet> {
        self.scope.as_ref()
    }

    /// The token's `jti`, or the SHA-256 of the token when it has none, so
    /// that the sign-in can be revoked like any ancestor.
    pub fn token_id(&self) -> &TokenId {
        &self.token_id
    }

    /// When the token was issued.
    pub fn issued_at(&self) -> UnixTime {
        self.issued_at
    }

    /// The thumbprint of the key the provider bound the token to
    /// (`cnf.jkt`, RFC 9449 §6.1), if it did.
    pub fn jkt(&self) -> Option<&str> {
        self.jkt.as_deref()
    }

    /// When the token expires: no token of the chain outlives it.
    pub fn expires_at(&self) -> UnixTime {
        self.expires_at
    }

    /// The one agent the person allows to act, where the token says
    /// (`may_act`, RFC 8693 §4.4).
    pub fn may_act(&self) -> Option<&MayAct> {
        self.may_act.as_ref()
    }
}

/// What the client declared a person's token to be (`subject_token_type`,
/// RFC 8693 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared {
    /// An ID token: its `typ`, if any, is `JWT`, never `at+jwt`, so that an
    /// access token cannot pass for a sign-in (RFC 9068 §2.1, RFC 8725 §3.11).
    IdToken,
    /// An access token or a JWT: `JWT` (as many providers label access
    /// tokens) or `at+jwt` (RFC 9068).
    AccessTokenOrJwt,
}

impl Declared {
    fn jose_types(self) -> &'static [&'static str] {
        match self {
            Declared::IdToken => &["JWT"],
            Declared::AccessTokenOrJwt => &["JWT", "at+jwt"],
        }
    }
}

/// Why a person's token is not accepted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// The token fails validation (issuer, audience, algorithm, signature,
    /// expiry), or lacks the claim that names the person.
    #[error("identity provider token: {0}")]
    Invalid(String),
    /// The provider's metadata or keys cannot be fetched: fail closed.
    #[error("identity provider unreachable: {0}")]
    Unreachable(String),
}

/// The claims beside the standard ones that Baton reads.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct OtherClaims {
    #[serde(flatten)]
    claims: serde_json::Map<String, serde_json::Value>,
}

impl AdditionalClaims for OtherClaims {}

type PersonToken = IdToken<OtherClaims, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>;

/// The claims of a person's token, as the `openidconnect` crate verified them.
type PersonClaims = IdTokenClaims<OtherClaims, CoreGenderClaim>;

/// One provider's discovered keys.
struct Discovered {
    keys: CoreJsonWebKeySet,
    jwks_uri: openidconnect::JsonWebKeySetUrl,
    fetched: Instant,
}

/// The trusted providers' caches, shared by every request.
pub struct Providers {
    /// `None` when no client could be built: every provider is then unreachable.
    http: Option<reqwest::Client>,
    clock: Arc<dyn Clock>,
    discovered: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Discovered>>>>>,
}

impl Providers {
    /// Caches for providers reached with bounded HTTP calls, without
    /// following redirects (OIDC Discovery §4: the issuer answers itself).
    pub fn new(clock: Arc<dyn Clock>) -> Providers {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .build()
            .ok();
        Providers { http, clock, discovered: Mutex::new(HashMap::new()) }
    }

    /// Validates a person's token from `trusted` and names the person,
    /// tolerating `leeway` seconds of clock difference with the provider.
    pub async fn verify(
        &self,
        trusted: &TrustedIssuer,
        token: &str,
        declared: Declared,
        leeway: i64,
    ) -> Result<Person, UpstreamError> {
        refuse_key_headers(token)?;
        let parsed: PersonToken = token.parse().map_err(|_| UpstreamError::Invalid("not a JWT".into()))?;
        let slot = self.slot(&trusted.issuer);
        let mut discovered = slot.lock().await;
        let keys = self.keys(trusted, &mut discovered, false).await?;
        let claims = match self.check(trusted, &parsed, keys, declared, leeway) {
            // A key not seen yet may be a rotation at the provider.
            Err(ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey)) => {
                let keys = self.keys(trusted, &mut discovered, true).await?;
                self.check(trusted, &parsed, keys, declared, leeway)
            }
            other => other,
        }
        .map_err(|error| UpstreamError::Invalid(error.to_string()))?;
        drop(discovered);
        person(trusted, token, claims)
    }

    fn slot(&self, issuer: &str) -> Arc<tokio::sync::Mutex<Option<Discovered>>> {
        let mut slots = match self.discovered.lock() {
            Ok(slots) => slots,
            Err(poisoned) => poisoned.into_inner(),
        };
        slots.entry(issuer.to_owned()).or_default().clone()
    }

    /// The provider's keys: discovered on first use or when too old, and
    /// fetched again on `unknown_key` when the last fetch is not too recent.
    async fn keys<'a>(
        &self,
        trusted: &TrustedIssuer,
        discovered: &'a mut Option<Discovered>,
        unknown_key: bool,
    ) -> Result<&'a CoreJsonWebKeySet, UpstreamError> {
        let http = self.http.as_ref().ok_or_else(|| UpstreamError::Unreachable("no HTTP client".into()))?;
        let stale = discovered.as_ref().is_none_or(|known| known.fetched.elapsed() > MAX_AGE);
        let may_refetch = discovered.as_ref().is_some_and(|known| known.fetched.elapsed() >= REFETCH_INTERVAL);
        if stale {
            let issuer = IssuerUrl::new(trusted.issuer.as_str().to_owned())
                .map_err(|error| UpstreamError::Unreachable(error.to_string()))?;
            let metadata = CoreProviderMetadata::discover_async(issuer, http)
                .await
                .map_err(|error| UpstreamError::Unreachable(format!("discovery: {error}")))?;
            *discovered = Some(Discovered {
                keys: metadata.jwks().clone(),
                jwks_uri: metadata.jwks_uri().clone(),
                fetched: Instant::now(),
            });
        } else if unknown_key && may_refetch {
            if let Some(known) = discovered.as_mut() {
                known.keys = CoreJsonWebKeySet::fetch_async(&known.jwks_uri, http)
                    .await
                    .map_err(|error| UpstreamError::Unreachable(format!("keys: {error}")))?;
                known.fetched = Instant::now();
            }
        }
        discovered.as_ref().map(|known| &known.keys).ok_or_else(|| UpstreamError::Unreachable("no keys".into()))
    }

    /// The token's claims, once they validate at the provider's `keys`.
    fn check<'token>(
        &self,
        trusted: &TrustedIssuer,
        token: &'token PersonToken,
        keys: &CoreJsonWebKeySet,
        declared: Declared,
        leeway: i64,
    ) -> Result<&'token PersonClaims, ClaimsVerificationError> {
        let issuer = IssuerUrl::new(trusted.issuer.as_str().to_owned())
            .map_err(|error| ClaimsVerificationError::Other(error.to_string()))?;
        let algorithms = trusted
            .algorithms
            .iter()
            .filter_map(|name| serde_json::from_value(serde_json::Value::String(name.clone())).ok());
        let now = self.clock.now();
        let at = |time: UnixTime| {
            chrono::DateTime::from_timestamp(time.0, 0).unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
        };
        // The crate refuses a token once this time reaches `exp`: the leeway
        // is taken off now. The child is capped by `exp` all the same.
        let expiry_clock = at(now.plus(leeway.saturating_neg()));
        let latest_issue = at(now.plus(leeway));
        let verifier =
            IdTokenVerifier::new_public_client(ClientId::new(trusted.audience.clone()), issuer, keys.clone())
                .set_allowed_algs(algorithms)
                .set_allowed_jose_types(
                    declared
                        .jose_types()
                        .iter()
                        .filter_map(|typ| JsonWebTokenType::new((*typ).into()).normalize().ok()),
                )
                .set_time_fn(move || expiry_clock)
                // OIDC Core §3.1.3.7 step 10: `iat` may limit how far away
                // a token was issued; one from the future is refused.
                .set_issue_time_verifier_fn(move |issued| {
                    if issued > latest_issue {
                        Err("issued in the future".to_owned())
                    } else {
                        Ok(())
                    }
                });
        // The nonce binds the token to the sign-in that asked for it; that is
        // the client's check, not Baton's.
        token.claims(&verifier, |_: Option<&Nonce>| Ok(()))
    }
}

/// The person a validated token names, read from the claims `check` verified.
fn person(trusted: &TrustedIssuer, raw: &str, claims: &PersonClaims) -> Result<Person, UpstreamError> {
    let other = &claims.additional_claims().claims;
    let text = |name: &str| other.get(name).and_then(serde_json::Value::as_str);
    let name = subject_name(claims, &trusted.subject_claim)
        .filter(|name| !name.is_empty())
        .ok_or_else(|| UpstreamError::Invalid(format!("no `{}` claim", trusted.subject_claim)))?;
    // An email names a person only once the provider has verified it.
    if trusted.subject_claim == "email" && claims.email_verified() != Some(true) {
        return Err(UpstreamError::Invalid("email not verified".into()));
    }
    let scope = match text("scope") {
        Some(scope) => Some(ScopeSet::parse(scope).map_err(|_| UpstreamError::Invalid("scope".into()))?),
        None => None,
    };
    // A binding Baton cannot check (mTLS `x5t#S256`, or anything but
    // `jkt`) would make the token a bearer token here: refused.
    let jkt = match other.get("cnf") {
        None => None,
        Some(cnf) => match cnf.get("jkt").and_then(serde_json::Value::as_str) {
            Some(jkt) => Some(jkt.to_owned()),
            None => return Err(UpstreamError::Invalid("bound by a method other than DPoP".into())),
        },
    };
    // RFC 8693 §4.1: a history written by another issuer cannot be
    // verified here; it is refused rather than dropped (module doc).
    if other.contains_key("act") {
        return Err(UpstreamError::Invalid("the token carries its own act chain".into()));
    }
    // RFC 8693 §4.4: the one party allowed to act, checked by the exchange.
    let may_act = match other.get("may_act") {
        None => None,
        Some(value) => Some(
            MayAct::deserialize(value)
                .map_err(|_| UpstreamError::Invalid("may_act is not an object with a string sub".into()))?,
        ),
    };
    let token_id = match text("jti") {
        Some(jti) if !jti.is_empty() && jti.len() <= 256 => TokenId(jti.to_owned()),
        _ => TokenId(URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, raw.as_bytes()))),
    };
    // The provider's client, recorded as the root hop's agent; never one of
    // the broker's agents (`narrowing::check_path` leaves it out of the chain).
    let client = AgentId::new(
        claims.authorized_party().map(|azp| azp.as_str()).or(text("client_id")).unwrap_or(&trusted.audience),
    );
    // Both were checked to be present and valid times by `check`; a
    // fractional second is not one Baton keeps.
    let time = |at: chrono::DateTime<chrono::Utc>| (at.timestamp_subsec_nanos() == 0).then(|| UnixTime(at.timestamp()));
    let (Some(issued_at), Some(expires_at)) = (time(claims.issue_time()), time(claims.expiration())) else {
        return Err(UpstreamError::Invalid("iat and exp must be whole seconds".into()));
    };
    Ok(Person {
        issuer: trusted.issuer.clone(),
        subject: trusted.subject(&name),
        client,
        audience: Audience::new(trusted.audience.clone()),
        scope,
        token_id,
        issued_at,
        expires_at,
        jkt,
        may_act,
    })
}

/// The configured claim that names the person. The common standard
/// claims come from the crate's accessors (it keeps them out of the
/// additional claims), any other claim from the additional ones; a standard
/// claim without an accessor here (`website`, a localized `name#fr`, …) is
/// read from the verified claims as the crate writes them back.
fn subject_name(claims: &PersonClaims, name: &str) -> Option<String> {
    let standard = match name {
        "sub" => Some(claims.subject().as_str()),
        "email" => claims.email().map(|email| email.as_str()),
        "preferred_username" => claims.preferred_username().map(|username| username.as_str()),
        "phone_number" => claims.phone_number().map(|number| number.as_str()),
        "name" => claims.name().and_then(|claim| claim.get(None)).map(|name| name.as_str()),
        "given_name" => claims.given_name().and_then(|claim| claim.get(None)).map(|name| name.as_str()),
        "family_name" => claims.family_name().and_then(|claim| claim.get(None)).map(|name| name.as_str()),
        "middle_name" => claims.middle_name().and_then(|claim| claim.get(None)).map(|name| name.as_str()),
        "nickname" => claims.nickname().and_then(|claim| claim.get(None)).map(|name| name.as_str()),
        other => claims.additional_claims().claims.get(other).and_then(serde_json::Value::as_str),
    };
    if let Some(name) = standard {
        return Some(name.to_owned());
    }
    let written = serde_json::to_value(claims).ok()?;
    written.get(name).and_then(serde_json::Value::as_str).map(str::to_owned)
}

/// Refuses a token whose JOSE header names or carries a key (RFC 8725
/// §3.10): the provider's keys come from its JWKS, found by discovery, and
/// Baton's own verifier refuses these headers just the same.
fn refuse_key_headers(token: &str) -> Result<(), UpstreamError> {
    // The request body's cap bounds the token already.
    let token = jose::parse(token, usize::MAX).map_err(|_| UpstreamError::Invalid("not a JWT".into()))?;
    if token.header().names_or_carries_key() {
        return Err(UpstreamError::Invalid("the header names or carries a key".into()));
    }
    Ok(())
}
