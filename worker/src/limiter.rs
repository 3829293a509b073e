//! The per-worker write budget (DESIGN §5.5), live and adaptive: a governor GCRA limiter
//! every catalog write takes a permit from, at a rate that follows two inputs.
//!
//! - The worker's **share** of the budget in force (`BudgetWatch`): an operator's change
//!   applies at once, up or down.
//! - **Throttling** (AIMD): when DynamoDB throttles a write, the rate halves (at most once
//!   per second, so one burst of throttles is one decrease); every second without one it
//!   climbs back by a twentieth of the share, up to the share. A budget set above what the
//!   table can take converges to what it takes instead of burning retries.
//!
//! Permits are taken in small batches (about 20 ms of budget) so the achieved rate is
//! smooth at one-second resolution, and a fresh bucket starts empty so a fleet of freshly
//! started workers does not burst past the budget.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// Catalog writes per location: the Link put (or an unlink's mark) and the location update.
pub use bulklink_core::estimate::WRITES_PER_LOCATION;
/// Budget slices per second a worker spends its permits in.
const SLICES_PER_SEC: f64 = 50.0;
/// A throttle halves the rate…
const DECREASE: f64 = 0.5;
/// …at most once per this long; the rate climbs only this long after the last decrease.
const CALM: Duration = Duration::from_secs(1);
/// Each calm second adds this share of the ceiling back…
const INCREASE_SHARE: f64 = 0.05;
/// …and only this share once the rate is near the one that was last throttled: the rate
/// approaches what the table took last time slowly, rather than overshooting it.
const CAREFUL_INCREASE_SHARE: f64 = 0.01;
/// "Near": this share of the last throttled rate.
const NEAR: f64 = 0.9;
/// The rate never drops below this share of the ceiling (nor below one location a second).
const FLOOR_SHARE: f64 = 0.02;

/// A governor limiter for one rate, and the batch size that goes with it.
struct Bucket {
    limiter: DefaultDirectRateLimiter,
    burst: u32,
}

impl Bucket {
    fn new(writes_per_sec: f64) -> Option<Arc<Self>> {
        if !(writes_per_sec.is_finite() && writes_per_sec > 0.0) {
            return None;
        }
        let locations = locations_per_batch(writes_per_sec);
        let burst = NonZeroU32::new(locations as u32 * WRITES_PER_LOCATION)?;
        let quota =
            Quota::with_period(Duration::from_secs_f64(1.0 / writes_per_sec))?.allow_burst(burst);
        let limiter = RateLimiter::direct(quota);
        // Start empty: a full bucket would let every worker burst at start-up.
        let _ = limiter.check_n(burst);
        Some(Arc::new(Bucket {
            limiter,
            burst: burst.get(),
        }))
    }
}

fn locations_per_batch(writes_per_sec: f64) -> usize {
    ((writes_per_sec / WRITES_PER_LOCATION as f64 / SLICES_PER_SEC).floor() as usize).max(1)
}

struct State {
    /// The worker's share of the budget: the most it may write; `None` = unlimited.
    ceiling: Option<f64>,
    /// The rate it writes at now (≤ ceiling).
    rate: Option<f64>,
    bucket: Option<Arc<Bucket>>,
    /// The rate the last throttle came at.
    throttled_at: Option<f64>,
    last_decrease: Option<Instant>,
    last_increase: Instant,
}

pub struct WriteLimiter {
    state: Mutex<State>,
}

