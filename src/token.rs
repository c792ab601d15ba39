//! Baton's own access tokens: minting, and verification into [`Verified`].
//!
//! Verification follows RFC 9068 §4 and RFC 8725 in order: size, header
//! (`typ`, algorithm allow-list, known `kid`), signature, claims, issuer,
//! times, the delegation path, and the audience. Only [`verify`] hands out
//! a `Verified<Claims>`.

use crate::claims::{Claims, PathError};
use crate::clock::Clock;
use crate::ids::{Audience, Issuer};
use crate::jose::{self, JoseError, Verified};
use crate::keys::{Algorithm, KeyLookup, SigningKey};

/// No Baton token lives longer than a day (the `max_token_ttl` ceiling).
pub const MAX_LIFETIME: i64 = 86_400;

/// The media type of a JWT access token (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// The rules a token must meet.
#[derive(Debug, Clone)]
pub struct Validation {
    /// The expected `iss`.
    pub issuer: Issuer,
    /// Longest token accepted, in bytes.
    pub max_token_bytes: usize,
    /// Largest `delegation.depth` accepted.
    pub max_depth: u32,
    /// Signature algorithms accepted (a subset of Baton's allow-list).
    pub algorithms: Vec<Algorithm>,
    /// Tolerated clock difference for `exp` and `iat`, in seconds.
    pub leeway: i64,
    /// The `aud` accepted.
    pub audience: AudienceRule,
}

impl Validation {
    /// The same rules with another audience rule.
    pub fn with_audience(&self, audience: AudienceRule) -> Validation {
        Validation { audience, ..self.clone() }
    }
}

/// Which `aud` a token must carry (RFC 9068 §4 step 3, RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudienceRule {
    /// Exactly this one, compared byte for byte.
    Is(Audience),
    /// Any: only where the reader is not the token's audience and the RFCs
    /// say so, as for introspection (RFC 7662) and revocation (RFC 7009) at
    /// the broker, and for display.
    Any,
}

impl AudienceRule {
    /// Whether a token addressed to `aud` meets the rule.
    pub fn admits(&self, aud: &Audience) -> bool {
        match self {
            AudienceRule::Is(expected) => expected == aud,
            AudienceRule::Any => true,
        }
    }
}

/// Why a token did not verify. Kept for logs and audit; clients see one
/// neutral description (RFC 8693 §2.2.2).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// Longer than the configured maximum.
    #[error("token exceeds the size limit")]
    TooLarge,
    /// Not a compact JWS with a JSON header.
    #[error("token is not a compact JWS")]
    Malformed,
    /// `typ` is not `at+jwt`.
    #[error("token type is not at+jwt")]
    WrongType,
    /// `alg` outside the allow-list (`none`, `HS256`, …).
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    /// No published key has this `kid`, or the key is for another algorithm.
    #[error("unknown signing key")]
    UnknownKey,
    /// The header carries `crit` (RFC 7515 §4.1.11): Baton defines no extensions.
    #[error("critical header parameters are not supported")]
    CriticalHeader,
    /// The header names or carries its own key (`jku`, `x5u`, `jwk`, `x5c`).
    #[error("the header points at its own key")]
    KeyInHeader,
    /// `exp` is further from `iat` than any token Baton issues can be.
    #[error("lifetime longer than any issued token's")]
    LifetimeTooLong,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// The payload is not a Baton claim set.
    #[error("claims are not a Baton token's")]
    BadClaims,
    /// `iss` is not this broker.
    #[error("foreign issuer")]
    WrongIssuer,
    /// `exp` has passed.
    #[error("expired")]
    Expired,
    /// `iat` lies in the future.
    #[error("issued in the future")]
    IssuedInFuture,
    /// The `delegation` path or `act` chain is not one the broker writes.
    #[error("delegation path: {0}")]
    Path(#[from] PathError),
    /// `aud` is not the audience the rules ask for.
    #[error("addressed to another audience")]
    WrongAudience,
}

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
#[error("signing failed: {0}")]
pub struct MintError(String);

impl MintError {
    /// A minting failure with a reason.
    pub fn new(reason: &str) -> Self {
        MintError(reason.to_owned())
    }
}

