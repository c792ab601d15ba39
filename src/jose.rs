//! JSON Web Signatures in compact serialization (RFC 7515 §7.1): the one
//! place in the crate that splits a compact JWS, decodes its parts, checks
//! its signature, and makes one.
//!
//! [`parse`] gives an [`Unverified`] token: its decoded [`Header`], and its
//! payload only through [`Unverified::insecure_claims`], whose name says
//! what it is. Only [`Unverified::verify`] builds a [`Signed`] value, from
//! the payload bytes the signature covers (and, within the crate, its twin
//! that skips the check of a token the key set verified before, whose
//! digest only the crate can remember); each reader then applies the
//! rules of what it reads (Baton's tokens: [`crate::token::verify`], which
//! alone hands out a [`crate::token::Verified`]).
//!
//! Every part is base64url without padding, decoded strictly: padding and
//! non-canonical trailing bits are refused, so that no two encodings of one
//! token both verify.
//!
//! Which header rules apply (explicit type, algorithms, `crit`, keys named
//! or carried in the header) is each caller's to state, with the methods of
//! [`Header`], because each maps a refusal to its own error.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::keys::{Algorithm, KeyError, SigningKey, TokenDigest, VerifiedSignatures, VerifyingKey};

/// Why a compact JWS was not read or did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoseError {
    /// Longer than the caller's limit.
    #[error("longer than the size limit")]
    TooLarge,
    /// Not three base64url parts, or the header is not a JSON object with
    /// an `alg`, or the payload is not base64url.
    #[error("not a compact JWS")]
    Malformed,
    /// The signature is not base64url, or does not verify with the key.
    #[error("bad signature")]
    BadSignature,
    /// The payload is not the JSON value asked for.
    #[error("the payload is not the expected JSON")]
    Payload,
}

/// A JOSE header (RFC 7515 §4.1) as far as Baton reads one. Other members
/// are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct Header {
    /// `alg`: the signature algorithm the token claims.
    pub alg: String,
    /// `typ`: the media type of the whole token.
    #[serde(default)]
    pub typ: Option<String>,
    /// `kid`: which of the signer's keys.
    #[serde(default)]
    pub kid: Option<String>,
    /// `crit`: extensions a reader must understand.
    #[serde(default, deserialize_with = "present")]
    pub crit: Option<Value>,
    /// `jku`: a URL of a JWK set.
    #[serde(default, deserialize_with = "present")]
    pub jku: Option<Value>,
    /// `x5u`: a URL of a certificate chain.
    #[serde(default, deserialize_with = "present")]
    pub x5u: Option<Value>,
    /// `jwk`: a public key carried in the header.
    #[serde(default, deserialize_with = "present")]
    pub jwk: Option<Value>,
    /// `x5c`: a certificate chain carried in the header.
    #[serde(default, deserialize_with = "present")]
    pub x5c: Option<Value>,
}

/// A member that is present, whatever its value: `"jku": null` still names
/// a key source, and is refused like any other (RFC 8725 §3.10).
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

impl Header {
    /// The algorithm, when it is one of `allowed` (RFC 8725 §3.1: an
    /// allow-list; `none` and MACs are never on it).
    pub fn algorithm_in(&self, allowed: &[Algorithm]) -> Option<Algorithm> {
        Algorithm::from_name(&self.alg).filter(|algorithm| allowed.contains(algorithm))
    }

    /// Whether the header carries `crit` (RFC 7515 §4.1.11). Baton defines
    /// no extensions, so a reader that applies this rule refuses it.
    pub fn is_critical(&self) -> bool {
        self.crit.is_some()
    }

    /// Whether the header names or carries a key (`jku`, `x5u`, `jwk`,
    /// `x5c`). RFC 8725 §3.10: where keys come from the issuer's registered
    /// or published set, one the token points at is an attack.
    pub fn names_or_carries_key(&self) -> bool {
        self.carries_jwk() || self.names_key_elsewhere()
    }

    /// Whether the header names a key other than by a `jwk` member (`jku`,
    /// `x5u`, `x5c`): for tokens that carry their own key (DPoP proofs).
    pub fn names_key_elsewhere(&self) -> bool {
        self.jku.is_some() || self.x5u.is_some() || self.x5c.is_some()
    }

    /// Whether the header carries a `jwk`.
    pub fn carries_jwk(&self) -> bool {
        self.jwk.is_some()
    }
}

/// A compact JWS whose signature has not been checked. Only [`parse`]
/// makes one. Its `Debug` shows the header only: the token is a credential.
#[derive(Clone)]
pub struct Unverified<'a> {
    header: Header,
    /// `header.payload`, exactly as received: what the signature covers.
    signing_input: &'a str,
    payload: &'a str,
    signature: &'a str,
}

/// A payload whose signature verified, decoded from the bytes the
/// signature covers. Only [`Unverified::verify`] makes one (and, within the
/// crate, its twin for tokens verified before). The rules of
/// what it carries are its reader's to apply: a Baton token becomes a
/// [`crate::token::Verified`] only once [`crate::token::verify`] applied
/// them, a client assertion or a DPoP proof is read only by the check of
/// its RFC.
#[derive(Debug, Clone)]
pub struct Signed<T>(T);

impl<T> Signed<T> {
    /// The signed value.
    pub fn payload(&self) -> &T {
        &self.0
    }

    /// The signed value, for its reader's rules.
    pub fn into_payload(self) -> T {
        self.0
    }
}

impl std::fmt::Debug for Unverified<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unverified").field("header", &self.header).finish_non_exhaustive()
    }
}

