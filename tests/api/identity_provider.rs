//! A person's chain (DESIGN.md §3, issue: trusted identity providers): a
//! real OpenID provider nobody here wrote (`oidc-provider`, started on
//! loopback by this test) signs a person in through its own pages; the ID
//! token starts a chain of three agents, each hop DPoP-bound, and the API
//! sees the person at the end. Tokens from anywhere else are refused, and a
//! token's `iss` or `jku` never makes the broker fetch anything.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request};
use axum::routing::get;
use axum::{Json, Router};
use baton::clock::{Clock, SystemClock};
use baton::dpop::{ProofFor, ProofKey};
use baton::error::oauth::UNACCEPTABLE_TOKEN;
use baton::verifier::{Caller, Verifier, VerifierLayer};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::harness::{b64, claims_of, secret_hash, AIRLINE};
use crate::process::{free_port, BrokerProcess};

const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ADMIN: &str = "identity-provider-test-admin";

fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/node")
}

/// `tests/interop/node/idp.js`, answering one command a line.
pub struct IdentityProvider {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    pub issuer: String,
}

impl IdentityProvider {
    pub fn start() -> IdentityProvider {
        IdentityProvider::start_with(&[])
    }

    /// The provider with these variables set (`IDP_CONSOLE_REDIRECT_URI`).
    pub fn start_with(variables: &[(&str, &str)]) -> IdentityProvider {
        let installed = node_dir().join("node_modules/oidc-provider/package.json");
        assert!(installed.exists(), "oidc-provider is not installed: run ./scripts/test.sh, which installs it");
        let mut child = Command::new("node")
            .arg("idp.js")
            .current_dir(node_dir())
            .env("IDP_PORT", free_port().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .envs(variables.iter().copied())
            .stderr(Stdio::null())
            .spawn()
            .expect("node");
        let input = child.stdin.take().unwrap();
        let mut output = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        output.read_line(&mut line).unwrap();
        let ready: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("idp.js said: {line}"));
        let issuer = ready["issuer"].as_str().unwrap().to_owned();
        IdentityProvider { child, input, output, issuer }
    }

    fn ask(&mut self, command: &str) -> Value {
        writeln!(self.input, "{command}").unwrap();
        let mut line = String::new();
        self.output.read_line(&mut line).unwrap();
        let answer: Value = serde_json::from_str(&line).unwrap();
        assert!(answer.get("error").is_none(), "idp.js: {answer}");
        answer
    }

    /// A person signed in through the provider's login and consent pages.
    pub fn sign_in(&mut self, name: &str) -> String {
        self.ask(&format!("login {name}"))["id_token"].as_str().unwrap().to_owned()
    }

    /// A person signed in from an authorization URL the console built:
    /// where the provider sends the browser back, with the code unspent.
    pub fn walk(&mut self, name: &str, authorization_url: &str) -> String {
        self.ask(&format!("walk {name} {authorization_url}"))["location"].as_str().unwrap().to_owned()
    }

    /// A person signed in as [`IdentityProvider::sign_in`] does, the client
    /// asking for Baton as the resource: the provider's JWT access token.
    fn access_token(&mut self, name: &str) -> String {
        self.ask(&format!("login-access {name}"))["access_token"].as_str().unwrap().to_owned()
    }

    fn token(&mut self, command: &str, claims: Value) -> String {
        self.ask(&format!("{command} {claims}"))["token"].as_str().unwrap().to_owned()
    }
}

impl Drop for IdentityProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An `issuers.toml` entry trusting `issuer` for chains the orchestrator
/// starts, with these algorithms and subject prefix.
fn trust(issuer: &str, algorithms: &str, prefix: &str) -> String {
    format!(
        "[[issuers]]\nissuer = \"{issuer}\"\naudience = \"baton-demo\"\nalgorithms = {algorithms}\n\
         subject_prefix = \"{prefix}\"\nagents = [\"orchestrator\"]\n"
    )
}

