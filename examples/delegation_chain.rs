//! A task handed through three agents to an API, each agent doing its own
//! exchange, ending with the API's decision and the trace of the final token.
//!
//! ```sh
//! cargo run -- serve                   # the broker, in one terminal
//! cargo run --example delegation_chain           # this, in another
//! ```
//!
//! The orchestrator obtains its own token for the planner; the planner
//! exchanges it for one addressed to the booker; the booker exchanges that
//! for the airline API with only `flights.book`, and books. Each agent is a
//! task that knows only its own credentials and what it was handed. The
//! airline API runs in this process too, behind the verifier. `BROKER_URL`
//! names the broker (default `http://127.0.0.1:8080`).
//!
//! In the example policies a booking needs a person's approval: the booker
//! is told `authorization_pending` with an `approval_id`, prints it, and
//! polls every `interval` seconds (as a CIBA client does) until the booker's
//! owner approves with `baton approvals approve <id> --as travel-team@example.com`.

#[path = "shared/airline.rs"]
mod airline;

use serde_json::Value;
use tokio::sync::oneshot;

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// One agent: its id and its (dev-only) secret.
struct Agent {
    id: &'static str,
    secret: &'static str,
}

impl Agent {
    /// Asks for a token; when a person must approve, polls with the
    /// approval's id until the token comes or the answer is another error.
    async fn token(&self, http: &reqwest::Client, broker: &str, form: &[(&str, &str)]) -> Result<String, String> {
        let (mut status, mut body) = self.post(http, broker, form).await?;
        if let Some(id) = pending(&body) {
            println!("{:>12}: waiting for a person to approve {id}", self.id);
            println!("{:>12}  (approve: baton approvals approve {id} --as <approver>)", "");
            let mut polled = form.to_vec();
            polled.push(("approval_id", &id));
            while let Some(interval) = pending(&body).and(body.get("interval")).and_then(Value::as_u64) {
                tokio::time::sleep(std::time::Duration::from_secs(interval)).await;
                (status, body) = self.post(http, broker, &polled).await?;
            }
        }
        match body.get("access_token").and_then(Value::as_str) {
            Some(token) => {
                println!(
                    "{:>12}: got a token for {} with scope \"{}\"",
                    self.id,
                    audience_of(token),
                    body.get("scope").and_then(Value::as_str).unwrap_or("")
                );
                Ok(token.to_owned())
            }
            None => Err(format!("{} was refused ({status}): {body}", self.id)),
        }
    }

    async fn post(
        &self,
        http: &reqwest::Client,
        broker: &str,
        form: &[(&str, &str)],
    ) -> Result<(reqwest::StatusCode, Value), String> {
        let response = http
            .post(format!("{broker}/token"))
            .basic_auth(self.id, Some(self.secret))
            .form(form)
            .send()
            .await
            .map_err(|error| format!("{}: {error}", self.id))?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|error| format!("{}: {error}", self.id))?;
        Ok((status, body))
    }

    async fn exchange(
        &self,
        http: &reqwest::Client,
        broker: &str,
        handed: &str,
        target: (&str, &str),
        scope: Option<&str>,
    ) -> Result<String, String> {
        let mut form =
            vec![("grant_type", EXCHANGE), ("subject_token", handed), ("subject_token_type", ACCESS_TOKEN), target];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        self.token(http, broker, &form).await
    }
}

/// The approval id of an `authorization_pending` answer.
fn pending(body: &Value) -> Option<String> {
    (body.get("error").and_then(Value::as_str) == Some("authorization_pending"))
        .then(|| body.get("approval_id").and_then(Value::as_str).map(str::to_owned))
        .flatten()
}

fn audience_of(token: &str) -> String {
    baton::token::insecure_peek(token).map(|unverified| unverified.claims.aud.into_string()).unwrap_or_default()
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let broker = std::env::var("BROKER_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let http = reqwest::Client::new();

    // The airline API, on a free loopback port.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|error| error.to_string())?;
    let api = format!("http://{}", listener.local_addr().map_err(|error| error.to_string())?);
    let router = airline::router(&broker, &api)?;
    tokio::spawn(async move { axum::serve(listener, router).await });

    let (to_planner, planner_inbox) = oneshot::channel::<String>();
    let (to_booker, booker_inbox) = oneshot::channel::<String>();

    let orchestrator = {
        let (http, broker) = (http.clone(), broker.clone());
        tokio::spawn(async move {
            let me = Agent { id: "orchestrator", secret: "dev-only-orchestrator-secret" };
            let token =
                me.token(&http, &broker, &[("grant_type", "client_credentials"), ("audience", "planner")]).await?;
            to_planner.send(token).map_err(|_| "the planner is gone".to_owned())
        })
    };
    let planner = {
        let (http, broker) = (http.clone(), broker.clone());
        tokio::spawn(async move {
            let me = Agent { id: "planner", secret: "dev-only-planner-secret" };
            let handed = planner_inbox.await.map_err(|_| "nothing handed to the planner".to_owned())?;
            let token = me.exchange(&http, &broker, &handed, ("audience", "booker"), None).await?;
            to_booker.send(token).map_err(|_| "the booker is gone".to_owned())
        })
    };
    let booker = {
        let (http, broker, api) = (http.clone(), broker.clone(), api.clone());
        tokio::spawn(async move {
            let me = Agent { id: "booker", secret: "dev-only-booker-secret" };
            let handed = booker_inbox.await.map_err(|_| "nothing handed to the booker".to_owned())?;
            let token =
                me.exchange(&http, &broker, &handed, ("resource", airline::AIRLINE), Some("flights.book")).await?;
            let response = http
                .post(format!("{api}/bookings"))
                .bearer_auth(&token)
                .send()
                .await
                .map_err(|error| error.to_string())?;
            let status = response.status();
            let body = response.text().await.map_err(|error| error.to_string())?;
            Ok::<_, String>((token, status, body))
        })
    };

    orchestrator.await.map_err(|error| error.to_string())??;
    planner.await.map_err(|error| error.to_string())??;
    let (token, status, body) = booker.await.map_err(|error| error.to_string())??;
    println!("\nAPI decision: {status} {body}\n");
    let claims = baton::token::insecure_peek(&token).map_err(|error| error.to_string())?.claims;
    println!("the final token's chain:\n{}", baton::cli::decode::tree(&claims));
    if status.is_success() {
        Ok(())
    } else {
        Err("the API refused the booking".into())
    }
}
