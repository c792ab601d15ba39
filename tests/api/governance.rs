//! Policy as code and agent lifecycle through the router: the explain dry
//! run, policy swaps, the agents' warnings and the metrics.

use axum::body::Body;
use axum::http::{header, Request};
use baton::clock::Clock;
use serde_json::{json, Value};

use crate::harness::{example_policies, policy_folder, secret_hash, Harness, Response, ADMIN_TOKEN, AIRLINE, CALENDAR};

async fn admin(harness: &Harness, method: &str, path: &str, body: Option<Value>) -> Response {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json");
    harness.send(request.body(body.map_or_else(Body::empty, |body| Body::from(body.to_string()))).unwrap()).await
}

/// The raw text of `GET /metrics`.
async fn metrics(harness: &Harness) -> String {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let response = harness.router.clone().oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("application/openmetrics-text"));
    String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

/// The value of the one series `name{labels}`, 0 when absent.
fn series(text: &str, name_and_labels: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name_and_labels).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(0)
}

#[tokio::test]
async fn explain_names_the_permit_and_the_forbid_and_issues_nothing() {
    let harness = Harness::new();
    let before = harness.events().await.len();
    let question = json!({
        "action": "exchange", "agent": "booker", "subject": "orchestrator", "target": AIRLINE,
        "scopes": ["flights.book"], "parent_scopes": ["flights.read", "flights.book"],
    });
    let response = admin(&harness, "POST", "/admin/policy/explain", Some(question)).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let outcome = &response.body["outcome"];
    assert_eq!(outcome["result"], "refused");
    assert_eq!(outcome["refusal"], "not_permitted");
    assert_eq!(outcome["scope"], "flights.book");
    assert_eq!(outcome["error"], "invalid_scope");
    let scopes = response.body["scopes"].as_array().unwrap();
    let book = scopes.iter().find(|scope| scope["scope"] == "flights.book").unwrap();
    assert_eq!(book["allowed"], false);
    assert_eq!(book["asked"], true);
    assert_eq!(book["permitted_by"], json!(["travel.cedar#booker-to-airline"]));
    assert_eq!(book["forbidden_by"], json!(["travel.cedar#bookings-go-through-the-planner"]));

    // Through the planner, the same request is granted.
    let through = json!({
        "action": "exchange", "agent": "booker", "subject": "orchestrator", "target": AIRLINE,
        "scopes": ["flights.book"], "parent_scopes": ["flights.read", "flights.book"], "chain": ["planner"],
    });
    let response = admin(&harness, "POST", "/admin/policy/explain", Some(through)).await;
    assert_eq!(response.body["outcome"]["result"], "granted", "{}", response.body);
    assert_eq!(response.body["outcome"]["scopes"], json!(["flights.book"]));
    assert_eq!(response.body["outcome"]["rules"], json!(["travel.cedar#booker-to-airline"]));

    // A dry run writes nothing: no audit event, no token counted.
    assert_eq!(harness.events().await.len(), before);
    assert_eq!(series(&metrics(&harness).await, "baton_tokens_issued_total{grant_type=\"token_exchange\"}"), 0);
}