/// The broker on the example policies with this `issuers.toml`.
async fn broker_with_issuers(issuers: String) -> BrokerProcess {
    let hash = secret_hash(ADMIN);
    BrokerProcess::start_with_policies(&[("BATON_ADMIN_TOKEN_SHA256", hash.as_str())], |policies| {
        std::fs::write(policies.join("issuers.toml"), issuers).unwrap();
    })
    .await
}

/// The broker trusting the provider for RS256 tokens, its people named `idp|<sub>`.
async fn broker_trusting(issuer: &str) -> BrokerProcess {
    broker_with_issuers(trust(issuer, r#"["RS256"]"#, "idp|")).await
}

/// A refusal of the subject token: RFC 8693 §2.2.2, with the one neutral
/// description, and no token.
fn assert_refused(body: &Value, case: &str) {
    assert_eq!(body["error"], "invalid_request", "{case}: {body}");
    assert_eq!(body["error_description"], UNACCEPTABLE_TOKEN, "{case}: {body}");
    assert!(body.get("access_token").is_none(), "{case}: {body}");
}

struct Client {
    http: reqwest::Client,
    url: String,
}

impl Client {
    /// How many tokens the broker has issued by exchange, from `/metrics`.
    async fn exchanged(&self) -> u64 {
        let text = self.http.get(format!("{}/metrics", self.url)).send().await.unwrap().text().await.unwrap();
        let series = "baton_tokens_issued_total{grant_type=\"token_exchange\"} ";
        text.lines().find_map(|line| line.strip_prefix(series)).map_or(0, |count| count.trim().parse().unwrap())
    }

    /// `POST /token` as the example agent, with a DPoP proof by `key`: the answer's body.
    async fn exchange(&self, agent: &str, key: &ProofKey, subject: (&str, &str), extra: &[(&str, &str)]) -> Value {
        self.answer(agent, key, subject, extra).await.1
    }

    /// The same, with the answer's status.
    async fn answer(&self, agent: &str, key: &ProofKey, subject: (&str, &str), extra: &[(&str, &str)]) -> (u16, Value) {
        let endpoint = format!("{}/token", self.url);
        let proof = key.proof(ProofFor { method: "POST", uri: &endpoint, ..ProofFor::default() }, SystemClock.now());
        let mut form = vec![("grant_type", EXCHANGE), ("subject_token", subject.0), ("subject_token_type", subject.1)];
        form.extend_from_slice(extra);
        let response = self
            .http
            .post(endpoint)
            .basic_auth(agent, Some(format!("dev-only-{agent}-secret")))
            .header("DPoP", proof.unwrap())
            .form(&form)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signed_in_at_a_real_provider_starts_a_bound_three_hop_chain() {
    let mut provider = IdentityProvider::start();
    let broker = broker_trusting(&provider.issuer).await;
    let client = Client { http: reqwest::Client::new(), url: broker.url.clone() };
    let id_token = provider.sign_in("alice");
    let (orchestrator, planner, booker) =
        (ProofKey::generate().unwrap(), ProofKey::generate().unwrap(), ProofKey::generate().unwrap());

    let hop1 = client.exchange("orchestrator", &orchestrator, (&id_token, ID_TOKEN), &[("audience", "planner")]).await;
    let hop1 = hop1["access_token"].as_str().unwrap_or_else(|| panic!("{hop1}")).to_owned();
    let hop2 = client.exchange("planner", &planner, (&hop1, ACCESS_TOKEN), &[("audience", "booker")]).await;
    let hop2 = hop2["access_token"].as_str().unwrap_or_else(|| panic!("{hop2}")).to_owned();
    // Booking needs a person's approval (the booker's owner, by default).
    let extra = [("resource", AIRLINE), ("scope", "flights.book")];
    let pending = client.exchange("booker", &booker, (&hop2, ACCESS_TOKEN), &extra).await;
    assert_eq!(pending["error"], "authorization_pending", "{pending}");
    let approval_id = pending["approval_id"].as_str().unwrap().to_owned();
    let response = client
        .http
        .post(format!("{}/admin/approvals/{approval_id}/approve", broker.url))
        .bearer_auth(ADMIN)
        .json(&json!({"approver": "travel-team@example.com"}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.text().await.unwrap());
    let extra = [("resource", AIRLINE), ("scope", "flights.book"), ("approval_id", approval_id.as_str())];
    let hop3 = client.exchange("booker", &booker, (&hop2, ACCESS_TOKEN), &extra).await;
    assert_eq!(hop3["token_type"], "DPoP", "{hop3}");
    let hop3 = hop3["access_token"].as_str().unwrap().to_owned();

    // The person is the subject all the way; the sign-in is the root hop.
    let claims = claims_of(&hop3);
    assert_eq!(claims.sub, "idp|alice");
    assert_eq!(claims.chain(), vec!["booker", "planner", "orchestrator"]);
    assert_eq!(claims.delegation.depth, 3);
    let root = &claims.delegation.hops[0];
    assert_eq!(root.iss.as_deref(), Some(provider.issuer.as_str()));
    assert_eq!((root.agent.as_str(), root.aud.as_str()), ("baton-demo", "baton-demo"));
    let keys: Vec<Option<&str>> = claims.delegation.hops.iter().map(|hop| hop.jkt.as_deref()).collect();
    assert_eq!(keys, vec![None, Some(orchestrator.jkt()), Some(planner.jkt())]);
    assert_eq!(claims.jkt(), Some(booker.jkt()));
    let approval = claims.delegation.approval.as_ref().expect("the approval is recorded");
    assert_eq!((approval.id.as_str(), approval.approver.as_str()), (approval_id.as_str(), "travel-team@example.com"));

    // The API, checking with introspection, sees the person and the chain.
    let verifier = Verifier::builder(broker.url.clone())
        .audience(AIRLINE)
        .public_url(AIRLINE)
        .introspection("airline-api", "dev-only-airline-api-secret", std::time::Duration::from_secs(1))
        .build()
        .unwrap();
    let api = Router::new()
        .route(
            "/bookings",
            get(|caller: Caller| async move { Json(json!({ "subject": caller.subject(), "chain": caller.chain() })) }),
        )
        .layer(VerifierLayer::new(Arc::new(verifier)));
    let call = |token: String, key: &ProofKey| {
        let request = ProofFor {
            method: "GET",
            uri: "https://api.airline.example/bookings",
            access_token: Some(&token),
            nonce: None,
        };
        let proof = key.proof(request, SystemClock.now()).unwrap();
        let request = Request::get("/bookings")
            .header(header::AUTHORIZATION, format!("DPoP {token}"))
            .header("DPoP", proof)
            .body(Body::empty())
            .unwrap();
        let api = api.clone();
        async move {
            let response = api.oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null))
        }
    };
    let (status, body) = call(hop3.clone(), &booker).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"subject": "idp|alice", "chain": ["booker", "planner", "orchestrator"]}));
    // Stolen: the planner's key does not prove the booker's token.
    assert_eq!(call(hop3.clone(), &planner).await.0, 401);

    // Deprovisioning the person ends the whole chain.
    let response = client
        .http
        .post(format!("{}/admin/deprovision", broker.url))
        .bearer_auth(ADMIN)
        .json(&json!({"subject": "idp|alice"}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.text().await.unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await; // past the verifier's 1 s cache
    assert_eq!(call(hop3, &booker).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_access_token_from_the_provider_starts_a_chain_its_scopes_cap() {
    let mut provider = IdentityProvider::start();
    let broker = broker_trusting(&provider.issuer).await;
    let client = Client { http: reqwest::Client::new(), url: broker.url.clone() };
    // RFC 9068, issued by the provider itself for Baton as the resource.
    let access_token = provider.access_token("alice");
    let header = crate::harness::header_of(&access_token);
    assert_eq!(header["typ"], "at+jwt", "{header}");
    let (orchestrator, planner, booker) =
        (ProofKey::generate().unwrap(), ProofKey::generate().unwrap(), ProofKey::generate().unwrap());
    // An access token never passes for a sign-in (RFC 9068 §2.1).
    let as_sign_in =
        client.exchange("orchestrator", &orchestrator, (&access_token, ID_TOKEN), &[("audience", "planner")]).await;
    assert_refused(&as_sign_in, "an at+jwt access token declared as an ID token");

    for kind in [ACCESS_TOKEN, JWT] {
        let hop1 =
            client.exchange("orchestrator", &orchestrator, (&access_token, kind), &[("audience", "planner")]).await;
        let hop1 = hop1["access_token"].as_str().unwrap_or_else(|| panic!("{kind}: {hop1}")).to_owned();
        let claims = claims_of(&hop1);
        assert_eq!(claims.sub, "idp|alice");
        let root = &claims.delegation.hops[0];
        assert_eq!(root.iss.as_deref(), Some(provider.issuer.as_str()));
        assert_eq!(root.scope.to_string(), "flights.read");
        assert_eq!(claims.jkt(), Some(orchestrator.jkt()));

        let hop2 = client.exchange("planner", &planner, (&hop1, ACCESS_TOKEN), &[("audience", "booker")]).await;
        let hop2 = hop2["access_token"].as_str().unwrap_or_else(|| panic!("{hop2}")).to_owned();
        let read = [("resource", AIRLINE), ("scope", "flights.read")];
        let hop3 = client.exchange("booker", &booker, (&hop2, ACCESS_TOKEN), &read).await;
        let hop3 = claims_of(hop3["access_token"].as_str().unwrap_or_else(|| panic!("{hop3}")));
        assert_eq!((hop3.sub.as_str(), hop3.scope.to_string()), ("idp|alice", "flights.read".to_owned()));
        // The person's token allowed reading only: no agent may book on it.
        let book = [("resource", AIRLINE), ("scope", "flights.book")];
        let refused = client.exchange("booker", &booker, (&hop2, ACCESS_TOKEN), &book).await;
        assert_eq!(refused["error"], "invalid_scope", "{refused}");
        assert!(refused.get("access_token").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_not_from_the_trusted_provider_as_configured_are_refused() {
    let mut provider = IdentityProvider::start();
    let broker = broker_trusting(&provider.issuer).await;
    let client = Client { http: reqwest::Client::new(), url: broker.url.clone() };
    let key = ProofKey::generate().unwrap();
    let now = SystemClock.now().0;
    let issuer = provider.issuer.clone();
    let claims = |overrides: Value| {
        let mut claims = json!({"iss": issuer, "sub": "mallory", "aud": "baton-demo", "iat": now, "exp": now + 600});
        for (name, value) in overrides.as_object().unwrap() {
            claims[name] = value.clone();
        }
        claims
    };
    let valid = provider.token("sign", claims(json!({})));
    let to_planner = [("audience", "planner")];

    // The control: the provider's own signature, as configured, passes.
    let ok = client.exchange("orchestrator", &key, (&valid, ID_TOKEN), &to_planner).await;
    assert_eq!(claims_of(ok["access_token"].as_str().unwrap_or_else(|| panic!("{ok}"))).sub, "idp|mallory");

    let cases = [
        ("another audience", provider.token("sign", claims(json!({"aud": "someone-else"})))),
        ("another key under the provider's kid", provider.token("forge", claims(json!({})))),
        ("expired", provider.token("sign", claims(json!({"iat": now - 7200, "exp": now - 3600})))),
        ("no subject", provider.token("sign", claims(json!({"sub": null})))),
    ];
    for (case, token) in cases {
        let body = client.exchange("orchestrator", &key, (&token, ID_TOKEN), &to_planner).await;
        assert_refused(&body, case);
    }
    // An agent not allowed to start chains from this provider.
    let body = client.exchange("planner", &key, (&valid, ID_TOKEN), &[("audience", "booker")]).await;
    assert_refused(&body, "an agent not listed for the provider");

    // An issuer nobody configured, pointing at a listener that would see
    // any fetch: nothing connects to it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let lure = format!("http://{}", listener.local_addr().unwrap());
    let header =
        b64(json!({"alg": "RS256", "kid": "lure", "jku": format!("{lure}/jwks"), "x5u": format!("{lure}/x5u")})
            .to_string()
            .as_bytes());
    let payload = b64(claims(json!({"iss": lure})).to_string().as_bytes());
    let untrusted = format!("{header}.{payload}.{}", b64(b"not a signature"));
    for kind in [ID_TOKEN, ACCESS_TOKEN] {
        let body = client.exchange("orchestrator", &key, (&untrusted, kind), &to_planner).await;
        assert_refused(&body, "an untrusted issuer");
    }
    // A token the trusted provider did sign, naming other places for keys
    // in its header: refused (RFC 8725 §3.10), and those are never fetched either.
    let pointed = json!({
        "header": {"jku": format!("{lure}/jwks"), "x5u": format!("{lure}/x5u")},
        "claims": claims(json!({"sub": "pointer"})),
    });
    let token = provider.token("sign-with-header", pointed);
    let body = client.exchange("orchestrator", &key, (&token, ID_TOKEN), &to_planner).await;
    assert_refused(&body, "a header naming other places for keys");
    assert!(listener.accept().is_err(), "the broker fetched from a token's own URLs");

    // Baton's own token is no ID token: presented as one, it is refused.
    let root: Value = client
        .http
        .post(format!("{}/token", broker.url))
        .basic_auth("orchestrator", Some("dev-only-orchestrator-secret"))
        .form(&[("grant_type", "client_credentials"), ("audience", "planner")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let root = root["access_token"].as_str().unwrap_or_else(|| panic!("{root}"));
    let body = client.exchange("planner", &key, (root, ID_TOKEN), &[("audience", "booker")]).await;
    assert_refused(&body, "a Baton token as an ID token");
    let body = client.exchange("planner", &key, (root, ACCESS_TOKEN), &[("audience", "booker")]).await;
    assert!(body["access_token"].is_string(), "the same token as what it is: {body}");

    // A provider's token bound to a key: only with a proof of that key.
    let holder = ProofKey::generate().unwrap();
    let bound = provider.token("sign", claims(json!({"sub": "bound", "cnf": {"jkt": holder.jkt()}})));
    let body = client.exchange("orchestrator", &key, (&bound, ID_TOKEN), &to_planner).await;
    assert_eq!(body["error"], "invalid_dpop_proof", "{body}");
    let body = client.exchange("orchestrator", &holder, (&bound, ID_TOKEN), &to_planner).await;
    let started = claims_of(body["access_token"].as_str().unwrap_or_else(|| panic!("{body}")));
    // The sign-in's key is the root hop's, as each agent's is its hop's.
    assert_eq!(started.delegation.hops[0].jkt.as_deref(), Some(holder.jkt()));
    assert_eq!(started.jkt(), Some(holder.jkt()));
    let other_binding = provider.token("sign", claims(json!({"sub": "mtls", "cnf": {"x5t#S256": "abc"}})));
    let body = client.exchange("orchestrator", &key, (&other_binding, ID_TOKEN), &to_planner).await;
    assert_refused(&body, "a binding Baton cannot check");

    // A blocked agent starts no chain, though no parent token names it.
    let response = client
        .http
        .post(format!("{}/admin/deprovision", broker.url))
        .bearer_auth(ADMIN)
        .json(&json!({"agent": "orchestrator"}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let body = client.exchange("orchestrator", &key, (&valid, ID_TOKEN), &to_planner).await;
    assert_eq!(body["error"], "invalid_client", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_signed_with_an_algorithm_its_issuer_is_not_trusted_for_is_refused() {
    let mut provider = IdentityProvider::start();
    let now = SystemClock.now().0;
    let claims = json!({"iss": provider.issuer, "sub": "alice", "aud": "baton-demo", "iat": now, "exp": now + 600});
    // ES256, with a key the provider publishes: only the allow-list stands in the way.
    let es256 = provider.token("sign-es256", claims);
    let key = ProofKey::generate().unwrap();
    let to_planner = [("audience", "planner")];

    let rs256_only = broker_trusting(&provider.issuer).await;
    let client = Client { http: reqwest::Client::new(), url: rs256_only.url.clone() };
    let body = client.exchange("orchestrator", &key, (&es256, ID_TOKEN), &to_planner).await;
    assert_refused(&body, "ES256 from an issuer trusted for RS256 only");
    assert_eq!(client.exchanged().await, 0);

    // The control: the same token, where the issuer is trusted for ES256.
    let both = broker_with_issuers(trust(&provider.issuer, r#"["RS256", "ES256"]"#, "idp|")).await;
    let client = Client { http: reqwest::Client::new(), url: both.url.clone() };
    let body = client.exchange("orchestrator", &key, (&es256, ID_TOKEN), &to_planner).await;
    assert_eq!(claims_of(body["access_token"].as_str().unwrap_or_else(|| panic!("{body}"))).sub, "idp|alice");
    assert_eq!(client.exchanged().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_provider_makes_the_exchange_unavailable_and_issues_nothing() {
    // A trusted issuer nothing listens at.
    let issuer = format!("http://127.0.0.1:{}", free_port());
    let broker = broker_with_issuers(trust(&issuer, r#"["RS256"]"#, "idp|")).await;
    let client = Client { http: reqwest::Client::new(), url: broker.url.clone() };
    let now = SystemClock.now().0;
    let header = b64(json!({"alg": "RS256", "kid": "idp-key-1", "typ": "JWT"}).to_string().as_bytes());
    let claims = json!({"iss": issuer, "sub": "alice", "aud": "baton-demo", "iat": now, "exp": now + 600});
    let token = format!("{header}.{}.{}", b64(claims.to_string().as_bytes()), b64(b"unchecked"));
    let key = ProofKey::generate().unwrap();

    let (status, body) = client.answer("orchestrator", &key, (&token, ID_TOKEN), &[("audience", "planner")]).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    assert_eq!(body["error_description"], "the identity provider could not be reached; try again later");
    assert!(body.get("access_token").is_none(), "{body}");
    assert_eq!(client.exchanged().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_named_like_a_registered_agent_or_api_starts_no_chain() {
    let mut provider = IdentityProvider::start();
    // No prefix: the provider's names are the chain's subjects as they are.
    let broker = broker_with_issuers(trust(&provider.issuer, r#"["RS256"]"#, "")).await;
    let client = Client { http: reqwest::Client::new(), url: broker.url.clone() };
    let key = ProofKey::generate().unwrap();
    let now = SystemClock.now().0;
    let mut signed = |sub: &str| {
        provider.token(
            "sign",
            json!({"iss": provider.issuer, "sub": sub, "aud": "baton-demo", "iat": now, "exp": now + 600}),
        )
    };
    let to_planner = [("audience", "planner")];
    for name in ["planner", AIRLINE] {
        let token = signed(name);
        let body = client.exchange("orchestrator", &key, (&token, ID_TOKEN), &to_planner).await;
        assert_refused(&body, name);
    }
    assert_eq!(client.exchanged().await, 0);
    // The control: a name no agent or API has.
    let token = signed("alice");
    let body = client.exchange("orchestrator", &key, (&token, ID_TOKEN), &to_planner).await;
    assert_eq!(claims_of(body["access_token"].as_str().unwrap_or_else(|| panic!("{body}"))).sub, "alice");
}

/// RFC 8693 §4.4 on a person's token: where the provider's token carries
/// `may_act`, only the agent it names, byte for byte, starts the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_providers_may_act_names_the_one_agent_that_may_start_the_chain() {
    let mut provider = IdentityProvider::start();
    // Both the orchestrator and the planner may start chains from this provider.
    let issuers = trust(&provider.issuer, r#"["RS256"]"#, "idp|")
        .replace("agents = [\"orchestrator\"]", "agents = [\"orchestrator\", \"planner\"]");
    let broker = broker_with_issuers(issuers).await;
    let client = Client { http: reqwest::Client::new(), url: broker.url.clone() };
    let key = ProofKey::generate().unwrap();
    let now = SystemClock.now().0;
    let issuer = provider.issuer.clone();
    let mut signed = |may_act: Value| {
        let claims = json!({"iss": issuer, "sub": "alice", "aud": "baton-demo", "iat": now, "exp": now + 600, "may_act": may_act});
        provider.token("sign", claims)
    };
    let for_orchestrator = signed(json!({"sub": "orchestrator"}));
    let to_booker = [("audience", "booker")];
    let body = client.exchange("planner", &key, (&for_orchestrator, ID_TOKEN), &to_booker).await;
    assert_refused(&body, "another agent than the one named");
    // The control: named, the planner may start this chain for the booker.
    let for_planner = signed(json!({"sub": "planner"}));
    let body = client.exchange("planner", &key, (&for_planner, ID_TOKEN), &to_booker).await;
    assert!(body["access_token"].is_string(), "the planner named in may_act: {body}");

    let lookalikes = [
        ("other case", json!({"sub": "Orchestrator"})),
        ("all capitals", json!({"sub": "ORCHESTRATOR"})),
        ("trailing space", json!({"sub": "orchestrator "})),
        ("leading space", json!({"sub": " orchestrator"})),
        ("zero-width space", json!({"sub": "orches\u{200B}trator"})),
        ("Cyrillic o", json!({"sub": "\u{43e}rchestrator"})),
        ("Cyrillic o, e, a and c", json!({"sub": "\u{43e}r\u{441}h\u{435}str\u{430}tor"})),
        ("another issuer's orchestrator", json!({"sub": "orchestrator", "iss": "https://elsewhere.example"})),
        ("a name, not an object", json!("orchestrator")),
        ("a list of names", json!([{"sub": "orchestrator"}])),
        ("no sub", json!({"iss": broker.url})),
    ];
    let to_planner = [("audience", "planner")];
    for (case, may_act) in lookalikes {
        let token = signed(may_act);
        let body = client.exchange("orchestrator", &key, (&token, ID_TOKEN), &to_planner).await;
        assert_refused(&body, case);
    }
    assert_eq!(client.exchanged().await, 1, "nothing issued but the planner's control");

    // The controls: the agent named exactly, with or without this broker as `iss`.
    let body = client.exchange("orchestrator", &key, (&for_orchestrator, ID_TOKEN), &to_planner).await;
    let started = claims_of(body["access_token"].as_str().unwrap_or_else(|| panic!("{body}")));
    assert_eq!(started.chain(), vec!["orchestrator"]);
    assert!(started.may_act.is_none(), "may_act is never copied into the child");
    let with_issuer = signed(json!({"sub": "orchestrator", "iss": broker.url}));
    let body = client.exchange("orchestrator", &key, (&with_issuer, ID_TOKEN), &to_planner).await;
    assert!(body["access_token"].is_string(), "{body}");
    assert_eq!(client.exchanged().await, 3);
}

/// A provider's token is a chain's root and nothing else: one carrying its
/// own `act` history is refused (Baton cannot verify another issuer's
/// chain), as is one whose header names or carries a key, or one issued
/// further in the future than the clock leeway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_token_with_its_own_history_or_key_or_from_the_future_is_refused() {
    let mut provider = IdentityProvider::start();
    let broker = broker_trusting(&provider.issuer).await;
    let client = Client { http: reqwest::Client::new(), url: broker.url.clone() };
    let key = ProofKey::generate().unwrap();
    let now = SystemClock.now().0;
    let issuer = provider.issuer.clone();
    let claims = |overrides: Value| {
        let mut claims = json!({"iss": issuer, "sub": "alice", "aud": "baton-demo", "iat": now, "exp": now + 600});
        for (name, value) in overrides.as_object().unwrap() {
            claims[name] = value.clone();
        }
        claims
    };
    let to_planner = [("audience", "planner")];
    let public_jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&[1; 32]), "y": b64(&[2; 32])});
    let cases = [
        ("an act chain", provider.token("sign", claims(json!({"act": {"sub": "someone-else"}})))),
        ("an act naming the agent itself", provider.token("sign", claims(json!({"act": {"sub": "orchestrator"}})))),
        ("a nested act chain", provider.token("sign", claims(json!({"act": {"sub": "x", "act": {"sub": "y"}}})))),
        ("issued an hour ahead", provider.token("sign", claims(json!({"iat": now + 3600, "exp": now + 7200})))),
        (
            "a jku header",
            provider.token(
                "sign-with-header",
                json!({"header": {"jku": "http://127.0.0.1:9/jwks"}, "claims": claims(json!({}))}),
            ),
        ),
        (
            "an x5u header",
            provider.token(
                "sign-with-header",
                json!({"header": {"x5u": "http://127.0.0.1:9/x5u"}, "claims": claims(json!({}))}),
            ),
        ),
        (
            "a jwk header",
            provider.token("sign-with-header", json!({"header": {"jwk": public_jwk}, "claims": claims(json!({}))})),
        ),
        (
            "an x5c header",
            provider.token(
                "sign-with-header",
                json!({"header": {"x5c": ["MIIBszCCAVmgAwIBAgIU"]}, "claims": claims(json!({}))}),
            ),
        ),
    ];
    for (case, token) in cases {
        let body = client.exchange("orchestrator", &key, (&token, ID_TOKEN), &to_planner).await;
        assert_refused(&body, case);
    }
    assert_eq!(client.exchanged().await, 0, "nothing issued");
    // The control, and the default leeway of 30 s for a provider's clock a
    // little ahead.
    let ahead = provider.token("sign", claims(json!({"iat": now + 10})));
    let body = client.exchange("orchestrator", &key, (&ahead, ID_TOKEN), &to_planner).await;
    assert!(body["access_token"].is_string(), "{body}");
}

/// Revoking a person's sign-in (by its `jti`, through the admin API) kills
/// the chain it started, and the trace says so as introspection would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_sign_in_shows_its_chain_revoked_in_the_trace() {
    let mut provider = IdentityProvider::start();
    let broker = broker_trusting(&provider.issuer).await;
    let client = Client { http: reqwest::Client::new(), url: broker.url.clone() };
    let id_token = provider.sign_in("alice");
    let (orchestrator, planner) = (ProofKey::generate().unwrap(), ProofKey::generate().unwrap());
    let hop1 = client.exchange("orchestrator", &orchestrator, (&id_token, ID_TOKEN), &[("audience", "planner")]).await;
    let hop1 = hop1["access_token"].as_str().unwrap_or_else(|| panic!("{hop1}")).to_owned();
    let claims = claims_of(&hop1);
    let trace = || async {
        let url = format!("{}/admin/trace/{}", broker.url, claims.jti.0);
        let response = client.http.get(url).bearer_auth(ADMIN).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.unwrap()
    };
    assert_eq!(trace().await["token"]["status"], "active");

    let sign_in = &claims.delegation.hops[0].jti;
    let response = client
        .http
        .post(format!("{}/admin/revoke", broker.url))
        .bearer_auth(ADMIN)
        .json(&json!({"jti": sign_in.0}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.text().await.unwrap());
    assert_eq!(trace().await["token"]["status"], "revoked");
    let refused = client.exchange("planner", &planner, (&hop1, ACCESS_TOKEN), &[("audience", "booker")]).await;
    assert_refused(&refused, "a chain whose sign-in was revoked");
}
