//! What operators see: JSON logs whose audit records carry their fields,
//! no colour codes in piped text logs, request ids on every answer and in
//! the logs, and latency histograms per route in `/metrics`.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use serde_json::Value;

use crate::harness::{json_of, Harness};
use crate::process::BrokerProcess;

/// The broker's log lines as JSON, once `found` picks one out, within a bounded wait.
async fn logged(broker: &BrokerProcess, found: impl Fn(&Value) -> bool) -> (Vec<Value>, Value) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lines: Vec<Value> = broker.log().lines().map(|line| serde_json::from_str(line).unwrap()).collect();
        if let Some(line) = lines.iter().find(|line| found(line)).cloned() {
            return (lines, line);
        }
        assert!(Instant::now() < deadline, "not logged: {}", broker.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn client_credentials(broker: &BrokerProcess, request_id: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/token", broker.url))
        .basic_auth("orchestrator", Some("dev-only-orchestrator-secret"))
        .header("x-request-id", request_id)
        .form(&[("grant_type", "client_credentials"), ("audience", "planner")])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn json_logs_carry_each_audit_event_as_a_record_under_its_request_id() {
    let broker = BrokerProcess::start(&[("BATON_LOG_FORMAT", "json")]).await;
    let answer = client_credentials(&broker, "walk-1").await;
    assert_eq!(answer.headers()["x-request-id"], "walk-1");
    let body: Value = answer.json().await.unwrap();
    let jti = json_of(body["access_token"].as_str().unwrap())["jti"].as_str().unwrap().to_owned();

    let (lines, audit) = logged(&broker, |line| line["target"] == "baton::audit" && line["decision"] == "issued").await;
    assert_eq!(audit["action"], "client_credentials");
    assert_eq!(audit["agent"], "orchestrator");
    assert_eq!(audit["subject"], "orchestrator");
    assert_eq!(audit["aud"], "planner", "the token's target; `target` is the log line's source");
    assert_eq!(audit["jti"], jti.as_str());
    assert!(audit["scopes_granted"].is_string() && audit["client_address"].is_string(), "{audit}");
    assert!(audit["expires_at"].is_number(), "{audit}");
    assert_eq!(audit["span"]["request_id"], "walk-1", "{audit}");
    assert_eq!(audit["stored"], true, "logged once the store took it: {audit}");
    assert!(audit["timestamp"].is_string() && audit["level"] == "INFO", "{audit}");
    // Every line is one JSON object; the startup lines too.
    assert!(lines.iter().any(|line| line["fields"].is_null() && line["message"] == "baton is serving"), "{lines:?}");
}

#[tokio::test]
async fn text_logs_written_to_a_file_have_no_colour_codes() {
    let broker = BrokerProcess::start(&[]).await;
    client_credentials(&broker, "walk-2").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !broker.log().contains("baton::audit") {
        assert!(Instant::now() < deadline, "no audit line: {}", broker.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = broker.log();
    assert!(!log.contains('\u{1b}'), "{log}");
    // Each field of the audit event stands on its own, not inside a JSON string.
    let audit = log.lines().find(|line| line.contains("baton::audit")).unwrap();
    assert!(audit.contains("decision=\"issued\"") && audit.contains("agent=\"orchestrator\""), "{audit}");
    assert!(audit.contains("request_id=walk-2"), "{audit}");
}

#[tokio::test]
async fn every_answer_has_a_request_id_and_metrics_time_each_route() {
    let harness = Harness::new();
    let token =
        harness.as_agent("orchestrator", &[("grant_type", "client_credentials"), ("audience", "planner")]).await;
    assert_eq!(token.status, 200);
    let refused =
        harness.as_agent("orchestrator", &[("grant_type", "client_credentials"), ("audience", "nobody")]).await;
    assert_eq!(refused.status, 400);
    harness.get("/admin/trace/no-such-token").await;
    harness.get("/no-such-route").await;

    let send = |id: Option<&str>| {
        let mut request = Request::get("/healthz");
        if let Some(id) = id {
            request = request.header("x-request-id", id);
        }
        harness.send(request.body(Body::empty()).unwrap())
    };
    let made = send(None).await;
    let made_id = made.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(made_id.len(), 22, "128 random bits");
    assert_ne!(send(None).await.headers["x-request-id"], made_id.as_str());
    // A plain id from the client is kept; anything else is replaced.
    assert_eq!(send(Some("trace-7")).await.headers["x-request-id"], "trace-7");
    let forged = send(Some("line\tbreak")).await;
    assert_ne!(forged.headers["x-request-id"], "line\tbreak");
    let unknown = harness.get("/no-such-route").await;
    assert!(unknown.headers.contains_key("x-request-id"), "answered with an id even when no route matches");

    let text = crate::abuse::metrics_text(&harness).await;
    let count = |endpoint: &str, status: &str| {
        let prefix =
            format!("baton_http_request_duration_seconds_count{{endpoint=\"{endpoint}\",status=\"{status}\"}} ");
        text.lines().find_map(|line| line.strip_prefix(&prefix)).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0)
    };
    assert_eq!(count("/token", "2xx"), 1, "{text}");
    assert_eq!(count("/token", "4xx"), 1, "{text}");
    assert_eq!(count("/healthz", "2xx"), 4, "{text}");
    // A route's pattern, never the path sent.
    assert!(!text.contains("no-such-token") && !text.contains("no-such-route"), "{text}");
    assert!(text.contains("baton_build_info{version="), "{text}");
    // The state store's operations on the request path are timed too.
    for operation in ["audit_record", "revocation_check"] {
        let prefix = format!("baton_store_operation_duration_seconds_count{{operation=\"{operation}\"}} ");
        let count = text.lines().find_map(|line| line.strip_prefix(&prefix)).and_then(|n| n.parse::<u64>().ok());
        assert!(count.is_some_and(|count| count >= 1), "{operation}: {text}");
    }
}

/// A collector taking OTLP/HTTP JSON at `/v1/traces`: what it received.
async fn collector() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use axum::routing::post;
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                kept.lock().unwrap().push(serde_json::from_slice::<Value>(&body).unwrap());
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

/// Every span in what the collector received.
fn spans(received: &[Value]) -> Vec<Value> {
    let each = |value: &Value, key: &str| value[key].as_array().cloned().unwrap_or_default();
    received
        .iter()
        .flat_map(|export| each(export, "resourceSpans"))
        .flat_map(|resource| each(&resource, "scopeSpans"))
        .flat_map(|scope| each(&scope, "spans"))
        .collect()
}

#[tokio::test]
async fn a_token_exchange_is_a_span_of_the_callers_trace_sent_over_otlp() {
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER: &str = "00f067aa0ba902b7";
    let (endpoint, received) = collector().await;
    let broker = BrokerProcess::start(&[("BATON_OTLP_ENDPOINT", &endpoint)]).await;
    let root: Value = client_credentials(&broker, "otlp-1").await.json().await.unwrap();
    let exchanged = reqwest::Client::new()
        .post(format!("{}/token", broker.url))
        .basic_auth("planner", Some("dev-only-planner-secret"))
        .header("traceparent", format!("00-{TRACE}-{CALLER}-01"))
        .form(&[
            ("grant_type", crate::harness::EXCHANGE),
            ("subject_token", root["access_token"].as_str().unwrap()),
            ("subject_token_type", crate::harness::ACCESS_TOKEN),
            ("audience", "booker"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(exchanged.status(), 200);

    let deadline = Instant::now() + Duration::from_secs(20);
    let span = loop {
        let found = spans(&received.lock().unwrap()).into_iter().find(|span| span["traceId"] == TRACE);
        if let Some(span) = found {
            break span;
        }
        assert!(Instant::now() < deadline, "no span of the caller's trace: {:?}", received.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(span["parentSpanId"], CALLER, "{span}");
    assert_eq!(span["name"], "request", "{span}");
    let attribute = |key: &str| {
        span["attributes"].as_array().unwrap().iter().find(|pair| pair["key"] == key).map(|pair| pair["value"].clone())
    };
    assert_eq!(attribute("grant_type"), Some(serde_json::json!({"stringValue": "token_exchange"})), "{span}");
    assert_eq!(attribute("agent"), Some(serde_json::json!({"stringValue": "planner"})), "{span}");
    assert_eq!(attribute("decision"), Some(serde_json::json!({"stringValue": "issued"})), "{span}");
    // Audit records stay in the log and the store, not in the trace.
    let events = span["events"].as_array().cloned().unwrap_or_default();
    assert!(events.iter().all(|event| event["name"] != "audit"), "{span}");
    // The first request came without a `traceparent`: a trace of its own.
    // (It ended first, so it was exported by now.)
    let all = spans(&received.lock().unwrap());
    let orchestrator = serde_json::json!({"key": "agent", "value": {"stringValue": "orchestrator"}});
    let root = all.iter().find(|span| span["attributes"].as_array().unwrap().contains(&orchestrator)).unwrap();
    assert_ne!(root["traceId"], TRACE, "{root}");
    assert!(root["parentSpanId"].as_str().unwrap_or_default().is_empty(), "{root}");
}