/// Signs `claims` as an `at+jwt` (RFC 7515 §7.1, compact serialization).
pub fn mint(derived: &crate::chain::Derived, key: &SigningKey) -> Result<String, MintError> {
    let claims = derived.claims();
    let header = serde_json::json!({ "typ": ACCESS_TOKEN_TYP, "kid": key.kid(), "alg": key.algorithm().name() });
    let header = serde_json::to_vec(&header).map_err(|error| MintError(error.to_string()))?;
    let payload = serde_json::to_vec(claims).map_err(|error| MintError(error.to_string()))?;
    jose::sign(&header, &payload, key).map_err(|error| MintError(error.to_string()))
}

/// Verifies a Baton access token.
pub fn verify(
    token: &str,
    keys: &dyn KeyLookup,
    rules: &Validation,
    clock: &dyn Clock,
) -> Result<Verified<Claims>, VerifyError> {
    let token = jose::parse(token, rules.max_token_bytes).map_err(|error| match error {
        JoseError::TooLarge => VerifyError::TooLarge,
        JoseError::Malformed | JoseError::BadSignature | JoseError::Payload => VerifyError::Malformed,
    })?;
    let header = token.header();
    // RFC 9068 §4 step 1 / RFC 8725 §3.11: explicit typing.
    match header.typ.as_deref() {
        Some(typ) if typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || typ.eq_ignore_ascii_case("application/at+jwt") => {}
        _ => return Err(VerifyError::WrongType),
    }
    // RFC 8725 §3.1: the algorithm must be on the allow-list and match the key.
    let algorithm = header.algorithm_in(&rules.algorithms).ok_or(VerifyError::AlgorithmNotAllowed)?;
    if header.is_critical() {
        return Err(VerifyError::CriticalHeader);
    }
    // RFC 8725 §3.10: keys come from the issuer's JWKS by `kid`, never from
    // the token itself. Baton writes none of these, so their presence is an attack.
    if header.names_or_carries_key() {
        return Err(VerifyError::KeyInHeader);
    }
    let key = header.kid.as_deref().and_then(|kid| keys.verifying(kid)).ok_or(VerifyError::UnknownKey)?;
    if key.algorithm() != algorithm {
        return Err(VerifyError::UnknownKey);
    }
    let verified = token.verify::<Claims>(key).map_err(|error| match error {
        JoseError::BadSignature => VerifyError::BadSignature,
        JoseError::Payload => VerifyError::BadClaims,
        JoseError::TooLarge | JoseError::Malformed => VerifyError::Malformed,
    })?;
    let claims = verified.claims();
    if claims.iss != rules.issuer {
        return Err(VerifyError::WrongIssuer);
    }
    let now = clock.now();
    if claims.exp.plus(rules.leeway) <= now {
        return Err(VerifyError::Expired);
    }
    if claims.iat > now.plus(rules.leeway) {
        return Err(VerifyError::IssuedInFuture);
    }
    if claims.exp.seconds_since(claims.iat) > MAX_LIFETIME {
        return Err(VerifyError::LifetimeTooLong);
    }
    claims.check_path(rules.max_depth)?;
    // Last, so that a token for another audience is refused only once it
    // proved to be a live token of this broker.
    if !rules.audience.admits(&claims.aud) {
        return Err(VerifyError::WrongAudience);
    }
    Ok(verified)
}

/// Claims read without any check, for display only. A different type from
/// [`Verified`], so it can never be passed where a checked token is needed.
#[derive(Debug, Clone)]
pub struct Peeked<T> {
    /// The header's `kid`, if any.
    pub kid: Option<String>,
    /// The header's `alg`.
    pub alg: String,
    /// The claims as written, unchecked.
    pub claims: T,
}

/// Reads a token's header and claims without checking its signature, for
/// display ([`jose::Unverified::insecure_claims`]).
pub fn peek(token: &str) -> Result<Peeked<Claims>, VerifyError> {
    // Display reads whatever it is given, at any length.
    let token = jose::parse(token, usize::MAX).map_err(|_| VerifyError::Malformed)?;
    let claims = token.insecure_claims().map_err(|error| match error {
        JoseError::Payload => VerifyError::BadClaims,
        JoseError::TooLarge | JoseError::Malformed | JoseError::BadSignature => VerifyError::Malformed,
    })?;
    let header = token.header();
    Ok(Peeked { kid: header.kid.clone(), alg: header.alg.clone(), claims })
}
