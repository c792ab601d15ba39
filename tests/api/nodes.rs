//! Brokers as real processes (DESIGN.md §2 promises 4 and 5, §6): two nodes
//! sharing one real `redis-server`, a Redis outage under load, and a broker
//! killed with SIGKILL on its embedded store. Loopback only; every wait is
//! bounded in attempts and in time; measured times are printed, not asserted.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton::client_auth::ASSERTION_TYPE;
use baton::clock::{Clock, SystemClock};
use serde_json::{json, Value};

use crate::harness::{json_of, policy_folder, secret_hash, sign, ACCESS_TOKEN, ADMIN_TOKEN, AIRLINE, EXCHANGE};
use crate::redis_server::RedisServer;

/// A folder the brokers of one test run in: the example policies (with
/// agents that do not expire) and one signing key, generated before any
/// broker starts so that nodes sharing the folder sign with the same key.
pub struct Deployment {
    folder: tempfile::TempDir,
    /// Every node of the deployment answers as this issuer.
    pub issuer: String,
    policies: PathBuf,
}

impl Deployment {
    pub fn new() -> Deployment {
        let folder = tempfile::tempdir().unwrap();
        let policies = crate::process::copy_example_policies(folder.path());
        let output = Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["keys", "generate"])
            .current_dir(folder.path())
            .env_clear()
            .output()
            .unwrap();
        assert!(output.status.success(), "keys generate: {}", String::from_utf8_lossy(&output.stderr));
        Deployment { folder, issuer: "http://baton.nodes.test".into(), policies }
    }

    /// The same, on another policy folder.
    fn with_policies(policies: &Path) -> Deployment {
        let mut deployment = Deployment::new();
        deployment.policies = policies.to_owned();
        deployment
    }

    pub fn path(&self) -> &Path {
        self.folder.path()
    }

    /// Starts `baton serve` in the deployment's folder with the admin API
    /// on, plus `extra` variables; returns once `/healthz` answers.
    pub async fn start(&self, name: &str, extra: &[(&str, &str)]) -> Node {
        let port = crate::process::free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_baton"));
        command
            .arg("serve")
            .current_dir(self.path())
            .env_clear()
            .env("BATON_LISTEN", format!("127.0.0.1:{port}"))
            .env("BATON_ISSUER", &self.issuer)
            .env("BATON_KEYS_DIR", self.path().join("keys"))
            .env("BATON_POLICIES_DIR", &self.policies)
            .env("BATON_ADMIN_TOKEN_SHA256", secret_hash(ADMIN_TOKEN))
            .envs(extra.iter().copied());
        Node::launch(name, command, port, &self.path().join(format!("{name}.log"))).await
    }
}

