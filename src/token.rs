//! Baton's own access tokens: minting, and verification into [`Verified`].
//!
//! Verification follows RFC 9068 §4 and RFC 8725 in order: size, header
//! (`typ`, algorithm allow-list, known `kid`), signature, claims, issuer,
//! times, and the delegation path. Only [`verify`] builds a `Verified`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

use crate::claims::{Claims, PathError};
use crate::clock::Clock;
use crate::keys::{Algorithm, KeyLookup, SigningKey, VerifyingKey};

/// No Baton token lives longer than a day (the `max_token_ttl` ceiling).
pub const MAX_LIFETIME: i64 = 86_400;

/// The media type of a JWT access token (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Claims whose signature and rules were checked. Only [`verify`] makes one,
/// so code that takes a `Verified<Claims>` cannot be handed an unchecked token.
#[derive(Debug, Clone)]
pub struct Verified<T>(T);

impl<T> Verified<T> {
    /// The verified value.
    pub fn claims(&self) -> &T {
        &self.0
    }

    /// The verified value, kept once the token's checks are done with.
    pub fn into_claims(self) -> T {
        self.0
    }
}

/// The rules a token must meet.
#[derive(Debug, Clone)]
pub struct Validation {
    /// The expected `iss`.
    pub issuer: String,
    /// Longest token accepted, in bytes.
    pub max_token_bytes: usize,
    /// Largest `delegation.depth` accepted.
    pub max_depth: u32,
    /// Signature algorithms accepted (a subset of Baton's allow-list).
    pub algorithms: Vec<Algorithm>,
    /// Tolerated clock difference for `exp` and `iat`, in seconds.
    pub leeway: i64,
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

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
    #[serde(default)]
    jku: Option<serde_json::Value>,
    #[serde(default)]
    x5u: Option<serde_json::Value>,
    #[serde(default)]
    jwk: Option<serde_json::Value>,
    #[serde(default)]
    x5c: Option<serde_json::Value>,
}

/// Signs `claims` as an `at+jwt` (RFC 7515 §7.1, compact serialization).
pub fn mint(derived: &crate::chain::Derived, key: &SigningKey) -> Result<String, MintError> {
    let claims = derived.claims();
    let header = serde_json::json!({ "typ": ACCESS_TOKEN_TYP, "kid": key.kid(), "alg": key.algorithm().name() });
    let header = serde_json::to_vec(&header).map_err(|error| MintError(error.to_string()))?;
    let payload = serde_json::to_vec(claims).map_err(|error| MintError(error.to_string()))?;
    let mut token = String::with_capacity((header.len() + payload.len()) * 4 / 3 + 100);
    URL_SAFE_NO_PAD.encode_string(&header, &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
    let signature = key.sign(token.as_bytes()).map_err(|error| MintError(error.to_string()))?;
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
    Ok(token)
}

/// Checks a compact JWS's signature with `key` and returns its decoded
/// payload (RFC 7515 §5.2 steps 7–8). The caller has checked the header.
pub fn verified_payload(token: &str, key: &VerifyingKey) -> Result<Vec<u8>, VerifyError> {
    let (signing_input, signature) = token.rsplit_once('.').ok_or(VerifyError::Malformed)?;
    let (_, payload) = signing_input.split_once('.').ok_or(VerifyError::Malformed)?;
    // The strict decoder refuses padding and non-canonical trailing bits, so
    // no two encodings of one signature both verify.
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| VerifyError::BadSignature)?;
    if !key.verify(signing_input.as_bytes(), &signature) {
        return Err(VerifyError::BadSignature);
    }
    URL_SAFE_NO_PAD.decode(payload).map_err(|_| VerifyError::Malformed)
}

/// Verifies a Baton access token.
pub fn verify(
    token: &str,
    keys: &dyn KeyLookup,
    rules: &Validation,
    clock: &dyn Clock,
) -> Result<Verified<Claims>, VerifyError> {
    if token.len() > rules.max_token_bytes {
        return Err(VerifyError::TooLarge);
    }
    let header = header(token)?;
    // RFC 9068 §4 step 1 / RFC 8725 §3.11: explicit typing.
    match header.typ.as_deref() {
        Some(typ) if typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || typ.eq_ignore_ascii_case("application/at+jwt") => {}
        _ => return Err(VerifyError::WrongType),
    }
    // RFC 8725 §3.1: the algorithm must be on the allow-list and match the key.
    let algorithm = Algorithm::from_name(&header.alg)
        .filter(|algorithm| rules.algorithms.contains(algorithm))
        .ok_or(VerifyError::AlgorithmNotAllowed)?;
    if header.crit.is_some() {
        return Err(VerifyError::CriticalHeader);
    }
    // RFC 8725 §3.10: keys come from the issuer's JWKS by `kid`, never from
    // the token itself. Baton writes none of these, so their presence is an attack.
    if header.jku.is_some() || header.x5u.is_some() || header.jwk.is_some() || header.x5c.is_some() {
        return Err(VerifyError::KeyInHeader);
    }
    let key = header.kid.as_deref().and_then(|kid| keys.verifying(kid)).ok_or(VerifyError::UnknownKey)?;
    if key.algorithm() != algorithm {
        return Err(VerifyError::UnknownKey);
    }
    let payload = verified_payload(token, key)?;
    let claims: Claims = serde_json::from_slice(&payload).map_err(|_| VerifyError::BadClaims)?;
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
    Ok(Verified(claims))
}

fn header(token: &str) -> Result<Header, VerifyError> {
    let mut parts = token.split('.');
    let (Some(encoded), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(VerifyError::Malformed);
    };
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded).map_err(|_| VerifyError::Malformed)?;
    serde_json::from_slice(&json).map_err(|_| VerifyError::Malformed)
}

/// Claims read without any check, for display only. A different type from
/// [`Verified`], so it can never be passed where a checked token is needed.
#[derive(Debug, Clone)]
pub struct Unverified<T> {
    /// The header's `kid`, if any.
    pub kid: Option<String>,
    /// The header's `alg`.
    pub alg: String,
    /// The claims as written, unchecked.
    pub claims: T,
}

/// Reads a token's header and claims without checking its signature.
pub fn peek(token: &str) -> Result<Unverified<Claims>, VerifyError> {
    let header = header(token)?;
    let payload = token.split('.').nth(1).ok_or(VerifyError::Malformed)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).map_err(|_| VerifyError::Malformed)?;
    let claims = serde_json::from_slice(&json).map_err(|_| VerifyError::BadClaims)?;
    Ok(Unverified { kid: header.kid, alg: header.alg, claims })
}
