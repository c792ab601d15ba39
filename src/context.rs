//! What every endpoint reads: the settings, the keys, the policy in force,
//! the stores, the clock and the metrics, built once at start, and the
//! checks they share (is a token alive, record an audit event, verify one of
//! this broker's tokens). Each endpoint's own state lives in its module.

use std::sync::{Arc, RwLock};

use crate::claims::{Claims, TokenId};
use crate::client_auth::ClientAuthError;
use crate::clock::{Clock, UnixMicros, UnixTime};
use crate::error::EndpointError;
use crate::ids::{AgentId, Issuer, Subject};
use crate::keys::{Algorithm, KeySet};
use crate::metrics::Metrics;
use crate::policy::{Lifetimes, Policy, Target};
use crate::store::{AuditEvent, AuditStore, Lineage, Principal, ReplayStore, RevocationStore, Status, StoreError};

use crate::token::{MintError, Validation, Verified, VerifyError};
use crate::upstream::Providers;

/// The broker's fixed settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Issuer identifier.
    pub issuer: Issuer,
    /// Largest delegation depth a token may have.
    pub max_depth: u32,
    /// Longest token accepted as `subject_token` or `actor_token`, in bytes.
    pub max_token_bytes: usize,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Token lifetimes.
    pub lifetimes: Lifetimes,
    /// SHA-256 (hex) of the admin token; the admin API is off when absent.
    pub admin_token_sha256: Option<String>,
    /// Whether DPoP proofs must carry a server nonce (RFC 9449 §8).
    pub dpop_nonce: bool,
    /// Seconds of clock difference tolerated with other nodes, clients and
    /// identity providers (`clock_leeway_seconds`). A child's `exp` is still
    /// capped by its parent's, so no leeway makes a token outlive its parent.
    pub clock_leeway_seconds: i64,
}

/// The state a broker is built from.
pub struct Stores {
    /// Single-use ids.
    pub replay: Arc<dyn ReplayStore>,
    /// Revocations.
    pub revocation: Arc<dyn RevocationStore>,
    /// The audit trail.
    pub audit: Arc<dyn AuditStore>,
}

/// The state every endpoint shares.
pub struct Context {
    pub(crate) settings: Settings,
    /// The rules this broker's own tokens are checked by, built once.
    pub(crate) validation: Validation,
    pub(crate) keys: RwLock<Arc<KeySet>>,
    /// Swapped whole on reload; each request takes one snapshot.
    pub(crate) policy: RwLock<Arc<Policy>>,
    pub(crate) stores: Stores,
    pub(crate) clock: Arc<dyn Clock>,
    /// The trusted identity providers' discovered keys.
    pub(crate) providers: Providers,
    pub(crate) metrics: Metrics,
}

