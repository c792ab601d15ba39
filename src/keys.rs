//! Signing keys: generation, rotation, the JWKS, and the verifiers for the
//! keys Baton trusts.
//!
//! Each key lives in `keys/<kid>.json` (mode 0600) with its creation time and,
//! once rotated out, the time it was retired. A retired key stays in the JWKS
//! until every token it can have signed has expired (`retired_at` plus the
//! longest token lifetime); after that it is left out and the next rotation
//! deletes it.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use josekit::jwk::Jwk;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::UnixTime;
pub(crate) use verified::TokenDigest;
pub use verified::VerifiedSignatures;

mod verified;

/// A signature algorithm Baton signs or accepts (RFC 8725 §3.1: an allow-list).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algorithm {
    /// ECDSA with P-256 and SHA-256 (RFC 7518 §3.4); the default.
    #[serde(rename = "ES256")]
    Es256,
    /// Ed25519 (RFC 8037).
    #[serde(rename = "EdDSA")]
    EdDsa,
}

impl Algorithm {
    /// The JOSE name of the algorithm.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Es256 => "ES256",
            Algorithm::EdDsa => "EdDSA",
        }
    }

    /// Parses a JOSE algorithm name; anything outside the allow-list is `None`.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            "ES256" => Some(Algorithm::Es256),
            "EdDSA" => Some(Algorithm::EdDsa),
            _ => None,
        }
    }
}

/// What can go wrong with keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A key file is not a Baton key.
    #[error("key file {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A JWK is not a usable public or private key for an allowed algorithm.
    #[error("unusable key: {0}")]
    Unusable(String),
    /// There is no current key to sign with.
    #[error("no current signing key in {0} (run `baton keys generate`)")]
    NoCurrentKey(PathBuf),
    /// `generate` was asked for while a current key exists.
    #[error("{0} already has a current key; use `baton keys rotate` to replace it")]
    AlreadyHasKey(PathBuf),
}

/// A public key that verifies signatures, with its JWK for publication.
/// Verification is `ring`'s, on the raw key built once.
pub struct VerifyingKey {
    algorithm: Algorithm,
    /// The public key as `ring` reads it: the uncompressed P-256 point, or
    /// the 32 bytes of an Ed25519 key.
    public: Vec<u8>,
    public_jwk: Jwk,
}

impl VerifyingKey {
    /// Builds a verifier from a public (or private) JWK, for `ES256` (P-256) or
    /// `EdDSA` (Ed25519) keys only. The JWK's `alg`, where present, must agree.
    pub fn from_jwk(jwk: &Jwk) -> Result<VerifyingKey, KeyError> {
        let algorithm = algorithm_of(jwk)?;
        let public = public_bytes(jwk, algorithm)?;
        // `to_public_key` keeps only the key material; the published copy keeps the `kid`.
        let mut public_jwk = jwk.to_public_key().map_err(unusable)?;
        if let Some(kid) = jwk.key_id() {
            public_jwk.set_key_id(kid);
        }
        Ok(VerifyingKey { algorithm, public, public_jwk })
    }

    /// The algorithm this key verifies.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Whether `signature` is this key's over `message` (JWS form: `r || s`
    /// for ES256, RFC 7518 §3.4).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let algorithm: &'static dyn signature::VerificationAlgorithm = match self.algorithm {
            Algorithm::Es256 => &signature::ECDSA_P256_SHA256_FIXED,
            Algorithm::EdDsa => &signature::ED25519,
        };
        UnparsedPublicKey::new(algorithm, &self.public).verify(message, signature).is_ok()
    }

    /// The public JWK.
    pub fn public_jwk(&self) -> &Jwk {
        &self.public_jwk
    }
}

/// The key pair a signing key holds.
enum Signer {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
}

/// The key Baton signs with, built once when the key set loads.
pub struct SigningKey {
    kid: String,
    algorithm: Algorithm,
    signer: Signer,
    random: SystemRandom,
    /// HKDF pseudorandom key extracted from the private key, for secrets
    /// every node that shares this key must agree on.
    derivation: ring::hkdf::Prk,
}

impl SigningKey {
    /// The key id (RFC 7638 thumbprint).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// 32 bytes derived from the private key for one `purpose` (HKDF,
    /// RFC 5869): a secret that every node sharing this key holds, and
    /// that says nothing about the key itself.
    pub fn derive_secret(&self, purpose: &[u8]) -> Option<[u8; 32]> {
        let mut secret = [0u8; 32];
        let info = [purpose];
        let material = self.derivation.expand(&info, ring::hkdf::HKDF_SHA256).ok()?;
        material.fill(&mut secret).ok()?;
        Some(secret)
    }

