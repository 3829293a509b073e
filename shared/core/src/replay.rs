//! Replays by time (`POST /webhooks/{id}/replay`): the range a replay may ask for, and what
//! it sends — every event of the subscription's brand kept in the range that the
//! subscription wants, in order of occurrence, each as its delivery to that subscription
//! (its original `webhook-id`).

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use crate::domain::{Delivery, Subscription, EVENT_RETENTION};
use crate::error::StoreResult;
use crate::ports::Webhooks;

/// Why a range cannot be replayed (the API's 422), or `Ok`.
pub fn check_range(
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let kept_from =
        now - chrono::Duration::from_std(EVENT_RETENTION).unwrap_or(chrono::Duration::zero());
    if since >= until {
        return Err(format!(
            "since ({}) must come before until ({})",
            rfc3339(since),
            rfc3339(until)
        ));
    }
    if since < kept_from {
        return Err(format!(
            "since ({}) is older than the {} days events are kept: give {} or later",
            rfc3339(since),
            EVENT_RETENTION.as_secs() / 86_400,
            rfc3339(kept_from)
        ));
    }
    if until > now {
        return Err(format!(
            "until ({}) is in the future: give {} or earlier",
            rfc3339(until),
            rfc3339(now)
        ));
    }
    Ok(())
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// How many deliveries a replay of `[since, until)` to `subscription` sends: its wanted
/// events, a window's `job.progress` events counted once.
pub async fn count(
    webhooks: &dyn Webhooks,
    subscription: &Subscription,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> StoreResult<u64> {
    let mut deliveries = HashSet::new();
    let mut cursor = None;
    loop {
        let page = webhooks
            .page_brand_events(subscription.brand_id, since, until, cursor.as_ref(), 1_000)
            .await?;
        for event in page.items.iter().filter(|e| subscription.wants(e)) {
            deliveries.insert(Delivery::new(event, subscription, now).id);
        }
        cursor = page.next;
        if cursor.is_none() {
            return Ok(deliveries.len() as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_range_is_replayable_only_inside_the_thirty_days_kept_and_up_to_now() {
        let now = at("2026-12-31T12:00:00Z");
        assert!(check_range(at("2026-12-02T12:00:00Z"), now, now).is_ok());
        let old = check_range(at("2026-12-01T11:59:59Z"), now, now).unwrap_err();
        assert!(old.contains("older than the 30 days"), "{old}");
        let future =
            check_range(at("2026-12-30T00:00:00Z"), at("2027-01-01T00:00:00Z"), now).unwrap_err();
        assert!(future.contains("in the future"), "{future}");
        let backwards =
            check_range(at("2026-12-30T00:00:00Z"), at("2026-12-29T00:00:00Z"), now).unwrap_err();
        assert!(backwards.contains("must come before"), "{backwards}");
    }
}