impl WriteLimiter {
    /// A limiter at `share` writes per second (may be fractional, e.g. 0.5; `None` or not
    /// positive: unlimited until a share is set).
    pub fn new(share: Option<f64>) -> Self {
        let share = share.filter(|s| s.is_finite() && *s > 0.0);
        WriteLimiter {
            state: Mutex::new(State {
                ceiling: share,
                rate: share,
                bucket: share.and_then(Bucket::new),
                throttled_at: None,
                last_decrease: None,
                last_increase: Instant::now(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The rate this worker writes at now; `None` = unlimited.
    pub fn current_rate(&self) -> Option<f64> {
        self.state().rate
    }

    /// Applies a new share of the budget: the rate moves to it at once.
    pub fn set_share(&self, share: Option<f64>) {
        let share = share.filter(|s| s.is_finite() && *s > 0.0);
        let mut state = self.state();
        if state.ceiling == share {
            return;
        }
        state.ceiling = share;
        state.rate = share;
        state.throttled_at = None;
        state.last_decrease = None;
        state.last_increase = Instant::now();
        state.bucket = share.and_then(Bucket::new);
    }

    /// DynamoDB throttled a write: back off (multiplicative decrease).
    pub fn throttled(&self) {
        let mut state = self.state();
        let (Some(ceiling), Some(rate)) = (state.ceiling, state.rate) else {
            return;
        };
        let now = Instant::now();
        if state.last_decrease.is_some_and(|at| now - at < CALM) {
            return;
        }
        let floor = (ceiling * FLOOR_SHARE)
            .max(WRITES_PER_LOCATION as f64)
            .min(ceiling);
        let lowered = (rate * DECREASE).max(floor);
        state.throttled_at = Some(rate);
        state.last_decrease = Some(now);
        state.last_increase = now;
        if lowered < rate {
            state.rate = Some(lowered);
            state.bucket = Bucket::new(lowered);
        }
    }

    /// Additive increase: each calm second since the last change adds a twentieth of the
    /// ceiling, up to it.
    fn climb(state: &mut State) {
        let (Some(ceiling), Some(rate)) = (state.ceiling, state.rate) else {
            return;
        };
        let now = Instant::now();
        let calm_since = state
            .last_decrease
            .map_or(state.last_increase, |d| (d + CALM).max(state.last_increase));
        if rate >= ceiling || now < calm_since + CALM {
            return;
        }
        let seconds = (now - state.last_increase).as_secs_f64().floor();
        let step = match state.throttled_at {
            Some(throttled) if rate >= NEAR * throttled => CAREFUL_INCREASE_SHARE,
            _ => INCREASE_SHARE,
        };
        let raised = (rate + seconds * ceiling * step).min(ceiling);
        state.last_increase = now;
        state.rate = Some(raised);
        state.bucket = Bucket::new(raised);
    }

    /// How many locations to write per permit acquisition at the current rate (`usize::MAX`
    /// when unlimited).
    pub fn locations_per_batch(&self) -> usize {
        self.state().rate.map_or(usize::MAX, locations_per_batch)
    }

    /// Waits until the writes for `locations` locations are within budget.
    pub async fn acquire(&self, locations: usize) {
        let bucket = {
            let mut state = self.state();
            Self::climb(&mut state);
            state.bucket.clone()
        };
        let Some(bucket) = bucket else { return };
        let mut writes = locations as u64 * u64::from(WRITES_PER_LOCATION);
        // A batch sized for a faster rate is taken in pieces the current bucket holds.
        while writes > 0 {
            let n = writes.min(u64::from(bucket.burst)) as u32;
            if let Some(n) = NonZeroU32::new(n) {
                let _ = bucket.limiter.until_n_ready(n).await;
            }
            writes -= u64::from(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_about_twenty_milliseconds_of_budget() {
        assert_eq!(WriteLimiter::new(Some(10_000.0)).locations_per_batch(), 100);
        assert_eq!(WriteLimiter::new(Some(1_000.0)).locations_per_batch(), 10);
        assert_eq!(WriteLimiter::new(Some(3.0)).locations_per_batch(), 1);
    }

    #[test]
    fn no_budget_means_no_limit() {
        assert_eq!(WriteLimiter::new(None).current_rate(), None);
        assert_eq!(WriteLimiter::new(Some(f64::NAN)).current_rate(), None);
        assert_eq!(WriteLimiter::new(Some(0.0)).current_rate(), None);
    }

    #[tokio::test]
    async fn a_fresh_limiter_starts_empty() {
        let limiter = WriteLimiter::new(Some(2.0));
        let started = std::time::Instant::now();
        limiter.acquire(1).await;
        // Two writes at two per second: about a second, never an instant burst.
        assert!(started.elapsed() >= Duration::from_millis(900));
    }

    #[test]
    fn throttling_halves_the_rate_once_per_second_down_to_a_floor() {
        let limiter = WriteLimiter::new(Some(1_000.0));
        limiter.throttled();
        assert_eq!(limiter.current_rate(), Some(500.0));
        // A burst of throttles within the second is one decrease.
        limiter.throttled();
        assert_eq!(limiter.current_rate(), Some(500.0));
        for _ in 0..20 {
            limiter.state().last_decrease = Some(Instant::now() - CALM);
            limiter.throttled();
        }
        assert_eq!(limiter.current_rate(), Some(20.0));
    }

    #[test]
    fn calm_seconds_climb_back_additively_up_to_the_share() {
        let limiter = WriteLimiter::new(Some(1_000.0));
        limiter.throttled();
        // Three seconds ago, one calm second passed since: + 2 × 5% of the share.
        {
            let mut state = limiter.state();
            state.last_decrease = Some(Instant::now() - Duration::from_secs(3));
            state.last_increase = Instant::now() - Duration::from_secs(2);
            WriteLimiter::climb(&mut state);
        }
        assert_eq!(limiter.current_rate(), Some(600.0));
        {
            let mut state = limiter.state();
            state.last_increase = Instant::now() - Duration::from_secs(60);
            WriteLimiter::climb(&mut state);
        }
        assert_eq!(limiter.current_rate(), Some(1_000.0));
    }

    #[test]
    fn near_the_last_throttled_rate_the_climb_slows() {
        let limiter = WriteLimiter::new(Some(1_000.0));
        limiter.throttled();
        let mut state = limiter.state();
        // Throttled at 1,000: from 900 on, 1% of the share a second instead of 5%.
        state.rate = Some(900.0);
        state.last_decrease = Some(Instant::now() - Duration::from_secs(3));
        state.last_increase = Instant::now() - Duration::from_secs(1);
        WriteLimiter::climb(&mut state);
        assert_eq!(state.rate, Some(910.0));
    }

    #[test]
    fn a_new_share_applies_at_once() {
        let limiter = WriteLimiter::new(Some(1_000.0));
        limiter.throttled();
        limiter.set_share(Some(250.0));
        assert_eq!(limiter.current_rate(), Some(250.0));
        limiter.set_share(None);
        assert_eq!(limiter.current_rate(), None);
        assert_eq!(limiter.locations_per_batch(), usize::MAX);
    }
}
