//! Data-driven attacks on the verifier for APIs (DESIGN.md §7), read from
//! `tests/vectors/verifier/*.json`: every RFC 8725 attack class, each vector
//! naming the clause it checks. `README.md` in that folder describes the
//! vocabulary; `baseline.json` is the valid token every vector starts from
//! (the booker's final token of the example walk, with fixed `jti`s).
//!
//! The broker is served on a real socket; the airline API sits behind
//! `VerifierLayer`. Each vector's token goes through the API (the HTTP answer
//! is the assertion) and through `Verifier::verify` (so that each vector is
//! refused by the check it names, not by an accident of its construction).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request};
use axum::middleware::{self, Next};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use baton::claims::{ScopeSet, TokenId};
use baton::keys::{self, Algorithm, KeySet};
use baton::narrowing::PathError;
use baton::store::RevocationStore;
use baton::token::VerifyError;
use baton::verifier::{Caller, Rejection, Verifier, VerifierLayer};
use http_body_util::BodyExt;
use josekit::jwk::Jwk;
use josekit::jws::{EdDSA, JwsSigner, ES256};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tower::ServiceExt;

use crate::harness::*;

/// The valid token and the verifier's configuration every vector starts from.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Baseline {
    #[allow(dead_code)] // documentation for readers of the data
    description: String,
    /// The verifier's clock, in seconds since the epoch.
    now: i64,
    verifier: VerifierSettings,
    header: Value,
    claims: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifierSettings {
    audience: String,
    required_scopes: String,
    leeway: i64,
    max_depth: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    rfc: String,
    attack: String,
    /// RFC 7396 merge patch applied to the baseline header.
    header: Option<Value>,
    /// The header's JSON text, verbatim (placeholders substituted).
    raw_header: Option<String>,
    /// RFC 7396 merge patch applied to the baseline claims.
    claims: Option<Value>,
    /// The payload's JSON text, verbatim (placeholders substituted).
    raw_payload: Option<String>,
    #[serde(default)]
    signature: SignatureKind,
    /// The whole token, verbatim (placeholders substituted); nothing else applies.
    token: Option<String>,
    pad: Option<Pad>,
    /// Token ids revoked at the broker before the call.
    #[serde(default)]
    revoke: Vec<String>,
    expect: Expect,
}

#[derive(Deserialize, Default, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum SignatureKind {
    /// ES256 with the broker's key that signs the baseline.
    #[default]
    Broker,
    /// EdDSA with the broker's other published key.
    Rotated,
    /// ES256 with a fresh P-256 key that is in no JWKS.
    Stranger,
    /// An empty third part: the token ends with a dot.
    None,
    /// No third part and no dot.
    Absent,
    /// HMAC-SHA256 keyed with the broker's public JWK as the JWKS serves it.
    Hs256PublicJwk,
    /// HMAC-SHA256 keyed with the broker's public key as SPKI PEM.
    Hs256PublicPem,
    /// HMAC-SHA256 keyed with the uncompressed point `04 || x || y`.
    Hs256PublicPoint,
    /// The broker's signature cut to its first 32 bytes.
    Truncated,
    /// The broker's signature in base64url with `=` padding.
    Padded,
    /// The broker's signature in the standard base64 alphabet (`+`, `/`).
    StandardAlphabet,
    /// The broker's signature with the unused low bits of its last character set.
    TrailingBits,
    /// The broker's signature as ASN.1 DER instead of `r || s`.
    Der,
    /// ECDSA r = s = 0: 64 zero bytes.
    Zero,
    /// ECDSA r = s = n, the order of P-256.
    CurveOrder,
    /// The broker's ECDSA signature (r, s) as (r, n − s).
    NegatedS,
    /// The rotated Ed25519 key's signature with S replaced by S + L.
    EddsaSPlusOrder,
    /// The baseline token's signature, over this vector's header and payload.
    Copied,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Pad {
    /// A string claim grown with `x` characters.
    claim: String,
    /// Grow until the token has at least this many bytes.
    token_bytes_at_least: Option<usize>,
    /// Grow as far as the token stays within this many bytes.
    token_bytes_at_most: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    status: u16,
    /// The RFC 6750 `error` of the `WWW-Authenticate` challenge.
    error: Option<String>,
    /// The verification step that refuses the token.
    refused_by: Option<String>,
    /// For accepted tokens: what the API sees.
    caller: Option<Value>,
}

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/verifier")
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> T {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap_or_else(|error| panic!("{name}: {error}"))
}

