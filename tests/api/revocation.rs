//! Revocation that cascades (DESIGN.md §2.4): through `/revoke`, the admin
//! API and the inventory, seen by introspection and by further exchange.

use axum::body::Body;
use axum::http::{header, Request};
use serde_json::{json, Value};

use crate::harness::*;

/// Agents a → b → c → d, each passing everything on, and an API the last
/// one calls, which introspects.
fn four_agents() -> tempfile::TempDir {
    let secret = secret_hash("s");
    let agents: String = ["a", "b", "c", "d"]
        .iter()
        .map(|id| {
            format!("[[agents]]\nid='{id}'\nowner='o'\npurpose='p'\nexpires=2030-01-01\nsecret_sha256='{secret}'\n")
        })
        .collect();
    let resources = format!(
        "[[resources]]\nuri='https://api.example'\nname='API'\nscopes=['read']\nttl=300\nclient_id='api'\nsecret_sha256='{}'\n",
        secret_hash("api-secret")
    );
    policy_folder(&agents, &resources, "permit (principal, action, resource);")
}

struct Chain {
    harness: Harness,
    /// hop 1 (a's own token, for b) … hop 4 (d's, for the API).
    hops: Vec<String>,
    _policies: tempfile::TempDir,
}

async fn four_hops() -> Chain {
    let policies = four_agents();
    let harness = Harness::with(Options { policies: policies.path().to_owned(), ..Options::default() });
    let root = harness.token(Some(("a", "s")), &[("grant_type", "client_credentials"), ("audience", "b")]).await;
    let mut hops = vec![root.token().to_owned()];
    for (holder, next) in [("b", "c"), ("c", "d"), ("d", "https://api.example")] {
        let child = exchange(&harness, holder, hops.last().unwrap(), next).await;
        assert_eq!(child.status, 200, "{holder}: {}", child.body);
        hops.push(child.token().to_owned());
    }
    Chain { harness, hops, _policies: policies }
}

async fn exchange(harness: &Harness, holder: &str, token: &str, audience: &str) -> Response {
    harness
        .token(
            Some((holder, "s")),
            &[
                ("grant_type", EXCHANGE),
                ("subject_token", token),
                ("subject_token_type", ACCESS_TOKEN),
                ("audience", audience),
            ],
        )
        .await
}

async fn form(harness: &Harness, path: &str, basic: (&str, &str), form: &[(&str, &str)]) -> Response {
    harness
        .send(
            Request::post(path)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::AUTHORIZATION, basic_header(basic.0, basic.1))
                .body(Body::from(form_body(form)))
                .unwrap(),
        )
        .await
}

async fn introspect(harness: &Harness, token: &str) -> Value {
    let response = form(harness, "/introspect", ("api", "api-secret"), &[("token", token)]).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.headers["cache-control"], "no-store");
    response.body
}

pub(crate) async fn admin(harness: &Harness, method: &str, path: &str, body: Option<Value>) -> Response {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json");
    harness.send(request.body(body.map_or_else(Body::empty, |body| Body::from(body.to_string()))).unwrap()).await
}

#[tokio::test]
async fn introspection_shows_the_chain_to_the_api_it_is_addressed_to() {
    let chain = four_hops().await;
    let active = introspect(&chain.harness, &chain.hops[3]).await;
    assert_eq!(active["active"], true);
    assert_eq!(active["sub"], "a");
    assert_eq!(active["act"], json!({"sub": "d", "act": {"sub": "c", "act": {"sub": "b"}}}));
    assert_eq!(active["delegation"]["depth"], 3);
    assert_eq!(active["delegation"]["hops"].as_array().unwrap().len(), 3);
    // Not addressed to this API: nothing more than inactive.
    assert_eq!(introspect(&chain.harness, &chain.hops[0]).await, json!({"active": false}));
    assert_eq!(introspect(&chain.harness, "garbage").await, json!({"active": false}));
    // Agents do not introspect; wrong credentials are invalid_client.
    form(&chain.harness, "/introspect", ("d", "s"), &[("token", &chain.hops[3])])
        .await
        .assert_error(400, "unauthorized_client");
    form(&chain.harness, "/introspect", ("api", "wrong"), &[("token", &chain.hops[3])])
        .await
        .assert_error(401, "invalid_client");
    chain.harness.clock.advance(301);
    assert_eq!(introspect(&chain.harness, &chain.hops[3]).await, json!({"active": false}), "expired");
}

