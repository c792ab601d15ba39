//! `baton revoke token|agent|subject` and `baton agents` against the real
//! binary serving on a real socket, with the admin API on.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use baton::clock::{Clock, SystemClock};
use serde_json::Value;

use crate::harness::{claims_of, secret_hash, ACCESS_TOKEN, EXCHANGE};

/// Long and distinctive, so that any leak into an output is found.
const ADMIN: &str = "cli-admin-test-token-7f3a9c1e5b";
const WRONG_ADMIN: &str = "cli-admin-wrong-token-2d8e4b6a0c";

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Broker {
    folder: tempfile::TempDir,
    base: String,
    listen: String,
    client: reqwest::Client,
    _server: Server,
}

/// `baton serve` in a fresh folder holding the example policies (with the
/// agents kept alive whatever the date) plus `extra_agents`, the admin API on
/// when `admin` is.
async fn start(extra_agents: &str, admin: bool) -> Broker {
    let folder = tempfile::tempdir().unwrap();
    let policies = crate::process::copy_example_policies(folder.path());
    let agents = policies.join("agents.toml");
    let text = std::fs::read_to_string(&agents).unwrap() + extra_agents;
    std::fs::write(&agents, text).unwrap();
    let port = crate::process::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut command = Command::new(env!("CARGO_BIN_EXE_baton"));
    command
        .arg("serve")
        .current_dir(folder.path())
        .env_clear()
        .env("BATON_LISTEN", &listen)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if admin {
        // From a file, as a mounted container secret is (a trailing newline
        // and all).
        let hash_file = folder.path().join("admin-token.sha256");
        std::fs::write(&hash_file, secret_hash(ADMIN) + "\n").unwrap();
        command.env("BATON_ADMIN_TOKEN_SHA256_FILE", hash_file);
    }
    let server = Server(command.spawn().unwrap());
    let base = format!("http://{listen}");
    let client = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..100 {
        if client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the broker did not come up");
    Broker { folder, base, listen, client, _server: server }
}

impl Broker {
    async fn token(&self, agent: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let secret = format!("dev-only-{agent}-secret");
        let response = self
            .client
            .post(format!("{}/token", self.base))
            .basic_auth(agent, Some(secret))
            .form(form)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// The orchestrator's own token for the planner.
    async fn root(&self) -> String {
        let (status, body) =
            self.token("orchestrator", &[("grant_type", "client_credentials"), ("audience", "planner")]).await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// `agent` exchanges `subject_token` for a token addressed to `audience`.
    async fn exchange(&self, agent: &str, subject_token: &str, audience: &str) -> (u16, Value) {
        let form = [
            ("grant_type", EXCHANGE),
            ("subject_token", subject_token),
            ("subject_token_type", ACCESS_TOKEN),
            ("audience", audience),
        ];
        self.token(agent, &form).await
    }
}

/// Runs `baton args…` in `folder` with only the given variables; every
/// output is kept in `outputs` so that the test can search them all.
fn baton(folder: &Path, args: &[&str], vars: &[(&str, &str)], outputs: &mut Vec<String>) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .current_dir(folder)
        .env_clear()
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    outputs.push(String::from_utf8_lossy(&output.stdout).into_owned());
    outputs.push(String::from_utf8_lossy(&output.stderr).into_owned());
    output
}

#[track_caller]
fn succeeded(output: &Output) -> String {
    let stdout = String::from_utf8(output.stdout.clone()).unwrap();
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

/// The table row of agent `id`, split into its columns (which hold no
/// double spaces).
fn row<'a>(table: &'a str, id: &str) -> Vec<&'a str> {
    let line = table.lines().find(|line| line.starts_with(&format!("{id} "))).unwrap_or_else(|| panic!("{table}"));
    line.split("  ").map(str::trim).filter(|cell| !cell.is_empty()).collect()
}

#[tokio::test]
async fn revoke_and_agents_from_the_command_line() {
    // An agent close to its last day that never acts, and one past it.
    let soon = SystemClock.now().date().unwrap() + time::Duration::days(7);
    let extra = format!(
        "\n[[agents]]\nid = \"reporter\"\nowner = \"ops@example.com\"\npurpose = \"Weekly reports\"\nexpires = {soon}\n\
         secret_sha256 = \"{}\"\n\n[[agents]]\nid = \"retired\"\nowner = \"ops@example.com\"\npurpose = \"Old\"\n\
         expires = 2020-01-01\nsecret_sha256 = \"{}\"\n",
        secret_hash("dev-only-reporter-secret"),
        secret_hash("dev-only-retired-secret"),
    );
    let broker = start(&extra, true).await;
    let folder = broker.folder.path();
    let url = broker.base.as_str();
    let admin = [("BATON_ADMIN_TOKEN", ADMIN)];
    let mut outputs = Vec::new();

    // Revoke by jti: the planner's token for the booker descends from it,
    // so the booker can no longer exchange it.
    let root = broker.root().await;
    let (status, hop1) = broker.exchange("planner", &root, "booker").await;
    assert_eq!(status, 200, "{hop1}");
    let hop1 = hop1["access_token"].as_str().unwrap().to_owned();
    let jti = claims_of(&root).jti.0;
    let revoked = succeeded(&baton(folder, &["revoke", "token", &jti, "--url", url], &admin, &mut outputs));
    assert!(revoked.contains(&format!("revoked token {jti}")) && revoked.contains("until 20"), "{revoked}");
    let (status, refused) = broker
        .token(
            "booker",
            &[
                ("grant_type", EXCHANGE),
                ("subject_token", &hop1),
                ("subject_token_type", ACCESS_TOKEN),
                ("resource", crate::harness::AIRLINE),
                ("scope", "flights.book"),
            ],
        )
        .await;
    assert_eq!((status, refused["error"].as_str()), (400, Some("invalid_request")), "{refused}");

    // An id the broker never issued: nothing is revoked, the command says
    // so and fails (a jti may start with `-`, base64url, and is read as one).
    for unknown in ["not-a-jti", "-dashed_jti"] {
        let refused = baton(folder, &["revoke", "token", unknown, "--url", url], &admin, &mut outputs);
        assert!(!refused.status.success(), "{unknown}");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains(&format!("no token with id `{unknown}` is known to the broker"))
                && stderr.contains("nothing was revoked")
                && !stderr.contains("admin API is off"),
            "{stderr}"
        );
    }
    // Neither is something shaped like a token whose jti cannot be read.
    let garbled = baton(folder, &["revoke", "token", "a.b.c", "--url", url], &admin, &mut outputs);
    assert!(!garbled.status.success());
    assert!(String::from_utf8_lossy(&garbled.stderr).contains("cannot read the jti"), "{garbled:?}");

    // Revoke by the whole token: its jti is read from it.
    let other = broker.root().await;
    let other_jti = claims_of(&other).jti.0;
    let revoked = succeeded(&baton(folder, &["revoke", "token", &other, "--url", url], &admin, &mut outputs));
    assert!(revoked.contains(&format!("revoked token {other_jti}")), "{revoked}");
    let (status, refused) = broker.exchange("planner", &other, "booker").await;
    assert_eq!((status, refused["error"].as_str()), (400, Some("invalid_request")), "{refused}");

    // Deprovision the booker: the token addressed to it dies.
    let fresh = broker.root().await;
    let (status, to_booker) = broker.exchange("planner", &fresh, "booker").await;
    assert_eq!(status, 200, "{to_booker}");
    let to_booker = to_booker["access_token"].as_str().unwrap().to_owned();
    let gone = succeeded(&baton(folder, &["revoke", "agent", "booker", "--url", url], &admin, &mut outputs));
    assert!(gone.contains("deprovisioned agent booker"), "{gone}");
    let (status, refused) = broker
        .token(
            "booker",
            &[
                ("grant_type", EXCHANGE),
                ("subject_token", &to_booker),
                ("subject_token_type", ACCESS_TOKEN),
                ("resource", crate::harness::AIRLINE),
            ],
        )
        .await;
    // Deprovisioned: the booker cannot even authenticate.
    assert_eq!((status, refused["error"].as_str()), (401, Some("invalid_client")), "{refused}");
    let back = succeeded(&baton(folder, &["reinstate", "agent", "booker", "--url", url], &admin, &mut outputs));
    assert!(back.contains("reinstated agent booker"), "{back}");
    let (status, still_dead) = broker
        .token(
            "booker",
            &[
                ("grant_type", EXCHANGE),
                ("subject_token", &to_booker),
                ("subject_token_type", ACCESS_TOKEN),
                ("resource", crate::harness::AIRLINE),
            ],
        )
        .await;
    assert_eq!(
        (status, still_dead["error"].as_str()),
        (400, Some("invalid_request")),
        "the cut-off holds: {still_dead}"
    );

    // Deprovision the reporter: it is listed as blocked until reinstated.
    succeeded(&baton(folder, &["revoke", "agent", "reporter", "--url", url], &admin, &mut outputs));

    // The inventory, with the URL taken from the config (`issuer` follows `listen`).
    let listed = succeeded(&baton(folder, &["agents"], &[admin[0], ("BATON_LISTEN", &broker.listen)], &mut outputs));
    assert!(listed.starts_with("ID "), "{listed}");
    let orchestrator = row(&listed, "orchestrator");
    assert_eq!(
        orchestrator[..5],
        [
            "orchestrator",
            "platform-team@example.com",
            "Takes travel requests and hands the planning to the planner",
            "9999-12-31",
            "yes"
        ],
        "{listed}"
    );
    assert!(orchestrator[5].ends_with('Z'), "last use in RFC 3339: {listed}");
    let issued: usize = orchestrator[6].parse().unwrap();
    assert!(issued >= 3, "the orchestrator obtained three tokens: {listed}");
    let planner = row(&listed, "planner");
    assert!(planner[6].parse::<usize>().unwrap() >= 2, "the planner exchanged twice: {listed}");
    assert_eq!(row(&listed, "booker")[0], "booker", "{listed}");
    assert_eq!(row(&listed, "reporter")[5], "never", "{listed}");
    assert_eq!(row(&listed, "reporter")[4], "blocked", "deprovisioned, not reinstated: {listed}");
    assert_eq!(row(&listed, "booker")[4], "yes", "deprovisioned, then reinstated: {listed}");
    assert!(listed.contains("warning: agent `reporter` is deprovisioned"), "{listed}");
    assert!(!listed.contains("warning: agent `booker` is deprovisioned"), "{listed}");
    assert_eq!(row(&listed, "retired")[4], "no", "{listed}");
    assert!(listed.contains(&format!("warning: agent `reporter` expires on {soon} (7 days left)")), "{listed}");
    assert!(listed.contains("warning: agent `reporter` was never used"), "{listed}");
    assert!(listed.contains("warning: agent `retired` expired on 2020-01-01"), "{listed}");
    assert!(!listed.contains("warning: agent `orchestrator`"), "{listed}");

    let json = succeeded(&baton(folder, &["agents", "--json", "--url", url], &admin, &mut outputs));
    let json: Value = serde_json::from_str(&json).unwrap();
    let mut ids: Vec<&str> =
        json["agents"].as_array().unwrap().iter().map(|agent| agent["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["booker", "orchestrator", "planner", "reporter", "retired", "scout"]);
    // `blocked` is the admin's block, `active` the registered life.
    for agent in json["agents"].as_array().unwrap() {
        let (id, blocked, active) = (agent["id"].as_str().unwrap(), &agent["blocked"], &agent["active"]);
        assert_eq!(blocked, &serde_json::json!(id == "reporter"), "{agent}");
        assert_eq!(active, &serde_json::json!(id != "retired"), "{agent}");
    }

    // The audit trail: the admin's revocation of the root, by its jti.
    let audit = succeeded(&baton(folder, &["audit", "--jti", &jti, "--url", url], &admin, &mut outputs));
    let revocation = audit.lines().find(|line| line.contains("admin_revoke")).unwrap_or_else(|| panic!("{audit}"));
    assert!(revocation.contains("  revoked ") && revocation.contains(&format!("jti {jti}")), "{audit}");
    // The planner's issuances since an hour ago (RFC 3339), one line each.
    let hour_ago = time::OffsetDateTime::from_unix_timestamp(SystemClock.now().0 - 3600)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let issued = succeeded(&baton(
        folder,
        &["audit", "--agent", "planner", "--decision", "issued", "--since", &hour_ago, "--url", url],
        &admin,
        &mut outputs,
    ));
    let lines: Vec<&str> = issued.lines().collect();
    assert!(lines.len() >= 2, "the planner exchanged twice: {issued}");
    for line in &lines {
        assert!(line.contains("  issued ") && line.contains("agent planner") && line.contains("target "), "{issued}");
    }
    let json = succeeded(&baton(
        folder,
        &["audit", "--agent", "planner", "--decision", "issued", "--limit", "1", "--json", "--url", url],
        &admin,
        &mut outputs,
    ));
    let json: Value = serde_json::from_str(&json).unwrap();
    let events = json["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{json}");
    assert_eq!((events[0]["agent"].as_str(), events[0]["decision"].as_str()), (Some("planner"), Some("issued")));
    let bad = baton(folder, &["audit", "--since", "yesterday", "--url", url], &admin, &mut outputs);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--since `yesterday`"), "{bad:?}");

    // A wrong admin token: refused with the broker's 401, and nothing done.
    let after = broker.root().await;
    let wrong = baton(
        folder,
        &["revoke", "token", &claims_of(&after).jti.0, "--url", url],
        &[("BATON_ADMIN_TOKEN", WRONG_ADMIN)],
        &mut outputs,
    );
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.contains("401") && stderr.contains("invalid_token"), "{stderr}");
    let (status, body) = broker.exchange("planner", &after, "booker").await;
    assert_eq!(status, 200, "{body}");
    let wrong = baton(folder, &["agents", "--url", url, "--admin-token", WRONG_ADMIN], &[], &mut outputs);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("401"));

    // The admin token from a file that `BATON_ADMIN_TOKEN_FILE` names, its
    // trailing newline trimmed; both variables set is refused, naming both.
    let token_file = folder.join("admin-token");
    std::fs::write(&token_file, format!("{ADMIN}\n")).unwrap();
    let token_file = token_file.to_str().unwrap();
    let from_file =
        succeeded(&baton(folder, &["agents", "--url", url], &[("BATON_ADMIN_TOKEN_FILE", token_file)], &mut outputs));
    assert!(from_file.starts_with("ID "), "{from_file}");
    let both =
        baton(folder, &["agents", "--url", url], &[admin[0], ("BATON_ADMIN_TOKEN_FILE", token_file)], &mut outputs);
    assert!(!both.status.success());
    let stderr = String::from_utf8_lossy(&both.stderr);
    assert!(stderr.contains("BATON_ADMIN_TOKEN and BATON_ADMIN_TOKEN_FILE"), "{stderr}");

    // No admin token at all: the error names both ways to give one.
    let missing = baton(folder, &["agents", "--url", url], &[], &mut outputs);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("--admin-token") && stderr.contains("BATON_ADMIN_TOKEN"), "{stderr}");

    // Deprovision a subject (last: it kills every token the tests get):
    // every token on its authority dies.
    let mine = broker.root().await;
    succeeded(&baton(folder, &["revoke", "subject", "orchestrator", "--url", url], &admin, &mut outputs));
    let (status, refused) = broker.exchange("planner", &mine, "booker").await;
    assert_eq!((status, refused["error"].as_str()), (400, Some("invalid_request")), "{refused}");

    // Help shows the variable but not its value.
    succeeded(&baton(folder, &["agents", "--help"], &admin, &mut outputs));

    for output in &outputs {
        assert!(!output.contains(ADMIN), "the admin token leaked: {output}");
        assert!(!output.contains(WRONG_ADMIN), "the presented token leaked: {output}");
    }
}