/// The airline API behind the verifier: says who calls through whom.
fn airline_api(verifier: Arc<Verifier>) -> Router {
    Router::new()
        .route(
            "/bookings",
            get(|caller: Caller| async move {
                Json(json!({ "subject": caller.subject(), "agent": caller.agent(), "chain": caller.chain() }))
            }),
        )
        .layer(VerifierLayer::new(verifier))
}

async fn call(api: &Router, token: &str) -> (u16, Option<String>, Value) {
    let request = Request::get("/bookings").header(header::AUTHORIZATION, format!("Bearer {token}"));
    let response = api.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let challenge = response.headers().get(header::WWW_AUTHENTICATE).map(|value| value.to_str().unwrap().to_owned());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, challenge, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// The language-neutral name of the step that refused (see the README).
fn refused_by(outcome: &Result<Caller, Rejection>) -> &'static str {
    match outcome {
        Ok(_) => "nothing",
        Err(Rejection::Missing) => "missing",
        Err(Rejection::Invalid(error)) => match error {
            VerifyError::TooLarge => "size",
            VerifyError::Malformed => "malformed",
            VerifyError::WrongType => "typ",
            VerifyError::AlgorithmNotAllowed => "alg",
            VerifyError::UnknownKey => "kid",
            VerifyError::CriticalHeader => "crit",
            VerifyError::KeyInHeader => "key_in_header",
            VerifyError::LifetimeTooLong => "lifetime",
            VerifyError::BadSignature => "signature",
            VerifyError::BadClaims => "claims",
            VerifyError::WrongIssuer => "iss",
            VerifyError::Expired => "exp",
            VerifyError::IssuedInFuture => "iat",
            VerifyError::Path(PathError::TooDeep) => "depth",
            VerifyError::Path(PathError::Inconsistent) => "delegation.inconsistent",
            VerifyError::Path(PathError::WrongHolder) => "delegation.wrong_holder",
            VerifyError::Path(PathError::ScopeWidened) => "delegation.scope_widened",
            VerifyError::Path(PathError::LifetimeExtended) => "delegation.lifetime_extended",
            VerifyError::Path(PathError::ActsAgain) => "delegation.acts_again",
            VerifyError::WrongAudience => "aud",
        },
        Err(Rejection::WrongAudience) => "aud",
        Err(Rejection::InsufficientScope { .. }) => "scope",
        Err(Rejection::Revoked) => "revoked",
        Err(Rejection::WrongScheme) => "scheme",
        Err(Rejection::Proof(_)) => "dpop_proof",
        Err(Rejection::Unavailable(_)) => "unavailable",
    }
}

/// RFC 7396: objects merge member by member, `null` removes, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(members) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let object = target.as_object_mut().unwrap();
    for (name, value) in members {
        if value.is_null() {
            object.remove(name);
        } else {
            merge_patch(object.entry(name.clone()).or_insert(Value::Null), value);
        }
    }
}

