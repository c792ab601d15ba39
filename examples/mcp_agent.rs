//! An agent that calls an MCP server's tools with tokens from Baton, through
//! the official Rust MCP SDK (`rmcp`) and its streamable HTTP transport.
//!
//! ```sh
//! cargo run -- serve                 # the broker, in one terminal
//! cargo run --example mcp_flights    # the MCP server, in another
//! cargo run --example mcp_agent      # this, in a third
//! ```
//!
//! Part one is a delegated chain. The orchestrator obtains a token for the
//! planner; the planner exchanges it for one addressed to the booker with
//! `flights.read flights.book`. The booker then does what the MCP
//! authorization specification asks of a client: it calls the server without
//! a token, follows the 401's `resource_metadata` to the server's RFC 9728
//! metadata, checks that the authorization server named there is the broker
//! its token came from, and exchanges that token for the server's resource
//! (RFC 8707) asking only the scope the 401 named, `flights.read`. It lists
//! the tools and searches. Booking answers 403 `insufficient_scope` naming
//! the scopes the call needs: the booker steps up by exchanging the token it
//! was handed again for those, never beyond what it was handed. In the
//! example policies a person must approve that: the booker prints the
//! approval's id and polls (for at most a minute) until the booker's owner
//! runs `baton approvals approve <id> --as travel-team@example.com`, then
//! reconnects with the new token and books.
//!
//! Part two starts a chain at the MCP server itself: the scout obtains a
//! token with client credentials and `resource=<MCP_URL>` (MCP's client
//! credentials extension) and searches.
//!
//! `BROKER_URL` names the broker (default `http://127.0.0.1:8080`), `MCP_URL`
//! the MCP server (default `http://127.0.0.1:9091/mcp`).

use std::process::ExitCode;
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation};
use rmcp::service::{ClientInitializeError, RunningService, ServiceError};
use rmcp::transport::streamable_http_client::{InsufficientScopeError, StreamableHttpClientTransportConfig};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{json, Value};
use tokio::time::Instant;

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// How long an agent waits for a person's approval before giving up.
const APPROVAL_WAIT: Duration = Duration::from_secs(60);
/// The wait between two polls when the broker names none.
const DEFAULT_POLL_INTERVAL: u64 = 1;

/// A connection to the MCP server.
type McpClient = RunningService<RoleClient, ClientConfig>;

/// One agent: its id and its (dev-only) secret.
struct Agent {
    id: &'static str,
    secret: &'static str,
}

/// A token an agent holds, with the scopes the broker granted it.
struct Granted {
    token: String,
    scope: String,
}

/// The broker, as its RFC 8414 metadata describes it.
struct Broker {
    issuer: String,
    token_endpoint: String,
}

impl Agent {
    /// Asks for a token. When a person must approve, polls with the
    /// approval's id, every `interval` seconds, until the token comes, the
    /// answer is another error, or [`APPROVAL_WAIT`] has passed.
    async fn token(&self, http: &reqwest::Client, broker: &Broker, form: &[(&str, &str)]) -> Result<Granted, String> {
        let (mut status, mut body) = self.post(http, broker, form).await?;
        if let Some(id) = pending(&body) {
            println!("{:>12}: waiting for a person to approve {id}", self.id);
            println!("{:>12}  (approve: baton approvals approve {id} --as <approver>)", "");
            let mut polled = form.to_vec();
            polled.push(("approval_id", &id));
            let deadline = Instant::now() + APPROVAL_WAIT;
            while pending(&body).is_some() {
                // At least a second: an interval of 0 would poll in a tight loop.
                let interval = body.get("interval").and_then(Value::as_u64).unwrap_or(DEFAULT_POLL_INTERVAL).max(1);
                let next = Instant::now() + Duration::from_secs(interval);
                if next > deadline {
                    return Err(format!("{}: nobody approved {id} within {} s", self.id, APPROVAL_WAIT.as_secs()));
                }
                tokio::time::sleep_until(next).await;
                (status, body) = self.post(http, broker, &polled).await?;
            }
        }
        let Some(token) = body.get("access_token").and_then(Value::as_str) else {
            return Err(format!("{} was refused a token ({status}): {body}", self.id));
        };
        let scope = body.get("scope").and_then(Value::as_str).unwrap_or("").to_owned();
        println!("{:>12}: got a token for {} with scope \"{scope}\"", self.id, audience_of(token));
        Ok(Granted { token: token.to_owned(), scope })
    }

