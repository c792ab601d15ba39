//! What can go wrong at an endpoint, and the reason label each refusal is
//! counted by: every error type names its own. The mapping to OAuth error
//! codes lives in one place: [`oauth`].

mod approval;
pub mod oauth;

pub use approval::{ApprovalError, PendingApproval};

use std::borrow::Cow;

use crate::chain::ChainError;
use crate::client_auth::ClientAuthError;
use crate::dpop::ProofError;
use crate::policy::{PolicyError, Refusal};
use crate::store::StoreError;
use crate::token::{MintError, VerifyError};

/// A request an endpoint refused: a token request, an introspection or a
/// revocation, or an admin operation. Its reason and its OAuth answer are
/// the variant's.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The request itself is malformed.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The client did not authenticate.
    #[error(transparent)]
    Client(#[from] ClientAuthError),
    /// The `subject_token` is not acceptable.
    #[error("subject_token: {0}")]
    SubjectToken(Unacceptable),
    /// The `actor_token` is not acceptable.
    #[error("actor_token: {0}")]
    ActorToken(Unacceptable),
    /// The policy grants nothing.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The derived child would break the narrowing rules.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The policy could not be evaluated.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// State could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The client may not revoke this token.
    #[error(transparent)]
    NotAHolder(#[from] NotAHolder),
    /// The token could not be signed.
    #[error(transparent)]
    Mint(#[from] MintError),
    /// A trusted identity provider's metadata or keys cannot be fetched.
    #[error("identity provider unreachable: {0}")]
    IdentityProvider(String),
    /// The DPoP proof is missing where needed, or not acceptable (RFC 9449 §4.3).
    #[error("DPoP proof: {0}")]
    Dpop(#[from] ProofError),
    /// A scope needs a person's approval, which is pending, refused or
    /// does not cover this request.
    #[error(transparent)]
    Approval(#[from] ApprovalError),
    /// The client's address failed to authenticate too often: refused
    /// without checking the credential (DESIGN.md §12).
    #[error(transparent)]
    Throttled(#[from] Throttled),
}

/// A malformed token request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The body is not `application/x-www-form-urlencoded`.
    #[error("the request body must be application/x-www-form-urlencoded")]
    NotForm,
    /// The body is over the size limit.
    #[error("the request body is too large")]
    TooLarge,
    /// The body did not arrive whole within the connection's body deadline
    /// (RFC 9110 §15.5.9).
    #[error("the request body did not arrive in time")]
    BodyTooSlow,
    /// Only `POST` is allowed.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A parameter appears twice (the name, when it is one Baton reads).
    #[error("a request parameter is repeated: {0:?}")]
    Repeated(Option<&'static str>),
    /// A required parameter is missing.
    #[error("missing parameter {0}")]
    Missing(&'static str),
    /// `grant_type` is not one Baton supports.
    #[error("unsupported grant_type")]
    UnsupportedGrantType,
    /// A `*_token_type` Baton does not accept.
    #[error("unsupported {0}")]
    UnsupportedTokenType(&'static str),
    /// `actor_token` without `actor_token_type`, or the other way round.
    #[error("actor_token and actor_token_type must come together")]
    ActorTokenPairing,
    /// `scope` is not a valid list of scope tokens.
    #[error("scope is malformed")]
    MalformedScope,
    /// More than one `audience` or `resource`.
    #[error("more than one target")]
    SeveralTargets,
    /// `resource` is not an absolute URI (RFC 8707 §2).
    #[error("resource is not an absolute URI")]
    ResourceNotUri,
    /// `audience` and `resource` name different targets.
    #[error("audience and resource disagree")]
    ConflictingTargets,
}

/// Why a presented token is not acceptable. Kept for the audit trail; the
/// client sees one neutral description (RFC 8693 §2.2.2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unacceptable {
    /// It does not verify.
    #[error(transparent)]
    Invalid(#[from] VerifyError),
    /// It or an ancestor was revoked.
    #[error("revoked")]
    Revoked,
    /// Its subject or an agent of its chain was deprovisioned after it was issued.
    #[error("deprovisioned")]
    Deprovisioned,
    /// Its `aud` does not name the acting agent (DESIGN.md §2.3).
    #[error("not addressed to the acting agent")]
    NotAddressedToActor,
    /// Its `may_act` names another agent (RFC 8693 §4.4).
    #[error("may_act does not name the acting agent")]
    MayActViolation,
    /// Exchanging it would exceed the depth limit.
    #[error("depth limit reached")]
    DepthLimit,
    /// The actor token is not the authenticated agent's own token.
    #[error("does not identify the authenticated client")]
    NotTheClient,
    /// Neither Baton's nor from a trusted identity provider.
    #[error("issuer not trusted")]
    UntrustedIssuer,
    /// The acting agent may not start chains from this identity provider.
    #[error("the agent may not start chains from this identity provider")]
    MayNotStartChain,
    /// The identity provider's token does not validate.
    #[error("{0}")]
    Upstream(String),
    /// The person's name is that of a registered agent or resource.
    #[error("the person's name is a registered agent's or resource's")]
    SubjectIsRegistered,
}

impl EndpointError {
    /// The label metrics and the audit trail count this refusal by: the
    /// variant of Baton's error, never its text, so nothing a client sends
    /// becomes a label. Each kind of error names its own reason; this only
    /// delegates, and composes the presented token's role with its reason.
    pub fn reason(&self) -> Cow<'static, str> {
        let label = match self {
            EndpointError::Request(request) => request.reason(),
            EndpointError::Client(client) => client.reason(),
            EndpointError::SubjectToken(unacceptable) => {
                return Cow::Owned(format!("subject_token_{}", unacceptable.reason()))
            }
            EndpointError::ActorToken(unacceptable) => {
                return Cow::Owned(format!("actor_token_{}", unacceptable.reason()))
            }
            EndpointError::Refused(refusal) => refusal.code(),
            EndpointError::Chain(chain) => chain.reason(),
            EndpointError::Policy(_) => "policy_error",
            EndpointError::Store(_) => "store_unavailable",
            EndpointError::NotAHolder(not_a_holder) => not_a_holder.reason(),
            EndpointError::Mint(_) => "mint_failed",
            EndpointError::IdentityProvider(_) => "identity_provider_unavailable",
            EndpointError::Dpop(proof) => proof.reason(),
            EndpointError::Approval(approval) => approval.reason(),
            EndpointError::Throttled(throttled) => throttled.reason(),
        };
        Cow::Borrowed(label)
    }
}

impl RequestError {
    /// The label metrics and the audit trail count this refusal by: never
    /// the parameter's name or value.
    pub fn reason(&self) -> &'static str {
        match self {
            RequestError::NotForm => "not_form",
            RequestError::TooLarge => "too_large",
            RequestError::BodyTooSlow => "body_too_slow",
            RequestError::MethodNotAllowed => "method_not_allowed",
            RequestError::Repeated(_) => "repeated_parameter",
            RequestError::Missing(_) => "missing_parameter",
            RequestError::UnsupportedGrantType => "unsupported_grant_type",
            RequestError::UnsupportedTokenType(_) => "unsupported_token_type",
            RequestError::ActorTokenPairing => "actor_token_pairing",
            RequestError::MalformedScope => "malformed_scope",
            RequestError::SeveralTargets => "several_targets",
            RequestError::ResourceNotUri => "resource_not_uri",
            RequestError::ConflictingTargets => "conflicting_targets",
        }
    }
}

impl Unacceptable {
    /// Why the token is not acceptable, as a label; [`EndpointError::reason`]
    /// prefixes it with the token's role (`subject_token_`, `actor_token_`).
    pub fn reason(&self) -> &'static str {
        match self {
            Unacceptable::Invalid(_) => "invalid",
            Unacceptable::Revoked => "revoked",
            Unacceptable::Deprovisioned => "deprovisioned",
            Unacceptable::NotAddressedToActor => "not_addressed_to_actor",
            Unacceptable::MayActViolation => "may_act_violation",
            Unacceptable::DepthLimit => "depth_limit",
            Unacceptable::NotTheClient => "not_the_client",
            Unacceptable::UntrustedIssuer => "untrusted_issuer",
            Unacceptable::MayNotStartChain => "may_not_start_chain",
            Unacceptable::Upstream(_) => "identity_provider_token_invalid",
            Unacceptable::SubjectIsRegistered => "subject_is_registered",
        }
    }
}

impl crate::audit::Refusal for EndpointError {
    fn waits(&self) -> bool {
        matches!(self, EndpointError::Approval(ApprovalError::Pending(_)))
    }
}

/// Why an authenticated client may not revoke a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the client holds neither the token nor any of its ancestors")]
pub struct NotAHolder;

impl NotAHolder {
    /// The label metrics and the audit trail count this refusal by.
    pub fn reason(&self) -> &'static str {
        "not_a_holder"
    }
}

/// A request refused unchecked because its address failed too often.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many failed client authentications from this address; retry in {retry_after} s")]
pub struct Throttled {
    /// Seconds until an attempt may be made again (`Retry-After`).
    pub retry_after: u64,
}

impl Throttled {
    /// The label metrics and the audit trail count this refusal by: never
    /// the wait, which differs from one refusal to the next.
    pub fn reason(&self) -> &'static str {
        "throttled"
    }
}
