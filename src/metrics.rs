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
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use std::borrow::Cow;

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
    reason: Cow<'static, str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: Cow<'static, str>,
}

/// How one token request ended, as counted: the caller names the OAuth
/// error code and the reason label, each from a fixed set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenOutcome {
    /// A token was issued.
    Issued,
    /// Answered `authorization_pending`: a person has not decided yet.
    AwaitingApproval,
    /// Refused.
    Refused {
        /// The OAuth error code sent (RFC 6749 §5.2).
        code: &'static str,
        /// The variant of Baton's error, never its text.
        reason: Cow<'static, str>,
    },
}

impl TokenOutcome {
    /// `issued`, `pending` or `refused`, as the audit trail says it.
    pub fn label(&self) -> &'static str {
        match self {
            TokenOutcome::Issued => "issued",
            TokenOutcome::AwaitingApproval => "pending",
            TokenOutcome::Refused { .. } => "refused",
        }
    }
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    /// The route that matched (`/admin/trace/{jti}`), never the path sent.
    endpoint: String,
    /// `2xx`, `4xx`…
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

/// A histogram of request durations: 0.25 ms to about 4 s, doubling.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
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
    request_durations: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    store_durations: Family<OperationLabels, Histogram, fn() -> Histogram>,
    store_errors: Family<OperationLabels, Counter>,
    store_up: Gauge,
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
        let request_durations = Family::<EndpointLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        registry.register(
            "baton_http_request_duration_seconds",
            "Time from a request's headers to its answer, by the route that matched and the status class",
            request_durations.clone(),
        );
        let store_durations = Family::<OperationLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        registry.register(
            "baton_store_operation_duration_seconds",
            "Time the state store took for the operations on the request path (revocation_check, \
             audit_record, dpop_replay, revoke), failed ones included",
            store_durations.clone(),
        );
        let store_errors = Family::<OperationLabels, Counter>::default();
        registry.register(
            "baton_store_errors",
            "State store operations on the request path that failed (each answered 503), by operation",
            store_errors.clone(),
        );
        let store_up = Gauge::default();
        registry.register(
            "baton_store_up",
            "Whether the state store answered the last check (1) or not (0); checked every few seconds",
            store_up.clone(),
        );
        registry.register("baton_build", "The running build", Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]));
        Metrics {
            registry,
            request_durations,
            store_durations,
            store_errors,
            store_up,
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

    /// Records how long a request to `endpoint` (the route that matched,
    /// a fixed set) took, answered with `status`.
    pub fn observe_request(&self, endpoint: &str, status: u16, seconds: f64) {
        let status = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.request_durations
            .get_or_create(&EndpointLabels { endpoint: endpoint.to_owned(), status })
            .observe(seconds);
    }

    /// Records how long the state store took for `operation` (a fixed
    /// name), and whether it failed.
    pub fn observe_store(&self, operation: &'static str, seconds: f64, failed: bool) {
        let labels = OperationLabels { operation };
        self.store_durations.get_or_create(&labels).observe(seconds);
        if failed {
            self.store_errors.get_or_create(&labels).inc();
        }
    }

    /// Sets whether the state store answered its last check.
    pub fn set_store_up(&self, up: bool) {
        self.store_up.set(i64::from(up));
    }

    /// Counts a connection closed at once for being over a connection cap.
    pub fn count_connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// Sets how many approvals are pending now.
    pub fn set_pending_approvals(&self, pending: usize) {
        self.pending_approvals.set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// Counts the answer to one token request. `grant_type` is a label
    /// from a fixed set (`token_exchange`, `client_credentials`, `other`,
    /// `none`), never the client's text.
    pub fn count_token(&self, grant_type: &'static str, outcome: TokenOutcome) {
        match outcome {
            TokenOutcome::Issued => {
                self.issued.get_or_create(&GrantLabels { grant_type }).inc();
            }
            // Waiting for a person is not a refusal: alerts on refusals must
            // not fire because approvers are at lunch.
            TokenOutcome::AwaitingApproval => {
                self.waiting.get_or_create(&GrantLabels { grant_type }).inc();
            }
            TokenOutcome::Refused { code, reason } => {
                self.refused.get_or_create(&RefusalLabels { grant_type, error: code, reason }).inc();
            }
        }
    }

    /// Counts a request refused before its client authenticated, by its
    /// reason label (a fixed set: never the claimed client or the address).
    pub fn count_unauthenticated(&self, reason: Cow<'static, str>) {
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

/// The lines of `text` that start with `prefix`: one metric's series.
#[cfg(test)]
pub(crate) fn series<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|line| line.starts_with(prefix)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn request_durations_are_a_histogram_per_route_and_status_class() {
        let metrics = Metrics::new();
        metrics.observe_request("/token", 200, 0.0004);
        metrics.observe_request("/token", 400, 0.003);
        metrics.set_store_up(true);
        metrics.observe_store("revocation_check", 0.001, false);
        metrics.observe_store("revocation_check", 0.002, true);
        let text = metrics.render().unwrap();
        assert!(
            text.contains("baton_store_operation_duration_seconds_count{operation=\"revocation_check\"} 2"),
            "{text}"
        );
        assert!(text.contains("baton_store_errors_total{operation=\"revocation_check\"} 1"), "{text}");
        let count = series(&text, "baton_http_request_duration_seconds_count");
        assert!(
            count.contains(&"baton_http_request_duration_seconds_count{endpoint=\"/token\",status=\"2xx\"} 1"),
            "{text}"
        );
        assert!(
            count.contains(&"baton_http_request_duration_seconds_count{endpoint=\"/token\",status=\"4xx\"} 1"),
            "{text}"
        );
        // 0.4 ms falls in the 0.5 ms bucket, not the 0.25 ms one.
        assert!(
            text.contains(
                "baton_http_request_duration_seconds_bucket{le=\"0.00025\",endpoint=\"/token\",status=\"2xx\"} 0"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "baton_http_request_duration_seconds_bucket{le=\"0.0005\",endpoint=\"/token\",status=\"2xx\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("baton_store_up 1"), "{text}");
        assert!(text.contains(&format!("baton_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))), "{text}");
    }
}
