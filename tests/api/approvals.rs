//! Human approval at impact thresholds, over HTTP: a scope marked
//! for approval answers `authorization_pending`; the approver decides through
//! the admin API or `baton approvals`; the agent repeats with `approval_id`
//! and gets a token whose `delegation` records the approval, once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, Request};
use baton::approvals::Approver;
use baton::clock::{Clock, SystemClock, UnixTime};
use baton::context::Stores;
use baton::store::approvals::{ApprovalPage, ApprovalQuery, Creation};
use baton::store::memory::MemoryStore;
use baton::store::{
    Approval, ApprovalId, ApprovalState, ApprovalStore, AuditDecision, AuditEvent, AuditFilter, AuditStore, StateStore,
    StoreError,
};
use serde_json::{json, Value};

use crate::harness::*;

const BOOK: &[(&str, &str)] = &[("resource", AIRLINE), ("scope", "flights.book")];

async fn admin(harness: &Harness, method: &str, path: &str, body: Option<Value>) -> Response {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json");
    harness.send(request.body(body.map_or_else(Body::empty, |body| Body::from(body.to_string()))).unwrap()).await
}

async fn decide(harness: &Harness, id: &str, verb: &str, approver: &str) -> Response {
    admin(harness, "POST", &format!("/admin/approvals/{id}/{verb}"), Some(json!({ "approver": approver }))).await
}

/// The orchestrator's token and the planner's token for the booker.
async fn two_hops(harness: &Harness) -> (String, String) {
    let root = harness.as_agent("orchestrator", &[("grant_type", "client_credentials"), ("audience", "planner")]).await;
    let hop1 = harness.exchange("planner", root.token(), &[("audience", "booker")]).await;
    (root.token().to_owned(), hop1.token().to_owned())
}

/// Asks for a booking and returns the pending approval's id.
async fn ask(harness: &Harness, hop1: &str) -> String {
    let pending = harness.exchange("booker", hop1, BOOK).await;
    pending.assert_error(400, "authorization_pending");
    pending.body["approval_id"].as_str().unwrap().to_owned()
}

/// The pending-approvals line of `GET /metrics`.
async fn pending_gauge(harness: &Harness) -> String {
    metric_lines(harness, "baton_approvals_pending").await
}

/// The lines of `GET /metrics` that start with `prefix`.
async fn metric_lines(harness: &Harness, prefix: &str) -> String {
    let request = axum::http::Request::get("/metrics").body(axum::body::Body::empty()).unwrap();
    let response = tower::ServiceExt::oneshot(harness.router.clone(), request).await.unwrap();
    let bytes = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    text.lines().filter(|line| line.starts_with(prefix)).collect::<Vec<_>>().join("\n")
}

async fn repeat(harness: &Harness, hop1: &str, id: &str) -> Response {
    harness.exchange("booker", hop1, &[("resource", AIRLINE), ("scope", "flights.book"), ("approval_id", id)]).await
}

