//! Client authentication at the token endpoint (RFC 6749 §2.3, RFC 7523 §2.2
//! and §3): `client_secret_basic`, `client_secret_post` and `private_key_jwt`.
//! Exactly one method per request; the agent it proves is the acting agent.

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::clock::{Clock, UnixTime};
use crate::ids::{AgentId, Issuer};
use crate::jose::{self, JoseError};
use crate::keys::{self, Algorithm};
use crate::policy::{Client, Credentials, Inventory};
use crate::store::{ReplayStore, StoreError, Use};

/// `client_assertion_type` for JWT client assertions (RFC 7523 §2.2).
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The longest lifetime an assertion may have left when presented ("near"),
/// and the longest it may have from `iat` to `exp`, in seconds, both before
/// the clock leeway.
pub const MAX_ASSERTION_LIFETIME: i64 = 300;

/// The oldest an assertion's `iat` may be when presented, in seconds,
/// before the clock leeway: an assertion is made for one request.
pub const MAX_ASSERTION_AGE: i64 = 300;

/// The algorithms a `private_key_jwt` assertion may be signed with, at
/// every endpoint that authenticates clients: Baton's allow-list.
pub const ASSERTION_ALGORITHMS: [Algorithm; 2] = [Algorithm::Es256, Algorithm::EdDsa];

/// The latest NumericDate read: the last second of the year 9999. Anything
/// later, or before the epoch, is no time an assertion is really made at.
const LATEST_DATE: f64 = 253_402_300_799.0;

/// A client secret as presented. Never printed, and wiped from memory when
/// dropped.
#[derive(Clone)]
pub struct ClientSecret(SecretString);

impl ClientSecret {
    /// Wraps a presented secret.
    pub fn new(secret: String) -> Self {
        ClientSecret(SecretString::from(secret))
    }
}

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecret(***)")
    }
}

/// A client authentication method (RFC 8414 `token_endpoint_auth_methods_supported`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// HTTP Basic with the client id and secret.
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// A JWT signed with the agent's registered key (RFC 7523).
    PrivateKeyJwt,
}

impl AuthMethod {
    /// Every method, as the token, introspection and revocation endpoints
    /// all accept them.
    pub const ALL: [AuthMethod; 3] =
        [AuthMethod::ClientSecretBasic, AuthMethod::ClientSecretPost, AuthMethod::PrivateKeyJwt];

    /// The registered name of the method.
    pub fn name(self) -> &'static str {
        match self {
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
            AuthMethod::PrivateKeyJwt => "private_key_jwt",
        }
    }
}

/// The credentials a request carries, before they are checked.
#[derive(Clone)]
pub enum Presented {
    /// A client id and secret, by Basic or in the body.
    Secret {
        /// The claimed client id.
        client_id: String,
        /// The secret.
        secret: ClientSecret,
        /// How it came.
        method: AuthMethod,
    },
    /// A JWT client assertion.
    Assertion {
        /// `client_id` from the body, if sent; must match the assertion.
        client_id: Option<String>,
        /// The assertion.
        assertion: String,
    },
}

/// Secrets and assertions are never printed.
impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Presented::Secret { client_id, method, .. } => {
                f.debug_struct("Secret").field("client_id", client_id).field("method", method).finish_non_exhaustive()
            }
            Presented::Assertion { client_id, .. } => {
                f.debug_struct("Assertion").field("client_id", client_id).finish_non_exhaustive()
            }
        }
    }
}

/// The credential fields of a token request.
#[derive(Default, Clone, Copy)]
pub struct CredentialFields<'a> {
    /// The `Authorization` header's value, if any.
    pub authorization: Option<&'a str>,
    /// `client_id` from the body.
    pub client_id: Option<&'a str>,
    /// `client_secret` from the body.
    pub client_secret: Option<&'a str>,
    /// `client_assertion_type` from the body.
    pub client_assertion_type: Option<&'a str>,
    /// `client_assertion` from the body.
    pub client_assertion: Option<&'a str>,
}

/// A client whose credentials were checked: an agent, or an API that
/// introspects. Only [`authenticate`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedClient {
    id: AgentId,
    method: AuthMethod,
    api: Option<String>,
}

