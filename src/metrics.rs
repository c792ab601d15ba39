//! The broker's Prometheus metrics (`GET /metrics`, DESIGN.md §3), in the
//! OpenMetrics text format.
//!
//! One [`Metrics`] is owned by the broker; the registry is built in one
//! place, [`Metrics::new`], so a new metric is a field and a `register` line
//! there. Every label value comes from a fixed set (grant types, OAuth error
//! codes, the variants of Baton's own errors): nothing a client sends ever
//! becomes a label, so a hostile client cannot blow up the series count.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::client_auth::ClientAuthError;
use crate::grant::{GrantError, RequestError, Unacceptable, CLIENT_CREDENTIALS, TOKEN_EXCHANGE};
use crate::oauth::OAuthError;

/// The media type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrantLabels {
    grant_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    grant_type: &'static str,
    error: &'static str,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RevocationLabels {
    via: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeprovisionLabels {
    kind: &'static str,
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// Who revoked a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokedVia {
    /// A holder, at `POST /revoke` (RFC 7009).
    RevocationEndpoint,
    /// The admin API.
    Admin,
}

/// Why a principal was deprovisioned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeprovisionCause {
    /// The admin API.
    Admin,
    /// Removed from `agents.toml`.
    Removed,
    /// Past its `expires`.
    Expired,
}