/// `${name}` inside text becomes the placeholder's string (or JSON text).
fn substitute_text(text: &str, placeholders: &BTreeMap<String, Value>, context: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = start + rest[start..].find('}').unwrap_or_else(|| panic!("{context}: unclosed ${{ in {text}"));
        let name = &rest[start + 2..end];
        match placeholders.get(name) {
            Some(Value::String(value)) => out.push_str(value),
            Some(value) => out.push_str(&value.to_string()),
            None => panic!("{context}: unknown placeholder ${{{name}}}"),
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// A string that is exactly `${name}` becomes the placeholder's value (which
/// may be an object); other strings have their placeholders substituted.
fn substitute(value: &Value, placeholders: &BTreeMap<String, Value>, context: &str) -> Value {
    match value {
        Value::String(text) => {
            let whole = text.strip_prefix("${").and_then(|rest| rest.strip_suffix('}'));
            match whole.and_then(|name| placeholders.get(name)) {
                Some(value) => value.clone(),
                None => Value::String(substitute_text(text, placeholders, context)),
            }
        }
        Value::Array(items) => Value::Array(items.iter().map(|item| substitute(item, placeholders, context)).collect()),
        Value::Object(members) => Value::Object(
            members.iter().map(|(name, item)| (name.clone(), substitute(item, placeholders, context))).collect(),
        ),
        other => other.clone(),
    }
}

/// The order n of the P-256 group (SEC 2 §2.4.2).
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6, 0xfa,
    0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// The order L of the Ed25519 base point (RFC 8032 §5.1), little-endian.
const ED25519_ORDER: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
];

/// `minuend − subtrahend`, both 32-byte big-endian, minuend the larger.
fn subtract_big_endian(minuend: &[u8], subtrahend: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    let mut borrow = 0u16;
    for index in (0..32).rev() {
        let (a, b) = (u16::from(minuend[index]), u16::from(subtrahend[index]) + borrow);
        out[index] = (a + 256 - b) as u8;
        borrow = u16::from(a < b);
    }
    out
}

/// `a + b`, both 32-byte little-endian, without overflow past 32 bytes.
fn add_little_endian(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    let mut carry = 0u16;
    for index in 0..32 {
        let sum = u16::from(a[index]) + u16::from(b[index]) + carry;
        out[index] = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0);
    out
}

fn der_integer(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|byte| *byte != 0).unwrap_or(bytes.len() - 1);
    let mut content = bytes[start..].to_vec();
    if content[0] & 0x80 != 0 {
        content.insert(0, 0);
    }
    let mut out = vec![0x02, content.len() as u8];
    out.extend(content);
    out
}

/// RFC 3279 §2.2.3's `Ecdsa-Sig-Value`, which RFC 7518 §3.4 does not allow.
fn der_signature(raw: &[u8]) -> Vec<u8> {
    let mut body = der_integer(&raw[..32]);
    body.extend(der_integer(&raw[32..]));
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

fn hmac_sha256(key: &[u8], input: &str) -> Vec<u8> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::sign(&key, input.as_bytes()).as_ref().to_vec()
}

/// Every key a vector can sign with, and the placeholders vectors may name.
struct Keys {
    broker: Jwk,
    rotated: Jwk,
    stranger: Jwk,
    public_jwk_text: String,
    public_pem: String,
    public_point: Vec<u8>,
    placeholders: BTreeMap<String, Value>,
}

impl Keys {
    fn es256(jwk: &Jwk, input: &str) -> Vec<u8> {
        ES256.signer_from_jwk(jwk).unwrap().sign(input.as_bytes()).unwrap()
    }

    fn eddsa(jwk: &Jwk, input: &str) -> Vec<u8> {
        EdDSA.signer_from_jwk(jwk).unwrap().sign(input.as_bytes()).unwrap()
    }