/// A running server process (a broker, or the balancer in front of some),
/// killed (SIGKILL) when dropped.
pub struct Node {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Node {
    /// Spawns `command`, which serves HTTP on loopback `port`, with its
    /// standard output and error in `log`; returns once `GET /healthz`
    /// answers 200 through it, and panics with the log if it exits first or
    /// does not answer within 10 s.
    pub async fn launch(name: &str, mut command: Command, port: u16, log: &Path) -> Node {
        let output = std::fs::File::create(log).unwrap();
        command.stdout(output.try_clone().unwrap()).stderr(output);
        let child = command.spawn().unwrap_or_else(|error| panic!("cannot start {name}: {error}"));
        let mut node = Node { child, base: format!("http://127.0.0.1:{port}"), log: log.to_owned() };
        let client = client();
        for _ in 0..100 {
            if let Some(status) = node.child.try_wait().unwrap() {
                panic!("{name} exited with {status}: {}", node.log());
            }
            if client.get(node.url("/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
                return node;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{name} did not come up within 10 s: {}", node.log());
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits, bounded, until the log holds `text`.
    async fn wait_for_log(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.log().contains(text) {
            assert!(Instant::now() < deadline, "never logged {text:?}: {}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: the process gets no chance to flush or clean up anything.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every request is bounded: a broker that hangs fails the test instead.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    pub fn token(&self) -> &str {
        self.body["access_token"].as_str().unwrap_or_else(|| panic!("no token in {}: {}", self.status, self.body))
    }

    #[track_caller]
    pub fn assert_error(&self, status: u16, error: &str) {
        assert_eq!((self.status, self.body["error"].as_str()), (status, Some(error)), "body: {}", self.body);
        assert!(self.body.get("access_token").is_none(), "a refusal carried a token: {}", self.body);
    }
}

/// A form POST to the token, introspection or revocation endpoint; `basic`
/// authenticates the client when given.
async fn post(node: &Node, path: &str, basic: Option<(&str, &str)>, form: &[(&str, &str)]) -> Reply {
    let mut request = client().post(node.url(path)).form(form);
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.headers()["cache-control"], "no-store", "{path}");
    let status = response.status().as_u16();
    Reply { status, body: response.json().await.unwrap_or(Value::Null) }
}

/// The example agent `agent` with its dev secret.
pub async fn as_agent(node: &Node, agent: &str, form: &[(&str, &str)]) -> Reply {
    let secret = format!("dev-only-{agent}-secret");
    post(node, "/token", Some((agent, &secret)), form).await
}

async fn exchange(node: &Node, agent: &str, subject_token: &str, extra: &[(&str, &str)]) -> Reply {
    let mut form =
        vec![("grant_type", EXCHANGE), ("subject_token", subject_token), ("subject_token_type", ACCESS_TOKEN)];
    form.extend_from_slice(extra);
    as_agent(node, agent, &form).await
}

/// The booker trades the planner's token for one for the airline API.
pub async fn booker_exchange(node: &Node, hop1: &str) -> Reply {
    exchange(node, "booker", hop1, &[("resource", AIRLINE), ("scope", "flights.book")]).await
}

/// The planner trades the orchestrator's token for one for the booker.
pub async fn planner_exchange(node: &Node, root: &str) -> Reply {
    exchange(node, "planner", root, &[("audience", "booker")]).await
}

/// orchestrator → planner → booker → airline API, as in the README, the
/// booking approved by its approver.
pub async fn walk(node: &Node) -> [String; 3] {
    let root = as_agent(node, "orchestrator", &[("grant_type", "client_credentials"), ("audience", "planner")]).await;
    assert_eq!(root.status, 200, "{}", root.body);
    let hop1 = planner_exchange(node, root.token()).await;
    assert_eq!(hop1.status, 200, "{}", hop1.body);
    // The booking waits for the booker's owner, who approves it on this node.
    let pending = booker_exchange(node, hop1.token()).await;
    pending.assert_error(400, "authorization_pending");
    let id = pending.body["approval_id"].as_str().unwrap().to_owned();
    let approve = client().post(node.url(&format!("/admin/approvals/{id}/approve")));
    admin(node, approve.json(&json!({"approver": "travel-team@example.com"}))).await;
    let booking = [("resource", AIRLINE), ("scope", "flights.book"), ("approval_id", id.as_str())];
    let hop2 = exchange(node, "booker", hop1.token(), &booking).await;
    assert_eq!(hop2.status, 200, "{}", hop2.body);
    [root.token().to_owned(), hop1.token().to_owned(), hop2.token().to_owned()]
}

/// The airline API introspects a token addressed to it.
pub async fn introspect(node: &Node, token: &str) -> Value {
    let reply =
        post(node, "/introspect", Some(("airline-api", "dev-only-airline-api-secret")), &[("token", token)]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body
}

pub async fn revoke(node: &Node, agent: &str, token: &str) -> Reply {
    let secret = format!("dev-only-{agent}-secret");
    post(node, "/revoke", Some((agent, &secret)), &[("token", token)]).await
}

pub async fn admin(node: &Node, request: reqwest::RequestBuilder) -> Value {
    let response = request.bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{status}: {body} ({})", node.base);
    body
}

pub async fn readyz(node: &Node) -> u16 {
    client().get(node.url("/readyz")).send().await.unwrap().status().as_u16()
}

pub fn jti(token: &str) -> String {
    json_of(token)["jti"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn two_nodes_share_revocation_on_redis() {
    let redis = RedisServer::start();
    let deployment = Deployment::new();
    let url = redis.url();
    let a = deployment.start("node-a", &[("BATON_REDIS_URL", &url)]).await;
    let b = deployment.start("node-b", &[("BATON_REDIS_URL", &url)]).await;
    assert_eq!((readyz(&a).await, readyz(&b).await), (200, 200));

    let [root, hop1, hop2] = walk(&a).await;
    // Node B accepts node A's tokens: one key, one issuer.
    let seen_by_b = introspect(&b, &hop2).await;
    assert_eq!(seen_by_b["active"], true, "{seen_by_b}");
    assert_eq!(seen_by_b["act"], json!({"sub": "booker", "act": {"sub": "planner"}}));

    // The booker holds the middle token (it is addressed to the booker).
    let revoked = revoke(&a, "booker", &hop1).await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    let acknowledged = Instant::now();
    // Right after the revoke call returns, with no wait and no retry.
    let refused = booker_exchange(&b, &hop1).await;
    let propagation = acknowledged.elapsed();
    refused.assert_error(400, "invalid_request");
    eprintln!("revocation seen by the other node after {propagation:?} (one exchange, refused on the first try)");
    assert_eq!(introspect(&b, &hop2).await, json!({"active": false}));
    // The cascade stops at the revoked token: the root lives on, on either node.
    assert_eq!(planner_exchange(&b, &root).await.status, 200);

    // The revocation node A recorded is in the audit trail node B reads,
    // next to the issuance node A recorded.
    let audit = admin(&b, client().get(b.url("/admin/audit")).query(&[("jti", jti(&hop1))])).await;
    let events = audit["events"].as_array().unwrap();
    let decided = |decision: &str, agent: &str| {
        events
            .iter()
            .any(|event| event["decision"] == decision && event["agent"] == agent && event["jti"] == jti(&hop1))
    };
    assert!(decided("revoked", "booker"), "node B does not see node A's revocation event: {audit}");
    assert!(decided("issued", "planner"), "node B does not see node A's issuance event: {audit}");

    // Deprovisioning on node A kills, on node B, tokens node B issued.
    let [_, other_hop1, other_hop2] = walk(&b).await;
    assert_eq!(introspect(&b, &other_hop2).await["active"], true);
    admin(&a, client().post(a.url("/admin/deprovision")).json(&json!({"agent": "planner"}))).await;
    let acknowledged = Instant::now();
    let inactive = introspect(&b, &other_hop2).await;
    let propagation = acknowledged.elapsed();
    assert_eq!(inactive, json!({"active": false}));
    eprintln!(
        "deprovisioning seen by the other node after {propagation:?} (one introspection, inactive on the first try)"
    );
    booker_exchange(&b, &other_hop1).await.assert_error(400, "invalid_request");
}

/// One exchange of the outage run, timed.
struct Attempt {
    sent: Instant,
    received: Instant,
    status: u16,
    body: Value,
}

/// The session cookie a console sign-in on `node` sets, as `name=value`.
async fn console_sign_in(node: &Node) -> String {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let signed_in =
        client.post(node.url("/console/sign-in")).form(&[("admin_token", ADMIN_TOKEN)]).send().await.unwrap();
    assert_eq!(signed_in.status(), 303);
    let cookie = signed_in.headers()["set-cookie"].to_str().unwrap();
    cookie.split(';').next().unwrap().to_owned()
}

/// The console's agents page on `node` with `cookie`: its status and body.
async fn console_agents(node: &Node, cookie: &str) -> (u16, String) {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let page = client.get(node.url("/console/agents")).header("cookie", cookie).send().await.unwrap();
    (page.status().as_u16(), page.text().await.unwrap())
}

#[tokio::test]
async fn a_console_session_is_known_to_every_node_on_redis() {
    let redis = RedisServer::start();
    let deployment = Deployment::new();
    let url = redis.url();
    let a = deployment.start("node-a", &[("BATON_REDIS_URL", &url)]).await;
    let b = deployment.start("node-b", &[("BATON_REDIS_URL", &url)]).await;
    let cookie = console_sign_in(&a).await;
    let (status, page) = console_agents(&b, &cookie).await;
    assert_eq!(status, 200, "signed in on A, known on B");
    // Signing out on B ends the session on A too.
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap();
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let out = client.post(b.url("/console/sign-out")).header("cookie", &cookie).form(&[("csrf", csrf)]).send();
    assert_eq!(out.await.unwrap().status(), 303);
    assert_eq!(console_agents(&a, &cookie).await.0, 303, "sent to sign in");
    // A new admin token ends the sessions the old one opened.
    let kept = console_sign_in(&a).await;
    let rotated_hash = secret_hash("a-new-admin-token");
    let rotated =
        deployment.start("node-c", &[("BATON_REDIS_URL", &url), ("BATON_ADMIN_TOKEN_SHA256", &rotated_hash)]).await;
    assert_eq!(console_agents(&a, &kept).await.0, 200);
    assert_eq!(console_agents(&rotated, &kept).await.0, 303, "not the credential that opened it");
    // Redis keeps a hash of the session id, never the id itself.
    let id = cookie.split_once('=').unwrap().1;
    let second = console_sign_in(&a).await;
    let mut connection = redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*console-session*").query_async(&mut connection).await.unwrap();
    assert_eq!(keys.len(), 2, "the first was ended; two were opened since: {keys:?}");
    let stored = keys.join(" ");
    for raw in [id, kept.split_once('=').unwrap().1, second.split_once('=').unwrap().1] {
        assert!(!stored.contains(raw), "{stored}");
    }
}

#[tokio::test]
async fn an_agent_removed_from_the_inventory_is_deprovisioned_once_by_all_the_nodes() {
    let redis = RedisServer::start();
    let url = redis.url();
    let policies = tempfile::tempdir().unwrap();
    let folder = crate::process::copy_example_policies(policies.path());
    let deployment = Deployment::with_policies(&folder);
    // The first node records the inventory; then the booker leaves it.
    drop(deployment.start("first", &[("BATON_REDIS_URL", &url)]).await);
    let agents = folder.join("agents.toml");
    let text = std::fs::read_to_string(&agents).unwrap();
    let start = text.find("[[agents]]\nid = \"booker\"").unwrap();
    let end = text[start + 1..].find("[[agents]]").map_or(text.len(), |next| start + 1 + next);
    std::fs::write(&agents, format!("{}{}", &text[..start], &text[end..])).unwrap();
    // Two nodes start on it together; each looks for removed agents before it serves.
    let redis_url = [("BATON_REDIS_URL", url.as_str())];
    let (a, b) = tokio::join!(deployment.start("node-a", &redis_url), deployment.start("node-b", &redis_url));
    let events = admin(&a, client().get(a.url("/admin/audit?agent=booker&action=deprovision"))).await;
    assert_eq!(events["events"].as_array().unwrap().len(), 1, "{events}");
    let said = [&a, &b].iter().filter(|node| node.log().contains("agent removed from the inventory")).count();
    assert_eq!(said, 1, "one node deprovisioned it: {} / {}", a.log(), b.log());
}

#[tokio::test]
async fn an_outage_gives_only_503_and_service_resumes() {
    let mut redis = RedisServer::start();
    let deployment = Deployment::new();
    let url = redis.url();
    let node = Arc::new(deployment.start("node", &[("BATON_REDIS_URL", &url)]).await);
    let [root, hop1, hop2] = walk(&node).await;
    assert_eq!(revoke(&node, "booker", &hop1).await.status, 200, "the revocation before the outage");

    // Exchanges one after another until told to stop (bounded anyway).
    let stop = Arc::new(AtomicBool::new(false));
    let run = tokio::spawn({
        let (node, root, stop) = (node.clone(), root.clone(), stop.clone());
        async move {
            let started = Instant::now();
            let mut attempts = Vec::new();
            while !stop.load(Ordering::SeqCst) && attempts.len() < 5_000 && started.elapsed() < Duration::from_secs(30)
            {
                let sent = Instant::now();
                let reply = planner_exchange(&node, &root).await;
                attempts.push(Attempt { sent, received: Instant::now(), status: reply.status, body: reply.body });
            }
            attempts
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill();
    let killed = Instant::now();

    let not_ready = readyz(&node).await;
    assert_eq!(not_ready, 503, "/readyz while Redis is down");
    node.wait_for_log("state store unreachable").await;
    let metrics = client().get(node.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("baton_store_up 0"), "{metrics}");
    assert!(metrics.contains("baton_store_errors_total{operation="), "{metrics}");
    // Let the run go on through the outage for a while.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    let attempts = run.await.unwrap();

    let before: Vec<&Attempt> = attempts.iter().filter(|attempt| attempt.sent < killed).collect();
    let during: Vec<&Attempt> = attempts.iter().filter(|attempt| attempt.sent >= killed).collect();
    assert!(before.iter().any(|attempt| attempt.status == 200), "no exchange succeeded before the outage");
    assert!(during.len() >= 3, "only {} exchanges ran during the outage", during.len());
    for attempt in &attempts {
        let unavailable = attempt.status == 503 && attempt.body["error"] == "temporarily_unavailable";
        // A request under way when Redis died may have finished its writes first.
        let answered_before = attempt.status == 200 && attempt.sent < killed;
        assert!(unavailable || answered_before, "{}: {}", attempt.status, attempt.body);
        assert!(attempt.body.get("access_token").is_none() || attempt.status == 200, "{}", attempt.body);
    }
    // Once a 503 was seen, nothing was issued again.
    let first_refusal = attempts.iter().position(|attempt| attempt.status == 503).unwrap();
    assert!(attempts[first_refusal..].iter().all(|attempt| attempt.status == 503));
    let slowest = during.iter().map(|attempt| attempt.received - attempt.sent).max().unwrap();
    eprintln!(
        "outage: {} exchanges before the kill, {} during it, all 503; first 503 answered {:?} after the kill; slowest 503 took {slowest:?}",
        before.len(),
        during.len(),
        attempts[first_refusal].received.saturating_duration_since(killed),
    );

    // Redis returns on the same port and folder; the broker is not restarted.
    redis.restart();
    let restarted = Instant::now();
    let mut resumed = None;
    for _ in 0..200 {
        let reply = planner_exchange(&node, &root).await;
        if reply.status == 200 {
            resumed = Some(restarted.elapsed());
            break;
        }
        reply.assert_error(503, "temporarily_unavailable");
        if restarted.elapsed() > Duration::from_secs(20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resumed = resumed.unwrap_or_else(|| panic!("exchanges did not resume within 20 s: {}", node.log()));
    eprintln!("service resumed {resumed:?} after Redis restarted");
    assert_eq!(readyz(&node).await, 200);
    node.wait_for_log("state store reachable again").await;
    assert_eq!(node.log().matches("state store unreachable").count(), 1, "said once: {}", node.log());

    // The revocation made before the outage was persisted (AOF, fsync always).
    booker_exchange(&node, &hop1).await.assert_error(400, "invalid_request");
    assert_eq!(introspect(&node, &hop2).await, json!({"active": false}));
}

#[tokio::test]
async fn a_revocation_survives_kill_9_of_the_broker() {
    let deployment = Deployment::new();
    // The embedded store, under the folder's `data/`.
    let first = deployment.start("first", &[]).await;
    let [root, hop1, hop2] = walk(&first).await;
    let revoked = revoke(&first, "booker", &hop1).await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    first.kill();
    assert!(deployment.path().join("data").is_dir());

    let second = deployment.start("second", &[]).await;
    booker_exchange(&second, &hop1).await.assert_error(400, "invalid_request");
    assert_eq!(introspect(&second, &hop2).await, json!({"active": false}));
    // The new process accepts the old one's tokens: the refusal is the revocation.
    assert_eq!(planner_exchange(&second, &root).await.status, 200);
}

#[tokio::test]
async fn replayed_assertion_is_refused_across_nodes() {
    // An agent that authenticates with `private_key_jwt` (RFC 7523).
    let key = josekit::jwk::Jwk::generate_ec_key(josekit::jwk::alg::ec::EcCurve::P256).unwrap();
    let public = Value::Object(key.to_public_key().unwrap().as_ref().clone());
    let agents = format!(
        "[[agents]]\nid = 'signer'\nowner = 'o'\npurpose = 'p'\nexpires = 9999-12-31\n\
         jwks = {{ keys = [ {{ kty = \"EC\", crv = \"P-256\", kid = \"signer-key-1\", x = {}, y = {} }} ] }}\n",
        public["x"], public["y"]
    );
    let resources = "[[resources]]\nuri = 'https://api.example'\nname = 'API'\nscopes = ['read']\nttl = 300\n";
    let policies = policy_folder(&agents, resources, "permit (principal, action == Action::\"issue\", resource);");
    let redis = RedisServer::start();
    let deployment = Deployment::with_policies(policies.path());
    let url = redis.url();
    let a = deployment.start("node-a", &[("BATON_REDIS_URL", &url)]).await;
    let b = deployment.start("node-b", &[("BATON_REDIS_URL", &url)]).await;

    let assertion = |jti: &str| {
        let now = SystemClock.now().0;
        let claims = json!({"iss": "signer", "sub": "signer", "aud": deployment.issuer, "iat": now, "exp": now + 120, "jti": jti});
        sign(&key, &json!({"alg": "ES256", "kid": "signer-key-1"}), &claims)
    };
    let with_assertion = |node: &Node, assertion: String| {
        let url = node.url("/token");
        async move {
            let form = [
                ("grant_type", "client_credentials"),
                ("audience", "https://api.example"),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &assertion),
            ];
            let response = client().post(url).form(&form).send().await.unwrap();
            let status = response.status().as_u16();
            let challenge = response.headers().get("www-authenticate").map(|value| value.to_str().unwrap().to_owned());
            (Reply { status, body: response.json().await.unwrap() }, challenge)
        }
    };

    let once = assertion("used-once");
    let (first, _) = with_assertion(&a, once.clone()).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(json_of(first.token())["sub"], "signer");
    // RFC 7523 §3 item 7: the jti is spent on every node.
    let (replayed, challenge) = with_assertion(&b, once.clone()).await;
    replayed.assert_error(401, "invalid_client");
    assert!(challenge.is_some_and(|value| value.starts_with("Basic")));
    with_assertion(&a, once).await.0.assert_error(401, "invalid_client");
    // Node B does accept the agent's assertions: the refusal was the replay.
    let (fresh, _) = with_assertion(&b, assertion("fresh")).await;
    assert_eq!(fresh.status, 200, "{}", fresh.body);
}

/// Polls `attempt` every 100 ms until it answers 200, each other answer
/// being 503 `temporarily_unavailable` (fail closed), within `within`;
/// answers how many 503s came first.
async fn until_served<F, Fut>(node: &Node, within: Duration, mut attempt: F) -> usize
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Reply>,
{
    let started = Instant::now();
    let mut refused = 0;
    loop {
        let reply = attempt().await;
        if reply.status == 200 {
            return refused;
        }
        reply.assert_error(503, "temporarily_unavailable");
        refused += 1;
        assert!(started.elapsed() < within, "not served again within {within:?}: {}", node.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn brokers_carry_on_through_a_sentinel_failover() {
    let mut set = crate::redis_setups::SentinelSet::start();
    let deployment = Deployment::new();
    let url = set.url();
    let a = deployment.start("node-a", &[("BATON_REDIS_URL", &url)]).await;
    let b = deployment.start("node-b", &[("BATON_REDIS_URL", &url)]).await;
    let [root, hop1, hop2] = walk(&a).await;
    assert_eq!(revoke(&a, "booker", &hop1).await.status, 200, "acknowledged before the master dies");

    set.kill_master();
    let killed = Instant::now();
    // Until a replica is promoted, node B fails closed; then it serves, and
    // the revocation acknowledged before the kill holds.
    let refused = until_served(&b, Duration::from_secs(60), || planner_exchange(&b, &root)).await;
    let served = killed.elapsed();
    assert!(refused > 0, "the master's death was noticed");
    assert_eq!(readyz(&b).await, 200);
    booker_exchange(&b, &hop1).await.assert_error(400, "invalid_request");
    assert_eq!(introspect(&b, &hop2).await, json!({"active": false}));

    // Node A, not restarted, writes again once a replica follows the new master.
    let [_, other_hop1, _] = walk(&b).await;
    until_served(&a, Duration::from_secs(60), || revoke(&a, "booker", &other_hop1)).await;
    booker_exchange(&b, &other_hop1).await.assert_error(400, "invalid_request");
    for password in [crate::redis_setups::PASSWORD, crate::redis_setups::SENTINEL_PASSWORD] {
        assert!(!a.log().contains(password) && !b.log().contains(password), "a Redis password is never logged");
    }
    eprintln!("sentinel failover: {refused} exchanges answered 503, served again {served:?} after the kill");
}

#[tokio::test]
async fn a_broker_keeps_its_state_in_redis_over_tls_with_a_client_certificate() {
    use crate::redis_setups::{TlsFiles, TlsRedis, PASSWORD, USER};
    let files = TlsFiles::generate();
    let redis = TlsRedis::start(&files);
    let deployment = Deployment::new();
    let url = redis.url(USER, PASSWORD);
    let path = |name: &str| files.path(name).to_string_lossy().into_owned();
    let (ca, cert, key) = (path("ca.pem"), path("client.pem"), path("client.key"));
    let tls = [
        ("BATON_REDIS_URL", url.as_str()),
        ("BATON_REDIS_TLS_CA", &ca),
        ("BATON_REDIS_TLS_CERT", &cert),
        ("BATON_REDIS_TLS_KEY", &key),
    ];
    let a = deployment.start("node-a", &tls).await;
    let b = deployment.start("node-b", &tls).await;
    assert_eq!((readyz(&a).await, readyz(&b).await), (200, 200));
    let [_, hop1, hop2] = walk(&a).await;
    assert_eq!(revoke(&a, "booker", &hop1).await.status, 200);
    assert_eq!(introspect(&b, &hop2).await, json!({"active": false}));
    assert!(!a.log().contains(PASSWORD), "the Redis password is never logged");
}

#[tokio::test]
async fn a_broker_keeps_its_state_on_a_redis_cluster_under_its_default_prefix() {
    let cluster = crate::redis_setups::RedisCluster::start();
    let deployment = Deployment::new();
    let url = cluster.url();
    // This test cluster has no replicas: nothing to wait for.
    let settings = [("BATON_REDIS_URL", url.as_str()), ("BATON_REDIS_REPLICA_ACKS", "0")];
    let a = deployment.start("node-a", &settings).await;
    let b = deployment.start("node-b", &settings).await;
    let [_, hop1, hop2] = walk(&a).await;
    assert_eq!(revoke(&a, "booker", &hop1).await.status, 200);
    assert_eq!(introspect(&b, &hop2).await, json!({"active": false}));
    let counts = cluster.key_counts();
    assert_eq!(counts.iter().filter(|count| **count > 0).count(), 1, "one slot, one node: {counts:?}");
}
