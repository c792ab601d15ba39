//! The client's side of DPoP: a key pair that makes proofs (RFC 9449 §4.2),
//! for agents written in Rust and for the tests of every receiver.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use serde_json::{json, Value};

use super::{access_token_hash, PROOF_TYP};
use crate::clock::UnixTime;

/// A client's DPoP key: a fresh P-256 pair that never leaves the process.
pub struct ProofKey {
    pair: EcdsaKeyPair,
    jwk: Value,
    jkt: String,
    random: SystemRandom,
}

impl std::fmt::Debug for ProofKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProofKey").field("jkt", &self.jkt).finish_non_exhaustive()
    }
}

/// A key pair could not be made.
#[derive(Debug, Clone, thiserror::Error)]
#[error("DPoP key: {0}")]
pub struct ProofKeyError(&'static str);

/// What one proof says about its request.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProofFor<'a> {
    /// The HTTP method.
    pub method: &'a str,
    /// The URI, without query and fragment.
    pub uri: &'a str,
    /// The access token sent with it, for `ath`.
    pub access_token: Option<&'a str>,
    /// The server's latest nonce, if it asked for one.
    pub nonce: Option<&'a str>,
}

impl ProofKey {
    /// A new ES256 key.
    pub fn generate() -> Result<ProofKey, ProofKeyError> {
        let random = SystemRandom::new();
        let algorithm = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(algorithm, &random).map_err(|_| ProofKeyError("no randomness"))?;
        let pair =
            EcdsaKeyPair::from_pkcs8(algorithm, pkcs8.as_ref(), &random).map_err(|_| ProofKeyError("unusable key"))?;
        // SEC 1 §2.3.3: 0x04 || x || y.
        let point = pair.public_key().as_ref();
        let (x, y) = match (point.get(1..33), point.get(33..65)) {
            (Some(x), Some(y)) => (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y)),
            _ => return Err(ProofKeyError("unexpected public key")),
        };
        let jwk = json!({ "kty": "EC", "crv": "P-256", "x": x, "y": y });
        let map = jwk.as_object().cloned().unwrap_or_default();
        let parsed = josekit::jwk::Jwk::from_map(map).map_err(|_| ProofKeyError("unusable key"))?;
        let jkt = crate::keys::thumbprint(&parsed).map_err(|_| ProofKeyError("unusable key"))?;
        Ok(ProofKey { pair, jwk, jkt, random })
    }

    /// The key's thumbprint: the `cnf.jkt` of tokens bound to it.
    pub fn jkt(&self) -> &str {
        &self.jkt
    }

    /// The public key as a JWK.
    pub fn public_jwk(&self) -> &Value {
        &self.jwk
    }

    /// A proof for one request, made at `now`.
    pub fn proof(&self, request: ProofFor<'_>, now: UnixTime) -> Result<String, ProofKeyError> {
        let mut id = [0u8; 16];
        self.random.fill(&mut id).map_err(|_| ProofKeyError("no randomness"))?;
        let mut claims = serde_json::Map::new();
        claims.insert("jti".into(), Value::String(URL_SAFE_NO_PAD.encode(id)));
        claims.insert("htm".into(), Value::String(request.method.to_owned()));
        claims.insert("htu".into(), Value::String(request.uri.to_owned()));
        claims.insert("iat".into(), Value::from(now.0));
        if let Some(token) = request.access_token {
            claims.insert("ath".into(), Value::String(access_token_hash(token)));
        }
        if let Some(nonce) = request.nonce {
            claims.insert("nonce".into(), Value::String(nonce.to_owned()));
        }
        self.sign(&self.header(), &Value::Object(claims))
    }

    /// The header a proof made with this key carries.
    pub fn header(&self) -> Value {
        json!({ "typ": PROOF_TYP, "alg": "ES256", "jwk": self.jwk })
    }

    /// Signs any header and claims with this key: for tests that show a
    /// receiver refuses what a well-behaved client never sends.
    pub fn sign(&self, header: &Value, claims: &Value) -> Result<String, ProofKeyError> {
        let header = serde_json::to_vec(header).map_err(|_| ProofKeyError("encoding"))?;
        let claims = serde_json::to_vec(claims).map_err(|_| ProofKeyError("encoding"))?;
        crate::jose::sign_with(&header, &claims, |signing_input| {
            let signature = self.pair.sign(&self.random, signing_input).map_err(|_| ProofKeyError("signing failed"))?;
            Ok(signature.as_ref().to_vec())
        })
    }
}