impl AuthenticatedClient {
    /// The client id.
    pub fn id(&self) -> &AgentId {
        &self.id
    }

    /// The URI of the API this client introspects for, when it is one.
    pub fn api(&self) -> Option<&str> {
        self.api.as_deref()
    }

    /// The client as an agent; `None` for an API.
    pub fn into_agent(self) -> Option<AuthenticatedAgent> {
        match self.api {
            None => Some(AuthenticatedAgent { id: self.id, method: self.method }),
            Some(_) => None,
        }
    }
}

/// An agent whose credentials were checked: the only party that obtains and
/// exchanges tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedAgent {
    id: AgentId,
    method: AuthMethod,
}

impl AuthenticatedAgent {
    /// The agent's id.
    pub fn id(&self) -> &AgentId {
        &self.id
    }

    /// How it authenticated.
    pub fn method(&self) -> AuthMethod {
        self.method
    }
}

/// Why a client was not authenticated.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientAuthError {
    /// More than one method in one request (RFC 6749 §2.3).
    #[error("more than one client authentication method")]
    MultipleMethods,
    /// No credentials at all.
    #[error("no client authentication")]
    Missing,
    /// The `Authorization` header is not valid Basic credentials.
    #[error("malformed Basic credentials")]
    MalformedBasic,
    /// `client_assertion_type` is missing or not the JWT bearer type.
    #[error("unsupported client_assertion_type")]
    UnsupportedAssertionType,
    /// No agent with that id.
    #[error("unknown client")]
    UnknownClient,
    /// The agent is past its `expires` date.
    #[error("client is deprovisioned")]
    Deprovisioned,
    /// The agent is registered for another method.
    #[error("client is registered for another authentication method")]
    WrongMethod,
    /// The secret does not match.
    #[error("wrong client secret")]
    WrongSecret,
    /// The assertion fails a check of RFC 7523 §3.
    #[error("client assertion: {0}")]
    Assertion(&'static str),
    /// The assertion's `jti` was already used.
    #[error("client assertion replayed")]
    Replayed,
    /// An agent's credentials were used where only an introspecting API may act.
    #[error("client is not an introspecting API")]
    NotAnIntrospector,
    /// An API's credentials were used where only an agent may act.
    #[error("client is not an agent")]
    NotAnAgent,
    /// Replay state could not be checked.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ClientAuthError {
    /// Whether the refusal came after the client proved it holds its
    /// credential (the secret matched, the assertion's signature verified):
    /// such a refusal names an agent for certain, and cannot be produced
    /// without its key, so it is recorded as an event of its own rather than
    /// counted with the junk (DESIGN.md §2.7, §12).
    pub fn proves_identity(&self) -> bool {
        match self {
            ClientAuthError::Deprovisioned
            | ClientAuthError::Replayed
            | ClientAuthError::NotAnIntrospector
            | ClientAuthError::NotAnAgent => true,
            ClientAuthError::MultipleMethods
            | ClientAuthError::Missing
            | ClientAuthError::MalformedBasic
            | ClientAuthError::UnsupportedAssertionType
            | ClientAuthError::UnknownClient
            | ClientAuthError::WrongMethod
            | ClientAuthError::WrongSecret
            | ClientAuthError::Assertion(_)
            | ClientAuthError::Store(_) => false,
        }
    }

    /// Whether the refusal spends the address's budget of failed
    /// authentications (DESIGN.md §12): every failed authentication
    /// (RFC 6749 §5.2 `invalid_client`) does. A deprovisioned agent and a
    /// replayed assertion do too, so that retrying them (a captured
    /// assertion can be replayed by anyone) cannot write events without
    /// bound. A request using two methods, a client of the wrong kind and a
    /// store outage are not guesses and spend nothing.
    pub fn spends_budget(&self) -> bool {
        match self {
            ClientAuthError::Missing
            | ClientAuthError::MalformedBasic
            | ClientAuthError::UnsupportedAssertionType
            | ClientAuthError::UnknownClient
            | ClientAuthError::Deprovisioned
            | ClientAuthError::WrongMethod
            | ClientAuthError::WrongSecret
            | ClientAuthError::Assertion(_)
            | ClientAuthError::Replayed => true,
            ClientAuthError::MultipleMethods
            | ClientAuthError::NotAnIntrospector
            | ClientAuthError::NotAnAgent
            | ClientAuthError::Store(_) => false,
        }
    }
}