    /// Signs `message` (JWS form: `r || s` for ES256, RFC 7518 §3.4).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match &self.signer {
            Signer::Es256(pair) => pair
                .sign(&self.random, message)
                .map(|signature| signature.as_ref().to_vec())
                .map_err(|_| KeyError::Unusable("signing failed".into())),
            Signer::EdDsa(pair) => Ok(pair.sign(message).as_ref().to_vec()),
        }
    }
}

/// A key as stored on disk.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    algorithm: Algorithm,
    created_at: UnixTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retired_at: Option<UnixTime>,
    jwk: Value,
}

/// One key in the folder, as `baton keys list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct KeyListing {
    /// Key id.
    pub kid: String,
    /// Algorithm.
    pub algorithm: Algorithm,
    /// Creation time.
    pub created_at: UnixTime,
    /// When it was rotated out, if it was.
    pub retired_at: Option<UnixTime>,
    /// Its state now.
    pub state: KeyState,
}

/// Where a key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Signs new tokens.
    Current,
    /// Rotated out; still published until `until` so tokens it signed verify.
    Published {
        /// When the last token it signed expires.
        until: UnixTime,
    },
    /// Rotated out and past every token it signed.
    Expired,
}

/// Where verification finds a published key by its `kid`.
pub trait KeyLookup {
    /// The published key with this id.
    fn verifying(&self, kid: &str) -> Option<&VerifyingKey>;

    /// The tokens these keys verified already, where they are remembered.
    fn verified_signatures(&self) -> Option<&VerifiedSignatures> {
        None
    }
}

impl KeyLookup for KeySet {
    fn verifying(&self, kid: &str) -> Option<&VerifyingKey> {
        self.verifying.get(kid)
    }

    fn verified_signatures(&self) -> Option<&VerifiedSignatures> {
        Some(&self.verified)
    }
}

impl KeyLookup for BTreeMap<String, VerifyingKey> {
    fn verifying(&self, kid: &str) -> Option<&VerifyingKey> {
        self.get(kid)
    }
}

/// The keys of one broker: the one it signs with and every one it publishes.
pub struct KeySet {
    signing: SigningKey,
    verifying: BTreeMap<String, VerifyingKey>,
    /// The tokens these keys verified already; a new set starts with none.
    verified: VerifiedSignatures,
}

impl KeySet {
    /// Loads the key folder. `max_token_ttl` is the longest lifetime of any
    /// token, which bounds how long a retired key stays published.
    pub fn load(dir: &Path, max_token_ttl: i64, now: UnixTime) -> Result<KeySet, KeyError> {
        let mut signing: Option<(UnixTime, SigningKey)> = None;
        let mut verifying = BTreeMap::new();
        for (path, file) in read_folder(dir)? {
            let jwk = Jwk::from_map(as_object(&path, &file.jwk)?).map_err(|error| invalid(&path, error))?;
            let kid = thumbprint(&jwk).map_err(|error| invalid(&path, error))?;
            match state(&file, max_token_ttl, now) {
                KeyState::Expired => continue,
                KeyState::Published { .. } => {}
                KeyState::Current => {
                    let newer = signing.as_ref().is_none_or(|(created, _)| file.created_at > *created);
                    if newer {
                        signing = Some((file.created_at, signing_key(&jwk, kid.clone(), file.algorithm)?));
                    }
                }
            }
            verifying.insert(kid, VerifyingKey::from_jwk(&jwk)?);
        }
        let (_, signing) = signing.ok_or_else(|| KeyError::NoCurrentKey(dir.to_path_buf()))?;
        Ok(KeySet { signing, verifying, verified: VerifiedSignatures::default() })
    }

    /// Whether `other` signs with the same key and publishes the same ones
    /// (key ids are thumbprints: the same id is the same key).
    pub fn same_keys(&self, other: &KeySet) -> bool {
        self.signing.kid() == other.signing.kid() && self.verifying.keys().eq(other.verifying.keys())
    }

    /// The key that signs new tokens.
    pub fn signing(&self) -> &SigningKey {
        &self.signing
    }