#[tokio::test]
async fn explain_is_an_admin_endpoint_that_names_a_misspelt_field() {
    let harness = Harness::new();
    let question = json!({"action": "issue", "agent": "orchestrator"});
    let anonymous = harness
        .send(
            Request::post("/admin/policy/explain")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(question.to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(anonymous.status, 401);
    let misspelt = admin(
        &harness,
        "POST",
        "/admin/policy/explain",
        Some(json!({"action": "issue", "agent": "orchestrator", "parent_scope": []})),
    )
    .await;
    assert_eq!(misspelt.status, 400);
    assert_eq!(misspelt.body["error"], "invalid_request");
    assert!(misspelt.body["error_description"].as_str().unwrap().contains("parent_scope"), "{}", misspelt.body);
    let incomplete =
        admin(&harness, "POST", "/admin/policy/explain", Some(json!({"action": "exchange", "agent": "planner"}))).await;
    assert_eq!(incomplete.status, 400);
    assert!(incomplete.body["error_description"].as_str().unwrap().contains("subject"), "{}", incomplete.body);
}

#[tokio::test]
async fn a_swapped_policy_decides_the_next_request_and_a_broken_one_is_refused() {
    let harness = Harness::new();
    let [_, hop1, _] = harness.walk().await;
    let calendar = || harness.exchange("booker", &hop1, &[("resource", CALENDAR), ("scope", "calendar.read")]);
    calendar().await.assert_error(400, "invalid_target");

    // A copy of the example with one more rule: the booker may read the calendar.
    let folder = tempfile::tempdir().unwrap();
    for name in ["agents.toml", "resources.toml", "travel.cedar"] {
        std::fs::copy(example_policies().join(name), folder.path().join(name)).unwrap();
    }
    std::fs::write(
        folder.path().join("calendar.cedar"),
        "@id(\"booker-reads-the-calendar\")\npermit (principal == Agent::\"booker\", action == Action::\"exchange\", \
         resource == Scope::\"calendar.read\") when { context.target == \"https://api.calendar.example\" };\n",
    )
    .unwrap();
    harness.broker.reload_policy(folder.path()).unwrap();
    let granted = calendar().await;
    assert_eq!(granted.status, 200, "{}", granted.body);
    assert_eq!(granted.body["scope"], "calendar.read");

    // A broken folder is refused whole; the policy in force keeps deciding.
    std::fs::write(folder.path().join("calendar.cedar"), "permit (principal, action, resource").unwrap();
    assert!(harness.broker.reload_policy(folder.path()).is_err());
    assert_eq!(calendar().await.status, 200);
    let text = metrics(&harness).await;
    assert_eq!(series(&text, "baton_policy_reloads_total{outcome=\"ok\"}"), 1, "{text}");
    assert_eq!(series(&text, "baton_policy_reloads_total{outcome=\"failed\"}"), 1, "{text}");
}

#[tokio::test]
async fn metrics_count_issued_refused_and_revoked_tokens_by_bounded_labels() {
    let harness = Harness::new();
    let [root, hop1, _] = harness.walk().await;
    harness
        .exchange("planner", &root, &[("audience", "booker"), ("scope", "calendar.write")])
        .await
        .assert_error(400, "invalid_scope");
    harness
        .token(Some(("booker", "wrong")), &[("grant_type", "client_credentials")])
        .await
        .assert_error(401, "invalid_client");
    harness.token(None, &[("grant_type", "urn:example:made-up")]).await.assert_error(400, "unsupported_grant_type");
    let jti = crate::harness::claims_of(&hop1).jti.0;
    assert_eq!(admin(&harness, "POST", "/admin/revoke", Some(json!({"jti": jti}))).await.status, 200);
    assert_eq!(admin(&harness, "POST", "/admin/deprovision", Some(json!({"subject": "someone"}))).await.status, 200);

    let text = metrics(&harness).await;
    assert_eq!(series(&text, "baton_tokens_issued_total{grant_type=\"client_credentials\"}"), 1, "{text}");
    assert_eq!(series(&text, "baton_tokens_issued_total{grant_type=\"token_exchange\"}"), 2, "{text}");
    let refused = "baton_token_requests_refused_total";
    assert_eq!(
        series(
            &text,
            &format!("{refused}{{grant_type=\"token_exchange\",error=\"invalid_scope\",reason=\"not_permitted\"}}")
        ),
        1,
        "{text}"
    );
    assert_eq!(
        series(
            &text,
            &format!("{refused}{{grant_type=\"client_credentials\",error=\"invalid_client\",reason=\"client_wrong_secret\"}}")
        ),
        1,
        "{text}"
    );
    assert_eq!(
        series(
            &text,
            &format!(
                "{refused}{{grant_type=\"other\",error=\"unsupported_grant_type\",reason=\"unsupported_grant_type\"}}"
            )
        ),
        1,
        "{text}"
    );
    assert_eq!(series(&text, "baton_tokens_revoked_total{via=\"admin\"}"), 1, "{text}");
    assert_eq!(series(&text, "baton_principals_deprovisioned_total{kind=\"subject\",cause=\"admin\"}"), 1, "{text}");
    // Nothing the client sent becomes a label.
    assert!(!text.contains("made-up") && !text.contains("booker") && !text.contains("someone"), "{text}");
}

#[tokio::test]
async fn the_agents_list_carries_warnings_for_unused_expiring_and_expired_agents() {
    let secret = secret_hash("s");
    let agent = |id: &str, expires: &str| {
        format!("[[agents]]\nid='{id}'\nowner='o'\npurpose='p'\nexpires={expires}\nsecret_sha256='{secret}'\n")
    };
    let agents = agent("busy", "2030-01-01") + &agent("idle", "2030-01-01") + &agent("soon", "2026-12-10");
    let resources = "[[resources]]\nuri='https://api.example'\nname='API'\nscopes=['read']\nttl=300\n";
    let policies = policy_folder(&agents, resources, "permit (principal, action, resource);");
    let harness = Harness::with(crate::harness::Options { policies: policies.path().to_owned(), ..Default::default() });
    let issue = |id: &'static str| {
        harness.token(Some((id, "s")), &[("grant_type", "client_credentials"), ("resource", "https://api.example")])
    };
    assert_eq!(issue("busy").await.status, 200);

    let warnings = |body: &Value, id: &str| -> Vec<Value> {
        let agents = body["agents"].as_array().unwrap();
        agents.iter().find(|agent| agent["id"] == id).unwrap()["warnings"].as_array().unwrap().clone()
    };
    let list = admin(&harness, "GET", "/admin/agents", None).await;
    assert_eq!(list.status, 200);
    assert_eq!(warnings(&list.body, "busy"), Vec::<Value>::new());
    assert_eq!(warnings(&list.body, "idle"), [json!({"kind": "never_used"})]);
    assert_eq!(
        warnings(&list.body, "soon"),
        [json!({"kind": "expires_soon", "expires": "2026-12-10", "days_left": 9}), json!({"kind": "never_used"})]
    );

    // Thirty days on: the busy agent is idle, the one that was expiring is
    // expired, and the background retirement has it dead in the store.
    harness.clock.advance(30 * 86_400);
    let list = admin(&harness, "GET", "/admin/agents", None).await;
    let busy = warnings(&list.body, "busy");
    assert_eq!(busy.len(), 1, "{busy:?}");
    assert_eq!((busy[0]["kind"].as_str(), busy[0]["days"].as_i64()), (Some("idle"), Some(30)));
    assert_eq!(warnings(&list.body, "soon"), [json!({"kind": "expired", "expires": "2026-12-10"})]);
    assert_eq!(harness.broker.retire_expired_agents().await.unwrap(), ["soon"]);
    issue("soon").await.assert_error(401, "invalid_client");
}

/// A policy folder of agents that all expire on 2030-01-01, with the secret
/// `s`, and one API whose `read` scope everyone may have.
fn agents_folder(ids: &[&str]) -> tempfile::TempDir {
    let secret = secret_hash("s");
    let agents: String = ids
        .iter()
        .map(|id| {
            format!("[[agents]]\nid='{id}'\nowner='o'\npurpose='p'\nexpires=2030-01-01\nsecret_sha256='{secret}'\n")
        })
        .collect();
    let resources = "[[resources]]\nuri='https://api.example'\nname='API'\nscopes=['read']\nttl=300\n";
    policy_folder(&agents, resources, "permit (principal, action, resource);")
}

/// The agent `id` of `GET /admin/agents`.
async fn agent_report(harness: &Harness, id: &str) -> Value {
    let list = admin(harness, "GET", "/admin/agents", None).await;
    assert_eq!(list.status, 200, "{}", list.body);
    list.body["agents"].as_array().unwrap().iter().find(|agent| agent["id"] == id).unwrap().clone()
}

#[tokio::test]
async fn an_admins_action_on_an_agent_is_not_its_use() {
    let policies = agents_folder(&["worker"]);
    let harness = Harness::with(crate::harness::Options { policies: policies.path().to_owned(), ..Default::default() });
    let client = &harness;
    let ask = |scope: &'static str| async move {
        let form = [("grant_type", "client_credentials"), ("resource", "https://api.example"), ("scope", scope)];
        client.token(Some(("worker", "s")), &form).await
    };
    assert_eq!(ask("read").await.status, 200);
    let used_at = harness.clock.now().0;

    // A month on, an admin deprovisions and reinstates it: both events name
    // the agent, and neither is the agent asking for anything.
    harness.clock.advance(31 * 86_400);
    assert_eq!(admin(&harness, "POST", "/admin/deprovision", Some(json!({"agent": "worker"}))).await.status, 200);
    harness.clock.advance(1);
    assert_eq!(admin(&harness, "POST", "/admin/reinstate", Some(json!({"agent": "worker"}))).await.status, 200);
    let report = agent_report(&harness, "worker").await;
    assert_eq!(report["last_use"], json!(used_at), "{report}");
    assert_eq!(report["warnings"], json!([{"kind": "idle", "last_use": used_at, "days": 31}]), "{report}");

    // A refused request is the agent's own use all the same.
    ask("write").await.assert_error(400, "invalid_scope");
    let report = agent_report(&harness, "worker").await;
    assert_eq!(report["last_use"], json!(harness.clock.now().0), "{report}");
    assert_eq!(report["warnings"], json!([]), "{report}");
}

