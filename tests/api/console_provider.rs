//! Signing in to the console at an identity provider: a real OpenID
//! provider (`oidc-provider`, `tests/interop/node/idp.js`) signs people in
//! through its own pages; only a listed member gets a session, only in the
//! browser that started the sign-in, and only once.

use reqwest::header::{LOCATION, SET_COOKIE};
use reqwest::StatusCode;

use crate::harness::secret_hash;
use crate::identity_provider::IdentityProvider;
use crate::process::{free_port, BrokerProcess};

const ADMIN: &str = "console-provider-test-admin";

/// The broker with its console signing in at a provider that knows it,
/// Alice listed by her verified email and Carol by her subject. The broker
/// answers as `http://<host>:<port>`, the address a browser uses.
pub async fn broker_and_provider(host: &str, admin: &str) -> (BrokerProcess, IdentityProvider) {
    let port = free_port();
    let public = format!("http://{host}:{port}");
    let callback = format!("{public}/console/callback");
    let provider = IdentityProvider::start_with(&[("IDP_CONSOLE_REDIRECT_URI", &callback)]);
    let hash = secret_hash(admin);
    let variables = [
        ("BATON_ISSUER", public.as_str()),
        ("BATON_ADMIN_TOKEN_SHA256", hash.as_str()),
        ("BATON_CONSOLE_ISSUER", provider.issuer.as_str()),
        ("BATON_CONSOLE_CLIENT_ID", "baton-console"),
        ("BATON_CONSOLE_CLIENT_SECRET", "dev-only-baton-console-secret"),
        ("BATON_CONSOLE_MEMBERS", "alice@example.com, carol, unverified-dan@example.com"),
    ];
    (BrokerProcess::start_on(port, &variables, |_| {}).await, provider)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// The `name=value` of the cookie `name` a response sets, with its attributes.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|value| value.to_str().unwrap().to_owned())
        .find(|cookie| cookie.starts_with(&format!("{name}=")))
}

/// A sign-in started: the provider's URL, and the cookie that ties it to this browser.
async fn start(broker: &BrokerProcess) -> (String, String) {
    let started = client().get(format!("{}/console/sign-in/provider", broker.url)).send().await.unwrap();
    assert_eq!(started.status(), StatusCode::SEE_OTHER);
    let cookie = set_cookie(&started, "baton_console_sign_in").expect("a sign-in cookie");
    assert!(cookie.contains("; Path=/console/callback; HttpOnly; SameSite=Lax; Max-Age=600"), "{cookie}");
    let location = started.headers()[LOCATION].to_str().unwrap().to_owned();
    (location, cookie.split(';').next().unwrap().to_owned())
}