/// Works out which single method a request uses (RFC 6749 §2.3: a client must
/// not use more than one).
pub fn presented(fields: CredentialFields<'_>) -> Result<Presented, ClientAuthError> {
    let basic = fields.authorization.map(parse_basic).transpose()?;
    let uses_post = fields.client_secret.is_some();
    let uses_assertion = fields.client_assertion.is_some() || fields.client_assertion_type.is_some();
    match (basic, uses_post, uses_assertion) {
        (Some((client_id, secret)), false, false) => {
            if fields.client_id.is_some_and(|body_id| body_id != client_id) {
                return Err(ClientAuthError::MultipleMethods);
            }
            Ok(Presented::Secret {
                client_id,
                secret: ClientSecret::new(secret),
                method: AuthMethod::ClientSecretBasic,
            })
        }
        (None, true, false) => Ok(Presented::Secret {
            client_id: fields.client_id.ok_or(ClientAuthError::Missing)?.to_owned(),
            secret: ClientSecret(SecretString::from(fields.client_secret.unwrap_or_default())),
            method: AuthMethod::ClientSecretPost,
        }),
        (None, false, true) => {
            if fields.client_assertion_type != Some(ASSERTION_TYPE) {
                return Err(ClientAuthError::UnsupportedAssertionType);
            }
            Ok(Presented::Assertion {
                client_id: fields.client_id.map(str::to_owned),
                assertion: fields.client_assertion.ok_or(ClientAuthError::Missing)?.to_owned(),
            })
        }
        (None, false, false) => Err(ClientAuthError::Missing),
        _ => Err(ClientAuthError::MultipleMethods),
    }
}

/// The client id of Basic credentials, if they parse (for evidence).
pub fn basic_client_id(header: &str) -> Option<String> {
    parse_basic(header).ok().map(|(id, _)| id)
}

/// `Authorization: Basic` with the id and secret form-urlencoded first
/// (RFC 6749 §2.3.1).
fn parse_basic(header: &str) -> Result<(String, String), ClientAuthError> {
    let (scheme, encoded) = header.trim().split_once(' ').ok_or(ClientAuthError::MalformedBasic)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(ClientAuthError::MalformedBasic);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| ClientAuthError::MalformedBasic)?;
    let text = String::from_utf8(decoded).map_err(|_| ClientAuthError::MalformedBasic)?;
    let (id, secret) = text.split_once(':').ok_or(ClientAuthError::MalformedBasic)?;
    let unescape = |part: &str| -> String {
        form_urlencoded::parse(format!("v={part}").as_bytes())
            .next()
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default()
    };
    let id = unescape(id);
    if id.is_empty() {
        return Err(ClientAuthError::MalformedBasic);
    }
    Ok((id, unescape(secret)))
}

/// The context an authentication is checked in.
pub struct ClientAuthenticator<'a> {
    /// Registered agents.
    pub inventory: &'a Inventory,
    /// Single-use assertion ids.
    pub replay: &'a dyn ReplayStore,
    /// This broker's issuer: the only accepted assertion audience.
    pub issuer: &'a Issuer,
    /// Now.
    pub clock: &'a dyn Clock,
    /// Seconds of clock difference tolerated with clients (RFC 7523 §3 item 4).
    pub leeway: i64,
}

