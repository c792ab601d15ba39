//! Baton's own access tokens: their verification into [`Verified`]. They
//! are minted from derived claims only ([`crate::chain::Derived::sign`]).
//!
//! Verification follows RFC 9068 §4 and RFC 8725 in order: size, header
//! (`typ`, algorithm allow-list, known `kid`), signature, claims, issuer,
//! times, the delegation path, and the audience. Only [`verify`] hands out
//! a `Verified<Claims>`.

use crate::claims::Claims;
use crate::clock::Clock;
use crate::ids::{Audience, Issuer};
use crate::jose::{self, JoseError};
use crate::keys::{Algorithm, KeyLookup};
use crate::narrowing::{self, PathError};

/// No Baton token lives longer than a day (the `max_token_ttl` ceiling).
pub const MAX_LIFETIME: i64 = 86_400;

/// The media type of a JWT access token (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// A Baton token's claims whose signature and rules were checked. Only
/// [`verify`] makes one, so code that takes a `Verified<Claims>` (deriving
/// a child, introspecting, revoking) cannot be handed an unchecked token.
#[derive(Debug, Clone)]
pub struct Verified<T>(T);

impl<T> Verified<T> {
    /// The verified claims.
    pub fn claims(&self) -> &T {
        &self.0
    }

    /// The verified claims, kept once the token's checks are done with.
    pub fn into_claims(self) -> T {
        self.0
    }
}

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
    // A token that verified before under this key set (see
    // `keys::VerifiedSignatures`) is not checked again; every other check is.
    let remembered = keys.verified_signatures();
    let signed = match remembered {
        Some(remembered) => token.verify_remembered::<Claims>(key, remembered),
        None => token.verify::<Claims>(key).map(|signed| (signed, None)),
    };
    let (signed, checked_now) = signed.map_err(|error| match error {
        JoseError::BadSignature => VerifyError::BadSignature,
        JoseError::Payload => VerifyError::BadClaims,
        JoseError::TooLarge | JoseError::Malformed => VerifyError::Malformed,
    })?;
    let claims = signed.into_payload();
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
    narrowing::check_path(&claims, rules.max_depth)?;
    // Last, so that a token for another audience is refused only once it
    // proved to be a live token of this broker.
    if !rules.audience.admits(&claims.aud) {
        return Err(VerifyError::WrongAudience);
    }
    if let (Some(remembered), Some(digest)) = (remembered, checked_now) {
        remembered.remember(digest);
    }
    Ok(Verified(claims))
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
pub fn insecure_peek(token: &str) -> Result<Peeked<Claims>, VerifyError> {
    // Display reads whatever it is given, at any length.
    let token = jose::parse(token, usize::MAX).map_err(|_| VerifyError::Malformed)?;
    let claims = token.insecure_claims().map_err(|error| match error {
        JoseError::Payload => VerifyError::BadClaims,
        JoseError::TooLarge | JoseError::Malformed | JoseError::BadSignature => VerifyError::Malformed,
    })?;
    let header = token.header();
    Ok(Peeked { kid: header.kid.clone(), alg: header.alg.clone(), claims })
}

#[cfg(test)]
mod tests {
    //! Verification, one rule at a time: each refused token breaks exactly
    //! one rule and is otherwise one the broker would accept, signed with
    //! the broker's own key.

    use std::collections::BTreeMap;

    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use serde_json::{json, Value};

    use super::*;
    use crate::claims::{Actor, Delegation, ScopeSet, TokenId};
    use crate::clock::{FixedClock, UnixTime};
    use crate::keys::{self, Algorithm, KeySet, SigningKey, VerifyingKey};

    const ISSUER: &str = "https://baton.example";
    const NOW: i64 = 1_900_000_000;
    const LEEWAY: i64 = 30;
    const HOUR: i64 = 3600;

    /// A fresh key folder with one current key of `algorithm`, loaded.
    fn key_set(algorithm: Algorithm) -> KeySet {
        let dir = tempfile::tempdir().unwrap();
        keys::generate(dir.path(), algorithm, HOUR, UnixTime(NOW)).unwrap();
        KeySet::load(dir.path(), HOUR, UnixTime(NOW)).unwrap()
    }

