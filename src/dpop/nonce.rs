//! Server nonces for DPoP proofs (RFC 9449 §8): when configured, a proof
//! must carry a nonce the broker handed out recently, which bounds how long
//! a proof made ahead of time stays usable.
//!
//! Nonces need no state: each is the number of its period and a MAC over it,
//! under a secret every node derives from the shared signing key. One is
//! accepted in its own period and the next.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;

use crate::clock::UnixTime;

/// How long one nonce is handed out, in seconds; it is accepted for up to
/// twice that.
pub const NONCE_PERIOD: i64 = 300;

/// The MAC's length kept in a nonce, in bytes.
const TAG_BYTES: usize = 16;

/// Makes and checks server nonces.
pub struct Nonces {
    key: hmac::Key,
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Nonces(***)")
    }
}

impl Nonces {
    /// Nonces under `secret` (at least 32 bytes of key material).
    pub fn new(secret: &[u8]) -> Nonces {
        Nonces { key: hmac::Key::new(hmac::HMAC_SHA256, secret) }
    }

    /// The nonce to hand out now.
    pub fn current(&self, now: UnixTime) -> String {
        self.for_period(period(now))
    }

    /// Whether `nonce` was handed out in this period or the one before.
    pub fn is_current(&self, nonce: &str, now: UnixTime) -> bool {
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(nonce) else {
            return false;
        };
        let Some((number, tag)) = bytes.split_first_chunk::<8>() else {
            return false;
        };
        let issued = i64::from_be_bytes(*number);
        let now = period(now);
        if issued != now && issued != now.saturating_sub(1) {
            return false;
        }
        // Constant-time comparison of the truncated MAC.
        let expected = hmac::sign(&self.key, number);
        tag.len() == TAG_BYTES
            && expected
                .as_ref()
                .get(..TAG_BYTES)
                .is_some_and(|prefix| bool::from(subtle::ConstantTimeEq::ct_eq(prefix, tag)))
    }

    fn for_period(&self, period: i64) -> String {
        let number = period.to_be_bytes();
        let tag = hmac::sign(&self.key, &number);
        let mut bytes = number.to_vec();
        bytes.extend_from_slice(tag.as_ref().get(..TAG_BYTES).unwrap_or_default());
        URL_SAFE_NO_PAD.encode(bytes)
    }
}

fn period(now: UnixTime) -> i64 {
    now.0.div_euclid(NONCE_PERIOD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_lives_for_its_period_and_the_next() {
        let nonces = Nonces::new(&[7; 32]);
        let start = UnixTime(1_800_000_100);
        let nonce = nonces.current(start);
        assert!(nonces.is_current(&nonce, start));
        assert!(nonces.is_current(&nonce, start.plus(NONCE_PERIOD)));
        assert!(!nonces.is_current(&nonce, start.plus(2 * NONCE_PERIOD)));
        assert!(!nonces.is_current(&nonce, start.plus(-NONCE_PERIOD)), "not before it was made");
    }

    #[test]
    fn only_this_secret_makes_nonces() {
        let now = UnixTime(1_800_000_100);
        let foreign = Nonces::new(&[8; 32]).current(now);
        assert!(!Nonces::new(&[7; 32]).is_current(&foreign, now));
        assert!(!Nonces::new(&[7; 32]).is_current("not base64!", now));
        assert!(!Nonces::new(&[7; 32]).is_current("", now));
    }
}