#[tokio::test]
async fn without_an_admin_credential_the_command_says_the_admin_api_is_off() {
    let broker = start("", false).await;
    let mut outputs = Vec::new();
    let off = baton(
        broker.folder.path(),
        &["revoke", "agent", "planner", "--url", &broker.base],
        &[("BATON_ADMIN_TOKEN", ADMIN)],
        &mut outputs,
    );
    assert!(!off.status.success());
    let stderr = String::from_utf8_lossy(&off.stderr);
    assert!(stderr.contains("404") && stderr.contains("admin_token_sha256"), "{stderr}");
    assert!(!outputs.concat().contains(ADMIN));
    // Nothing was deprovisioned.
    let root = broker.root().await;
    let (status, body) = broker.exchange("planner", &root, "booker").await;
    assert_eq!(status, 200, "{body}");
}

/// An `https://` broker URL is spoken to over TLS: the first bytes the
/// command sends are a TLS handshake record (a listener that answers none
/// stands in for the broker, so no certificate is involved).
#[test]
fn the_command_line_speaks_tls_to_an_https_url() {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let first_bytes = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut first = [0u8; 3];
        stream.read_exact(&mut first).ok().map(|()| first)
    });
    let folder = tempfile::tempdir().unwrap();
    let mut outputs = Vec::new();
    let url = format!("https://{address}");
    let output = baton(folder.path(), &["agents", "--url", &url], &[("BATON_ADMIN_TOKEN", ADMIN)], &mut outputs);
    if !first_bytes.is_finished() {
        // The command never connected: let the listener's thread end.
        let _ = std::net::TcpStream::connect(address);
    }
    let first = first_bytes.join().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // 0x16: handshake; 0x03: TLS's major version.
    assert_eq!(first.map(|bytes| [bytes[0], bytes[1]]), Some([0x16, 0x03]), "{stderr}");
    assert!(!output.status.success(), "the stand-in answered nothing");
    assert!(!stderr.contains("must start with"), "{stderr}");
    assert!(!outputs.concat().contains(ADMIN));
}