    async fn post(
        &self,
        http: &reqwest::Client,
        broker: &Broker,
        form: &[(&str, &str)],
    ) -> Result<(reqwest::StatusCode, Value), String> {
        let response = http
            .post(&broker.token_endpoint)
            .basic_auth(self.id, Some(self.secret))
            .form(form)
            .send()
            .await
            .map_err(|error| format!("{}: the token endpoint: {error}", self.id))?;
        let status = response.status();
        let body =
            response.json().await.map_err(|error| format!("{}: the token endpoint's answer: {error}", self.id))?;
        Ok((status, body))
    }

    /// RFC 8693: trades `handed` for a token addressed to `target`.
    async fn exchange(
        &self,
        http: &reqwest::Client,
        broker: &Broker,
        handed: &Granted,
        target: (&str, &str),
        scope: &str,
    ) -> Result<Granted, String> {
        let form = [
            ("grant_type", EXCHANGE),
            ("subject_token", handed.token.as_str()),
            ("subject_token_type", ACCESS_TOKEN),
            target,
            ("scope", scope),
        ];
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

async fn json_at(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    let response = http.get(url).send().await.map_err(|error| format!("{url}: {error}"))?;
    if !response.status().is_success() {
        return Err(format!("{url} answered {}", response.status()));
    }
    response.json().await.map_err(|error| format!("{url}: {error}"))
}

/// Reads the broker's RFC 8414 metadata for its token endpoint.
async fn broker_at(http: &reqwest::Client, url: &str) -> Result<Broker, String> {
    let url = url.trim_end_matches('/');
    let metadata = json_at(http, &format!("{url}/.well-known/oauth-authorization-server")).await?;
    let text = |name: &str| {
        metadata
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or(format!("the broker's metadata has no {name}"))
    };
    let broker = Broker { issuer: text("issuer")?, token_endpoint: text("token_endpoint")? };
    // RFC 8414 §3.3: the issuer in the metadata is the one it was fetched for.
    if broker.issuer.trim_end_matches('/') != url {
        return Err(format!("the metadata at {url} names another issuer, {}", broker.issuer));
    }
    Ok(broker)
}

/// The MCP server, as its RFC 9728 protected resource metadata describes it.
struct ProtectedResource {
    resource: String,
    authorization_servers: Vec<String>,
    scopes: Vec<String>,
    /// The scope the 401 named: what to ask for first (MCP's scope selection).
    first_scope: Option<String>,
}

/// MCP authorization: a request without a token gets a 401 whose challenge
/// points at the server's metadata (else the RFC 9728 §3.1 well-known URL),
/// which must name `broker` among its authorization servers.
async fn discover(
    agent: &Agent,
    http: &reqwest::Client,
    broker: &Broker,
    mcp_url: &str,
) -> Result<ProtectedResource, String> {
    let challenge = match connect(mcp_url, None).await {
        Ok(client) => {
            let _ = client.cancel().await;
            return Err(format!("the MCP server at {mcp_url} let a client without a token in"));
        }
        Err(error) => error
            .auth_challenge()
            .map(str::to_owned)
            .ok_or(format!("connecting to {mcp_url} without a token got no 401 challenge: {error}"))?,
    };
    println!("{:>12}: without a token the MCP server answers 401: WWW-Authenticate: {challenge}", agent.id);
    let metadata_url = match challenge_param(&challenge, "resource_metadata") {
        Some(url) => url,
        None => well_known_metadata_url(mcp_url)?,
    };
    let metadata = json_at(http, &metadata_url).await?;
    let strings = |name: &str| -> Vec<String> {
        metadata
            .get(name)
            .and_then(Value::as_array)
            .map(|values| values.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let server = ProtectedResource {
        resource: metadata.get("resource").and_then(Value::as_str).unwrap_or("").to_owned(),
        authorization_servers: strings("authorization_servers"),
        scopes: strings("scopes_supported"),
        first_scope: challenge_param(&challenge, "scope"),
    };
    // RFC 9728 §3.3: metadata for another resource must not be used.
    if server.resource != mcp_url {
        return Err(format!("the metadata at {metadata_url} is for {:?}, not {mcp_url}", server.resource));
    }
    println!(
        "{:>12}: its metadata (RFC 9728): resource {}, authorization servers {}, scopes {}",
        agent.id,
        server.resource,
        server.authorization_servers.join(" "),
        server.scopes.join(" ")
    );
    // The agent's tokens come from `broker`: a server that trusts another
    // authorization server would refuse them.
    let issuer = broker.issuer.trim_end_matches('/');
    if !server.authorization_servers.iter().any(|named| named.trim_end_matches('/') == issuer) {
        return Err(format!(
            "{}: the MCP server trusts {}, not {}, where this agent's tokens come from",
            agent.id,
            server.authorization_servers.join(" "),
            broker.issuer
        ));
    }
    Ok(server)
}

/// RFC 9728 §3.1: the well-known path goes between the host and the path.
fn well_known_metadata_url(resource: &str) -> Result<String, String> {
    let mut url = url::Url::parse(resource).map_err(|error| format!("{resource}: {error}"))?;
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("/.well-known/oauth-protected-resource{path}"));
    Ok(url.to_string())
}

/// One auth-param of a `Bearer` challenge (RFC 9110 §11.2), quoted or not.
fn challenge_param(challenge: &str, name: &str) -> Option<String> {
    let challenge = challenge.trim_start();
    let mut rest = match challenge.split_once(' ') {
        Some((scheme, params)) if scheme.eq_ignore_ascii_case("bearer") => params,
        _ => challenge,
    };
    loop {
        let (key, after) = rest.trim_start_matches([' ', '\t', ',']).split_once('=')?;
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => {
                let mut value = String::new();
                let mut chars = quoted.chars();
                loop {
                    match chars.next()? {
                        '\\' => value.push(chars.next()?),
                        '"' => break,
                        c => value.push(c),
                    }
                }
                (value, chars.as_str())
            }
            None => {
                let (value, after) = after.split_once(',').unwrap_or((after, ""));
                (value.trim().to_owned(), after)
            }
        };
        if key.trim().eq_ignore_ascii_case(name) {
            return Some(value);
        }
        rest = after;
    }
}

/// Connects to the MCP server, with the token as the transport's bearer.
async fn connect(mcp_url: &str, token: Option<&str>) -> Result<McpClient, ClientInitializeError> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(mcp_url);
    if let Some(token) = token {
        config = config.auth_header(token);
    }
    let client_info = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("baton-mcp-agent", env!("CARGO_PKG_VERSION")),
    );
    client_info.serve(StreamableHttpClientTransport::from_config(config)).await
}