#[tokio::test]
async fn revoking_hop_two_kills_hops_two_to_four_and_spares_hop_one() {
    let chain = four_hops().await;
    let harness = &chain.harness;
    // c holds hop 2 (it is addressed to c) and may revoke it.
    let revoked = form(harness, "/revoke", ("c", "s"), &[("token", &chain.hops[1])]).await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    assert_eq!(revoked.headers["cache-control"], "no-store");

    assert_eq!(introspect(harness, &chain.hops[3]).await, json!({"active": false}));
    exchange(harness, "c", &chain.hops[1], "d").await.assert_error(400, "invalid_request");
    exchange(harness, "d", &chain.hops[2], "https://api.example").await.assert_error(400, "invalid_request");
    // Hop 1 lives on: b can still exchange it.
    assert_eq!(exchange(harness, "b", &chain.hops[0], "c").await.status, 200);

    let trace = admin(harness, "GET", &format!("/admin/trace/{}", claims_of(&chain.hops[1]).jti), None).await;
    assert_eq!(trace.status, 200, "{}", trace.body);
    assert_eq!(trace.body["ancestors"][0]["status"], "active");
    assert_eq!(trace.body["token"]["status"], "revoked");
    assert_eq!(trace.body["token"]["children"][0]["status"], "revoked");
    assert_eq!(trace.body["token"]["children"][0]["children"][0]["status"], "revoked");
    assert_eq!(trace.body["token"]["children"][0]["children"][0]["agent"], "d");
}

#[tokio::test]
async fn only_holders_revoke_and_unknown_tokens_get_200() {
    let chain = four_hops().await;
    let harness = &chain.harness;
    // a obtained the root, so it holds an ancestor of hop 4.
    let outsider = {
        let response = form(harness, "/revoke", ("api", "api-secret"), &[("token", &chain.hops[3])]).await;
        response.assert_error(400, "unauthorized_client");
        response
    };
    assert!(outsider.body.get("access_token").is_none());
    // d did not hold hop 1.
    form(harness, "/revoke", ("d", "s"), &[("token", &chain.hops[0])]).await.assert_error(400, "unauthorized_client");
    assert_eq!(introspect(harness, &chain.hops[3]).await["active"], true, "a refused revocation revokes nothing");
    assert_eq!(form(harness, "/revoke", ("a", "s"), &[("token", "not-a-token")]).await.status, 200);
    assert_eq!(form(harness, "/revoke", ("a", "s"), &[("token", &chain.hops[3])]).await.status, 200);
    assert_eq!(introspect(harness, &chain.hops[3]).await, json!({"active": false}));
    form(harness, "/revoke", ("a", "wrong"), &[("token", &chain.hops[3])]).await.assert_error(401, "invalid_client");
    form(harness, "/revoke", ("a", "s"), &[]).await.assert_error(400, "invalid_request");
}

#[tokio::test]
async fn deprovisioning_the_middle_agent_kills_every_token_it_appears_in() {
    let chain = four_hops().await;
    let harness = &chain.harness;
    let done = admin(harness, "POST", "/admin/deprovision", Some(json!({"agent": "c"}))).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(introspect(harness, &chain.hops[3]).await, json!({"active": false}));
    // c itself is out: it cannot even authenticate to exchange hop 2.
    exchange(harness, "c", &chain.hops[1], "d").await.assert_error(401, "invalid_client");
    exchange(harness, "d", &chain.hops[2], "https://api.example").await.assert_error(400, "invalid_request");
    // Hop 1 does not name c.
    assert_eq!(exchange(harness, "b", &chain.hops[0], "d").await.status, 200);

    // Deprovisioned means out: c cannot authenticate until it is reinstated.
    harness.clock.advance(1);
    let blocked = harness.token(Some(("c", "s")), &[("grant_type", "client_credentials"), ("audience", "d")]).await;
    blocked.assert_error(401, "invalid_client");

    // Re-enabled: what c gets after the reinstatement works; what was cut off stays dead.
    assert_eq!(admin(harness, "POST", "/admin/reinstate", Some(json!({"agent": "c"}))).await.status, 200);
    let fresh = harness.token(Some(("c", "s")), &[("grant_type", "client_credentials"), ("audience", "d")]).await;
    assert_eq!(fresh.status, 200, "{}", fresh.body);
    let onward = exchange(harness, "d", fresh.token(), "https://api.example").await;
    assert_eq!(onward.status, 200, "{}", onward.body);
    assert_eq!(introspect(harness, onward.token()).await["active"], true);
    assert_eq!(introspect(harness, &chain.hops[3]).await, json!({"active": false}), "the cut-off holds");
    exchange(harness, "c", &chain.hops[1], "d").await.assert_error(400, "invalid_request");
}