    /// The third part for `kind`, or `None` when the token has no third part.
    fn signature(&self, kind: SignatureKind, input: &str, copied: &str) -> Option<String> {
        let broker = || Keys::es256(&self.broker, input);
        let text = match kind {
            SignatureKind::Broker => b64(&broker()),
            SignatureKind::Rotated => b64(&Keys::eddsa(&self.rotated, input)),
            SignatureKind::Stranger => b64(&Keys::es256(&self.stranger, input)),
            SignatureKind::None => String::new(),
            SignatureKind::Absent => return None,
            SignatureKind::Hs256PublicJwk => b64(&hmac_sha256(self.public_jwk_text.as_bytes(), input)),
            SignatureKind::Hs256PublicPem => b64(&hmac_sha256(self.public_pem.as_bytes(), input)),
            SignatureKind::Hs256PublicPoint => b64(&hmac_sha256(&self.public_point, input)),
            SignatureKind::Truncated => b64(&broker()[..32]),
            SignatureKind::Padded => {
                let text = base64::engine::general_purpose::URL_SAFE.encode(broker());
                assert!(text.ends_with('='));
                text
            }
            SignatureKind::StandardAlphabet => {
                // ECDSA signatures are randomised: sign until the two alphabets differ.
                let signature = (0..200)
                    .map(|_| broker())
                    .find(|signature| b64(signature).contains(['-', '_']))
                    .expect("a signature with `-` or `_`");
                base64::engine::general_purpose::STANDARD_NO_PAD.encode(signature)
            }
            SignatureKind::TrailingBits => {
                // 64 bytes are 86 characters: the last one carries 2 bits and 4 unused ones.
                const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
                let signature = broker();
                let mut text = b64(&signature).into_bytes();
                let last = text.last_mut().unwrap();
                let value = ALPHABET.iter().position(|symbol| symbol == last).unwrap();
                assert_eq!(value & 0b1111, 0);
                *last = ALPHABET[value | 0b1111];
                let text = String::from_utf8(text).unwrap();
                // A decoder that ignores trailing bits reads the very same signature.
                let lax = base64::engine::GeneralPurpose::new(
                    &base64::alphabet::URL_SAFE,
                    base64::engine::GeneralPurposeConfig::new()
                        .with_decode_allow_trailing_bits(true)
                        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
                );
                assert_eq!(lax.decode(&text).unwrap(), signature);
                text
            }
            SignatureKind::Der => b64(&der_signature(&broker())),
            SignatureKind::Zero => b64(&[0u8; 64]),
            SignatureKind::CurveOrder => b64(&[P256_ORDER, P256_ORDER].concat()),
            SignatureKind::NegatedS => {
                let signature = broker();
                b64(&[&signature[..32], &subtract_big_endian(&P256_ORDER, &signature[32..])[..]].concat())
            }
            SignatureKind::EddsaSPlusOrder => {
                let signature = Keys::eddsa(&self.rotated, input);
                b64(&[&signature[..32], &add_little_endian(&signature[32..], &ED25519_ORDER)[..]].concat())
            }
            SignatureKind::Copied => copied.to_owned(),
        };
        Some(text)
    }
}

