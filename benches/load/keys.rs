//! The ES256 keys the benchmark makes for a run, and what it signs with
//! them: the client assertions of `booker-jwt` (`private_key_jwt`), and the
//! subject token the bare endpoint verifies, signed with that endpoint's own
//! key.

use base64::Engine;
use baton::clock::{Clock, SystemClock};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

use crate::{ASSERTION_LIFETIME, KEY_AGENT};

/// The key id of `booker-jwt`'s key in its JWKS.
const AGENT_KEY_ID: &str = "load-key-1";
/// The key id of the bare endpoint's key.
pub const BARE_KEY_ID: &str = "bare-1";

pub fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS: `header` (already encoded) and `claims`, signed.
pub fn sign(pair: &EcdsaKeyPair, random: &SystemRandom, header: &str, claims: &[u8]) -> Option<String> {
    let input = format!("{header}.{}", encode(claims));
    let signature = pair.sign(random, input.as_bytes()).ok()?;
    Some(format!("{input}.{}", encode(signature.as_ref())))
}

fn generate() -> (Vec<u8>, EcdsaKeyPair) {
    let random = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &random).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &random).unwrap();
    (pkcs8.as_ref().to_vec(), pair)
}

/// `booker-jwt`'s key: its public half goes in the broker's `agents.toml`,
/// its private half signs the client assertions of (d).
pub struct AgentKey {
    pair: EcdsaKeyPair,
}

impl AgentKey {
    pub fn generate() -> AgentKey {
        AgentKey { pair: generate().1 }
    }

    /// The public key as a TOML inline table, for `agents.toml`.
    pub fn public_jwk_toml(&self) -> String {
        let point = self.pair.public_key().as_ref(); // 0x04 ‖ x ‖ y
        format!(
            "{{ kty = \"EC\", crv = \"P-256\", kid = \"{AGENT_KEY_ID}\", x = \"{}\", y = \"{}\" }}",
            encode(&point[1..33]),
            encode(&point[33..65])
        )
    }

    /// `count` RFC 7523 client assertions for `issuer`, each with its own
    /// `jti`, all expiring `ASSERTION_LIFETIME` from now; signed on every
    /// core, before the run, so that the client's signing is not in the
    /// figures.
    pub fn assertions(&self, issuer: &str, run: &str, count: usize) -> Vec<String> {
        let now = SystemClock.now().0;
        let expires = now + ASSERTION_LIFETIME.as_secs() as i64;
        let header = encode(format!(r#"{{"alg":"ES256","typ":"JWT","kid":"{AGENT_KEY_ID}"}}"#).as_bytes());
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let chunk = count.div_ceil(threads).max(1);
        let random = SystemRandom::new();
        std::thread::scope(|scope| {
            let parts: Vec<_> = (0..count)
                .step_by(chunk)
                .map(|start| {
                    let (header, random) = (&header, &random);
                    scope.spawn(move || {
                        (start..(start + chunk).min(count))
                            .map(|index| {
                                let claims = serde_json::json!({
                                    "iss": KEY_AGENT, "sub": KEY_AGENT, "aud": issuer,
                                    "iat": now, "exp": expires, "jti": format!("{run}-{index}"),
                                });
                                sign(&self.pair, random, header, claims.to_string().as_bytes()).unwrap()
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            parts.into_iter().flat_map(|part| part.join().unwrap()).collect()
        })
    }
}

/// The bare endpoint's key. The benchmark hands it to the endpoint (PKCS#8,
/// base64url, in its environment) and signs the subject token of its runs
/// with it, so that the endpoint verifies one signature and makes one per
/// request, as an exchange must.
pub struct BareKey {
    pkcs8: Vec<u8>,
    pair: EcdsaKeyPair,
}

impl BareKey {
    pub fn generate() -> BareKey {
        let (pkcs8, pair) = generate();
        BareKey { pkcs8, pair }
    }

    /// The private key as the endpoint reads it from its environment.
    pub fn to_environment(&self) -> String {
        encode(&self.pkcs8)
    }

    /// The token the planner would hand the booker (depth 1, both travel
    /// scopes), issued by the endpoint at `issuer`, valid for a day.
    pub fn parent_token(&self, issuer: &str) -> String {
        let now = SystemClock.now().0;
        let header = encode(format!(r#"{{"alg":"ES256","typ":"at+jwt","kid":"{BARE_KEY_ID}"}}"#).as_bytes());
        let claims = serde_json::json!({
            "iss": issuer, "sub": "orchestrator", "aud": "booker", "client_id": "planner",
            "scope": "flights.read flights.book", "iat": now, "exp": now + 86_400,
            "jti": format!("bare-parent-{now}"), "act": { "sub": "planner" },
        });
        sign(&self.pair, &SystemRandom::new(), &header, claims.to_string().as_bytes()).unwrap()
    }
}