#[tokio::test]
async fn a_booking_waits_for_the_owner_and_its_token_records_the_approval() {
    let harness = Harness::new();
    let (_, hop1) = two_hops(&harness).await;

    // Asked: pending, with what a polling client needs (CIBA Core §7.3).
    let pending = harness.exchange("booker", &hop1, BOOK).await;
    pending.assert_error(400, "authorization_pending");
    let id = pending.body["approval_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 22, "128 random bits, base64url: {id}");
    assert_eq!(pending.body["interval"], 5);
    assert_eq!(pending.body["expires_in"], 600);
    assert!(pending.body.get("access_token").is_none());

    // Polled before a decision: still pending, same id.
    let polled = repeat(&harness, &hop1, &id).await;
    polled.assert_error(400, "authorization_pending");
    assert_eq!(polled.body["approval_id"], id.as_str());

    // The approvers see it; only the booker's owner may decide.
    let listed = admin(&harness, "GET", "/admin/approvals", None).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let approvals = listed.body["approvals"].as_array().unwrap();
    assert_eq!(approvals.len(), 1, "{}", listed.body);
    assert_eq!(approvals[0]["id"], id.as_str());
    assert_eq!(approvals[0]["approver"], BOOKER_OWNER);
    assert_eq!(approvals[0]["request"]["agent"], "booker");
    assert_eq!(approvals[0]["request"]["subject"], "orchestrator");
    assert_eq!(approvals[0]["request"]["target"], AIRLINE);
    assert_eq!(approvals[0]["request"]["scope"], "flights.book");
    assert_eq!(approvals[0]["request"]["parent_jti"], claims_of(&hop1).jti.0.as_str());
    assert!(pending_gauge(&harness).await.contains("baton_approvals_pending 1"));
    // Asked and polled once: waiting, not refused.
    let waiting = metric_lines(&harness, "baton_token_requests_awaiting_approval_total").await;
    assert!(waiting.contains("grant_type=\"token_exchange\"} 2"), "{waiting}");
    let refused = metric_lines(&harness, "baton_token_requests_refused_total").await;
    assert!(!refused.contains("approval_pending"), "{refused}");
    decide(&harness, &id, "approve", "platform-team@example.com").await.assert_error(403, "access_denied");
    decide(&harness, &id, "approve", "orchestrator").await.assert_error(403, "access_denied");
    decide(&harness, "AAAAAAAAAAAAAAAAAAAAAA", "approve", BOOKER_OWNER).await.assert_error(404, "invalid_request");
    admin(&harness, "POST", &format!("/admin/approvals/{id}/approve"), Some(json!({"who": "x"})))
        .await
        .assert_error(400, "invalid_request");

    harness.clock.advance(30);
    let approved = decide(&harness, &id, "approve", BOOKER_OWNER).await;
    assert_eq!(approved.status, 200, "{}", approved.body);
    assert_eq!(approved.body["approval"]["state"], "approved");
    decide(&harness, &id, "deny", BOOKER_OWNER).await.assert_error(409, "invalid_request");
    let listed = admin(&harness, "GET", "/admin/approvals", None).await;
    assert_eq!(listed.body["approvals"], json!([]), "decided approvals are no longer pending");
    assert!(pending_gauge(&harness).await.contains("baton_approvals_pending 0"));

    // Repeated: the token, with the approval in its delegation.
    harness.clock.advance(5);
    let issued = repeat(&harness, &hop1, &id).await;
    assert_eq!(issued.status, 200, "{}", issued.body);
    assert_eq!(issued.body["scope"], "flights.book");
    let token = json_of(issued.token());
    assert_eq!(
        token["delegation"]["approval"],
        json!({"id": id, "approver": BOOKER_OWNER, "approved_at": START.0 + 30})
    );
    assert!(token["delegation"]["hops"].as_array().unwrap().iter().all(|hop| hop.get("approval").is_none()));
    // It verifies, deny_unknown_fields and all.
    let claims = baton::token::verify(
        issued.token(),
        harness.broker.keys().as_ref(),
        &baton::token::Validation {
            issuer: ISSUER.into(),
            max_token_bytes: 16 * 1024,
            max_depth: 5,
            algorithms: vec![baton::keys::Algorithm::Es256],
            leeway: 0,
            audience: baton::token::AudienceRule::Any,
        },
        harness.clock.as_ref(),
    )
    .unwrap();
    assert_eq!(claims.claims().delegation.approval.as_ref().unwrap().approver, BOOKER_OWNER);
    // The API sees it through introspection too.
    let introspected = harness
        .send(
            Request::post("/introspect")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::AUTHORIZATION, basic_header("airline-api", "dev-only-airline-api-secret"))
                .body(Body::from(form_body(&[("token", issued.token())])))
                .unwrap(),
        )
        .await;
    assert_eq!(introspected.body["active"], true, "{}", introspected.body);
    assert_eq!(introspected.body["delegation"]["approval"], token["delegation"]["approval"]);

    // Single use.
    repeat(&harness, &hop1, &id).await.assert_error(400, "invalid_grant");

    // Everything is evidence: asked, polled, refused approvers, approved, issued, reused.
    let events = harness.events().await;
    let of = |decision: AuditDecision| {
        events
            .iter()
            .filter(|event| event.decision == decision && event.approval.as_ref().is_some_and(|a| a.id.0 == id))
            .collect::<Vec<_>>()
    };
    assert_eq!(of(AuditDecision::Pending).len(), 2, "asked and polled");
    assert_eq!(of(AuditDecision::Approved).len(), 1);
    assert_eq!(of(AuditDecision::Approved)[0].approval.as_ref().unwrap().approver.as_deref(), Some(BOOKER_OWNER));
    assert_eq!(of(AuditDecision::Approved)[0].agent.as_deref(), Some("booker"));
    let issued_events = of(AuditDecision::Issued);
    assert_eq!(issued_events.len(), 1, "consumed once");
    assert_eq!(issued_events[0].jti.as_ref().unwrap().0, claims_of(issued.token()).jti.0);
    let refused = of(AuditDecision::Refused);
    let reasons: Vec<&str> = refused.iter().filter_map(|event| event.reason.as_deref()).collect();
    assert!(reasons.iter().any(|reason| reason.contains("may not decide")), "{reasons:?}");
    assert!(reasons.iter().any(|reason| reason.contains("already approved")), "{reasons:?}");
    assert!(reasons.iter().any(|reason| reason.contains("already used")), "{reasons:?}");
}

/// The approval covers the request; its id is only a handle. Repeated as it
/// was asked, the request redeems its approval, once; a request that differs
/// in anything does not.
#[tokio::test]
async fn the_same_request_repeated_redeems_its_approval_once() {
    let harness = Harness::new();
    let (_, hop1) = two_hops(&harness).await;
    let id = ask(&harness, &hop1).await;
    // Still pending: the repeat is told the same approval.
    let waiting = harness.exchange("booker", &hop1, BOOK).await;
    assert_eq!(waiting.body["approval_id"], id.as_str(), "{}", waiting.body);
    assert_eq!(decide(&harness, &id, "approve", BOOKER_OWNER).await.status, 200);
    let wider =
        harness.exchange("booker", &hop1, &[("resource", AIRLINE), ("scope", "flights.book flights.read")]).await;
    wider.assert_error(400, "authorization_pending");
    assert_ne!(wider.body["approval_id"], id.as_str());
    let issued = harness.exchange("booker", &hop1, BOOK).await;
    assert_eq!(issued.status, 200, "{}", issued.body);
    assert_eq!(json_of(issued.token())["delegation"]["approval"]["id"], id.as_str());
    let next = harness.exchange("booker", &hop1, BOOK).await;
    next.assert_error(400, "authorization_pending");
    assert_ne!(next.body["approval_id"], id.as_str());
    // An approval past its time is redeemed by nothing: the repeat asks anew.
    let late = next.body["approval_id"].as_str().unwrap().to_owned();
    assert_eq!(decide(&harness, &late, "approve", BOOKER_OWNER).await.status, 200);
    harness.clock.advance(601);
    let after = harness.exchange("booker", &hop1, BOOK).await;
    after.assert_error(400, "authorization_pending");
    assert_ne!(after.body["approval_id"], late.as_str());
}

