//! The one place where internal errors become OAuth error responses
//! (RFC 6749 §5.2, RFC 8693 §2.2.2). Every variant is named: a new one does
//! not compile until someone picks its code.
//!
//! Descriptions are fixed strings: they never echo a token, secret,
//! assertion or proof, and one neutral text covers every unacceptable
//! token so the code is no oracle of a token's state.

use crate::chain::{ChainError, Widening};
use crate::client_auth::ClientAuthError;
use crate::dpop::ProofError;
use crate::grant::{ApprovalError, GrantError, RequestError};
use crate::policy::explain::{Explanation, Outcome};
use crate::policy::Refusal;

/// An OAuth 2.0 error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// RFC 6749 §5.2.
    InvalidRequest,
    /// RFC 6749 §5.2.
    InvalidClient,
    /// RFC 6749 §5.2.
    UnauthorizedClient,
    /// RFC 6749 §5.2.
    UnsupportedGrantType,
    /// RFC 6749 §5.2.
    InvalidScope,
    /// RFC 8693 §2.2.2.
    InvalidTarget,
    /// RFC 9449 §5: the DPoP proof is missing or not acceptable.
    InvalidDpopProof,
    /// RFC 9449 §8: the proof must carry the server's current nonce.
    UseDpopNonce,
    /// RFC 6749 §4.1.2.1, used by Baton when state cannot be checked.
    TemporarilyUnavailable,
    /// RFC 6749 §4.1.2.1.
    ServerError,
    /// RFC 6749 §5.2: the approval given does not cover this request.
    InvalidGrant,
    /// CIBA Core §11, RFC 8628 §3.5: a person has not decided yet.
    AuthorizationPending,
    /// CIBA Core §11, RFC 8628 §3.5: the person denied the request.
    AccessDenied,
    /// CIBA Core §11, RFC 8628 §3.5: the approval expired.
    ExpiredToken,
}

impl ErrorCode {
    /// The code as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::InvalidDpopProof => "invalid_dpop_proof",
            ErrorCode::UseDpopNonce => "use_dpop_nonce",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorCode::ServerError => "server_error",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::AuthorizationPending => "authorization_pending",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::ExpiredToken => "expired_token",
        }
    }
}

/// An error response: code, HTTP status and a neutral description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OAuthError {
    /// The error code.
    pub code: ErrorCode,
    /// The HTTP status.
    pub status: u16,
    /// A description safe to send.
    pub description: &'static str,
}

/// The one description for every unacceptable subject or actor token.
pub const UNACCEPTABLE_TOKEN: &str =
    "the presented token is invalid, expired, revoked or not acceptable for this request";

impl OAuthError {
    const fn new(code: ErrorCode, status: u16, description: &'static str) -> Self {
        OAuthError { code, status, description }
    }

    fn bad_request(code: ErrorCode, description: &'static str) -> Self {
        OAuthError::new(code, 400, description)
    }
}

impl From<&GrantError> for OAuthError {
    fn from(error: &GrantError) -> Self {
        use ErrorCode::*;
        match error {
            GrantError::Request(request) => request.into(),
            GrantError::Client(client) => client.into(),
            // RFC 8693 §2.2.2: an unacceptable subject_token is invalid_request, not invalid_grant.
            GrantError::SubjectToken(_) | GrantError::ActorToken(_) => {
                OAuthError::bad_request(InvalidRequest, UNACCEPTABLE_TOKEN)
            }
            GrantError::Refused(refusal) => refusal.into(),
            GrantError::Chain(chain) => match chain {
                // RFC 8693 §2.2.2: the subject_token is not acceptable for
                // this agent, as past the depth limit.
                ChainError::Widened(Widening::TooDeep { .. }) | ChainError::ActsAgain => {
                    OAuthError::bad_request(InvalidRequest, UNACCEPTABLE_TOKEN)
                }
                ChainError::Widened(Widening::ScopeWidened) => {
                    OAuthError::bad_request(InvalidScope, "the requested scope exceeds what the presented token holds")
                }
                ChainError::Widened(Widening::LifetimeExtended) => {
                    OAuthError::new(ServerError, 500, "the token could not be issued")
                }
                ChainError::Unbound => OAuthError::bad_request(InvalidDpopProof, DPOP_REQUIRED),
            },
            GrantError::Dpop(proof) => proof.into(),
            // RFC 7009 §2.1: the request is refused and the client told so.
            GrantError::NotAHolder(_) => {
                OAuthError::bad_request(UnauthorizedClient, "the client may not revoke this token")
            }
            GrantError::Policy(_) | GrantError::Mint(_) => {
                OAuthError::new(ServerError, 500, "the token could not be issued")
            }
            GrantError::Store(_) => {
                OAuthError::new(TemporarilyUnavailable, 503, "state could not be checked; try again later")
            }
            GrantError::IdentityProvider(_) => OAuthError::new(
                TemporarilyUnavailable,
                503,
                "the identity provider could not be reached; try again later",
            ),
            GrantError::Approval(approval) => approval.into(),
            // RFC 6749 has no code for "too many requests": Baton's code for
            // "try again later", with 429 (RFC 6585 §4) and `Retry-After`. The
            // text says nothing of whether the credential was right.
            GrantError::Throttled(_) => {
                OAuthError::new(TemporarilyUnavailable, 429, "too many requests; try again later")
            }
        }
    }
}

