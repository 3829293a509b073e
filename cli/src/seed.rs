//! Seeding a brand through the ports, for backends without a bulk path (the aws backend):
//! one offer, then the locations in batches of the port's limit.

use bulklink_core::domain::{BrandId, Location, LocationId, Offer, OfferId};
use bulklink_core::{Ports, StoreResult};
use bulklink_sqlite::SeededBrand;

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