#[tokio::test]
async fn deprovisioning_a_subject_kills_its_whole_tree() {
    let chain = four_hops().await;
    let harness = &chain.harness;
    let other = harness.token(Some(("b", "s")), &[("grant_type", "client_credentials"), ("audience", "c")]).await;
    assert_eq!(admin(harness, "POST", "/admin/deprovision", Some(json!({"subject": "a"}))).await.status, 200);
    for (holder, token, next) in
        [("b", &chain.hops[0], "c"), ("c", &chain.hops[1], "d"), ("d", &chain.hops[2], "https://api.example")]
    {
        exchange(harness, holder, token, next).await.assert_error(400, "invalid_request");
    }
    assert_eq!(introspect(harness, &chain.hops[3]).await, json!({"active": false}));
    assert_eq!(exchange(harness, "c", other.token(), "d").await.status, 200, "another subject's tree lives");
}

#[tokio::test]
async fn an_agent_removed_from_the_inventory_is_deprovisioned() {
    let chain = four_hops().await;
    // The same key folder, a policy folder without c: the broker restarted
    // after the security team removed c.
    let secret = secret_hash("s");
    let agents: String = ["a", "b", "d"]
        .iter()
        .map(|id| {
            format!("[[agents]]\nid='{id}'\nowner='o'\npurpose='p'\nexpires=2030-01-01\nsecret_sha256='{secret}'\n")
        })
        .collect();
    let resources = format!(
        "[[resources]]\nuri='https://api.example'\nname='API'\nscopes=['read']\nttl=300\nclient_id='api'\nsecret_sha256='{}'\n",
        secret_hash("api-secret")
    );
    let without_c = policy_folder(&agents, &resources, "permit (principal, action, resource);");
    let restarted = chain.harness.restarted_with(without_c.path());
    assert_eq!(introspect(&restarted, &chain.hops[3]).await, json!({"active": false}));
    assert_eq!(exchange(&restarted, "b", &chain.hops[0], "d").await.status, 200);
}

