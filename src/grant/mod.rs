//! The token endpoint: [`token`] authenticates the client through the
//! guard, checks a DPoP proof, and hands the request to the handler of its
//! grant: `client_credentials` (an agent's own token) or RFC 8693 token
//! exchange, each reading only the context and the approvals.
//!
//! Every outcome, issued or refused, is recorded as an audit event before
//! the response leaves (DESIGN.md §2.7); refusals of requests whose client
//! never authenticated are counted together instead, one event per interval,
//! and failed client authentication is throttled (DESIGN.md §12; both in
//! [`crate::abuse`]).

mod client_credentials;
mod issue;
mod token_exchange;

use crate::abuse::{claimed_client, proves_identity, Guard};
use crate::approvals::Approvals;
use crate::audit::{clip, Evidence};
use crate::claims::{Claims, ScopeSet, TokenId};
use crate::client_auth::ClientAuthError;
use crate::clock::{UnixMicros, UnixTime};
use crate::context::Context;
use crate::dpop::{self, nonce::Nonces, Proof, ProofError};
use crate::error::{EndpointError, RequestError};
use crate::params::TokenParams;
use crate::policy::Policy;
use crate::store::{AuditDecision, AuditEvent, Use};

/// `grant_type` for token exchange (RFC 8693 §2.1).
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// `grant_type` for an agent's own token (RFC 6749 §4.4).
pub const CLIENT_CREDENTIALS: &str = "client_credentials";
/// The token type of an access token (RFC 8693 §3).
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// The token type of a JWT (RFC 8693 §3).
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// The token type of an OpenID Connect ID token (RFC 8693 §3).
pub const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";

/// A token request as the HTTP layer hands it over.
#[derive(Default)]
pub struct TokenRequest {
    /// The `Authorization` header's value, if any.
    pub authorization: Option<String>,
    /// The form parameters.
    pub params: TokenParams,
    /// The client's network address, for the audit trail.
    pub client_address: Option<String>,
    /// Every `DPoP` header's value (RFC 9449 §4.1; more than one is refused).
    pub dpop_proofs: Vec<String>,
}

/// The `Authorization` header carries credentials: never printed.
impl std::fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRequest")
            .field("authorization", &self.authorization.as_ref().map(|_| "***"))
            .field("params", &self.params)
            .field("client_address", &self.client_address)
            .field("dpop_proofs", &self.dpop_proofs.len())
            .finish()
    }
}

/// A successful token response (RFC 6749 §5.1, RFC 8693 §2.2.1).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenResponse {
    /// The token.
    pub access_token: String,
    /// Set for token exchange.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
    /// `DPoP` for a token bound to the client's key (RFC 9449 §5), else `Bearer`.
    pub token_type: &'static str,
    /// Seconds until expiry.
    pub expires_in: i64,
    /// The granted scopes.
    pub scope: ScopeSet,
}

/// A token the grant handlers minted, with what the audit trail needs.
pub(crate) struct Issued {
    response: TokenResponse,
    jti: TokenId,
    expires_at: UnixTime,
    iat_micros: Option<UnixMicros>,
    dpop_jkt: Option<String>,
}

impl Issued {
    /// The audit event of this issuance.
    fn event(&self, evidence: Evidence, time: UnixTime, client_address: Option<String>) -> AuditEvent {
        let mut event = evidence.event(time, AuditDecision::Issued, None, client_address);
        event.jti = Some(self.jti.clone());
        event.scopes_granted = Some(self.response.scope.to_string());
        event.expires_at = Some(self.expires_at);
        event.iat_micros = self.iat_micros;
        event.dpop_jkt = self.dpop_jkt.clone();
        event
    }

    fn new(claims: Claims, access_token: String, issued_token_type: Option<&'static str>, now: UnixTime) -> Issued {
        let dpop_jkt = claims.jkt().map(str::to_owned);
        Issued {
            response: TokenResponse {
                access_token,
                issued_token_type,
                token_type: if claims.cnf.is_some() { "DPoP" } else { "Bearer" },
                expires_in: claims.exp.seconds_since(now),
                scope: claims.scope,
            },
            jti: claims.jti,
            expires_at: claims.exp,
            iat_micros: claims.delegation.iat_micros,
            dpop_jkt,
        }
    }
}