    /// The JWKS document (RFC 7517 §5): public keys only.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .verifying
            .iter()
            .map(|(kid, key)| {
                let mut jwk = key.public_jwk().clone();
                jwk.set_key_id(kid.clone());
                jwk.set_algorithm(key.algorithm().name());
                jwk.set_key_use("sig");
                Value::Object(jwk.as_ref().clone())
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// The algorithms of the published keys.
    pub fn algorithms(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.verifying.values().map(|key| key.algorithm().name()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// Whether the folder holds a key that can sign now.
pub fn has_current_key(dir: &Path, max_token_ttl: i64, now: UnixTime) -> Result<bool, KeyError> {
    Ok(read_folder(dir)?.iter().any(|(_, file)| state(file, max_token_ttl, now) == KeyState::Current))
}

/// Creates the first key. Refuses when the folder already has a current key.
pub fn generate(dir: &Path, algorithm: Algorithm, max_token_ttl: i64, now: UnixTime) -> Result<String, KeyError> {
    if has_current_key(dir, max_token_ttl, now)? {
        return Err(KeyError::AlreadyHasKey(dir.to_path_buf()));
    }
    write_new_key(dir, algorithm, now)
}

/// Makes a new current key, retires the old ones (they stay published while
/// tokens they signed live) and deletes keys past that.
pub fn rotate(dir: &Path, algorithm: Algorithm, max_token_ttl: i64, now: UnixTime) -> Result<String, KeyError> {
    let existing = read_folder(dir)?;
    let kid = write_new_key(dir, algorithm, now)?;
    for (path, mut file) in existing {
        match state(&file, max_token_ttl, now) {
            KeyState::Current => {
                file.retired_at = Some(now);
                write_key_file(&path, &file, false)?;
            }
            KeyState::Published { .. } => {}
            KeyState::Expired => {
                fs::remove_file(&path).map_err(|source| KeyError::Io { path: path.clone(), source })?
            }
        }
    }
    Ok(kid)
}

/// Every key in the folder with its state.
pub fn list(dir: &Path, max_token_ttl: i64, now: UnixTime) -> Result<Vec<KeyListing>, KeyError> {
    let mut listings = Vec::new();
    for (path, file) in read_folder(dir)? {
        let jwk = Jwk::from_map(as_object(&path, &file.jwk)?).map_err(|error| invalid(&path, error))?;
        listings.push(KeyListing {
            kid: thumbprint(&jwk).map_err(|error| invalid(&path, error))?,
            algorithm: file.algorithm,
            created_at: file.created_at,
            retired_at: file.retired_at,
            state: state(&file, max_token_ttl, now),
        });
    }
    listings.sort_by_key(|listing| listing.created_at);
    Ok(listings)
}

/// The JWK thumbprint of a public key (RFC 7638 §3), base64url without padding.
pub fn thumbprint(jwk: &Jwk) -> Result<String, String> {
    let member = |name: &str| -> Result<Value, String> {
        jwk.parameter(name).cloned().ok_or_else(|| format!("JWK lacks `{name}`"))
    };
    // RFC 7638 §3.2: only the required members, in lexicographic order.
    let required: &[&str] = match jwk.key_type() {
        "EC" => &["crv", "kty", "x", "y"],
        "OKP" => &["crv", "kty", "x"],
        other => return Err(format!("key type `{other}` is not allowed")),
    };
    let mut canonical = serde_json::Map::new();
    for name in required {
        canonical.insert((*name).to_owned(), member(name)?);
    }
    let json = serde_json::to_vec(&Value::Object(canonical)).map_err(|error| error.to_string())?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &json);
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref()))
}

fn algorithm_of(jwk: &Jwk) -> Result<Algorithm, KeyError> {
    let algorithm = match (jwk.key_type(), jwk.curve()) {
        ("EC", Some("P-256")) => Algorithm::Es256,
        ("OKP", Some("Ed25519")) => Algorithm::EdDsa,
        (kty, crv) => {
            return Err(KeyError::Unusable(format!(
                "key type {kty} with curve {} is not allowed",
                crv.unwrap_or("none")
            )))
        }
    };
    match jwk.algorithm() {
        Some(name) if Algorithm::from_name(name) != Some(algorithm) => {
            Err(KeyError::Unusable(format!("JWK `alg` {name} does not match its key type")))
        }
        _ => Ok(algorithm),
    }
}

fn signing_key(jwk: &Jwk, kid: String, algorithm: Algorithm) -> Result<SigningKey, KeyError> {
    if algorithm_of(jwk)? != algorithm {
        return Err(KeyError::Unusable("stored algorithm does not match the key".into()));
    }
    let private = member_bytes(jwk, "d")?;
    let public = public_bytes(jwk, algorithm)?;
    let random = SystemRandom::new();
    let signer = match algorithm {
        Algorithm::Es256 => Signer::Es256(
            EcdsaKeyPair::from_private_key_and_public_key(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &private,
                &public,
                &random,
            )
            .map_err(|error| KeyError::Unusable(format!("P-256 key: {error}")))?,
        ),
        Algorithm::EdDsa => Signer::EdDsa(
            Ed25519KeyPair::from_seed_and_public_key(&private, &public)
                .map_err(|error| KeyError::Unusable(format!("Ed25519 key: {error}")))?,
        ),
    };
    // A pair that does not sign what its own public key verifies is refused here.
    let derivation = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"baton signing key").extract(&private);
    let key = SigningKey { kid, algorithm, signer, random, derivation };
    let probe = key.sign(b"probe")?;
    let verifying = VerifyingKey::from_jwk(jwk)?;
    if !verifying.verify(b"probe", &probe) {
        return Err(KeyError::Unusable("the private and public parts do not match".into()));
    }
    Ok(key)
}

/// A JWK member, base64url-decoded.
fn member_bytes(jwk: &Jwk, name: &str) -> Result<Vec<u8>, KeyError> {
    let text = jwk
        .parameter(name)
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| KeyError::Unusable(format!("JWK lacks `{name}`")))?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| KeyError::Unusable(format!("JWK `{name}` is not base64url")))
}