#[tokio::test]
async fn the_admin_api_needs_its_credential() {
    use baton::store::{AuditDecision, AuditFilter, AuditStore};
    let harness = Harness::new();
    let bare = harness.send(Request::get("/admin/agents").body(Body::empty()).unwrap()).await;
    assert_eq!(bare.status, 401);
    assert!(bare.headers["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    let wrong = harness
        .send(Request::get("/admin/agents").header(header::AUTHORIZATION, "Bearer nope").body(Body::empty()).unwrap())
        .await;
    assert_eq!(wrong.status, 401);
    let agents = admin(&harness, "GET", "/admin/agents", None).await;
    assert_eq!(agents.status, 200);
    let listed = agents.body["agents"].as_array().unwrap();
    assert_eq!(listed.len(), 4);
    assert_eq!(listed[0]["owner"], "travel-team@example.com");
    admin(&harness, "POST", "/admin/deprovision", Some(json!({"agent": "x", "subject": "y"})))
        .await
        .assert_error(400, "invalid_request");
    admin(&harness, "POST", "/admin/revoke", Some(json!({"nope": 1}))).await.assert_error(400, "invalid_request");
    assert_eq!(admin(&harness, "GET", "/admin/trace/unknown", None).await.status, 404);
    // An id no token here has: nothing is revoked, and the answer says so.
    let unknown = admin(&harness, "POST", "/admin/revoke", Some(json!({"jti": "not-a-jti"}))).await;
    unknown.assert_error(404, "not_found");
    assert_eq!(unknown.body["error_description"], "no token with this id was issued here");
    let revocations = AuditFilter { decision: Some(AuditDecision::Revoked), ..AuditFilter::default() };
    assert_eq!(harness.store.count(&revocations).await.unwrap(), 0, "nothing recorded");
}

#[tokio::test]
async fn admin_revoke_trace_agents_and_audit() {
    let harness = Harness::new();
    let [root, hop1, hop2] = harness.walk().await;
    let jti = claims_of(&hop1).jti;
    let revoked = admin(&harness, "POST", "/admin/revoke", Some(json!({"jti": jti}))).await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    assert_eq!(revoked.body["until"], claims_of(&hop1).exp.0);
    let recorded = harness.events().await.into_iter().find(|event| event.action == "admin_revoke").unwrap();
    assert_eq!(recorded.by.as_deref(), Some("admin API"));
    harness.exchange("booker", &hop1, &[("resource", AIRLINE)]).await.assert_error(400, "invalid_request");

    let trace = admin(&harness, "GET", &format!("/admin/trace/{}", claims_of(&hop2).jti), None).await;
    assert_eq!(trace.body["ancestors"].as_array().unwrap().len(), 2);
    assert_eq!(trace.body["ancestors"][0]["jti"], claims_of(&root).jti.0);
    assert_eq!(trace.body["ancestors"][0]["status"], "active");
    assert_eq!(trace.body["ancestors"][1]["status"], "revoked");
    assert_eq!(trace.body["token"]["status"], "revoked");
    assert_eq!(trace.body["token"]["agent"], "booker");
    assert_eq!(trace.body["token"]["scope"], "flights.book");

    let agents = admin(&harness, "GET", "/admin/agents", None).await;
    let booker =
        agents.body["agents"].as_array().unwrap().iter().find(|agent| agent["id"] == "booker").unwrap().clone();
    assert_eq!(booker["tokens_issued_last_day"], 1);
    assert!(booker["last_use"].is_number());

    let by_agent = admin(&harness, "GET", "/admin/audit?agent=planner", None).await;
    let events = by_agent.body["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["decision"], "issued");
    let by_jti = admin(&harness, "GET", &format!("/admin/audit?jti={}", jti.0), None).await;
    let decisions: Vec<&Value> =
        by_jti.body["events"].as_array().unwrap().iter().map(|event| &event["decision"]).collect();
    assert_eq!(decisions, vec![&json!("revoked"), &json!("issued")], "newest first");
    let window = admin(&harness, "GET", &format!("/admin/audit?since={}&limit=2", START.0), None).await;
    assert_eq!(window.body["events"].as_array().unwrap().len(), 2);
    assert_eq!(admin(&harness, "GET", "/admin/audit?bogus=1", None).await.status, 400);
}

#[tokio::test]
async fn the_admin_api_lists_a_subjects_or_an_agents_tokens_with_their_status() {
    let harness = Harness::new();
    let [root, hop1, hop2] = harness.walk().await;
    admin(&harness, "POST", "/admin/revoke", Some(json!({"jti": claims_of(&hop1).jti}))).await;
    let listed = admin(&harness, "GET", &format!("/admin/tokens?subject={}", claims_of(&root).sub), None).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let status: Vec<(String, String)> = listed.body["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|token| (token["jti"].as_str().unwrap().to_owned(), token["status"].as_str().unwrap().to_owned()))
        .collect();
    // Newest first; the revoked hop's child is revoked through its ancestry.
    let expected = [(&hop2, "revoked"), (&hop1, "revoked"), (&root, "active")]
        .map(|(token, status)| (claims_of(token).jti.0, status.to_owned()));
    assert_eq!(status, expected);
    let planner = admin(&harness, "GET", "/admin/tokens?agent=planner&limit=5", None).await;
    assert_eq!(planner.body["tokens"].as_array().unwrap().len(), 1);
    assert_eq!(planner.body["tokens"][0]["jti"], claims_of(&hop1).jti.0);
    // Naming nobody, or an unknown filter, is a malformed query.
    admin(&harness, "GET", "/admin/tokens", None).await.assert_error(400, "invalid_request");
    admin(&harness, "GET", "/admin/tokens?agent=planner&bogus=1", None).await.assert_error(400, "invalid_request");
}

#[tokio::test]
async fn the_admin_api_is_off_without_a_credential() {
    let harness = Harness::with(Options { admin: false, ..Options::default() });
    let response = harness
        .send(
            Request::get("/admin/agents")
                .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.status, 404);
}

#[tokio::test]
async fn an_expired_agent_is_recorded_for_verifiers_reading_the_store() {
    use baton::store::{Lineage, RevocationStore, Status};
    let chain = four_hops().await;
    let harness = &chain.harness;
    let lineage = Lineage::of(&claims_of(&chain.hops[3]));
    assert_eq!(harness.store.check(&lineage).await.unwrap(), Status::Active);
    // The agents of `four_agents` expire on 2030-01-01.
    harness.clock.advance(
        baton::clock::UnixTime(time::macros::datetime!(2030-01-02 0:00 UTC).unix_timestamp()).seconds_since(START),
    );
    let retired = harness.broker.retire_expired_agents().await.unwrap();
    assert_eq!(retired.len(), 4);
    assert_eq!(harness.store.check(&lineage).await.unwrap(), Status::Deprovisioned, "the store alone says dead");
    let again = harness.broker.retire_expired_agents().await.unwrap();
    assert!(again.is_empty());
}

#[tokio::test]
async fn an_agent_removed_from_the_inventory_is_deprovisioned_in_the_store_and_stays_out() {
    use baton::store::{Lineage, RevocationStore, Status};
    let chain = four_hops().await;
    assert!(chain.harness.broker.deprovision_removed_agents().await.unwrap().is_empty());

    let secret = secret_hash("s");
    let inventory = |ids: &[&str]| -> String {
        ids.iter()
            .map(|id| {
                format!("[[agents]]\nid='{id}'\nowner='o'\npurpose='p'\nexpires=2030-01-01\nsecret_sha256='{secret}'\n")
            })
            .collect()
    };
    let resources = format!(
        "[[resources]]\nuri='https://api.example'\nname='API'\nscopes=['read']\nttl=300\nclient_id='api'\nsecret_sha256='{}'\n",
        secret_hash("api-secret")
    );
    let without_c = policy_folder(&inventory(&["a", "b", "d"]), &resources, "permit (principal, action, resource);");
    let restarted = chain.harness.restarted_with(without_c.path());
    assert_eq!(restarted.broker.deprovision_removed_agents().await.unwrap(), vec!["c".to_owned()]);
    // The store alone now says so: what a verifier reading the store sees.
    let lineage = Lineage::of(&claims_of(&chain.hops[3]));
    assert_eq!(chain.harness.store.check(&lineage).await.unwrap(), Status::Deprovisioned);

    // Added back: still out until reinstated, and its old tokens stay dead.
    let with_c = policy_folder(&inventory(&["a", "b", "c", "d"]), &resources, "permit (principal, action, resource);");
    let again = chain.harness.restarted_with(with_c.path());
    assert!(again.broker.deprovision_removed_agents().await.unwrap().is_empty());
    again
        .token(Some(("c", "s")), &[("grant_type", "client_credentials"), ("audience", "d")])
        .await
        .assert_error(401, "invalid_client");
    again.clock.advance(1);
    assert_eq!(admin(&again, "POST", "/admin/reinstate", Some(json!({"agent": "c"}))).await.status, 200);
    assert_eq!(
        again.token(Some(("c", "s")), &[("grant_type", "client_credentials"), ("audience", "d")]).await.status,
        200
    );
    assert_eq!(introspect(&again, &chain.hops[3]).await, json!({"active": false}));
}

/// Sends `count` copies of a request, `batch` at a time concurrently, so
/// that an embedded store shares its durable commits among them; answers
/// each response's status.
async fn flood(harness: &Harness, count: usize, batch: usize, request: impl Fn() -> Request<Body>) -> Vec<u16> {
    use tower::ServiceExt;
    let mut statuses = Vec::with_capacity(count);
    let mut left = count;
    while left > 0 {
        let mut sent = tokio::task::JoinSet::new();
        for _ in 0..batch.min(left) {
            let router = harness.router.clone();
            let request = request();
            sent.spawn(async move { router.oneshot(request).await.unwrap().status().as_u16() });
        }
        left -= batch.min(left);
        while let Some(status) = sent.join_next().await {
            statuses.push(status.unwrap());
        }
    }
    statuses
}

fn exchange_request(holder: &str, token: &str, audience: &str, scope: &str) -> Request<Body> {
    let form = [
        ("grant_type", EXCHANGE),
        ("subject_token", token),
        ("subject_token_type", ACCESS_TOKEN),
        ("audience", audience),
        ("scope", scope),
    ];
    Request::post("/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::AUTHORIZATION, basic_header(holder, "s"))
        .body(Body::from(form_body(&form)))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_is_not_blinded_by_refused_exchanges_of_the_token() {
    use baton::store::{AuditDecision, AuditFilter, AuditStore};
    let chain = four_hops().await;
    let harness = &chain.harness;
    let parent = claims_of(&chain.hops[0]).jti;
    let child = claims_of(&chain.hops[1]).jti;
    // The holder asks 1,100 times for a scope its token does not carry:
    // each refusal is evidence naming the token as parent.
    let started = std::time::Instant::now();
    let statuses = flood(harness, 1_100, 64, || exchange_request("b", &chain.hops[0], "c", "write")).await;
    assert!(statuses.iter().all(|status| *status == 400), "every exchange is refused");
    let refusals = AuditFilter {
        parent_jti: Some(parent.clone()),
        decision: Some(AuditDecision::Refused),
        ..AuditFilter::default()
    };
    assert_eq!(harness.store.count(&refusals).await.unwrap(), 1_100);
    eprintln!("1,100 refused exchanges in {:?}", started.elapsed());

    let trace = admin(harness, "GET", &format!("/admin/trace/{}", parent.0), None).await;
    assert_eq!(trace.status, 200, "{}", trace.body);
    assert_eq!(trace.body["truncated"], false);
    let children = trace.body["token"]["children"].as_array().unwrap();
    assert_eq!(children.len(), 1, "{}", trace.body);
    assert_eq!(children[0]["jti"], child.0, "the child is listed");
    assert_eq!(children[0]["children"][0]["children"][0]["jti"], claims_of(&chain.hops[3]).jti.0);
    // And from the child up: the parent is its ancestor.
    let up = admin(harness, "GET", &format!("/admin/trace/{}", child.0), None).await;
    assert_eq!(up.body["ancestors"][0]["jti"], parent.0);
}

#[tokio::test]
async fn a_trace_survives_a_thousand_revocations_of_the_token_recorded_once() {
    use baton::store::{AuditDecision, AuditFilter, AuditStore};
    let chain = four_hops().await;
    let harness = &chain.harness;
    let token = &chain.hops[1];
    let jti = claims_of(token).jti;
    let revoke = || {
        Request::post("/revoke")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::AUTHORIZATION, basic_header("c", "s"))
            .body(Body::from(form_body(&[("token", token)])))
            .unwrap()
    };
    let commits = harness.store.commits();
    let statuses = flood(harness, 1_001, 64, revoke).await;
    assert!(statuses.iter().all(|status| *status == 200), "RFC 7009 §2.2: 200 however often");
    assert!(harness.store.commits() - commits < 100, "repeated revocations write next to nothing");
    // And the admin API, once more: nothing new either.
    assert_eq!(admin(harness, "POST", "/admin/revoke", Some(json!({"jti": jti}))).await.status, 200);
    let revocations =
        AuditFilter { jti: Some(jti.clone()), decision: Some(AuditDecision::Revoked), ..AuditFilter::default() };
    assert_eq!(harness.store.count(&revocations).await.unwrap(), 1, "one revocation, one event");

    let trace = admin(harness, "GET", &format!("/admin/trace/{}", jti.0), None).await;
    assert_eq!(trace.status, 200, "{}", trace.body);
    assert_eq!(trace.body["token"]["status"], "revoked");
    assert_eq!(trace.body["token"]["children"][0]["status"], "revoked");
    assert_eq!(trace.body["truncated"], false);
}

#[tokio::test]
async fn a_token_issued_right_after_reinstatement_lives_at_once() {
    let chain = four_hops().await;
    let harness = &chain.harness;
    // All on one second of the fixed clock: deprovision, reinstate, issue.
    assert_eq!(admin(harness, "POST", "/admin/deprovision", Some(json!({"agent": "c"}))).await.status, 200);
    assert_eq!(admin(harness, "POST", "/admin/reinstate", Some(json!({"agent": "c"}))).await.status, 200);
    let fresh = harness.token(Some(("c", "s")), &[("grant_type", "client_credentials"), ("audience", "d")]).await;
    assert_eq!(fresh.status, 200, "{}", fresh.body);
    assert_eq!(claims_of(fresh.token()).iat, START, "the same second as the deprovisioning");
    let onward = exchange(harness, "d", fresh.token(), "https://api.example").await;
    assert_eq!(onward.status, 200, "the fresh token can be exchanged: {}", onward.body);
    assert_eq!(introspect(harness, onward.token()).await["active"], true);
    let trace = admin(harness, "GET", &format!("/admin/trace/{}", claims_of(fresh.token()).jti.0), None).await;
    assert_eq!(trace.body["token"]["status"], "active", "the trace orders it exactly too: {}", trace.body);
    let old = admin(harness, "GET", &format!("/admin/trace/{}", claims_of(&chain.hops[1]).jti.0), None).await;
    assert_eq!(old.body["token"]["status"], "deprovisioned");
    // What was issued before the deprovisioning stays dead.
    assert_eq!(introspect(harness, &chain.hops[3]).await, json!({"active": false}));
    exchange(harness, "c", &chain.hops[1], "d").await.assert_error(400, "invalid_request");
}

#[tokio::test]
async fn a_child_minted_after_its_parents_cutoff_stays_dead_after_reinstatement() {
    use baton::store::{Blocking, Cutoff, Principal, RevocationStore};
    let chain = four_hops().await;
    let harness = &chain.harness;
    // hop 2 (b's, for c) was minted before the cut-off; hop 3 (c's child of
    // it) after: the state an exchange racing c's deprovisioning leaves.
    let parent = claims_of(&chain.hops[1]).delegation.iat_micros.unwrap();
    let child = claims_of(&chain.hops[2]).delegation.iat_micros.unwrap();
    assert!(parent < child);
    let cutoff = Cutoff { at: parent, until: START.plus(86_400), block: Blocking::Block };
    assert!(cutoff.at < child);
    harness.store.deprovision(&Principal::Agent("c".into()), &cutoff).await.unwrap();
    assert_eq!(introspect(harness, &chain.hops[3]).await, json!({"active": false}));

    assert_eq!(admin(harness, "POST", "/admin/reinstate", Some(json!({"agent": "c"}))).await.status, 200);
    // c counts from the parent that was addressed to it: the child stays
    // dead, and so does what descends from it.
    exchange(harness, "d", &chain.hops[2], "https://api.example").await.assert_error(400, "invalid_request");
    assert_eq!(introspect(harness, &chain.hops[3]).await, json!({"active": false}));
    // Hop 1 never named c.
    assert_eq!(exchange(harness, "b", &chain.hops[0], "c").await.status, 200);
}

/// The ancestor rule alone, without a block or a reinstatement to hide it: a
/// cut-off for c between the parent addressed to c and the child c obtained
/// kills the child, because c is counted from the first token that named it.
#[tokio::test]
async fn an_agent_is_counted_from_the_first_token_of_the_lineage_that_named_it() {
    use baton::store::{Blocking, Cutoff, Principal, RevocationStore};
    let chain = four_hops().await;
    let harness = &chain.harness;
    let parent = claims_of(&chain.hops[1]).delegation.iat_micros.unwrap();
    let child = claims_of(&chain.hops[2]).delegation.iat_micros.unwrap();
    assert!(parent < child);
    // Keep: no block, only the cut-off, at the parent's own instant.
    let cutoff = Cutoff { at: parent, until: START.plus(86_400), block: Blocking::Keep };
    harness.store.deprovision(&Principal::Agent("c".into()), &cutoff).await.unwrap();
    // The child was minted after the cut-off, yet dies with the parent that named c.
    assert_eq!(introspect(harness, &chain.hops[3]).await, json!({"active": false}));
    exchange(harness, "d", &chain.hops[2], "https://api.example").await.assert_error(400, "invalid_request");
    // c itself is not blocked: a chain that names c only after the cut-off lives.
    let fresh = exchange(harness, "b", &chain.hops[0], "c").await;
    assert_eq!(fresh.status, 200, "{}", fresh.body);
    let fresh_child = exchange(harness, "c", fresh.token(), "d").await;
    assert_eq!(fresh_child.status, 200, "{}", fresh_child.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_says_when_it_stopped_at_its_node_limit() {
    use baton::store::{AuditDecision, AuditFilter, AuditStore};
    let chain = four_hops().await;
    let harness = &chain.harness;
    let root = claims_of(&chain.hops[0]).jti;
    let whole = admin(harness, "GET", &format!("/admin/trace/{}", root.0), None).await;
    assert_eq!(whole.body["truncated"], false, "four tokens fit");
    // A thousand more children of the root, as their issuance events.
    let issued = harness.store.issued(&claims_of(&chain.hops[1]).jti).await.unwrap().unwrap();
    let mut writes = tokio::task::JoinSet::new();
    for index in 0..1_000 {
        let mut child = issued.clone();
        child.jti = Some(baton::claims::TokenId(format!("extra-{index}")));
        let store = harness.store.clone();
        writes.spawn(async move { store.record(child).await.unwrap() });
    }
    while writes.join_next().await.is_some() {}
    let children =
        AuditFilter { parent_jti: Some(root.clone()), decision: Some(AuditDecision::Issued), ..AuditFilter::default() };
    assert_eq!(harness.store.count(&children).await.unwrap(), 1_001);
    let cut = admin(harness, "GET", &format!("/admin/trace/{}", root.0), None).await;
    assert_eq!(cut.status, 200);
    assert_eq!(cut.body["truncated"], true, "the walk stopped at 1000 tokens");
}

#[tokio::test]
async fn a_token_minted_as_its_agents_deprovisioning_landed_stays_dead_after_reinstatement() {
    use baton::clock::UnixMicros;
    use baton::store::{Blocking, Cutoff, Principal, RevocationStore};
    let chain = four_hops().await;
    let harness = &chain.harness;
    // c's own token, minted after the cut-off that a deprovisioning took but
    // before its write landed (the block check let it through).
    let own = harness.token(Some(("c", "s")), &[("grant_type", "client_credentials"), ("audience", "d")]).await;
    assert_eq!(own.status, 200, "{}", own.body);
    let minted = claims_of(own.token()).delegation.iat_micros.unwrap();
    let cutoff = Cutoff { at: UnixMicros(minted.0 - 1), until: START.plus(86_400), block: Blocking::Block };
    harness.store.deprovision(&Principal::Agent("c".into()), &cutoff).await.unwrap();
    exchange(harness, "d", own.token(), "https://api.example").await.assert_error(400, "invalid_request");

    assert_eq!(admin(harness, "POST", "/admin/reinstate", Some(json!({"agent": "c"}))).await.status, 200);
    exchange(harness, "d", own.token(), "https://api.example").await.assert_error(400, "invalid_request");
    // What c gets now lives, in the same second.
    let fresh = harness.token(Some(("c", "s")), &[("grant_type", "client_credentials"), ("audience", "d")]).await;
    assert_eq!(exchange(harness, "d", fresh.token(), "https://api.example").await.status, 200);
    // Reinstating an agent that is not deprovisioned kills nothing.
    assert_eq!(admin(harness, "POST", "/admin/reinstate", Some(json!({"agent": "d"}))).await.status, 200);
    assert_eq!(exchange(harness, "d", fresh.token(), "https://api.example").await.status, 200);
}

/// An audit trail that cannot record a revocation while `down` is set.
struct RevocationsUnrecorded {
    trail: baton::store::memory::MemoryStore,
    down: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl baton::store::AuditStore for RevocationsUnrecorded {
    async fn record(&self, event: baton::store::AuditEvent) -> Result<(), baton::store::StoreError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) && event.decision == baton::store::AuditDecision::Revoked
        {
            return Err(baton::store::StoreError::Io("disk full".into()));
        }
        self.trail.record(event).await
    }
    async fn query(
        &self,
        filter: &baton::store::AuditFilter,
    ) -> Result<Vec<baton::store::AuditEvent>, baton::store::StoreError> {
        self.trail.query(filter).await
    }
    async fn count(&self, filter: &baton::store::AuditFilter) -> Result<usize, baton::store::StoreError> {
        self.trail.count(filter).await
    }
}

/// DESIGN.md §2.7: a revocation kept while its event could not be written
/// (the caller was told 503) gets its event from the next call, which finds
/// the token already revoked; later calls add nothing.
#[tokio::test]
async fn a_revocation_whose_evidence_was_lost_is_recorded_by_the_retry() {
    use baton::store::{AuditDecision, AuditFilter, AuditStore};
    use std::sync::atomic::{AtomicBool, Ordering};
    let policies = four_agents();
    let state = std::sync::Arc::new(baton::store::memory::MemoryStore::new());
    let audit = std::sync::Arc::new(RevocationsUnrecorded {
        trail: baton::store::memory::MemoryStore::new(),
        down: AtomicBool::new(false),
    });
    let stores = baton::context::Stores { replay: state.clone(), revocation: state, audit: audit.clone() };
    let harness =
        Harness::with(Options { policies: policies.path().to_owned(), stores: Some(stores), ..Options::default() });
    let root = harness.token(Some(("a", "s")), &[("grant_type", "client_credentials"), ("audience", "b")]).await;
    let token = root.token().to_owned();
    let jti = claims_of(&token).jti;
    let revocations =
        AuditFilter { jti: Some(jti.clone()), decision: Some(AuditDecision::Revoked), ..AuditFilter::default() };

    audit.down.store(true, Ordering::SeqCst);
    let lost = form(&harness, "/revoke", ("b", "s"), &[("token", &token)]).await;
    assert_eq!(lost.status, 503, "{}", lost.body);
    audit.down.store(false, Ordering::SeqCst);
    assert_eq!(audit.count(&revocations).await.unwrap(), 0);
    // The revocation itself holds already.
    let refused = exchange(&harness, "b", &token, "c").await;
    assert_eq!(refused.status, 400, "{}", refused.body);

    let retried = form(&harness, "/revoke", ("b", "s"), &[("token", &token)]).await;
    assert_eq!(retried.status, 200, "{}", retried.body);
    assert_eq!(audit.count(&revocations).await.unwrap(), 1, "the retry records the revocation");
    assert_eq!(form(&harness, "/revoke", ("b", "s"), &[("token", &token)]).await.status, 200);
    assert_eq!(admin(&harness, "POST", "/admin/revoke", Some(json!({"jti": jti}))).await.status, 200);
    assert_eq!(audit.count(&revocations).await.unwrap(), 1, "and nothing after it");
}
