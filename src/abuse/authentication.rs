//! Client authentication at the token, introspection and revocation
//! endpoints (DESIGN.md §12): the credential checked (`client_auth`),
//! failed attempts throttled per address and client (`throttle`), and the
//! refusals of requests whose client never proved itself counted in
//! aggregate (`refusals`) rather than one event each.

use std::net::IpAddr;
use std::sync::Arc;

use super::refusals::{self, RefusalSettings};
use super::throttle::{self, ThrottleSettings};
use crate::audit::CLIENT_AUTHENTICATION;
use crate::audit::{clip, prefix, Evidence};
use crate::client_auth::{self, AuthenticatedClient, CredentialFields};
use crate::clock::Clock;
use crate::context::Context;
use crate::error::{EndpointError, RequestError, Throttled};
use crate::jose;
use crate::params::TokenParams;
use crate::policy::Policy;
use crate::store::StoreError;

/// Whether a refusal came after the client proved its credential.
pub(crate) fn proves_identity(error: &EndpointError) -> bool {
    match error {
        EndpointError::Client(error) => error.proves_identity(),
        _ => false,
    }
}

/// The client id a request claims, by Basic credentials, `client_id`, or a
/// client assertion's `iss` (read unverified: it is evidence, not identity).
pub(crate) fn claimed_client(authorization: Option<&str>, params: &TokenParams) -> Option<String> {
    let from_basic = authorization.and_then(client_auth::basic_client_id);
    let from_assertion = || {
        params.get("client_assertion").and_then(|assertion| {
            // Only `iss` is read: the rest is not built, and the assertion
            // is verified, whole, by client authentication.
            #[derive(serde::Deserialize)]
            struct Issuer {
                iss: String,
            }
            jose::insecure_payload::<Issuer>(assertion).map(|issuer| issuer.iss)
        })
    };
    from_basic.or_else(|| params.get("client_id").map(str::to_owned)).or_else(from_assertion)
}

/// A client address as refusals are counted by: the address grouped as
/// the throttle groups it (an IP address without the port, which changes
/// with every connection; an IPv6 address by its /64), so that the counts
/// and the budgets name the same origins.
fn grouped(client_address: Option<&str>) -> Option<String> {
    let address = client_address?;
    Some(throttle::Origin::of(Some(address)).map_or_else(|| clip(address), |origin| origin.to_string()))
}

/// The door of every endpoint that authenticates its client: failed
/// attempts throttled per address and client, refusals of unauthenticated
/// requests counted together until the next aggregate event.
pub struct Guard {
    /// Failed client authentication, counted per address and client.
    throttle: throttle::Throttle,
    /// Refusals of unauthenticated requests since the last aggregate event.
    refusals: refusals::Refusals,
    refusal_settings: RefusalSettings,
    /// The proxies whose forwarded client address is believed.
    trusted_proxies: Vec<IpAddr>,
}

/// The throttle budget that wrong admin credentials spend: no agent id holds
/// a space, so it is no client's.
const ADMIN_CREDENTIAL: &str = "admin credential";

impl Guard {
    /// A guard with these limits, believing the client address that
    /// `trusted_proxies` forward (`Forwarded`, `X-Forwarded-For`) when a
    /// request comes from one of them; from anyone else those headers are
    /// ignored.
    pub fn new(
        throttle: ThrottleSettings,
        refusals: RefusalSettings,
        trusted_proxies: Vec<IpAddr>,
        clock: Arc<dyn Clock>,
    ) -> Guard {
        Guard {
            throttle: throttle::Throttle::new(throttle, clock),
            refusals: refusals::Refusals::new(refusals),
            refusal_settings: refusals,
            trusted_proxies,
        }
    }

    /// The same guard believing the addresses these proxies forward.
    pub fn with_trusted_proxies(self, trusted_proxies: Vec<IpAddr>) -> Guard {
        Guard { trusted_proxies, ..self }
    }

    /// The proxies whose forwarded client address is believed.
    pub fn trusted_proxies(&self) -> &[std::net::IpAddr] {
        &self.trusted_proxies
    }

    /// Counts an introspection or revocation request refused before it
    /// could be read, as [`crate::grant::refuse`] does for the token endpoint.
    pub fn refuse_unread(&self, context: &Context, error: RequestError, client_address: Option<&str>) -> EndpointError {
        let error = EndpointError::Request(error);
        self.count_refusal(context, &error, None, client_address);
        error
    }

    /// Counts the refusal of a request whose client never authenticated,
    /// for the next aggregate event and the metrics.
    pub(crate) fn count_refusal(
        &self,
        context: &Context,
        error: &EndpointError,
        claimed_client: Option<String>,
        client_address: Option<&str>,
    ) {
        let reason = error.reason();
        tracing::debug!(target: "baton::audit", %reason, ?claimed_client, ?client_address, "unauthenticated request refused");
        context.metrics.count_unauthenticated(reason.clone());
        // A registered client stays named even past the bound on keys, so
        // that junk cannot hide guessing against it.
        let registered = claimed_client.as_deref().is_some_and(|id| context.policy().inventory().client(id).is_some());
        self.refusals.count(
            context.now(),
            reason.into_owned(),
            (claimed_client, registered),
            grouped(client_address),
            1,
        );
    }

