//! RFC 9449 §4.3, one test per check.

use serde_json::json;

use super::nonce::Nonces;
use super::*;

const URI: &str = "https://broker.example/token";
const NOW: UnixTime = UnixTime(1_800_000_000);

fn expected() -> Expected<'static> {
    Expected { method: "POST", uri: URI, access_token: None, nonce: None }
}

fn key() -> ProofKey {
    ProofKey::generate().unwrap()
}

fn claims() -> serde_json::Value {
    json!({ "jti": "one", "htm": "POST", "htu": URI, "iat": NOW.0 })
}

#[test]
fn a_well_made_proof_passes_and_names_its_key() {
    let key = key();
    let proof = key.proof(ProofFor { method: "POST", uri: URI, ..ProofFor::default() }, NOW).unwrap();
    let checked = check(&proof, &expected(), NOW).unwrap();
    assert_eq!(checked.jkt(), key.jkt());
    assert_eq!(checked.replay_until(), NOW.plus(PROOF_WINDOW));
}

#[test]
fn step_2_a_proof_is_one_compact_jwt() {
    let key = key();
    let proof = key.sign(&key.header(), &claims()).unwrap();
    assert_eq!(check(&format!("{proof}.extra"), &expected(), NOW), Err(ProofError::Malformed));
    assert_eq!(check("not a jwt", &expected(), NOW), Err(ProofError::Malformed));
    assert_eq!(check(&"a".repeat(MAX_PROOF_BYTES + 1), &expected(), NOW), Err(ProofError::Malformed));
}

#[test]
fn step_3_every_required_claim_is_present() {
    let key = key();
    for missing in ["jti", "htm", "htu", "iat"] {
        let mut claims = claims();
        claims.as_object_mut().unwrap().remove(missing);
        let proof = key.sign(&key.header(), &claims).unwrap();
        assert_eq!(check(&proof, &expected(), NOW), Err(ProofError::Malformed), "without {missing}");
    }
}

#[test]
fn step_4_typ_is_dpop_jwt() {
    let key = key();
    for typ in [json!("JWT"), json!("at+jwt"), serde_json::Value::Null] {
        let mut header = key.header();
        header["typ"] = typ.clone();
        let proof = key.sign(&header, &claims()).unwrap();
        assert_eq!(check(&proof, &expected(), NOW), Err(ProofError::WrongType), "typ {typ}");
    }
}

#[test]
fn step_5_only_allowed_asymmetric_algorithms() {
    let key = key();
    for alg in ["none", "HS256", "RS256", "ES384"] {
        let mut header = key.header();
        header["alg"] = json!(alg);
        let proof = key.sign(&header, &claims()).unwrap();
        assert_eq!(check(&proof, &expected(), NOW), Err(ProofError::AlgorithmNotAllowed), "alg {alg}");
    }
}

#[test]
fn step_6_the_signature_verifies_with_the_carried_key() {
    let (signer, other) = (key(), key());
    // Signed by one key, carrying another's public key.
    let proof = signer.sign(&other.header(), &claims()).unwrap();
    assert_eq!(check(&proof, &expected(), NOW), Err(ProofError::BadSignature));
    let mut header = signer.header();
    header.as_object_mut().unwrap().remove("jwk");
    let proof = signer.sign(&header, &claims()).unwrap();
    assert_eq!(check(&proof, &expected(), NOW), Err(ProofError::Malformed), "no jwk at all");
}

#[test]
fn step_7_no_private_key_in_the_header() {
    let key = key();
    let mut header = key.header();
    header["jwk"]["d"] = json!("c2VjcmV0");
    let proof = key.sign(&header, &claims()).unwrap();
    assert_eq!(check(&proof, &expected(), NOW), Err(ProofError::PrivateKey));
}

#[test]
fn step_8_htm_is_the_method() {
    let key = key();
    let proof = key.proof(ProofFor { method: "GET", uri: URI, ..ProofFor::default() }, NOW).unwrap();
    assert_eq!(check(&proof, &expected(), NOW), Err(ProofError::WrongMethod));
}

