//! A broker on a temporary key folder, a copy of a policy folder and a fixed
//! clock, driven through its router.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use base64::Engine;
use baton::approvals::{ApprovalSettings, Approver};
use baton::broker::Broker;
use baton::claims::Claims;
use baton::clock::{Clock, FixedClock, UnixTime};
use baton::context::{Settings, Stores};
use baton::keys::{self, Algorithm, KeySet};
use baton::policy::{Lifetimes, Policy};
use baton::store::embedded::EmbeddedStore;
use baton::store::{ApprovalId, ApprovalStore, AuditEvent, AuditFilter, AuditStore, ReplayStore, RevocationStore};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub const ISSUER: &str = "http://127.0.0.1:8080";
pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const AIRLINE: &str = "https://api.airline.example";
pub const CALENDAR: &str = "https://api.calendar.example";
/// 2026-12-01T00:00:00Z: inside every example agent's registered life.
pub const START: UnixTime = UnixTime(1_796_083_200);
/// The booker's owner in the example inventory: who approves its bookings.
pub const BOOKER_OWNER: &str = "travel-team@example.com";

pub struct Harness {
    pub dir: Arc<tempfile::TempDir>,
    pub clock: Arc<FixedClock>,
    /// The embedded store the broker keeps its state in (unless other
    /// stores were given).
    pub store: Arc<EmbeddedStore>,
    pub router: Router,
    pub broker: Arc<Broker>,
    settings: Settings,
    stores: Stores,
    approvals: Approvals,
}

/// How the harness's broker keeps and announces approvals.
#[derive(Clone)]
pub struct Approvals {
    pub store: Arc<dyn ApprovalStore>,
    pub approver: Approver,
    pub webhook: Option<String>,
    pub max_pending_per_agent: usize,
}

pub struct Options {
    pub policies: PathBuf,
    pub max_depth: u32,
    pub algorithm: Algorithm,
    pub stores: Option<Stores>,
    /// Whether the admin API is on (with `ADMIN_TOKEN`).
    pub admin: bool,
    pub issuer: String,
    /// Whether DPoP proofs must carry a server nonce.
    pub dpop_nonce: bool,
    /// Where approvals live (default: the harness's embedded store).
    pub approval_store: Option<Arc<dyn ApprovalStore>>,
    pub approver: Approver,
    pub approval_webhook: Option<String>,
    /// How many approvals one agent may have pending.
    pub max_pending_approvals: usize,
    /// Where the fixed clock starts. A store that keeps time itself (Redis
    /// expires keys on its own clock) needs the real time here.
    pub start: UnixTime,
    /// `clock_leeway_seconds`: none by default, as every part of the harness
    /// reads the one fixed clock.
    pub clock_leeway_seconds: i64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            policies: example_policies(),
            max_depth: 5,
            algorithm: Algorithm::Es256,
            stores: None,
            admin: true,
            issuer: ISSUER.into(),
            dpop_nonce: false,
            approval_store: None,
            approver: Approver::Owner,
            approval_webhook: None,
            max_pending_approvals: baton::approvals::DEFAULT_MAX_PENDING_PER_AGENT,
            start: START,
            clock_leeway_seconds: 0,
        }
    }
}