#[tokio::test]
async fn a_denied_booking_is_access_denied() {
    let harness = Harness::new();
    let (_, hop1) = two_hops(&harness).await;
    let id = ask(&harness, &hop1).await;
    let denied = decide(&harness, &id, "deny", BOOKER_OWNER).await;
    assert_eq!((denied.status.as_u16(), &denied.body["approval"]["state"]), (200, &json!("denied")));
    repeat(&harness, &hop1, &id).await.assert_error(400, "access_denied");
    decide(&harness, &id, "approve", BOOKER_OWNER).await.assert_error(409, "invalid_request");
    repeat(&harness, &hop1, &id).await.assert_error(400, "access_denied");
    let events = harness.events().await;
    assert!(events.iter().any(|event| event.decision == AuditDecision::Denied));
    assert!(events.iter().any(|event| event.decision == AuditDecision::Refused
        && event.reason.as_deref() == Some("the approver denied the request")));
}

#[tokio::test]
async fn an_approval_expires() {
    let harness = Harness::new();
    let (_, hop1) = two_hops(&harness).await;

    // Undecided past its end: expired_token, and it can no longer be approved.
    let id = ask(&harness, &hop1).await;
    harness.clock.advance(599);
    repeat(&harness, &hop1, &id).await.assert_error(400, "authorization_pending");
    harness.clock.advance(1);
    repeat(&harness, &hop1, &id).await.assert_error(400, "expired_token");
    decide(&harness, &id, "approve", BOOKER_OWNER).await.assert_error(400, "expired_token");
    assert_eq!(admin(&harness, "GET", "/admin/approvals", None).await.body["approvals"], json!([]));

    // Approved but not used in time: expired too.
    let id = ask(&harness, &hop1).await;
    assert_eq!(decide(&harness, &id, "approve", BOOKER_OWNER).await.status, 200);
    harness.clock.advance(600);
    repeat(&harness, &hop1, &id).await.assert_error(400, "expired_token");
}

#[tokio::test]
async fn an_approval_covers_exactly_one_request() {
    let harness = Harness::new();
    let (root, hop1) = two_hops(&harness).await;
    let id = ask(&harness, &hop1).await;
    assert_eq!(decide(&harness, &id, "approve", BOOKER_OWNER).await.status, 200);

    // Other scopes.
    harness
        .exchange(
            "booker",
            &hop1,
            &[("resource", AIRLINE), ("scope", "flights.book flights.read"), ("approval_id", &id)],
        )
        .await
        .assert_error(400, "invalid_grant");
    // Another parent token: the planner's next one for the booker.
    let other_parent = harness.exchange("planner", &root, &[("audience", "booker")]).await;
    let refused = repeat(&harness, other_parent.token(), &id).await;
    refused.assert_error(400, "invalid_grant");
    assert_eq!(refused.body["error_description"], baton::error::oauth::APPROVAL_NOT_FOR_THIS_REQUEST);
    // An id that was never issued, and one that is not even shaped like one.
    repeat(&harness, &hop1, "BBBBBBBBBBBBBBBBBBBBBB").await.assert_error(400, "invalid_grant");
    repeat(&harness, &hop1, "../../etc").await.assert_error(400, "invalid_grant");
    // None of that used it up: the request it covers still gets its token.
    let issued = repeat(&harness, &hop1, &id).await;
    assert_eq!(issued.status, 200, "{}", issued.body);
    let reasons: Vec<String> = harness.events().await.into_iter().filter_map(|event| event.reason).collect();
    assert!(reasons.iter().any(|reason| reason == "the approval covers another request"), "{reasons:?}");
    assert!(reasons.iter().any(|reason| reason == "unknown approval id"), "{reasons:?}");
}

/// A Cedar `@approval` mark, on a rule that serves both an API and an agent,
/// and on an agent's own token (`client_credentials`).
fn pay_policies() -> tempfile::TempDir {
    let agent = |id: &str, owner: &str| {
        format!(
            "[[agents]]\nid = \"{id}\"\nowner = \"{owner}\"\npurpose = \"p\"\nexpires = 2030-06-30\n\
             secret_sha256 = \"{}\"\n",
            secret_hash(&format!("dev-only-{id}-secret"))
        )
    };
    let agents = agent("payer", "finance@example.com")
        + &agent("other", "finance@example.com")
        + &agent("helper", "h@example.com");
    policy_folder(
        &agents,
        "[[resources]]\nuri = \"https://pay.example\"\nname = \"Pay\"\nscopes = [\"pay\", \"read\"]\nttl = 300\n",
        "@id(\"pay\")\n@approval(\"payments move money\")\n\
         permit (principal, action == Action::\"issue\", resource == Scope::\"pay\");\n\
         @id(\"read\")\npermit (principal, action == Action::\"issue\", resource == Scope::\"read\");\n",
    )
}