/// Checks the presented credentials against the inventory.
pub async fn authenticate(
    presented: &Presented,
    authenticator: &ClientAuthenticator<'_>,
) -> Result<AuthenticatedClient, ClientAuthError> {
    let now = authenticator.clock.now();
    let (id, method) = match presented {
        Presented::Secret { client_id, secret, method } => {
            let client = authenticator.inventory.client(client_id).ok_or(ClientAuthError::UnknownClient)?;
            let Credentials::Secret(hash) = client.credentials() else {
                return Err(ClientAuthError::WrongMethod);
            };
            // The hash is compared in constant time.
            if !hash.matches(secret.0.expose_secret()) {
                return Err(ClientAuthError::WrongSecret);
            }
            if !client.is_active(now) {
                return Err(ClientAuthError::Deprovisioned);
            }
            (client_id.clone(), *method)
        }
        Presented::Assertion { client_id, assertion } => {
            let checked = check_assertion(assertion, client_id.as_deref(), authenticator, now)?;
            // RFC 7523 §3 item 7: the jti is single-use until the assertion expires.
            let key = format!("client_assertion:{}:{}", checked.client_id, checked.jti);
            match authenticator.replay.use_once(&key, checked.expires_at, now).await? {
                Use::First => (checked.client_id, AuthMethod::PrivateKeyJwt),
                Use::Replayed => return Err(ClientAuthError::Replayed),
            }
        }
    };
    let api = match authenticator.inventory.client(&id) {
        Some(Client::Resource(resource)) => Some(resource.uri.clone()),
        Some(Client::Agent(_)) | None => None,
    };
    Ok(AuthenticatedClient { id: AgentId::new(id), method, api })
}

/// An assertion that passed RFC 7523 §3, before its `jti` is spent.
struct CheckedAssertion {
    client_id: String,
    jti: String,
    expires_at: UnixTime,
}

#[derive(Deserialize)]
struct AssertionClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<serde_json::Value>,
    exp: Option<serde_json::Number>,
    nbf: Option<serde_json::Number>,
    iat: Option<serde_json::Number>,
    jti: Option<String>,
}

/// Which way a fractional NumericDate is rounded to whole seconds: always
/// the way that makes the assertion's window narrower.
#[derive(Clone, Copy)]
enum Round {
    /// An end (`exp`): down.
    Down,
    /// A start (`iat`, `nbf`): up.
    Up,
}

/// A NumericDate (RFC 7519 §2: seconds since the epoch, "non-integer values
/// can be represented") as whole seconds, or `None` when it is outside the
/// years 1970 to 9999, so that no extreme value reaches the arithmetic.
fn numeric_date(value: &serde_json::Number, round: Round) -> Option<UnixTime> {
    if let Some(seconds) = value.as_i64() {
        // The bound is an exact integer, far within i64 and f64.
        return (0..=LATEST_DATE as i64).contains(&seconds).then_some(UnixTime(seconds));
    }
    let seconds = value.as_f64().filter(|seconds| seconds.is_finite() && (0.0..=LATEST_DATE).contains(seconds))?;
    let whole = match round {
        Round::Down => seconds.floor(),
        Round::Up => seconds.ceil(),
    };
    // In range, as checked above: the conversion is exact.
    Some(UnixTime(whole as i64))
}

/// An optional NumericDate claim, refused when present and not a date.
fn date_claim(
    value: Option<&serde_json::Number>,
    round: Round,
    problem: &'static str,
) -> Result<Option<UnixTime>, ClientAuthError> {
    value.map(|value| numeric_date(value, round).ok_or(ClientAuthError::Assertion(problem))).transpose()
}

