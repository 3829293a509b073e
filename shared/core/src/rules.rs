//! How far an offer's links are from its standing rule.

use serde::{Deserialize, Serialize};

use crate::domain::{LocationFilter, OfferRule};
use crate::error::StoreResult;
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
