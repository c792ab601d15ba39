//! Throttling of failed client authentication (RFC 6749 §5.2 `invalid_client`,
//! DESIGN.md §12), so that guessing a secret is slow.
//!
//! Failures are counted with governor's GCRA per (client address, claimed
//! client) and per client address. Once either budget is spent, further
//! attempts from that address (for that client, or at all) are refused
//! before the credential is even checked, until the budget refills. The key
//! is always the caller's own address: nobody can lock an agent out from
//! elsewhere, and the same agent from another address still succeeds. Only
//! failures spend the budget; a success leaves it as it was.
//!
//! Governor keeps the arithmetic; its state lives in [`Failures`], a store
//! that can be asked without being charged (governor itself always charges)
//! and that holds a bounded number of keys.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};

use crate::clock::Clock;

/// Most keys each budget keeps. Past it, failures under new keys go
/// uncounted until [`Throttle::prune`] forgets spent ones: memory stays
/// bounded whatever number of addresses a hostile network uses, and no
/// legitimate caller is ever throttled for someone else's failures.
pub const MAX_KEYS: usize = 100_000;

/// How many failed client authentications are allowed, per minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// Failures per minute from one address for one claimed client.
    pub per_client: u32,
    /// Failures per minute from one address, whatever client it claims.
    pub per_address: u32,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        ThrottleSettings { per_client: 10, per_address: 100 }
    }
}

/// A request refused unchecked because its address failed too often.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many failed client authentications from this address; retry in {retry_after} s")]
pub struct Throttled {
    /// Seconds until an attempt may be made again (`Retry-After`).
    pub retry_after: u64,
}

/// Where a request comes from, as throttling sees it: the IP address
/// (without the port, which every connection changes), an IPv6 address by
/// its /64 (what one host is usually given).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Origin(IpAddr);

impl Origin {
    /// The origin of `address`, as the HTTP layer gives it (`ip:port`).
    /// The server always gives one; a caller without one (the library
    /// called directly) is not throttled, since one budget shared by every
    /// such caller would let any of them lock the others out.
    pub(crate) fn of(address: Option<&str>) -> Option<Origin> {
        let text = address?;
        let ip = text.parse::<SocketAddr>().map(|socket| socket.ip()).or_else(|_| text.parse::<IpAddr>()).ok()?;
        Some(Origin(match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
            },
        }))
    }
}

/// The failed-authentication budgets of a broker.
pub(crate) struct Throttle {
    per_client: Limiter<(Origin, String)>,
    per_address: Limiter<Origin>,
    clock: BrokerClock,
}

type Limiter<K> = RateLimiter<Charge<K>, Failures<K>, BrokerClock, NoOpMiddleware<Duration>>;

impl Throttle {
    pub(crate) fn new(settings: ThrottleSettings, clock: Arc<dyn Clock>) -> Throttle {
        let clock = BrokerClock(clock);
        let quota = |per_minute: u32| Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN));
        Throttle {
            per_client: RateLimiter::new(quota(settings.per_client), Failures::default(), clock.clone()),
            per_address: RateLimiter::new(quota(settings.per_address), Failures::default(), clock.clone()),
            clock,
        }
    }

    /// Whether `origin` may try to authenticate as `client` now; it costs
    /// nothing.
    pub(crate) fn check(&self, origin: Origin, client: &str) -> Result<(), Throttled> {
        let now = governor::clock::Clock::now(&self.clock);
        let wait = |not_until: governor::NotUntil<Duration>| not_until.wait_time_from(now);
        let by_address = self.per_address.check_key(&Charge::peek(origin)).map_err(wait);
        let by_client = self.per_client.check_key(&Charge::peek((origin, client.to_owned()))).map_err(wait);
        match (by_address, by_client) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(wait), Ok(())) | (Ok(()), Err(wait)) => Err(Throttled::after(wait)),
            (Err(one), Err(other)) => Err(Throttled::after(one.max(other))),
        }
    }

    /// Spends one failure from both budgets of `origin`.
    pub(crate) fn failed(&self, origin: Origin, client: &str) {
        // A budget already spent stays spent: the refusal itself is the answer.
        let _ = self.per_address.check_key(&Charge::spend(origin));
        let _ = self.per_client.check_key(&Charge::spend((origin, client.to_owned())));
    }

    /// Forgets the keys whose budget is whole again, so that memory follows
    /// the failures of the last minute only.
    pub(crate) fn prune(&self) {
        self.per_address.retain_recent();
        self.per_address.shrink_to_fit();
        self.per_client.retain_recent();
        self.per_client.shrink_to_fit();
    }

    /// How many keys both budgets hold now.
    #[cfg(test)]
    pub(crate) fn keys(&self) -> usize {
        self.per_address.len() + self.per_client.len()
    }
}

impl Throttled {
    fn after(wait: Duration) -> Throttled {
        // Whole seconds, never 0: `Retry-After` is in seconds (RFC 9110 §10.2.3).
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Throttled { retry_after: seconds.max(1) }
    }
}

/// One key of a budget, and whether asking about it spends from it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Charge<K> {
    key: K,
    spend: bool,
}

