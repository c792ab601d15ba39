//! The issuer's JWKS, found by discovery (RFC 8414 §3) and cached. A fetch
//! caused by an unknown `kid` happens at most once per refetch interval.

use std::collections::BTreeMap;
use std::sync::Arc;

use josekit::jwk::Jwk;
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::JWKS_REFETCH_INTERVAL;
use crate::keys::{self, VerifyingKey};

/// Published keys by `kid`.
pub type PublishedKeys = BTreeMap<String, VerifyingKey>;

/// The keys `issuer` publishes, found by discovery (RFC 8414 §3), once.
pub async fn published_keys(issuer: &str, http: &reqwest::Client) -> Result<PublishedKeys, JwksError> {
    JwksCache::new(issuer.to_owned(), http.clone()).fetch().await
}

/// The issuer's keys could not be fetched.
#[derive(Debug, Clone, thiserror::Error)]
#[error("issuer keys unavailable: {0}")]
pub struct JwksError(String);

#[derive(Deserialize)]
struct Metadata {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// How long a fetched JWKS is trusted before it is fetched again, so that a
/// key withdrawn at the issuer (an emergency rotation) stops verifying here.
pub(super) const JWKS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(300);

struct State {
    keys: Option<Arc<PublishedKeys>>,
    /// When the keys were fetched.
    fetched_at: Option<Instant>,
    /// When an unknown `kid` last caused a fetch.
    refetched_at: Option<Instant>,
}

pub(super) struct JwksCache {
    issuer: String,
    http: reqwest::Client,
    state: Mutex<State>,
}

impl JwksCache {
    pub(super) fn new(issuer: String, http: reqwest::Client) -> JwksCache {
        JwksCache { issuer, http, state: Mutex::new(State { keys: None, fetched_at: None, refetched_at: None }) }
    }

    /// The cached keys, fetched on first use and again once they are older
    /// than [`JWKS_MAX_AGE`].
    pub(super) async fn current(&self) -> Result<Arc<PublishedKeys>, JwksError> {
        let mut state = self.state.lock().await;
        let fresh = state.fetched_at.is_some_and(|at| at.elapsed() < JWKS_MAX_AGE);
        match (&state.keys, fresh) {
            (Some(keys), true) => Ok(keys.clone()),
            _ => self.fetch_into(&mut state).await,
        }
    }

    /// Fetches again for an unknown `kid`, unless an unknown `kid` already
    /// caused a fetch within the refetch interval.
    pub(super) async fn refetch(&self) -> Result<Arc<PublishedKeys>, JwksError> {
        let mut state = self.state.lock().await;
        let recent = state.refetched_at.is_some_and(|at| at.elapsed() < JWKS_REFETCH_INTERVAL);
        match (&state.keys, recent) {
            (Some(keys), true) => Ok(keys.clone()),
            _ => {
                state.refetched_at = Some(Instant::now());
                self.fetch_into(&mut state).await
            }
        }
    }

    async fn fetch_into(&self, state: &mut State) -> Result<Arc<PublishedKeys>, JwksError> {
        let keys = Arc::new(self.fetch().await?);
        state.fetched_at = Some(Instant::now());
        state.keys = Some(keys.clone());
        Ok(keys)
    }

    async fn fetch(&self) -> Result<PublishedKeys, JwksError> {
        let fail = |what: &'static str| move |error: reqwest::Error| JwksError(format!("{what}: {error}"));
        let discovery = format!("{}/.well-known/oauth-authorization-server", self.issuer);
        let metadata: Metadata = self
            .http
            .get(&discovery)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(fail("discovery"))?
            .json()
            .await
            .map_err(fail("discovery document"))?;
        // RFC 8414 §3.3: the metadata must name the issuer it was fetched for.
        if metadata.issuer != self.issuer {
            return Err(JwksError("discovery names another issuer".into()));
        }
        let set: JwkSet = self
            .http
            .get(&metadata.jwks_uri)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(fail("jwks"))?
            .json()
            .await
            .map_err(fail("jwks document"))?;
        let mut keys = PublishedKeys::new();
        for map in set.keys {
            // Keys of types or algorithms outside the allow-list are skipped,
            // not fatal: an issuer may publish more than Baton accepts.
            let Ok(jwk) = Jwk::from_map(map) else { continue };
            let Ok(key) = VerifyingKey::from_jwk(&jwk) else { continue };
            let kid = match jwk.key_id() {
                Some(kid) => kid.to_owned(),
                None => match keys::thumbprint(&jwk) {
                    Ok(kid) => kid,
                    Err(_) => continue,
                },
            };
            keys.insert(kid, key);
        }
        Ok(keys)
    }
}
