//! The runnable examples, run as their README says, against a real broker
//! (and, for a person's chain, a real OpenID provider).

use std::fs::File;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::identity_provider::IdentityProvider;
use crate::process::{example, BrokerProcess};

/// The admin token the approver uses in these runs.
const ADMIN: &str = "examples-admin-token-8b2f4d";

/// The example broker, with the admin API on for the booking's approver.
async fn broker() -> BrokerProcess {
    BrokerProcess::start(&[("BATON_ADMIN_TOKEN_SHA256", &crate::harness::secret_hash(ADMIN))]).await
}

/// How long a run may wait for its booking to be put to a person.
const ASKED_WITHIN: Duration = Duration::from_secs(60);

/// Acts as the booker's owner: waits for the booking to be asked for, then
/// approves it through the admin API (with `admin`, the broker's admin
/// token), as `baton approvals approve` does.
async fn approve_the_booking(url: &str, admin: &str) -> String {
    let deadline = Instant::now() + ASKED_WITHIN;
    loop {
        if let Some(id) = approve_if_asked(url, admin).await {
            return id;
        }
        assert!(Instant::now() < deadline, "the booking was never put to its approver");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Approves the first pending approval, if there is one, and names it.
async fn approve_if_asked(url: &str, admin: &str) -> Option<String> {
    let client = reqwest::Client::new();
    let listed: serde_json::Value =
        client.get(format!("{url}/admin/approvals")).bearer_auth(admin).send().await.unwrap().json().await.unwrap();
    let id = listed["approvals"][0]["id"].as_str()?;
    let approved = client
        .post(format!("{url}/admin/approvals/{id}/approve"))
        .bearer_auth(admin)
        .json(&serde_json::json!({"approver": "travel-team@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status(), 200);
    Some(id.to_owned())
}

/// An example's process, its output in files, killed when dropped.
struct Run {
    child: std::process::Child,
    output: [std::path::PathBuf; 2],
}

impl Run {
    fn start(command: &mut Command, folder: &std::path::Path, name: &str) -> Run {
        let output = [folder.join(format!("{name}.out")), folder.join(format!("{name}.err"))];
        let child = command
            .stdin(Stdio::null())
            .stdout(File::create(&output[0]).unwrap())
            .stderr(File::create(&output[1]).unwrap())
            .spawn()
            .unwrap();
        Run { child, output }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.output[0]).unwrap_or_default()
    }

    fn report(&self) -> String {
        format!("{}\n--- stderr\n{}", self.stdout(), std::fs::read_to_string(&self.output[1]).unwrap_or_default())
    }

    /// Its exit, if it has stopped.
    fn stopped(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Waits for it to stop, until `deadline`.
    async fn finish(&mut self, deadline: Instant) -> std::process::ExitStatus {
        loop {
            if let Some(status) = self.stopped() {
                return status;
            }
            assert!(Instant::now() < deadline, "still running at its deadline:\n{}", self.report());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn delegation_chain_books_through_three_agents_and_prints_the_chain() {
    let broker = broker().await;
    let run = tokio::task::spawn_blocking({
        let url = broker.url.clone();
        move || Command::new(example("delegation_chain")).env("BROKER_URL", url).output().unwrap()
    });
    let id = approve_the_booking(&broker.url, ADMIN).await;
    let output = run.await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains(&format!("booker: waiting for a person to approve {id}")), "{stdout}");
    assert!(stdout.contains("airline API: booking for orchestrator by booker (chain: booker <- planner)"), "{stdout}");
    assert!(stdout.contains("API decision: 200 OK"), "{stdout}");
    assert!(stdout.contains("act chain (newest first): booker <- planner   depth 2"), "{stdout}");
}

#[tokio::test]
async fn the_walk_script_runs_against_the_broker() {
    let broker = broker().await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/three_hop_walk.sh");
    let run = tokio::task::spawn_blocking({
        let url = broker.url.clone();
        move || Command::new("bash").arg(script).env("BROKER_URL", url).output().unwrap()
    });
    let id = approve_the_booking(&broker.url, ADMIN).await;
    let output = run.await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("\"sub\": \"booker\""), "{stdout}");
    assert!(stdout.contains(&format!("approvals approve {id} --as travel-team@example.com")), "{stdout}");
    assert!(stdout.contains("\"approver\": \"travel-team@example.com\""), "{stdout}");
}

/// `examples/protected_api` on a free loopback port, stopped when dropped.
struct ProtectedApi {
    child: std::process::Child,
    url: String,
}

impl ProtectedApi {
    async fn start(broker: &str) -> ProtectedApi {
        let port = crate::process::free_port();
        let child = Command::new(example("protected_api"))
            .env("BROKER_URL", broker)
            .env("API_LISTEN", format!("127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let api = ProtectedApi { child, url: format!("http://127.0.0.1:{port}") };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return api;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the protected API did not come up");
    }
}

impl Drop for ProtectedApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn protected_api_answers_who_calls_through_whom() {
    let broker = broker().await;
    let api = ProtectedApi::start(&broker.url).await;
    let client = reqwest::Client::new();
    let token_url = format!("{}/token", broker.url);
    let token = |agent: &'static str, form: Vec<(&'static str, String)>| {
        let client = client.clone();
        let url = token_url.clone();
        async move {
            let response = client
                .post(url)
                .basic_auth(agent, Some(format!("dev-only-{agent}-secret")))
                .form(&form)
                .send()
                .await
                .unwrap();
            let body: serde_json::Value = response.json().await.unwrap();
            body["access_token"].as_str().unwrap_or_else(|| panic!("{body}")).to_owned()
        }
    };
    let exchange = |token: String, target: (&'static str, &'static str)| {
        vec![
            ("grant_type", crate::harness::EXCHANGE.to_owned()),
            ("subject_token", token),
            ("subject_token_type", crate::harness::ACCESS_TOKEN.to_owned()),
            (target.0, target.1.to_owned()),
        ]
    };
    let root = token("orchestrator", vec![("grant_type", "client_credentials".to_owned())]).await;
    let hop1 = token("planner", exchange(root, ("audience", "booker"))).await;
    let mut form = exchange(hop1, ("resource", crate::harness::AIRLINE));
    form.push(("scope", "flights.book".to_owned()));
    // The booking waits for its approver.
    let pending: serde_json::Value = client
        .post(&token_url)
        .basic_auth("booker", Some("dev-only-booker-secret"))
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(pending["error"], "authorization_pending", "{pending}");
    let id = approve_the_booking(&broker.url, ADMIN).await;
    form.push(("approval_id", id));
    let hop2 = token("booker", form).await;

    let bookings = format!("{}/bookings", api.url);
    let response = client.post(&bookings).bearer_auth(&hop2).send().await.unwrap();
    let (status, body) = (response.status().as_u16(), response.text().await.unwrap());
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"by\":\"booker\"") && body.contains("\"chain\":[\"booker\",\"planner\"]"), "{body}");
    assert_eq!(client.post(&bookings).send().await.unwrap().status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn person_chain_takes_a_sign_in_through_three_bound_hops_to_the_api() {
    let mut provider = IdentityProvider::start();
    // `policies/issuers.toml` as the README writes it, for this provider.
    let issuers = format!(
        "[[issuers]]\nissuer = \"{}\"\naudience = \"baton-demo\"\nsubject_prefix = \"idp|\"\n\
         agents = [\"orchestrator\"]\n",
        provider.issuer
    );
    let hash = crate::harness::secret_hash(ADMIN);
    let broker = BrokerProcess::start_with_policies(&[("BATON_ADMIN_TOKEN_SHA256", hash.as_str())], |policies| {
        std::fs::write(policies.join("issuers.toml"), issuers).unwrap();
    })
    .await;
    let api = ProtectedApi::start(&broker.url).await;
    let id_token = provider.sign_in("alice");
    let run = tokio::task::spawn_blocking({
        let (broker, api) = (broker.url.clone(), api.url.clone());
        move || {
            Command::new(example("person_chain"))
                .arg(id_token)
                .env("BROKER_URL", broker)
                .env("API_URL", api)
                .output()
                .unwrap()
        }
    });
    let id = approve_the_booking(&broker.url, ADMIN).await;
    let output = run.await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains(&format!("booker: waiting for a person to approve {id}")), "{stdout}");
    for agent in ["orchestrator", "planner", "booker"] {
        assert!(stdout.contains(&format!("{agent}: \"DPoP\" token for ")), "{agent}: {stdout}");
    }
    // The API saw the person and the chain, with a proof of the booker's key.
    let decision = stdout.lines().find(|line| line.starts_with("API decision: ")).unwrap_or_else(|| panic!("{stdout}"));
    let answer: serde_json::Value = serde_json::from_str(decision.trim_start_matches("API decision: 200 ")).unwrap();
    assert_eq!(answer["for"], "idp|alice", "{decision}");
    assert_eq!(answer["by"], "booker", "{decision}");
    assert_eq!(answer["chain"], serde_json::json!(["booker", "planner", "orchestrator"]), "{decision}");
    let root = format!("\"baton-demo\" for \"baton-demo\" (from identity provider \"{}\")", provider.issuer);
    assert!(stdout.contains(&root), "{stdout}");
}

#[tokio::test]
async fn mcp_agent_discovers_the_server_steps_up_for_a_booking_and_starts_a_scouts_chain() {
    let setup = crate::mcp::McpSetup::start().await;
    let mut command = Command::new(example("mcp_agent"));
    command.env("BROKER_URL", &setup.broker.url).env("MCP_URL", &setup.flights.url);
    let mut agent = Run::start(&mut command, setup.broker.folder.path(), "mcp_agent");
    // Approve the booking once asked; an agent that stops first says why.
    let asked_by = Instant::now() + ASKED_WITHIN;
    let id = loop {
        if let Some(id) = approve_if_asked(&setup.broker.url, crate::mcp::ADMIN).await {
            break id;
        }
        assert!(agent.stopped().is_none(), "the agent stopped before asking for its booking:\n{}", agent.report());
        assert!(Instant::now() < asked_by, "the booking was never put to its approver:\n{}", agent.report());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let status = agent.finish(Instant::now() + Duration::from_secs(120)).await;
    assert!(status.success(), "{}", agent.report());
    let stdout = agent.stdout();
    let mcp = &setup.flights.url;
    let metadata = mcp.replace("/mcp", "/.well-known/oauth-protected-resource/mcp");
    let booker_searched = "booker: search_flights LHR to JFK found BT101, BT205; \
                           the server saw booker acting for orchestrator (chain: booker <- planner)";
    let refused = "booker: book_flight refused: HTTP 403 insufficient_scope, \
                   the server needs \"flights.book flights.read\"";
    for line in [
        // Discovery from the 401, then least privilege first.
        format!("booker: without a token the MCP server answers 401: WWW-Authenticate: Bearer realm=\"{mcp}\""),
        format!("resource_metadata=\"{metadata}\""),
        format!("booker: its metadata (RFC 9728): resource {mcp}, authorization servers {}", setup.broker.url),
        format!("booker: got a token for {mcp} with scope \"flights.read\""),
        booker_searched.into(),
        // The scope challenge, the person, the stepped-up token.
        refused.into(),
        format!("booker: waiting for a person to approve {id}"),
        format!("booker: got a token for {mcp} with scope \"flights.book flights.read\""),
        "booker: booked BT101 for orchestrator by booker (chain: booker <- planner)".into(),
        // A chain started at the server with client credentials.
        format!("scout: got a token for {mcp} with scope \"flights.read\""),
        "scout: search_flights LHR to JFK found BT101, BT205; the server saw scout acting for scout".into(),
    ] {
        assert!(stdout.contains(&line), "{line}\n---\n{stdout}");
    }
    let log = setup.flights.log();
    assert!(log.contains("booking BT101 for orchestrator by booker <- planner"), "{log}");
    assert!(log.contains("search LHR->JFK for scout by scout"), "{log}");
}