/// The description when a bound token is used without a proof.
const DPOP_REQUIRED: &str = "a DPoP proof of the key the token is bound to is required";

impl From<&ProofError> for OAuthError {
    fn from(error: &ProofError) -> Self {
        use ErrorCode::*;
        match error {
            ProofError::UseNonce => OAuthError::bad_request(UseDpopNonce, "use the nonce in the DPoP-Nonce header"),
            ProofError::Required => OAuthError::bad_request(InvalidDpopProof, DPOP_REQUIRED),
            ProofError::KeyMismatch => OAuthError::bad_request(InvalidDpopProof, DPOP_REQUIRED),
            ProofError::Several
            | ProofError::Malformed
            | ProofError::WrongType
            | ProofError::AlgorithmNotAllowed
            | ProofError::UnusableKey
            | ProofError::PrivateKey
            | ProofError::BadSignature
            | ProofError::WrongMethod
            | ProofError::WrongUri
            | ProofError::Stale
            | ProofError::AccessTokenHash
            | ProofError::Replayed => OAuthError::bad_request(InvalidDpopProof, "the DPoP proof is not acceptable"),
        }
    }
}

/// The same neutral text for every approval id that does not fit the
/// request, so that the answer tells nothing about other requests.
pub const APPROVAL_NOT_FOR_THIS_REQUEST: &str = "the approval_id is unknown, already used, or for another request";

impl From<&ApprovalError> for OAuthError {
    fn from(error: &ApprovalError) -> Self {
        use ErrorCode::*;
        match error {
            // CIBA Core §11: 400 for every polling answer.
            ApprovalError::Pending(_) => OAuthError::bad_request(
                AuthorizationPending,
                "a person must approve this request; poll with approval_id",
            ),
            ApprovalError::Denied => OAuthError::bad_request(AccessDenied, "the approver denied this request"),
            ApprovalError::Expired => OAuthError::bad_request(ExpiredToken, "the approval expired; ask again"),
            ApprovalError::Unknown | ApprovalError::Mismatch | ApprovalError::Used => {
                OAuthError::bad_request(InvalidGrant, APPROVAL_NOT_FOR_THIS_REQUEST)
            }
            // The admin API's answers to an approver's decision.
            ApprovalError::NotFound => OAuthError::new(InvalidRequest, 404, "no approval with this id"),
            ApprovalError::WrongApprover => {
                OAuthError::new(AccessDenied, 403, "this approver may not decide this request")
            }
            ApprovalError::AlreadyDecided(_) => {
                OAuthError::new(InvalidRequest, 409, "the approval was already decided")
            }
            // A quota, not a fault of the request nor of the broker: 429
            // (RFC 6585 §4) with the code clients already treat as "retry
            // later" (RFC 6749 §4.1.2.1). Not CIBA's `slow_down`, which tells
            // a poller to lengthen its interval for an approval it holds;
            // this request has none, and polling faster is not the cause.
            ApprovalError::TooManyPending => OAuthError::new(
                TemporarilyUnavailable,
                429,
                "too many requests of this client wait for approval; ask again once one is decided or expired",
            ),
        }
    }
}