/// Connects, listing the tools the server offers.
async fn connect_and_list(agent: &Agent, mcp_url: &str, granted: &Granted) -> Result<McpClient, String> {
    let client = connect(mcp_url, Some(&granted.token))
        .await
        .map_err(|error| format!("{}: connecting to {mcp_url}: {error}", agent.id))?;
    let tools = client.list_all_tools().await.map_err(|error| format!("{}: listing tools: {error}", agent.id))?;
    let names: Vec<&str> = tools.iter().map(|tool| tool.name.as_ref()).collect();
    println!("{:>12}: connected to {mcp_url}; its tools: {}", agent.id, names.join(", "));
    Ok(client)
}

/// Why a tool call gave no result.
enum CallFailure {
    /// HTTP 403 `insufficient_scope`: the token lacks the scope it names.
    InsufficientScope(String),
    Other(String),
}

impl CallFailure {
    /// The failure as an unexpected one, for `agent`'s call of `tool`.
    fn unexpected(self, agent: &Agent, tool: &str) -> String {
        match self {
            CallFailure::InsufficientScope(scope) => format!("{}: {tool} was refused for lack of {scope:?}", agent.id),
            CallFailure::Other(message) => format!("{}: {message}", agent.id),
        }
    }
}

/// Calls a tool whose result is one text content holding JSON.
async fn call(client: &McpClient, tool: &'static str, arguments: Value) -> Result<Value, CallFailure> {
    let Value::Object(arguments) = arguments else {
        return Err(CallFailure::Other(format!("{tool}: arguments must be a JSON object")));
    };
    let params = CallToolRequestParams::new(tool).with_arguments(arguments);
    let result = match client.call_tool(params).await {
        Ok(result) => result,
        Err(error) => {
            // rmcp types any 403 with a challenge so; only `insufficient_scope`
            // naming scopes is one to step up for.
            let challenge = insufficient_scope(&error).map(|refusal| &refusal.www_authenticate_header);
            let step_up = challenge
                .filter(|challenge| challenge_param(challenge, "error").as_deref() == Some("insufficient_scope"))
                .and_then(|challenge| challenge_param(challenge, "scope"))
                .filter(|scope| !scope.is_empty());
            return Err(match step_up {
                Some(scope) => CallFailure::InsufficientScope(scope),
                None => CallFailure::Other(format!("{tool}: {error}")),
            });
        }
    };
    let text = result.content.iter().find_map(|content| content.as_text()).map(|content| content.text.as_str());
    if result.is_error == Some(true) {
        return Err(CallFailure::Other(format!("{tool} failed: {}", text.unwrap_or(""))));
    }
    let text = text.ok_or(CallFailure::Other(format!("{tool} answered no text")))?;
    serde_json::from_str(text).map_err(|error| CallFailure::Other(format!("{tool} answered {text:?}: {error}")))
}

