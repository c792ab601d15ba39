//! Hostile clients (DESIGN.md §12): failed client authentication is
//! throttled per address and client without locking anyone out from
//! elsewhere, and junk is counted in aggregate rather than kept row by row.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use baton::abuse::{RefusalSettings, ThrottleSettings};
use baton::broker::Broker;
use baton::clock::Clock;
use baton::context::{Settings, Stores};
use baton::keys::KeySet;
use baton::policy::{Lifetimes, Policy};
use baton::store::{AuditDecision, AuditFilter, AuditStore};
use tower::ServiceExt;

use crate::harness::*;

const FORM: &str = "application/x-www-form-urlencoded";

/// A request as the server hands it over, from `address`.
fn from(address: &str, request: axum::http::request::Builder, body: impl Into<Body>) -> Request<Body> {
    let address: SocketAddr = address.parse().unwrap();
    request.extension(ConnectInfo(address)).body(body.into()).unwrap()
}

fn client_credentials(address: &str, agent: &str, secret: &str) -> Request<Body> {
    let request = Request::post("/token")
        .header(header::CONTENT_TYPE, FORM)
        .header(header::AUTHORIZATION, basic_header(agent, secret));
    // The orchestrator's own token for the planner: what the example permits.
    from(address, request, "grant_type=client_credentials&audience=planner")
}

const ORCHESTRATOR: &str = "dev-only-orchestrator-secret";
const API_SECRET: &str = "dev-only-airline-api-secret";

fn introspection(address: &str, client: &str, secret: &str) -> Request<Body> {
    let request = Request::post("/introspect")
        .header(header::CONTENT_TYPE, FORM)
        .header(header::AUTHORIZATION, basic_header(client, secret));
    from(address, request, "token=anything")
}

fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