    /// The public half of `set`'s signing key, as a verifier holds it.
    fn public(set: &KeySet) -> VerifyingKey {
        VerifyingKey::from_jwk(set.verifying(set.signing().kid()).unwrap().public_jwk()).unwrap()
    }

    /// A root token (`client_credentials`): `client_id`'s own for `aud`,
    /// issued a minute ago for ten minutes.
    fn claims(sub: &str, aud: &str, client_id: &str) -> Claims {
        Claims {
            iss: ISSUER.into(),
            sub: sub.into(),
            aud: aud.into(),
            client_id: client_id.into(),
            scope: ScopeSet::parse("flights.read flights.book").unwrap(),
            iat: UnixTime(NOW - 60),
            exp: UnixTime(NOW + 540),
            jti: TokenId("root".into()),
            act: None,
            may_act: None,
            cnf: None,
            delegation: Delegation::default(),
        }
    }

    /// The exchange of `parent` by the agent it is addressed to, for `aud`:
    /// the child the broker would write (RFC 8693 §4.1, DESIGN.md §4).
    fn exchanged(parent: &Claims, aud: &str) -> Claims {
        let holder = crate::ids::AgentId::new(parent.aud.as_str());
        let mut child = claims(&parent.sub, aud, &holder);
        child.jti = TokenId(format!("{}-child", parent.jti));
        child.act = Some(Actor { sub: holder, act: parent.act.clone().map(Box::new) });
        child.delegation.hops = parent.delegation.hops.iter().cloned().chain([parent.as_hop()]).collect();
        child.delegation.depth = parent.delegation.depth + 1;
        child
    }

    /// The planner's exchange of the orchestrator's token, for the booker.
    fn one_hop() -> Claims {
        exchanged(&claims("orchestrator", "planner", "orchestrator"), "booker")
    }

    fn rules(audience: AudienceRule) -> Validation {
        Validation {
            issuer: ISSUER.into(),
            max_token_bytes: 8 * 1024,
            max_depth: 5,
            algorithms: vec![Algorithm::Es256, Algorithm::EdDsa],
            leeway: LEEWAY,
            audience,
        }
    }

    /// What `verify` makes of `token` against `keys` at `NOW`.
    fn verified(token: &str, keys: &dyn KeyLookup, rules: &Validation) -> Result<Claims, VerifyError> {
        verify(token, keys, rules, &FixedClock::new(UnixTime(NOW))).map(Verified::into_claims)
    }

    /// A token as the broker mints it.
    fn minted(claims: &Claims, key: &SigningKey) -> String {
        let header = json!({ "typ": ACCESS_TOKEN_TYP, "kid": key.kid(), "alg": key.algorithm().name() });
        jose::sign(&serde_json::to_vec(&header).unwrap(), &serde_json::to_vec(claims).unwrap(), key).unwrap()
    }

    /// The header the broker writes.
    fn header(key: &SigningKey) -> Value {
        json!({ "typ": ACCESS_TOKEN_TYP, "kid": key.kid(), "alg": key.algorithm().name() })
    }

    /// `header` (edited by `edit`) and `claims`, signed with `key`.
    fn forged(key: &SigningKey, edit: impl FnOnce(&mut serde_json::Map<String, Value>), claims: &Claims) -> String {
        let mut header = header(key);
        edit(header.as_object_mut().unwrap());
        jose::sign(&serde_json::to_vec(&header).unwrap(), &serde_json::to_vec(claims).unwrap(), key).unwrap()
    }

    /// RFC 9068 §4: a token the broker minted verifies, with either of its
    /// algorithms, and gives back exactly its claims.
    #[test]
    fn a_minted_token_verifies_with_either_algorithm() {
        for algorithm in [Algorithm::Es256, Algorithm::EdDsa] {
            let keys = key_set(algorithm);
            for claims in [claims("orchestrator", "planner", "orchestrator"), one_hop()] {
                let token = minted(&claims, keys.signing());
                assert_eq!(verified(&token, &keys, &rules(AudienceRule::Any)), Ok(claims), "{algorithm:?}");
            }
        }
    }