async fn back(callback: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut request = client().get(callback);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_listed_member_signs_in_at_the_provider_once_in_the_browser_that_started() {
    let (broker, mut provider) = broker_and_provider("127.0.0.1", ADMIN).await;
    let form = client().get(format!("{}/console/sign-in", broker.url)).send().await.unwrap().text().await.unwrap();
    assert!(form.contains(&format!("Sign in at {}", provider.issuer)), "{form}");

    let (url, cookie) = start(&broker).await;
    assert!(url.starts_with(&format!("{}/auth?", provider.issuer)), "{url}");
    for part in ["code_challenge_method=S256", "nonce=", "state=", "scope=openid+email", "client_id=baton-console"] {
        assert!(url.contains(part), "{part} not in {url}");
    }
    let callback = provider.walk("alice", &url);
    assert!(callback.starts_with(&format!("{}/console/callback?", broker.url)), "{callback}");

    // Another browser (no cookie, or another sign-in's) cannot finish it.
    let elsewhere = back(&callback, None).await;
    assert_eq!(elsewhere.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&elsewhere, "baton_console").is_none());
    let (_, other) = start(&broker).await;
    assert_eq!(back(&callback, Some(&other)).await.status(), StatusCode::FORBIDDEN);

    let signed_in = back(&callback, Some(&cookie)).await;
    assert_eq!(signed_in.status(), StatusCode::OK);
    let session = set_cookie(&signed_in, "baton_console").expect("a session cookie");
    assert!(session.contains("; Path=/console; HttpOnly; SameSite=Strict; Max-Age=28800"), "{session}");
    let cleared = set_cookie(&signed_in, "baton_console_sign_in").unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let page = signed_in.text().await.unwrap();
    assert!(page.contains("Signed in as <strong>alice@example.com</strong>"), "{page}");
    assert!(page.contains(r#"<meta http-equiv="refresh" content="0; url=/console/agents">"#), "{page}");
    let session = session.split(';').next().unwrap().to_owned();
    let agents = client().get(format!("{}/console/agents", broker.url)).header("cookie", &session).send().await;
    let agents = agents.unwrap();
    assert_eq!(agents.status(), StatusCode::OK);
    let agents = agents.text().await.unwrap();
    assert!(agents.contains("data-agent=\"planner\""), "{agents}");
    assert!(agents.contains("Signed in as alice@example.com"), "{agents}");

    // A code is good once, at the provider: coming back with it again opens nothing.
    let again = back(&callback, Some(&cookie)).await;
    assert_eq!(again.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&again, "baton_console").is_none());

    // Carol is listed by her subject at the provider.
    let (url, cookie) = start(&broker).await;
    let carol = back(&provider.walk("carol", &url), Some(&cookie)).await;
    assert_eq!(carol.status(), StatusCode::OK);
    assert!(carol.text().await.unwrap().contains("Signed in as <strong>carol</strong>"));
}

#[tokio::test]
async fn a_person_the_console_does_not_list_gets_no_session() {
    let (broker, mut provider) = broker_and_provider("127.0.0.1", ADMIN).await;
    let (url, cookie) = start(&broker).await;
    let mallory = back(&provider.walk("mallory", &url), Some(&cookie)).await;
    assert_eq!(mallory.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&mallory, "baton_console").is_none());
    assert!(mallory.text().await.unwrap().contains("not a listed member"));

    // An email the provider has not verified names nobody, even one listed.
    let (url, cookie) = start(&broker).await;
    let dan = back(&provider.walk("unverified-dan", &url), Some(&cookie)).await;
    assert_eq!(dan.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&dan, "baton_console").is_none());
    // A subject that reads like a listed email is a subject, not that email.
    let (url, cookie) = start(&broker).await;
    let lookalike = back(&provider.walk("alice@example.com", &url), Some(&cookie)).await;
    assert_eq!(lookalike.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&lookalike, "baton_console").is_none());

    // A sign-in cookie made up to match a made-up state opens nothing.
    use base64::Engine;
    let made_up = serde_json::json!({"state": "forged", "nonce": "n", "verifier": "v".repeat(43)});
    let made_up = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(made_up.to_string());
    let forged = format!("{}/console/callback?code=forged&state=forged", broker.url);
    let refused = back(&forged, Some(&format!("baton_console_sign_in={made_up}"))).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&refused, "baton_console").is_none());
    // The provider's refusal is not a sign-in either.
    let (url, cookie) = start(&broker).await;
    let state = url.split("state=").nth(1).unwrap().split('&').next().unwrap();
    let denied = format!("{}/console/callback?error=access_denied&state={state}", broker.url);
    assert_eq!(back(&denied, Some(&cookie)).await.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_provider_that_cannot_be_reached_gives_503_and_no_cookie() {
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let hash = secret_hash(ADMIN);
    let broker = BrokerProcess::start(&[
        ("BATON_ADMIN_TOKEN_SHA256", hash.as_str()),
        ("BATON_CONSOLE_ISSUER", nowhere.as_str()),
        ("BATON_CONSOLE_CLIENT_ID", "baton-console"),
        ("BATON_CONSOLE_CLIENT_SECRET", "dev-only-baton-console-secret"),
        ("BATON_CONSOLE_MEMBERS", "alice@example.com"),
    ])
    .await;
    // The second is answered from the failure the first met, without a wait behind it.
    for _ in 0..2 {
        let started = client().get(format!("{}/console/sign-in/provider", broker.url)).send().await.unwrap();
        assert_eq!(started.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(set_cookie(&started, "baton_console_sign_in").is_none());
        assert!(started.text().await.unwrap().contains("cannot be reached"));
    }
    // The admin credential still signs in.
    let signed_in = client().post(format!("{}/console/sign-in", broker.url)).form(&[("admin_token", ADMIN)]).send();
    assert_eq!(signed_in.await.unwrap().status(), StatusCode::SEE_OTHER);
}