#[tokio::test]
async fn an_annotated_rule_asks_for_approval_of_an_agents_own_token() {
    let policies = pay_policies();
    let harness = Harness::with(Options { policies: policies.path().to_owned(), ..Options::default() });
    let pay = |agent: &'static str, target: &'static str, scope: &'static str, id: Option<String>| {
        let harness = &harness;
        async move {
            let mut form = vec![("grant_type", "client_credentials"), ("resource", target), ("scope", scope)];
            let id = id.unwrap_or_default();
            if !id.is_empty() {
                form.push(("approval_id", &id));
            }
            harness.as_agent(agent, &form).await
        }
    };
    // Reading needs nobody.
    assert_eq!(pay("payer", "https://pay.example", "read", None).await.status, 200);
    let pending = pay("payer", "https://pay.example", "pay", None).await;
    pending.assert_error(400, "authorization_pending");
    let id = pending.body["approval_id"].as_str().unwrap().to_owned();
    let listed = admin(&harness, "GET", "/admin/approvals", None).await;
    assert_eq!(listed.body["approvals"][0]["marked_by"], json!(["rules.cedar#pay: payments move money"]));
    assert_eq!(decide(&harness, &id, "approve", "finance@example.com").await.status, 200);

    // Another agent, even one with the same owner, another target, other scopes: not this request.
    pay("other", "https://pay.example", "pay", Some(id.clone())).await.assert_error(400, "invalid_grant");
    harness
        .as_agent(
            "payer",
            &[("grant_type", "client_credentials"), ("audience", "helper"), ("scope", "pay"), ("approval_id", &id)],
        )
        .await
        .assert_error(400, "invalid_grant");
    pay("payer", "https://pay.example", "pay read", Some(id.clone())).await.assert_error(400, "invalid_grant");

    let issued = pay("payer", "https://pay.example", "pay", Some(id.clone())).await;
    assert_eq!(issued.status, 200, "{}", issued.body);
    assert_eq!(json_of(issued.token())["delegation"]["approval"]["approver"], "finance@example.com");
    assert_eq!(json_of(issued.token())["delegation"]["depth"], 0);
}

#[tokio::test]
async fn the_subject_approves_when_configured_so() {
    let harness = Harness::with(Options { approver: Approver::Subject, ..Options::default() });
    let (_, hop1) = two_hops(&harness).await;
    let id = ask(&harness, &hop1).await;
    // The subject here is the orchestrator, an agent: it may not approve
    // its own chain's booking; its owner answers for it.
    decide(&harness, &id, "approve", BOOKER_OWNER).await.assert_error(403, "access_denied");
    decide(&harness, &id, "approve", "orchestrator").await.assert_error(403, "access_denied");
    assert_eq!(decide(&harness, &id, "approve", "platform-team@example.com").await.status, 200);
    let issued = repeat(&harness, &hop1, &id).await;
    assert_eq!(json_of(issued.token())["delegation"]["approval"]["approver"], "platform-team@example.com");
}

#[tokio::test]
async fn the_approval_stamp_travels_into_the_hops_of_descendants() {
    // A booking right approved at an agent hop, by an annotated rule: the
    // approved token's child lists it in its hop.
    let agent = |id: &str| {
        format!(
            "[[agents]]\nid = \"{id}\"\nowner = \"o@example.com\"\npurpose = \"p\"\nexpires = 2030-06-30\n\
             secret_sha256 = \"{}\"\n",
            secret_hash(&format!("dev-only-{id}-secret"))
        )
    };
    // `a` exchanges a token addressed to itself: acting twice in the chain,
    // which its registration allows.
    let policies = policy_folder(
        &(agent("a") + "may_act_again = true\n" + &agent("b")),
        "[[resources]]\nuri = \"https://api.example\"\nname = \"API\"\nscopes = [\"x\"]\nttl = 300\n",
        "permit (principal == Agent::\"a\", action == Action::\"issue\", resource);\n\
         @id(\"to-b\")\n@approval(\"b acts for a\")\n\
         permit (principal == Agent::\"a\", action == Action::\"exchange\", resource) when { context.target == \"b\" };\n\
         permit (principal == Agent::\"b\", action == Action::\"exchange\", resource);\n",
    );
    let harness = Harness::with(Options { policies: policies.path().to_owned(), ..Options::default() });
    let root = harness.as_agent("a", &[("grant_type", "client_credentials"), ("audience", "a")]).await;
    assert_eq!(root.status, 200, "{}", root.body);
    let approved = harness.approved_exchange("a", root.token(), &[("audience", "b")]).await;
    assert_eq!(approved.status, 200, "{}", approved.body);
    let stamp = json_of(approved.token())["delegation"]["approval"].clone();
    assert_eq!(stamp["approver"], "o@example.com");
    let child = harness.exchange("b", approved.token(), &[("resource", "https://api.example")]).await;
    assert_eq!(child.status, 200, "{}", child.body);
    let child = json_of(child.token());
    assert!(child["delegation"].get("approval").is_none(), "the child itself needed none");
    assert_eq!(child["delegation"]["hops"][1]["approval"], stamp);
    assert!(child["delegation"]["hops"][0].get("approval").is_none());
}

/// A webhook receiver on 127.0.0.1 that hands every posted body to the test.
async fn webhook_receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let sender = sender.clone();
            async move {
                let _ = sender.send(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, receiver)
}

