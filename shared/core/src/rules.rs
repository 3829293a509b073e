//! Standing rules: following a location's changes, and how far an offer's links are from
//! its rule.

use serde::{Deserialize, Serialize};

use crate::domain::{LinkOutcome, LinkedBy, LocationFilter, LocationId, OfferId, OfferRule};
use crate::error::{StoreError, StoreResult};
use crate::ports::Ports;

/// Locations per read while counting drift.
const DRIFT_PAGE: usize = 1_000;

/// The offer's links against its rule, counted exactly at the time of reading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Drift {
    /// Active locations the rule matches that do not carry the offer.
    pub missing: u64,
    /// Locations carrying the offer that the rule does not want (closed, or not matching).
    pub extra: u64,
}

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
