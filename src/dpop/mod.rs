//! DPoP (RFC 9449): a client proves, with every request, that it holds the
//! private key a token is bound to, so that a stolen token is useless
//! without the key.
//!
//! [`check`] is the list of RFC 9449 §4.3, in its order but for one step:
//! the claims (step 3) are read only from the payload the signature (step
//! 6) covers, so nothing a forger wrote is decoded. Two steps need
//! state and are the caller's: the proof's `jti` is used once through the
//! replay store ([`Proof::replay_id`], kept until [`Proof::replay_until`]),
//! and the server nonce, when configured, is checked by [`nonce`].

mod client;
pub mod nonce;

pub use client::{ProofFor, ProofKey, ProofKeyError};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

use crate::clock::UnixTime;
use crate::jose::{self, JoseError};
use crate::keys::{self, Algorithm, VerifyingKey};

/// The `typ` of a DPoP proof (RFC 9449 §4.2).
pub const PROOF_TYP: &str = "dpop+jwt";

/// The algorithms a proof may be signed with: asymmetric only (§4.3 step 5).
pub const ALGORITHMS: [Algorithm; 2] = [Algorithm::Es256, Algorithm::EdDsa];

/// How far, in seconds, a proof's `iat` may lie from now either way (§4.3
/// step 11). Its `jti` is remembered for as long as it could be accepted.
pub const PROOF_WINDOW: i64 = 60;

/// The longest proof read, in bytes: a proof is a small JWT.
pub const MAX_PROOF_BYTES: usize = 4 * 1024;

/// What a request that carries a proof is, as the receiver saw it.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The HTTP method (`htm`).
    pub method: &'a str,
    /// The URI the request was sent to, as the receiver is reached (`htu`).
    pub uri: &'a str,
    /// The access token sent with the proof, for `ath` (resource servers).
    pub access_token: Option<&'a str>,
    /// The nonce this server expects, when it requires one.
    pub nonce: Option<&'a nonce::Nonces>,
}

/// A proof that passed every stateless check of §4.3. Only [`check`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    jkt: String,
    jti: String,
    iat: UnixTime,
}

impl Proof {
    /// The JWK thumbprint (RFC 7638) of the proving key: the `cnf.jkt` a
    /// token bound to it carries.
    pub fn jkt(&self) -> &str {
        &self.jkt
    }

    /// The replay-store id of this proof: its `jti`, per key so that two
    /// clients cannot collide.
    pub fn replay_id(&self) -> String {
        format!("dpop:{}:{}", self.jkt, self.jti)
    }

    /// Until when the `jti` must stay used: as long as the proof could still
    /// be accepted.
    pub fn replay_until(&self) -> UnixTime {
        self.iat.plus(PROOF_WINDOW)
    }
}

/// Why a proof is refused (`invalid_dpop_proof`, or `use_dpop_nonce`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// More than one `DPoP` header (§4.3 step 1).
    #[error("more than one DPoP header")]
    Several,
    /// Not a well-formed JWT, or a claim is missing (§4.3 steps 2–3).
    #[error("not a well-formed DPoP proof")]
    Malformed,
    /// `typ` is not `dpop+jwt` (step 4).
    #[error("typ is not dpop+jwt")]
    WrongType,
    /// `alg` is not an allowed asymmetric algorithm (step 5).
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    /// `jwk` is not a usable public key for `alg`.
    #[error("unusable jwk")]
    UnusableKey,
    /// `jwk` carries private key material (step 7).
    #[error("jwk holds a private key")]
    PrivateKey,
    /// The signature does not verify with `jwk` (step 6).
    #[error("bad signature")]
    BadSignature,
    /// `htm` is not the request's method (step 8).
    #[error("htm does not match the request")]
    WrongMethod,
    /// `htu` is not the request's URI (step 9).
    #[error("htu does not match the request")]
    WrongUri,
    /// A nonce is required and missing or not current (step 10).
    #[error("a current server nonce is required")]
    UseNonce,
    /// `iat` is outside the accepted window (step 11).
    #[error("iat outside the accepted window")]
    Stale,
    /// `ath` is missing or not the hash of the access token (step 12).
    #[error("ath does not match the access token")]
    AccessTokenHash,
    /// The key is not the one the token is bound to (step 13).
    #[error("the proof's key is not the token's")]
    KeyMismatch,
    /// The `jti` was used before.
    #[error("proof replayed")]
    Replayed,
    /// No proof, where the token presented is bound or policy needs one.
    #[error("a DPoP proof is required")]
    Required,
}

#[derive(Deserialize)]
struct Claims {
    jti: String,
    htm: String,
    htu: String,
    iat: i64,
    #[serde(default)]
    ath: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
}