/// The private JWKs of the broker's key folder, by `kid`.
fn private_keys(keys_dir: &Path) -> BTreeMap<String, Jwk> {
    std::fs::read_dir(keys_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .map(|path| {
            let file: Value = read_json(&path);
            let jwk = Jwk::from_map(file["jwk"].as_object().unwrap().clone()).unwrap();
            (keys::thumbprint(&jwk).unwrap(), jwk)
        })
        .collect()
}

/// A P-256 public key as SPKI (RFC 5480 §2) in PEM.
fn spki_pem(point: &[u8]) -> String {
    const PREFIX: [u8; 26] = [
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
        0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    let body = base64::engine::general_purpose::STANDARD.encode([&PREFIX[..], point].concat());
    let lines: Vec<&str> = body.as_bytes().chunks(64).map(|line| std::str::from_utf8(line).unwrap()).collect();
    format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n"))
}

fn keys_for(harness: &Harness, issuer: &str, kid: &str, rotated_kid: &str) -> Keys {
    let mut private = private_keys(&harness.keys_dir());
    let broker = private.remove(kid).unwrap();
    let rotated = private.remove(rotated_kid).unwrap();
    let mut stranger = Jwk::generate_ec_key(josekit::jwk::alg::ec::EcCurve::P256).unwrap();
    let stranger_kid = keys::thumbprint(&stranger).unwrap();
    stranger.set_key_id(&stranger_kid);
    let mut stranger_public = stranger.to_public_key().unwrap();
    stranger_public.set_key_id(&stranger_kid);

    let jwks = harness.broker.keys().jwks();
    let public = jwks["keys"].as_array().unwrap().iter().find(|key| key["kid"] == kid).unwrap().clone();
    let coordinate =
        |name: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(public[name].as_str().unwrap()).unwrap();
    let public_point = [&[0x04][..], &coordinate("x"), &coordinate("y")].concat();
    let public_pem = spki_pem(&public_point);
    // The PEM is the broker's key, as an attacker would download it.
    ES256.verifier_from_pem(&public_pem).unwrap();

    let placeholders = BTreeMap::from([
        ("issuer".to_owned(), json!(issuer)),
        ("kid".to_owned(), json!(kid)),
        ("rotated_kid".to_owned(), json!(rotated_kid)),
        ("stranger_kid".to_owned(), json!(stranger_kid)),
        ("broker_public_jwk".to_owned(), public.clone()),
        ("stranger_public_jwk".to_owned(), Value::Object(stranger_public.as_ref().clone())),
    ]);
    Keys { broker, rotated, stranger, public_jwk_text: public.to_string(), public_pem, public_point, placeholders }
}

/// Builds a vector's token from the baseline.
struct Builder<'a> {
    keys: &'a Keys,
    baseline: &'a Baseline,
    /// Placeholders, including the signed baseline's parts.
    placeholders: BTreeMap<String, Value>,
    baseline_signature: String,
}

impl<'a> Builder<'a> {
    fn new(keys: &'a Keys, baseline: &'a Baseline) -> Builder<'a> {
        let mut builder =
            Builder { keys, baseline, placeholders: keys.placeholders.clone(), baseline_signature: String::new() };
        let header = substitute(&baseline.header, &builder.placeholders, "baseline.json");
        let claims = substitute(&baseline.claims, &builder.placeholders, "baseline.json");
        let token = builder.assemble(&header.to_string(), &claims.to_string(), SignatureKind::Broker);
        let parts: Vec<&str> = token.split('.').collect();
        builder.baseline_signature = parts[2].to_owned();
        for (name, value) in [
            ("baseline", token.as_str()),
            ("baseline_header", parts[0]),
            ("baseline_payload", parts[1]),
            ("baseline_signature", parts[2]),
        ] {
            builder.placeholders.insert(name.to_owned(), json!(value));
        }
        builder
    }

    fn assemble(&self, header: &str, payload: &str, kind: SignatureKind) -> String {
        let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        match self.keys.signature(kind, &input, &self.baseline_signature) {
            Some(signature) => format!("{input}.{signature}"),
            None => input,
        }
    }

    fn token(&self, name: &str, vector: &Vector) -> String {
        if let Some(token) = &vector.token {
            let others = vector.header.is_some()
                || vector.raw_header.is_some()
                || vector.claims.is_some()
                || vector.raw_payload.is_some()
                || vector.pad.is_some()
                || vector.signature != SignatureKind::Broker;
            assert!(!others, "{name}: `token` excludes every other way of building");
            return substitute_text(token, &self.placeholders, name);
        }
        assert!(!(vector.header.is_some() && vector.raw_header.is_some()), "{name}: header or raw_header");
        assert!(!(vector.claims.is_some() && vector.raw_payload.is_some()), "{name}: claims or raw_payload");
        let header = match &vector.raw_header {
            Some(raw) => substitute_text(raw, &self.placeholders, name),
            None => {
                let mut header = self.baseline.header.clone();
                if let Some(patch) = &vector.header {
                    merge_patch(&mut header, patch);
                }
                substitute(&header, &self.placeholders, name).to_string()
            }
        };
        if let Some(raw) = &vector.raw_payload {
            assert!(vector.pad.is_none(), "{name}: pad applies to claims");
            return self.assemble(&header, &substitute_text(raw, &self.placeholders, name), vector.signature);
        }
        let mut claims = self.baseline.claims.clone();
        if let Some(patch) = &vector.claims {
            merge_patch(&mut claims, patch);
        }
        let claims = substitute(&claims, &self.placeholders, name);
        match &vector.pad {
            None => self.assemble(&header, &claims.to_string(), vector.signature),
            Some(pad) => self.padded(name, &header, claims, pad, vector.signature),
        }
    }

    /// The claims with `pad.claim` grown to reach the size `pad` asks for.
    fn padded(&self, name: &str, header: &str, claims: Value, pad: &Pad, kind: SignatureKind) -> String {
        assert_eq!(kind, SignatureKind::Broker, "{name}: pad needs a fixed-length signature");
        let original = claims[pad.claim.as_str()].as_str().unwrap_or_else(|| panic!("{name}: no string claim"));
        let grown = |extra: usize| {
            let mut claims = claims.clone();
            claims[pad.claim.as_str()] = json!(format!("{original}{}", "x".repeat(extra)));
            self.assemble(header, &claims.to_string(), kind)
        };
        let base = grown(0).len();
        // Each added byte of JSON adds 4/3 characters of base64url.
        let estimate = |target: usize| (target.saturating_sub(base) * 3 / 4).saturating_sub(4);
        match (pad.token_bytes_at_least, pad.token_bytes_at_most) {
            (Some(target), None) => {
                let mut extra = estimate(target);
                while grown(extra).len() < target {
                    extra += 1;
                }
                grown(extra)
            }
            (None, Some(target)) => {
                let mut extra = estimate(target);
                while grown(extra + 1).len() <= target {
                    extra += 1;
                }
                let token = grown(extra);
                assert!(token.len() <= target && token.len() > target - 4, "{name}: {} bytes", token.len());
                token
            }
            _ => panic!("{name}: pad takes exactly one of token_bytes_at_least and token_bytes_at_most"),
        }
    }
}

