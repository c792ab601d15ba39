//! The one place where internal errors become OAuth error responses
//! (RFC 6749 §5.2, RFC 8693 §2.2.2). Every variant is named: a new one does
//! not compile until someone picks its code.
//!
//! Descriptions are fixed strings: they never echo a token, secret,
//! assertion or proof, and one neutral text covers every unacceptable
//! token so the code is no oracle of a token's state.

// The `http` crate's status type (not `crate::http`): the wire mapping names statuses, no route.
use ::http::StatusCode;

use crate::chain::ChainError;
use crate::client_auth::ClientAuthError;
use crate::dpop::ProofError;
use crate::error::{ApprovalError, EndpointError, RequestError};
use crate::metrics::TokenOutcome;
use crate::narrowing::Widening;
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
    pub status: StatusCode,
    /// A description safe to send.
    pub description: &'static str,
}

/// The one description for every unacceptable subject or actor token.
pub const UNACCEPTABLE_TOKEN: &str =
    "the presented token is invalid, expired, revoked or not acceptable for this request";

impl OAuthError {
    const fn new(code: ErrorCode, status: StatusCode, description: &'static str) -> Self {
        OAuthError { code, status, description }
    }

    const fn bad_request(code: ErrorCode, description: &'static str) -> Self {
        OAuthError::new(code, StatusCode::BAD_REQUEST, description)
    }
}

impl From<&EndpointError> for OAuthError {
    fn from(error: &EndpointError) -> Self {
        use ErrorCode::*;
        match error {
            EndpointError::Request(request) => request.into(),
            EndpointError::Client(client) => client.into(),
            // RFC 8693 §2.2.2: an unacceptable subject_token is invalid_request, not invalid_grant.
            EndpointError::SubjectToken(_) | EndpointError::ActorToken(_) => {
                OAuthError::bad_request(InvalidRequest, UNACCEPTABLE_TOKEN)
            }
            EndpointError::Refused(refusal) => refusal.into(),
            EndpointError::Chain(chain) => match chain {
                // RFC 8693 §2.2.2: the subject_token is not acceptable for
                // this agent, as past the depth limit.
                ChainError::Widened(Widening::TooDeep { .. }) | ChainError::ActsAgain => {
                    OAuthError::bad_request(InvalidRequest, UNACCEPTABLE_TOKEN)
                }
                ChainError::Widened(Widening::ScopeWidened) => {
                    OAuthError::bad_request(InvalidScope, "the requested scope exceeds what the presented token holds")
                }
                ChainError::Widened(Widening::LifetimeExtended) => {
                    OAuthError::new(ServerError, StatusCode::INTERNAL_SERVER_ERROR, "the token could not be issued")
                }
                ChainError::Unbound => OAuthError::bad_request(InvalidDpopProof, DPOP_REQUIRED),
            },
            EndpointError::Dpop(proof) => proof.into(),
            // RFC 7009 §2.1: the request is refused and the client told so.
            EndpointError::NotAHolder(_) => {
                OAuthError::bad_request(UnauthorizedClient, "the client may not revoke this token")
            }
            EndpointError::Policy(_) | EndpointError::Mint(_) => {
                OAuthError::new(ServerError, StatusCode::INTERNAL_SERVER_ERROR, "the token could not be issued")
            }
            EndpointError::Store(_) => OAuthError::new(
                TemporarilyUnavailable,
                StatusCode::SERVICE_UNAVAILABLE,
                "state could not be checked; try again later",
            ),
            EndpointError::IdentityProvider(_) => OAuthError::new(
                TemporarilyUnavailable,
                StatusCode::SERVICE_UNAVAILABLE,
                "the identity provider could not be reached; try again later",
            ),
            EndpointError::Approval(approval) => approval.into(),
            // RFC 6749 has no code for "too many requests": Baton's code for
            // "try again later", with 429 (RFC 6585 §4) and `Retry-After`. The
            // text says nothing of whether the credential was right.
            EndpointError::Throttled(_) => OAuthError::new(
                TemporarilyUnavailable,
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests; try again later",
            ),
        }
    }
}

