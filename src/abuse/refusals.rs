//! Refusals of requests whose client never authenticated, counted in memory
//! and written as one audit event per interval (DESIGN.md §12): junk cannot
//! grow the state or push real evidence out of a capped audit stream, and it
//! still shows, by reason, claimed client and address.
//!
//! Every decision about an authenticated agent is still an event of its own
//! (DESIGN.md §2.7); only requests that named no one Baton could verify are
//! counted here.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::clock::UnixTime;
use crate::store::{AuditDecision, AuditEvent, RefusalCount};

/// The `action` of the event that stands for an interval's refusals.
pub const UNAUTHENTICATED_REFUSALS: &str = "unauthenticated_refusals";

/// How refusals of unauthenticated requests are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusalSettings {
    /// Seconds between two aggregate events.
    pub interval: u64,
    /// Most distinct (reason, claimed client, address) keys in one interval;
    /// past it, requests are counted by reason alone, or by reason and
    /// claimed client when that client is registered.
    pub max_keys: usize,
}

/// The default seconds between two aggregate events.
pub const DEFAULT_INTERVAL: u64 = 60;
/// The default bound on distinct keys per interval.
pub const DEFAULT_MAX_KEYS: usize = 200;

impl Default for RefusalSettings {
    fn default() -> Self {
        RefusalSettings { interval: DEFAULT_INTERVAL, max_keys: DEFAULT_MAX_KEYS }
    }
}

/// What one count is kept under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    reason: String,
    claimed_client: Option<String>,
    client_address: Option<String>,
    overflow: bool,
}

/// How many refusals a key counts, and whether its claimed client is one
/// the inventory registers (so that it stays named past the bound).
#[derive(Debug, Clone, Copy, Default)]
struct Count {
    count: u64,
    registered: bool,
}

/// The counts since the last event.
#[derive(Debug, Default)]
struct Tally {
    since: Option<UnixTime>,
    counts: HashMap<Key, Count>,
}

/// The counts of the interval under way.
pub(crate) struct Refusals {
    max_keys: usize,
    tally: Mutex<Tally>,
}

/// An interval's counts, taken out to be written.
pub(crate) struct Taken {
    since: UnixTime,
    counts: HashMap<Key, Count>,
}

impl Refusals {
    pub(crate) fn new(settings: RefusalSettings) -> Refusals {
        Refusals { max_keys: settings.max_keys, tally: Mutex::new(Tally::default()) }
    }

    fn tally(&self) -> MutexGuard<'_, Tally> {
        // Counts only: a panic elsewhere cannot leave them inconsistent.
        self.tally.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts `count` refusals for `reason`, from `client_address` (an
    /// origin as the throttle groups it), claiming `claimed_client` (already
    /// clipped, and whether the inventory registers it).
    pub(crate) fn count(
        &self,
        now: UnixTime,
        reason: String,
        (claimed_client, registered): (Option<String>, bool),
        client_address: Option<String>,
        count: u64,
    ) {
        let mut tally = self.tally();
        tally.since.get_or_insert(now);
        let key = Key { reason, claimed_client, client_address, overflow: false };
        let key = if tally.counts.len() < self.max_keys || tally.counts.contains_key(&key) {
            key
        } else {
            Key::overflow(key, registered)
        };
        add(&mut tally, key, Count { count, registered });
    }

    /// Takes the interval's counts, leaving an empty tally; `None` when
    /// nothing was refused.
    pub(crate) fn take(&self) -> Option<Taken> {
        let mut tally = self.tally();
        let since = tally.since.take()?;
        Some(Taken { since, counts: std::mem::take(&mut tally.counts) })
    }

    /// Puts counts back whose event could not be written, to go with the
    /// next one; overflow counts stay overflow counts.
    pub(crate) fn restore(&self, taken: Taken) {
        let mut tally = self.tally();
        // The keys that had a place first, so that they get one again.
        let (overflow, placed): (Vec<_>, Vec<_>) = taken.counts.into_iter().partition(|(key, _)| key.overflow);
        for (key, count) in placed.into_iter().chain(overflow) {
            let key = if key.overflow || tally.counts.len() < self.max_keys || tally.counts.contains_key(&key) {
                key
            } else {
                Key::overflow(key, count.registered)
            };
            add(&mut tally, key, count);
        }
        tally.since = Some(tally.since.map_or(taken.since, |since| since.min(taken.since)));
    }
}

impl Key {
    /// The key a count goes under past the bound: random client ids or
    /// addresses cannot grow memory, so only the reason is kept, and the
    /// claimed client when the inventory registers it (bounded by the
    /// inventory), so that junk cannot hide guessing against a real agent.
    fn overflow(key: Key, registered: bool) -> Key {
        let claimed_client = if registered { key.claimed_client } else { None };
        Key { reason: key.reason, claimed_client, client_address: None, overflow: true }
    }
}

fn add(tally: &mut Tally, key: Key, count: Count) {
    let total = tally.counts.entry(key).or_default();
    total.count = total.count.saturating_add(count.count);
    total.registered |= count.registered;
}

impl Taken {
    /// How many refusals it counts.
    pub(crate) fn total(&self) -> u64 {
        self.counts.values().fold(0, |total, count| total.saturating_add(count.count))
    }