#[tokio::test]
async fn tokens_issued_in_the_last_day_are_counted_past_the_query_cap() {
    use baton::store::{AuditEvent, AuditFilter, AuditStore};
    let policies = agents_folder(&["busy"]);
    let harness = Harness::with(crate::harness::Options { policies: policies.path().to_owned(), ..Default::default() });
    let now = harness.clock.now().0;
    let event = |seconds_ago: i64, decision: &str| -> AuditEvent {
        serde_json::from_value(json!({
            "time": now - seconds_ago, "decision": decision, "action": "client_credentials", "agent": "busy",
        }))
        .unwrap()
    };
    // More issued tokens in the day than one query returns, older ones, and
    // newer refusals that a capped query would have read first.
    let issued_in_day = AuditFilter::MAX_LIMIT + 50;
    let mut events: Vec<AuditEvent> = (0..issued_in_day).map(|n| event(60 + n as i64 % 80_000, "issued")).collect();
    events.extend((0..20).map(|_| event(2 * 86_400, "issued")));
    events.extend((0..30).map(|_| event(1, "refused")));
    // Recorded concurrently: the embedded store commits them in groups.
    let mut writes = tokio::task::JoinSet::new();
    for event in events {
        let store = harness.store.clone();
        writes.spawn(async move { store.record(event).await.unwrap() });
    }
    writes.join_all().await;

    let report = agent_report(&harness, "busy").await;
    assert_eq!(report["tokens_issued_last_day"], json!(issued_in_day), "{report}");
    assert_eq!(report["last_use"], json!(now - 1), "{report}");
}

