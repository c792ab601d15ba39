//! Baton in front of MCP servers: the `mcp_flights` example behind the
//! verifier, on real sockets, reached over plain HTTP and by the official
//! MCP SDKs (TypeScript `@modelcontextprotocol/sdk`, Python `mcp`), whose
//! pinned installs live under `tests/interop/`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::header::WWW_AUTHENTICATE;
use serde_json::{json, Value};

use crate::harness::secret_hash;
use crate::interop::{append, interop_dir, run};
use crate::process::{example, free_ports, BrokerProcess};

/// The admin token the person approving bookings uses in these runs.
pub const ADMIN: &str = "mcp-admin-token-5c1e9a";

/// The flights MCP server's identifier in the example policies.
const EXAMPLE_MCP: &str = "http://127.0.0.1:9091/mcp";

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// The broker and two `mcp_flights` servers on free ports: `flights`, as
/// the example policies register it, and `other`, a second MCP server
/// registered the same way, so that a token for one can be shown to the
/// other.
pub struct McpSetup {
    pub broker: BrokerProcess,
    pub flights: McpServer,
    pub other: McpServer,
}

/// An `mcp_flights` process, killed when dropped.
pub struct McpServer {
    child: Child,
    /// Its resource identifier: where clients reach it.
    pub url: String,
    /// Its output: one line per tool call.
    log: tempfile::NamedTempFile,
}