    /// Writes the refusals of unauthenticated requests counted since the
    /// last call as one audit event, `action` [`refusals::UNAUTHENTICATED_REFUSALS`],
    /// and answers how many it counts (0: nothing to write). Counts whose
    /// event cannot be written are kept for the next call. A background task
    /// calls it every interval and at shutdown; tests call it at will.
    pub async fn flush_refusals(&self, context: &Context) -> Result<u64, StoreError> {
        let Some(taken) = self.refusals.take() else { return Ok(0) };
        let total = taken.total();
        match context.record(taken.event(context.now())).await {
            Ok(()) => Ok(total),
            Err(error) => {
                self.refusals.restore(taken);
                Err(error)
            }
        }
    }

    /// How often [`Guard::flush_refusals`] is to be called.
    pub fn refusal_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.refusal_settings.interval)
    }

    /// Whether `admitted`, the check of an admin credential presented from
    /// `client_address`, passes: under a throttle of its own per address,
    /// as client secrets are (DESIGN.md §12), so that guessing it stays
    /// slow. Past the address's budget it is refused unchecked.
    pub fn admit_admin(
        &self,
        client_address: Option<&str>,
        admitted: impl FnOnce() -> bool,
    ) -> Result<bool, Throttled> {
        let Some(origin) = throttle::Origin::of(client_address) else { return Ok(admitted()) };
        self.throttle.check(origin, ADMIN_CREDENTIAL)?;
        let admitted = admitted();
        if admitted {
            self.throttle.succeeded(origin, ADMIN_CREDENTIAL);
        } else {
            self.throttle.failed(origin, ADMIN_CREDENTIAL);
        }
        Ok(admitted)
    }

    /// Forgets the failed authentications whose budget is whole again, so
    /// that the throttle's memory follows recent failures only.
    pub fn prune_throttle(&self) {
        self.throttle.prune();
    }

    /// Authenticates the client of a request to the introspection or
    /// revocation endpoint, throttled by `client_address`; a refusal is
    /// counted as unauthenticated.
    pub async fn authenticate_client(
        &self,
        context: &Context,
        authorization: Option<&str>,
        params: &TokenParams,
        client_address: Option<&str>,
    ) -> Result<AuthenticatedClient, EndpointError> {
        self.authenticate_client_in(context, &context.policy(), authorization, params, client_address).await
    }

    /// [`Guard::authenticate_client`] against the request's policy snapshot.
    pub(crate) async fn authenticate_client_in(
        &self,
        context: &Context,
        policy: &Policy,
        authorization: Option<&str>,
        params: &TokenParams,
        client_address: Option<&str>,
    ) -> Result<AuthenticatedClient, EndpointError> {
        let claimed = claimed_client(authorization, params);
        let outcome =
            self.authenticate_in(context, policy, authorization, params, claimed.as_deref(), client_address).await;
        if let Err(error) = &outcome {
            let claimed = claimed.as_deref().map(clip);
            if proves_identity(error) {
                // The agent is known for certain: an event of its own, and
                // a refusal that cannot be recorded is not answered either.
                let evidence = Evidence {
                    action: CLIENT_AUTHENTICATION.into(),
                    agent: claimed.clone(),
                    claimed_client: claimed,
                    ..Evidence::default()
                };
                context.record(evidence.refused(context.now(), error, client_address.map(str::to_owned))).await?;
            } else {
                self.count_refusal(context, error, claimed, client_address);
            }
        }
        outcome
    }

    /// Authenticates a client unless its address failed too often, and
    /// counts a failure against the address (DESIGN.md §12). A throttled
    /// request is refused before its credential is checked, so that
    /// guessing stays slow whatever the guess. The budgets are the caller's
    /// own address's: an agent elsewhere is never locked out by them.
    pub(crate) async fn authenticate_in(
        &self,
        context: &Context,
        policy: &Policy,
        authorization: Option<&str>,
        params: &TokenParams,
        claimed: Option<&str>,
        client_address: Option<&str>,
    ) -> Result<AuthenticatedClient, EndpointError> {
        /// A throttle key's claimed client is cut shorter than evidence is:
        /// it only tells budgets apart.
        const KEY_BYTES: usize = 64;
        let Some(origin) = throttle::Origin::of(client_address) else {
            return self.verify_client(context, policy, authorization, params).await;
        };
        let claimed = prefix(claimed.unwrap_or_default(), KEY_BYTES);
        self.throttle.check(origin, claimed)?;
        let outcome = self.verify_client(context, policy, authorization, params).await;
        match &outcome {
            Ok(_) => self.throttle.succeeded(origin, claimed),
            Err(EndpointError::Client(error)) if error.spends_budget() => self.throttle.failed(origin, claimed),
            Err(_) => {}
        }
        outcome
    }

    /// Checks the credentials a request presents.
    async fn verify_client(
        &self,
        context: &Context,
        policy: &Policy,
        authorization: Option<&str>,
        params: &TokenParams,
    ) -> Result<AuthenticatedClient, EndpointError> {
        let presented = client_auth::presented(CredentialFields {
            authorization,
            client_id: params.get("client_id"),
            client_secret: params.get("client_secret"),
            client_assertion_type: params.get("client_assertion_type"),
            client_assertion: params.get("client_assertion"),
        })?;
        let authenticator = client_auth::ClientAuthenticator {
            inventory: policy.inventory(),
            replay: context.stores.replay.as_ref(),
            issuer: &context.settings.issuer,
            clock: context.clock.as_ref(),
            leeway: context.settings.clock_leeway_seconds,
        };
        Ok(client_auth::authenticate(&presented, &authenticator).await?)
    }
}