pub fn example_policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Response {
    pub fn token(&self) -> &str {
        self.body["access_token"].as_str().unwrap_or_else(|| panic!("no token in {}: {}", self.status, self.body))
    }

    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or_else(|| panic!("no error in {}: {}", self.status, self.body))
    }

    #[track_caller]
    pub fn assert_error(&self, status: u16, error: &str) {
        assert_eq!((self.status.as_u16(), self.error()), (status, error), "body: {}", self.body);
        assert_eq!(self.headers[header::CACHE_CONTROL], "no-store");
    }
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with(Options::default())
    }

    pub fn with(options: Options) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let keys_dir = dir.path().join("keys");
        let lifetimes = Lifetimes { max_token_ttl: 3600, agent_token_ttl: 900 };
        keys::generate(&keys_dir, options.algorithm, 3600, options.start).unwrap();
        let clock = Arc::new(FixedClock::new(options.start));
        let store = Arc::new(EmbeddedStore::open(&dir.path().join("data")).unwrap());
        let stores = options.stores.unwrap_or_else(|| Stores {
            replay: store.clone() as Arc<dyn ReplayStore>,
            revocation: store.clone() as Arc<dyn RevocationStore>,
            audit: store.clone() as Arc<dyn AuditStore>,
        });
        let settings = Settings {
            issuer: options.issuer.clone().into(),
            max_depth: options.max_depth,
            max_token_bytes: 16 * 1024,
            max_body_bytes: 64 * 1024,
            lifetimes,
            admin_token_sha256: options.admin.then(|| secret_hash(ADMIN_TOKEN)),
            dpop_nonce: options.dpop_nonce,
            clock_leeway_seconds: options.clock_leeway_seconds,
        };
        let approvals = Approvals {
            store: options.approval_store.unwrap_or_else(|| store.clone() as Arc<dyn ApprovalStore>),
            approver: options.approver,
            webhook: options.approval_webhook,
            max_pending_per_agent: options.max_pending_approvals,
        };
        Harness::start(Arc::new(dir), clock, store, settings, stores, approvals, &options.policies)
    }

    fn start(
        dir: Arc<tempfile::TempDir>,
        clock: Arc<FixedClock>,
        store: Arc<EmbeddedStore>,
        settings: Settings,
        stores: Stores,
        approvals: Approvals,
        policies: &Path,
    ) -> Harness {
        let keys = KeySet::load(&dir.path().join("keys"), 3600, clock.now()).unwrap();
        let policy = Policy::load(policies, settings.lifetimes).unwrap();
        let broker_stores = Stores {
            replay: stores.replay.clone(),
            revocation: stores.revocation.clone(),
            audit: stores.audit.clone(),
        };
        let approval_settings = ApprovalSettings {
            store: approvals.store.clone(),
            approver: approvals.approver,
            ttl: 600,
            max_pending_per_agent: approvals.max_pending_per_agent,
            webhook: approvals.webhook.as_deref().map(|url| baton::approvals::webhook::Webhook::new(url).unwrap()),
        };
        let broker = Arc::new(
            Broker::new(settings.clone(), keys, policy, broker_stores, clock.clone())
                .with_approvals(approval_settings)
                .with_lifecycle_store(store.clone()),
        );
        let router = baton::http::router(broker.clone());
        Harness { dir, clock, store, router, broker, settings, stores, approvals }
    }

    /// The same broker restarted on another policy folder: same keys, same
    /// state, same clock.
    pub fn restarted_with(&self, policies: &Path) -> Harness {
        let stores = Stores {
            replay: self.stores.replay.clone(),
            revocation: self.stores.revocation.clone(),
            audit: self.stores.audit.clone(),
        };
        Harness::start(
            self.dir.clone(),
            self.clock.clone(),
            self.store.clone(),
            self.settings.clone(),
            stores,
            self.approvals.clone(),
            policies,
        )
    }

    /// A broker served on a real loopback socket, its issuer the socket's URL.
    pub async fn served(options: Options) -> (Harness, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let harness = Harness::with(Options { issuer: issuer.clone(), ..options });
        let router = harness.router.clone();
        tokio::spawn(async move { axum::serve(listener, router).await });
        (harness, issuer)
    }

    /// Every audit event of the embedded store, oldest first.
    pub async fn events(&self) -> Vec<AuditEvent> {
        let mut events = self.store.query(&AuditFilter::default()).await.unwrap();
        events.reverse();
        events
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.dir.path().join("keys")
    }

    pub async fn send(&self, request: Request<Body>) -> Response {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        Response { status, headers, body }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.send(Request::get(path).body(Body::empty()).unwrap()).await
    }

    /// `POST /token` with `client_secret_basic` when `basic` is given.
    pub async fn token(&self, basic: Option<(&str, &str)>, form: &[(&str, &str)]) -> Response {
        self.token_with_proofs(basic, form, &[]).await
    }

    /// `POST /token` with a `DPoP` header for each of `proofs`.
    pub async fn token_with_proofs(
        &self,
        basic: Option<(&str, &str)>,
        form: &[(&str, &str)],
        proofs: &[&str],
    ) -> Response {
        let mut request = Request::post("/token").header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some((id, secret)) = basic {
            request = request.header(header::AUTHORIZATION, basic_header(id, secret));
        }
        for proof in proofs {
            request = request.header("DPoP", *proof);
        }
        self.send(request.body(Body::from(form_body(form))).unwrap()).await
    }

    /// The example agent `agent` authenticating with its dev secret.
    pub async fn as_agent(&self, agent: &str, form: &[(&str, &str)]) -> Response {
        let secret = format!("dev-only-{agent}-secret");
        self.token(Some((agent, &secret)), form).await
    }

    pub async fn exchange(&self, agent: &str, subject_token: &str, extra: &[(&str, &str)]) -> Response {
        let mut form =
            vec![("grant_type", EXCHANGE), ("subject_token", subject_token), ("subject_token_type", ACCESS_TOKEN)];
        form.extend_from_slice(extra);
        self.as_agent(agent, &form).await
    }

    /// The three hops of the example: orchestrator's own token for the
    /// planner, the planner's for the booker, the booker's for the airline.
    pub async fn walk(&self) -> [String; 3] {
        let root =
            self.as_agent("orchestrator", &[("grant_type", "client_credentials"), ("audience", "planner")]).await;
        assert_eq!(root.status, StatusCode::OK, "{}", root.body);
        let hop1 = self.exchange("planner", root.token(), &[("audience", "booker")]).await;
        assert_eq!(hop1.status, StatusCode::OK, "{}", hop1.body);
        let hop2 =
            self.approved_exchange("booker", hop1.token(), &[("resource", AIRLINE), ("scope", "flights.book")]).await;
        assert_eq!(hop2.status, StatusCode::OK, "{}", hop2.body);
        [root.token().to_owned(), hop1.token().to_owned(), hop2.token().to_owned()]
    }

    /// An exchange that needs a person's approval: asked, approved by the
    /// agent's owner (the example's approver), then repeated with the id.
    pub async fn approved_exchange(&self, agent: &str, subject_token: &str, extra: &[(&str, &str)]) -> Response {
        let pending = self.exchange(agent, subject_token, extra).await;
        pending.assert_error(400, "authorization_pending");
        let id = pending.body["approval_id"].as_str().unwrap().to_owned();
        let owner = self.broker.policy().inventory().agent(agent).unwrap().owner.clone();
        self.broker
            .decide_approval(&ApprovalId(id.clone()), &owner, true, &baton::admin::Operator::AdminApi)
            .await
            .unwrap();
        let mut repeated = extra.to_vec();
        repeated.push(("approval_id", &id));
        self.exchange(agent, subject_token, &repeated).await
    }

    /// Signs arbitrary header and claims with the broker's own key, to build
    /// tokens the broker would never issue.
    pub fn sign_with_broker_key(&self, header: &Value, claims: &Value) -> String {
        let jwk = private_jwk(&self.keys_dir());
        sign(&jwk, header, claims)
    }

    pub fn broker_kid(&self) -> String {
        self.broker.keys().signing().kid().to_owned()
    }
}

