//! The real binary on a real socket: `baton serve` with no config in a fresh
//! folder holding only the example policies, and the README's walk over HTTP.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{example_policies, json_of, ACCESS_TOKEN, AIRLINE, EXCHANGE};
use crate::process::{free_port, BrokerProcess};

async fn post(client: &reqwest::Client, url: &str, (id, secret): (&str, &str), form: &[(&str, &str)]) -> Value {
    let response = client.post(url).basic_auth(id, Some(secret)).form(form).send().await.unwrap();
    assert_eq!(response.headers()["cache-control"], "no-store");
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{status}: {body}");
    body
}

/// The README's admin token for the walk's approval step.
const ADMIN: &str = "binary-walk-admin-token-3c9d2e";

#[tokio::test]
async fn the_binary_serves_the_quick_start_walk_with_no_config() {
    // No config file: only the admin token's hash, which the walk's booking
    // approval needs (README, quick start).
    let broker = BrokerProcess::start(&[("BATON_ADMIN_TOKEN_SHA256", &crate::harness::secret_hash(ADMIN))]).await;
    let (folder, base) = (&broker.folder, broker.url.clone());
    let client = reqwest::Client::new();

    // The agents it has known are kept, so that a later removal is seen.
    let known: Vec<String> =
        serde_json::from_slice(&std::fs::read(folder.path().join("data/known-agents.json")).unwrap()).unwrap();
    assert_eq!(known, ["booker", "orchestrator", "planner", "scout"]);

    // A key was generated on first start, private to its owner.
    let key_file = std::fs::read_dir(folder.path().join("keys")).unwrap().next().unwrap().unwrap().path();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    // The state is the broker's user's alone: the folder 0700, each file in it 0600.
    let data = folder.path().join("data");
    assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
    let files: Vec<_> = std::fs::read_dir(&data).unwrap().map(|entry| entry.unwrap().path()).collect();
    assert!(files.iter().any(|file| file.ends_with("baton.redb")), "{files:?}");
    for file in files {
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600, "{}", file.display());
    }

    let metadata: Value = client
        .get(format!("{base}/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["issuer"], base);
    let token_url = metadata["token_endpoint"].as_str().unwrap().to_owned();

    let root = post(
        &client,
        &token_url,
        ("orchestrator", "dev-only-orchestrator-secret"),
        &[("grant_type", "client_credentials"), ("audience", "planner")],
    )
    .await;
    let root = root["access_token"].as_str().unwrap().to_owned();
    let hop1 = post(
        &client,
        &token_url,
        ("planner", "dev-only-planner-secret"),
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", &root),
            ("subject_token_type", ACCESS_TOKEN),
            ("audience", "booker"),
        ],
    )
    .await;
    let hop1 = hop1["access_token"].as_str().unwrap().to_owned();
    let booking = [
        ("grant_type", EXCHANGE),
        ("subject_token", &hop1),
        ("subject_token_type", ACCESS_TOKEN),
        ("resource", AIRLINE),
        ("scope", "flights.book"),
    ];
    // The booking waits for the booker's owner, who approves it.
    let pending = client
        .post(&token_url)
        .basic_auth("booker", Some("dev-only-booker-secret"))
        .form(&booking)
        .send()
        .await
        .unwrap();
    assert_eq!(pending.status(), 400);
    let pending: Value = pending.json().await.unwrap();
    assert_eq!(pending["error"], "authorization_pending", "{pending}");
    let id = pending["approval_id"].as_str().unwrap().to_owned();
    let approved = client
        .post(format!("{base}/admin/approvals/{id}/approve"))
        .bearer_auth(ADMIN)
        .json(&json!({"approver": "travel-team@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status(), 200);
    let mut repeated = booking.to_vec();
    repeated.push(("approval_id", &id));
    let hop2 = post(&client, &token_url, ("booker", "dev-only-booker-secret"), &repeated).await;
    assert_eq!(hop2["scope"], "flights.book");
    let last = json_of(hop2["access_token"].as_str().unwrap());
    assert_eq!(last["sub"], "orchestrator");
    assert_eq!(last["aud"], AIRLINE);
    assert_eq!(last["act"], json!({"sub": "booker", "act": {"sub": "planner"}}));
    assert_eq!(last["delegation"]["approval"]["id"], id.as_str());
    assert_eq!(last["delegation"]["approval"]["approver"], "travel-team@example.com");

    // The final token verifies against the served JWKS.
    let jwks: Value = client.get(format!("{base}/jwks")).send().await.unwrap().json().await.unwrap();
    let jwk = josekit::jwk::Jwk::from_map(jwks["keys"][0].as_object().unwrap().clone()).unwrap();
    let verifier = josekit::jws::ES256.verifier_from_jwk(&jwk).unwrap();
    josekit::jws::deserialize_compact(hop2["access_token"].as_str().unwrap(), &verifier).unwrap();

    // Rotation while serving: the new key signs within a reload, and the old
    // key stays published so that tokens it signed still verify.
    let rotate = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["keys", "rotate"])
        .current_dir(folder.path())
        .env_clear()
        .output()
        .unwrap();
    assert!(rotate.status.success(), "{}", String::from_utf8_lossy(&rotate.stderr));
    let old_kid = crate::harness::header_of(&root)["kid"].clone();
    let mut new_token = None;
    for _ in 0..60 {
        let fresh = post(
            &client,
            &token_url,
            ("orchestrator", "dev-only-orchestrator-secret"),
            &[("grant_type", "client_credentials")],
        )
        .await;
        let fresh = fresh["access_token"].as_str().unwrap().to_owned();
        if crate::harness::header_of(&fresh)["kid"] != old_kid {
            new_token = Some(fresh);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(new_token.is_some(), "the rotated key never started signing");
    let jwks: Value = client.get(format!("{base}/jwks")).send().await.unwrap().json().await.unwrap();
    let kids: Vec<&Value> = jwks["keys"].as_array().unwrap().iter().map(|key| &key["kid"]).collect();
    assert_eq!(kids.len(), 2);
    assert!(kids.contains(&&old_kid), "the retired key left the JWKS too early");
}

#[test]
fn a_bad_config_is_refused_at_start_naming_the_key() {
    let folder = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_baton"))
        .arg("serve")
        .current_dir(folder.path())
        .env_clear()
        .env("BATON_MAX_DEPHT", "3")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("max_depht"), "{stderr}");

    std::fs::write(folder.path().join("baton.toml"), "max_token_ttl = -5\n").unwrap();
    let output =
        Command::new(env!("CARGO_BIN_EXE_baton")).arg("serve").current_dir(folder.path()).env_clear().output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("max_token_ttl"));
}

#[test]
fn keys_generate_rotate_list_from_the_command_line() {
    let folder = tempfile::tempdir().unwrap();
    let baton = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(args)
            .current_dir(folder.path())
            .env_clear()
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    baton(&["keys", "generate"]);
    baton(&["keys", "rotate"]);
    let listing = baton(&["keys", "list"]);
    assert_eq!(listing.lines().count(), 2, "{listing}");
    assert!(listing.contains("current") && listing.contains("published until"), "{listing}");
}

#[tokio::test]
async fn token_decode_prints_the_chain_as_a_tree() {
    let harness = crate::harness::Harness::new();
    let [_, _, last] = harness.walk().await;
    let output =
        Command::new(env!("CARGO_BIN_EXE_baton")).args(["token", "decode", &last]).env_clear().output().unwrap();
    assert!(output.status.success());
    let tree = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = tree.lines().collect();
    assert!(lines[0].starts_with("subject orchestrator"), "{tree}");
    assert!(lines[1].starts_with("orchestrator obtained a token for planner"), "{tree}");
    assert!(lines[2].starts_with("└─ planner exchanged for a token for booker"), "{tree}");
    assert!(lines[3].starts_with("   └─ booker exchanged for a token for https://api.airline.example"), "{tree}");
    assert!(tree.contains("act chain (newest first): booker <- planner"), "{tree}");
    assert!(tree.contains("not checked"), "the output must say the signature was not verified: {tree}");

    let json = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["token", "decode", "--json", &last])
        .env_clear()
        .output()
        .unwrap();
    let claims: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(claims["act"], json!({"sub": "booker", "act": {"sub": "planner"}}));

    let garbage =
        Command::new(env!("CARGO_BIN_EXE_baton")).args(["token", "decode", "nope"]).env_clear().output().unwrap();
    assert!(!garbage.status.success());
}

#[test]
fn policy_check_validates_the_example_folder() {
    let output = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["policy", "check"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_clear()
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout} {}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("4 agents, 3 resources, 8 rules"), "{stdout}");
    assert!(stdout.contains("policies: valid"), "{stdout}");

    let broken = tempfile::tempdir().unwrap();
    std::fs::create_dir(broken.path().join("policies")).unwrap();
    std::fs::write(
        broken.path().join("policies/agents.toml"),
        "[[agents]]\nid = 'x'\nowner = 'o'\npurpose = 'p'\nexpires = 2030-01-01\nsecret_sha256 = '00'\nownr = 'typo'\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["policy", "check"])
        .current_dir(broken.path())
        .env_clear()
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("ownr"));
}