impl Context {
    /// The shared state of a broker.
    pub fn new(settings: Settings, keys: KeySet, policy: Policy, stores: Stores, clock: Arc<dyn Clock>) -> Context {
        let validation = Validation {
            issuer: settings.issuer.clone(),
            max_token_bytes: settings.max_token_bytes,
            max_depth: settings.max_depth,
            algorithms: vec![Algorithm::Es256, Algorithm::EdDsa],
            leeway: settings.clock_leeway_seconds,
            // Introspection and revocation read tokens for any audience; the exchange asks for its agent.
            audience: crate::token::AudienceRule::Any,
        };
        Context {
            settings,
            validation,
            keys: RwLock::new(Arc::new(keys)),
            policy: RwLock::new(Arc::new(policy)),
            stores,
            providers: Providers::new(clock.clone()),
            metrics: Metrics::new(),
            clock,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The signing and published keys, as of the last load.
    pub fn keys(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(keys) => keys.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Swaps in a freshly loaded key set (after `baton keys rotate`, or when
    /// a retired key's publication ends).
    pub fn replace_keys(&self, keys: KeySet) {
        let keys = Arc::new(keys);
        match self.keys.write() {
            Ok(mut current) => *current = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
    }

    /// The policy in force now: a snapshot that a reload does not change
    /// under its holder. A request takes one and uses it throughout.
    pub fn policy(&self) -> Arc<Policy> {
        match self.policy.read() {
            Ok(policy) => policy.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The broker's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The trusted identity providers, as discovered.
    pub(crate) fn providers(&self) -> &Providers {
        &self.providers
    }

    /// Whether a verified token is alive (DESIGN.md §2.4): neither it nor an
    /// ancestor revoked, and neither its subject nor any agent of its chain
    /// deprovisioned since it was issued, whether by the admin API or by the
    /// inventory (an agent removed from `agents.toml` or past its expiry).
    pub async fn status(&self, claims: &Claims) -> Result<Status, StoreError> {
        self.token_status(&self.policy(), claims).await
    }

    /// [`Context::status`] against the request's policy snapshot.
    pub(crate) async fn token_status(&self, policy: &Policy, claims: &Claims) -> Result<Status, StoreError> {
        self.lineage_status(policy, &Lineage::of(claims)).await
    }

    /// The status of a lineage: the inventory first, then the store.
    pub(crate) async fn lineage_status(&self, policy: &Policy, lineage: &Lineage) -> Result<Status, StoreError> {
        let now = self.now();
        let inventory = policy.inventory();
        let retired = lineage.principals.iter().any(|named| match &named.principal {
            // An agent removed or past its expiry; an API that is no longer
            // registered counts the same for the tokens addressed to it.
            Principal::Agent(id) => match inventory.target(id) {
                Some(Target::Agent(agent)) => !agent.is_active(now),
                Some(Target::Resource(_)) => false,
                None => true,
            },
            Principal::Subject(_) => false,
        });
        if retired {
            return Ok(Status::Deprovisioned);
        }
        self.measured("revocation_check", self.stores.revocation.check(lineage)).await
    }

    /// `call` to the state store, timed and counted as `operation` in the
    /// metrics.
    pub(crate) async fn measured<T>(
        &self,
        operation: &'static str,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = std::time::Instant::now();
        let result = call.await;
        self.metrics.observe_store(operation, started.elapsed().as_secs_f64(), result.is_err());
        result
    }

    /// Whether the state store answers now (readiness).
    pub async fn ping_store(&self) -> Result<(), StoreError> {
        self.stores.revocation.ping().await
    }

    /// Persists an audit event, then logs it as a structured `tracing`
    /// event, one field each (one JSON record with `log_format = "json"`):
    /// the log says `stored = false` of one the store did not take, whose
    /// request was refused.
    pub(crate) async fn record(&self, event: AuditEvent) -> Result<(), StoreError> {
        let stored = self.measured("audit_record", self.stores.audit.record(event.clone())).await;
        let decision = serde_json::to_value(event.decision).ok();
        let list = |items: &[String]| (!items.is_empty()).then(|| items.join(" "));
        tracing::info!(
            target: "baton::audit",
            decision = decision.as_ref().and_then(serde_json::Value::as_str),
            action = event.action.as_str(),
            reason = event.reason.as_deref(),
            subject = event.subject.as_deref(),
            agent = event.agent.as_deref(),
            chain = list(&event.chain).as_deref(),
            // `target` names the log line's source in every log format.
            aud = event.target.as_deref(),
            scopes_asked = event.scopes_asked.as_deref(),
            scopes_granted = event.scopes_granted.as_deref(),
            jti = event.jti.as_ref().map(|jti| jti.0.as_str()),
            parent_jti = event.parent_jti.as_ref().map(|jti| jti.0.as_str()),
            expires_at = event.expires_at.map(|at| at.0),
            dpop_jkt = event.dpop_jkt.as_deref(),
            rules = list(&event.rules).as_deref(),
            claimed_client = event.claimed_client.as_deref(),
            client_address = event.client_address.as_deref(),
            by = event.by.as_deref(),
            approval = event.approval.as_ref().map(|approval| approval.id.0.as_str()),
            approver = event.approval.as_ref().and_then(|approval| approval.approver.as_deref()),
            refusals = (!event.refusals.is_empty()).then(|| event.refusals.iter().map(|count| count.count).sum::<u64>()),
            stored = stored.is_ok(),
            "audit"
        );
        stored
    }

    /// Verifies one of this broker's own tokens, whatever its audience:
    /// each endpoint checks the audience its RFC asks of it (the token
    /// endpoint, that the acting agent holds it; introspection, that the
    /// asking API is its audience; revocation, none).
    pub(crate) fn verify(&self, token: &str) -> Result<Verified<Claims>, VerifyError> {
        crate::token::verify(token, self.keys().as_ref(), &self.validation, self.clock.as_ref())
    }

    pub(crate) fn now(&self) -> UnixTime {
        self.clock.now()
    }

    /// Now, in microseconds (an issue instant or a deprovisioning's cut-off).
    pub(crate) fn now_micros(&self) -> UnixMicros {
        self.clock.now_micros()
    }

    /// A fresh, unguessable token id: 128 random bits.
    pub(crate) fn new_jti(&self) -> Result<TokenId, MintError> {
        crate::ids::random_text::<16>().map(TokenId).ok_or_else(|| MintError::new("no randomness available"))
    }

    /// Refuses a deprovisioned agent until it is reinstated (DESIGN.md §2.4).
    /// An exchange needs no separate call: the parent's revocation check
    /// names its holder, the acting agent, and asks here only when it fails.
    pub(crate) async fn ensure_not_blocked(
        &self,
        agent: &AgentId,
        subject: Option<&Subject>,
    ) -> Result<(), EndpointError> {
        let mut principals = vec![Principal::Agent(agent.to_owned())];
        principals.extend(subject.map(|subject| Principal::Subject(subject.to_owned())));
        if self.any_blocked(principals).await? {
            return Err(ClientAuthError::Deprovisioned.into());
        }
        Ok(())
    }

    /// Whether any of `principals` is blocked now: deprovisioned (by an
    /// admin, or removed from the inventory) and not reinstated. One lookup.
    pub(crate) async fn any_blocked(&self, principals: Vec<Principal>) -> Result<bool, StoreError> {
        // A token "issued at the end of time" is killed by a block only,
        // never by a deprovisioning's cut-off in the past.
        let own = Lineage::at(Vec::new(), UnixMicros::MAX, principals);
        match self.measured("revocation_check", self.stores.revocation.check(&own)).await? {
            Status::Active => Ok(false),
            Status::Revoked | Status::Deprovisioned => Ok(true),
        }
    }
}

#[cfg(test)]
mod tests {
    //! A token's status from the inventory (DESIGN.md §2.4, §5): an agent
    //! removed from `agents.toml` or past its `expires` kills every token
    //! that names it, wherever it stands in the path; an API does not.

    use super::*;
    use crate::claims::{Actor, Delegation, Hop, ScopeSet};
    use crate::clock::FixedClock;
    use crate::keys::{self, Algorithm};
    use crate::store::memory::MemoryStore;

    /// 2030-01-01T12:00:00Z: the last day of `ending`.
    const LAST_DAY: i64 = 1_893_499_200;
    /// 2030-01-02T00:00:00Z: the first second after it.
    const DAY_AFTER: i64 = 1_893_542_400;
    const API: &str = "https://api.example";
    const SECRET: &str = "0000000000000000000000000000000000000000000000000000000000000000";
    const LIFETIMES: Lifetimes = Lifetimes { max_token_ttl: 3600, agent_token_ttl: 900 };

    /// A policy folder: `lasting` and `relay` registered for another year,
    /// `ending` until 2030-01-01, one API, and a rule that permits anything.
    fn policy() -> Policy {
        let dir = tempfile::tempdir().unwrap();
        let agent = |id: &str, expires: &str| {
            format!("[[agents]]\nid='{id}'\nowner='o'\npurpose='p'\nexpires={expires}\nsecret_sha256='{SECRET}'\n")
        };
        let agents = [agent("lasting", "2031-01-01"), agent("relay", "2031-01-01"), agent("ending", "2030-01-01")];
        std::fs::write(dir.path().join("agents.toml"), agents.concat()).unwrap();
        let resources = format!("[[resources]]\nuri='{API}'\nname='API'\nscopes=['read']\nttl=60\n");
        std::fs::write(dir.path().join("resources.toml"), resources).unwrap();
        std::fs::write(dir.path().join("rules.cedar"), "permit (principal, action, resource);\n").unwrap();
        Policy::load(dir.path(), LIFETIMES).unwrap()
    }

    /// A broker's shared state on `store`, its clock at `now`.
    fn context(store: Arc<MemoryStore>, now: i64) -> Context {
        let dir = tempfile::tempdir().unwrap();
        keys::generate(dir.path(), Algorithm::Es256, 3600, UnixTime(now)).unwrap();
        let keys = KeySet::load(dir.path(), 3600, UnixTime(now)).unwrap();
        let settings = Settings {
            issuer: "https://baton.example".into(),
            max_depth: 5,
            max_token_bytes: 8 * 1024,
            max_body_bytes: 64 * 1024,
            lifetimes: LIFETIMES,
            admin_token_sha256: None,
            dpop_nonce: false,
            clock_leeway_seconds: 30,
        };
        let stores = Stores { replay: store.clone(), revocation: store.clone(), audit: store };
        Context::new(settings, keys, policy(), stores, Arc::new(FixedClock::new(UnixTime(now))))
    }

    /// A token `client_id` obtained for `aud` on `sub`'s authority, issued
    /// on the last day, with no ancestors.
    fn claims(sub: &str, aud: &str, client_id: &str) -> Claims {
        Claims {
            iss: "https://baton.example".into(),
            sub: sub.into(),
            aud: aud.into(),
            client_id: client_id.into(),
            scope: ScopeSet::parse("read").unwrap(),
            iat: UnixTime(LAST_DAY - 60),
            exp: UnixTime(LAST_DAY + 600),
            jti: TokenId(format!("{client_id}-for-{aud}")),
            act: None,
            may_act: None,
            cnf: None,
            delegation: Delegation::default(),
        }
    }

    /// The token the last of `agents` holds for `aud` after each passed
    /// the authority to the next, the first on its own authority.
    fn walked(agents: &[&str], aud: &str) -> Claims {
        let (first, _) = agents.split_first().unwrap();
        let targets = agents.iter().skip(1).copied().chain([aud]);
        let mut hops: Vec<Hop> = Vec::new();
        let mut act: Option<Actor> = None;
        let mut last = None;
        for (agent, target) in agents.iter().zip(targets) {
            let mut token = claims(first, target, agent);
            token.act = act.clone();
            let depth = u32::try_from(hops.len()).unwrap();
            token.delegation = Delegation { depth, hops: hops.clone(), ..Delegation::default() };
            hops.push(token.as_hop());
            act = Some(Actor { sub: (*target).into(), act: act.map(Box::new) });
            last = Some(token);
        }
        last.unwrap()
    }

    async fn status(context: &Context, claims: &Claims) -> Status {
        context.lineage_status(&context.policy(), &Lineage::of(claims)).await.unwrap()
    }

    /// An API (a registered resource) is no agent, yet is named as the
    /// holder of a token addressed to it: that stays fine. So does a person
    /// as subject, who is in no inventory.
    #[tokio::test]
    async fn a_token_for_an_api_of_registered_agents_is_alive() {
        let context = context(Arc::new(MemoryStore::new()), LAST_DAY);
        assert_eq!(status(&context, &walked(&["lasting", "relay", "ending"], API)).await, Status::Active);
        assert_eq!(status(&context, &claims("lasting", API, "lasting")).await, Status::Active);
        assert_eq!(status(&context, &claims("alice@example.com", API, "lasting")).await, Status::Active);
    }

    /// DESIGN.md §2.4, §5: an agent removed from the inventory is
    /// deprovisioned, and so is every token that names it: as the subject's
    /// agent, the holder, the audience, or anywhere in the ancestry.
    #[tokio::test]
    async fn an_agent_removed_from_the_inventory_kills_every_token_naming_it() {
        let context = context(Arc::new(MemoryStore::new()), LAST_DAY);
        for token in [
            claims("ghost", API, "ghost"),
            claims("lasting", "ghost", "lasting"),
            walked(&["ghost", "lasting"], API),
            walked(&["lasting", "ghost", "relay"], API),
            walked(&["lasting", "relay"], "ghost"),
        ] {
            assert_eq!(status(&context, &token).await, Status::Deprovisioned, "{:?}", token.chain());
        }
    }

    /// DESIGN.md §5: `expires` is the agent's last day (UTC). On it the
    /// agent's tokens live; from the next second, every token naming it is
    /// deprovisioned, and a token that does not name it lives on.
    #[tokio::test]
    async fn an_agent_past_its_expiry_kills_every_token_naming_it() {
        let naming_ending = [
            claims("ending", API, "ending"),
            claims("lasting", "ending", "lasting"),
            walked(&["ending", "lasting"], API),
            walked(&["lasting", "ending", "relay"], API),
        ];
        let store = Arc::new(MemoryStore::new());
        let last_second = context(store.clone(), DAY_AFTER - 1);
        for token in &naming_ending {
            assert_eq!(status(&last_second, token).await, Status::Active, "{:?}", token.chain());
        }
        let after = context(store, DAY_AFTER);
        for token in &naming_ending {
            assert_eq!(status(&after, token).await, Status::Deprovisioned, "{:?}", token.chain());
        }
        assert_eq!(status(&after, &walked(&["lasting", "relay"], API)).await, Status::Active);
    }

    /// DESIGN.md §2.4: the inventory is read first, and the store after it:
    /// a token of live agents whose ancestor was revoked is still dead.
    #[tokio::test]
    async fn a_live_inventory_still_asks_the_store() {
        let store = Arc::new(MemoryStore::new());
        let context = context(store.clone(), LAST_DAY);
        let token = walked(&["lasting", "relay"], API);
        let root = token.delegation.hops[0].jti.clone();
        store.revoke(&root, UnixTime(LAST_DAY + 600)).await.unwrap();
        assert_eq!(status(&context, &token).await, Status::Revoked);
    }
}