impl McpServer {
    /// Starts the server for the broker at `broker` (which it reaches only
    /// once a token is checked), so that it binds its port at once.
    fn spawn(broker: &str, port: u16, client: (&str, &str)) -> McpServer {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(example("mcp_flights"))
            .env_clear()
            .env("BROKER_URL", broker)
            .env("MCP_LISTEN", format!("127.0.0.1:{port}"))
            .env("MCP_CLIENT_ID", client.0)
            .env("MCP_CLIENT_SECRET", client.1)
            .stdin(Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        McpServer { child, url: format!("http://127.0.0.1:{port}/mcp"), log }
    }

    async fn wait_until_up(&mut self) {
        let metadata = self.url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !reqwest::get(&metadata).await.is_ok_and(|response| response.status().is_success()) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the MCP server at {} stopped ({status}):\n{}", self.url, self.log());
            }
            assert!(Instant::now() < deadline, "the MCP server at {} did not come up:\n{}", self.url, self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the server logged: one line per tool call.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for McpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl McpSetup {
    pub async fn start() -> McpSetup {
        // The servers bind their ports right after they are chosen, before
        // the broker is waited for, so that nothing else takes them meanwhile.
        let [broker, flights, other] = free_ports();
        let broker_url = format!("http://127.0.0.1:{broker}");
        let mut flights = McpServer::spawn(&broker_url, flights, ("flights-mcp", "dev-only-flights-mcp-secret"));
        let mut other = McpServer::spawn(&broker_url, other, ("other-mcp", "other-mcp-secret"));
        let (flights_url, other_url) = (flights.url.clone(), other.url.clone());
        let admin = secret_hash(ADMIN);
        let broker = BrokerProcess::start_on(broker, &[("BATON_ADMIN_TOKEN_SHA256", &admin)], |policies| {
            for entry in std::fs::read_dir(policies).unwrap() {
                let path = entry.unwrap().path();
                if path.is_file() {
                    let text = std::fs::read_to_string(&path).unwrap();
                    std::fs::write(&path, text.replace(EXAMPLE_MCP, &flights_url)).unwrap();
                }
            }
            append(
                &policies.join("resources.toml"),
                &format!(
                    "\n[[resources]]\nuri = \"{other_url}\"\nname = \"Another MCP server\"\n\
                     scopes = [\"flights.read\", \"flights.book\"]\nttl = 300\napproval = [\"flights.book\"]\n\
                     client_id = \"other-mcp\"\nsecret_sha256 = \"{}\"\n",
                    secret_hash("other-mcp-secret")
                ),
            );
            append(
                &policies.join("mcp.cedar"),
                &format!(
                    "\n@id(\"booker-to-another-mcp\")\npermit (principal == Agent::\"booker\", \
                     action == Action::\"exchange\", resource in Resource::\"{other_url}\")\n\
                     when {{ context.target == \"{other_url}\" }};\n"
                ),
            );
        })
        .await;
        flights.wait_until_up().await;
        other.wait_until_up().await;
        McpSetup { broker, flights, other }
    }

    /// Runs one language's MCP test script with the setup in its environment.
    fn run_script(&self, name: &'static str, mut command: Command, dir: &Path) -> crate::interop::Run {
        command
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("BROKER_URL", &self.broker.url)
            .env("MCP_URL", &self.flights.url)
            .env("OTHER_MCP_URL", &self.other.url)
            .env("ADMIN_TOKEN", ADMIN);
        run(name, command, self.broker.folder.path())
    }
}

/// `POST /token` as `agent` (its dev secret), answered as JSON.
async fn token(broker: &str, agent: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{broker}/token"))
        .basic_auth(agent, Some(format!("dev-only-{agent}-secret")))
        .form(form)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// The booker's parent token: the orchestrator's own, exchanged by the planner.
async fn booker_parent(broker: &str, scope: &str) -> String {
    let (status, root) =
        token(broker, "orchestrator", &[("grant_type", "client_credentials"), ("audience", "planner")]).await;
    assert_eq!(status, 200, "{root}");
    let root = root["access_token"].as_str().unwrap();
    let form = [
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", root),
        ("subject_token_type", ACCESS_TOKEN),
        ("audience", "booker"),
        ("scope", scope),
    ];
    let (status, parent) = token(broker, "planner", &form).await;
    assert_eq!(status, 200, "{parent}");
    parent["access_token"].as_str().unwrap().to_owned()
}

/// The booker's exchange of `parent` for the MCP server at `resource`.
async fn for_mcp(broker: &str, parent: &str, resource: &str, scope: &str) -> (u16, Value) {
    let form = [
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", parent),
        ("subject_token_type", ACCESS_TOKEN),
        ("resource", resource),
        ("scope", scope),
    ];
    token(broker, "booker", &form).await
}

/// One JSON-RPC message to an MCP server, as the streamable HTTP transport sends it.
async fn mcp(url: &str, token: Option<&str>, message: &Value) -> reqwest::Response {
    send(url, token, None, message).await
}

async fn send(url: &str, token: Option<&str>, session: Option<&str>, message: &Value) -> reqwest::Response {
    let mut request =
        reqwest::Client::new().post(url).header("accept", "application/json, text/event-stream").json(message);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    request.send().await.unwrap()
}

/// An initialized MCP session (the streamable HTTP transport's handshake).
async fn session(url: &str, token: &str) -> String {
    let opened = mcp(url, Some(token), &initialize()).await;
    assert_eq!(opened.status(), 200);
    let id = opened.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    // The answer streams; the session is ready once it is read.
    assert!(opened.text().await.unwrap().contains("protocolVersion"));
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(send(url, Some(token), Some(&id), &initialized).await.status(), 202);
    id
}

/// The JSON-RPC answer to a request, which the server streams as
/// server-sent events.
async fn answer(response: reqwest::Response) -> Value {
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
        .find(|message| message.get("result").is_some() || message.get("error").is_some())
        .unwrap_or_else(|| panic!("no answer in {body}"))
}

/// The JSON a tool returned: the text content of the JSON-RPC result.
async fn tool_result(response: reqwest::Response) -> Value {
    let message = answer(response).await;
    let text = message["result"]["content"][0]["text"].as_str().unwrap_or_else(|| panic!("{message}"));
    serde_json::from_str(text).unwrap()
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "baton-tests", "version": "1"}}})
}

fn call(tool: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": tool, "arguments": arguments}})
}

fn challenge(response: &reqwest::Response) -> String {
    response.headers().get(WWW_AUTHENTICATE).map(|value| value.to_str().unwrap().to_owned()).unwrap_or_default()
}