#[test]
fn step_9_htu_is_the_uri_without_query_or_fragment() {
    let key = key();
    let proof = |uri| key.proof(ProofFor { method: "POST", uri, ..ProofFor::default() }, NOW).unwrap();
    assert!(check(&proof("HTTPS://Broker.Example:443/token?x=1#f"), &expected(), NOW).is_ok(), "normalized");
    for uri in ["https://broker.example/other", "https://evil.example/token", "http://broker.example/token", "/token"] {
        assert_eq!(check(&proof(uri), &expected(), NOW), Err(ProofError::WrongUri), "htu {uri}");
    }
}

#[test]
fn step_10_the_server_nonce_when_required() {
    let key = key();
    let nonces = Nonces::new(&[9; 32]);
    let rules = Expected { nonce: Some(&nonces), ..expected() };
    let without = key.proof(ProofFor { method: "POST", uri: URI, ..ProofFor::default() }, NOW).unwrap();
    assert_eq!(check(&without, &rules, NOW), Err(ProofError::UseNonce));
    let wrong = key.proof(ProofFor { method: "POST", uri: URI, nonce: Some("bm9uY2U"), ..ProofFor::default() }, NOW);
    assert_eq!(check(&wrong.unwrap(), &rules, NOW), Err(ProofError::UseNonce));
    let current = nonces.current(NOW);
    let with = key.proof(ProofFor { method: "POST", uri: URI, nonce: Some(&current), ..ProofFor::default() }, NOW);
    assert!(check(&with.unwrap(), &rules, NOW).is_ok());
}

#[test]
fn step_11_iat_within_the_window() {
    let key = key();
    for iat in [NOW.plus(-PROOF_WINDOW - 1), NOW.plus(PROOF_WINDOW + 1)] {
        let proof = key.proof(ProofFor { method: "POST", uri: URI, ..ProofFor::default() }, iat).unwrap();
        assert_eq!(check(&proof, &expected(), NOW), Err(ProofError::Stale), "iat {iat}");
    }
    let edge = key.proof(ProofFor { method: "POST", uri: URI, ..ProofFor::default() }, NOW.plus(-PROOF_WINDOW));
    assert!(check(&edge.unwrap(), &expected(), NOW).is_ok());
}

#[test]
fn step_12_ath_is_the_hash_of_the_access_token() {
    let key = key();
    let rules =
        Expected { method: "GET", uri: "https://api.example/flights", access_token: Some("token-a"), nonce: None };
    let request =
        |access_token| ProofFor { method: "GET", uri: "https://api.example/flights", access_token, nonce: None };
    assert!(check(&key.proof(request(Some("token-a")), NOW).unwrap(), &rules, NOW).is_ok());
    assert_eq!(
        check(&key.proof(request(Some("token-b")), NOW).unwrap(), &rules, NOW),
        Err(ProofError::AccessTokenHash)
    );
    assert_eq!(check(&key.proof(request(None), NOW).unwrap(), &rules, NOW), Err(ProofError::AccessTokenHash));
}

#[test]
fn replay_ids_are_per_key_and_per_jti() {
    let key = key();
    let first = check(&key.sign(&key.header(), &claims()).unwrap(), &expected(), NOW).unwrap();
    let again = check(&key.sign(&key.header(), &claims()).unwrap(), &expected(), NOW).unwrap();
    assert_eq!(first.replay_id(), again.replay_id(), "the same jti from the same key is one proof");
    let other = ProofKey::generate().unwrap();
    let theirs = check(&other.sign(&other.header(), &claims()).unwrap(), &expected(), NOW).unwrap();
    assert_ne!(first.replay_id(), theirs.replay_id());
}

#[test]
fn a_proof_carries_its_key_as_jwk_and_names_no_other() {
    let key = key();
    for (name, value) in [
        ("jku", json!("https://attacker.example/jwks")),
        ("x5u", json!("https://attacker.example/cert")),
        ("x5c", json!(["MIIB"])),
    ] {
        let mut header = key.header();
        header[name] = value;
        let proof = key.sign(&header, &claims()).unwrap();
        assert_eq!(check(&proof, &expected(), NOW), Err(ProofError::Malformed), "{name}");
    }
    // The control: `jwk` alone, as RFC 9449 §4.2 requires.
    let proof = key.sign(&key.header(), &claims()).unwrap();
    assert!(check(&proof, &expected(), NOW).is_ok());
}