/// RFC 7523 §3, in order.
fn check_assertion(
    assertion: &str,
    body_client_id: Option<&str>,
    authenticator: &ClientAuthenticator<'_>,
    now: UnixTime,
) -> Result<CheckedAssertion, ClientAuthError> {
    const MALFORMED: ClientAuthError = ClientAuthError::Assertion("not a signed JWT");
    let assertion = jose::parse(assertion, 8 * 1024).map_err(|error| match error {
        JoseError::TooLarge => ClientAuthError::Assertion("too large"),
        JoseError::Malformed | JoseError::BadSignature | JoseError::Payload => MALFORMED,
    })?;
    let header = assertion.header();
    let algorithm =
        header.algorithm_in(&ASSERTION_ALGORITHMS).ok_or(ClientAuthError::Assertion("algorithm not allowed"))?;
    if header.is_critical() {
        return Err(ClientAuthError::Assertion("critical header parameters are not supported"));
    }
    // RFC 8725 §3.10: the key is the one registered for the client, never
    // one the assertion names or carries.
    if header.names_or_carries_key() {
        return Err(ClientAuthError::Assertion("the header names or carries a key"));
    }
    // A token of another kind (an access token, say) is never an assertion.
    if header
        .typ
        .as_deref()
        .is_some_and(|typ| !typ.eq_ignore_ascii_case("JWT") && !typ.eq_ignore_ascii_case("client-authentication+jwt"))
    {
        return Err(ClientAuthError::Assertion("typ is not a client assertion's"));
    }
    // RFC 7523 §3: the claims are read before the signature is checked only
    // to find whose keys to check it with (`iss`); nothing else is trusted
    // until it verifies, and the claims checked below are decoded from the
    // verified payload.
    let unverified: AssertionClaims = assertion.insecure_claims().map_err(|_| MALFORMED)?;
    let client_id = unverified.iss.ok_or(ClientAuthError::Assertion("missing iss"))?;
    let client = authenticator.inventory.client(&client_id).ok_or(ClientAuthError::UnknownClient)?;
    let Credentials::Keys(keys) = client.credentials() else {
        return Err(ClientAuthError::WrongMethod);
    };
    let candidates = keys.iter().filter(|key| key.algorithm() == algorithm).filter(|key| match &header.kid {
        Some(kid) => {
            key.public_jwk().key_id() == Some(kid.as_str())
                || keys::thumbprint(key.public_jwk()).ok().as_deref() == Some(kid.as_str())
        }
        None => true,
    });
    let mut verified = None;
    for key in candidates {
        match assertion.verify::<AssertionClaims>(key) {
            Ok(claims) => {
                verified = Some(claims);
                break;
            }
            // Another registered key may be the one.
            Err(JoseError::BadSignature) => {}
            Err(JoseError::TooLarge | JoseError::Malformed | JoseError::Payload) => return Err(MALFORMED),
        }
    }
    let claims =
        verified.ok_or(ClientAuthError::Assertion("signature does not verify with a registered key"))?.into_payload();
    // Item 1 and 2: iss and sub are the client id.
    if claims.iss.as_deref() != Some(client_id.as_str()) || claims.sub.as_deref() != Some(client_id.as_str()) {
        return Err(ClientAuthError::Assertion("iss and sub must both be the client id"));
    }
    if body_client_id.is_some_and(|id| id != client_id) {
        return Err(ClientAuthError::Assertion("client_id does not match the assertion"));
    }
    // Item 3: the audience identifies this authorization server. Only the
    // issuer itself, as a single string: a list could smuggle this server in
    // beside another audience the assertion was really meant for.
    if claims.aud.as_ref().and_then(serde_json::Value::as_str) != Some(authenticator.issuer.as_str()) {
        return Err(ClientAuthError::Assertion("aud must be the issuer"));
    }
    // Item 4: exp is required, in the future, and near, with "some small
    // leeway ... to account for clock skew". Times are NumericDates, which
    // may be fractional (RFC 7519 §2); absurd ones are refused.
    let leeway = authenticator.leeway;
    let exp = date_claim(claims.exp.as_ref(), Round::Down, "exp is not a valid NumericDate")?
        .ok_or(ClientAuthError::Assertion("missing exp"))?;
    let nbf = date_claim(claims.nbf.as_ref(), Round::Up, "nbf is not a valid NumericDate")?;
    let iat = date_claim(claims.iat.as_ref(), Round::Up, "iat is not a valid NumericDate")?;
    if exp.plus(leeway) <= now {
        return Err(ClientAuthError::Assertion("expired"));
    }
    if exp.seconds_since(now) > MAX_ASSERTION_LIFETIME.saturating_add(leeway) {
        return Err(ClientAuthError::Assertion("exp is too far in the future"));
    }
    // Item 5: not before.
    if nbf.is_some_and(|nbf| nbf.seconds_since(now) > leeway) {
        return Err(ClientAuthError::Assertion("not yet valid"));
    }
    // Item 6: issued at, neither in the future nor long ago, and the whole
    // lifetime short: an assertion is made for the request it comes with.
    if let Some(iat) = iat {
        if iat.seconds_since(now) > leeway {
            return Err(ClientAuthError::Assertion("issued in the future"));
        }
        if now.seconds_since(iat) > MAX_ASSERTION_AGE.saturating_add(leeway) {
            return Err(ClientAuthError::Assertion("issued too long ago"));
        }
        if exp.seconds_since(iat) > MAX_ASSERTION_LIFETIME.saturating_add(leeway) {
            return Err(ClientAuthError::Assertion("lifetime is too long"));
        }
    }
    // Item 7: a jti, for replay protection.
    let jti = claims
        .jti
        .filter(|jti| !jti.is_empty() && jti.len() <= 256)
        .ok_or(ClientAuthError::Assertion("missing jti"))?;
    if !client.is_active(now) {
        return Err(ClientAuthError::Deprovisioned);
    }
    // Spent for as long as it could be accepted, leeway included.
    Ok(CheckedAssertion { client_id, jti, expires_at: exp.plus(leeway) })
}