#[tokio::test]
async fn an_expired_agent_is_retired_once_across_restarts_and_again_past_a_new_expiry() {
    use baton::store::{AuditFilter, AuditStore};
    let secret = secret_hash("s");
    let folder = |expires: &str| {
        let agents =
            format!("[[agents]]\nid='soon'\nowner='o'\npurpose='p'\nexpires={expires}\nsecret_sha256='{secret}'\n");
        let resources = "[[resources]]\nuri='https://api.example'\nname='API'\nscopes=['read']\nttl=300\n";
        policy_folder(&agents, resources, "permit (principal, action, resource);")
    };
    let expiring = folder("2026-12-10");
    let harness = Harness::with(crate::harness::Options { policies: expiring.path().to_owned(), ..Default::default() });
    let expired_events = || async {
        let filter = AuditFilter { agent: Some("soon".into()), action: Some("expired".into()), ..Default::default() };
        harness.store.query(&filter).await.unwrap().len()
    };
    assert!(harness.broker.retire_expired_agents().await.unwrap().is_empty(), "not expired yet");

    harness.clock.advance(10 * 86_400);
    assert_eq!(harness.broker.retire_expired_agents().await.unwrap(), ["soon"]);
    assert!(harness.broker.retire_expired_agents().await.unwrap().is_empty());
    // Restarted on the same store and data folder: nothing written again.
    let restarted = harness.restarted_with(expiring.path());
    assert!(restarted.broker.retire_expired_agents().await.unwrap().is_empty());
    assert_eq!(
        series(&metrics(&restarted).await, "baton_principals_deprovisioned_total{kind=\"agent\",cause=\"expired\"}"),
        0
    );
    assert_eq!(expired_events().await, 1);

    // Its life extended, then over again: retired once more.
    let extended = folder("2027-01-31");
    let renewed = harness.restarted_with(extended.path());
    assert!(renewed.broker.retire_expired_agents().await.unwrap().is_empty(), "active again");
    harness.clock.advance(60 * 86_400);
    assert_eq!(renewed.broker.retire_expired_agents().await.unwrap(), ["soon"]);
    assert!(renewed.broker.retire_expired_agents().await.unwrap().is_empty());
    assert_eq!(expired_events().await, 2);
}
