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
//! Governor keeps the arithmetic; its state lives in `Failures`, a store
//! that can be asked without being charged (governor itself always charges)
//! and that holds a bounded number of keys.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};

use crate::clock::Clock;
pub use crate::error::Throttled;

/// The default failures per minute from one address for one claimed client.
pub const DEFAULT_PER_CLIENT: u32 = 10;
/// The default failures per minute from one address, whatever the client.
pub const DEFAULT_PER_ADDRESS: u32 = 100;

/// The default number of keys each budget keeps at each grouping of
/// addresses. Past it, the keys whose budget is whole again are forgotten
/// at once; if that frees none, a failure is counted under the address's
/// network (IPv4 /24, IPv6 /48) instead, so that memory stays bounded
/// whatever number of addresses a hostile network uses and guessing is
/// still slowed.
pub const MAX_KEYS: usize = 100_000;

/// How often the budgets that are whole again are forgotten, besides when
/// a table is full.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(5);

/// How long a success from an address for a client keeps that pair clear
/// of the address's budget: the minute the budgets are counted over.
const PROVEN_FOR: Duration = Duration::from_secs(60);

/// How many failed client authentications are allowed, per minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// Failures per minute from one address for one claimed client.
    pub per_client: u32,
    /// Failures per minute from one address, whatever client it claims.
    pub per_address: u32,
    /// Most keys a budget keeps at each grouping of addresses.
    pub max_keys: usize,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        ThrottleSettings { per_client: DEFAULT_PER_CLIENT, per_address: DEFAULT_PER_ADDRESS, max_keys: MAX_KEYS }
    }
}

/// Where a request comes from, as throttling and the refusal counts see
/// it: the IP address without the port (which every connection changes),
/// an IPv6 address by its /64 (what one host is usually given). Its
/// [`Origin::network`] groups it wider, for when the tables are full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Origin {
    network: IpAddr,
    prefix: u8,
}

impl Origin {
    /// The origin of `address`, as the HTTP layer gives it (`ip:port`, or
    /// an IP address forwarded by a trusted proxy). The server always gives
    /// one; a caller without one (the library called directly) is not
    /// throttled, since one budget shared by every such caller would let
    /// any of them lock the others out.
    pub(crate) fn of(address: Option<&str>) -> Option<Origin> {
        let text = address?;
        let ip = text.parse::<SocketAddr>().map(|socket| socket.ip()).or_else(|_| text.parse::<IpAddr>()).ok()?;
        Some(Origin::of_ip(ip))
    }

    /// The origin of a peer's IP address (an IPv4 client on a dual-stack
    /// socket as the IPv4 address it is).
    pub(crate) fn of_ip(ip: IpAddr) -> Origin {
        match ip {
            IpAddr::V4(v4) => Origin::v4(v4, 32),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Origin::v4(v4, 32),
                None => Origin::v6(v6, 64),
            },
        }
    }

    /// The network the origin is in: IPv4 /24, IPv6 /48.
    pub(crate) fn network(self) -> Origin {
        match self.network {
            IpAddr::V4(v4) => Origin::v4(v4, self.prefix.min(24)),
            IpAddr::V6(v6) => Origin::v6(v6, self.prefix.min(48)),
        }
    }

    fn v4(ip: Ipv4Addr, prefix: u8) -> Origin {
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        Origin { network: IpAddr::V4(Ipv4Addr::from(u32::from(ip) & mask)), prefix }
    }

    fn v6(ip: Ipv6Addr, prefix: u8) -> Origin {
        let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
        Origin { network: IpAddr::V6(Ipv6Addr::from(u128::from(ip) & mask)), prefix }
    }
}

/// An IPv4 host as its address, anything wider as `network/prefix`.
impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.network {
            IpAddr::V4(_) if self.prefix == 32 => write!(f, "{}", self.network),
            _ => write!(f, "{}/{}", self.network, self.prefix),
        }
    }
}

/// The failed-authentication budgets of a broker, each kept per host and,
/// for failures that found the host table full, per network.
pub(crate) struct Throttle {
    per_client: [Budget<(Origin, String)>; 2],
    per_address: [Budget<Origin>; 2],
    /// When each (origin, client) last authenticated: such a pair is not
    /// refused for its address's budget, so that junk from a shared
    /// address cannot lock out an agent that keeps proving its secret.
    proven: Mutex<HashMap<(Origin, String), Duration>>,
    max_keys: usize,
    clock: BrokerClock,
}