pub(crate) async fn metrics_text(harness: &Harness) -> String {
    let raw = harness.router.clone().oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
    let bytes = http_body_util::BodyExt::collect(raw.into_body()).await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[track_caller]
fn assert_throttled(response: &Response) {
    response.assert_error(429, "temporarily_unavailable");
    let retry_after: u64 = response.headers[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    let description = response.body["error_description"].as_str().unwrap();
    assert!(!description.contains("secret") && !description.contains("client"), "neutral: {description}");
}

#[tokio::test]
async fn guessing_is_throttled_by_address_without_locking_the_agent_out_elsewhere() {
    let harness = Harness::new();
    let attacker = "127.0.0.2:40000";
    let right = ORCHESTRATOR;
    // Successes spend nothing: far more than the budget, and a wrong secret
    // after them is still checked (401, not 429).
    for _ in 0..30 {
        assert_eq!(harness.send(client_credentials(attacker, "orchestrator", right)).await.status, 200);
    }
    // The default budget: 10 failures a minute per address and client.
    let mut answers = Vec::new();
    for attempt in 0..15 {
        answers.push(harness.send(client_credentials(attacker, "orchestrator", &format!("guess-{attempt}"))).await);
    }
    for answer in &answers[..10] {
        answer.assert_error(401, "invalid_client");
    }
    for answer in &answers[10..] {
        assert_throttled(answer);
    }
    // Throttled before the credential is checked: the right secret from the
    // guessing address gets 429 too, so a late right guess learns nothing.
    assert_throttled(&harness.send(client_credentials(attacker, "orchestrator", right)).await);
    // Another port of the same host is the same address.
    assert_throttled(&harness.send(client_credentials("127.0.0.2:40001", "orchestrator", right)).await);
    // The same agent from another address is not locked out...
    assert_eq!(harness.send(client_credentials("127.0.0.3:40000", "orchestrator", right)).await.status, 200);
    // ...nor another client from the guessing address (its address budget is not spent).
    assert_eq!(harness.send(introspection(attacker, "airline-api", API_SECRET)).await.status, 200);
    // The introspection endpoint shares the budget.
    assert_throttled(&harness.send(introspection(attacker, "orchestrator", right)).await);
    // The budget refills with time.
    harness.clock.advance(61);
    assert_eq!(harness.send(client_credentials(attacker, "orchestrator", right)).await.status, 200);
}

#[tokio::test]
async fn an_address_failing_for_many_clients_is_throttled_for_every_client() {
    let harness = Harness::new();
    let spray = "127.0.0.4:50000";
    // The default budget: 100 failures a minute per address, whatever the client.
    let mut statuses = Vec::new();
    for index in 0..110 {
        statuses.push(harness.send(client_credentials(spray, &format!("ghost-{index}"), "x")).await.status.as_u16());
    }
    assert!(statuses[..100].iter().all(|status| *status == 401), "{statuses:?}");
    assert!(statuses[100..].iter().all(|status| *status == 429), "{statuses:?}");
    assert_throttled(&harness.send(client_credentials(spray, "orchestrator", ORCHESTRATOR)).await);
    let elsewhere = client_credentials("127.0.0.5:50000", "orchestrator", ORCHESTRATOR);
    assert_eq!(harness.send(elsewhere).await.status, 200);
    // Failures at the introspection endpoint count as well.
    let prober = "127.0.0.6:1";
    for _ in 0..10 {
        harness.send(introspection(prober, "airline-api", "wrong")).await.assert_error(401, "invalid_client");
    }
    assert_throttled(&harness.send(introspection(prober, "airline-api", "wrong")).await);
    let revoke = Request::post("/revoke")
        .header(header::CONTENT_TYPE, FORM)
        .header(header::AUTHORIZATION, basic_header("airline-api", "wrong"));
    assert_throttled(&harness.send(from(prober, revoke, "token=x")).await);
}

/// One junk request of five kinds, from one of eight addresses.
fn junk(index: usize) -> Request<Body> {
    let address = format!("127.0.0.{}:{}", 10 + index % 8, 1024 + index % 50_000);
    let form = || Request::post("/token").header(header::CONTENT_TYPE, FORM);
    match index % 5 {
        // A wrong secret for a real agent.
        0 => client_credentials(&address, "orchestrator", &format!("guess-{index}")),
        // A client nobody registered, each time another.
        1 => client_credentials(&address, &format!("nobody-{index}"), "x"),
        // Not a form.
        2 => from(
            &address,
            Request::post("/token").header(header::CONTENT_TYPE, "application/json"),
            r#"{"grant_type":"client_credentials"}"#,
        ),
        3 => from(&address, Request::get("/token"), Body::empty()),
        // A malformed form: a repeated parameter.
        _ => from(&address, form(), "grant_type=client_credentials&grant_type=password&%ff%fe=%"),
    }
}

#[tokio::test]
async fn junk_grows_the_state_by_less_than_two_mebibytes_and_shows_in_aggregate() {
    const JUNK: usize = 20_000;
    const AT_ONCE: usize = 64;
    let harness = Harness::new();
    // Real evidence before the junk.
    let [root, ..] = harness.walk().await;
    let file = harness.dir.path().join("data").join("baton.redb");
    let before = std::fs::metadata(&file).unwrap().len();
    let events_before = harness.events().await.len();

    let started = Instant::now();
    let mut sent = 0;
    while sent < JUNK {
        let batch: Vec<_> = (sent..(sent + AT_ONCE).min(JUNK))
            .map(|index| {
                let router = harness.router.clone();
                tokio::spawn(async move { router.oneshot(junk(index)).await.unwrap().status() })
            })
            .collect();
        sent += batch.len();
        for answer in batch {
            let status = answer.await.unwrap();
            assert!(status.is_client_error() && status != StatusCode::NOT_FOUND, "{status}");
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(harness.events().await.len(), events_before, "no event of its own for any junk request");
    assert_eq!(harness.broker.flush_refusals().await.unwrap(), JUNK as u64);
    assert_eq!(harness.broker.flush_refusals().await.unwrap(), 0, "written once");
    let after = std::fs::metadata(&file).unwrap().len();
    let growth = after.saturating_sub(before);
    eprintln!(
        "{JUNK} junk requests through the router in {elapsed:?} ({:.0}/s, debug build); \
         baton.redb {before} -> {after} bytes (+{growth}, ~{} bytes per million, extrapolated)",
        JUNK as f64 / elapsed.as_secs_f64(),
        growth * (1_000_000 / JUNK as u64)
    );
    assert!(growth < 2 * 1024 * 1024, "grew by {growth} bytes");

    // Visible in aggregate: one event whose counts add up, by reason,
    // claimed client and address, within the bound on distinct keys.
    let filter = AuditFilter { action: Some("unauthenticated_refusals".into()), ..AuditFilter::default() };
    let aggregates = harness.store.query(&filter).await.unwrap();
    assert_eq!(aggregates.len(), 1);
    let aggregate = &aggregates[0];
    eprintln!("the aggregate event: {} bytes of JSON", serde_json::to_string(aggregate).unwrap().len());
    assert_eq!(aggregate.decision, AuditDecision::Refused);
    assert_eq!(aggregate.refusals.iter().map(|count| count.count).sum::<u64>(), JUNK as u64);
    assert!(aggregate.refusals.len() <= 200 + 40, "bounded: {}", aggregate.refusals.len());
    let reasons = |reason: &str| {
        aggregate.refusals.iter().filter(|count| count.reason == reason).map(|count| count.count).sum::<u64>()
    };
    for reason in ["client_wrong_secret", "client_unknown", "not_form", "method_not_allowed", "repeated_parameter"] {
        assert!(reasons(reason) > 0, "{reason}: {:?}", aggregate.refusals);
    }
    // Guessing was throttled: each of the eight addresses got its 10 tries
    // at the orchestrator (and a few more that were in flight at once when
    // the budget ran out).
    assert!((8 * 10..=8 * 10 + AT_ONCE as u64).contains(&reasons("client_wrong_secret")), "{:?}", aggregate.refusals);
    assert!(reasons("throttled") > 0);
    let guesses =
        aggregate.refusals.iter().find(|count| count.reason == "client_wrong_secret" && !count.overflow).unwrap();
    assert_eq!(guesses.claimed_client.as_deref(), Some("orchestrator"));
    assert!(guesses.client_address.as_deref().unwrap().starts_with("127.0.0."), "{guesses:?}");
    assert!(!guesses.client_address.as_deref().unwrap().contains(':'), "the host, not the port");
    // And in the metrics, by reason alone.
    let text = metrics_text(&harness).await;
    assert_eq!(metric(&text, "baton_unauthenticated_refusals_total{"), JUNK as u64, "{text}");
    assert!(!text.contains("nobody-") && !text.contains("127.0.0."), "no client ids or addresses in labels");

    // Real evidence is still there, and authenticated decisions are still one event each.
    assert!(harness.events().await.iter().any(|event| event.decision == AuditDecision::Issued));
    let refused = harness.exchange("planner", &root, &[("audience", "booker"), ("scope", "calendar.write")]).await;
    refused.assert_error(400, "invalid_scope");
    let last = harness.events().await.pop().unwrap();
    assert_eq!((last.decision, last.agent.as_deref()), (AuditDecision::Refused, Some("planner")));
}

#[tokio::test]
async fn junk_over_http_is_absorbed_while_an_agent_elsewhere_is_served() {
    const JUNK: usize = 4_000;
    const AT_ONCE: usize = 16;
    let harness = Harness::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    // The server as `baton serve` runs it: it records each client's address.
    tokio::spawn(baton::http::serve(
        listener,
        harness.broker.clone(),
        baton::http::Limits::default(),
        std::future::pending(),
    ));
    let client_from =
        |ip: [u8; 4]| reqwest::Client::builder().local_address(std::net::IpAddr::from(ip)).build().unwrap();
    let attacker = client_from([127, 0, 0, 2]);
    let started = Instant::now();
    let mut sent = 0;
    while sent < JUNK {
        let mut batch = tokio::task::JoinSet::new();
        for index in sent..(sent + AT_ONCE).min(JUNK) {
            let request = match index % 4 {
                0 => attacker.post(format!("{url}/token")).basic_auth("orchestrator", Some(format!("guess-{index}"))),
                1 => attacker.post(format!("{url}/token")).basic_auth(format!("nobody-{index}"), Some("x")),
                2 => attacker.post(format!("{url}/token")).header(header::CONTENT_TYPE, "text/plain"),
                _ => attacker.get(format!("{url}/token")),
            };
            let request = request.header(header::CONTENT_TYPE, FORM).body("grant_type=client_credentials");
            batch.spawn(async move { request.send().await.unwrap().status().as_u16() });
        }
        sent += batch.len();
        while let Some(status) = batch.join_next().await {
            assert!([400, 401, 405, 429].contains(&status.unwrap()));
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{JUNK} junk requests over HTTP from one address, {AT_ONCE} at once, in {elapsed:?} ({:.0}/s, debug build)",
        JUNK as f64 / elapsed.as_secs_f64()
    );
    // The guessing address is throttled for the orchestrator; the
    // orchestrator from another address is served.
    let token = |client: &reqwest::Client| {
        client
            .post(format!("{url}/token"))
            .basic_auth("orchestrator", Some(ORCHESTRATOR))
            .header(header::CONTENT_TYPE, FORM)
            .body("grant_type=client_credentials&audience=planner")
            .send()
    };
    let throttled = token(&attacker).await.unwrap();
    assert_eq!(throttled.status(), 429);
    assert!(throttled.headers().contains_key(header::RETRY_AFTER));
    assert_eq!(token(&client_from([127, 0, 0, 1])).await.unwrap().status(), 200);
    // Counted by the attacker's address.
    assert_eq!(harness.broker.flush_refusals().await.unwrap(), JUNK as u64 + 1);
    let filter = AuditFilter { action: Some("unauthenticated_refusals".into()), ..AuditFilter::default() };
    let aggregate = harness.store.query(&filter).await.unwrap().pop().unwrap();
    assert!(aggregate
        .refusals
        .iter()
        .all(|count| count.overflow || count.client_address.as_deref() == Some("127.0.0.2")));
}

/// A broker on the harness's keys, example policies, store and clock, with
/// these refusal limits, believing the client addresses `proxies` forward;
/// driven through its own router.
fn broker_with(harness: &Harness, proxies: &[&str], refusals: RefusalSettings) -> (axum::Router, Arc<Broker>) {
    let lifetimes = Lifetimes { max_token_ttl: 3600, agent_token_ttl: 900 };
    let settings = Settings {
        issuer: ISSUER.into(),
        max_depth: 5,
        max_token_bytes: 16 * 1024,
        max_body_bytes: 64 * 1024,
        lifetimes,
        admin_token_sha256: None,
        dpop_nonce: false,
        clock_leeway_seconds: 0,
    };
    let keys = KeySet::load(&harness.keys_dir(), 3600, harness.clock.now()).unwrap();
    let policy = Policy::load(&example_policies(), lifetimes).unwrap();
    let stores =
        Stores { replay: harness.store.clone(), revocation: harness.store.clone(), audit: harness.store.clone() };
    let broker = Broker::new(settings, keys, policy, stores, harness.clock.clone())
        .with_abuse_limits(ThrottleSettings::default(), refusals)
        .with_trusted_proxies(proxies.iter().map(|ip| ip.parse().unwrap()).collect());
    let broker = Arc::new(broker);
    (baton::http::router(broker.clone()), broker)
}

async fn status(router: &axum::Router, request: Request<Body>) -> u16 {
    router.clone().oneshot(request).await.unwrap().status().as_u16()
}

fn forwarded(mut request: Request<Body>, name: &'static str, value: &str) -> Request<Body> {
    request.headers_mut().append(name, value.parse().unwrap());
    request
}

async fn aggregate_of(harness: &Harness, broker: &Broker) -> Vec<baton::store::RefusalCount> {
    broker.flush_refusals().await.unwrap();
    let filter = AuditFilter { action: Some("unauthenticated_refusals".into()), ..AuditFilter::default() };
    harness.store.query(&filter).await.unwrap().pop().unwrap().refusals
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget() {
    let harness = Harness::new();
    let (router, broker) = broker_with(&harness, &["127.0.0.9"], RefusalSettings::default());
    let proxy = "127.0.0.9:3000";
    let via = |client: &str, secret: &str| {
        forwarded(client_credentials(proxy, "orchestrator", secret), "x-forwarded-for", client)
    };
    // One client behind the proxy guesses until its budget is spent...
    for attempt in 0..10 {
        assert_eq!(status(&router, via("203.0.113.1", &format!("guess-{attempt}"))).await, 401);
    }
    assert_eq!(status(&router, via("203.0.113.1", ORCHESTRATOR)).await, 429);
    // ...even when it writes another address on the left of the chain itself.
    assert_eq!(status(&router, via("198.51.100.99, 203.0.113.1", ORCHESTRATOR)).await, 429);
    // Another client behind the same proxy is served (RFC 7239 `Forwarded`).
    let other = forwarded(
        client_credentials(proxy, "orchestrator", ORCHESTRATOR),
        "forwarded",
        r#"for=203.0.113.2;proto=http"#,
    );
    assert_eq!(status(&router, other).await, 200);
    let issued = harness.events().await.pop().unwrap();
    assert_eq!((issued.decision, issued.client_address.as_deref()), (AuditDecision::Issued, Some("203.0.113.2")));
    // A forwarded header from a peer that is not a trusted proxy is ignored:
    // it neither borrows the throttled client's budget nor escapes its own.
    let untrusted = "127.0.0.8:3000";
    let claims_a = |secret: &str| {
        forwarded(client_credentials(untrusted, "orchestrator", secret), "x-forwarded-for", "203.0.113.1")
    };
    assert_eq!(status(&router, claims_a(ORCHESTRATOR)).await, 200);
    assert_eq!(harness.events().await.pop().unwrap().client_address.as_deref(), Some(untrusted));
    for attempt in 0..10 {
        let spoofed = forwarded(
            client_credentials(untrusted, "orchestrator", &format!("guess-{attempt}")),
            "x-forwarded-for",
            &format!("198.51.100.{attempt}"),
        );
        assert_eq!(status(&router, spoofed).await, 401);
    }
    assert_eq!(status(&router, claims_a(ORCHESTRATOR)).await, 429, "counted against the peer itself");
    assert_eq!(status(&router, via("203.0.113.2", ORCHESTRATOR)).await, 200);
    // The refusals are counted by the address the throttle used.
    let refusals = aggregate_of(&harness, &broker).await;
    let guesses = |address: &str| {
        refusals
            .iter()
            .filter(|count| count.reason == "client_wrong_secret" && count.client_address.as_deref() == Some(address))
            .map(|count| count.count)
            .sum::<u64>()
    };
    assert_eq!((guesses("203.0.113.1"), guesses("127.0.0.8")), (10, 10), "{refusals:?}");
}

#[tokio::test]
async fn an_agent_proving_its_secret_is_served_while_junk_spends_its_address() {
    let harness = Harness::new();
    let shared = "127.0.0.21:1000";
    assert_eq!(harness.send(client_credentials(shared, "orchestrator", ORCHESTRATOR)).await.status, 200);
    // Junk with random client ids from the same address, well past the
    // address's budget of 100 a minute, between the agent's requests.
    let mut statuses = Vec::new();
    for round in 0..6 {
        for index in 0..30 {
            let junk = client_credentials(shared, &format!("ghost-{round}-{index}"), "x");
            statuses.push(harness.send(junk).await.status.as_u16());
        }
        assert_eq!(harness.send(client_credentials(shared, "orchestrator", ORCHESTRATOR)).await.status, 200);
    }
    assert!(statuses.iter().filter(|status| **status == 429).count() >= 70, "{statuses:?}");
    // Anyone else from there is throttled...
    assert_throttled(&harness.send(introspection(shared, "airline-api", API_SECRET)).await);
    // ...and the agent's own budget still holds: guessing at it stays slow.
    for attempt in 0..10 {
        let guess = client_credentials(shared, "orchestrator", &format!("guess-{attempt}"));
        harness.send(guess).await.assert_error(401, "invalid_client");
    }
    assert_throttled(&harness.send(client_credentials(shared, "orchestrator", ORCHESTRATOR)).await);
}

#[tokio::test]
async fn past_the_bound_guessing_at_a_registered_agent_stays_named_and_ipv6_is_counted_by_64() {
    let harness = Harness::new();
    let (router, broker) = broker_with(&harness, &[], RefusalSettings { interval: 60, max_keys: 5 });
    // Two hosts of one IPv6 /64: one origin, one count.
    for address in ["[2001:db8:1:2::1]:1000", "[2001:db8:1:2::ffff]:2000"] {
        assert_eq!(status(&router, client_credentials(address, "nobody", "x")).await, 401);
    }
    // Junk from random client ids and addresses fills the bound...
    for index in 0..50 {
        let address = format!("127.0.1.{index}:1");
        assert_eq!(status(&router, client_credentials(&address, &format!("random-{index}"), "x")).await, 401);
    }
    // ...and guessing at a real agent, each guess from another address, still shows.
    for index in 0..7 {
        let address = format!("127.0.2.{index}:1");
        assert_eq!(status(&router, client_credentials(&address, "orchestrator", "guess")).await, 401);
    }
    let refusals = aggregate_of(&harness, &broker).await;
    let v6 = refusals.iter().find(|count| count.claimed_client.as_deref() == Some("nobody")).unwrap();
    assert_eq!((v6.client_address.as_deref(), v6.count), (Some("2001:db8:1:2::/64"), 2), "{refusals:?}");
    let guesses: Vec<_> = refusals.iter().filter(|count| count.reason == "client_wrong_secret").collect();
    assert_eq!(guesses.len(), 1, "{refusals:?}");
    assert_eq!(
        (guesses[0].claimed_client.as_deref(), guesses[0].client_address.as_deref(), guesses[0].overflow),
        (Some("orchestrator"), None, true)
    );
    assert_eq!(guesses[0].count, 7);
    let junk = refusals.iter().find(|count| count.overflow && count.reason == "client_unknown").unwrap();
    assert_eq!(junk.claimed_client, None, "an unregistered client is not kept past the bound");
    assert!(refusals.len() <= 5 + 2, "{refusals:?}");
}
