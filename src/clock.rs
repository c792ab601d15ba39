//! Time, injected. The only place in the crate that reads the wall clock.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};

use serde::{Deserialize, Serialize};

/// Seconds since the Unix epoch, as JWT `NumericDate` (RFC 7519 §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixTime(pub i64);

impl UnixTime {
    /// This time plus `seconds`, saturating rather than overflowing.
    pub fn plus(self, seconds: i64) -> UnixTime {
        UnixTime(self.0.saturating_add(seconds))
    }

    /// Seconds from `earlier` to this time (negative when `earlier` is later).
    pub fn seconds_since(self, earlier: UnixTime) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    /// The calendar date (UTC) this time falls on.
    pub fn date(self) -> Option<time::Date> {
        time::OffsetDateTime::from_unix_timestamp(self.0).ok().map(|moment| moment.date())
    }
}

impl fmt::Display for UnixTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match time::OffsetDateTime::from_unix_timestamp(self.0)
            .ok()
            .and_then(|moment| moment.format(&time::format_description::well_known::Rfc3339).ok())
        {
            Some(text) => f.write_str(&text),
            None => write!(f, "{}", self.0),
        }
    }
}

/// Microseconds since the Unix epoch: the instant a token was issued or a
/// principal cut off, finer than [`UnixTime`] so that a deprovisioning, a
/// reinstatement and the next issuance keep their order within one second.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixMicros(pub i64);

impl UnixMicros {
    /// Later than any instant: a token "issued" then is killed by a block only.
    pub const MAX: UnixMicros = UnixMicros(i64::MAX);

    /// The first microsecond of `second`: the instant of a token that only
    /// says its issue second (conservative: a cut-off in that second kills it).
    pub fn start_of(second: UnixTime) -> UnixMicros {
        UnixMicros(second.0.saturating_mul(MICROS))
    }

    /// The last microsecond of `second`: a cut-off recorded in whole seconds,
    /// which killed every token of that second.
    pub fn end_of(second: UnixTime) -> UnixMicros {
        UnixMicros(second.0.saturating_mul(MICROS).saturating_add(MICROS - 1))
    }

    /// The whole second this instant falls in.
    pub fn second(self) -> UnixTime {
        UnixTime(self.0.div_euclid(MICROS))
    }
}

const MICROS: i64 = 1_000_000;

/// A source of the current time.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> UnixTime;

    /// The current instant, in microseconds. By default the first
    /// microsecond of [`Clock::now`].
    fn now_micros(&self) -> UnixMicros {
        UnixMicros::start_of(self.now())
    }
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one sanctioned wall-clock read
    fn now(&self) -> UnixTime {
        UnixTime(time::OffsetDateTime::now_utc().unix_timestamp())
    }

    #[allow(clippy::disallowed_methods)] // the one sanctioned wall-clock read
    fn now_micros(&self) -> UnixMicros {
        let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000;
        UnixMicros(i64::try_from(nanos).unwrap_or(i64::MAX))
    }
}

/// A clock that stands still until moved; for tests and deterministic tools.
///
/// Its seconds stand still, but each reading of [`Clock::now_micros`] is one
/// microsecond after the one before (within the second shown), so that what
/// happens in order on it stays ordered: a deprovisioning, then an issuance
/// in the "same" second.
#[derive(Debug)]
pub struct FixedClock {
    seconds: AtomicI64,
    ticks: AtomicI64,
}

impl FixedClock {
    /// A clock showing `at`.
    pub fn new(at: UnixTime) -> Self {
        FixedClock { seconds: AtomicI64::new(at.0), ticks: AtomicI64::new(0) }
    }

    /// Moves the clock forward by `seconds`.
    pub fn advance(&self, seconds: i64) {
        self.seconds.fetch_add(seconds, Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> UnixTime {
        UnixTime(self.seconds.load(Ordering::SeqCst))
    }

    fn now_micros(&self) -> UnixMicros {
        let tick = self.ticks.fetch_add(1, Ordering::SeqCst).clamp(0, MICROS - 1);
        UnixMicros(UnixMicros::start_of(self.now()).0.saturating_add(tick))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_clock_moves_only_when_told() {
        let clock = FixedClock::new(UnixTime(1_000));
        assert_eq!(clock.now(), UnixTime(1_000));
        clock.advance(30);
        assert_eq!(clock.now(), UnixTime(1_030));
    }

    #[test]
    fn fixed_clock_instants_stay_ordered_within_its_second() {
        let clock = FixedClock::new(UnixTime(1_000));
        let first = clock.now_micros();
        let second = clock.now_micros();
        assert!(first < second);
        assert_eq!((first.second(), second.second()), (UnixTime(1_000), UnixTime(1_000)));
        assert_eq!(UnixMicros::end_of(UnixTime(1)), UnixMicros(1_999_999));
        assert_eq!(UnixMicros::start_of(UnixTime(-1)).second(), UnixTime(-1));
    }

    #[test]
    fn displays_as_rfc3339() {
        assert_eq!(UnixTime(0).to_string(), "1970-01-01T00:00:00Z");
    }
}