/// Handles `POST /token`, recording the outcome.
pub async fn token(
    context: &Context,
    guard: &Guard,
    approvals: &Approvals,
    request: TokenRequest,
) -> Result<TokenResponse, EndpointError> {
    // One policy for the whole request, even if a reload lands meanwhile.
    let policy = context.policy();
    let mut evidence = Evidence::default();
    let outcome = dispatch(context, guard, approvals, &policy, &request, &mut evidence).await;
    let outcome = match (outcome, &evidence.agent) {
        // Refused after the client proved its credential: the agent is
        // known for certain, and the refusal is an event of its own.
        (Err(error), None) if proves_identity(&error) => {
            evidence.agent = evidence.claimed_client.clone();
            Err(error)
        }
        // No client authenticated: counted with the others of its kind,
        // not an event of its own, so that junk cannot flood the trail.
        (Err(error), None) => {
            guard.count_refusal(context, &error, evidence.claimed_client.take(), request.client_address.as_deref());
            let grant_type = grant_type_label(request.params.get("grant_type"));
            let span = tracing::Span::current();
            span.record("grant_type", grant_type);
            span.record("decision", "refused");
            context.metrics.count_token(grant_type, (&error).into());
            return Err(error);
        }
        (outcome, _) => outcome,
    };
    let spent_approval = evidence.spent_approval.take();
    let agent = evidence.agent.clone();
    let event = match &outcome {
        Ok(issued) => issued.event(evidence, context.clock.now(), request.client_address.clone()),
        Err(error) => evidence.refused(context.clock.now(), error, request.client_address.clone()),
    };
    // A token whose issuance cannot be recorded is not handed out.
    let answer = match context.record(event).await {
        Ok(()) => outcome.map(|issued| issued.response),
        Err(unavailable) => Err(unavailable.into()),
    };
    if let (Err(_), Some(approved)) = (&answer, spent_approval) {
        approvals.restore(approved).await;
    }
    let counted = answer.as_ref().err().map_or(crate::metrics::TokenOutcome::Issued, Into::into);
    let grant_type = grant_type_label(request.params.get("grant_type"));
    // The request's span (a trace, where traces are on) says what was decided.
    let span = tracing::Span::current();
    span.record("grant_type", grant_type);
    span.record("agent", agent.as_deref());
    span.record("decision", counted.label());
    context.metrics.count_token(grant_type, counted);
    answer
}

async fn dispatch(
    context: &Context,
    guard: &Guard,
    approvals: &Approvals,
    policy: &Policy,
    request: &TokenRequest,
    evidence: &mut Evidence,
) -> Result<Issued, EndpointError> {
    let params = &request.params;
    // Until authentication succeeds, the evidence names the client the
    // request claims to be, so that attempts against one client show.
    let claimed = claimed_client(request.authorization.as_deref(), params);
    evidence.claimed_client = claimed.as_deref().map(clip);
    let grant_type = params.require("grant_type")?;
    evidence.action = clip(grant_type);
    evidence.scopes_asked = params.get("scope").map(clip);
    if grant_type != CLIENT_CREDENTIALS && grant_type != TOKEN_EXCHANGE {
        return Err(RequestError::UnsupportedGrantType.into());
    }
    let address = request.client_address.as_deref();
    let client = guard
        .authenticate_in(context, policy, request.authorization.as_deref(), params, claimed.as_deref(), address)
        .await?;
    evidence.agent = Some(client.id().to_string());
    // RFC 6749 §5.2: an API's introspection credentials obtain no tokens.
    let agent = client.into_agent().ok_or(ClientAuthError::NotAnAgent)?;
    let proof = dpop_proof(context, &request.dpop_proofs).await?;
    let handler = issue::Handler { context, approvals, policy, params, proof: proof.as_ref() };
    if grant_type == TOKEN_EXCHANGE {
        token_exchange::handle(&handler, &agent, evidence).await
    } else {
        client_credentials::handle(&handler, &agent, evidence).await
    }
}

