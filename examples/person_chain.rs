//! A person's chain, bound to a key at every hop: a person's ID token from a
//! trusted identity provider goes through the orchestrator, the planner and
//! the booker to the airline API, each agent proving its own DPoP key.
//!
//! ```sh
//! cargo run -- serve                       # the broker
//! cargo run --example protected_api                  # the airline API
//! cargo run --example person_chain -- "$ID_TOKEN"    # this
//! ```
//!
//! The README's "A person's chain" section shows how to get an ID token from
//! a local OpenID provider and trust it. `BROKER_URL` names the broker
//! (default `http://127.0.0.1:8080`), `API_URL` the airline API (default
//! `http://127.0.0.1:9090`). Each agent makes a fresh key, so every token it
//! obtains is bound to it (`cnf.jkt`), and the final token's `delegation`
//! records the key of every hop. The booker books: in the example policies
//! that waits for the booker's owner to approve (`baton approvals approve
//! <id> --as travel-team@example.com`), polled as a CIBA client does. It
//! then presents its token to the API with a proof of its own key.

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

    /// A proof of this agent's key for one request.
    fn proof(&self, method: &str, uri: &str, access_token: Option<&str>) -> Result<String, String> {
        let request = ProofFor { method, uri, access_token, nonce: None };
        self.key.proof(request, SystemClock.now()).map_err(|error| format!("{}: {error}", self.id))
    }

    /// Exchanges `subject` (a token and its type) with a proof of this
    /// agent's key; when a person must approve, polls with the approval's
    /// id until the token comes or the answer is another error.
    async fn exchange(
        &self,
        http: &reqwest::Client,
        broker: &str,
        subject: (&str, &str),
        target: (&str, &str),
        scope: Option<&str>,
    ) -> Result<String, String> {
        let mut form = vec![("grant_type", EXCHANGE), ("subject_token", subject.0), ("subject_token_type", subject.1)];
        form.push(target);
        form.extend(scope.map(|scope| ("scope", scope)));
        let mut body = self.post(http, broker, &form).await?;
        if let Some(id) = pending(&body) {
            println!("{:>12}: waiting for a person to approve {id}", self.id);
            println!("{:>12}  (approve: baton approvals approve {id} --as <approver>)", "");
            form.push(("approval_id", &id));
            while let Some(interval) = pending(&body).and(body["interval"].as_u64()) {
                tokio::time::sleep(std::time::Duration::from_secs(interval)).await;
                body = self.post(http, broker, &form).await?;
            }
        }
        let token = body["access_token"].as_str().ok_or_else(|| format!("{} was refused: {body}", self.id))?;
        let claims = claims_of(token)?;
        println!(
            "{:>12}: {} token for {} on behalf of {}, bound to key {}",
            self.id, body["token_type"], claims["aud"], claims["sub"], claims["cnf"]["jkt"]
        );
        Ok(token.to_owned())
    }

    async fn post(&self, http: &reqwest::Client, broker: &str, form: &[(&str, &str)]) -> Result<Value, String> {
        let endpoint = format!("{broker}/token");
        // A proof is good for one request: each poll makes a new one.
        let proof = self.proof("POST", &endpoint, None)?;
        let response = http
            .post(&endpoint)
            .basic_auth(self.id, Some(format!("dev-only-{}-secret", self.id)))
            .header("DPoP", proof)
            .form(form)
            .send()
            .await
            .map_err(|error| format!("{}: {error}", self.id))?;
        response.json().await.map_err(|error| format!("{}: {error}", self.id))
    }

    /// Calls the API with `token` under the DPoP scheme (RFC 9449 §7.1),
    /// proving this agent's key for this request.
    async fn call(&self, http: &reqwest::Client, uri: &str, token: &str) -> Result<(u16, String), String> {
        let proof = self.proof("POST", uri, Some(token))?;
        let response = http
            .post(uri)
            .header("Authorization", format!("DPoP {token}"))
            .header("DPoP", proof)
            .send()
            .await
            .map_err(|error| format!("the API at {uri}: {error}"))?;
        let status = response.status().as_u16();
        Ok((status, response.text().await.map_err(|error| error.to_string())?))
    }
}

/// The approval id of an `authorization_pending` answer.
fn pending(body: &Value) -> Option<String> {
    (body["error"] == "authorization_pending").then(|| body["approval_id"].as_str().map(str::to_owned)).flatten()
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
    let api = std::env::var("API_URL").unwrap_or_else(|_| "http://127.0.0.1:9090".into());
    let http = reqwest::Client::new();
    let (orchestrator, planner, booker) = (Agent::new("orchestrator")?, Agent::new("planner")?, Agent::new("booker")?);

    let hop1 = orchestrator.exchange(&http, &broker, (&id_token, ID_TOKEN), ("audience", "planner"), None).await?;
    let hop2 = planner.exchange(&http, &broker, (&hop1, ACCESS_TOKEN), ("audience", "booker"), None).await?;
    let target = ("resource", "https://api.airline.example");
    let hop3 = booker.exchange(&http, &broker, (&hop2, ACCESS_TOKEN), target, Some("flights.book")).await?;
    let (status, answer) = booker.call(&http, &format!("{api}/bookings"), &hop3).await?;
    println!("\nAPI decision: {status} {answer}");

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
    if status == 200 {
        Ok(())
    } else {
        Err("the API refused the booking".into())
    }
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
