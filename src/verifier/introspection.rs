//! Revocation through the broker's introspection endpoint (RFC 7662), for
//! APIs that cannot read the broker's state store. An answer is cached per
//! token for a short period, so that a busy API asks once per token per
//! period; a revocation is then seen within that period.

use std::collections::HashMap;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::claims::TokenId;

/// Cached answers beyond this many are dropped wholesale: the cache is a
/// convenience, and an empty one only costs calls.
const MAX_CACHED: usize = 10_000;

pub(crate) struct Introspector {
    issuer: String,
    http: reqwest::Client,
    client_id: String,
    client_secret: SecretString,
    cache_for: Duration,
    endpoint: Mutex<Option<String>>,
    answers: Mutex<HashMap<TokenId, (Instant, bool)>>,
}

#[derive(Deserialize)]
struct Metadata {
    issuer: String,
    introspection_endpoint: String,
}

#[derive(Deserialize)]
struct Answer {
    active: bool,
}

impl Introspector {
    pub(crate) fn new(
        issuer: String,
        http: reqwest::Client,
        client_id: String,
        client_secret: SecretString,
        cache_for: Duration,
    ) -> Introspector {
        Introspector {
            issuer,
            http,
            client_id,
            client_secret,
            cache_for,
            endpoint: Mutex::new(None),
            answers: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the broker calls the token active. Errors are reasons to fail closed.
    pub(crate) async fn is_active(&self, token: &str, jti: &TokenId) -> Result<bool, String> {
        if let Some((at, active)) = self.answers.lock().await.get(jti) {
            if at.elapsed() < self.cache_for {
                return Ok(*active);
            }
        }
        let endpoint = self.endpoint().await?;
        let answer: Answer = self
            .http
            .post(&endpoint)
            .basic_auth(&self.client_id, Some(self.client_secret.expose_secret()))
            .form(&[("token", token)])
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|error| format!("introspection: {}", error.without_url()))?
            .json()
            .await
            .map_err(|error| format!("introspection answer: {}", error.without_url()))?;
        let mut answers = self.answers.lock().await;
        if answers.len() >= MAX_CACHED {
            answers.clear();
        }
        answers.insert(jti.clone(), (Instant::now(), answer.active));
        Ok(answer.active)
    }

    async fn endpoint(&self) -> Result<String, String> {
        let mut endpoint = self.endpoint.lock().await;
        if let Some(known) = endpoint.as_ref() {
            return Ok(known.clone());
        }
        let metadata: Metadata = self
            .http
            .get(format!("{}/.well-known/oauth-authorization-server", self.issuer))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|error| format!("discovery: {error}"))?
            .json()
            .await
            .map_err(|error| format!("discovery document: {error}"))?;
        // RFC 8414 §3.3: the metadata must name the issuer it was fetched for.
        if metadata.issuer != self.issuer {
            return Err("discovery names another issuer".into());
        }
        *endpoint = Some(metadata.introspection_endpoint.clone());
        Ok(metadata.introspection_endpoint)
    }
}
