//! The broker: the shared context and each endpoint's own state, wired
//! together once. Its methods are the broker's whole public surface, one
//! per operation, each handing the call to the module that owns it with
//! just the parts that module reads.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use crate::abuse::{Guard, RefusalSettings, ThrottleSettings};
use crate::admin::{AgentReport, Operator, TokenQuery, Trace, TraceNode};
use crate::approvals::{ApprovalSettings, Approvals};
use crate::claims::{Claims, TokenId};
use crate::clock::{Clock, UnixTime};
use crate::context::{Context, Settings, Stores};
use crate::error::{EndpointError, RequestError, Throttled};
use crate::grant::{TokenRequest, TokenResponse};
use crate::introspection::Introspection;
use crate::keys::KeySet;
use crate::metrics::Metrics;
use crate::params::TokenParams;
use crate::policy::explain::{ExplainError, Explanation, Question};
use crate::policy::{Policy, PolicyError};
use crate::revocation::Revocations;
use crate::store::approvals::{ApprovalPage, ApprovalQuery};
use crate::store::lifecycle::LocalLifecycle;
use crate::store::sessions::LocalSessions;
use crate::store::{Approval, ApprovalId, AuditEvent, AuditFilter, Principal, Status, StoreError};
use crate::store::{LifecycleStore, SessionStore};
use crate::upstream::sign_in::SignIn;
use crate::{admin, governance, grant, introspection, lifecycle};

/// A running broker.
pub struct Broker {
    context: Context,
    guard: Guard,
    approvals: Approvals,
    revocations: Revocations,
    console_sign_in: Option<Arc<SignIn>>,
    console_sessions: Arc<dyn SessionStore>,
    lifecycle: Arc<dyn LifecycleStore>,
}

impl Broker {
    /// A broker with in-memory approvals, the default abuse limits and no
    /// trusted proxies.
    pub fn new(settings: Settings, keys: KeySet, policy: Policy, stores: Stores, clock: Arc<dyn Clock>) -> Broker {
        let guard = Guard::new(ThrottleSettings::default(), RefusalSettings::default(), Vec::new(), clock.clone());
        Broker {
            context: Context::new(settings, keys, policy, stores, clock),
            guard,
            approvals: Approvals::new(ApprovalSettings::default()),
            revocations: Revocations::default(),
            console_sign_in: None,
            console_sessions: Arc::new(LocalSessions::default()),
            lifecycle: Arc::new(LocalLifecycle::default()),
        }
    }

    /// Sets where approvals are kept, who decides them and where they are
    /// announced. Without this call a broker keeps them in memory.
    pub fn with_approvals(mut self, approvals: ApprovalSettings) -> Broker {
        self.approvals = Approvals::new(approvals);
        self
    }

    /// The same broker with these limits on failed client authentication
    /// and on the counting of unauthenticated refusals.
    pub fn with_abuse_limits(mut self, throttle: ThrottleSettings, refusals: RefusalSettings) -> Broker {
        let proxies = self.guard.trusted_proxies().to_vec();
        self.guard = Guard::new(throttle, refusals, proxies, self.context.clock.clone());
        self
    }

    /// The same broker believing the client address that these proxies
    /// forward (`Forwarded`, `X-Forwarded-For`) when a request comes from
    /// one of them; from anyone else those headers are ignored.
    pub fn with_trusted_proxies(mut self, proxies: Vec<IpAddr>) -> Broker {
        self.guard = self.guard.with_trusted_proxies(proxies);
        self
    }

    /// The same broker letting listed security-team members sign in to the
    /// console at an identity provider.
    pub fn with_console_sign_in(mut self, sign_in: SignIn) -> Broker {
        self.console_sign_in = Some(Arc::new(sign_in));
        self
    }

    /// The same broker keeping console sessions in `sessions` (the state
    /// store, so that every node knows them) rather than in its memory.
    pub fn with_console_sessions(mut self, sessions: Arc<dyn SessionStore>) -> Broker {
        self.console_sessions = sessions;
        self
    }

    /// The same broker keeping what was done about the inventory's agents
    /// in `lifecycle` (the state store, so that every node acts once)
    /// rather than in its memory.
    pub fn with_lifecycle_store(mut self, lifecycle: Arc<dyn LifecycleStore>) -> Broker {
        self.lifecycle = lifecycle;
        self
    }

