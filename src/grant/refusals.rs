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
    /// past it, requests are counted by reason alone.
    pub max_keys: usize,
}

impl Default for RefusalSettings {
    fn default() -> Self {
        RefusalSettings { interval: 60, max_keys: 200 }
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

/// The counts since the last event.
#[derive(Debug, Default)]
struct Tally {
    since: Option<UnixTime>,
    counts: HashMap<Key, u64>,
}

/// The counts of the interval under way.
pub(crate) struct Refusals {
    max_keys: usize,
    tally: Mutex<Tally>,
}

/// An interval's counts, taken out to be written.
pub(crate) struct Taken {
    since: UnixTime,
    counts: HashMap<Key, u64>,
}

impl Refusals {
    pub(crate) fn new(settings: RefusalSettings) -> Refusals {
        Refusals { max_keys: settings.max_keys, tally: Mutex::new(Tally::default()) }
    }

    fn tally(&self) -> MutexGuard<'_, Tally> {
        // Counts only: a panic elsewhere cannot leave them inconsistent.
        self.tally.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts `count` refusals for `reason`, from `client_address` (an IP
    /// address, no port), claiming `claimed_client` (already clipped).
    pub(crate) fn count(
        &self,
        now: UnixTime,
        reason: String,
        claimed_client: Option<String>,
        client_address: Option<String>,
        count: u64,
    ) {
        let mut tally = self.tally();
        tally.since.get_or_insert(now);
        let key = Key { reason, claimed_client, client_address, overflow: false };
        let key = if tally.counts.len() < self.max_keys || tally.counts.contains_key(&key) {
            key
        } else {
            // Random client ids or addresses cannot grow memory: past the
            // bound, only the reason is kept.
            Key { reason: key.reason, claimed_client: None, client_address: None, overflow: true }
        };
        let total = tally.counts.entry(key).or_default();
        *total = total.saturating_add(count);
    }

    /// Takes the interval's counts, leaving an empty tally; `None` when
    /// nothing was refused.
    pub(crate) fn take(&self) -> Option<Taken> {
        let mut tally = self.tally();
        let since = tally.since.take()?;
        Some(Taken { since, counts: std::mem::take(&mut tally.counts) })
    }

    /// Puts counts back whose event could not be written, to go with the
    /// next one.
    pub(crate) fn restore(&self, taken: Taken) {
        for (key, count) in taken.counts {
            self.count(taken.since, key.reason, key.claimed_client, key.client_address, count);
        }
        let mut tally = self.tally();
        tally.since = Some(tally.since.map_or(taken.since, |since| since.min(taken.since)));
    }
}

impl Taken {
    /// How many refusals it counts.
    pub(crate) fn total(&self) -> u64 {
        self.counts.values().fold(0, |total, count| total.saturating_add(*count))
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
                count: *count,
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
            rules: Vec::new(),
            claimed_client: None,
            client_address: None,
            approval: None,
            refusals,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_bounded_by_key_and_add_up() {
        let refusals = Refusals::new(RefusalSettings { interval: 60, max_keys: 3 });
        assert!(refusals.take().is_none(), "nothing refused, nothing to write");
        for index in 0..100 {
            let client = Some(format!("random-{index}"));
            refusals.count(UnixTime(10 + index), "client_unknown".into(), client, Some("10.0.0.1".into()), 1);
        }
        refusals.count(UnixTime(500), "client_unknown".into(), Some("random-0".into()), Some("10.0.0.1".into()), 2);
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
    fn counts_that_could_not_be_written_go_with_the_next_event() {
        let refusals = Refusals::new(RefusalSettings::default());
        refusals.count(UnixTime(10), "not_form".into(), None, None, 5);
        let taken = refusals.take().unwrap();
        refusals.count(UnixTime(20), "not_form".into(), None, None, 1);
        refusals.restore(taken);
        let again = refusals.take().unwrap();
        assert_eq!((again.total(), again.since), (6, UnixTime(10)));
    }
}
