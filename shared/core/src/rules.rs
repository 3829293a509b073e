//! Standing rules: following a location's changes, and how far an offer's links are from
//! its rule.

use serde::Serialize;
use tracing::info;

pub use crate::domain::Drift;
use crate::domain::{
    DriftWatch, Event, LinkOutcome, LinkedBy, LocationFilter, LocationId, OfferEvent, OfferId,
    OfferRule, WatchedRule, WebhookMessage,
};
use crate::error::{StoreError, StoreResult};
use crate::ports::Ports;

/// Locations per read while counting drift.
const DRIFT_PAGE: usize = 1_000;

/// Reads every location of the rule's brand (whatever its status) and whether it carries
/// the offer, and counts what disagrees with the rule. Every link of an offer is to a
/// location of its brand (a deleted location's links go with it), so this sees them all.
pub async fn drift(ports: &Ports, rule: &OfferRule) -> StoreResult<Drift> {
    let mut drift = Drift::default();
    let mut cursor = None;
    loop {
        let page = ports
            .catalog
            .page_brand_locations(rule.brand_id, None, cursor.as_ref(), DRIFT_PAGE)
            .await?;
        let locations = ports
            .catalog
            .locations_matching(rule.brand_id, &page.items, &LocationFilter::default())
            .await?;
        let ids: Vec<_> = locations.iter().map(|l| l.id).collect();
        let links = ports.catalog.existing_links(rule.offer_id, &ids).await?;
        for (location, link) in locations.iter().zip(links) {
            match (rule.wants(location), link.is_some()) {
                (true, false) => drift.missing += 1,
                (false, true) => drift.extra += 1,
                _ => {}
            }
        }
        cursor = page.next;
        if cursor.is_none() {
            return Ok(drift);
        }
    }
}

/// Brings the live offers of the location's brand that have a rule (`OfferSchedule::live_at`)
/// to what their rules want of the location as it is now (`Catalog::follow_rule`: each decision written on condition
/// that the location has not changed since read; a link made counts on the offer). What
/// each rule's offer did; nothing for a location that no longer exists (its deletion took
/// its links with it).
pub async fn follow(
    ports: &Ports,
    location: LocationId,
) -> StoreResult<Vec<(OfferId, LinkOutcome)>> {
    let Some(found) = ports.catalog.get_location(location).await? else {
        return Ok(Vec::new());
    };
    let mut done = Vec::new();
    let now = ports.clock.now();
    for rule in ports.catalog.brand_rules(found.brand_id).await? {
        // An offer outside its schedule carries nothing: its start reconciles, its end
        // unlinks every location.
        let live = match ports.catalog.get_offer(rule.offer_id).await? {
            Some(offer) => offer.schedule.is_none_or(|s| s.live_at(now)),
            None => false,
        };
        if !live {
            continue;
        }
        let outcome = ports
            .catalog
            .follow_rule(&rule, &[location], LinkedBy::Rule)
            .await?
            .pop()
            .ok_or_else(|| StoreError::internal("following a rule produced no outcome"))?;
        done.push((rule.offer_id, outcome));
    }
    Ok(done)
}

/// Rules read per page by the drift watch.
const WATCH_PAGE: usize = 100;

/// What one drift watch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftReport {
    /// Rules whose drift was counted (rules of offers outside their schedule are not).
    pub watched: u64,
    /// Of those, rules whose links disagree with them.
    pub drifting: u64,
    /// `offer.drift` events sent: stretches of drift that outlasted the settling time.
    pub notified: u64,
}

/// The drift watch: counts every live offer's drift from its rule (`drift`, which reads the
/// whole brand) and notes since when it has been non-zero; a stretch that has lasted
/// `settle` is told to the brand's subscriptions as one `offer.drift` event (sent to the
/// webhook queue before it is noted, its id derived from the offer and the stretch's
/// start, so a watch cut off in between sends the same event again, which the deliverer
/// takes once). Drift back to zero ends the stretch; a rule set again starts afresh.
/// Concurrent watches are safe: each note is conditional on the one read.
pub async fn watch_drift(ports: &Ports, settle: std::time::Duration) -> StoreResult<DriftReport> {
    let settle = chrono::Duration::from_std(settle).unwrap_or(chrono::Duration::MAX);
    let mut report = DriftReport::default();
    let mut cursor = None;
    loop {
        let page = ports
            .catalog
            .page_rules(cursor.as_ref(), WATCH_PAGE)
            .await?;
        for WatchedRule { rule, watch } in page.items {
            let now = ports.clock.now();
            let live = match ports.catalog.get_offer(rule.offer_id).await? {
                Some(offer) => offer.schedule.is_none_or(|s| s.live_at(now)),
                None => false,
            };
            // An offer outside its schedule carries nothing on purpose: no drift.
            let drift = if live {
                report.watched += 1;
                drift(ports, &rule).await?
            } else {
                Drift::default()
            };
            if drift.is_none() {
                if watch != DriftWatch::default() {
                    ports
                        .catalog
                        .note_drift(&rule, watch, DriftWatch::default())
                        .await?;
                }
                continue;
            }
            report.drifting += 1;
            let (since, watch) = match watch.since {
                Some(since) => (since, watch),
                None => {
                    let started = DriftWatch {
                        since: Some(now),
                        notified: false,
                    };
                    if !ports.catalog.note_drift(&rule, watch, started).await? {
                        continue;
                    }
                    (now, started)
                }
            };
            if watch.notified || now - since < settle {
                continue;
            }
            let event = OfferEvent::drift(rule.brand_id, rule.offer_id, since, drift, now);
            ports
                .webhook_queue
                .send(&WebhookMessage::Event(Event::Offer(event)))
                .await?;
            let told = DriftWatch {
                since: Some(since),
                notified: true,
            };
            ports.catalog.note_drift(&rule, watch, told).await?;
            info!(offer_id = %rule.offer_id, missing = drift.missing, extra = drift.extra, %since, "offer.drift sent");
            report.notified += 1;
        }
        cursor = page.next;
        if cursor.is_none() {
            return Ok(report);
        }
    }
}
