//! The per-worker write budget (DESIGN §5.5): a governor GCRA limiter every catalog write
//! takes a permit from. Permits are taken in small batches (about 20 ms of budget) so the
//! achieved rate is smooth at one-second resolution, and the bucket starts empty so a
//! fleet of freshly started workers does not burst past the budget.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// Catalog writes per location: the Link put (or an unlink's mark) and the location update.
pub use shared::estimate::WRITES_PER_LOCATION;
/// Budget slices per second a worker spends its permits in.
const SLICES_PER_SEC: f64 = 50.0;

pub struct WriteLimiter {
    limiter: DefaultDirectRateLimiter,
    locations_per_batch: usize,
}

impl WriteLimiter {
    /// A limiter of `writes_per_sec` (may be fractional, e.g. 0.5); `None` if not positive.
    pub fn new(writes_per_sec: f64) -> Option<Self> {
        if !(writes_per_sec.is_finite() && writes_per_sec > 0.0) {
            return None;
        }
        let locations_per_batch = ((writes_per_sec / WRITES_PER_LOCATION as f64 / SLICES_PER_SEC)
            .floor() as usize)
            .max(1);
        let burst = NonZeroU32::new(locations_per_batch as u32 * WRITES_PER_LOCATION)?;
        let quota =
            Quota::with_period(Duration::from_secs_f64(1.0 / writes_per_sec))?.allow_burst(burst);
        let limiter = RateLimiter::direct(quota);
        // Start empty: a full bucket would let every worker burst at start-up.
        let _ = limiter.check_n(burst);
        Some(WriteLimiter {
            limiter,
            locations_per_batch,
        })
    }

    /// How many locations to link per permit acquisition.
    pub fn locations_per_batch(&self) -> usize {
        self.locations_per_batch
    }

    /// Waits until the writes for `locations` locations are within budget.
    pub async fn acquire(&self, locations: usize) {
        let writes = (locations.min(self.locations_per_batch) as u32) * WRITES_PER_LOCATION;
        if let Some(n) = NonZeroU32::new(writes) {
            // `n` never exceeds the burst, so capacity is always sufficient.
            let _ = self.limiter.until_n_ready(n).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_about_twenty_milliseconds_of_budget() {
        assert_eq!(
            WriteLimiter::new(10_000.0).unwrap().locations_per_batch(),
            100
        );
        assert_eq!(
            WriteLimiter::new(1_000.0).unwrap().locations_per_batch(),
            10
        );
        assert_eq!(WriteLimiter::new(3.0).unwrap().locations_per_batch(), 1);
    }

    #[test]
    fn no_budget_means_no_limiter() {
        assert!(WriteLimiter::new(0.0).is_none());
        assert!(WriteLimiter::new(f64::NAN).is_none());
    }

    #[tokio::test]
    async fn a_fresh_limiter_starts_empty() {
        let limiter = WriteLimiter::new(2.0).unwrap();
        let started = std::time::Instant::now();
        limiter.acquire(1).await;
        // Two writes at two per second: about a second, never an instant burst.
        assert!(started.elapsed() >= Duration::from_millis(900));
    }
}
