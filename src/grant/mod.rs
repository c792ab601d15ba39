//! The token endpoint's grants: `client_credentials` (an agent's own token)
//! and RFC 8693 token exchange. One handler per grant, each reading only the
//! broker's settings, keys, policy and stores.
//!
//! Every outcome, issued or refused, is recorded as an audit event before
//! the response leaves (DESIGN.md §2.7); refusals of requests whose client
//! never authenticated are counted together instead, one event per interval,
//! and failed client authentication is throttled (DESIGN.md §12; both in
//! `client_authentication`).

mod client_credentials;
pub mod error;
pub mod params;
mod token_exchange;

use crate::abuse::{claimed_client, proves_identity};
use crate::audit::{clip, Evidence};

pub use error::{GrantError, RequestError, Unacceptable};
pub use params::TokenParams;

// Until every user names the modules these now live in.
pub use crate::abuse::{RefusalSettings, ThrottleSettings, Throttled};
pub use crate::approvals::{ApprovalError, ApprovalSettings, Approver, PendingApproval};
pub use crate::introspection::{ActiveToken, Introspection};
pub use crate::revocation::NotAHolder;

pub use crate::broker::{Broker, Settings, Stores};

use crate::approvals as approval;

use crate::claims::{Claims, ScopeSet, TokenId};
use crate::client_auth::ClientAuthError;
use crate::clock::{UnixMicros, UnixTime};
use crate::dpop::{self, nonce::Nonces, Proof, ProofError};
use crate::policy::Policy;
use crate::store::{AuditDecision, AuditEvent, Lineage, Principal, Status, Use};

/// `grant_type` for token exchange (RFC 8693 §2.1).
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// `grant_type` for an agent's own token (RFC 6749 §4.4).
pub const CLIENT_CREDENTIALS: &str = "client_credentials";
/// The `action` of the event for a refusal at the introspection or
/// revocation endpoint after the client proved its credential.
pub const CLIENT_AUTHENTICATION: &str = "client_authentication";
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
}

impl Issued {
    /// The audit event of this issuance.
    fn event(&self, evidence: Evidence, time: UnixTime, client_address: Option<String>) -> AuditEvent {
        let mut event = evidence.event(time, AuditDecision::Issued, None, client_address);
        event.jti = Some(self.jti.clone());
        event.scopes_granted = Some(self.response.scope.to_string());
        event.expires_at = Some(self.expires_at);
        event.iat_micros = self.iat_micros;
        event
    }

    fn new(claims: Claims, access_token: String, issued_token_type: Option<&'static str>, now: UnixTime) -> Issued {
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
        }
    }
}

