//! RFC 7515 compact serialization: what parses, what verifies, and what
//! each header rule refuses.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use super::*;
use crate::clock::UnixTime;
use crate::keys::{self, KeyLookup, KeySet, VerifiedSignatures};

const HOUR: i64 = 3600;

/// A fresh key folder's signing key and its public half.
struct Pair {
    set: KeySet,
    kid: String,
}

impl Pair {
    fn new(algorithm: Algorithm) -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let kid = keys::generate(dir.path(), algorithm, HOUR, UnixTime(1_000)).unwrap();
        Pair { set: KeySet::load(dir.path(), HOUR, UnixTime(1_000)).unwrap(), kid }
    }

    fn signing(&self) -> &SigningKey {
        self.set.signing()
    }

    fn verifying(&self) -> &VerifyingKey {
        self.set.verifying(&self.kid).unwrap()
    }
}

fn signed(header: &Value, claims: &Value, key: &SigningKey) -> String {
    sign(&serde_json::to_vec(header).unwrap(), &serde_json::to_vec(claims).unwrap(), key).unwrap()
}

fn header_for(key: &SigningKey) -> Value {
    json!({ "alg": key.algorithm().name(), "typ": "JWT", "kid": key.kid() })
}

fn claims() -> Value {
    json!({ "iss": "https://broker.example", "sub": "agent" })
}