/// Splits a compact JWS into its three parts and decodes its header
/// (RFC 7515 §5.2 steps 1–4). Nothing else is decoded yet. Text longer
/// than `max_bytes` is refused before it is read.
pub fn parse(text: &str, max_bytes: usize) -> Result<Unverified<'_>, JoseError> {
    if text.len() > max_bytes {
        return Err(JoseError::TooLarge);
    }
    let mut parts = text.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JoseError::Malformed);
    };
    // The first two parts and their separator, as they came.
    let signing_input = text.get(..header.len() + 1 + payload.len()).ok_or(JoseError::Malformed)?;
    let json = URL_SAFE_NO_PAD.decode(header).map_err(|_| JoseError::Malformed)?;
    // RFC 7515 §4: a JSON object. Serde would also build the struct from
    // an array of its members in order.
    if json.trim_ascii_start().first() != Some(&b'{') {
        return Err(JoseError::Malformed);
    }
    let header: Header = serde_json::from_slice(&json).map_err(|_| JoseError::Malformed)?;
    Ok(Unverified { header, signing_input, payload, signature })
}

impl Unverified<'_> {
    /// The decoded header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The payload as `T`, without any check of the signature: anyone can
    /// write these claims. For routing and evidence only: choosing which
    /// configured issuer or registered key checks the token, naming the
    /// claimed client in the evidence of a refusal, and display (`baton
    /// token decode`). Never a reason to trust, grant or refuse anything.
    pub fn insecure_claims<T: DeserializeOwned>(&self) -> Result<T, JoseError> {
        let payload = URL_SAFE_NO_PAD.decode(self.payload).map_err(|_| JoseError::Malformed)?;
        serde_json::from_slice(&payload).map_err(|_| JoseError::Payload)
    }

    /// Checks the signature with `key` and decodes `T` from the payload it
    /// covers (RFC 7515 §5.2 steps 5–8). The key decides the algorithm: a
    /// header that names another one does not verify.
    pub fn verify<T: DeserializeOwned>(&self, key: &VerifyingKey) -> Result<Signed<T>, JoseError> {
        self.check_signature(key)?;
        self.signed_payload()
    }

    /// [`Unverified::verify`], where `verified` remembers the tokens `key`'s
    /// set verified before: one of those is not checked again. The digest is
    /// returned where the signature was checked now, for the caller to
    /// remember once the token passed the rest of its checks.
    pub(crate) fn verify_remembered<T: DeserializeOwned>(
        &self,
        key: &VerifyingKey,
        verified: &VerifiedSignatures,
    ) -> Result<(Signed<T>, Option<TokenDigest>), JoseError> {
        let digest = TokenDigest::of(key, self.signing_input.as_bytes(), self.signature.as_bytes());
        let checked_now = if verified.contains(&digest) {
            None
        } else {
            self.check_signature(key)?;
            Some(digest)
        };
        Ok((self.signed_payload()?, checked_now))
    }

    fn check_signature(&self, key: &VerifyingKey) -> Result<(), JoseError> {
        if Algorithm::from_name(&self.header.alg) != Some(key.algorithm()) {
            return Err(JoseError::BadSignature);
        }
        let signature = URL_SAFE_NO_PAD.decode(self.signature).map_err(|_| JoseError::BadSignature)?;
        if !key.verify(self.signing_input.as_bytes(), &signature) {
            return Err(JoseError::BadSignature);
        }
        Ok(())
    }

    /// The payload as `T`, once its signature is known good.
    fn signed_payload<T: DeserializeOwned>(&self) -> Result<Signed<T>, JoseError> {
        let payload = URL_SAFE_NO_PAD.decode(self.payload).map_err(|_| JoseError::Malformed)?;
        serde_json::from_slice(&payload).map(Signed).map_err(|_| JoseError::Payload)
    }
}

/// Whether `text` has the shape of a compact JWS (three parts), whatever
/// they hold: to tell a token from an identifier, never to trust it.
pub fn is_compact_shaped(text: &str) -> bool {
    text.split('.').count() == 3
}

/// The payload of anything shaped like a compact JWS, read as `T` with no
/// check at all, not even of the header: for evidence and routing only, as
/// [`Unverified::insecure_claims`], where the text may be too broken to
/// parse (naming the client a malformed assertion claims to be, choosing
/// which configured issuer a malformed token is refused by). `None` when
/// the second part is not base64url JSON of `T`.
pub fn insecure_payload<T: DeserializeOwned>(text: &str) -> Option<T> {
    let payload = text.split('.').nth(1)?;
    let json = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&json).ok()
}

/// Signs `payload` under `header` (both as serialized, JSON) with `key`, in
/// compact serialization (RFC 7515 §5.1, §7.1).
pub fn sign(header: &[u8], payload: &[u8], key: &SigningKey) -> Result<String, KeyError> {
    sign_with(header, payload, |signing_input| key.sign(signing_input))
}

/// [`sign`] with any signer: `signer` receives the JWS signing input and
/// returns the signature in its JWS form (for keys that are not Baton's own,
/// such as a DPoP client's).
pub fn sign_with<E>(
    header: &[u8],
    payload: &[u8],
    signer: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
) -> Result<String, E> {
    // Base64 grows by a third; the rest is the signature and separators.
    let mut token = String::with_capacity((header.len() + payload.len()) * 4 / 3 + 100);
    URL_SAFE_NO_PAD.encode_string(header, &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut token);
    let signature = signer(token.as_bytes())?;
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    Ok(token)
}

#[cfg(test)]
mod tests;