impl<K> Charge<K> {
    fn peek(key: K) -> Charge<K> {
        Charge { key, spend: false }
    }

    fn spend(key: K) -> Charge<K> {
        Charge { key, spend: true }
    }
}

/// Governor's state (each key's theoretical arrival time) for one budget:
/// written only when a [`Charge`] spends, at most [`MAX_KEYS`] keys.
pub(crate) struct Failures<K> {
    states: Mutex<HashMap<K, Nanos>>,
}

impl<K> Default for Failures<K> {
    fn default() -> Self {
        Failures { states: Mutex::new(HashMap::new()) }
    }
}

impl<K> Failures<K> {
    fn states(&self) -> MutexGuard<'_, HashMap<K, Nanos>> {
        // The map holds plain numbers: a panic elsewhere cannot leave it half-written.
        self.states.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<K: Hash + Eq + Clone> StateStore for Failures<K> {
    type Key = Charge<K>;

    fn measure_and_replace<T, F, E>(&self, charge: &Charge<K>, decide: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut states = self.states();
        let (outcome, next) = decide(states.get(&charge.key).copied())?;
        if charge.spend && (states.len() < MAX_KEYS || states.contains_key(&charge.key)) {
            states.insert(charge.key.clone(), next);
        }
        Ok(outcome)
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<Charge<K>> for Failures<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        self.states().retain(|_, arrival| *arrival > drop_below);
    }

    fn shrink_to_fit(&self) {
        self.states().shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.states().len()
    }

    fn is_empty(&self) -> bool {
        self.states().is_empty()
    }
}

/// The broker's clock, as governor reads time: whole seconds are fine for
/// budgets counted per minute, and tests move it at will.
#[derive(Clone)]
pub(crate) struct BrokerClock(Arc<dyn Clock>);

impl governor::clock::Clock for BrokerClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.0.now().0).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{FixedClock, UnixTime};

    fn throttle(per_client: u32, per_address: u32) -> (Throttle, Arc<FixedClock>) {
        let clock = Arc::new(FixedClock::new(UnixTime(1_000_000)));
        (Throttle::new(ThrottleSettings { per_client, per_address }, clock.clone()), clock)
    }

    #[test]
    fn failures_spend_the_budget_and_checks_do_not() {
        let (throttle, clock) = throttle(3, 100);
        let here = Origin::of(Some("10.0.0.1:4000")).unwrap();
        for _ in 0..50 {
            assert_eq!(throttle.check(here, "booker"), Ok(()), "asking costs nothing");
        }
        for _ in 0..3 {
            throttle.failed(here, "booker");
        }
        let refused = throttle.check(here, "booker").unwrap_err();
        assert!((1..=20).contains(&refused.retry_after), "{refused:?}");
        // Another port of the same host is the same origin; another client or host is not.
        assert!(throttle.check(Origin::of(Some("10.0.0.1:5000")).unwrap(), "booker").is_err());
        assert_eq!(throttle.check(here, "planner"), Ok(()));
        assert_eq!(throttle.check(Origin::of(Some("10.0.0.2:4000")).unwrap(), "booker"), Ok(()));
        clock.advance(60);
        assert_eq!(throttle.check(here, "booker"), Ok(()), "the budget refills");
    }

    #[test]
    fn an_address_that_fails_for_many_clients_is_throttled_for_all() {
        let (throttle, _) = throttle(10, 5);
        let here = Origin::of(Some("192.0.2.7:1")).unwrap();
        for index in 0..5 {
            throttle.failed(here, &format!("client-{index}"));
        }
        assert!(throttle.check(here, "never-tried").is_err());
        assert_eq!(throttle.check(Origin::of(Some("192.0.2.8:1")).unwrap(), "never-tried"), Ok(()));
    }

    #[test]
    fn pruning_forgets_whole_budgets_and_keys_are_capped() {
        let (throttle, clock) = throttle(2, 1000);
        for index in 0..100u32 {
            throttle.failed(Origin::of(Some(&format!("10.1.{}.{}:1", index / 256, index % 256))).unwrap(), "x");
        }
        assert_eq!(throttle.keys(), 200);
        clock.advance(120);
        throttle.prune();
        assert_eq!(throttle.keys(), 0);
        let failures = Failures::<u32>::default();
        for key in 0..u32::try_from(MAX_KEYS).unwrap() + 10 {
            let _ = failures.measure_and_replace(&Charge::spend(key), |_| Ok::<_, ()>(((), Nanos::from(1u64))));
        }
        assert_eq!(ShrinkableKeyedStateStore::len(&failures), MAX_KEYS);
    }

    #[test]
    fn origins_are_hosts() {
        assert_eq!(Origin::of(Some("[2001:db8::1]:443")), Origin::of(Some("[2001:db8::ffff]:80")));
        assert_ne!(Origin::of(Some("[2001:db8::1]:443")), Origin::of(Some("[2001:db8:0:1::1]:443")));
        assert_eq!(Origin::of(Some("[::ffff:10.0.0.1]:1")), Origin::of(Some("10.0.0.1:2")));
        assert_eq!((Origin::of(None), Origin::of(Some("not an address"))), (None, None));
    }
}