/// rmcp's streamable HTTP client turns a 403 with a `WWW-Authenticate`
/// challenge into a typed error, deep in the transport error's sources.
fn insufficient_scope(error: &ServiceError) -> Option<&InsufficientScopeError> {
    let ServiceError::TransportSend(error) = error else {
        return None;
    };
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error.error.as_ref());
    while let Some(current) = source {
        if let Some(refusal) = current.downcast_ref::<InsufficientScopeError>() {
            return Some(refusal);
        }
        source = current.source();
    }
    None
}

/// The chain of a tool result, newest first, as `booker <- planner`.
fn chain(value: &Value) -> String {
    let agents: Vec<&str> =
        value.get("chain").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    match agents.is_empty() {
        // A token from client credentials: no agent passed it on.
        true => "none, its own token".to_owned(),
        false => agents.join(" <- "),
    }
}

fn field<'a>(value: &'a Value, name: &str) -> &'a str {
    value.get(name).and_then(Value::as_str).unwrap_or("?")
}

/// Searches and prints what was found and whom the server saw calling.
async fn search(agent: &Agent, client: &McpClient) -> Result<Value, String> {
    let arguments = json!({ "from": "LHR", "to": "JFK" });
    let found = call(client, "search_flights", arguments)
        .await
        .map_err(|failure| failure.unexpected(agent, "search_flights"))?;
    let flights: Vec<&str> = found
        .get("flights")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|flight| field(flight, "flight"))
        .collect();
    let caller = found.get("caller").unwrap_or(&Value::Null);
    println!(
        "{:>12}: search_flights LHR to JFK found {}; the server saw {} acting for {} (chain: {})",
        agent.id,
        flights.join(", "),
        field(caller, "agent"),
        field(caller, "subject"),
        chain(caller)
    );
    Ok(found)
}