/// The public key as `ring` reads it.
fn public_bytes(jwk: &Jwk, algorithm: Algorithm) -> Result<Vec<u8>, KeyError> {
    match algorithm {
        Algorithm::Es256 => {
            let (x, y) = (member_bytes(jwk, "x")?, member_bytes(jwk, "y")?);
            if x.len() != 32 || y.len() != 32 {
                return Err(KeyError::Unusable("P-256 coordinates must be 32 bytes".into()));
            }
            // SEC 1 §2.3.3: the uncompressed point.
            Ok([&[0x04][..], &x, &y].concat())
        }
        Algorithm::EdDsa => {
            let x = member_bytes(jwk, "x")?;
            if x.len() != 32 {
                return Err(KeyError::Unusable("an Ed25519 key is 32 bytes".into()));
            }
            Ok(x)
        }
    }
}

/// How often a running broker reloads its key folder, in seconds.
pub const RELOAD_INTERVAL: i64 = 10;

fn state(file: &KeyFile, max_token_ttl: i64, now: UnixTime) -> KeyState {
    match file.retired_at {
        None => KeyState::Current,
        Some(retired) => {
            // A running broker may sign with the retired key until its next
            // reload: those tokens too must verify for their whole life.
            let until = retired.plus(max_token_ttl).plus(RELOAD_INTERVAL);
            if until > now {
                KeyState::Published { until }
            } else {
                KeyState::Expired
            }
        }
    }
}

fn write_new_key(dir: &Path, algorithm: Algorithm, now: UnixTime) -> Result<String, KeyError> {
    let jwk = match algorithm {
        Algorithm::Es256 => Jwk::generate_ec_key(josekit::jwk::alg::ec::EcCurve::P256),
        Algorithm::EdDsa => Jwk::generate_ed_key(josekit::jwk::alg::ed::EdCurve::Ed25519),
    }
    .map_err(unusable)?;
    let kid = thumbprint(&jwk).map_err(KeyError::Unusable)?;
    let file = KeyFile { algorithm, created_at: now, retired_at: None, jwk: Value::Object(jwk.as_ref().clone()) };
    fs::create_dir_all(dir).map_err(|source| KeyError::Io { path: dir.to_path_buf(), source })?;
    write_key_file(&dir.join(format!("{kid}.json")), &file, true)?;
    Ok(kid)
}

fn write_key_file(path: &Path, file: &KeyFile, create_new: bool) -> Result<(), KeyError> {
    let io = |source| KeyError::Io { path: path.to_path_buf(), source };
    let json = serde_json::to_vec_pretty(file).map_err(|error| KeyError::Unusable(error.to_string()))?;
    // Write beside the target and rename, so a crash never leaves half a key.
    let staging = path.with_extension("json.tmp");
    let mut out =
        fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&staging).map_err(io)?;
    out.write_all(&json).map_err(io)?;
    out.sync_all().map_err(io)?;
    if create_new && path.exists() {
        return Err(KeyError::Invalid { path: path.to_path_buf(), reason: "a key with this id already exists".into() });
    }
    fs::rename(&staging, path).map_err(io)
}

fn read_folder(dir: &Path) -> Result<Vec<(PathBuf, KeyFile)>, KeyError> {
    let io = |source| KeyError::Io { path: dir.to_path_buf(), source };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io(error)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(io)?.path();
        if path.extension().and_then(|ext| ext.to_str()) != Some("json") {
            continue;
        }
        let text = fs::read(&path).map_err(|source| KeyError::Io { path: path.clone(), source })?;
        let file: KeyFile = serde_json::from_slice(&text).map_err(|error| invalid(&path, error))?;
        files.push((path, file));
    }
    Ok(files)
}

