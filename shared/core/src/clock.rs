//! The one clock bulklink reads the time of day through.
//!
//! Every stored time — a job's `createdAt`, an Idempotency-Key's expiry, a delivery's next
//! attempt, a token's `exp` check, the sweeper's ages — comes from a [`Clock`] that the
//! process is built with: [`Clock::system`] in production, a clock set to a chosen instant
//! in tests. Nothing else in production code reads the system time (clippy's
//! `disallowed-methods`, configured in `clippy.toml`, refuses `SystemTime::now`,
//! `Utc::now` and `Local::now` outside this module). Elapsed durations (timeouts, rates)
//! use the monotonic `Instant`, which is no time of day and is not this module's concern.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};

/// A source of the time of day. Cheap to clone; clones read the same time.
#[derive(Clone, Debug, Default)]
pub struct Clock(Source);

#[derive(Clone, Debug, Default)]
enum Source {
    /// The machine's time.
    #[default]
    System,
    /// The machine's time moved by a fixed amount: it runs at the machine's pace from
    /// another instant.
    Shifted(Duration),
    /// Stands still until it is set or advanced (milliseconds since the epoch).
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// The machine's time: what every production process uses.
    pub fn system() -> Self {
        Clock(Source::System)
    }

    /// A clock that reads `at` now and then runs at the machine's pace (a process started
    /// "on another day": timeouts and visibility windows still pass as they do in production).
    pub fn starting_at(at: DateTime<Utc>) -> Self {
        Clock(Source::Shifted(at - system_now()))
    }

    /// The machine's time moved by `by` (negative: into the past).
    pub fn shifted(by: Duration) -> Self {
        Clock(Source::Shifted(by))
    }

    /// A clock that stands at `at` until [`Clock::set`] or [`Clock::advance`] moves it.
    pub fn manual(at: DateTime<Utc>) -> Self {
        Clock(Source::Manual(Arc::new(AtomicI64::new(
            at.timestamp_millis(),
        ))))
    }

    /// The time of day, to the millisecond (what both backends store).
    pub fn now(&self) -> DateTime<Utc> {
        match &self.0 {
            Source::System => truncate_ms(system_now()),
            Source::Shifted(by) => truncate_ms(system_now() + *by),
            Source::Manual(ms) => from_ms(ms.load(Ordering::SeqCst)),
        }
    }

    /// [`Clock::now`] in milliseconds since the epoch.
    pub fn now_ms(&self) -> i64 {
        self.now().timestamp_millis()
    }

    /// [`Clock::now`] in whole seconds since the epoch (token claims, TTL attributes).
    pub fn now_secs(&self) -> i64 {
        self.now().timestamp()
    }

    /// Moves a manual clock to `at`. Panics on any other clock: only a test sets the time.
    pub fn set(&self, at: DateTime<Utc>) {
        match &self.0 {
            Source::Manual(ms) => ms.store(at.timestamp_millis(), Ordering::SeqCst),
            _ => panic!("only a manual clock can be set"),
        }
    }

    /// Moves a manual clock forward by `by`. Panics on any other clock.
    pub fn advance(&self, by: Duration) {
        match &self.0 {
            Source::Manual(ms) => {
                ms.fetch_add(by.num_milliseconds(), Ordering::SeqCst);
            }
            _ => panic!("only a manual clock can be advanced"),
        }
    }

    /// Whether this clock reads the machine's time unchanged.
    pub fn is_system(&self) -> bool {
        matches!(self.0, Source::System)
    }
}

/// The one place the machine's time of day is read.
#[allow(clippy::disallowed_methods)]
fn system_now() -> DateTime<Utc> {
    Utc::now()
}

fn truncate_ms(t: DateTime<Utc>) -> DateTime<Utc> {
    from_ms(t.timestamp_millis())
}

fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_stands_still_until_moved() {
        let at = Utc.with_ymd_and_hms(2031, 2, 3, 4, 5, 6).unwrap();
        let clock = Clock::manual(at);
        let copy = clock.clone();
        assert_eq!(clock.now(), at);
        copy.advance(Duration::seconds(90));
        assert_eq!(clock.now(), at + Duration::seconds(90));
        clock.set(at);
        assert_eq!(copy.now_ms(), at.timestamp_millis());
        assert_eq!(copy.now_secs(), at.timestamp());
    }

    #[test]
    fn a_clock_started_on_another_day_reads_that_day_and_runs() {
        let at = Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap();
        let clock = Clock::starting_at(at);
        let first = clock.now();
        assert!(first >= at && first - at < Duration::seconds(60), "{first}");
        assert!(!clock.is_system());
        let ahead = Clock::shifted(Duration::days(365));
        assert!(ahead.now() - Clock::system().now() > Duration::days(364));
    }

    #[test]
    #[should_panic(expected = "only a manual clock")]
    fn the_system_clock_cannot_be_set() {
        Clock::system().set(Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap());
    }
}