impl ClientAuthError {
    /// The label metrics and the audit trail count this refusal by: the
    /// variant, never the claimed client or the failed check's detail.
    pub fn reason(&self) -> &'static str {
        match self {
            ClientAuthError::MultipleMethods => "client_multiple_methods",
            ClientAuthError::Missing => "client_missing",
            ClientAuthError::MalformedBasic => "client_malformed_basic",
            ClientAuthError::UnsupportedAssertionType => "client_unsupported_assertion_type",
            ClientAuthError::UnknownClient => "client_unknown",
            ClientAuthError::Deprovisioned => "client_deprovisioned",
            ClientAuthError::WrongMethod => "client_wrong_method",
            ClientAuthError::WrongSecret => "client_wrong_secret",
            ClientAuthError::Assertion(_) => "client_assertion_invalid",
            ClientAuthError::Replayed => "client_assertion_replayed",
            ClientAuthError::NotAnIntrospector => "client_not_an_introspector",
            ClientAuthError::NotAnAgent => "client_not_an_agent",
            ClientAuthError::Store(_) => "store_unavailable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(id: &str, secret: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let header = basic("my%20agent", "p%3Ass");
        let Presented::Secret { client_id, secret, method } =
            presented(CredentialFields { authorization: Some(&header), ..Default::default() }).unwrap()
        else {
            panic!("expected a secret");
        };
        assert_eq!(client_id, "my agent");
        assert_eq!(secret.0.expose_secret(), "p:ss");
        assert_eq!(method, AuthMethod::ClientSecretBasic);
        assert_eq!(format!("{secret:?}"), "ClientSecret(***)");
    }

    #[test]
    fn numeric_dates_may_be_fractional_but_never_extreme() {
        let number = |text: &str| serde_json::from_str::<serde_json::Number>(text).unwrap();
        assert_eq!(numeric_date(&number("1796083500"), Round::Down), Some(UnixTime(1_796_083_500)));
        assert_eq!(numeric_date(&number("1796083500.5"), Round::Down), Some(UnixTime(1_796_083_500)));
        assert_eq!(numeric_date(&number("1796083500.5"), Round::Up), Some(UnixTime(1_796_083_501)));
        assert_eq!(numeric_date(&number("1.7960835e9"), Round::Down), Some(UnixTime(1_796_083_500)));
        for extreme in [
            "-9223372036854775808",
            "9223372036854775807",
            "9223372036854775808",
            "18446744073709551615",
            "-1",
            "-0.5",
            "1e300",
            "-1e300",
            "253402300800",
            "253402300799.5",
        ] {
            assert_eq!(numeric_date(&number(extreme), Round::Down), None, "{extreme}");
            assert_eq!(numeric_date(&number(extreme), Round::Up), None, "{extreme}");
        }
    }

    #[test]
    fn one_method_per_request() {
        let header = basic("a", "b");
        let both = CredentialFields {
            authorization: Some(&header),
            client_secret: Some("b"),
            client_id: Some("a"),
            ..Default::default()
        };
        assert!(matches!(presented(both), Err(ClientAuthError::MultipleMethods)));
        let post_and_jwt = CredentialFields {
            client_id: Some("a"),
            client_secret: Some("b"),
            client_assertion_type: Some(ASSERTION_TYPE),
            client_assertion: Some("x.y.z"),
            ..Default::default()
        };
        assert!(matches!(presented(post_and_jwt), Err(ClientAuthError::MultipleMethods)));
        assert!(matches!(presented(CredentialFields::default()), Err(ClientAuthError::Missing)));
        let bad = CredentialFields { authorization: Some("Bearer abc"), ..Default::default() };
        assert!(matches!(presented(bad), Err(ClientAuthError::MalformedBasic)));
    }
}