/// Counters of what the broker decided.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    issued: Family<GrantLabels, Counter>,
    refused: Family<RefusalLabels, Counter>,
    revoked: Family<RevocationLabels, Counter>,
    deprovisioned: Family<DeprovisionLabels, Counter>,
    policy_reloads: Family<OutcomeLabels, Counter>,
    pending_approvals: Gauge,
    waiting: Family<GrantLabels, Counter>,
    unauthenticated: Family<ReasonLabels, Counter>,
    connections_refused: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric, registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let issued = Family::<GrantLabels, Counter>::default();
        registry.register("baton_tokens_issued", "Tokens issued, by grant type", issued.clone());
        let refused = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "baton_token_requests_refused",
            "Token requests refused, by grant type, OAuth error code and reason",
            refused.clone(),
        );
        let revoked = Family::<RevocationLabels, Counter>::default();
        registry.register(
            "baton_tokens_revoked",
            "Tokens revoked (with their descendants), by who revoked",
            revoked.clone(),
        );
        let deprovisioned = Family::<DeprovisionLabels, Counter>::default();
        registry.register(
            "baton_principals_deprovisioned",
            "Agents and subjects deprovisioned, by kind and cause",
            deprovisioned.clone(),
        );
        let policy_reloads = Family::<OutcomeLabels, Counter>::default();
        registry.register("baton_policy_reloads", "Policy folder reloads, by outcome", policy_reloads.clone());
        // Series that should read 0 rather than be absent before the first event.
        for outcome in ["ok", "failed"] {
            drop(policy_reloads.get_or_create(&OutcomeLabels { outcome }));
        }
        let pending_approvals = Gauge::default();
        registry.register(
            "baton_approvals_pending",
            "Requests waiting for a person's approval, as of the last scrape (read from the store's counts)",
            pending_approvals.clone(),
        );
        let waiting = Family::<GrantLabels, Counter>::default();
        registry.register(
            "baton_token_requests_awaiting_approval",
            "Token requests answered authorization_pending, by grant type (each poll counts)",
            waiting.clone(),
        );
        let unauthenticated = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "baton_unauthenticated_refusals",
            "Requests refused before their client authenticated (token, introspection and revocation \
             endpoints), by reason; the audit trail holds them as one event per interval",
            unauthenticated.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "baton_connections_refused",
            "Connections closed as soon as accepted: their address, or all together, held the most allowed",
            connections_refused.clone(),
        );
        Metrics {
            registry,
            issued,
            refused,
            revoked,
            deprovisioned,
            policy_reloads,
            pending_approvals,
            waiting,
            unauthenticated,
            connections_refused,
        }
    }

    /// Counts a connection closed at once for being over a connection cap.
    pub fn count_connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// Sets how many approvals are pending now.
    pub fn set_pending_approvals(&self, pending: usize) {
        self.pending_approvals.set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// Counts the answer to one token request: issued, or refused with its
    /// OAuth error code and a reason from a fixed set.
    pub fn count_token(&self, grant_type: Option<&str>, outcome: Result<(), &GrantError>) {
        let grant_type = match grant_type {
            Some(CLIENT_CREDENTIALS) => "client_credentials",
            Some(TOKEN_EXCHANGE) => "token_exchange",
            Some(_) => "other",
            None => "none",
        };
        match outcome {
            Ok(()) => {
                self.issued.get_or_create(&GrantLabels { grant_type }).inc();
            }
            // Waiting for a person is not a refusal: alerts on refusals must
            // not fire because approvers are at lunch.
            Err(GrantError::Approval(crate::grant::ApprovalError::Pending(_))) => {
                self.waiting.get_or_create(&GrantLabels { grant_type }).inc();
            }
            Err(error) => {
                let labels =
                    RefusalLabels { grant_type, error: OAuthError::from(error).code.as_str(), reason: reason(error) };
                self.refused.get_or_create(&labels).inc();
            }
        }
    }

    /// Counts a request refused before its client authenticated, by the
    /// reason label of [`reason`] (a fixed set: never the claimed client or
    /// the address).
    pub fn count_unauthenticated(&self, reason: String) {
        self.unauthenticated.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Counts a revoked token.
    pub fn count_revocation(&self, via: RevokedVia) {
        let via = match via {
            RevokedVia::RevocationEndpoint => "revocation_endpoint",
            RevokedVia::Admin => "admin",
        };
        self.revoked.get_or_create(&RevocationLabels { via }).inc();
    }

    /// Counts a deprovisioned agent (`agent`) or subject.
    pub fn count_deprovisioning(&self, agent: bool, cause: DeprovisionCause) {
        let kind = if agent { "agent" } else { "subject" };
        let cause = match cause {
            DeprovisionCause::Admin => "admin",
            DeprovisionCause::Removed => "removed",
            DeprovisionCause::Expired => "expired",
        };
        self.deprovisioned.get_or_create(&DeprovisionLabels { kind, cause }).inc();
    }

    /// Counts a policy reload that was swapped in (`true`) or refused.
    pub fn count_policy_reload(&self, swapped: bool) {
        let outcome = if swapped { "ok" } else { "failed" };
        self.policy_reloads.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Every metric in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// A refusal's reason label: the variant of Baton's error, never its text.
/// Exhaustive: a new variant does not compile until it has a label.
pub fn reason(error: &GrantError) -> String {
    use crate::dpop::ProofError;
    use crate::grant::ApprovalError;
    let label = match error {
        GrantError::Request(request) => request_reason(request),
        GrantError::Client(client) => client_reason(client),
        GrantError::SubjectToken(unacceptable) => return format!("subject_token_{}", token_reason(unacceptable)),
        GrantError::ActorToken(unacceptable) => return format!("actor_token_{}", token_reason(unacceptable)),
        GrantError::Refused(refusal) => refusal.code(),
        GrantError::Chain(chain) => match chain {
            crate::chain::ChainError::Widened(crate::chain::Widening::TooDeep { .. }) => "chain_too_deep",
            crate::chain::ChainError::Widened(crate::chain::Widening::ScopeWidened) => "chain_scope_widened",
            crate::chain::ChainError::Widened(crate::chain::Widening::LifetimeExtended) => "chain_lifetime_extended",
            crate::chain::ChainError::Unbound => "chain_unbound",
            crate::chain::ChainError::ActsAgain => "chain_acts_again",
        },
        GrantError::IdentityProvider(_) => "identity_provider_unavailable",
        GrantError::Approval(approval) => match approval {
            ApprovalError::Pending(_) => "approval_pending",
            ApprovalError::Denied => "approval_denied",
            ApprovalError::Expired => "approval_expired",
            ApprovalError::Unknown => "approval_unknown",
            ApprovalError::Mismatch => "approval_mismatch",
            ApprovalError::Used => "approval_used",
            ApprovalError::NotFound => "approval_not_found",
            ApprovalError::WrongApprover => "approval_wrong_approver",
            ApprovalError::AlreadyDecided(_) => "approval_already_decided",
            ApprovalError::TooManyPending => "approval_too_many_pending",
        },
        GrantError::Dpop(proof) => match proof {
            ProofError::Several => "dpop_several",
            ProofError::Malformed => "dpop_malformed",
            ProofError::WrongType => "dpop_wrong_type",
            ProofError::AlgorithmNotAllowed => "dpop_algorithm",
            ProofError::UnusableKey => "dpop_unusable_key",
            ProofError::PrivateKey => "dpop_private_key",
            ProofError::BadSignature => "dpop_signature",
            ProofError::WrongMethod => "dpop_htm",
            ProofError::WrongUri => "dpop_htu",
            ProofError::UseNonce => "dpop_nonce",
            ProofError::Stale => "dpop_iat",
            ProofError::AccessTokenHash => "dpop_ath",
            ProofError::KeyMismatch => "dpop_key_mismatch",
            ProofError::Replayed => "dpop_replayed",
            ProofError::Required => "dpop_required",
        },
        GrantError::Policy(_) => "policy_error",
        GrantError::Store(_) => "store_unavailable",
        GrantError::NotAHolder(_) => "not_a_holder",
        GrantError::Mint(_) => "mint_failed",
        GrantError::Throttled(_) => "throttled",
    };
    label.to_owned()
}

fn request_reason(error: &RequestError) -> &'static str {
    match error {
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

fn client_reason(error: &ClientAuthError) -> &'static str {
    match error {
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

fn token_reason(error: &Unacceptable) -> &'static str {
    match error {
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

/// The lines of `text` that start with `prefix`: one metric's series.
#[cfg(test)]
fn series<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|line| line.starts_with(prefix)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Refusal;

    #[test]
    fn issued_and_refused_requests_are_counted_by_bounded_labels() {
        let metrics = Metrics::new();
        metrics.count_token(Some(TOKEN_EXCHANGE), Ok(()));
        metrics.count_token(Some(TOKEN_EXCHANGE), Ok(()));
        let refused = GrantError::Refused(Refusal::NotPermitted("calendar.write".parse().unwrap()));
        metrics.count_token(Some(TOKEN_EXCHANGE), Err(&refused));
        metrics.count_token(Some("urn:evil:<script>"), Err(&GrantError::Request(RequestError::UnsupportedGrantType)));
        metrics.count_token(None, Err(&GrantError::SubjectToken(Unacceptable::Revoked)));
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

    #[test]
    fn unauthenticated_refusals_are_counted_by_reason_alone() {
        let metrics = Metrics::new();
        let throttled = GrantError::Throttled(crate::grant::Throttled { retry_after: 6 });
        for _ in 0..3 {
            metrics.count_unauthenticated(reason(&throttled));
        }
        metrics.count_unauthenticated(reason(&GrantError::Client(ClientAuthError::WrongSecret)));
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

    #[test]
    fn reloads_read_zero_before_the_first() {
        let metrics = Metrics::new();
        metrics.count_policy_reload(false);
        let text = metrics.render().unwrap();
        let mut reloads = series(&text, "baton_policy_reloads_total");
        reloads.sort();
        assert_eq!(
            reloads,
            ["baton_policy_reloads_total{outcome=\"failed\"} 1", "baton_policy_reloads_total{outcome=\"ok\"} 0"]
        );
        metrics.count_revocation(RevokedVia::Admin);
        metrics.count_deprovisioning(true, DeprovisionCause::Removed);
        let text = metrics.render().unwrap();
        assert!(text.contains("baton_tokens_revoked_total{via=\"admin\"} 1"), "{text}");
        assert!(text.contains("baton_principals_deprovisioned_total{kind=\"agent\",cause=\"removed\"} 1"), "{text}");
    }
}