#[tokio::test]
async fn approvers_are_told_by_webhook_and_a_failing_webhook_fails_nothing() {
    let (url, mut received) = webhook_receiver().await;
    let harness = Harness::with(Options { approval_webhook: Some(url), ..Options::default() });
    let (_, hop1) = two_hops(&harness).await;
    let id = ask(&harness, &hop1).await;
    let notice = tokio::time::timeout(Duration::from_secs(10), received.recv()).await.unwrap().unwrap();
    assert_eq!(
        notice,
        json!({
            "event": "approval_requested",
            "approval_id": id,
            "subject": "orchestrator",
            "agent": "booker",
            "parent_jti": claims_of(&hop1).jti.0,
            "target": AIRLINE,
            "scopes": "flights.book",
            "scopes_needing_approval": "flights.book",
            "approver": BOOKER_OWNER,
            "created_at": START.0,
            "expires_at": START.0 + 600,
        })
    );
    assert!(!notice.to_string().contains(&hop1), "no token in the notice");
    // A poll announces nothing new, and neither does the same request
    // asked again without the id: it is told the waiting approval's id.
    repeat(&harness, &hop1, &id).await.assert_error(400, "authorization_pending");
    assert_eq!(ask(&harness, &hop1).await, id);
    assert!(tokio::time::timeout(Duration::from_millis(300), received.recv()).await.is_err());
    assert_eq!(admin(&harness, "GET", "/admin/approvals", None).await.body["approvals"].as_array().unwrap().len(), 1);
    // Another request (another scope set) is another approval.
    let both = [("resource", AIRLINE), ("scope", "flights.book flights.read")];
    let other = harness.exchange("booker", &hop1, &both).await;
    other.assert_error(400, "authorization_pending");
    assert_ne!(other.body["approval_id"], id.as_str());
    let other_notice = tokio::time::timeout(Duration::from_secs(10), received.recv()).await.unwrap().unwrap();
    assert_eq!(other_notice["approval_id"], other.body["approval_id"]);

    // Nobody listening: the request is still answered, and still listed.
    let closed = format!("http://127.0.0.1:{}/hook", crate::process::free_port());
    let harness = Harness::with(Options { approval_webhook: Some(closed), ..Options::default() });
    let (_, hop1) = two_hops(&harness).await;
    let id = ask(&harness, &hop1).await;
    assert_eq!(admin(&harness, "GET", "/admin/approvals", None).await.body["approvals"][0]["id"], id.as_str());
}

/// Approvals that cannot be read or written.
struct Unreachable;

#[async_trait]
impl ApprovalStore for Unreachable {
    async fn create(&self, _: &Approval, _: usize) -> Result<Creation, StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
    async fn approval(&self, _: &ApprovalId) -> Result<Option<Approval>, StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
    async fn transition(&self, _: ApprovalState, _: &Approval) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
    async fn list(&self, _: &ApprovalQuery) -> Result<ApprovalPage, StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
    async fn count_pending(&self, _: UnixTime) -> Result<u64, StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
}

/// An audit trail that cannot record an issuance while `down` is set: the
/// broker then hands out no token.
struct IssuancesUnrecorded {
    trail: MemoryStore,
    down: AtomicBool,
}

