//! The console for security teams: sign-in, the session cookie, CSRF on
//! state changes, the security headers, and pages that render what agents
//! registered as text. Driven through the router, as a browser would post.

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use baton::clock::Clock;
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::harness::*;

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn send(harness: &Harness, request: Request<Body>) -> Page {
    let response = harness.router.clone().oneshot(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let body = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    Page { status, headers, body }
}

async fn get(harness: &Harness, path: &str, cookie: Option<&str>) -> Page {
    let mut request = Request::get(path);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    send(harness, request.body(Body::empty()).unwrap()).await
}

async fn post(harness: &Harness, path: &str, cookie: Option<&str>, form: &str) -> Page {
    let mut request = Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    send(harness, request.body(Body::from(form.to_owned())).unwrap()).await
}

/// Signs in with the admin credential; the session cookie, as `name=value`.
async fn sign_in(harness: &Harness) -> String {
    let signed_in = post(harness, "/console/sign-in", None, &format!("admin_token={ADMIN_TOKEN}")).await;
    assert_eq!(signed_in.status, StatusCode::SEE_OTHER, "{}", signed_in.body);
    let cookie = signed_in.headers[header::SET_COOKIE].to_str().unwrap();
    cookie.split(';').next().unwrap().to_owned()
}

/// The CSRF token a page's forms carry.
fn csrf(page: &Page) -> String {
    let start = page.body.find("name=\"csrf\" value=\"").expect(&page.body) + "name=\"csrf\" value=\"".len();
    page.body[start..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn signing_in_takes_the_admin_credential_and_sets_a_strict_cookie() {
    let harness = Harness::new();
    let refused = post(&harness, "/console/sign-in", None, "admin_token=not-it").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.headers.get(header::SET_COOKIE).is_none());
    assert!(refused.body.contains("not the admin credential"), "{}", refused.body);

    let signed_in = post(&harness, "/console/sign-in", None, &format!("admin_token={ADMIN_TOKEN}")).await;
    assert_eq!(signed_in.status, StatusCode::SEE_OTHER);
    assert_eq!(signed_in.headers[header::LOCATION], "/console/agents");
    let cookie = signed_in.headers[header::SET_COOKIE].to_str().unwrap();
    let attributes: Vec<&str> = cookie.split("; ").collect();
    assert!(attributes[0].starts_with("baton_console=") && attributes[0].len() > 40, "{cookie}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age=28800"] {
        assert!(attributes.contains(&attribute), "{attribute} missing: {cookie}");
    }
    // The issuer is http here: a Secure cookie would never come back.
    assert!(!attributes.contains(&"Secure"), "{cookie}");
    let https = Harness::with(Options { issuer: "https://baton.example".into(), ..Options::default() });
    let signed_in = post(&https, "/console/sign-in", None, &format!("admin_token={ADMIN_TOKEN}")).await;
    assert!(signed_in.headers[header::SET_COOKIE].to_str().unwrap().ends_with("; Secure"));
}

/// A sign-in form posted from `peer`, as the server records it.
async fn sign_in_from(harness: &Harness, peer: &str, token: &str) -> Page {
    let request = Request::post("/console/sign-in")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .extension(axum::extract::ConnectInfo(peer.parse::<std::net::SocketAddr>().unwrap()))
        .body(Body::from(format!("admin_token={token}")))
        .unwrap();
    send(harness, request).await
}

#[tokio::test]
async fn guessing_the_admin_credential_is_throttled_per_address() {
    let harness = Harness::new();
    let mut wrong = 0;
    let throttled = loop {
        let page = sign_in_from(&harness, "10.0.0.1:4000", "guess").await;
        if page.status == StatusCode::TOO_MANY_REQUESTS {
            break page;
        }
        assert_eq!(page.status, StatusCode::FORBIDDEN);
        wrong += 1;
        assert!(wrong < 100, "never throttled");
    };
    assert!(throttled.headers.contains_key(header::RETRY_AFTER));
    // Refused unchecked: even the right credential, from there.
    let right = sign_in_from(&harness, "10.0.0.1:4001", ADMIN_TOKEN).await;
    assert_eq!(right.status, StatusCode::TOO_MANY_REQUESTS);
    // The admin API shares that address's budget.
    let api = Request::get("/admin/agents")
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
        .extension(axum::extract::ConnectInfo("10.0.0.1:4002".parse::<std::net::SocketAddr>().unwrap()))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&harness, api).await.status, StatusCode::TOO_MANY_REQUESTS);
    // Another address is not locked out by it.
    let elsewhere = sign_in_from(&harness, "10.9.9.9:4000", ADMIN_TOKEN).await;
    assert_eq!(elsewhere.status, StatusCode::SEE_OTHER, "{}", elsewhere.body);
}