/// One budget at one grouping of addresses, and a handle on its keys.
struct Budget<K: Hash + Eq + Clone> {
    limiter: Limiter<K>,
    failures: Failures<K>,
}

type Limiter<K> = RateLimiter<Charge<K>, Failures<K>, BrokerClock, NoOpMiddleware<Duration>>;

impl<K: Hash + Eq + Clone> Budget<K> {
    fn new(per_minute: u32, max_keys: usize, clock: &BrokerClock) -> Budget<K> {
        let quota = Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN));
        let failures = Failures::new(max_keys);
        Budget { limiter: RateLimiter::new(quota, failures.clone(), clock.clone()), failures }
    }

    /// How long `key` must wait; asking costs nothing.
    fn wait(&self, key: K, now: Duration) -> Option<Duration> {
        self.limiter.check_key(&Charge::peek(key)).err().map(|not_until| not_until.wait_time_from(now))
    }

    /// Spends one failure of `key` if the table has room for it, forgetting
    /// whole budgets first when it has none; whether it was counted.
    fn spend(&self, key: K) -> bool {
        if !self.failures.has_room_for(&key) {
            self.prune();
            if !self.failures.has_room_for(&key) {
                return false;
            }
        }
        // A budget already spent stays spent: the refusal itself is the answer.
        let _ = self.limiter.check_key(&Charge::spend(key));
        true
    }

    fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

impl Throttle {
    pub(crate) fn new(settings: ThrottleSettings, clock: Arc<dyn Clock>) -> Throttle {
        let clock = BrokerClock(clock);
        let max_keys = settings.max_keys.max(1);
        let per_client = || Budget::new(settings.per_client, max_keys, &clock);
        let per_address = || Budget::new(settings.per_address, max_keys, &clock);
        Throttle {
            per_client: [per_client(), per_client()],
            per_address: [per_address(), per_address()],
            proven: Mutex::new(HashMap::new()),
            max_keys,
            clock,
        }
    }

    /// Whether `origin` may try to authenticate as `client` now; it costs
    /// nothing.
    pub(crate) fn check(&self, origin: Origin, client: &str) -> Result<(), Throttled> {
        let now = governor::clock::Clock::now(&self.clock);
        let [host, network] = &self.per_client;
        let mut waits =
            vec![host.wait((origin, client.to_owned()), now), network.wait((origin.network(), client.to_owned()), now)];
        if !self.is_proven(origin, client, now) {
            let [host, network] = &self.per_address;
            waits.extend([host.wait(origin, now), network.wait(origin.network(), now)]);
        }
        match waits.into_iter().flatten().max() {
            None => Ok(()),
            Some(wait) => Err(throttled_after(wait)),
        }
    }

    /// Spends one failure from both budgets of `origin`: under the host
    /// while its table has room, else under its network.
    pub(crate) fn failed(&self, origin: Origin, client: &str) {
        let [host, network] = &self.per_address;
        let by_address = host.spend(origin) || network.spend(origin.network());
        let [host, network] = &self.per_client;
        let by_client = host.spend((origin, client.to_owned())) || network.spend((origin.network(), client.to_owned()));
        if !(by_address && by_client) {
            // Only when more networks than the bound failed within a minute.
            tracing::debug!(%origin, "throttle tables full: a failed authentication went uncounted");
        }
    }

    /// Records that `origin` authenticated as `client` now.
    pub(crate) fn succeeded(&self, origin: Origin, client: &str) {
        let now = governor::clock::Clock::now(&self.clock);
        let mut proven = self.proven();
        let key = (origin, client.to_owned());
        if proven.len() >= self.max_keys && !proven.contains_key(&key) {
            proven.retain(|_, at| now.saturating_sub(*at) < PROVEN_FOR);
        }
        // Full of recent successes: this one only keeps the ordinary rules.
        if proven.len() < self.max_keys || proven.contains_key(&key) {
            proven.insert(key, now);
        }
    }

    fn is_proven(&self, origin: Origin, client: &str, now: Duration) -> bool {
        let key = (origin, client.to_owned());
        self.proven().get(&key).is_some_and(|at| now.saturating_sub(*at) < PROVEN_FOR)
    }