    /// A key set remembers a token only once it passed every check, and a
    /// remembered token is still held to every rule but its signature: its
    /// times, and the audience a caller asks for.
    #[test]
    fn a_remembered_token_is_checked_on_every_presentation_but_its_signature() {
        let keys = key_set(Algorithm::Es256);
        let remembered = || keys.verified_signatures().unwrap().len();
        let token = minted(&one_hop(), keys.signing());
        let for_planner = rules(AudienceRule::Is("planner".into()));
        assert_eq!(verified(&token, &keys, &for_planner), Err(VerifyError::WrongAudience));
        assert_eq!(remembered(), 0, "refused: not remembered");
        assert_eq!(verified(&token, &keys, &rules(AudienceRule::Any)), Ok(one_hop()));
        assert_eq!(remembered(), 1);
        assert_eq!(verified(&token, &keys, &rules(AudienceRule::Any)), Ok(one_hop()), "remembered");
        assert_eq!(verified(&token, &keys, &for_planner), Err(VerifyError::WrongAudience));
        let later = FixedClock::new(UnixTime(NOW + 540 + LEEWAY));
        assert_eq!(verify(&token, &keys, &rules(AudienceRule::Any), &later).err(), Some(VerifyError::Expired));
        // Another payload under the remembered token's header and signature
        // is checked, and refused.
        let (signing_input, signature) = token.rsplit_once('.').unwrap();
        let (head, _) = signing_input.split_once('.').unwrap();
        let mut widened = one_hop();
        widened.aud = "https://api.airline.example".into();
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&widened).unwrap());
        let spliced = format!("{head}.{payload}.{signature}");
        assert_eq!(verified(&spliced, &keys, &rules(AudienceRule::Any)), Err(VerifyError::BadSignature));
        assert_eq!(remembered(), 1);
    }

    /// Each key set remembers its own tokens: a set loaded again from the
    /// same folder starts with none, and checks the token in full.
    #[test]
    fn a_key_set_loaded_again_remembers_nothing() {
        let dir = tempfile::tempdir().unwrap();
        keys::generate(dir.path(), Algorithm::Es256, HOUR, UnixTime(NOW)).unwrap();
        let first = KeySet::load(dir.path(), HOUR, UnixTime(NOW)).unwrap();
        let token = minted(&one_hop(), first.signing());
        assert_eq!(verified(&token, &first, &rules(AudienceRule::Any)), Ok(one_hop()));
        assert_eq!(first.verified_signatures().unwrap().len(), 1);
        let again = KeySet::load(dir.path(), HOUR, UnixTime(NOW)).unwrap();
        assert!(again.same_keys(&first));
        assert!(again.verified_signatures().unwrap().is_empty());
        assert_eq!(verified(&token, &again, &rules(AudienceRule::Any)), Ok(one_hop()));
    }

    /// RFC 8725 §3.11 (and the `max_token_bytes` setting): a token longer
    /// than the limit is refused before it is read.
    #[test]
    fn a_token_over_the_size_limit_is_refused() {
        let keys = key_set(Algorithm::Es256);
        let token = minted(&one_hop(), keys.signing());
        let at_limit = Validation { max_token_bytes: token.len(), ..rules(AudienceRule::Any) };
        assert!(verified(&token, &keys, &at_limit).is_ok());
        let below = Validation { max_token_bytes: token.len() - 1, ..rules(AudienceRule::Any) };
        assert_eq!(verified(&token, &keys, &below), Err(VerifyError::TooLarge));
    }

    /// RFC 9068 §4 step 1, RFC 8725 §3.11: `typ` is `at+jwt` or
    /// `application/at+jwt`, compared without case (RFC 6838 §4.2); any
    /// other type, or none, is refused.
    #[test]
    fn typ_must_be_at_jwt() {
        let keys = key_set(Algorithm::Es256);
        let claims = one_hop();
        for typ in ["at+jwt", "AT+JWT", "application/at+jwt", "Application/At+Jwt"] {
            let token = forged(keys.signing(), |header| drop(header.insert("typ".into(), json!(typ))), &claims);
            assert_eq!(verified(&token, &keys, &rules(AudienceRule::Any)), Ok(claims.clone()), "{typ}");
        }
        for typ in
            [json!("JWT"), json!("jwt"), json!("application/jwt"), json!("at+jwt "), json!("dpop+jwt"), json!(null)]
        {
            let token = forged(keys.signing(), |header| drop(header.insert("typ".into(), typ.clone())), &claims);
            assert_eq!(verified(&token, &keys, &rules(AudienceRule::Any)), Err(VerifyError::WrongType), "{typ}");
        }
        let untyped = forged(keys.signing(), |header| drop(header.remove("typ")), &claims);
        assert_eq!(verified(&untyped, &keys, &rules(AudienceRule::Any)), Err(VerifyError::WrongType));
    }

    /// RFC 8725 §3.1–3.2: `none` and MACs are refused, whatever the token
    /// carries, and so is an algorithm of Baton's list that these rules leave out.
    #[test]
    fn only_allowed_algorithms_verify() {
        let keys = key_set(Algorithm::Es256);
        let signing = keys.signing();
        let claims = one_hop();
        let signing_input = |alg: &str| {
            let header = json!({ "typ": ACCESS_TOKEN_TYP, "kid": signing.kid(), "alg": alg });
            format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap()),
                URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
            )
        };
        // `none`: an unsecured JWS (RFC 7515 §A.5), with an empty signature.
        let unsecured = format!("{}.", signing_input("none"));
        assert_eq!(verified(&unsecured, &keys, &rules(AudienceRule::Any)), Err(VerifyError::AlgorithmNotAllowed));
        // HS256 keyed with the published public key: the classic confusion.
        let input = signing_input("HS256");
        let secret = serde_json::to_vec(&keys.jwks()["keys"][0]).unwrap();
        let mac = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret), input.as_bytes());
        let confused = format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()));
        assert_eq!(verified(&confused, &keys, &rules(AudienceRule::Any)), Err(VerifyError::AlgorithmNotAllowed));
        // EdDSA is Baton's, but not in rules that allow ES256 only.
        let ed = key_set(Algorithm::EdDsa);
        let token = minted(&claims, ed.signing());
        let es256_only = Validation { algorithms: vec![Algorithm::Es256], ..rules(AudienceRule::Any) };
        assert_eq!(verified(&token, &ed, &es256_only), Err(VerifyError::AlgorithmNotAllowed));
        assert!(verified(&token, &ed, &rules(AudienceRule::Any)).is_ok());
    }

    /// RFC 8725 §3.10, RFC 7515 §4.1.4: the key is the published one with
    /// the header's `kid`; a token naming no such key, or none, is refused.
    #[test]
    fn an_unknown_or_missing_kid_is_refused() {
        let keys = key_set(Algorithm::Es256);
        let claims = one_hop();
        let unknown =
            forged(keys.signing(), |header| drop(header.insert("kid".into(), json!("not-published"))), &claims);
        assert_eq!(verified(&unknown, &keys, &rules(AudienceRule::Any)), Err(VerifyError::UnknownKey));
        let missing = forged(keys.signing(), |header| drop(header.remove("kid")), &claims);
        assert_eq!(verified(&missing, &keys, &rules(AudienceRule::Any)), Err(VerifyError::UnknownKey));
    }

    /// RFC 8725 §3.1: the algorithm must be the named key's. A header that
    /// names an ES256 key under `EdDSA`, or the reverse, is refused as
    /// naming no key, before any signature is checked.
    #[test]
    fn a_key_of_another_algorithm_is_not_the_tokens_key() {
        let (es, ed) = (key_set(Algorithm::Es256), key_set(Algorithm::EdDsa));
        let published: BTreeMap<String, VerifyingKey> =
            [(es.signing().kid().to_owned(), public(&es)), (ed.signing().kid().to_owned(), public(&ed))].into();
        let claims = one_hop();
        for (signer, other) in [(&es, &ed), (&ed, &es)] {
            assert_eq!(
                verified(&minted(&claims, signer.signing()), &published, &rules(AudienceRule::Any)),
                Ok(claims.clone())
            );
            let kid = other.signing().kid().to_owned();
            let crossed = forged(signer.signing(), |header| drop(header.insert("kid".into(), json!(kid))), &claims);
            assert_eq!(verified(&crossed, &published, &rules(AudienceRule::Any)), Err(VerifyError::UnknownKey));
        }
    }

    /// RFC 7515 §4.1.11: Baton defines no extensions, so a token that marks
    /// any as critical is refused.
    #[test]
    fn a_critical_header_is_refused() {
        let keys = key_set(Algorithm::Es256);
        let claims = one_hop();
        let token = forged(
            keys.signing(),
            |header| {
                header.insert("crit".into(), json!(["exp"]));
                header.insert("exp".into(), json!(NOW + 60));
            },
            &claims,
        );
        assert_eq!(verified(&token, &keys, &rules(AudienceRule::Any)), Err(VerifyError::CriticalHeader));
    }

    /// RFC 8725 §3.10: keys come from the broker's JWKS, never from the
    /// token. A header that names or carries a key (`jku`, `x5u`, `jwk`,
    /// `x5c`) is refused, even when that key is the right one.
    #[test]
    fn a_header_that_names_or_carries_a_key_is_refused() {
        let keys = key_set(Algorithm::Es256);
        let claims = one_hop();
        let own_jwk = keys.jwks()["keys"][0].clone();
        for (name, value) in [
            ("jku", json!("https://attacker.example/jwks")),
            ("x5u", json!("https://attacker.example/cert.pem")),
            ("jwk", own_jwk),
            ("x5c", json!(["MIIB"])),
        ] {
            let token = forged(keys.signing(), |header| drop(header.insert(name.into(), value)), &claims);
            assert_eq!(verified(&token, &keys, &rules(AudienceRule::Any)), Err(VerifyError::KeyInHeader), "{name}");
        }
    }

    /// RFC 7515 §5.2 step 8: the signature must be the published key's over
    /// these exact bytes.
    #[test]
    fn a_bad_signature_is_refused() {
        let keys = key_set(Algorithm::Es256);
        let claims = one_hop();
        // Another key signs under the published key's `kid`.
        let impostor = key_set(Algorithm::Es256);
        let kid = keys.signing().kid().to_owned();
        let token = forged(impostor.signing(), |header| drop(header.insert("kid".into(), json!(kid))), &claims);
        assert_eq!(verified(&token, &keys, &rules(AudienceRule::Any)), Err(VerifyError::BadSignature));
        // The broker's signature over other claims, moved onto these.
        let genuine = minted(&claims, keys.signing());
        let mut widened = claims.clone();
        widened.scope = ScopeSet::parse("flights.read flights.book flights.cancel").unwrap();
        let other = minted(&widened, keys.signing());
        let (header, _) = genuine.split_once('.').unwrap();
        let (_, rest) = other.split_once('.').unwrap();
        let (payload, _) = rest.split_once('.').unwrap();
        let (_, signature) = genuine.rsplit_once('.').unwrap();
        let spliced = format!("{header}.{payload}.{signature}");
        assert_eq!(verified(&spliced, &keys, &rules(AudienceRule::Any)), Err(VerifyError::BadSignature));
    }

    /// RFC 9068 §4 step 2: `iss` must be this broker's, exactly.
    #[test]
    fn a_foreign_issuer_is_refused() {
        let keys = key_set(Algorithm::Es256);
        for issuer in ["https://other.example", "https://baton.example/", "https://BATON.example"] {
            let mut claims = one_hop();
            claims.iss = issuer.into();
            let token = minted(&claims, keys.signing());
            assert_eq!(verified(&token, &keys, &rules(AudienceRule::Any)), Err(VerifyError::WrongIssuer), "{issuer}");
        }
    }

    /// RFC 9068 §4 step 3, RFC 7519 §4.1.3: where the rules name an
    /// audience, `aud` must be it byte for byte; where they accept any (RFC
    /// 7662 introspection, RFC 7009 revocation), every audience passes.
    #[test]
    fn the_audience_is_the_one_asked_for_unless_any_is_accepted() {
        let keys = key_set(Algorithm::Es256);
        let claims = one_hop();
        let token = minted(&claims, keys.signing());
        assert_eq!(verified(&token, &keys, &rules(AudienceRule::Is("booker".into()))), Ok(claims.clone()));
        for other in ["planner", "Booker", "booker ", ""] {
            let rules = rules(AudienceRule::Is(other.into()));
            assert_eq!(verified(&token, &keys, &rules), Err(VerifyError::WrongAudience), "{other:?}");
        }
        assert_eq!(verified(&token, &keys, &rules(AudienceRule::Any)), Ok(claims));
    }

    /// RFC 9068 §4 step 6, RFC 7519 §4.1.4: a token past `exp` is refused;
    /// the leeway (RFC 7519 §4.1.4 "some small leeway") accepts one that
    /// expired less than `leeway` seconds ago, and no more.
    #[test]
    fn an_expired_token_is_refused_past_the_leeway() {
        let keys = key_set(Algorithm::Es256);
        let at = |exp: i64| {
            let mut claims = claims("orchestrator", "planner", "orchestrator");
            claims.exp = UnixTime(exp);
            claims.iat = UnixTime(exp - 600);
            verified(&minted(&claims, keys.signing()), &keys, &rules(AudienceRule::Any))
        };
        assert!(at(NOW + 1).is_ok());
        assert!(at(NOW).is_ok(), "within the leeway");
        assert!(at(NOW - LEEWAY + 1).is_ok(), "within the leeway");
        assert_eq!(at(NOW - LEEWAY), Err(VerifyError::Expired));
        assert_eq!(at(NOW - 10 * LEEWAY), Err(VerifyError::Expired));
    }

    /// RFC 9068 §4 step 6, RFC 7519 §4.1.6: a token issued in the future,
    /// beyond the leeway, is refused.
    #[test]
    fn a_token_issued_in_the_future_is_refused_beyond_the_leeway() {
        let keys = key_set(Algorithm::Es256);
        let at = |iat: i64| {
            let mut claims = claims("orchestrator", "planner", "orchestrator");
            claims.iat = UnixTime(iat);
            claims.exp = UnixTime(iat + 600);
            verified(&minted(&claims, keys.signing()), &keys, &rules(AudienceRule::Any))
        };
        assert_eq!(at(NOW + LEEWAY).err(), None, "within the leeway");
        assert_eq!(at(NOW + LEEWAY + 1), Err(VerifyError::IssuedInFuture));
    }

    /// `MAX_LIFETIME` (the `max_token_ttl` ceiling): no token the broker
    /// issues lives longer, so one that claims to is not its own.
    #[test]
    fn a_lifetime_beyond_the_ceiling_is_refused() {
        let keys = key_set(Algorithm::Es256);
        let lasting = |seconds: i64| {
            let mut claims = claims("orchestrator", "planner", "orchestrator");
            claims.exp = claims.iat.plus(seconds);
            verified(&minted(&claims, keys.signing()), &keys, &rules(AudienceRule::Any))
        };
        assert!(lasting(MAX_LIFETIME).is_ok());
        assert_eq!(lasting(MAX_LIFETIME + 1), Err(VerifyError::LifetimeTooLong));
    }

    /// DESIGN.md §4 and §10, RFC 8693 §4.1: the path a token records must be
    /// one the broker writes. A hop exchanged by an agent its parent was not
    /// addressed to, a depth that disagrees with the hops, or a depth over
    /// the limit is refused, though the broker's key signed it.
    #[test]
    fn a_delegation_path_that_breaks_the_rules_is_refused() {
        let keys = key_set(Algorithm::Es256);
        let check = |claims: &Claims, max_depth: u32| {
            let rules = Validation { max_depth, ..rules(AudienceRule::Any) };
            verified(&minted(claims, keys.signing()), &keys, &rules)
        };
        let two_hops = exchanged(&one_hop(), "https://api.airline.example");
        assert!(check(&two_hops, 2).is_ok());
        assert_eq!(check(&two_hops, 1), Err(VerifyError::Path(PathError::TooDeep)));

        let mut diverted = two_hops.clone();
        diverted.delegation.hops[0].aud = "mallory".into();
        assert_eq!(check(&diverted, 5), Err(VerifyError::Path(PathError::WrongHolder)));

        let mut shallow = two_hops.clone();
        shallow.delegation.depth = 1;
        assert_eq!(check(&shallow, 5), Err(VerifyError::Path(PathError::Inconsistent)));

        let mut widened = two_hops;
        widened.scope = ScopeSet::parse("flights.read flights.cancel").unwrap();
        assert_eq!(check(&widened, 5), Err(VerifyError::Path(PathError::ScopeWidened)));
    }
}