pub fn basic_header(id: &str, secret: &str) -> String {
    let encode = |text: &str| form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", encode(id), encode(secret));
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
}

pub fn form_body(form: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish()
}

/// The claims of a token, decoded without checking it.
pub fn claims_of(token: &str) -> Claims {
    baton::token::insecure_peek(token).unwrap().claims
}

pub fn json_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

pub fn header_of(token: &str) -> Value {
    let header = token.split('.').next().unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap()
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn private_jwk(keys_dir: &Path) -> josekit::jwk::Jwk {
    let entry = std::fs::read_dir(keys_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|ext| ext == "json"))
        .unwrap();
    let file: Value = serde_json::from_slice(&std::fs::read(entry).unwrap()).unwrap();
    josekit::jwk::Jwk::from_map(file["jwk"].as_object().unwrap().clone()).unwrap()
}

/// A compact JWS over exactly `header` and `claims`, signed with `jwk`
/// (ES256 or EdDSA by its key type).
pub fn sign(jwk: &josekit::jwk::Jwk, header: &Value, claims: &Value) -> String {
    use josekit::jws::JwsSigner;
    let signing_input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let signature = match jwk.key_type() {
        "EC" => josekit::jws::ES256.signer_from_jwk(jwk).unwrap().sign(signing_input.as_bytes()).unwrap(),
        _ => josekit::jws::EdDSA.signer_from_jwk(jwk).unwrap().sign(signing_input.as_bytes()).unwrap(),
    };
    format!("{signing_input}.{}", b64(&signature))
}

/// A policy folder written from text, for cases the example does not cover.
pub fn policy_folder(agents: &str, resources: &str, rules: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("agents.toml"), agents).unwrap();
    std::fs::write(dir.path().join("resources.toml"), resources).unwrap();
    std::fs::write(dir.path().join("rules.cedar"), rules).unwrap();
    dir
}

pub fn secret_hash(secret: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, secret.as_bytes())
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