/// Part one: orchestrator → planner → booker, then the booker at the MCP server.
async fn delegated_chain(http: &reqwest::Client, broker: &Broker, mcp_url: &str) -> Result<(), String> {
    let orchestrator = Agent { id: "orchestrator", secret: "dev-only-orchestrator-secret" };
    let planner = Agent { id: "planner", secret: "dev-only-planner-secret" };
    let booker = Agent { id: "booker", secret: "dev-only-booker-secret" };

    let root =
        orchestrator.token(http, broker, &[("grant_type", "client_credentials"), ("audience", "planner")]).await?;
    let handed = planner.exchange(http, broker, &root, ("audience", "booker"), "flights.read flights.book").await?;

    let server = discover(&booker, http, broker, mcp_url).await?;
    // Least privilege: what the server asks for first, else what searching needs.
    let first = server.first_scope.as_deref().unwrap_or("flights.read");
    let reader = booker.exchange(http, broker, &handed, ("resource", &server.resource), first).await?;
    let client = connect_and_list(&booker, mcp_url, &reader).await?;
    let found = search(&booker, &client).await?;
    let flight = found
        .get("flights")
        .and_then(Value::as_array)
        .and_then(|flights| flights.first())
        .map(|flight| field(flight, "flight").to_owned())
        .ok_or("booker: search_flights found no flight to book")?;

    let booking = json!({ "flight": flight });
    let needed = match call(&client, "book_flight", booking.clone()).await {
        Err(CallFailure::InsufficientScope(scope)) => scope,
        Err(CallFailure::Other(message)) => return Err(format!("booker: {message}")),
        Ok(answer) => return Err(format!("booker: book_flight succeeded without the booking scope: {answer}")),
    };
    let _ = client.cancel().await;
    println!("{:>12}: book_flight refused: HTTP 403 insufficient_scope, the server needs \"{needed}\"", booker.id);

    // Step up within what the booker was handed: the broker would refuse
    // more (invalid_scope), and only the planner could ask for it.
    let held: Vec<&str> = handed.scope.split_whitespace().collect();
    if needed.is_empty() || !needed.split_whitespace().all(|scope| held.contains(&scope)) {
        return Err(format!("booker: the server needs {needed:?}, beyond the {:?} it was handed", handed.scope));
    }
    let writer = booker.exchange(http, broker, &handed, ("resource", &server.resource), &needed).await?;
    let client = connect_and_list(&booker, mcp_url, &writer).await?;
    let booked =
        call(&client, "book_flight", booking).await.map_err(|failure| failure.unexpected(&booker, "book_flight"))?;
    let _ = client.cancel().await;
    if booked.get("booked") != Some(&Value::Bool(true)) {
        return Err(format!("booker: book_flight did not book: {booked}"));
    }
    println!(
        "{:>12}: booked {} for {} by {} (chain: {})",
        booker.id,
        field(&booked, "flight"),
        field(&booked, "for"),
        field(&booked, "by"),
        chain(&booked)
    );
    Ok(())
}

/// Part two: a chain that starts at the MCP server, with client credentials.
async fn scout_chain(http: &reqwest::Client, broker: &Broker, mcp_url: &str) -> Result<(), String> {
    let scout = Agent { id: "scout", secret: "dev-only-scout-secret" };
    let server = discover(&scout, http, broker, mcp_url).await?;
    let first = server.first_scope.as_deref().unwrap_or("flights.read");
    let form = [("grant_type", "client_credentials"), ("resource", server.resource.as_str()), ("scope", first)];
    let granted = scout.token(http, broker, &form).await?;
    let client = connect_and_list(&scout, mcp_url, &granted).await?;
    search(&scout, &client).await?;
    let _ = client.cancel().await;
    Ok(())
}

async fn run() -> Result<(), String> {
    let broker_url = std::env::var("BROKER_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let mcp_url = std::env::var("MCP_URL").unwrap_or_else(|_| "http://127.0.0.1:9091/mcp".into());
    let http = reqwest::Client::new();
    let broker = broker_at(&http, &broker_url).await?;

    println!("Part one: a delegated chain, orchestrator -> planner -> booker -> the MCP server\n");
    delegated_chain(&http, &broker, &mcp_url).await?;
    println!("\nPart two: the scout starts its own chain at the MCP server with client credentials\n");
    scout_chain(&http, &broker, &mcp_url).await
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("mcp_agent: {message}");
            ExitCode::FAILURE
        }
    }
}