/// How a refused token request is counted: waiting for a person is an
/// outcome of its own, any other refusal carries the code the client is
/// sent (from the mapping above) and the error's reason label.
impl From<&EndpointError> for TokenOutcome {
    fn from(error: &EndpointError) -> Self {
        match error {
            EndpointError::Approval(ApprovalError::Pending(_)) => TokenOutcome::AwaitingApproval,
            refused => {
                TokenOutcome::Refused { code: OAuthError::from(refused).code.as_str(), reason: refused.reason() }
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
            ApprovalError::NotFound => {
                OAuthError::new(InvalidRequest, StatusCode::NOT_FOUND, "no approval with this id")
            }
            ApprovalError::WrongApprover => {
                OAuthError::new(AccessDenied, StatusCode::FORBIDDEN, "this approver may not decide this request")
            }
            ApprovalError::AlreadyDecided(_) => {
                OAuthError::new(InvalidRequest, StatusCode::CONFLICT, "the approval was already decided")
            }
            // A quota, not a fault of the request nor of the broker: 429
            // (RFC 6585 §4) with the code clients already treat as "retry
            // later" (RFC 6749 §4.1.2.1). Not CIBA's `slow_down`, which tells
            // a poller to lengthen its interval for an approval it holds;
            // this request has none, and polling faster is not the cause.
            ApprovalError::TooManyPending => OAuthError::new(
                TemporarilyUnavailable,
                StatusCode::TOO_MANY_REQUESTS,
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
            RequestError::TooLarge => {
                OAuthError::new(InvalidRequest, StatusCode::PAYLOAD_TOO_LARGE, "the request body is too large")
            }
            // RFC 9110 §15.5.9; no RFC 6749 code is closer than invalid_request.
            RequestError::BodyTooSlow => {
                OAuthError::new(InvalidRequest, StatusCode::REQUEST_TIMEOUT, "the request body did not arrive in time")
            }
            RequestError::MethodNotAllowed => {
                OAuthError::new(InvalidRequest, StatusCode::METHOD_NOT_ALLOWED, "use POST")
            }
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
            | ClientAuthError::Replayed => OAuthError::new(InvalidClient, StatusCode::UNAUTHORIZED, FAILED),
            ClientAuthError::NotAnAgent | ClientAuthError::NotAnIntrospector => {
                OAuthError::bad_request(UnauthorizedClient, "this client may not use this endpoint")
            }
            ClientAuthError::Store(_) => OAuthError::new(
                TemporarilyUnavailable,
                StatusCode::SERVICE_UNAVAILABLE,
                "state could not be checked; try again later",
            ),
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::error::{NotAHolder, PendingApproval, Throttled, Unacceptable};
    use crate::metrics::{series, Metrics};
    use crate::policy::PolicyError;
    use crate::store::{ApprovalId, ApprovalState, StoreError};
    use crate::token::MintError;

    /// Text a client could have sent, carried inside some errors: no
    /// description may repeat it.
    const SENT: &str = "s3cr3t-sent-by-the-client";

    fn scope() -> crate::claims::Scope {
        "calendar.write".parse().unwrap()
    }

    /// Every variant of [`EndpointError`] (and of the errors inside it), the
    /// code and status it is sent with, and the reason it is counted by.
    fn table() -> Vec<(EndpointError, ErrorCode, u16, &'static str)> {
        use ErrorCode::*;
        let pending = PendingApproval { id: ApprovalId(SENT.into()), interval: 5, expires_in: 60 };
        vec![
            (RequestError::NotForm.into(), InvalidRequest, 400, "not_form"),
            (RequestError::TooLarge.into(), InvalidRequest, 413, "too_large"),
            (RequestError::BodyTooSlow.into(), InvalidRequest, 408, "body_too_slow"),
            (RequestError::MethodNotAllowed.into(), InvalidRequest, 405, "method_not_allowed"),
            (RequestError::Repeated(Some("scope")).into(), InvalidRequest, 400, "repeated_parameter"),
            (RequestError::Missing("subject_token").into(), InvalidRequest, 400, "missing_parameter"),
            (RequestError::UnsupportedGrantType.into(), UnsupportedGrantType, 400, "unsupported_grant_type"),
            (
                RequestError::UnsupportedTokenType("subject_token_type").into(),
                InvalidRequest,
                400,
                "unsupported_token_type",
            ),
            (RequestError::ActorTokenPairing.into(), InvalidRequest, 400, "actor_token_pairing"),
            (RequestError::MalformedScope.into(), InvalidScope, 400, "malformed_scope"),
            (RequestError::SeveralTargets.into(), InvalidTarget, 400, "several_targets"),
            (RequestError::ResourceNotUri.into(), InvalidTarget, 400, "resource_not_uri"),
            (RequestError::ConflictingTargets.into(), InvalidTarget, 400, "conflicting_targets"),
            (ClientAuthError::MultipleMethods.into(), InvalidRequest, 400, "client_multiple_methods"),
            (ClientAuthError::Missing.into(), InvalidClient, 401, "client_missing"),
            (ClientAuthError::MalformedBasic.into(), InvalidClient, 401, "client_malformed_basic"),
            (ClientAuthError::UnsupportedAssertionType.into(), InvalidClient, 401, "client_unsupported_assertion_type"),
            (ClientAuthError::UnknownClient.into(), InvalidClient, 401, "client_unknown"),
            (ClientAuthError::Deprovisioned.into(), InvalidClient, 401, "client_deprovisioned"),
            (ClientAuthError::WrongMethod.into(), InvalidClient, 401, "client_wrong_method"),
            (ClientAuthError::WrongSecret.into(), InvalidClient, 401, "client_wrong_secret"),
            (ClientAuthError::Assertion(SENT).into(), InvalidClient, 401, "client_assertion_invalid"),
            (ClientAuthError::Replayed.into(), InvalidClient, 401, "client_assertion_replayed"),
            (ClientAuthError::NotAnIntrospector.into(), UnauthorizedClient, 400, "client_not_an_introspector"),
            (ClientAuthError::NotAnAgent.into(), UnauthorizedClient, 400, "client_not_an_agent"),
            (
                ClientAuthError::Store(StoreError::Unavailable(SENT.into())).into(),
                TemporarilyUnavailable,
                503,
                "store_unavailable",
            ),
            (EndpointError::SubjectToken(Unacceptable::Revoked), InvalidRequest, 400, "subject_token_revoked"),
            (
                EndpointError::SubjectToken(Unacceptable::Deprovisioned),
                InvalidRequest,
                400,
                "subject_token_deprovisioned",
            ),
            (
                EndpointError::SubjectToken(Unacceptable::NotAddressedToActor),
                InvalidRequest,
                400,
                "subject_token_not_addressed_to_actor",
            ),
            (
                EndpointError::SubjectToken(Unacceptable::MayActViolation),
                InvalidRequest,
                400,
                "subject_token_may_act_violation",
            ),
            (EndpointError::SubjectToken(Unacceptable::DepthLimit), InvalidRequest, 400, "subject_token_depth_limit"),
            (
                EndpointError::SubjectToken(Unacceptable::UntrustedIssuer),
                InvalidRequest,
                400,
                "subject_token_untrusted_issuer",
            ),
            (
                EndpointError::SubjectToken(Unacceptable::MayNotStartChain),
                InvalidRequest,
                400,
                "subject_token_may_not_start_chain",
            ),
            (
                EndpointError::SubjectToken(Unacceptable::Upstream(SENT.into())),
                InvalidRequest,
                400,
                "subject_token_identity_provider_token_invalid",
            ),
            (
                EndpointError::SubjectToken(Unacceptable::SubjectIsRegistered),
                InvalidRequest,
                400,
                "subject_token_subject_is_registered",
            ),
            (EndpointError::ActorToken(Unacceptable::NotTheClient), InvalidRequest, 400, "actor_token_not_the_client"),
            (EndpointError::ActorToken(Unacceptable::Revoked), InvalidRequest, 400, "actor_token_revoked"),
            (Refusal::NoTarget.into(), InvalidTarget, 400, "no_target"),
            (Refusal::UnknownTarget.into(), InvalidTarget, 400, "unknown_target"),
            (Refusal::TargetDeprovisioned.into(), InvalidTarget, 400, "target_deprovisioned"),
            (Refusal::TargetNotPermitted.into(), InvalidTarget, 400, "target_not_permitted"),
            (Refusal::UnknownScope(scope()).into(), InvalidScope, 400, "unknown_scope"),
            (Refusal::BeyondParent(scope()).into(), InvalidScope, 400, "beyond_parent"),
            (Refusal::OutsideTarget(scope()).into(), InvalidScope, 400, "outside_target"),
            (Refusal::NotPermitted(scope()).into(), InvalidScope, 400, "not_permitted"),
            (Refusal::NoLifetime.into(), InvalidRequest, 400, "no_lifetime"),
            (
                ChainError::Widened(Widening::TooDeep { depth: 6, limit: 5 }).into(),
                InvalidRequest,
                400,
                "chain_too_deep",
            ),
            (ChainError::Widened(Widening::ScopeWidened).into(), InvalidScope, 400, "chain_scope_widened"),
            (ChainError::Widened(Widening::LifetimeExtended).into(), ServerError, 500, "chain_lifetime_extended"),
            (ChainError::Unbound.into(), InvalidDpopProof, 400, "chain_unbound"),
            (ChainError::ActsAgain.into(), InvalidRequest, 400, "chain_acts_again"),
            (PolicyError::Rules(SENT.into()).into(), ServerError, 500, "policy_error"),
            (StoreError::Unavailable(SENT.into()).into(), TemporarilyUnavailable, 503, "store_unavailable"),
            (StoreError::Corrupt(SENT.into()).into(), TemporarilyUnavailable, 503, "store_unavailable"),
            (StoreError::ReadOnly.into(), TemporarilyUnavailable, 503, "store_unavailable"),
            (NotAHolder.into(), UnauthorizedClient, 400, "not_a_holder"),
            (MintError::new(SENT).into(), ServerError, 500, "mint_failed"),
            (
                EndpointError::IdentityProvider(SENT.into()),
                TemporarilyUnavailable,
                503,
                "identity_provider_unavailable",
            ),
            (ProofError::Several.into(), InvalidDpopProof, 400, "dpop_several"),
            (ProofError::Malformed.into(), InvalidDpopProof, 400, "dpop_malformed"),
            (ProofError::WrongType.into(), InvalidDpopProof, 400, "dpop_wrong_type"),
            (ProofError::AlgorithmNotAllowed.into(), InvalidDpopProof, 400, "dpop_algorithm"),
            (ProofError::UnusableKey.into(), InvalidDpopProof, 400, "dpop_unusable_key"),
            (ProofError::PrivateKey.into(), InvalidDpopProof, 400, "dpop_private_key"),
            (ProofError::BadSignature.into(), InvalidDpopProof, 400, "dpop_signature"),
            (ProofError::WrongMethod.into(), InvalidDpopProof, 400, "dpop_htm"),
            (ProofError::WrongUri.into(), InvalidDpopProof, 400, "dpop_htu"),
            (ProofError::UseNonce.into(), UseDpopNonce, 400, "dpop_nonce"),
            (ProofError::Stale.into(), InvalidDpopProof, 400, "dpop_iat"),
            (ProofError::AccessTokenHash.into(), InvalidDpopProof, 400, "dpop_ath"),
            (ProofError::KeyMismatch.into(), InvalidDpopProof, 400, "dpop_key_mismatch"),
            (ProofError::Replayed.into(), InvalidDpopProof, 400, "dpop_replayed"),
            (ProofError::Required.into(), InvalidDpopProof, 400, "dpop_required"),
            (ApprovalError::Pending(pending).into(), AuthorizationPending, 400, "approval_pending"),
            (ApprovalError::Denied.into(), AccessDenied, 400, "approval_denied"),
            (ApprovalError::Expired.into(), ExpiredToken, 400, "approval_expired"),
            (ApprovalError::Unknown.into(), InvalidGrant, 400, "approval_unknown"),
            (ApprovalError::Mismatch.into(), InvalidGrant, 400, "approval_mismatch"),
            (ApprovalError::Used.into(), InvalidGrant, 400, "approval_used"),
            (ApprovalError::NotFound.into(), InvalidRequest, 404, "approval_not_found"),
            (ApprovalError::WrongApprover.into(), AccessDenied, 403, "approval_wrong_approver"),
            (
                ApprovalError::AlreadyDecided(ApprovalState::Approved).into(),
                InvalidRequest,
                409,
                "approval_already_decided",
            ),
            (ApprovalError::TooManyPending.into(), TemporarilyUnavailable, 429, "approval_too_many_pending"),
            (Throttled { retry_after: 7 }.into(), TemporarilyUnavailable, 429, "throttled"),
        ]
    }

    /// The variant's name; no wildcard, so a new variant needs a row above.
    fn variant(error: &EndpointError) -> &'static str {
        match error {
            EndpointError::Request(_) => "Request",
            EndpointError::Client(_) => "Client",
            EndpointError::SubjectToken(_) => "SubjectToken",
            EndpointError::ActorToken(_) => "ActorToken",
            EndpointError::Refused(_) => "Refused",
            EndpointError::Chain(_) => "Chain",
            EndpointError::Policy(_) => "Policy",
            EndpointError::Store(_) => "Store",
            EndpointError::NotAHolder(_) => "NotAHolder",
            EndpointError::Mint(_) => "Mint",
            EndpointError::IdentityProvider(_) => "IdentityProvider",
            EndpointError::Dpop(_) => "Dpop",
            EndpointError::Approval(_) => "Approval",
            EndpointError::Throttled(_) => "Throttled",
        }
    }

    #[test]
    fn every_error_maps_to_its_code_status_and_reason() {
        let table = table();
        for (error, code, status, reason) in &table {
            let sent = OAuthError::from(error);
            assert_eq!((sent.code, sent.status.as_u16()), (*code, *status), "{error:?}");
            assert_eq!(error.reason(), *reason, "{error:?}");
        }
        let covered: BTreeSet<&str> = table.iter().map(|(error, ..)| variant(error)).collect();
        assert_eq!(covered.len(), 14, "every EndpointError variant has a row: {covered:?}");
    }

    #[test]
    fn descriptions_never_repeat_what_the_request_carried() {
        for (error, ..) in table() {
            let description = OAuthError::from(&error).description;
            assert!(!description.contains(SENT) && !description.contains("calendar.write"), "{error:?}: {description}");
            assert!(!description.is_empty(), "{error:?}");
        }
    }

    #[test]
    fn unacceptable_tokens_share_one_description() {
        for (error, ..) in table() {
            if matches!(error, EndpointError::SubjectToken(_) | EndpointError::ActorToken(_)) {
                assert_eq!(OAuthError::from(&error).description, UNACCEPTABLE_TOKEN, "{error:?}");
            }
        }
    }

    #[test]
    fn waiting_for_approval_is_counted_apart_from_refusals() {
        let pending = PendingApproval { id: ApprovalId("a".into()), interval: 5, expires_in: 60 };
        assert_eq!(
            TokenOutcome::from(&EndpointError::from(ApprovalError::Pending(pending))),
            TokenOutcome::AwaitingApproval
        );
        assert_eq!(
            TokenOutcome::from(&EndpointError::from(ApprovalError::Denied)),
            TokenOutcome::Refused { code: "access_denied", reason: "approval_denied".into() }
        );
    }

    #[test]
    fn unauthenticated_refusals_are_counted_by_reason_alone() {
        let metrics = Metrics::new();
        let throttled = EndpointError::Throttled(crate::error::Throttled { retry_after: 6 });
        for _ in 0..3 {
            metrics.count_unauthenticated(throttled.reason());
        }
        metrics.count_unauthenticated(EndpointError::Client(ClientAuthError::WrongSecret).reason());
        let text = metrics.render().unwrap();
        let mut lines = series(&text, "baton_unauthenticated_refusals_total");
        lines.sort();
        assert_eq!(
            lines,
            [
                "baton_unauthenticated_refusals_total{reason=\"client_wrong_secret\"} 1",
                "baton_unauthenticated_refusals_total{reason=\"throttled\"} 3"
            ]
        );
    }
}