/// The request's DPoP proof, checked (RFC 9449 §4.3) and its `jti` spent
/// on every node; `None` when the client sent none.
async fn dpop_proof(context: &Context, proofs: &[String]) -> Result<Option<Proof>, EndpointError> {
    let proof = match proofs {
        [] => return Ok(None),
        [proof] => proof,
        _ => return Err(ProofError::Several.into()),
    };
    let now = context.now();
    let nonces = dpop_nonces(context)?;
    let token_endpoint = format!("{}/token", context.settings.issuer);
    let expected = dpop::Expected { method: "POST", uri: &token_endpoint, access_token: None, nonce: nonces.as_ref() };
    let proof = dpop::check(proof, &expected, now)?;
    let id = proof.replay_id();
    let replay = context.stores.replay.use_once(&id, proof.replay_until(), now);
    match context.measured("dpop_replay", replay).await? {
        Use::First => Ok(Some(proof)),
        Use::Replayed => Err(ProofError::Replayed.into()),
    }
}

/// The server nonce DPoP proofs must carry now, when nonces are on: the
/// HTTP layer hands it out in a `DPoP-Nonce` header (RFC 9449 §8).
pub fn dpop_nonce(context: &Context) -> Option<String> {
    dpop_nonces(context).ok().flatten().map(|nonces| nonces.current(context.now()))
}

fn dpop_nonces(context: &Context) -> Result<Option<Nonces>, EndpointError> {
    if !context.settings.dpop_nonce {
        return Ok(None);
    }
    let secret = context
        .keys()
        .signing()
        .derive_secret(b"dpop nonce")
        .ok_or_else(|| EndpointError::Mint(crate::token::MintError::new("no nonce secret")))?;
    Ok(Some(Nonces::new(&secret)))
}

/// Counts a token request refused before it could be read (wrong
/// method, media type or size, repeated parameters): evidence too, in
/// the next aggregate event.
pub async fn refuse(
    context: &Context,
    guard: &Guard,
    error: RequestError,
    client_address: Option<String>,
) -> EndpointError {
    let error = EndpointError::Request(error);
    guard.count_refusal(context, &error, None, client_address.as_deref());
    context.metrics.count_token(grant_type_label(None), (&error).into());
    error
}

/// The metrics label of a request's `grant_type`: one of a fixed set
/// (`token_exchange`, `client_credentials`, `other`, `none`), so that a
/// client's text never becomes a label.
pub fn grant_type_label(grant_type: Option<&str>) -> &'static str {
    match grant_type {
        Some(CLIENT_CREDENTIALS) => "client_credentials",
        Some(TOKEN_EXCHANGE) => "token_exchange",
        Some(_) => "other",
        None => "none",
    }
}

/// The asked scopes, if any, parsed.
fn asked_scopes(params: &TokenParams) -> Result<Option<ScopeSet>, EndpointError> {
    params
        .get("scope")
        .map(|text| ScopeSet::parse(text).map_err(|_| EndpointError::Request(RequestError::MalformedScope)))
        .transpose()
}