/// The claims with every `jti` left out: what the walk and the baseline share.
/// The claims without their random ids: the `jti`s, and the approval of the
/// walk's booking (people's approval), whose id is as random as a `jti`.
fn without_jtis(claims: &Value) -> Value {
    let mut claims = claims.clone();
    claims.as_object_mut().unwrap().remove("jti");
    claims["delegation"].as_object_mut().unwrap().remove("approval");
    // Issue instants, like ids, differ from one walk to the next.
    claims["delegation"].as_object_mut().unwrap().remove("iat_micros");
    for hop in claims["delegation"]["hops"].as_array_mut().unwrap() {
        hop.as_object_mut().unwrap().remove("jti");
        hop.as_object_mut().unwrap().remove("iat_micros");
    }
    claims
}

#[tokio::test]
async fn verifier_vectors() {
    let dir = vectors_dir();
    let baseline: Baseline = read_json(&dir.join("baseline.json"));
    assert_eq!(baseline.now, START.0, "baseline.json: the verifier's clock is the harness's");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json") && !path.ends_with("baseline.json"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 30, "only {} vectors in {}", paths.len(), dir.display());

    let (harness, issuer) = Harness::served(Options::default()).await;
    let kid = harness.broker_kid();
    // The baseline is the example walk's final token (its `jti`s aside),
    // which carries its booking's approval: the verifier accepts it.
    let [_, _, walked] = harness.walk().await;
    assert_eq!(json_of(&walked)["delegation"]["approval"]["approver"], "travel-team@example.com");
    // A second published key, so that a `kid` can point at the wrong one.
    let rotated_kid = keys::rotate(&harness.keys_dir(), Algorithm::EdDsa, 3600, START).unwrap();
    harness.broker.replace_keys(KeySet::load(&harness.keys_dir(), 3600, START).unwrap());

    let settings = &baseline.verifier;
    let verifier = Arc::new(
        Verifier::builder(&issuer)
            .audience(settings.audience.as_str())
            .require_scopes(ScopeSet::parse(&settings.required_scopes).unwrap())
            .leeway(settings.leeway)
            .max_depth(settings.max_depth)
            .clock(harness.clock.clone())
            .revocation(harness.store.clone())
            .build()
            .unwrap(),
    );
    let api = airline_api(verifier.clone());

    let keys = keys_for(&harness, &issuer, &kid, &rotated_kid);
    let builder = Builder::new(&keys, &baseline);
    let baseline_claims = substitute(&baseline.claims, &builder.placeholders, "baseline.json");
    assert_eq!(without_jtis(&json_of(&walked)), without_jtis(&baseline_claims), "baseline.json is not the walk's");
    assert_eq!(header_of(&walked), substitute(&baseline.header, &builder.placeholders, "baseline.json"));
    assert_eq!(call(&api, &walked).await.0, 200, "the walk's own token");

    let mut failures = Vec::new();
    for path in &paths {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let vector: Vector = read_json(path);
        let context = format!("{name} ({}: {})", vector.rfc, vector.attack);
        let expect = &vector.expect;
        match expect.status {
            200 => assert!(expect.error.is_none() && expect.refused_by.is_none(), "{context}: a 200 has no error"),
            401 | 403 => assert!(
                expect.error.is_some() && expect.refused_by.is_some() && expect.caller.is_none(),
                "{context}: a refusal names its error and the step that refuses"
            ),
            other => panic!("{context}: unexpected status {other} in the vector"),
        }
        for jti in &vector.revoke {
            harness.store.revoke(&TokenId(jti.clone()), START.plus(3600)).await.unwrap();
        }
        let token = builder.token(&name, &vector);

        let outcome = verifier.verify(&token).await;
        let step = refused_by(&outcome);
        let wanted = expect.refused_by.as_deref().unwrap_or("nothing");
        if step != wanted {
            failures.push(format!("{context}: refused by `{step}`, expected `{wanted}` ({outcome:?})"));
        }
        let (status, challenge, body) = call(&api, &token).await;
        if status != expect.status {
            failures.push(format!("{context}: status {status}, expected {} (body {body})", expect.status));
            continue;
        }
        if let Some(error) = &expect.error {
            let challenge = challenge.unwrap_or_default();
            if !challenge.contains(&format!("error=\"{error}\"")) {
                failures.push(format!("{context}: WWW-Authenticate `{challenge}` lacks error=\"{error}\""));
            }
        }
        if let Some(caller) = &expect.caller {
            if body != *caller {
                failures.push(format!("{context}: the API saw {body}, expected {caller}"));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} vectors failed:\n{}", failures.len(), paths.len(), failures.join("\n"));
}

/// RFC 8725 §3.10 / DESIGN.md §7: a stream of forged `kid`s must not make the
/// API hammer the issuer. The first use fetches the JWKS; the first unknown
/// `kid` refetches; the rest wait out `JWKS_REFETCH_INTERVAL`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_kids_refetch_the_jwks_at_most_once_per_interval() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let harness = Harness::with(Options { issuer: issuer.clone(), ..Options::default() });
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    let broker = baton::http::router(harness.broker.clone()).layer(middleware::from_fn(
        move |request: Request<Body>, next: Next| {
            let counter = counter.clone();
            async move {
                if request.method() == Method::GET && request.uri().path() == "/jwks" {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                next.run(request).await
            }
        },
    ));
    tokio::spawn(async move { axum::serve(listener, broker).await });

    let verifier =
        Verifier::builder(&issuer).audience(AIRLINE).clock(harness.clock.clone()).revocation(harness.store.clone());
    let api = airline_api(Arc::new(verifier.build().unwrap()));
    let baseline: Baseline = read_json(&vectors_dir().join("baseline.json"));
    let placeholders = BTreeMap::from([("issuer".to_owned(), json!(issuer))]);
    let claims = substitute(&baseline.claims, &placeholders, "baseline.json");

    let mut burst = tokio::task::JoinSet::new();
    for index in 0..20 {
        let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": format!("unknown-{index}")});
        let token = harness.sign_with_broker_key(&header, &claims);
        let api = api.clone();
        burst.spawn(async move { call(&api, &token).await });
    }
    while let Some(answer) = burst.join_next().await {
        let (status, challenge, body) = answer.unwrap();
        assert_eq!(status, 401, "{body}");
        assert!(challenge.unwrap().contains("error=\"invalid_token\""));
    }
    let count = fetches.load(Ordering::SeqCst);
    assert!((1..=2).contains(&count), "{count} JWKS fetches for a burst of 20 unknown kids");

    // A known kid is served from the cache.
    let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": harness.broker_kid()});
    let (status, _, body) = call(&api, &harness.sign_with_broker_key(&header, &claims)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(fetches.load(Ordering::SeqCst), count, "a known kid caused a fetch");
}