/// The quoted value of `name` in a `WWW-Authenticate` challenge.
fn attribute(challenge: &str, name: &str) -> Option<String> {
    let start = challenge.find(&format!("{name}=\""))? + name.len() + 2;
    let length = challenge.get(start..)?.find('"')?;
    challenge.get(start..start + length).map(str::to_owned)
}

#[tokio::test]
async fn a_client_without_a_token_finds_baton_from_the_servers_refusal() {
    let setup = McpSetup::start().await;
    let refused = mcp(&setup.flights.url, None, &initialize()).await;
    assert_eq!(refused.status(), 401);
    let challenge = challenge(&refused);
    // RFC 9728 §5.1, and the scope to ask first (least privilege).
    let metadata_url = attribute(&challenge, "resource_metadata").expect(&challenge);
    assert_eq!(metadata_url, setup.flights.url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp"));
    assert_eq!(attribute(&challenge, "scope").as_deref(), Some("flights.read"), "{challenge}");

    let metadata: Value = reqwest::get(&metadata_url).await.unwrap().json().await.unwrap();
    // RFC 9728 §3.3: the document names the identifier it was asked for.
    assert_eq!(metadata["resource"], setup.flights.url.as_str());
    assert_eq!(metadata["authorization_servers"], json!([setup.broker.url]));
    assert_eq!(metadata["scopes_supported"], json!(["flights.book", "flights.read"]));
    let bare = setup.flights.url.replace("/mcp", "/.well-known/oauth-protected-resource");
    let bare: Value = reqwest::get(&bare).await.unwrap().json().await.unwrap();
    assert_eq!(bare, metadata);

    // The authorization server it names says what an MCP client reads.
    let issuer = metadata["authorization_servers"][0].as_str().unwrap();
    let server: Value =
        reqwest::get(format!("{issuer}/.well-known/oauth-authorization-server")).await.unwrap().json().await.unwrap();
    assert_eq!(server["issuer"], issuer);
    assert_eq!(server["token_endpoint"], format!("{issuer}/token"));
    assert!(server["grant_types_supported"].as_array().unwrap().contains(&json!(TOKEN_EXCHANGE)));
    assert!(server["token_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap()
        .contains(&json!("client_secret_basic")));
    assert!(server["scopes_supported"].as_array().unwrap().contains(&json!("flights.book")));
}

#[tokio::test]
async fn a_tool_beyond_the_tokens_scope_gets_the_scope_challenge_and_a_stepped_up_token_books() {
    let setup = McpSetup::start().await;
    let (broker, flights) = (&setup.broker.url, &setup.flights.url);
    let parent = booker_parent(broker, "flights.read flights.book").await;
    let (status, read) = for_mcp(broker, &parent, flights, "flights.read").await;
    assert_eq!(status, 200, "{read}");
    let read = read["access_token"].as_str().unwrap();

    let id = session(flights, read).await;
    let search = call("search_flights", json!({"from": "LHR", "to": "JFK"}));
    let searched = tool_result(send(flights, Some(read), Some(&id), &search).await).await;
    assert_eq!(
        searched["caller"],
        json!({"agent": "booker", "subject": "orchestrator", "chain": ["booker", "planner"]})
    );
    let refused = send(flights, Some(read), Some(&id), &call("book_flight", json!({"flight": "BT101"}))).await;
    assert_eq!(refused.status(), 403);
    let challenge = challenge(&refused);
    assert_eq!(attribute(&challenge, "error").as_deref(), Some("insufficient_scope"), "{challenge}");
    // What the token holds and what the tool needs: stepping up loses nothing.
    assert_eq!(attribute(&challenge, "scope").as_deref(), Some("flights.book flights.read"), "{challenge}");
    assert!(attribute(&challenge, "resource_metadata").is_some(), "{challenge}");
    assert!(!setup.flights.log().contains("booking"), "{}", setup.flights.log());

    // The step-up waits for a person, then books as the booker through the planner.
    let asked = attribute(&challenge, "scope").unwrap();
    let (status, pending) = for_mcp(broker, &parent, flights, &asked).await;
    assert_eq!((status, pending["error"].as_str()), (400, Some("authorization_pending")), "{pending}");
    let approval = pending["approval_id"].as_str().unwrap();
    let approved = reqwest::Client::new()
        .post(format!("{broker}/admin/approvals/{approval}/approve"))
        .bearer_auth(ADMIN)
        .json(&json!({"approver": "travel-team@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status(), 200);
    // The same request, repeated, redeems the approval: an MCP client's
    // library knows nothing of approval ids.
    let (status, book) = for_mcp(broker, &parent, flights, &asked).await;
    assert_eq!(status, 200, "{book}");
    let book = book["access_token"].as_str().unwrap();
    // Once: a further repeat is a new request for a person to decide.
    let (status, again) = for_mcp(broker, &parent, flights, &asked).await;
    assert_eq!((status, again["error"].as_str()), (400, Some("authorization_pending")), "{again}");
    assert_ne!(again["approval_id"].as_str(), Some(approval));
    let booked = send(flights, Some(book), Some(&id), &call("book_flight", json!({"flight": "BT101"}))).await;
    let booked = tool_result(booked).await;
    assert_eq!(booked["booked"], true);
    assert_eq!((booked["by"].as_str(), booked["for"].as_str()), (Some("booker"), Some("orchestrator")));
    assert_eq!(booked["chain"], json!(["booker", "planner"]));
    // Each tool logs whom it served, through whom.
    assert!(
        setup.flights.log().contains("booking BT101 for orchestrator by booker <- planner"),
        "{}",
        setup.flights.log()
    );

    // A parent without the booking right cannot step up at all.
    let read_only = booker_parent(broker, "flights.read").await;
    let (status, refused) = for_mcp(broker, &read_only, flights, &asked).await;
    assert_eq!((status, refused["error"].as_str()), (400, Some("invalid_scope")), "{refused}");
}

#[tokio::test]
async fn a_call_naming_its_tool_twice_is_refused_before_any_tool_runs() {
    let setup = McpSetup::start().await;
    let (broker, flights) = (&setup.broker.url, &setup.flights.url);
    let parent = booker_parent(broker, "flights.read flights.book").await;
    let (_, read) = for_mcp(broker, &parent, flights, "flights.read").await;
    let read = read["access_token"].as_str().unwrap();
    // The gate and the server must read the same tool: a repeated key is
    // refused rather than read one way by each.
    let body = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"search_flights","name":"book_flight","arguments":{"flight":"BT101"}}}"#;
    let response = reqwest::Client::new()
        .post(flights)
        .bearer_auth(read)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // A batch asks for every scope its calls need.
    let batch = json!([
        call("search_flights", json!({"from": "A", "to": "B"})),
        call("book_flight", json!({"flight": "BT101"}))
    ]);
    assert_eq!(mcp(flights, Some(read), &batch).await.status(), 403);
    assert!(!setup.flights.log().contains("booking"), "{}", setup.flights.log());
}

/// Each call is authorized by its own token; a session also stays with the
/// caller that opened it: to any other, valid token or not, it does not
/// exist, whether to call in it, read its stream or end it.
#[tokio::test]
async fn a_session_serves_only_the_caller_that_opened_it() {
    let setup = McpSetup::start().await;
    let (broker, flights) = (&setup.broker.url, &setup.flights.url);
    let parent = booker_parent(broker, "flights.read").await;
    let (_, booker) = for_mcp(broker, &parent, flights, "flights.read").await;
    let booker = booker["access_token"].as_str().unwrap();
    let (status, scout) = token(broker, "scout", &[("grant_type", "client_credentials"), ("resource", flights)]).await;
    assert_eq!(status, 200, "{scout}");
    let scout = scout["access_token"].as_str().unwrap();

    let id = session(flights, booker).await;
    let search = call("search_flights", json!({"from": "LHR", "to": "JFK"}));
    assert_eq!(send(flights, Some(scout), Some(&id), &search).await.status(), 404);
    let client = reqwest::Client::new();
    let stream = client.get(flights.as_str()).bearer_auth(scout).header("mcp-session-id", &id);
    assert_eq!(stream.header("accept", "text/event-stream").send().await.unwrap().status(), 404);
    let end = client.delete(flights.as_str()).bearer_auth(scout).header("mcp-session-id", &id).send().await.unwrap();
    assert_eq!(end.status(), 404);
    assert!(!setup.flights.log().contains("search"), "{}", setup.flights.log());

    // Its owner carries on; a session never opened is refused the same way.
    let own = tool_result(send(flights, Some(booker), Some(&id), &search).await).await;
    assert_eq!(own["caller"]["agent"], "booker");
    assert_eq!(send(flights, Some(booker), Some("never-opened"), &search).await.status(), 404);
    // Ended by its owner, it is gone for the owner too.
    let ended = client.delete(flights.as_str()).bearer_auth(booker).header("mcp-session-id", &id).send().await.unwrap();
    assert!(ended.status().is_success(), "{}", ended.status());
    assert_eq!(send(flights, Some(booker), Some(&id), &search).await.status(), 404);
}

#[tokio::test]
async fn a_token_for_another_server_and_a_revoked_chain_are_refused() {
    let setup = McpSetup::start().await;
    let (broker, flights) = (&setup.broker.url, &setup.flights.url);
    let parent = booker_parent(broker, "flights.read").await;
    let (_, read) = for_mcp(broker, &parent, flights, "flights.read").await;
    let read = read["access_token"].as_str().unwrap();
    assert_eq!(mcp(flights, Some(read), &initialize()).await.status(), 200);

    let elsewhere = mcp(&setup.other.url, Some(read), &initialize()).await;
    assert_eq!(elsewhere.status(), 401);
    let refusal = challenge(&elsewhere);
    assert_eq!(attribute(&refusal, "error").as_deref(), Some("invalid_token"), "{refusal}");
    assert!(attribute(&refusal, "resource_metadata").unwrap().starts_with(&setup.other.url.replace("/mcp", "")));

    // RFC 7009 by the token's holder: the parent and what descends from it die.
    let revoked = reqwest::Client::new()
        .post(format!("{broker}/revoke"))
        .basic_auth("booker", Some("dev-only-booker-secret"))
        .form(&[("token", parent.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let after = mcp(flights, Some(read), &initialize()).await;
    assert_eq!(after.status(), 401);
    assert_eq!(attribute(&challenge(&after), "error").as_deref(), Some("invalid_token"));
}

#[tokio::test]
async fn the_typescript_sdk_discovers_exchanges_steps_up_and_is_refused_after_revocation() {
    let dir = interop_dir().join("node");
    let installed = dir.join("node_modules/@modelcontextprotocol/sdk/package.json");
    assert!(installed.exists(), "{} is missing: run ./scripts/test.sh, which installs it", installed.display());
    let setup = McpSetup::start().await;
    let mut node = Command::new("node");
    node.args(["--test", "--test-timeout=120000", "mcp.test.js"]);
    let run = tokio::task::spawn_blocking(move || {
        let run = setup.run_script("typescript-mcp", node, &dir);
        (run, setup)
    });
    let (run, setup) = run.await.unwrap();
    println!("{}", run.report());
    assert!(run.passed(), "{}\nMCP server log:\n{}", run.report(), setup.flights.log());
}

#[tokio::test]
async fn the_python_sdk_discovers_exchanges_steps_up_and_is_refused_after_revocation() {
    let dir = interop_dir().join("python");
    let python = dir.join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run ./scripts/test.sh, which installs it", python.display());
    let setup = McpSetup::start().await;
    let mut unittest = Command::new(python);
    unittest.args(["-m", "unittest", "-v", "test_mcp"]);
    let run = tokio::task::spawn_blocking(move || {
        let run = setup.run_script("python-mcp", unittest, &dir);
        (run, setup)
    });
    let (run, setup) = run.await.unwrap();
    println!("{}", run.report());
    assert!(run.passed(), "{}\nMCP server log:\n{}", run.report(), setup.flights.log());
}