    fn proven(&self) -> MutexGuard<'_, HashMap<(Origin, String), Duration>> {
        // Plain times: a panic elsewhere cannot leave the map half-written.
        self.proven.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets the keys whose budget is whole again and the successes older
    /// than a minute, so that memory follows the last minute only.
    pub(crate) fn prune(&self) {
        self.per_address.iter().for_each(Budget::prune);
        self.per_client.iter().for_each(Budget::prune);
        let now = governor::clock::Clock::now(&self.clock);
        let mut proven = self.proven();
        proven.retain(|_, at| now.saturating_sub(*at) < PROVEN_FOR);
        proven.shrink_to_fit();
    }

    /// How many keys the budgets hold now, host and network tables apart.
    #[cfg(test)]
    pub(crate) fn keys(&self) -> (usize, usize) {
        let [client_host, client_network] = &self.per_client;
        let [address_host, address_network] = &self.per_address;
        (
            client_host.limiter.len() + address_host.limiter.len(),
            client_network.limiter.len() + address_network.limiter.len(),
        )
    }
}

/// A refusal that asks the client to wait `wait`.
fn throttled_after(wait: Duration) -> Throttled {
    // Whole seconds, never 0: `Retry-After` is in seconds (RFC 9110 §10.2.3).
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    Throttled { retry_after: seconds.max(1) }
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
/// written only when a [`Charge`] spends, at most `max_keys` keys. Clones
/// share the one table.
pub(crate) struct Failures<K> {
    states: Arc<Mutex<HashMap<K, Nanos>>>,
    max_keys: usize,
}

impl<K> Clone for Failures<K> {
    fn clone(&self) -> Self {
        Failures { states: self.states.clone(), max_keys: self.max_keys }
    }
}

impl<K: Hash + Eq> Failures<K> {
    fn new(max_keys: usize) -> Failures<K> {
        Failures { states: Arc::new(Mutex::new(HashMap::new())), max_keys }
    }

    fn states(&self) -> MutexGuard<'_, HashMap<K, Nanos>> {
        // The map holds plain numbers: a panic elsewhere cannot leave it half-written.
        self.states.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn has_room_for(&self, key: &K) -> bool {
        let states = self.states();
        states.len() < self.max_keys || states.contains_key(key)
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
        // The bound holds even if another request filled the last place
        // since `has_room_for` was asked.
        if charge.spend && (states.len() < self.max_keys || states.contains_key(&charge.key)) {
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
        throttle_keeping(per_client, per_address, MAX_KEYS)
    }

    fn throttle_keeping(per_client: u32, per_address: u32, max_keys: usize) -> (Throttle, Arc<FixedClock>) {
        let clock = Arc::new(FixedClock::new(UnixTime(1_000_000)));
        (Throttle::new(ThrottleSettings { per_client, per_address, max_keys }, clock.clone()), clock)
    }

    fn origin(address: &str) -> Origin {
        Origin::of(Some(address)).unwrap()
    }

    #[test]
    fn failures_spend_the_budget_and_checks_do_not() {
        let (throttle, clock) = throttle(3, 100);
        let here = origin("10.0.0.1:4000");
        for _ in 0..50 {
            assert_eq!(throttle.check(here, "booker"), Ok(()), "asking costs nothing");
        }
        for _ in 0..3 {
            throttle.failed(here, "booker");
        }
        let refused = throttle.check(here, "booker").unwrap_err();
        assert!((1..=20).contains(&refused.retry_after), "{refused:?}");
        // Another port of the same host is the same origin; another client or host is not.
        assert!(throttle.check(origin("10.0.0.1:5000"), "booker").is_err());
        assert_eq!(throttle.check(here, "planner"), Ok(()));
        assert_eq!(throttle.check(origin("10.0.0.2:4000"), "booker"), Ok(()));
        clock.advance(60);
        assert_eq!(throttle.check(here, "booker"), Ok(()), "the budget refills");
    }

    #[test]
    fn an_address_that_fails_for_many_clients_is_throttled_for_all() {
        let (throttle, _) = throttle(10, 5);
        let here = origin("192.0.2.7:1");
        for index in 0..5 {
            throttle.failed(here, &format!("client-{index}"));
        }
        assert!(throttle.check(here, "never-tried").is_err());
        assert_eq!(throttle.check(origin("192.0.2.8:1"), "never-tried"), Ok(()));
    }

    #[test]
    fn a_pair_that_proved_its_secret_is_not_refused_for_its_address() {
        let (throttle, _) = throttle(3, 5);
        let shared = origin("192.0.2.7:1");
        throttle.succeeded(shared, "booker");
        for index in 0..50 {
            throttle.failed(shared, &format!("junk-{index}"));
        }
        assert!(throttle.check(shared, "planner").is_err(), "the address's budget is spent");
        assert_eq!(throttle.check(shared, "booker"), Ok(()), "but not for the pair that proved itself");
        // Its own budget still holds: guessing at it from there stays slow.
        for _ in 0..3 {
            throttle.failed(shared, "booker");
        }
        assert!(throttle.check(shared, "booker").is_err());
    }

    #[test]
    fn a_proof_expires_after_a_minute() {
        let (throttle, clock) = throttle(3, 5);
        let shared = origin("192.0.2.7:1");
        throttle.succeeded(shared, "booker");
        clock.advance(61);
        for index in 0..5 {
            throttle.failed(shared, &format!("junk-{index}"));
        }
        assert!(throttle.check(shared, "booker").is_err());
    }

    #[test]
    fn pruning_forgets_whole_budgets() {
        let (throttle, clock) = throttle(2, 1000);
        for index in 0..100u32 {
            throttle.failed(origin(&format!("10.1.{}.{}:1", index / 256, index % 256)), "x");
        }
        throttle.succeeded(origin("10.9.9.9:1"), "x");
        assert_eq!(throttle.keys(), (200, 0));
        clock.advance(120);
        throttle.prune();
        assert_eq!(throttle.keys(), (0, 0));
        assert!(throttle.proven().is_empty());
    }

    #[test]
    fn a_full_table_prunes_then_counts_by_network_and_never_stops_counting() {
        let (throttle, clock) = throttle_keeping(2, 1000, 4);
        // Four hosts fill the host tables.
        for host in 1..=4 {
            throttle.failed(origin(&format!("10.0.0.{host}:1")), "booker");
        }
        assert_eq!(throttle.keys(), (8, 0));
        // A fifth host's failures are counted under its /24, so guessing
        // from it is still throttled.
        let fifth = origin("10.0.0.5:1");
        throttle.failed(fifth, "booker");
        assert_eq!(throttle.keys(), (8, 2));
        throttle.failed(fifth, "booker");
        assert!(throttle.check(fifth, "booker").is_err(), "counted under 10.0.0.0/24");
        assert!(throttle.check(origin("10.0.1.1:1"), "booker").is_ok(), "another network is not");
        // Whole budgets are forgotten when a table is full, in the call.
        clock.advance(120);
        let sixth = origin("10.0.2.6:1");
        throttle.failed(sixth, "booker");
        throttle.failed(sixth, "booker");
        assert_eq!(throttle.keys(), (2, 2), "the old keys were dropped for the new host");
        assert!(throttle.check(sixth, "booker").is_err());
        assert!(throttle.check(origin("10.0.2.7:1"), "booker").is_ok(), "by host again");
        // Neither table grows past its bound, whatever the number of addresses.
        for index in 0..1000u32 {
            throttle.failed(origin(&format!("10.{}.{}.1:1", index / 256, index % 256)), "booker");
        }
        let (hosts, networks) = throttle.keys();
        assert!(hosts <= 8 && networks <= 8, "{hosts} {networks}");
    }

    #[test]
    fn origins_are_hosts_within_networks() {
        assert_eq!(Origin::of(Some("[2001:db8::1]:443")), Origin::of(Some("[2001:db8::ffff]:80")));
        assert_ne!(Origin::of(Some("[2001:db8::1]:443")), Origin::of(Some("[2001:db8:0:1::1]:443")));
        assert_eq!(Origin::of(Some("[::ffff:10.0.0.1]:1")), Origin::of(Some("10.0.0.1:2")));
        assert_eq!(Origin::of(Some("2001:db8::1")), Origin::of(Some("[2001:db8::2]:1")), "forwarded, no port");
        assert_eq!((Origin::of(None), Origin::of(Some("not an address"))), (None, None));
        assert_eq!(origin("10.0.0.1:2").to_string(), "10.0.0.1");
        assert_eq!(origin("10.0.0.1:2").network().to_string(), "10.0.0.0/24");
        assert_eq!(origin("[2001:db8:1:2:3::1]:1").to_string(), "2001:db8:1:2::/64");
        assert_eq!(origin("[2001:db8:1:2:3::1]:1").network().to_string(), "2001:db8:1::/48");
        assert_eq!(origin("[2001:db8:1:2:3::1]:1").network(), origin("[2001:db8:1:ff::1]:1").network());
    }
}
