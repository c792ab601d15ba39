//! A person's chain, bound to a key at every hop: a person's ID token from a
//! trusted identity provider goes through the orchestrator, the planner and
//! the booker to the airline API, each agent proving its own DPoP key.
//!
//! ```sh
//! cargo run --example person_chain -- "$ID_TOKEN"
//! ```
//!
//! The README's "A person's chain" section shows how to get an ID token from
//! a local OpenID provider and trust it. `BROKER_URL` names the broker
//! (default `http://127.0.0.1:8080`). Each agent makes a fresh key, so every
//! token it obtains is bound to it (`cnf.jkt`), and the final token's
//! `delegation` records the key of every hop.

// Indexing a `serde_json::Value` by a member name gives `Null` for a missing
// member and never panics; it keeps this printing code short.
#![allow(clippy::indexing_slicing)]

use baton::clock::{Clock, SystemClock};
use baton::dpop::{ProofFor, ProofKey};
use serde_json::Value;

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";

/// One agent with its dev-only secret and its own DPoP key.
struct Agent {
    id: &'static str,
    key: ProofKey,
}

impl Agent {
    fn new(id: &'static str) -> Result<Agent, String> {
        Ok(Agent { id, key: ProofKey::generate().map_err(|error| error.to_string())? })
    }

    /// Exchanges `subject` (a token and its type) with a proof of this agent's key.
    async fn exchange(
        &self,
        http: &reqwest::Client,
        broker: &str,
        subject: (&str, &str),
        target: (&str, &str),
        scope: Option<&str>,
    ) -> Result<String, String> {
        let endpoint = format!("{broker}/token");
        let proof = self
            .key
            .proof(ProofFor { method: "POST", uri: &endpoint, ..ProofFor::default() }, SystemClock.now())
            .map_err(|error| error.to_string())?;
        let mut form = vec![("grant_type", EXCHANGE), ("subject_token", subject.0), ("subject_token_type", subject.1)];
        form.push(target);
        form.extend(scope.map(|scope| ("scope", scope)));
        let response = http
            .post(&endpoint)
            .basic_auth(self.id, Some(format!("dev-only-{}-secret", self.id)))
            .header("DPoP", proof)
            .form(&form)
            .send()
            .await
            .map_err(|error| format!("{}: {error}", self.id))?;
        let body: Value = response.json().await.map_err(|error| format!("{}: {error}", self.id))?;
        let token = body["access_token"].as_str().ok_or_else(|| format!("{} was refused: {body}", self.id))?;
        let claims = claims_of(token)?;
        println!(
            "{:>12}: {} token for {} on behalf of {}, bound to key {}",
            self.id, body["token_type"], claims["aud"], claims["sub"], claims["cnf"]["jkt"]
        );
        Ok(token.to_owned())
    }
}

fn claims_of(token: &str) -> Result<Value, String> {
    use base64::Engine;
    let payload = token.split('.').nth(1).ok_or("not a JWT")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).map_err(|error| error.to_string())?;
    serde_json::from_slice(&bytes).map_err(|error| error.to_string())
}

async fn run() -> Result<(), String> {
    let id_token = std::env::args().nth(1).ok_or("give the person's ID token as the first argument")?;
    let broker = std::env::var("BROKER_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let http = reqwest::Client::new();
    let (orchestrator, planner, booker) = (Agent::new("orchestrator")?, Agent::new("planner")?, Agent::new("booker")?);

    let hop1 = orchestrator.exchange(&http, &broker, (&id_token, ID_TOKEN), ("audience", "planner"), None).await?;
    let hop2 = planner.exchange(&http, &broker, (&hop1, ACCESS_TOKEN), ("audience", "booker"), None).await?;
    let target = ("resource", "https://api.airline.example");
    let hop3 = booker.exchange(&http, &broker, (&hop2, ACCESS_TOKEN), target, Some("flights.read")).await?;

    let claims = claims_of(&hop3)?;
    println!("\nthe final token's path, root first:");
    for hop in claims["delegation"]["hops"].as_array().into_iter().flatten() {
        let origin = hop.get("iss").map_or_else(|| "Baton".to_owned(), |iss| format!("identity provider {iss}"));
        println!(
            "  {} for {} (from {origin}), key {}",
            hop["agent"],
            hop["aud"],
            hop.get("jkt").unwrap_or(&Value::Null)
        );
    }
    println!("  {} for {} (this token), key {}", claims["client_id"], claims["aud"], claims["cnf"]["jkt"]);
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