    /// Where console sessions are kept.
    pub fn console_sessions(&self) -> &dyn SessionStore {
        self.console_sessions.as_ref()
    }

    /// Signing in to the console at an identity provider, when configured.
    pub fn console_sign_in(&self) -> Option<&SignIn> {
        self.console_sign_in.as_deref()
    }

    /// What every endpoint reads.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        self.context.settings()
    }

    /// The signing and published keys, as of the last load.
    pub fn keys(&self) -> Arc<KeySet> {
        self.context.keys()
    }

    /// Swaps in a freshly loaded key set (after `baton keys rotate`, or when
    /// a retired key's publication ends).
    pub fn replace_keys(&self, keys: KeySet) {
        self.context.replace_keys(keys)
    }

    /// The policy in force now: a snapshot that a reload does not change
    /// under its holder.
    pub fn policy(&self) -> Arc<Policy> {
        self.context.policy()
    }

    /// The broker's metrics.
    pub fn metrics(&self) -> &Metrics {
        self.context.metrics()
    }

    /// Whether a verified token is alive ([`Context::status`]).
    pub async fn status(&self, claims: &Claims) -> Result<Status, StoreError> {
        self.context.status(claims).await
    }

    /// Whether the state store answers now (readiness).
    pub async fn ping_store(&self) -> Result<(), StoreError> {
        self.context.ping_store().await
    }

    /// `POST /token` ([`grant::token`]).
    pub async fn token(&self, request: TokenRequest) -> Result<TokenResponse, EndpointError> {
        grant::token(&self.context, &self.guard, &self.approvals, request).await
    }

    /// A token request refused before it could be read ([`grant::refuse`]).
    pub async fn refuse(&self, error: RequestError, client_address: Option<String>) -> EndpointError {
        grant::refuse(&self.context, &self.guard, error, client_address).await
    }

    /// The server nonce DPoP proofs must carry now, when nonces are on
    /// ([`grant::dpop_nonce`]).
    pub fn dpop_nonce(&self) -> Option<String> {
        grant::dpop_nonce(&self.context)
    }

    /// `POST /introspect` ([`introspection::introspect`]).
    pub async fn introspect(
        &self,
        authorization: Option<&str>,
        params: &TokenParams,
        client_address: Option<&str>,
    ) -> Result<Introspection, EndpointError> {
        introspection::introspect(&self.context, &self.guard, authorization, params, client_address).await
    }

    /// `POST /revoke` ([`Revocations::revoke`]).
    pub async fn revoke(
        &self,
        authorization: Option<&str>,
        params: &TokenParams,
        client_address: Option<String>,
    ) -> Result<(), EndpointError> {
        self.revocations.revoke(&self.context, &self.guard, authorization, params, client_address).await
    }

    /// An introspection or revocation request refused before it could be
    /// read ([`Guard::refuse_unread`]).
    pub fn refuse_unread(&self, error: RequestError, client_address: Option<&str>) -> EndpointError {
        self.guard.refuse_unread(&self.context, error, client_address)
    }

    /// The proxies whose forwarded client address is believed.
    pub fn trusted_proxies(&self) -> &[IpAddr] {
        self.guard.trusted_proxies()
    }

    /// Writes the refusals of unauthenticated requests counted since the
    /// last call as one audit event ([`Guard::flush_refusals`]).
    pub async fn flush_refusals(&self) -> Result<u64, StoreError> {
        self.guard.flush_refusals(&self.context).await
    }

    /// How often [`Broker::flush_refusals`] is to be called.
    pub fn refusal_interval(&self) -> std::time::Duration {
        self.guard.refusal_interval()
    }

    /// Forgets the failed authentications whose budget is whole again.
    pub fn prune_throttle(&self) {
        self.guard.prune_throttle()
    }

    /// One approval while it waits ([`Approvals::pending_approval`]).
    pub async fn pending_approval(&self, id: &ApprovalId) -> Result<Option<Approval>, EndpointError> {
        self.approvals.pending_approval(&self.context, id).await
    }

    /// One page of approvals, newest first ([`Approvals::list`]).
    pub async fn list_approvals(&self, query: ApprovalQuery) -> Result<ApprovalPage, EndpointError> {
        self.approvals.list(&self.context, query).await
    }

    /// How many approvals are pending now ([`Approvals::count_pending`]).
    pub async fn count_pending_approvals(&self) -> Result<u64, EndpointError> {
        self.approvals.count_pending(&self.context).await
    }

    /// Approves or denies a pending approval as `approver`
    /// ([`Approvals::decide`]).
    pub async fn decide_approval(
        &self,
        id: &ApprovalId,
        approver: &str,
        approve: bool,
        by: &Operator,
    ) -> Result<Approval, EndpointError> {
        self.approvals.decide(&self.context, id, approver, approve, by).await
    }

    /// Deprovisions an agent or a subject now ([`lifecycle::deprovision`]).
    pub async fn deprovision(&self, principal: &Principal, by: &Operator) -> Result<(), EndpointError> {
        lifecycle::deprovision(&self.context, principal, by).await
    }

    /// Lifts a deprovisioned principal's block ([`lifecycle::reinstate`]).
    pub async fn reinstate(&self, principal: &Principal, by: &Operator) -> Result<(), EndpointError> {
        lifecycle::reinstate(&self.context, principal, by).await
    }

    /// Retires the agents past their `expires` that no node has retired yet
    /// ([`lifecycle::retire_expired_agents`]).
    pub async fn retire_expired_agents(&self) -> Result<Vec<String>, EndpointError> {
        lifecycle::retire_expired_agents(&self.context, self.lifecycle.as_ref()).await
    }

    /// Deprovisions the agents the inventory had and no longer has, that no
    /// node has deprovisioned yet ([`lifecycle::deprovision_removed_agents`]).
    pub async fn deprovision_removed_agents(&self) -> Result<Vec<String>, EndpointError> {
        lifecycle::deprovision_removed_agents(&self.context, self.lifecycle.as_ref()).await
    }

    /// Whether `presented` is the admin token ([`admin::is_admin`]), checked
    /// under the throttle of `client_address` ([`Guard::admit_admin`]). No
    /// credential at all guesses nothing, and spends no budget.
    pub fn admit_admin(&self, presented: Option<&str>, client_address: Option<&str>) -> Result<bool, Throttled> {
        let Some(presented) = presented else { return Ok(false) };
        self.guard.admit_admin(client_address, || admin::is_admin(&self.context, presented))
    }

    /// Whether the admin API is on.
    pub fn admin_enabled(&self) -> bool {
        admin::admin_enabled(&self.context)
    }

    /// Revokes a token by id, and so its descendants; `None` for an id the
    /// broker knows nothing of ([`admin::revoke_jti`]).
    pub async fn revoke_jti(&self, jti: &TokenId, by: &Operator) -> Result<Option<UnixTime>, EndpointError> {
        admin::revoke_jti(&self.context, &self.revocations, jti, by).await
    }

    /// The ancestors and descendants of a token, each with its status
    /// ([`admin::trace`]).
    pub async fn trace(&self, jti: &TokenId) -> Result<Option<Trace>, EndpointError> {
        admin::trace(&self.context, jti).await
    }

    /// The tokens of a subject or an agent, with their status ([`admin::tokens`]).
    pub async fn tokens(&self, query: &TokenQuery) -> Result<Option<Vec<TraceNode>>, EndpointError> {
        admin::tokens(&self.context, query).await
    }

    /// The agent inventory with lifecycle warnings ([`admin::agent_reports`]).
    pub async fn agent_reports(&self) -> Result<Vec<AgentReport>, EndpointError> {
        admin::agent_reports(&self.context).await
    }

    /// The audit events `filter` selects ([`admin::audit_events`]).
    pub async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, EndpointError> {
        admin::audit_events(&self.context, filter).await
    }

    /// Swaps in `policy` ([`governance::replace_policy`]).
    pub fn replace_policy(&self, policy: Policy) {
        governance::replace_policy(&self.context, policy)
    }

    /// Loads the folder `dir` whole and swaps it in, or keeps the policy in
    /// force ([`governance::reload_policy`]).
    pub fn reload_policy(&self, dir: &Path) -> Result<(), PolicyError> {
        governance::reload_policy(&self.context, dir)
    }

    /// A dry run of `question` against the policy in force
    /// ([`governance::explain`]).
    pub fn explain(&self, question: &Question) -> Result<Explanation, ExplainError> {
        governance::explain(&self.context, question)
    }
}
