//! The airline API of the examples: it trusts Baton's tokens through the
//! verifier and says who is calling through whom.

use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use axum::{Json, Router};
use baton::claims::ScopeSet;
use baton::verifier::{Caller, Verifier, VerifierLayer};
use serde_json::{json, Value};

/// The API's identifier: tokens for it carry this `aud`.
pub const AIRLINE: &str = "https://api.airline.example";

/// The airline API's routes behind a verifier for `issuer`, reached by
/// clients at `public_url` (the `htu` of their DPoP proofs). Revocation is
/// checked by introspection, as the API registered in `policies/resources.toml`
/// (dev-only credentials), answers cached for two seconds.
pub fn router(issuer: &str, public_url: &str) -> Result<Router, String> {
    let verifier = Verifier::builder(issuer)
        .audience(AIRLINE)
        .public_url(public_url)
        .require_scopes(ScopeSet::parse("flights.book").map_err(|error| error.to_string())?)
        .introspection("airline-api", "dev-only-airline-api-secret", Duration::from_secs(2))
        .build()
        .map_err(|error| error.to_string())?;
    Ok(Router::new().route("/bookings", post(book)).layer(VerifierLayer::new(Arc::new(verifier))))
}

async fn book(caller: Caller) -> Json<Value> {
    let through = caller.chain().iter().map(|agent| agent.as_str()).collect::<Vec<_>>().join(" <- ");
    println!("airline API: booking for {} by {} (chain: {through})", caller.subject(), caller.agent());
    Json(json!({
        "booked": true,
        "for": caller.subject(),
        "by": caller.agent(),
        "chain": caller.chain(),
        "scope": caller.scope().to_string(),
    }))
}
