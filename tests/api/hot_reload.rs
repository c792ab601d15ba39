//! Policy hot reload in the real binary: a changed folder is swapped in, a
//! broken one is refused while the old policy serves, `SIGHUP` reloads, an
//! agent removed from the inventory is deprovisioned at the reload, and one
//! past its expiry is deprovisioned by the broker's own loop.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{ACCESS_TOKEN, CALENDAR, EXCHANGE};
use crate::process::BrokerProcess;

/// Long enough for the debounce and a load on a busy machine; polled, so a
/// passing run takes only as long as the reload.
const RELOAD_BOUND: Duration = Duration::from_secs(15);

async fn eventually<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + RELOAD_BOUND;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within {RELOAD_BOUND:?}");
}

async fn token(broker: &BrokerProcess, agent: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/token", broker.url))
        .basic_auth(agent, Some(format!("dev-only-{agent}-secret")))
        .form(form)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn exchange(broker: &BrokerProcess, agent: &str, subject_token: &str, extra: &[(&str, &str)]) -> (u16, Value) {
    let mut form =
        vec![("grant_type", EXCHANGE), ("subject_token", subject_token), ("subject_token_type", ACCESS_TOKEN)];
    form.extend_from_slice(extra);
    token(broker, agent, &form).await
}

/// The value of the series `name{labels}` in `GET /metrics`, 0 when absent.
async fn metric(broker: &BrokerProcess, series: &str) -> u64 {
    let text = reqwest::get(format!("{}/metrics", broker.url)).await.unwrap().text().await.unwrap();
    text.lines().find_map(|line| line.strip_prefix(series).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0)
}

const RELOADED: &str = "baton_policy_reloads_total{outcome=\"ok\"}";
const REFUSED: &str = "baton_policy_reloads_total{outcome=\"failed\"}";

#[tokio::test]
async fn a_changed_folder_is_swapped_in_and_a_broken_one_leaves_the_old_policy_serving() {
    let broker = BrokerProcess::start(&[]).await;
    let policies = broker.folder.path().join("policies");
    let (status, root) =
        token(&broker, "orchestrator", &[("grant_type", "client_credentials"), ("audience", "planner")]).await;
    assert_eq!(status, 200, "{root}");
    let (status, hop1) =
        exchange(&broker, "planner", root["access_token"].as_str().unwrap(), &[("audience", "booker")]).await;
    assert_eq!(status, 200, "{hop1}");
    let hop1 = hop1["access_token"].as_str().unwrap().to_owned();
    let calendar = || exchange(&broker, "booker", &hop1, &[("resource", CALENDAR), ("scope", "calendar.read")]);
    let (status, refused) = calendar().await;
    assert_eq!((status, refused["error"].as_str()), (400, Some("invalid_target")));

    // A new rule file: the booker may now read the calendar.
    std::fs::write(
        policies.join("calendar.cedar"),
        "@id(\"booker-reads-the-calendar\")\npermit (principal == Agent::\"booker\", action == Action::\"exchange\", \
         resource == Scope::\"calendar.read\") when { context.target == \"https://api.calendar.example\" };\n",
    )
    .unwrap();
    eventually("the new rule", || async { calendar().await.0 == 200 }).await;
    assert!(metric(&broker, RELOADED).await >= 1);

    // A broken file: refused whole, and the policy in force keeps deciding.
    std::fs::write(policies.join("broken.cedar"), "permit (principal, action, resource").unwrap();
    eventually("the refusal", || async { metric(&broker, REFUSED).await >= 1 }).await;
    let (status, granted) = calendar().await;
    assert_eq!(status, 200, "the old policy must keep serving: {granted}");
    assert_eq!(granted["scope"], "calendar.read");

    // Fixed, and with the rule gone again: the folder as it now stands decides.
    std::fs::remove_file(policies.join("broken.cedar")).unwrap();
    std::fs::remove_file(policies.join("calendar.cedar")).unwrap();
    eventually("the rule's removal", || async { calendar().await.0 == 400 }).await;
}

#[tokio::test]
async fn sighup_reloads_once_and_reading_the_folder_triggers_nothing() {
    let broker = BrokerProcess::start(&[]).await;
    // Nothing changed: no reload, however long one waits for a spurious one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(metric(&broker, RELOADED).await, 0);

    let hangup = std::process::Command::new("kill").args(["-HUP", &broker.pid().to_string()]).status().unwrap();
    assert!(hangup.success());
    eventually("the SIGHUP reload", || async { metric(&broker, RELOADED).await == 1 }).await;
    // The reload read the folder; that reading is no change to reload for.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(metric(&broker, RELOADED).await, 1);
    assert_eq!(metric(&broker, REFUSED).await, 0);
    let health = reqwest::get(format!("{}/healthz", broker.url)).await.unwrap();
    assert!(health.status().is_success(), "the broker survives SIGHUP");
}

#[tokio::test]
async fn an_agent_removed_while_serving_is_deprovisioned_at_the_reload() {
    let broker = BrokerProcess::start(&[]).await;
    let agents = broker.folder.path().join("policies/agents.toml");
    let (status, own) =
        token(&broker, "booker", &[("grant_type", "client_credentials"), ("audience", "planner")]).await;
    // The booker has no rule for its own token: a policy refusal, not a client one.
    assert_eq!((status, own["error"].as_str()), (400, Some("invalid_target")), "{own}");

    let text = std::fs::read_to_string(&agents).unwrap();
    let start = text.find("[[agents]]\nid = \"booker\"").unwrap();
    let end = text[start + 1..].find("[[agents]]").map_or(text.len(), |next| start + 1 + next);
    std::fs::write(&agents, format!("{}{}", &text[..start], &text[end..])).unwrap();
    let removed = "baton_principals_deprovisioned_total{kind=\"agent\",cause=\"removed\"}";
    eventually("the booker's deprovisioning", || async { metric(&broker, removed).await == 1 }).await;
    let (status, gone) = token(&broker, "booker", &[("grant_type", "client_credentials")]).await;
    assert_eq!((status, gone["error"].as_str()), (401, Some("invalid_client")));
    // The inventory file is written right after the deprovisioning is counted.
    let known_path = broker.folder.path().join("data/known-agents.json");
    let known = || serde_json::from_slice::<Vec<String>>(&std::fs::read(&known_path).unwrap()).unwrap();
    eventually("the inventory file's update", || async { !known().contains(&"booker".to_owned()) }).await;
    let known = known();
    assert!(!known.contains(&"booker".to_owned()), "deprovisioned once, then forgotten: {known:?}");

    // Put back, it stays blocked until reinstated (as at a restart).
    std::fs::write(&agents, &text).unwrap();
    eventually("the reload that puts it back", || async { metric(&broker, RELOADED).await >= 2 }).await;
    let (status, _) = token(&broker, "booker", &[("grant_type", "client_credentials")]).await;
    assert_eq!(status, 401);
    assert_eq!(metric(&broker, removed).await, 1, "a reload does not deprovision it again");
}

#[tokio::test]
async fn an_agent_past_its_expiry_at_start_is_deprovisioned_without_anyone_acting() {
    let broker = BrokerProcess::start_with_policies(&[], |policies| {
        let path = policies.join("agents.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let start = text.find("id = \"booker\"").unwrap();
        let expires = start + text[start..].find("expires = 9999-12-31").unwrap();
        let text =
            format!("{}expires = 2020-01-01{}", &text[..expires], &text[expires + "expires = 9999-12-31".len()..]);
        std::fs::write(&path, text).unwrap();
    })
    .await;
    let expired = "baton_principals_deprovisioned_total{kind=\"agent\",cause=\"expired\"}";
    eventually("the booker's retirement", || async { metric(&broker, expired).await == 1 }).await;
    let (status, refused) = token(&broker, "booker", &[("grant_type", "client_credentials")]).await;
    assert_eq!((status, refused["error"].as_str()), (401, Some("invalid_client")), "{refused}");
    let retired: Value =
        serde_json::from_slice(&std::fs::read(broker.folder.path().join("data/retired-agents.json")).unwrap()).unwrap();
    assert_eq!(retired, serde_json::json!({"booker": "2020-01-01"}));
}