impl From<&RequestError> for OAuthError {
    fn from(error: &RequestError) -> Self {
        use ErrorCode::*;
        match error {
            RequestError::NotForm => {
                OAuthError::bad_request(InvalidRequest, "the body must be application/x-www-form-urlencoded")
            }
            RequestError::TooLarge => OAuthError::new(InvalidRequest, 413, "the request body is too large"),
            // RFC 9110 §15.5.9; no RFC 6749 code is closer than invalid_request.
            RequestError::BodyTooSlow => {
                OAuthError::new(InvalidRequest, 408, "the request body did not arrive in time")
            }
            RequestError::MethodNotAllowed => OAuthError::new(InvalidRequest, 405, "use POST"),
            RequestError::Repeated(_) => OAuthError::bad_request(InvalidRequest, "a request parameter is repeated"),
            RequestError::Missing(_) => OAuthError::bad_request(InvalidRequest, "a required parameter is missing"),
            RequestError::UnsupportedGrantType => {
                OAuthError::bad_request(UnsupportedGrantType, "the grant type is not supported")
            }
            RequestError::UnsupportedTokenType(_) => {
                OAuthError::bad_request(InvalidRequest, "the token type is not supported")
            }
            RequestError::ActorTokenPairing => {
                OAuthError::bad_request(InvalidRequest, "actor_token and actor_token_type must be sent together")
            }
            RequestError::MalformedScope => OAuthError::bad_request(InvalidScope, "the scope parameter is malformed"),
            RequestError::SeveralTargets => {
                OAuthError::bad_request(InvalidTarget, "exactly one audience or resource may be requested")
            }
            RequestError::ResourceNotUri => {
                OAuthError::bad_request(InvalidTarget, "resource must be an absolute URI without a fragment")
            }
            RequestError::ConflictingTargets => {
                OAuthError::bad_request(InvalidTarget, "audience and resource name different targets")
            }
        }
    }
}

impl From<&ClientAuthError> for OAuthError {
    fn from(error: &ClientAuthError) -> Self {
        use ErrorCode::*;
        const FAILED: &str = "client authentication failed";
        match error {
            // RFC 6749 §2.3: more than one method is a malformed request.
            ClientAuthError::MultipleMethods => {
                OAuthError::bad_request(InvalidRequest, "use exactly one client authentication method")
            }
            ClientAuthError::Missing
            | ClientAuthError::MalformedBasic
            | ClientAuthError::UnsupportedAssertionType
            | ClientAuthError::UnknownClient
            | ClientAuthError::Deprovisioned
            | ClientAuthError::WrongMethod
            | ClientAuthError::WrongSecret
            | ClientAuthError::Assertion(_)
            | ClientAuthError::Replayed => OAuthError::new(InvalidClient, 401, FAILED),
            ClientAuthError::NotAnAgent | ClientAuthError::NotAnIntrospector => {
                OAuthError::bad_request(UnauthorizedClient, "this client may not use this endpoint")
            }
            ClientAuthError::Store(_) => {
                OAuthError::new(TemporarilyUnavailable, 503, "state could not be checked; try again later")
            }
        }
    }
}

impl From<&Refusal> for OAuthError {
    fn from(refusal: &Refusal) -> Self {
        use ErrorCode::*;
        match refusal {
            Refusal::NoTarget => OAuthError::bad_request(InvalidTarget, "no target was named and none is configured"),
            Refusal::UnknownTarget | Refusal::TargetDeprovisioned | Refusal::TargetNotPermitted => {
                OAuthError::bad_request(InvalidTarget, "the requested target is unknown or not allowed")
            }
            Refusal::UnknownScope(_)
            | Refusal::BeyondParent(_)
            | Refusal::OutsideTarget(_)
            | Refusal::NotPermitted(_) => OAuthError::bad_request(
                InvalidScope,
                "the requested scope is unknown, exceeds the presented token, or is not allowed",
            ),
            // The parent has no lifetime left to hand down: it is as good as expired.
            Refusal::NoLifetime => OAuthError::bad_request(InvalidRequest, UNACCEPTABLE_TOKEN),
        }
    }
}

/// A dry run's explanation as JSON, a refusal carrying the OAuth error code
/// the client would be sent (`outcome.error`).
pub fn explanation_json(explanation: &Explanation) -> serde_json::Value {
    let mut json = serde_json::json!(explanation);
    if let (Outcome::Refused { refusal }, Some(outcome)) =
        (&explanation.outcome, json.get_mut("outcome").and_then(serde_json::Value::as_object_mut))
    {
        outcome.insert("error".into(), OAuthError::from(refusal).code.as_str().into());
    }
    json
}