#[async_trait]
impl AuditStore for IssuancesUnrecorded {
    async fn record(&self, event: AuditEvent) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) && event.decision == AuditDecision::Issued {
            return Err(StoreError::Io("disk full".into()));
        }
        self.trail.record(event).await
    }
    async fn query(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        self.trail.query(filter).await
    }
    async fn count(&self, filter: &AuditFilter) -> Result<usize, StoreError> {
        self.trail.count(filter).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_spent_on_a_token_that_never_left_is_usable_once_again() {
    let state = Arc::new(MemoryStore::new());
    let audit = Arc::new(IssuancesUnrecorded { trail: MemoryStore::new(), down: AtomicBool::new(false) });
    let stores = Stores { replay: state.clone(), revocation: state, audit: audit.clone() };
    let harness = Harness::with(Options { stores: Some(stores), ..Options::default() });
    let (_, hop1) = two_hops(&harness).await;
    let id = ask(&harness, &hop1).await;
    assert_eq!(decide(&harness, &id, "approve", BOOKER_OWNER).await.status, 200);

    // The token is minted but its issuance cannot be recorded: not handed
    // out, and the approval is not spent on it.
    audit.down.store(true, Ordering::SeqCst);
    repeat(&harness, &hop1, &id).await.assert_error(503, "temporarily_unavailable");
    audit.down.store(false, Ordering::SeqCst);

    // Concurrent repeats: exactly one gets the token.
    let repeats = (0..4).map(|_| repeat(&harness, &hop1, &id));
    let answers = futures_util::future::join_all(repeats).await;
    let issued: Vec<&Response> = answers.iter().filter(|answer| answer.status == 200).collect();
    assert_eq!(issued.len(), 1, "{:?}", answers.iter().map(|answer| &answer.body).collect::<Vec<_>>());
    assert_eq!(json_of(issued[0].token())["delegation"]["approval"]["id"], id.as_str());
    for refused in answers.iter().filter(|answer| answer.status != 200) {
        refused.assert_error(400, "invalid_grant");
    }
    repeat(&harness, &hop1, &id).await.assert_error(400, "invalid_grant");
    let filter = AuditFilter { decision: Some(AuditDecision::Issued), ..AuditFilter::default() };
    let issuances = audit.query(&filter).await.unwrap();
    let under_approval = issuances.iter().filter(|event| event.approval.as_ref().is_some_and(|a| a.id.0 == id));
    assert_eq!(under_approval.count(), 1);
}

#[tokio::test]
async fn unreachable_approvals_fail_closed() {
    let harness = Harness::with(Options { approval_store: Some(Arc::new(Unreachable)), ..Options::default() });
    let (_, hop1) = two_hops(&harness).await;
    harness.exchange("booker", &hop1, BOOK).await.assert_error(503, "temporarily_unavailable");
    repeat(&harness, &hop1, "CCCCCCCCCCCCCCCCCCCCCC").await.assert_error(503, "temporarily_unavailable");
    admin(&harness, "GET", "/admin/approvals", None).await.assert_error(503, "temporarily_unavailable");
    decide(&harness, "CCCCCCCCCCCCCCCCCCCCCC", "approve", BOOKER_OWNER)
        .await
        .assert_error(503, "temporarily_unavailable");
    // Scopes that need no approval do not touch it.
    let read = harness.exchange("booker", &hop1, &[("resource", AIRLINE), ("scope", "flights.read")]).await;
    assert_eq!(read.status, 200, "{}", read.body);
}

#[tokio::test]
async fn on_redis_an_approval_asked_on_one_node_is_decided_on_another() {
    let server = crate::redis_server::RedisServer::start();
    let redis = || async {
        Arc::new(baton::store::redis::RedisStore::connect(&server.url(), "baton:").await.unwrap())
            as Arc<dyn StateStore>
    };
    let node = |store: Arc<dyn StateStore>| {
        Harness::with(Options {
            stores: Some(baton::context::Stores {
                replay: store.clone(),
                revocation: store.clone(),
                audit: store.clone(),
            }),
            approval_store: Some(store),
            start: SystemClock.now(),
            ..Options::default()
        })
    };
    let (asking, deciding) = (node(redis().await), node(redis().await));
    let (_, hop1) = two_hops(&asking).await;
    let id = ask(&asking, &hop1).await;
    let listed = admin(&deciding, "GET", "/admin/approvals", None).await;
    assert_eq!(listed.body["approvals"][0]["id"], id.as_str(), "{}", listed.body);
    decide(&deciding, &id, "approve", "someone@example.com").await.assert_error(403, "access_denied");
    assert_eq!(decide(&deciding, &id, "approve", BOOKER_OWNER).await.status, 200);
    let issued = repeat(&asking, &hop1, &id).await;
    assert_eq!(issued.status, 200, "{}", issued.body);
    assert_eq!(json_of(issued.token())["delegation"]["approval"]["id"], id.as_str());
    repeat(&asking, &hop1, &id).await.assert_error(400, "invalid_grant");

    // Repeated without its id, an approved request is found across nodes too.
    let again = ask(&asking, &hop1).await;
    assert_eq!(decide(&deciding, &again, "approve", BOOKER_OWNER).await.status, 200);
    let issued = asking.exchange("booker", &hop1, BOOK).await;
    assert_eq!(json_of(issued.token())["delegation"]["approval"]["id"], again.as_str());

    let denied = ask(&asking, &hop1).await;
    assert_eq!(decide(&deciding, &denied, "deny", BOOKER_OWNER).await.status, 200);
    repeat(&asking, &hop1, &denied).await.assert_error(400, "access_denied");
    let late = ask(&asking, &hop1).await;
    asking.clock.advance(600);
    repeat(&asking, &hop1, &late).await.assert_error(400, "expired_token");
}

#[tokio::test]
async fn baton_approvals_lists_approves_and_denies_through_the_admin_api() {
    const ADMIN: &str = "approvals-cli-admin-token-5e1f0b";
    let hash = secret_hash(ADMIN);
    let broker = crate::process::BrokerProcess::start(&[("BATON_ADMIN_TOKEN_SHA256", &hash)]).await;
    let client = reqwest::Client::new();
    let token = |agent: &'static str, form: Vec<(&'static str, String)>| {
        let client = client.clone();
        let url = format!("{}/token", broker.url);
        async move {
            let response = client
                .post(url)
                .basic_auth(agent, Some(format!("dev-only-{agent}-secret")))
                .form(&form)
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        }
    };
    let exchange = |subject: &str, extra: &[(&'static str, &str)]| {
        let mut form = vec![
            ("grant_type", EXCHANGE.to_owned()),
            ("subject_token", subject.to_owned()),
            ("subject_token_type", ACCESS_TOKEN.to_owned()),
        ];
        form.extend(extra.iter().map(|(name, value)| (*name, (*value).to_owned())));
        form
    };
    let (_, root) = token("orchestrator", vec![("grant_type", "client_credentials".into())]).await;
    let (_, hop1) = token("planner", exchange(root["access_token"].as_str().unwrap(), &[("audience", "booker")])).await;
    let hop1 = hop1["access_token"].as_str().unwrap().to_owned();
    let (status, pending) = token("booker", exchange(&hop1, BOOK)).await;
    assert_eq!((status, pending["error"].as_str()), (400, Some("authorization_pending")), "{pending}");
    let id = pending["approval_id"].as_str().unwrap().to_owned();

    let baton = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(args)
            .args(["--url", &broker.url])
            .current_dir(broker.folder.path())
            .env_clear()
            .env("BATON_ADMIN_TOKEN", ADMIN)
            .output()
            .unwrap()
    };
    let listed = baton(&["approvals", "list"]);
    let text = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.status.success(), "{text}{}", String::from_utf8_lossy(&listed.stderr));
    let row = text.lines().find(|line| line.starts_with(&id)).unwrap_or_else(|| panic!("{text}"));
    assert!(row.contains("booker") && row.contains(AIRLINE) && row.contains(BOOKER_OWNER), "{text}");

    let wrong = baton(&["approvals", "deny", &id, "--as", "mallory@example.com"]);
    let error = String::from_utf8_lossy(&wrong.stderr).into_owned();
    assert!(!wrong.status.success());
    assert!(error.contains("403") && error.contains("access_denied"), "{error}");
    assert!(!error.contains(ADMIN), "the admin token never shows");

    let approved = baton(&["approvals", "approve", &id, "--as", BOOKER_OWNER]);
    let text = String::from_utf8_lossy(&approved.stdout).into_owned();
    assert!(approved.status.success(), "{text}{}", String::from_utf8_lossy(&approved.stderr));
    assert!(text.contains(&format!("approved {id} as {BOOKER_OWNER}")), "{text}");
    let (status, issued) = token("booker", exchange(&hop1, &[BOOK[0], BOOK[1], ("approval_id", &id)])).await;
    assert_eq!(status, 200, "{issued}");
    assert_eq!(json_of(issued["access_token"].as_str().unwrap())["delegation"]["approval"]["id"], id.as_str());
    let empty = baton(&["approvals", "list"]);
    assert_eq!(String::from_utf8_lossy(&empty.stdout), "no pending approvals\n");

    // Asked again and denied from the command line: the repeat is access_denied.
    let (status, pending) = token("booker", exchange(&hop1, BOOK)).await;
    assert_eq!((status, pending["error"].as_str()), (400, Some("authorization_pending")), "{pending}");
    let id = pending["approval_id"].as_str().unwrap().to_owned();
    let denied = baton(&["approvals", "deny", &id, "--as", BOOKER_OWNER]);
    let text = String::from_utf8_lossy(&denied.stdout).into_owned();
    assert!(denied.status.success(), "{text}{}", String::from_utf8_lossy(&denied.stderr));
    assert!(text.contains(&format!("denied {id} as {BOOKER_OWNER}")), "{text}");
    let (status, refused) = token("booker", exchange(&hop1, &[BOOK[0], BOOK[1], ("approval_id", &id)])).await;
    assert_eq!((status, refused["error"].as_str()), (400, Some("access_denied")), "{refused}");
    let again = baton(&["approvals", "deny", &id, "--as", BOOKER_OWNER]);
    assert!(!again.status.success(), "a decided approval is not decided again");

    // Filtered by state and agent, a page at a time.
    let denied = baton(&["approvals", "list", "--state", "denied", "--agent", "booker", "--limit", "1"]);
    let text = String::from_utf8_lossy(&denied.stdout).into_owned();
    assert!(denied.status.success(), "{text}{}", String::from_utf8_lossy(&denied.stderr));
    assert!(text.lines().any(|line| line.starts_with(&id)), "{text}");
    let next = text.lines().find_map(|line| line.strip_prefix("more: repeat with --before "));
    let next = next.unwrap_or_else(|| panic!("a full page says where the next starts: {text}"));
    let rest = baton(&["approvals", "list", "--state", "denied", "--agent", "booker", "--before", next]);
    assert_eq!(String::from_utf8_lossy(&rest.stdout), "no denied approvals\n");
    let bad = baton(&["approvals", "list", "--state", "maybe"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid_request"));
}

#[tokio::test]
async fn past_the_cap_a_new_request_is_refused_and_audited_while_others_are_served() {
    let harness = Harness::with(Options { max_pending_approvals: 2, ..Options::default() });
    let (root, hop1) = two_hops(&harness).await;
    // Each parent token makes another request: two fill the booker's cap.
    let parent = || async { harness.exchange("planner", &root, &[("audience", "booker")]).await.token().to_owned() };
    let first = ask(&harness, &hop1).await;
    let second_parent = parent().await;
    let second = ask(&harness, &second_parent).await;
    assert_ne!(first, second);

    let third_parent = parent().await;
    let refused = harness.exchange("booker", &third_parent, BOOK).await;
    refused.assert_error(429, "temporarily_unavailable");
    assert!(refused.body.get("approval_id").is_none(), "{}", refused.body);
    let description = refused.body["error_description"].as_str().unwrap();
    assert!(description.contains("too many") && !description.contains("booker"), "{description}");
    assert_eq!(admin(&harness, "GET", "/admin/approvals", None).await.body["approvals"].as_array().unwrap().len(), 2);

    // A repeat of a pending request still gets its id; what needs no
    // approval is served; other agents are served.
    assert_eq!(ask(&harness, &hop1).await, first);
    let read = harness.exchange("booker", &third_parent, &[("resource", AIRLINE), ("scope", "flights.read")]).await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert!(!parent().await.is_empty(), "the planner is served");

    // Audited one by one (the agent authenticated), and counted.
    let events = harness.events().await;
    let capped: Vec<&AuditEvent> = events
        .iter()
        .filter(|event| event.reason.as_deref() == Some("the agent has too many requests waiting for approval"))
        .collect();
    assert_eq!(capped.len(), 1, "{events:?}");
    assert_eq!((capped[0].decision, capped[0].agent.as_deref()), (AuditDecision::Refused, Some("booker")));
    let counted = metric_lines(&harness, "baton_token_requests_refused_total").await;
    assert!(counted.contains("reason=\"approval_too_many_pending\"} 1"), "{counted}");

    // A decision makes room.
    assert_eq!(decide(&harness, &second, "deny", BOOKER_OWNER).await.status, 200);
    let third = ask(&harness, &third_parent).await;
    assert!(third != first && third != second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_requests_at_once_make_one_approval_and_one_webhook_post() {
    let (url, mut received) = webhook_receiver().await;
    let harness = Harness::with(Options { approval_webhook: Some(url), ..Options::default() });
    let (_, hop1) = two_hops(&harness).await;
    let answers = futures_util::future::join_all((0..8).map(|_| harness.exchange("booker", &hop1, BOOK))).await;
    for answer in &answers {
        answer.assert_error(400, "authorization_pending");
    }
    let id = answers[0].body["approval_id"].as_str().unwrap();
    assert!(answers.iter().all(|answer| answer.body["approval_id"] == id), "one approval for one request");
    let notice = tokio::time::timeout(Duration::from_secs(10), received.recv()).await.unwrap().unwrap();
    assert_eq!(notice["approval_id"], id);
    assert!(tokio::time::timeout(Duration::from_millis(300), received.recv()).await.is_err(), "posted once");
    let listed = admin(&harness, "GET", "/admin/approvals", None).await;
    assert_eq!(listed.body["approvals"].as_array().unwrap().len(), 1, "{}", listed.body);
}

/// Approvals that count how often they are listed or read one by one.
struct Counting {
    inner: MemoryStore,
    reads: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl ApprovalStore for Counting {
    async fn create(&self, approval: &Approval, cap: usize) -> Result<Creation, StoreError> {
        self.inner.create(approval, cap).await
    }
    async fn approval(&self, id: &ApprovalId) -> Result<Option<Approval>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.approval(id).await
    }
    async fn transition(&self, from: ApprovalState, next: &Approval) -> Result<bool, StoreError> {
        self.inner.transition(from, next).await
    }
    async fn list(&self, query: &ApprovalQuery) -> Result<ApprovalPage, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.list(query).await
    }
    async fn count_pending(&self, now: UnixTime) -> Result<u64, StoreError> {
        self.inner.count_pending(now).await
    }
}

/// Every approval `GET /admin/approvals?{query}` lists, following `next`.
async fn every_listed(harness: &Harness, query: &str) -> Vec<Value> {
    let mut listed = Vec::new();
    let mut path = format!("/admin/approvals?{query}");
    for _ in 0..50 {
        let page = admin(harness, "GET", &path, None).await;
        assert_eq!(page.status, 200, "{}", page.body);
        listed.extend(page.body["approvals"].as_array().unwrap().iter().cloned());
        match page.body["next"].as_str() {
            Some(next) => path = format!("/admin/approvals?{query}&before={next}"),
            None => return listed,
        }
    }
    panic!("the listing did not end");
}

#[tokio::test]
async fn with_many_pending_the_scrape_reads_a_count_and_the_listing_shows_the_newest_first() {
    let store = Arc::new(Counting { inner: MemoryStore::new(), reads: Default::default() });
    let harness = Harness::with(Options { approval_store: Some(store.clone()), ..Options::default() });
    // 1,100 pending, asked a minute ago by 110 other agents: straight into the store.
    const MANY: usize = 1_100;
    for index in 0..MANY {
        let approval = Approval {
            id: ApprovalId(format!("direct-{index:04}")),
            request: baton::store::Fingerprint {
                subject: "someone".into(),
                agent: format!("agent-{}", index % 110),
                parent_jti: Some(baton::claims::TokenId(format!("parent-{index}"))),
                target: AIRLINE.into(),
                scope: baton::claims::ScopeSet::parse("flights.book").unwrap(),
            },
            grant_type: EXCHANGE.into(),
            scopes_needing_approval: baton::claims::ScopeSet::parse("flights.book").unwrap(),
            marked_by: vec![],
            approver: BOOKER_OWNER.into(),
            created_at: START.plus(-60),
            expires_at: START.plus(540),
            state: ApprovalState::Pending,
            decision: None,
        };
        assert_eq!(store.create(&approval, 20).await.unwrap(), Creation::Created);
    }

    // The scrape reads the count, not the approvals.
    assert_eq!(pending_gauge(&harness).await, format!("baton_approvals_pending {MANY}"));
    assert_eq!(store.reads.load(Ordering::SeqCst), 0, "/metrics neither lists nor reads approvals");

    // Past 1,000 pending: a new request is listed first, and its repeat gets its id.
    let (_, hop1) = two_hops(&harness).await;
    let id = ask(&harness, &hop1).await;
    assert_eq!(ask(&harness, &hop1).await, id);
    assert_eq!(pending_gauge(&harness).await, format!("baton_approvals_pending {}", MANY + 1));
    let first = admin(&harness, "GET", "/admin/approvals", None).await;
    assert_eq!(first.body["approvals"][0]["id"], id.as_str(), "the newest first");
    assert_eq!(first.body["approvals"].as_array().unwrap().len(), 50, "one page by default");
    assert!(first.body["next"].is_string(), "{}", first.body["next"]);

    // Every page bounded, every approval once, newest first.
    let all = every_listed(&harness, "limit=200").await;
    assert_eq!(all.len(), MANY + 1);
    let mut ids: Vec<&str> = all.iter().map(|approval| approval["id"].as_str().unwrap()).collect();
    assert_eq!(ids[1], "direct-1099");
    assert_eq!(ids[MANY], "direct-0000");
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), MANY + 1);

    // By agent, and by state.
    let booker = every_listed(&harness, "agent=booker&limit=1").await;
    assert_eq!(booker.iter().map(|approval| approval["id"].as_str().unwrap()).collect::<Vec<_>>(), [id.as_str()]);
    assert_eq!(every_listed(&harness, "agent=agent-7").await.len(), 10);
    assert_eq!(decide(&harness, &id, "deny", BOOKER_OWNER).await.status, 200);
    let denied = admin(&harness, "GET", "/admin/approvals?state=denied", None).await;
    assert_eq!(denied.body["approvals"][0]["id"], id.as_str(), "{}", denied.body);
    assert_eq!(denied.body["next"], Value::Null);
    let pending = admin(&harness, "GET", "/admin/approvals?agent=booker", None).await;
    assert_eq!(pending.body["approvals"], json!([]));
    assert_eq!(pending_gauge(&harness).await, format!("baton_approvals_pending {MANY}"));

    // Questions that are not valid are refused, never answered with everything.
    for bad in ["state=bogus", "limit=0", "limit=201", "limit=x", "before=garbage", "agent=", "page=2"] {
        admin(&harness, "GET", &format!("/admin/approvals?{bad}"), None).await.assert_error(400, "invalid_request");
    }
}