    /// The audit event that stands for these refusals, largest counts first.
    pub(crate) fn event(&self, now: UnixTime) -> AuditEvent {
        let mut refusals: Vec<RefusalCount> = self
            .counts
            .iter()
            .map(|(key, count)| RefusalCount {
                reason: key.reason.clone(),
                claimed_client: key.claimed_client.clone(),
                client_address: key.client_address.clone(),
                overflow: key.overflow,
                count: count.count,
            })
            .collect();
        refusals.sort_by(|one, other| {
            other.count.cmp(&one.count).then_with(|| {
                (&one.reason, &one.claimed_client, &one.client_address).cmp(&(
                    &other.reason,
                    &other.claimed_client,
                    &other.client_address,
                ))
            })
        });
        AuditEvent {
            time: now,
            decision: AuditDecision::Refused,
            reason: Some(format!(
                "{} requests refused before their client authenticated, since {}",
                self.total(),
                self.since
            )),
            action: UNAUTHENTICATED_REFUSALS.into(),
            subject: None,
            agent: None,
            chain: Vec::new(),
            target: None,
            scopes_asked: None,
            scopes_granted: None,
            jti: None,
            parent_jti: None,
            expires_at: None,
            iat_micros: None,
            dpop_jkt: None,
            rules: Vec::new(),
            claimed_client: None,
            client_address: None,
            by: None,
            approval: None,
            refusals,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unregistered(client: &str) -> (Option<String>, bool) {
        (Some(client.to_owned()), false)
    }

    #[test]
    fn counts_are_bounded_by_key_and_add_up() {
        let refusals = Refusals::new(RefusalSettings { interval: 60, max_keys: 3 });
        assert!(refusals.take().is_none(), "nothing refused, nothing to write");
        for index in 0..100 {
            let client = unregistered(&format!("random-{index}"));
            refusals.count(UnixTime(10 + index), "client_unknown".into(), client, Some("10.0.0.1".into()), 1);
        }
        refusals.count(UnixTime(500), "client_unknown".into(), unregistered("random-0"), Some("10.0.0.1".into()), 2);
        let taken = refusals.take().unwrap();
        assert_eq!(taken.total(), 102);
        let event = taken.event(UnixTime(600));
        assert_eq!(event.refusals.len(), 4, "three keys and the overflow: {:?}", event.refusals);
        let overflow = event.refusals.iter().find(|count| count.overflow).unwrap();
        assert_eq!((overflow.count, overflow.claimed_client.as_ref()), (97, None));
        assert_eq!(event.refusals.iter().map(|count| count.count).sum::<u64>(), 102);
        assert!(event.reason.as_deref().unwrap().starts_with("102 requests"), "{:?}", event.reason);
        assert_eq!(event.action, UNAUTHENTICATED_REFUSALS);
        assert!(refusals.take().is_none(), "taken means gone");
    }

    #[test]
    fn past_the_bound_a_registered_client_stays_named() {
        let refusals = Refusals::new(RefusalSettings { interval: 60, max_keys: 2 });
        for index in 0..50 {
            let junk = unregistered(&format!("random-{index}"));
            refusals.count(UnixTime(10), "client_unknown".into(), junk, Some(format!("10.0.0.{index}")), 1);
        }
        for index in 0..7 {
            let booker = (Some("booker".to_owned()), true);
            refusals.count(UnixTime(10), "client_wrong_secret".into(), booker, Some(format!("10.0.1.{index}")), 1);
        }
        let event = refusals.take().unwrap().event(UnixTime(600));
        let guesses: Vec<_> = event.refusals.iter().filter(|count| count.reason == "client_wrong_secret").collect();
        assert_eq!(guesses.len(), 1, "{:?}", event.refusals);
        let guesses = guesses[0];
        assert_eq!((guesses.claimed_client.as_deref(), guesses.overflow, guesses.count), (Some("booker"), true, 7));
        assert_eq!(guesses.client_address, None, "the address is dropped");
        let junk = event.refusals.iter().find(|count| count.overflow && count.reason == "client_unknown").unwrap();
        assert_eq!((junk.claimed_client.as_ref(), junk.count), (None, 48));
        assert_eq!(event.refusals.len(), 4, "two keys and two overflow rows: {:?}", event.refusals);
    }

    #[test]
    fn counts_that_could_not_be_written_go_with_the_next_event() {
        let refusals = Refusals::new(RefusalSettings::default());
        refusals.count(UnixTime(10), "not_form".into(), (None, false), None, 5);
        let taken = refusals.take().unwrap();
        refusals.count(UnixTime(20), "not_form".into(), (None, false), None, 1);
        refusals.restore(taken);
        let again = refusals.take().unwrap();
        assert_eq!((again.total(), again.since), (6, UnixTime(10)));
    }

    #[test]
    fn restored_overflow_counts_stay_overflow_counts() {
        let refusals = Refusals::new(RefusalSettings { interval: 60, max_keys: 1 });
        refusals.count(UnixTime(10), "not_form".into(), (None, false), Some("10.0.0.1".into()), 1);
        for reason in 0..20 {
            refusals.count(UnixTime(10), format!("reason-{reason}"), unregistered("x"), Some("10.0.0.2".into()), 3);
        }
        refusals.count(UnixTime(10), "client_wrong_secret".into(), (Some("booker".into()), true), None, 2);
        let taken = refusals.take().unwrap();
        let mut before = taken.event(UnixTime(20)).refusals;
        // The new interval has room: still, what was overflow stays so.
        refusals.restore(taken);
        let taken = refusals.take().unwrap();
        let mut after = taken.event(UnixTime(20)).refusals;
        before.sort_by(|one, other| one.reason.cmp(&other.reason));
        after.sort_by(|one, other| one.reason.cmp(&other.reason));
        assert_eq!(before, after);
        // Another key took the one place meanwhile: what no longer fits
        // folds into the overflow, a registered client still named.
        refusals.count(UnixTime(30), "too_large".into(), (None, false), Some("10.0.0.3".into()), 1);
        refusals.restore(taken);
        let again = refusals.take().unwrap().event(UnixTime(40)).refusals;
        let not_form = again.iter().find(|count| count.reason == "not_form").unwrap();
        assert!(not_form.overflow && not_form.client_address.is_none(), "{again:?}");
        let booker = again.iter().find(|count| count.reason == "client_wrong_secret").unwrap();
        assert_eq!((booker.claimed_client.as_deref(), booker.overflow), (Some("booker"), true));
        assert_eq!(again.iter().map(|count| count.count).sum::<u64>(), 1 + 1 + 60 + 2);
        assert_eq!(again.iter().filter(|count| !count.overflow).count(), 1, "{again:?}");
    }
}