fn as_object(path: &Path, value: &Value) -> Result<serde_json::Map<String, Value>, KeyError> {
    value.as_object().cloned().ok_or_else(|| invalid(path, "`jwk` is not an object"))
}

fn invalid(path: &Path, reason: impl ToString) -> KeyError {
    KeyError::Invalid { path: path.to_path_buf(), reason: reason.to_string() }
}

fn unusable(error: josekit::JoseError) -> KeyError {
    KeyError::Unusable(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600;

    #[test]
    fn thumbprint_matches_rfc8037_appendix_a3() {
        let jwk =
            Jwk::from_bytes(br#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#)
                .unwrap();
        assert_eq!(thumbprint(&jwk).unwrap(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn thumbprint_ignores_private_and_optional_members() {
        // RFC 7638 §3.1 uses RSA; for EC we check the canonical form is stable.
        let jwk = Jwk::generate_ec_key(josekit::jwk::alg::ec::EcCurve::P256).unwrap();
        let public = jwk.to_public_key().unwrap();
        assert_eq!(thumbprint(&jwk).unwrap(), thumbprint(&public).unwrap());
        assert_eq!(thumbprint(&jwk).unwrap().len(), 43);
    }

    /// A reload of an unchanged folder is the same keys (and the broker
    /// keeps the set it has); a rotation is not.
    #[test]
    fn a_rotation_makes_other_keys_and_a_reload_the_same() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), Algorithm::Es256, 3600, UnixTime(1_000)).unwrap();
        let first = KeySet::load(dir.path(), 3600, UnixTime(1_000)).unwrap();
        assert!(first.same_keys(&KeySet::load(dir.path(), 3600, UnixTime(1_010)).unwrap()));
        rotate(dir.path(), Algorithm::Es256, 3600, UnixTime(1_020)).unwrap();
        let rotated = KeySet::load(dir.path(), 3600, UnixTime(1_020)).unwrap();
        assert!(!first.same_keys(&rotated));
        // Once the retired key's tokens have all expired, it leaves the set.
        let later = KeySet::load(dir.path(), 3600, UnixTime(1_020 + 3600 + RELOAD_INTERVAL)).unwrap();
        assert!(!rotated.same_keys(&later));
    }

    #[test]
    fn generated_private_key_is_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let kid = generate(dir.path(), Algorithm::Es256, HOUR, UnixTime(1_000)).unwrap();
        let mode = fs::metadata(dir.path().join(format!("{kid}.json"))).unwrap().permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
        assert!(matches!(
            generate(dir.path(), Algorithm::Es256, HOUR, UnixTime(1_000)),
            Err(KeyError::AlreadyHasKey(_))
        ));
    }

    #[test]
    fn rotation_keeps_the_old_key_published_until_its_tokens_expire() {
        let dir = tempfile::tempdir().unwrap();
        let old = generate(dir.path(), Algorithm::Es256, HOUR, UnixTime(1_000)).unwrap();
        let new = rotate(dir.path(), Algorithm::EdDsa, HOUR, UnixTime(2_000)).unwrap();

        let keys = KeySet::load(dir.path(), HOUR, UnixTime(2_000 + HOUR + RELOAD_INTERVAL - 1)).unwrap();
        assert_eq!(keys.signing().kid(), new);
        assert!(keys.verifying(&old).is_some());
        let published: Vec<Value> = keys.jwks()["keys"].as_array().unwrap().clone();
        assert_eq!(published.len(), 2);
        assert!(published.iter().all(|key| key.get("d").is_none()), "JWKS must hold public keys only");

        let past = UnixTime(2_000 + HOUR + RELOAD_INTERVAL);
        let later = KeySet::load(dir.path(), HOUR, past).unwrap();
        assert!(later.verifying(&old).is_none());
        rotate(dir.path(), Algorithm::Es256, HOUR, past).unwrap();
        assert_eq!(list(dir.path(), HOUR, past).unwrap().len(), 2, "the expired key was deleted");
    }

    #[test]
    fn only_allowed_key_types_verify() {
        let rsa = Jwk::generate_rsa_key(2048).unwrap();
        assert!(VerifyingKey::from_jwk(&rsa).is_err());
        let mut mislabelled = Jwk::generate_ec_key(josekit::jwk::alg::ec::EcCurve::P256).unwrap();
        mislabelled.set_algorithm("EdDSA");
        assert!(VerifyingKey::from_jwk(&mislabelled).is_err());
    }
}