/// The members that make a JWK private (RFC 7518 §6.2.2, §6.3.2; RFC 8037 §2).
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Checks one proof against the request it came with (RFC 9449 §4.3, steps
/// 2–12; step 1 is the HTTP layer's, step 13 the caller's with
/// [`Proof::jkt`]).
pub fn check(proof: &str, expected: &Expected<'_>, now: UnixTime) -> Result<Proof, ProofError> {
    // 2. A well-formed JWT. Nothing of the payload is read before step 6.
    let proof = jose::parse(proof, MAX_PROOF_BYTES).map_err(|_| ProofError::Malformed)?;
    let header = proof.header();
    let jwk = match &header.jwk {
        None => None,
        Some(serde_json::Value::Object(jwk)) => Some(jwk),
        Some(_) => return Err(ProofError::Malformed),
    };
    // 4. Explicit typing.
    if header.typ.as_deref() != Some(PROOF_TYP) {
        return Err(ProofError::WrongType);
    }
    // 5. An asymmetric algorithm Baton supports (never `none` or a MAC).
    let algorithm = header.algorithm_in(&ALGORITHMS).ok_or(ProofError::AlgorithmNotAllowed)?;
    // The key is the `jwk` the proof carries (§4.2); a proof that also
    // names a key elsewhere (RFC 8725 §3.10) is not one Baton reads.
    if header.names_key_elsewhere() {
        return Err(ProofError::Malformed);
    }
    let jwk = jwk.ok_or(ProofError::Malformed)?;
    // 7. No private key in the header (checked before the key is used).
    if PRIVATE_MEMBERS.iter().any(|member| jwk.contains_key(*member)) {
        return Err(ProofError::PrivateKey);
    }
    let jwk = josekit::jwk::Jwk::from_map(jwk.clone()).map_err(|_| ProofError::UnusableKey)?;
    let key = VerifyingKey::from_jwk(&jwk).map_err(|_| ProofError::UnusableKey)?;
    if key.algorithm() != algorithm {
        return Err(ProofError::UnusableKey);
    }
    // 6. The signature, with the key the proof carries; then 3, every
    // required claim, read from the payload it covers: it parses only with
    // all of them.
    let claims = proof.verify::<Claims>(&key).map_err(|error| match error {
        JoseError::BadSignature => ProofError::BadSignature,
        JoseError::TooLarge | JoseError::Malformed | JoseError::Payload => ProofError::Malformed,
    })?;
    let claims = claims.into_payload();
    // 8. The method.
    if claims.htm != expected.method {
        return Err(ProofError::WrongMethod);
    }
    // 9. The URI, without query and fragment, compared after normalization.
    if normalized_uri(&claims.htu).is_none() || normalized_uri(&claims.htu) != normalized_uri(expected.uri) {
        return Err(ProofError::WrongUri);
    }
    // 10. The server's nonce, when it asks for one.
    if let Some(nonces) = expected.nonce {
        if !claims.nonce.as_deref().is_some_and(|nonce| nonces.is_current(nonce, now)) {
            return Err(ProofError::UseNonce);
        }
    }
    // 11. Created recently: within the window either way.
    let iat = UnixTime(claims.iat);
    if now.seconds_since(iat).abs() > PROOF_WINDOW {
        return Err(ProofError::Stale);
    }
    // 12. Bound to the access token it travels with.
    if let Some(access_token) = expected.access_token {
        let hash = access_token_hash(access_token);
        if claims.ath.as_deref() != Some(hash.as_str()) {
            return Err(ProofError::AccessTokenHash);
        }
    }
    if claims.jti.is_empty() || claims.jti.len() > 256 {
        return Err(ProofError::Malformed);
    }
    let jkt = keys::thumbprint(&jwk).map_err(|_| ProofError::UnusableKey)?;
    Ok(Proof { jkt, jti: claims.jti, iat })
}

/// The `ath` of an access token: base64url of its SHA-256 (RFC 9449 §4.2).
pub fn access_token_hash(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, access_token.as_bytes()))
}

/// The URI as compared for `htu`: syntax- and scheme-based normalization
/// (RFC 3986 §6.2.2–6.2.3), without query and fragment. `None` if it is
/// not an absolute http(s) URI.
fn normalized_uri(uri: &str) -> Option<String> {
    let mut url = url::Url::parse(uri).ok()?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return None;
    }
    url.set_query(None);
    url.set_fragment(None);
    Some(url.into())
}

impl ProofError {
    /// The label metrics and the audit trail count this refusal by: the
    /// check that failed (named by the proof's claim where there is one).
    pub fn reason(&self) -> &'static str {
        match self {
            ProofError::Several => "dpop_several",
            ProofError::Malformed => "dpop_malformed",
            ProofError::WrongType => "dpop_wrong_type",
            ProofError::AlgorithmNotAllowed => "dpop_algorithm",
            ProofError::UnusableKey => "dpop_unusable_key",
            ProofError::PrivateKey => "dpop_private_key",
            ProofError::BadSignature => "dpop_signature",
            ProofError::WrongMethod => "dpop_htm",
            ProofError::WrongUri => "dpop_htu",
            ProofError::UseNonce => "dpop_nonce",
            ProofError::Stale => "dpop_iat",
            ProofError::AccessTokenHash => "dpop_ath",
            ProofError::KeyMismatch => "dpop_key_mismatch",
            ProofError::Replayed => "dpop_replayed",
            ProofError::Required => "dpop_required",
        }
    }
}

#[cfg(test)]
mod tests;
