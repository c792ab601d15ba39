//! The signatures a key set has verified already, by the digest of the
//! token they sign, so that a token presented again (one subject token
//! exchanged for several targets, one access token introspected on every
//! call an API serves) is not verified again.
//!
//! The digest covers the key and the whole compact token: its header (with
//! the `kid` that chose the key), its payload and its signature. A token is
//! remembered only once it passed every check of a Baton token, and a set's
//! keys never change (a rotation builds a new set, with nothing remembered),
//! so its signature is still good. Everything else about a token (its type,
//! algorithm, issuer, times, audience, depth and revocation) is checked on
//! every presentation as before: this saves the signature check, nothing
//! else. Only the crate's verification remembers a token.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use ring::digest::{Context, SHA256};

use super::VerifyingKey;

/// Tokens remembered at most (32 bytes each, about a megabyte with the
/// table's room); when full, the memory starts over. Only tokens that passed
/// every check are remembered, so no one can fill it without live tokens
/// this broker signed.
const CAPACITY: usize = 16_384;

/// The digests of the tokens whose signatures verified.
#[derive(Default)]
pub struct VerifiedSignatures {
    digests: Mutex<HashSet<TokenDigest>>,
}

/// SHA-256 of a key and a compact token: the key's public bytes, the
/// token's signing input, a `.`, its signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TokenDigest([u8; 32]);

impl TokenDigest {
    /// The digest of the token `signing_input.signature` under `key`.
    pub(crate) fn of(key: &VerifyingKey, signing_input: &[u8], signature: &[u8]) -> TokenDigest {
        let mut context = Context::new(&SHA256);
        // The key first: 65 bytes for P-256, 32 for Ed25519. `token::verify`
        // has tied the token's `alg` to the key's algorithm before it asks.
        context.update(&key.public);
        context.update(signing_input);
        context.update(b".");
        context.update(signature);
        let mut digest = [0; 32];
        digest.copy_from_slice(context.finish().as_ref());
        TokenDigest(digest)
    }
}

impl VerifiedSignatures {
    /// Whether the token with this digest verified before.
    pub(crate) fn contains(&self, digest: &TokenDigest) -> bool {
        self.digests.lock().unwrap_or_else(PoisonError::into_inner).contains(digest)
    }

    /// Remembers a token that just passed every check.
    pub(crate) fn remember(&self, digest: TokenDigest) {
        let mut digests = self.digests.lock().unwrap_or_else(PoisonError::into_inner);
        if digests.len() >= CAPACITY {
            digests.clear();
        }
        digests.insert(digest);
    }

    /// How many tokens are remembered.
    pub fn len(&self) -> usize {
        self.digests.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::UnixTime;
    use crate::keys::{self, Algorithm, KeyLookup, KeySet};

    fn key() -> VerifyingKey {
        let dir = tempfile::tempdir().unwrap();
        let kid = keys::generate(dir.path(), Algorithm::Es256, 3600, UnixTime(1_000)).unwrap();
        let set = KeySet::load(dir.path(), 3600, UnixTime(1_000)).unwrap();
        VerifyingKey::from_jwk(set.verifying(&kid).unwrap().public_jwk()).unwrap()
    }

    #[test]
    fn a_digest_names_the_key_and_the_whole_token() {
        let (key, other) = (key(), key());
        let token = TokenDigest::of(&key, b"header.payload", b"signature");
        assert_eq!(token, TokenDigest::of(&key, b"header.payload", b"signature"));
        assert_ne!(token, TokenDigest::of(&key, b"header.payloae", b"signature"));
        assert_ne!(token, TokenDigest::of(&key, b"header.payload", b"signaturf"));
        assert_ne!(token, TokenDigest::of(&other, b"header.payload", b"signature"));
        // The separator is part of it: parts cannot trade characters.
        assert_ne!(TokenDigest::of(&key, b"a.bc", b"d"), TokenDigest::of(&key, b"a.b", b"cd"));
    }

    #[test]
    fn a_full_memory_starts_over() {
        let key = key();
        let verified = VerifiedSignatures::default();
        for index in 0..=CAPACITY {
            verified.remember(TokenDigest::of(&key, index.to_string().as_bytes(), b"signature"));
        }
        assert_eq!(verified.len(), 1);
        assert!(verified.contains(&TokenDigest::of(&key, CAPACITY.to_string().as_bytes(), b"signature")));
    }
}
