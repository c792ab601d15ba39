//! The bare endpoint: the least a token exchange can do over HTTP, the
//! ceiling Baton's exchange is measured against on the same machine in the
//! same run.
//!
//! The benchmark runs it by re-executing its own binary with `LISTEN` set
//! (checked first thing in `main`), so that its CPU time and RSS are read
//! from `/proc` exactly as the other servers' are. It serves axum on a
//! multi-threaded tokio runtime with the default worker count and the
//! `baton` binary's allocator, as `baton serve` does, and answers
//! `POST /token` with the exchange of (b): it reads the client id from HTTP
//! Basic, parses the form, verifies the subject token's ES256 signature,
//! decodes its claims, checks its `aud` and `exp`, and signs a child with the
//! nested `act`. One verification and one signature per request, nothing
//! else: no client secret (the id is read, not checked), no policy, no
//! narrowing, no revocation check, no audit write.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use baton::clock::{Clock, SystemClock};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use serde::{Deserialize, Serialize};

use crate::keys::{self, BARE_KEY_ID};
use crate::{ACCESS_TOKEN, EXCHANGE};

/// Set by the benchmark, to the address to listen on, when it starts this
/// binary as the bare endpoint.
pub const LISTEN: &str = "BATON_LOAD_BARE_LISTEN";
/// The endpoint's private key, PKCS#8, base64url (`keys::BareKey`).
pub const KEY: &str = "BATON_LOAD_BARE_KEY";
/// The longest a child lives, seconds (the airline API's tokens in the
/// example policies).
const CHILD_LIFETIME: i64 = 300;

/// The address to serve on, when this process is to be the bare endpoint.
pub fn requested() -> Option<String> {
    std::env::var(LISTEN).ok()
}

/// Serves the bare endpoint on `listen` until the process is killed.
pub fn serve(listen: &str) {
    let pkcs8 = std::env::var(KEY)
        .ok()
        .and_then(|key| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(key).ok())
        .unwrap_or_else(|| panic!("{KEY} must hold a PKCS#8 key, base64url"));
    let random = SystemRandom::new();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &random).expect("a P-256 key");
    let minter = Minter {
        issuer: format!("http://{listen}"),
        header: keys::encode(format!(r#"{{"alg":"ES256","typ":"at+jwt","kid":"{BARE_KEY_ID}"}}"#).as_bytes()),
        public: UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, pair.public_key().as_ref().to_vec()),
        pair,
        random,
    };
    let app = Router::new().route("/token", post(token)).with_state(Arc::new(minter));
    // As `baton serve`: a multi-threaded runtime, one worker per core.
    let runtime = tokio::runtime::Runtime::new().expect("the endpoint's runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await.unwrap_or_else(|error| panic!("{listen}: {error}"));
        axum::serve(listener, app).await.expect("serving the bare endpoint");
    });
}

/// The key, and what the endpoint signs with it.
struct Minter {
    issuer: String,
    /// The children's JOSE header, encoded.
    header: String,
    pair: EcdsaKeyPair,
    public: UnparsedPublicKey<Vec<u8>>,
    random: SystemRandom,
}

impl Minter {
    /// The claims of `token` if its signature is this key's.
    fn verify(&self, token: &str) -> Option<Parent> {
        let (input, signature) = token.rsplit_once('.')?;
        let (_, claims) = input.split_once('.')?;
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature).ok()?;
        self.public.verify(input.as_bytes(), &signature).ok()?;
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims).ok()?).ok()
    }

    fn sign(&self, child: &Child) -> Option<String> {
        keys::sign(&self.pair, &self.random, &self.header, &serde_json::to_vec(child).ok()?)
    }

    fn token_id(&self) -> Option<String> {
        let mut bytes = [0u8; 16];
        self.random.fill(&mut bytes).ok()?;
        Some(keys::encode(&bytes))
    }
}

/// The form of an exchange, as far as the endpoint reads it: parsed with
/// `form_urlencoded`, as Baton's own `/token` parses its form.
#[derive(Default)]
struct ExchangeForm {
    grant_type: String,
    subject_token: String,
    subject_token_type: String,
    resource: String,
    scope: String,
}

impl ExchangeForm {
    fn parse(body: &[u8]) -> ExchangeForm {
        let mut form = ExchangeForm::default();
        for (name, value) in form_urlencoded::parse(body) {
            let field = match name.as_ref() {
                "grant_type" => &mut form.grant_type,
                "subject_token" => &mut form.subject_token,
                "subject_token_type" => &mut form.subject_token_type,
                "resource" => &mut form.resource,
                "scope" => &mut form.scope,
                _ => continue,
            };
            *field = value.into_owned();
        }
        form
    }
}

/// The subject token's claims that the exchange reads.
#[derive(Deserialize)]
struct Parent {
    sub: String,
    aud: String,
    exp: i64,
    act: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct Child<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    client_id: &'a str,
    scope: &'a str,
    iat: i64,
    exp: i64,
    jti: String,
    act: Actor<'a>,
}

/// RFC 8693 §4.1: the presenting client, acting for the parent's chain.
#[derive(Serialize)]
struct Actor<'a> {
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    act: Option<&'a serde_json::Value>,
}

#[derive(Serialize)]
struct Issued<'a> {
    access_token: String,
    issued_token_type: &'static str,
    token_type: &'static str,
    expires_in: i64,
    scope: &'a str,
}

/// Anything wrong with a request: 400 `invalid_request`.
struct Invalid;

impl IntoResponse for Invalid {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({ "error": "invalid_request" }));
        (StatusCode::BAD_REQUEST, [(CACHE_CONTROL, "no-store")], body).into_response()
    }
}

async fn token(State(minter): State<Arc<Minter>>, headers: HeaderMap, body: Bytes) -> Result<Response, Invalid> {
    let client = basic_client_id(&headers).ok_or(Invalid)?;
    let form = ExchangeForm::parse(&body);
    if form.grant_type != EXCHANGE || form.subject_token_type != ACCESS_TOKEN {
        return Err(Invalid);
    }
    let parent = minter.verify(&form.subject_token).ok_or(Invalid)?;
    let now = SystemClock.now().0;
    if parent.aud != client || parent.exp <= now {
        return Err(Invalid);
    }
    let child = Child {
        iss: &minter.issuer,
        sub: &parent.sub,
        aud: &form.resource,
        client_id: &client,
        scope: &form.scope,
        iat: now,
        exp: parent.exp.min(now + CHILD_LIFETIME),
        jti: minter.token_id().ok_or(Invalid)?,
        act: Actor { sub: &client, act: parent.act.as_ref() },
    };
    let issued = Issued {
        access_token: minter.sign(&child).ok_or(Invalid)?,
        issued_token_type: ACCESS_TOKEN,
        token_type: "Bearer",
        expires_in: child.exp - now,
        scope: &form.scope,
    };
    Ok(([(CACHE_CONTROL, "no-store")], Json(issued)).into_response())
}

/// The client id of HTTP Basic credentials; the secret is not checked.
fn basic_client_id(headers: &HeaderMap) -> Option<String> {
    let credentials = headers.get(AUTHORIZATION)?.to_str().ok()?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(credentials).ok()?;
    let (id, _secret) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some(id.to_owned())
}