/// The one target named by `audience` and/or `resource` (RFC 8693 §2.1, RFC 8707).
fn named_target(params: &TokenParams) -> Result<Option<&str>, EndpointError> {
    // RFC 8707 §2: a resource is an absolute URI without a fragment; agents
    // are named with `audience`.
    if params.get("resource").is_some_and(|resource| !resource.contains("://") || resource.contains('#')) {
        return Err(RequestError::ResourceNotUri.into());
    }
    match (params.get("audience"), params.get("resource")) {
        (Some(audience), Some(resource)) if audience != resource => Err(RequestError::ConflictingTargets.into()),
        (Some(target), _) | (None, Some(target)) => Ok(Some(target)),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Unacceptable;
    use crate::metrics::{series, Metrics, TokenOutcome};
    use crate::policy::Refusal;

    #[test]
    fn issued_and_refused_requests_are_counted_by_bounded_labels() {
        let metrics = Metrics::new();
        metrics.count_token(grant_type_label(Some(TOKEN_EXCHANGE)), TokenOutcome::Issued);
        metrics.count_token(grant_type_label(Some(TOKEN_EXCHANGE)), TokenOutcome::Issued);
        let refused = EndpointError::Refused(Refusal::NotPermitted("calendar.write".parse().unwrap()));
        metrics.count_token(grant_type_label(Some(TOKEN_EXCHANGE)), (&refused).into());
        metrics.count_token(
            grant_type_label(Some("urn:evil:<script>")),
            (&EndpointError::Request(RequestError::UnsupportedGrantType)).into(),
        );
        metrics.count_token(grant_type_label(None), (&EndpointError::SubjectToken(Unacceptable::Revoked)).into());
        let text = metrics.render().unwrap();
        assert_eq!(
            series(&text, "baton_tokens_issued_total"),
            ["baton_tokens_issued_total{grant_type=\"token_exchange\"} 2"]
        );
        let refused = series(&text, "baton_token_requests_refused_total");
        assert!(refused.contains(
            &"baton_token_requests_refused_total{grant_type=\"token_exchange\",error=\"invalid_scope\",reason=\"not_permitted\"} 1"
        ), "{text}");
        assert!(refused.contains(
            &"baton_token_requests_refused_total{grant_type=\"other\",error=\"unsupported_grant_type\",reason=\"unsupported_grant_type\"} 1"
        ), "{text}");
        assert!(refused.contains(
            &"baton_token_requests_refused_total{grant_type=\"none\",error=\"invalid_request\",reason=\"subject_token_revoked\"} 1"
        ), "{text}");
        assert!(!text.contains("calendar.write") && !text.contains("evil"), "no request text in labels: {text}");
        assert!(text.ends_with("# EOF\n"));
    }

    /// Token parameters from form pairs.
    fn params(pairs: &[(&str, &str)]) -> TokenParams {
        TokenParams::from_pairs(pairs.iter().copied()).unwrap()
    }

    /// The target the parameters `pairs` name.
    fn target(pairs: &[(&str, &str)]) -> Result<Option<String>, EndpointError> {
        named_target(&params(pairs)).map(|target| target.map(str::to_owned))
    }

    /// RFC 8707 §2: a `resource` is an absolute URI with no fragment;
    /// agents are named with `audience`.
    #[test]
    fn a_resource_must_be_an_absolute_uri_without_fragment() {
        for resource in ["booker", "api.airline.example", "/flights", "https://api.airline.example#flights"] {
            let outcome = target(&[("resource", resource)]);
            assert!(matches!(outcome, Err(EndpointError::Request(RequestError::ResourceNotUri))), "{resource}");
        }
        let uri = "https://api.airline.example/v1?x=1";
        assert_eq!(target(&[("resource", uri)]).unwrap().as_deref(), Some(uri));
        // An agent's name is no URI, and `audience` may carry it.
        assert_eq!(target(&[("audience", "booker")]).unwrap().as_deref(), Some("booker"));
    }

    /// RFC 8693 §2.1, RFC 8707 §2: `audience` and `resource` name the one
    /// target together; naming two is refused.
    #[test]
    fn audience_and_resource_must_name_the_same_target() {
        let api = "https://api.airline.example";
        let conflicting = target(&[("audience", "booker"), ("resource", api)]);
        assert!(matches!(conflicting, Err(EndpointError::Request(RequestError::ConflictingTargets))));
        let trailing_slash = target(&[("audience", api), ("resource", "https://api.airline.example/")]);
        assert!(matches!(trailing_slash, Err(EndpointError::Request(RequestError::ConflictingTargets))));
        assert_eq!(target(&[("audience", api), ("resource", api)]).unwrap().as_deref(), Some(api));
    }

    /// RFC 8693 §2.1: either parameter alone names the target; neither
    /// leaves it to the policy's default (DESIGN.md §3).
    #[test]
    fn either_parameter_alone_is_the_target() {
        let api = "https://api.airline.example";
        assert_eq!(target(&[("audience", api)]).unwrap().as_deref(), Some(api));
        assert_eq!(target(&[("resource", api)]).unwrap().as_deref(), Some(api));
        assert_eq!(target(&[("grant_type", CLIENT_CREDENTIALS)]).unwrap(), None);
    }

    /// RFC 6749 §3.3: a malformed `scope` is refused as such (empty items,
    /// characters outside the scope-token set); a well-formed one is parsed,
    /// and an absent one is left to the parent and the policy.
    #[test]
    fn a_malformed_scope_is_refused() {
        for scope in ["flights.read  flights.book", " flights.read", "flights\\read", "fl\"ights", "vuelos.reservá"] {
            let outcome = asked_scopes(&params(&[("scope", scope)]));
            assert!(matches!(outcome, Err(EndpointError::Request(RequestError::MalformedScope))), "{scope:?}");
        }
        let asked = asked_scopes(&params(&[("scope", "flights.read flights.book")])).unwrap();
        assert_eq!(asked, Some(ScopeSet::parse("flights.book flights.read").unwrap()));
        assert_eq!(asked_scopes(&params(&[])).unwrap(), None);
    }
}