#[tokio::test]
async fn every_page_forbids_foreign_scripts_and_frames() {
    let harness = Harness::new();
    for path in ["/console/sign-in", "/console/console.css"] {
        let page = get(&harness, path, None).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        let policy = page.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert_eq!(
            policy,
            "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        );
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        assert_eq!(page.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(page.headers[header::X_FRAME_OPTIONS], "DENY");
    }
    // A post another site's page made the browser send is refused unread.
    let cross_site = Request::post("/console/sign-in")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "cross-site")
        .header(header::ORIGIN, "https://attacker.example");
    let refused = send(&harness, cross_site.body(Body::from(format!("admin_token={ADMIN_TOKEN}"))).unwrap()).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.headers.get(header::SET_COOKIE).is_none());
    let sign_in_page = get(&harness, "/console/sign-in", None).await;
    // No script at all, inline or not; the style sheet is the console's own.
    assert!(!sign_in_page.body.contains("<script"), "{}", sign_in_page.body);
    assert!(sign_in_page.body.contains("href=\"/console/console.css\""));
}

#[tokio::test]
async fn the_agents_page_needs_a_live_session() {
    let harness = Harness::new();
    let anonymous = get(&harness, "/console/agents", None).await;
    assert_eq!(
        (anonymous.status, &anonymous.headers[header::LOCATION]),
        (StatusCode::SEE_OTHER, &"/console/sign-in".parse().unwrap())
    );
    let forged = get(&harness, "/console/agents", Some("baton_console=forged")).await;
    assert_eq!(forged.status, StatusCode::SEE_OTHER);

    let cookie = sign_in(&harness).await;
    let agents = get(&harness, "/console/agents", Some(&cookie)).await;
    assert_eq!(agents.status, StatusCode::OK);
    for agent in ["booker", "orchestrator", "planner", "scout"] {
        assert!(agents.body.contains(&format!("data-agent=\"{agent}\"")), "{agent}: {}", agents.body);
    }
    assert!(agents.body.contains("Books flights with the airline API"));

    // A cookie planted under the same name (on a longer path, sent first)
    // does not shadow the real one.
    let planted = format!("baton_console=planted; {cookie}");
    assert_eq!(get(&harness, "/console/agents", Some(&planted)).await.status, StatusCode::OK);

    // A session lasts a working day.
    harness.clock.advance(8 * 3600);
    let stale = get(&harness, "/console/agents", Some(&cookie)).await;
    assert_eq!(stale.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn signing_out_needs_the_forms_csrf_token() {
    let harness = Harness::new();
    let cookie = sign_in(&harness).await;
    let page = get(&harness, "/console/agents", Some(&cookie)).await;
    let token = csrf(&page);

    // Without the token, with another, or without the session: refused, and the session lives.
    for (cookie, form) in [
        (Some(cookie.as_str()), String::new()),
        (Some(cookie.as_str()), "csrf=forged".into()),
        (None, format!("csrf={token}")),
    ] {
        let refused = post(&harness, "/console/sign-out", cookie, &form).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{form}");
    }
    assert_eq!(get(&harness, "/console/agents", Some(&cookie)).await.status, StatusCode::OK);

    // Another session's token does not do either.
    let other = sign_in(&harness).await;
    let crossed = post(&harness, "/console/sign-out", Some(&other), &format!("csrf={token}")).await;
    assert_eq!(crossed.status, StatusCode::FORBIDDEN);
    let signed_out = post(&harness, "/console/sign-out", Some(&cookie), &format!("csrf={token}")).await;
    assert_eq!(signed_out.status, StatusCode::SEE_OTHER);
    assert!(signed_out.headers[header::SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(get(&harness, "/console/agents", Some(&cookie)).await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn what_an_agent_registered_is_shown_as_text() {
    let payload = "<script>alert(1)</script><img src=x onerror=alert(2)>";
    let agents = format!(
        "[[agents]]\nid = \"agent-x\"\nowner = \"\\\"><svg onload=alert(3)>\"\npurpose = \"{payload}\"\n\
         expires = 2030-06-30\nsecret_sha256 = \"{}\"\n",
        secret_hash("s")
    );
    let policies = policy_folder(&agents, "", "");
    let harness = Harness::with(Options { policies: policies.path().to_owned(), ..Options::default() });
    let cookie = sign_in(&harness).await;
    let page = get(&harness, "/console/agents", Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(!page.body.contains("<script>alert"), "{}", page.body);
    assert!(!page.body.contains("<img src=x"), "{}", page.body);
    assert!(!page.body.contains("<svg onload"), "{}", page.body);
    assert!(page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{}", page.body);
}

#[tokio::test]
async fn the_console_is_absent_while_the_admin_api_is_off() {
    let harness = Harness::with(Options { admin: false, ..Options::default() });
    for path in ["/console", "/console/sign-in", "/console/agents"] {
        assert_eq!(get(&harness, path, None).await.status, StatusCode::NOT_FOUND, "{path}");
    }
    let tried = post(&harness, "/console/sign-in", None, "admin_token=anything").await;
    assert_eq!(tried.status, StatusCode::NOT_FOUND);
    // Answered as any unknown route is.
    let unknown = get(&harness, "/no-such-route", None).await;
    assert_eq!(tried.body, unknown.body);
}

/// The quick start's chain: T0 (orchestrator's, for the planner), T1 (the
/// planner's, for the booker), T2 (the booker's, for the calendar API).
async fn chain(harness: &Harness) -> [String; 3] {
    let t0 = harness.as_agent("orchestrator", &[("grant_type", "client_credentials"), ("audience", "planner")]).await;
    let t1 = harness.exchange("planner", t0.token(), &[("audience", "booker")]).await;
    let t2 = harness
        .exchange("booker", t1.token(), &[("resource", "https://api.airline.example"), ("scope", "flights.read")])
        .await;
    [t0, t1, t2].map(|response| json_of(response.token())["jti"].as_str().unwrap().to_owned())
}

/// Each token's state as the picture shows it, by id.
fn states(page: &Page, jtis: &[String]) -> Vec<String> {
    jtis.iter()
        .map(|jti| {
            let at = page
                .body
                .find(&format!("data-jti=\"{jti}\" data-status=\""))
                .unwrap_or_else(|| panic!("{jti} not in {}", page.body));
            page.body[at..].split("data-status=\"").nth(1).unwrap().split('"').next().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn the_tree_shows_a_chain_and_revoking_its_middle_kills_what_descends() {
    let harness = Harness::new();
    let jtis = chain(&harness).await;
    let cookie = sign_in(&harness).await;
    let traced = get(&harness, &format!("/console/trace?q={}", jtis[1]), Some(&cookie)).await;
    assert_eq!(traced.status, StatusCode::OK, "{}", traced.body);
    assert!(traced.body.contains("<svg"), "{}", traced.body);
    assert_eq!(states(&traced, &jtis), ["live", "live", "live"]);
    assert!(traced.body.contains("planner</tspan>"), "{}", traced.body);

    // The confirmation says what will die: T1 and T2, held by the planner and the booker.
    let confirm = get(&harness, &format!("/console/revoke?jti={}", jtis[1]), Some(&cookie)).await;
    assert!(confirm.body.contains("<strong>2</strong> live tokens, held by booker, planner"), "{}", confirm.body);
    let token = csrf(&confirm);
    let forged = post(&harness, "/console/revoke", Some(&cookie), &format!("csrf=forged&jti={}", jtis[1])).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let anonymous = post(&harness, "/console/revoke", None, &format!("csrf={token}&jti={}", jtis[1])).await;
    assert_eq!(anonymous.status, StatusCode::FORBIDDEN);
    let still = get(&harness, &format!("/console/trace?q={}", jtis[1]), Some(&cookie)).await;
    assert_eq!(states(&still, &jtis), ["live", "live", "live"]);

    let revoked = post(&harness, "/console/revoke", Some(&cookie), &format!("csrf={token}&jti={}", jtis[1])).await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER, "{}", revoked.body);
    let after = get(&harness, revoked.headers[header::LOCATION].to_str().unwrap(), Some(&cookie)).await;
    assert_eq!(states(&after, &jtis), ["live", "revoked", "revoked"]);
    // The audit trail names who did it, and how.
    let events = harness.events().await;
    let revocation = events.iter().find(|event| event.action == "admin_revoke").unwrap();
    assert_eq!(revocation.by.as_deref(), Some("console: admin token"));
    assert!(after.body.contains("Signed in as admin token"), "{}", after.body);
}

#[tokio::test]
async fn a_hop_bound_by_dpop_is_marked_with_its_key() {
    let harness = Harness::new();
    let keys = crate::dpop::agents();
    let tokens = crate::dpop::bound_walk(&harness, &keys).await;
    let bearer = chain(&harness).await;
    let cookie = sign_in(&harness).await;
    let traced =
        get(&harness, &format!("/console/trace?q={}", json_of(&tokens[1])["jti"].as_str().unwrap()), Some(&cookie))
            .await;
    assert_eq!(traced.status, StatusCode::OK, "{}", traced.body);
    // Each box names the key of the agent that obtained it.
    assert_eq!(traced.body.matches("class=\"dpop\"").count(), 3, "{}", traced.body);
    for key in [&keys.orchestrator, &keys.planner, &keys.booker] {
        assert!(traced.body.contains(&format!("data-jkt=\"{}\"", key.jkt())), "{}", traced.body);
    }
    assert!(traced.body.contains(&format!("thumbprint <code>{}</code>", keys.planner.jkt())), "{}", traced.body);
    // A bearer chain carries no mark.
    let unbound = get(&harness, &format!("/console/trace?q={}", bearer[1]), Some(&cookie)).await;
    assert_eq!(unbound.status, StatusCode::OK);
    assert!(!unbound.body.contains("data-jkt"), "{}", unbound.body);
}

#[tokio::test]
async fn a_pasted_token_is_traced_and_an_unknown_id_is_said_so() {
    let harness = Harness::new();
    let t0 = harness.as_agent("orchestrator", &[("grant_type", "client_credentials"), ("audience", "planner")]).await;
    let cookie = sign_in(&harness).await;
    // Pasted whole, a token is posted, and the answer leads to its id's page:
    // the token itself never stands in a URL.
    let token = csrf(&get(&harness, "/console/trace", Some(&cookie)).await);
    let searched = post(&harness, "/console/trace", Some(&cookie), &format!("csrf={token}&q={}", t0.token())).await;
    assert_eq!(searched.status, StatusCode::SEE_OTHER, "{}", searched.body);
    let location = searched.headers[header::LOCATION].to_str().unwrap().to_owned();
    assert!(!location.contains(t0.token()), "{location}");
    let traced = get(&harness, &location, Some(&cookie)).await;
    assert_eq!(traced.status, StatusCode::OK);
    // A whole token in a URL is not read.
    let in_url = get(&harness, &format!("/console/trace?q={}", t0.token()), Some(&cookie)).await;
    assert_eq!(in_url.status, StatusCode::BAD_REQUEST);
    assert!(!in_url.body.contains(t0.token()) && !in_url.body.contains("id=\"details\""), "{}", in_url.body);
    let jti = json_of(t0.token())["jti"].as_str().unwrap().to_owned();
    assert!(traced.body.contains(&format!("<dl id=\"details\" data-jti=\"{jti}\"")), "{}", traced.body);
    let unknown = get(&harness, "/console/trace?q=%3Cscript%3Eno-such-token", Some(&cookie)).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(unknown.body.contains("No token with that id is known."));
    assert!(!unknown.body.contains("<script>no-such"), "{}", unknown.body);
}

#[tokio::test]
async fn a_pending_booking_is_approved_from_the_queue_and_a_denial_sticks() {
    let harness = Harness::new();
    let t0 = harness.as_agent("orchestrator", &[("grant_type", "client_credentials"), ("audience", "planner")]).await;
    let t1 = harness.exchange("planner", t0.token(), &[("audience", "booker")]).await;
    let book = [("resource", "https://api.airline.example"), ("scope", "flights.book")];
    let pending = harness.exchange("booker", t1.token(), &book).await;
    pending.assert_error(400, "authorization_pending");
    let id = pending.body["approval_id"].as_str().unwrap().to_owned();

    let cookie = sign_in(&harness).await;
    let queue = get(&harness, "/console/approvals", Some(&cookie)).await;
    assert_eq!(queue.status, StatusCode::OK);
    assert!(queue.body.contains(&format!("data-approval=\"{id}\"")), "{}", queue.body);
    // It follows the queue by reloading itself: no script.
    assert!(queue.body.contains("<meta http-equiv=\"refresh\" content=\"5\">"), "{}", queue.body);
    // The queue links each request to its own page; the decision is taken there.
    assert!(!queue.body.contains("verdict"), "{}", queue.body);
    let request = get(&harness, &format!("/console/approval?id={id}"), Some(&cookie)).await;
    assert_eq!(request.status, StatusCode::OK, "{}", request.body);
    // The approver types their name: the form does not put it in their mouth.
    assert!(request.body.contains("name=\"approver\" autocomplete=\"off\" required"), "{}", request.body);
    let token = csrf(&request);
    let decide =
        |verdict: &str, csrf: &str| format!("csrf={csrf}&id={id}&approver=travel-team%40example.com&verdict={verdict}");
    let someone_else = format!("csrf={token}&id={id}&approver=someone%40example.com&verdict=approve");
    let refused = post(&harness, "/console/approvals", Some(&cookie), &someone_else).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    let forged = post(&harness, "/console/approvals", Some(&cookie), &decide("approve", "forged")).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    harness.exchange("booker", t1.token(), &book).await.assert_error(400, "authorization_pending");

    let approved = post(&harness, "/console/approvals", Some(&cookie), &decide("approve", &token)).await;
    assert_eq!(approved.status, StatusCode::SEE_OTHER, "{}", approved.body);
    let issued = harness.exchange("booker", t1.token(), &book).await;
    assert_eq!(issued.status, 200, "{}", issued.body);
    assert_eq!(json_of(issued.token())["delegation"]["approval"]["approver"], "travel-team@example.com");
    // The tree marks the hop a person approved.
    let booked = json_of(issued.token())["jti"].as_str().unwrap().to_owned();
    let traced = get(&harness, &format!("/console/trace?q={booked}"), Some(&cookie)).await;
    assert!(traced.body.contains(&format!("data-approval=\"{id}\"")), "{}", traced.body);
    assert!(traced.body.contains("Approved by a person"), "{}", traced.body);
    // The admin API's trace, which the console reads, carries it.
    let request = Request::get(format!("/admin/trace/{booked}"))
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(harness.send(request).await.body["token"]["approval"], id.as_str());
    let emptied = get(&harness, "/console/approvals", Some(&cookie)).await;
    assert!(emptied.body.contains("Nothing waits for a person."), "{}", emptied.body);
    // The trail names the approver typed and who made the call.
    let events = harness.events().await;
    let approved = events.iter().find(|event| event.action == "approval_approve").unwrap();
    assert_eq!(approved.by.as_deref(), Some("console: admin token"));

    // A decision taken stands: the same approval cannot be decided again.
    let again = post(&harness, "/console/approvals", Some(&cookie), &decide("deny", &token)).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn deprovisioning_an_agent_from_the_picture_kills_the_tokens_it_is_in() {
    let harness = Harness::new();
    let jtis = chain(&harness).await;
    let cookie = sign_in(&harness).await;
    let confirm = get(&harness, &format!("/console/deprovision?agent=booker&jti={}", jtis[1]), Some(&cookie)).await;
    assert_eq!(confirm.status, StatusCode::OK, "{}", confirm.body);
    // T1 is addressed to the booker and T2 is its own: two die, T0 lives.
    assert!(
        confirm.body.contains("in this tree <strong>2</strong> live tokens, held by booker, planner"),
        "{}",
        confirm.body
    );
    let token = csrf(&confirm);
    let forged =
        post(&harness, "/console/deprovision", Some(&cookie), &format!("csrf=x&agent=booker&jti={}", jtis[1])).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    let done =
        post(&harness, "/console/deprovision", Some(&cookie), &format!("csrf={token}&agent=booker&jti={}", jtis[1]))
            .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let after = get(&harness, done.headers[header::LOCATION].to_str().unwrap(), Some(&cookie)).await;
    assert_eq!(states(&after, &jtis), ["live", "revoked", "revoked"]);
    // Blocked until reinstated: it cannot even authenticate.
    let blocked = harness.as_agent("booker", &[("grant_type", "client_credentials"), ("audience", "planner")]).await;
    blocked.assert_error(401, "invalid_client");
    let events = harness.events().await;
    let deprovisioned = events.iter().find(|event| event.action == "deprovision").unwrap();
    assert_eq!(deprovisioned.by.as_deref(), Some("console: admin token"));
}

#[tokio::test]
async fn a_subjects_and_an_agents_tokens_are_found_with_their_state() {
    let harness = Harness::new();
    let jtis = chain(&harness).await;
    let cookie = sign_in(&harness).await;
    // The chain's subject is the orchestrator, acting for itself.
    let of_subject = get(&harness, "/console/tokens?subject=orchestrator", Some(&cookie)).await;
    assert_eq!(of_subject.status, StatusCode::OK, "{}", of_subject.body);
    assert_eq!(states(&of_subject, &jtis), ["live", "live", "live"]);
    assert!(of_subject.body.contains("3 tokens, newest first"), "{}", of_subject.body);
    let of_planner = get(&harness, "/console/tokens?agent=planner", Some(&cookie)).await;
    assert!(of_planner.body.contains("1 token, newest first"), "{}", of_planner.body);
    assert_eq!(states(&of_planner, &jtis[1..2]), ["live"]);
    assert!(!of_planner.body.contains(&jtis[0]) && !of_planner.body.contains(&jtis[2]), "{}", of_planner.body);
    // Both at once narrow; neither asks for a name; a payload is text.
    let both = get(&harness, "/console/tokens?subject=orchestrator&agent=booker", Some(&cookie)).await;
    assert_eq!(states(&both, &jtis[2..]), ["live"]);
    assert!(both.body.contains("1 token, newest first"), "{}", both.body);
    let neither = get(&harness, "/console/tokens", Some(&cookie)).await;
    assert!(neither.body.contains("Name a subject, an agent, or both."), "{}", neither.body);
    let payload = get(&harness, "/console/tokens?agent=%3Cscript%3Ealert(1)%3C/script%3E", Some(&cookie)).await;
    assert!(payload.body.contains("0 tokens") && !payload.body.contains("<script>alert"), "{}", payload.body);

    let revoked =
        crate::revocation::admin(&harness, "POST", "/admin/revoke", Some(serde_json::json!({"jti": jtis[1]})));
    assert_eq!(revoked.await.status, 200);
    let after = get(&harness, "/console/tokens?subject=orchestrator", Some(&cookie)).await;
    assert_eq!(states(&after, &jtis), ["live", "revoked", "revoked"]);
}

#[tokio::test]
async fn deprovisioning_from_the_agents_page_says_what_the_agent_holds() {
    let harness = Harness::new();
    let jtis = chain(&harness).await;
    let cookie = sign_in(&harness).await;
    let agents = get(&harness, "/console/agents", Some(&cookie)).await;
    assert!(agents.body.contains("href=\"/console/deprovision?agent=planner\""), "{}", agents.body);
    let confirm = get(&harness, "/console/deprovision?agent=planner", Some(&cookie)).await;
    assert_eq!(confirm.status, StatusCode::OK, "{}", confirm.body);
    assert!(
        confirm.body.contains("of the newest 1 it obtained, <strong>1</strong> live token, held by planner"),
        "{}",
        confirm.body
    );
    assert_eq!(states(&confirm, &jtis[1..2]), ["live"]);
    let token = csrf(&confirm);
    let done = post(&harness, "/console/deprovision", Some(&cookie), &format!("csrf={token}&agent=planner")).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let location = done.headers[header::LOCATION].to_str().unwrap();
    assert_eq!(location, "/console/tokens?agent=planner");
    let after = get(&harness, "/console/tokens?subject=orchestrator", Some(&cookie)).await;
    // T1 is the planner's, T2 descends from it: both die; T0 was only addressed to it, and dies too.
    assert_eq!(states(&after, &jtis), ["revoked", "revoked", "revoked"]);
    // The inventory says it is blocked, and offers no second deprovisioning.
    let agents = get(&harness, "/console/agents", Some(&cookie)).await;
    let row = agents.body.split("data-agent=\"planner\"").nth(1).unwrap().split("</tr>").next().unwrap();
    assert!(row.contains("<span class=\"blocked\">blocked</span>") && !row.contains("Deprovision"), "{row}");
}

/// The walk in headless Chromium, driven by playwright-core
/// (`tests/interop/node/console.test.js`): sign in, find the chain, see the
/// tree, approve a booking, revoke T1, deprovision an agent. Screenshots of
/// each step are kept in `target/console-screenshots/`.
#[tokio::test]
async fn the_console_works_in_a_real_browser() {
    let chromium = std::path::Path::new("/usr/bin/chromium");
    assert!(chromium.exists(), "Debian's chromium is missing: run ./scripts/test.sh, which installs it");
    let node_dir = crate::interop::interop_dir().join("node");
    let installed = node_dir.join("node_modules/playwright-core/package.json");
    assert!(installed.exists(), "{} is missing: run ./scripts/test.sh, which installs it", installed.display());

    const ADMIN: &str = "console-admin-token-3f9d";
    // The browser reaches the broker as `localhost` and the identity
    // provider as `127.0.0.1`: two sites, as in a real deployment.
    let (broker, provider) = crate::console_provider::broker_and_provider("localhost", ADMIN).await;
    let console = broker.url.replace("127.0.0.1", "localhost");
    let client = reqwest::Client::new();
    let token = |agent: &'static str, form: Vec<(&'static str, String)>| {
        let request = client
            .post(format!("{}/token", broker.url))
            .basic_auth(agent, Some(format!("dev-only-{agent}-secret")))
            .form(&form);
        async move { request.send().await.unwrap().json::<serde_json::Value>().await.unwrap() }
    };
    let exchange = |parent: &str, target: (&'static str, &str), scope: &str| {
        vec![
            ("grant_type", EXCHANGE.to_owned()),
            ("subject_token", parent.to_owned()),
            ("subject_token_type", ACCESS_TOKEN.to_owned()),
            (target.0, target.1.to_owned()),
            ("scope", scope.to_owned()),
        ]
    };
    let t0 =
        token("orchestrator", vec![("grant_type", "client_credentials".into()), ("audience", "planner".into())]).await;
    let t0 = t0["access_token"].as_str().unwrap().to_owned();
    let t1 = token("planner", exchange(&t0, ("audience", "booker"), "flights.read flights.book")).await;
    let t1 = t1["access_token"].as_str().unwrap().to_owned();
    let t2 = token("booker", exchange(&t1, ("resource", "https://api.airline.example"), "flights.read")).await;
    let t2 = t2["access_token"].as_str().unwrap().to_owned();
    let pending = token("booker", exchange(&t1, ("resource", "https://api.airline.example"), "flights.book")).await;
    let approval = pending["approval_id"].as_str().unwrap_or_else(|| panic!("{pending}")).to_owned();

    let screenshots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("../console-screenshots");
    // Only this run's screenshots count.
    let _ = std::fs::remove_dir_all(&screenshots);
    let mut node = std::process::Command::new("node");
    node.args(["--test", "--test-concurrency=1", "--test-timeout=120000", "console.test.js"])
        .current_dir(&node_dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", broker.folder.path())
        .env("BROKER_URL", &console)
        .env("PROVIDER_URL", &provider.issuer)
        .env("ADMIN_TOKEN", ADMIN)
        .env("T0", json_of(&t0)["jti"].as_str().unwrap())
        .env("T1", json_of(&t1)["jti"].as_str().unwrap())
        .env("T2", json_of(&t2)["jti"].as_str().unwrap())
        .env("APPROVAL_ID", &approval)
        .env("CHROMIUM", chromium)
        .env("SCREENSHOTS", &screenshots);
    let folder = broker.folder.path().to_owned();
    let run = tokio::task::spawn_blocking(move || crate::interop::run("console-browser", node, &folder)).await.unwrap();
    println!("{}", run.report());
    assert!(run.passed(), "{}", run.report());
    let steps = [
        "0-provider-signed-in",
        "1-agents",
        "2-tree",
        "3-approvals",
        "4-revoke-confirmation",
        "5-revoked",
        "6-deprovisioned",
        "7-audit",
        "8-explain",
    ];
    for step in steps {
        assert!(screenshots.join(format!("{step}.png")).exists(), "no screenshot of {step}");
    }
}

#[tokio::test]
async fn the_audit_search_filters_as_the_api_does_and_links_each_token() {
    let harness = Harness::new();
    let jtis = chain(&harness).await;
    let cookie = sign_in(&harness).await;
    let all = get(&harness, "/console/audit", Some(&cookie)).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    for jti in &jtis {
        assert!(all.body.contains(&format!("href=\"/console/trace?q={jti}\"")), "{jti}: {}", all.body);
    }

    let planner = get(&harness, "/console/audit?agent=planner&decision=issued&subject=&limit=10", Some(&cookie)).await;
    assert_eq!(planner.status, StatusCode::OK, "{}", planner.body);
    assert!(planner.body.contains("<p id=\"found\">1 event, newest first</p>"), "{}", planner.body);
    assert!(planner.body.contains(&format!("?q={}", jtis[1])) && !planner.body.contains(&format!("?q={}", jtis[2])));
    // The filters come back filled in, as text.
    assert!(planner.body.contains("name=\"agent\" value=\"planner\""), "{}", planner.body);

    // Times as RFC 3339: nothing happened after tomorrow.
    let tomorrow = time::OffsetDateTime::from_unix_timestamp(harness.clock.now().0 + 86_400).unwrap();
    let tomorrow = tomorrow.format(&time::format_description::well_known::Rfc3339).unwrap();
    let later = get(&harness, &format!("/console/audit?since={tomorrow}"), Some(&cookie)).await;
    assert!(later.body.contains("<p id=\"found\">0 events, newest first</p>"), "{}", later.body);
    let bad = get(&harness, "/console/audit?since=%3Cscript%3Eyesterday", Some(&cookie)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("`since` is not a time"), "{}", bad.body);
    assert!(!bad.body.contains("<script>yesterday"), "{}", bad.body);
    let wrong = get(&harness, "/console/audit?decision=maybe", Some(&cookie)).await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_explain_form_shows_the_rules_that_decided() {
    let harness = Harness::new();
    let cookie = sign_in(&harness).await;
    let empty = get(&harness, "/console/explain", Some(&cookie)).await;
    assert_eq!(empty.status, StatusCode::OK);
    assert!(!empty.body.contains("id=\"outcome\""));

    let booking = "/console/explain?action=exchange&agent=booker&target=https%3A%2F%2Fapi.airline.example\
                   &scopes=flights.book&subject=orchestrator&parent_scopes=flights.book+flights.read&chain=planner&depth=2";
    let granted = get(&harness, booking, Some(&cookie)).await;
    assert_eq!(granted.status, StatusCode::OK, "{}", granted.body);
    assert!(granted.body.contains("data-result=\"granted\""), "{}", granted.body);
    assert!(granted.body.contains("travel.cedar#booker-to-airline"), "{}", granted.body);
    assert!(granted.body.contains("A person must approve flights.book first"), "{}", granted.body);

    // Without the planner in the chain, the forbid decides, and says so.
    let skipped = booking.replace("&chain=planner&depth=2", "&depth=1");
    let refused = get(&harness, &skipped, Some(&cookie)).await;
    assert!(refused.body.contains("data-result=\"refused\""), "{}", refused.body);
    assert!(refused.body.contains("travel.cedar#bookings-go-through-the-planner"), "{}", refused.body);

    let malformed = get(&harness, "/console/explain?action=exchange&agent=booker&depth=deep", Some(&cookie)).await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert!(malformed.body.contains("`depth` is not a number"), "{}", malformed.body);
}
