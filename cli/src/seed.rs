//! Seeding a brand through the ports, for backends without a bulk path (the aws backend):
//! one offer, then the locations in batches of the port's limit.

use bulklink_core::domain::{BrandId, Location, LocationId, Offer, OfferId};
use bulklink_core::{Ports, StoreResult};
use bulklink_sqlite::{LinkStats, SeededBrand};

/// Most locations the catalog port creates in one call.
const BATCH: usize = 100;

pub async fn seed_brand(
    ports: &Ports,
    brand: BrandId,
    offer_name: &str,
    locations: u64,
) -> StoreResult<SeededBrand> {
    let offer = Offer {
        id: OfferId::new_random(),
        brand_id: brand,
        name: offer_name.to_owned(),
        locations_total: 0,
        schedule: None,
    };
    ports.catalog.create_offer(&offer).await?;
    let now = ports.clock.now();
    let all: Vec<Location> = (0..locations)
        .map(|n| {
            Location::new(
                LocationId::new_random(),
                brand,
                format!("{n} Main Street"),
                now,
            )
        })
        .collect();
    for batch in all.chunks(BATCH) {
        ports.catalog.create_locations(batch).await?;
    }
    Ok(SeededBrand {
        brand_id: brand,
        offer_id: offer.id,
        locations,
    })
}

/// What the catalog holds for a seeded offer and its brand, read through the ports: the
/// brand's locations (and how many carry an offer), the offer's links listed, and its
/// `locationsTotal`.
pub async fn link_stats(ports: &Ports, seeded: &SeededBrand) -> StoreResult<LinkStats> {
    let mut ids = Vec::new();
    let mut cursor = None;
    loop {
        let page = ports
            .catalog
            .page_brand_locations(seeded.brand_id, None, cursor.as_ref(), 1_000)
            .await?;
        ids.extend(page.items);
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    let mut with_offer = 0;
    for id in &ids {
        let location = ports.catalog.get_location(*id).await?;
        with_offer += u64::from(location.is_some_and(|l| l.has_offer));
    }
    let mut links = 0;
    let mut cursor = None;
    loop {
        let page = ports
            .catalog
            .page_offer_links(seeded.offer_id, cursor.as_ref(), 1_000)
            .await?;
        links += page.items.len() as u64;
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    let total = ports
        .catalog
        .get_offer(seeded.offer_id)
        .await?
        .map_or(0, |offer| offer.locations_total);
    Ok(LinkStats {
        brand_locations: ids.len() as u64,
        brand_locations_with_offer: with_offer,
        offer_links: links,
        offer_locations_total: total,
    })
}