#[test]
fn a_broken_policy_folder_stops_the_broker_at_start() {
    let folder = tempfile::tempdir().unwrap();
    let policies = folder.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    for name in ["agents.toml", "resources.toml"] {
        std::fs::copy(example_policies().join(name), policies.join(name)).unwrap();
    }
    std::fs::write(policies.join("rules.cedar"), "permit (principal, action, resource) when { principal.rank > 1 };")
        .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_baton"))
        .arg("serve")
        .current_dir(folder.path())
        .env_clear()
        .env("BATON_LISTEN", format!("127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    assert!(!output.status.success(), "the broker started on a policy that does not load");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("policy") && stderr.contains("schema"), "{stderr}");
    // Refused before any key was generated: nothing to find or mistake later.
    let keys = folder.path().join("keys");
    let written: Vec<_> =
        std::fs::read_dir(&keys).map(|dir| dir.flatten().map(|entry| entry.path()).collect()).unwrap_or_default();
    assert!(written.is_empty(), "a refused start wrote keys: {written:?}");
}

/// A host name in `listen` is resolved when the broker binds: `localhost`
/// binds the loopback address, and the default issuer keeps the name.
#[tokio::test]
async fn listen_takes_a_host_name() {
    let port = free_port();
    let listen = format!("localhost:{port}");
    let broker = BrokerProcess::start_on(port, &[("BATON_LISTEN", &listen)], |_| {}).await;
    let url = format!("{}/.well-known/oauth-authorization-server", broker.url);
    let metadata: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    assert_eq!(metadata["issuer"], format!("http://{listen}"));
}

#[tokio::test]
async fn token_trace_verifies_and_shows_statuses_and_descendants() {
    let admin_hash = crate::harness::secret_hash("trace-admin");
    let broker = BrokerProcess::start(&[("BATON_ADMIN_TOKEN_SHA256", admin_hash.as_str())]).await;
    let client = reqwest::Client::new();
    let token_url = format!("{}/token", broker.url);
    let root = post(
        &client,
        &token_url,
        ("orchestrator", "dev-only-orchestrator-secret"),
        &[("grant_type", "client_credentials")],
    )
    .await;
    let root = root["access_token"].as_str().unwrap().to_owned();
    let hop1 = post(
        &client,
        &token_url,
        ("planner", "dev-only-planner-secret"),
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", &root),
            ("subject_token_type", ACCESS_TOKEN),
            ("audience", "booker"),
        ],
    )
    .await;
    let hop1 = hop1["access_token"].as_str().unwrap().to_owned();
    let trace = |token: &str, admin: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_baton"));
        command.args(["token", "trace", "--url", &broker.url, token]).current_dir(broker.folder.path()).env_clear();
        if let Some(admin) = admin {
            command.env("BATON_ADMIN_TOKEN", admin);
        }
        command.output().unwrap()
    };

    let plain = trace(&hop1, None);
    let text = String::from_utf8_lossy(&plain.stdout);
    assert!(plain.status.success(), "{text}{}", String::from_utf8_lossy(&plain.stderr));
    assert!(text.starts_with("verified: signed by key"), "{text}");
    assert!(text.contains("orchestrator (owner platform-team@example.com;"), "{text}");
    assert!(text.contains("└─ planner (owner travel-team@example.com;"), "{text}");
    assert!(text.contains("need the admin API"), "{text}");

    let full = trace(&root, Some("trace-admin"));
    let text = String::from_utf8_lossy(&full.stdout);
    assert!(full.status.success(), "{text}{}", String::from_utf8_lossy(&full.stderr));
    assert!(text.contains("[active]") && text.contains("└─ planner"), "descendants with statuses: {text}");
    assert!(!text.contains("trace-admin"));

    // A forged token does not trace: it is verified first.
    let mut forged = hop1.clone();
    forged.replace_range(forged.len() - 4.., "AAAA");
    let refused = trace(&forged, None);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("does not verify"));
}