fn encode(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

#[test]
fn a_signed_token_verifies_and_gives_its_claims() {
    for algorithm in [Algorithm::Es256, Algorithm::EdDsa] {
        let pair = Pair::new(algorithm);
        let (signing, verifying) = (pair.signing(), pair.verifying());
        let token = signed(&header_for(signing), &claims(), signing);
        let parsed = parse(&token, 4096).unwrap();
        assert_eq!(parsed.header().alg, algorithm.name());
        assert_eq!(parsed.header().kid.as_deref(), Some(signing.kid()));
        let verified: Signed<Value> = parsed.verify(verifying).unwrap();
        assert_eq!(verified.payload(), &claims());
    }
}

#[test]
fn only_three_parts_make_a_compact_jws() {
    let pair = Pair::new(Algorithm::Es256);
    let signing = pair.signing();
    let token = signed(&header_for(signing), &claims(), signing);
    let (signing_input, _) = token.rsplit_once('.').unwrap();
    for text in [signing_input.to_owned(), format!("{token}.extra"), String::new(), "a".into(), "..".into()] {
        assert_eq!(parse(&text, 4096).err(), Some(JoseError::Malformed), "{text:?}");
    }
}

#[test]
fn parts_are_strict_base64url() {
    let pair = Pair::new(Algorithm::Es256);
    let (signing, verifying) = (pair.signing(), pair.verifying());
    let token = signed(&header_for(signing), &claims(), signing);
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    // Standard base64's alphabet and padding are not base64url.
    let header = serde_json::to_vec(&header_for(signing)).unwrap();
    let padded = base64::engine::general_purpose::URL_SAFE.encode(&header);
    assert!(padded.ends_with('='), "the test needs a header whose encoding pads");
    assert_eq!(parse(&format!("{padded}.{}.{}", parts[1], parts[2]), 4096).err(), Some(JoseError::Malformed));
    assert_eq!(parse(&format!("{}+.{}.{}", parts[0], parts[1], parts[2]), 4096).err(), Some(JoseError::Malformed));
    // A padded signature is refused as a signature.
    parts[2].push_str("==");
    let padded_signature = parts.join(".");
    assert_eq!(parse(&padded_signature, 4096).unwrap().verify::<Value>(verifying).err(), Some(JoseError::BadSignature));
}

#[test]
fn a_signature_with_non_canonical_trailing_bits_is_refused() {
    let pair = Pair::new(Algorithm::Es256);
    let (signing, verifying) = (pair.signing(), pair.verifying());
    let token = signed(&header_for(signing), &claims(), signing);
    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    // 64 bytes encode to 86 characters whose last carries 4 unused bits:
    // flipping one of them decodes to the same bytes under a lax decoder.
    assert_eq!(signature.len(), 86);
    let last = signature.chars().last().unwrap();
    let index = base64_index(last);
    let twin = base64_char(index ^ 1);
    let forged = format!("{signing_input}.{}{twin}", &signature[..85]);
    assert_eq!(parse(&forged, 4096).unwrap().verify::<Value>(verifying).err(), Some(JoseError::BadSignature));
}

fn base64_index(c: char) -> u8 {
    const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    ALPHABET.find(c).unwrap() as u8
}

fn base64_char(index: u8) -> char {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    ALPHABET[index as usize] as char
}

#[test]
fn the_header_is_a_json_object_with_an_alg() {
    let payload = encode(&claims());
    for header in ["bm90IGpzb24".to_owned(), encode(&json!(["alg"])), encode(&json!({ "typ": "JWT" }))] {
        assert_eq!(parse(&format!("{header}.{payload}.c2ln"), 4096).err(), Some(JoseError::Malformed), "{header}");
    }
}

#[test]
fn text_over_the_limit_is_not_read() {
    let pair = Pair::new(Algorithm::Es256);
    let signing = pair.signing();
    let token = signed(&header_for(signing), &claims(), signing);
    assert_eq!(parse(&token, token.len() - 1).err(), Some(JoseError::TooLarge));
    assert!(parse(&token, token.len()).is_ok());
}

#[test]
fn a_signature_over_other_bytes_fails() {
    let pair = Pair::new(Algorithm::Es256);
    let (signing, verifying) = (pair.signing(), pair.verifying());
    let token = signed(&header_for(signing), &claims(), signing);
    let other = signed(&header_for(signing), &json!({ "iss": "https://broker.example", "sub": "mallory" }), signing);
    let (_, signature) = other.rsplit_once('.').unwrap();
    let (signing_input, _) = token.rsplit_once('.').unwrap();
    let spliced = format!("{signing_input}.{signature}");
    assert_eq!(parse(&spliced, 4096).unwrap().verify::<Value>(verifying).err(), Some(JoseError::BadSignature));
}

/// A token that verified once, once remembered, verifies again without a
/// second check; a token that differs from it in any byte (another payload
/// under its signature, its signature's non-canonical twin) is checked, and
/// refused; and a remembered token under another key is checked again.
#[test]
fn a_remembered_token_verifies_again_and_no_other_takes_its_place() {
    let pair = Pair::new(Algorithm::Es256);
    let (signing, verifying) = (pair.signing(), pair.verifying());
    let verified = VerifiedSignatures::default();
    let token = signed(&header_for(signing), &claims(), signing);
    let (first, checked_now) = parse(&token, 4096).unwrap().verify_remembered::<Value>(verifying, &verified).unwrap();
    verified.remember(checked_now.expect("checked the first time"));
    let (again, checked_now) = parse(&token, 4096).unwrap().verify_remembered::<Value>(verifying, &verified).unwrap();
    assert_eq!((first.payload(), checked_now), (again.payload(), None));

    let refused = |text: &str| parse(text, 4096).unwrap().verify_remembered::<Value>(verifying, &verified).err();
    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    let (header, _) = signing_input.split_once('.').unwrap();
    let mallory = encode(&json!({ "iss": "https://broker.example", "sub": "mallory" }));
    assert_eq!(refused(&format!("{header}.{mallory}.{signature}")), Some(JoseError::BadSignature));
    let last = signature.chars().last().unwrap();
    let twin = format!("{signing_input}.{}{}", &signature[..signature.len() - 1], base64_char(base64_index(last) ^ 1));
    assert_eq!(refused(&twin), Some(JoseError::BadSignature));
    for other in [Pair::new(Algorithm::Es256), Pair::new(Algorithm::EdDsa)] {
        let outcome = parse(&token, 4096).unwrap().verify_remembered::<Value>(other.verifying(), &verified);
        assert_eq!(outcome.err(), Some(JoseError::BadSignature));
    }
}

#[test]
fn a_token_signed_by_one_key_does_not_verify_with_another() {
    let pair = Pair::new(Algorithm::Es256);
    let signing = pair.signing();
    let other_pair = Pair::new(Algorithm::Es256);
    let other = other_pair.verifying();
    let token = signed(&header_for(signing), &claims(), signing);
    assert_eq!(parse(&token, 4096).unwrap().verify::<Value>(other).err(), Some(JoseError::BadSignature));
    // Nor with a key of another algorithm, whatever the header says.
    let eddsa_pair = Pair::new(Algorithm::EdDsa);
    let eddsa = eddsa_pair.verifying();
    assert_eq!(parse(&token, 4096).unwrap().verify::<Value>(eddsa).err(), Some(JoseError::BadSignature));
}

#[test]
fn the_insecure_peek_needs_no_signature_and_verify_does() {
    let pair = Pair::new(Algorithm::Es256);
    let verifying = pair.verifying();
    let unsigned = format!("{}.{}.", encode(&json!({ "alg": "ES256" })), encode(&claims()));
    let parsed = parse(&unsigned, 4096).unwrap();
    assert_eq!(parsed.insecure_claims::<Value>().unwrap(), claims());
    assert_eq!(parsed.verify::<Value>(verifying).err(), Some(JoseError::BadSignature));
    let none = format!("{}.{}.", encode(&json!({ "alg": "none" })), encode(&claims()));
    assert_eq!(parse(&none, 4096).unwrap().verify::<Value>(verifying).err(), Some(JoseError::BadSignature));
}

#[test]
fn claims_are_decoded_only_as_asked() {
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Strict {
        exp: i64,
    }
    let pair = Pair::new(Algorithm::Es256);
    let (signing, verifying) = (pair.signing(), pair.verifying());
    let token = signed(&header_for(signing), &claims(), signing);
    let parsed = parse(&token, 4096).unwrap();
    assert_eq!(parsed.insecure_claims::<Strict>().err(), Some(JoseError::Payload));
    assert_eq!(parsed.verify::<Strict>(verifying).err(), Some(JoseError::Payload));
    let not_base64 = format!("{}.!!.c2ln", encode(&header_for(signing)));
    assert_eq!(parse(&not_base64, 4096).unwrap().insecure_claims::<Value>().err(), Some(JoseError::Malformed));
}

#[test]
fn header_rules_refuse_what_each_caller_asks() {
    let header = |extra: Value| {
        let mut header = json!({ "alg": "ES256" });
        header.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let text = format!("{}.{}.c2ln", encode(&header), encode(&claims()));
        parse(&text, 4096).unwrap().header().clone()
    };
    let plain = header(json!({}));
    assert!(!plain.is_critical() && !plain.names_or_carries_key() && !plain.names_key_elsewhere());
    assert!(header(json!({ "crit": ["exp"] })).is_critical());
    for name in ["jku", "x5u", "x5c"] {
        let named = header(json!({ name: "https://attacker.example/key" }));
        assert!(named.names_or_carries_key() && named.names_key_elsewhere(), "{name}");
    }
    let carried = header(json!({ "jwk": { "kty": "EC" } }));
    assert!(carried.names_or_carries_key() && carried.carries_jwk());
    assert!(!carried.names_key_elsewhere(), "a DPoP proof carries its key as jwk");
    assert_eq!(plain.algorithm_in(&[Algorithm::Es256]), Some(Algorithm::Es256));
    assert_eq!(plain.algorithm_in(&[Algorithm::EdDsa]), None);
    for alg in ["none", "HS256", "es256", "RS256"] {
        assert_eq!(header(json!({ "alg": alg })).algorithm_in(&[Algorithm::Es256, Algorithm::EdDsa]), None, "{alg}");
    }
}

/// RFC 8725 §3.10: a key source named in the header is refused even when
/// its value is null; a critical list likewise (RFC 7515 §4.1.11).
#[test]
fn a_header_member_counts_when_present_even_as_null() {
    for name in ["jku", "x5u", "x5c", "jwk", "crit"] {
        let text = format!("{}.{}.c2ln", encode(&json!({ "alg": "ES256", name: null })), encode(&claims()));
        let header = parse(&text, 4096).unwrap().header().clone();
        assert!(header.names_or_carries_key() || header.is_critical(), "{name}");
    }
}

/// Evidence is read even from a token too broken to parse: its payload
/// alone names the claimed client or the issuer that refuses it.
#[test]
fn the_insecure_payload_is_read_past_a_broken_header() {
    #[derive(serde::Deserialize)]
    struct Issuer {
        iss: String,
    }
    let broken = format!("!!.{}.c2ln", encode(&json!({ "iss": "https://idp.example" })));
    assert!(parse(&broken, 4096).is_err());
    assert_eq!(insecure_payload::<Issuer>(&broken).map(|issuer| issuer.iss).as_deref(), Some("https://idp.example"));
    assert!(insecure_payload::<Issuer>("no-dots").is_none());
    assert!(is_compact_shaped(&broken) && !is_compact_shaped("a.b") && !is_compact_shaped("a.b.c.d"));
}

/// An unverified token is a credential: its `Debug` shows the header only.
#[test]
fn an_unverified_token_prints_no_part_of_itself() {
    let token = format!("{}.{}.c2lnbmF0dXJl", encode(&json!({ "alg": "ES256" })), encode(&claims()));
    let printed = format!("{:?}", parse(&token, 4096).unwrap());
    assert!(printed.contains("ES256") && !printed.contains("c2lnbmF0dXJl"), "{printed}");
    assert!(!printed.contains(&encode(&claims())), "{printed}");
}