impl Broker {
    /// Handles `POST /token`, recording the outcome.
    pub async fn token(&self, request: TokenRequest) -> Result<TokenResponse, GrantError> {
        // One policy for the whole request, even if a reload lands meanwhile.
        let policy = self.policy();
        let mut evidence = Evidence::default();
        let outcome = self.grant(&policy, &request, &mut evidence).await;
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
                self.count_refusal(&error, evidence.claimed_client.take(), request.client_address.as_deref());
                self.metrics.count_token(error::grant_type_label(request.params.get("grant_type")), (&error).into());
                return Err(error);
            }
            (outcome, _) => outcome,
        };
        let spent_approval = evidence.spent_approval.take();
        let event = match &outcome {
            Ok(issued) => issued.event(evidence, self.clock.now(), request.client_address.clone()),
            Err(error) => evidence.refused(self.clock.now(), error, request.client_address.clone()),
        };
        // A token whose issuance cannot be recorded is not handed out.
        let answer = match self.record(event).await {
            Ok(()) => outcome.map(|issued| issued.response),
            Err(unavailable) => Err(unavailable.into()),
        };
        if let (Err(_), Some(approved)) = (&answer, spent_approval) {
            approval::restore(self, approved).await;
        }
        let counted = answer.as_ref().err().map_or(crate::metrics::TokenOutcome::Issued, Into::into);
        self.metrics.count_token(error::grant_type_label(request.params.get("grant_type")), counted);
        answer
    }

    async fn grant(
        &self,
        policy: &Policy,
        request: &TokenRequest,
        evidence: &mut Evidence,
    ) -> Result<Issued, GrantError> {
        let params = &request.params;
        // Until authentication succeeds, the evidence names the client the
        // request claims to be, so that attempts against one client show.
        let claimed = claimed_client(request.authorization.as_deref(), params);
        evidence.claimed_client = claimed.as_deref().map(clip);
        let grant_type = params.require("grant_type")?;
        evidence.grant_type = clip(grant_type);
        evidence.scopes_asked = params.get("scope").map(clip);
        if grant_type != CLIENT_CREDENTIALS && grant_type != TOKEN_EXCHANGE {
            return Err(RequestError::UnsupportedGrantType.into());
        }
        let address = request.client_address.as_deref();
        let client =
            self.authenticate_in(policy, request.authorization.as_deref(), params, claimed.as_deref(), address).await?;
        evidence.agent = Some(client.id().to_string());
        // RFC 6749 §5.2: an API's introspection credentials obtain no tokens.
        let agent = client.into_agent().ok_or(ClientAuthError::NotAnAgent)?;
        let proof = self.dpop_proof(&request.dpop_proofs).await?;
        if grant_type == TOKEN_EXCHANGE {
            token_exchange::handle(self, policy, &agent, params, proof.as_ref(), evidence).await
        } else {
            // The token would carry the agent as its subject too.
            self.ensure_not_blocked(agent.id(), Some(&crate::ids::Subject::of_agent(agent.id()))).await?;
            client_credentials::handle(self, policy, &agent, params, proof.as_ref(), evidence).await
        }
    }

    /// The request's DPoP proof, checked (RFC 9449 §4.3) and its `jti` spent
    /// on every node; `None` when the client sent none.
    async fn dpop_proof(&self, proofs: &[String]) -> Result<Option<Proof>, GrantError> {
        let proof = match proofs {
            [] => return Ok(None),
            [proof] => proof,
            _ => return Err(ProofError::Several.into()),
        };
        let now = self.now();
        let nonces = self.dpop_nonces()?;
        let token_endpoint = format!("{}/token", self.settings.issuer);
        let expected =
            dpop::Expected { method: "POST", uri: &token_endpoint, access_token: None, nonce: nonces.as_ref() };
        let proof = dpop::check(proof, &expected, now)?;
        match self.stores.replay.use_once(&proof.replay_id(), proof.replay_until(), now).await? {
            Use::First => Ok(Some(proof)),
            Use::Replayed => Err(ProofError::Replayed.into()),
        }
    }

    /// The server nonce DPoP proofs must carry now, when nonces are on: the
    /// HTTP layer hands it out in a `DPoP-Nonce` header (RFC 9449 §8).
    pub fn dpop_nonce(&self) -> Option<String> {
        self.dpop_nonces().ok().flatten().map(|nonces| nonces.current(self.now()))
    }

    fn dpop_nonces(&self) -> Result<Option<Nonces>, GrantError> {
        if !self.settings.dpop_nonce {
            return Ok(None);
        }
        let secret = self
            .keys()
            .signing()
            .derive_secret(b"dpop nonce")
            .ok_or_else(|| GrantError::Mint(crate::token::MintError::new("no nonce secret")))?;
        Ok(Some(Nonces::new(&secret)))
    }

    /// Refuses a deprovisioned agent until it is reinstated (DESIGN.md §2.4).
    /// An exchange needs no separate call: the parent's revocation check
    /// names its holder, the acting agent, and asks here only when it fails.
    pub(crate) async fn ensure_not_blocked(
        &self,
        agent: &crate::ids::AgentId,
        subject: Option<&crate::ids::Subject>,
    ) -> Result<(), GrantError> {
        let mut principals = vec![Principal::Agent(agent.to_owned())];
        principals.extend(subject.map(|subject| Principal::Subject(subject.to_owned())));
        // A token "issued at the end of time" is killed by a block only,
        // never by a deprovisioning's cut-off in the past.
        let own = Lineage::at(Vec::new(), UnixMicros::MAX, principals);
        match self.stores.revocation.check(&own).await? {
            Status::Active => Ok(()),
            Status::Revoked | Status::Deprovisioned => Err(ClientAuthError::Deprovisioned.into()),
        }
    }
}

/// The asked scopes, if any, parsed.
fn asked_scopes(params: &TokenParams) -> Result<Option<ScopeSet>, GrantError> {
    params
        .get("scope")
        .map(|text| ScopeSet::parse(text).map_err(|_| GrantError::Request(RequestError::MalformedScope)))
        .transpose()
}

/// The one target named by `audience` and/or `resource` (RFC 8693 §2.1, RFC 8707).
fn named_target(params: &TokenParams) -> Result<Option<&str>, GrantError> {
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
