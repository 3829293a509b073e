//! Operator and test views of the embedded store that no port needs: bulk seeding, link
//! statistics, the write-rate histogram. Not part of the ports, so the AWS backend owes none.

use rusqlite::params;

use super::{sql, EmbeddedStore};
use crate::domain::{BrandId, OfferId};
use crate::error::StoreResult;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeededBrand {
    pub brand_id: BrandId,
    pub offer_id: OfferId,
    pub locations: u64,
}

/// What the catalog says about one offer and its brand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkStats {
    pub brand_locations: u64,
    pub brand_locations_with_offer: u64,
    pub offer_links: u64,
    pub offer_locations_total: u64,
}

impl EmbeddedStore {
    /// Creates an offer and `locations` v4-UUID locations for `brand` in one transaction.
    pub async fn seed_brand(
        &self,
        brand: BrandId,
        offer_name: &str,
        locations: u64,
    ) -> StoreResult<SeededBrand> {
        let offer = OfferId::new_random();
        let name = offer_name.to_owned();
        self.write(move |conn| {
            let tx = conn.savepoint().map_err(sql)?;
            tx.execute(
                "INSERT INTO offers (id, brand_id, name, locations_total) VALUES (?1, ?2, ?3, 0)",
                params![offer.to_string(), brand.to_string(), name],
            )
            .map_err(sql)?;
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO locations (id, brand_id, address, has_offer) VALUES (?1, ?2, ?3, 0)",
                    )
                    .map_err(sql)?;
                let brand = brand.to_string();
                for n in 0..locations {
                    let id = uuid::Uuid::new_v4();
                    insert
                        .execute(params![id.to_string(), brand, format!("{} Main Street, Store {n}", n + 1)])
                        .map_err(sql)?;
                }
            }
            tx.commit().map_err(sql)?;
            Ok(SeededBrand {
                brand_id: brand,
                offer_id: offer,
                locations,
            })
        })
        .await
    }

    pub async fn link_stats(&self, brand: BrandId, offer: OfferId) -> StoreResult<LinkStats> {
        self.read(move |conn| {
            let (brand, offer) = (brand.to_string(), offer.to_string());
            let count = |q: &str, p: &str| -> StoreResult<u64> {
                conn.query_row(q, [p], |row| row.get::<_, i64>(0))
                    .map(|n| n as u64)
                    .map_err(sql)
            };
            Ok(LinkStats {
                brand_locations: count(
                    "SELECT COUNT(*) FROM locations WHERE brand_id = ?1",
                    &brand,
                )?,
                brand_locations_with_offer: count(
                    "SELECT COUNT(*) FROM locations WHERE brand_id = ?1 AND has_offer = 1",
                    &brand,
                )?,
                offer_links: count("SELECT COUNT(*) FROM links WHERE offer_id = ?1", &offer)?,
                offer_locations_total: count(
                    "SELECT COALESCE(MAX(locations_total), 0) FROM offers WHERE id = ?1",
                    &offer,
                )?,
            })
        })
        .await
    }

    /// Links made for `offer`, per `window_ms` window since the first: the achieved
    /// catalog write rate is twice this (each link is a Link put and a location update).
    pub async fn links_per_window(&self, offer: OfferId, window_ms: i64) -> StoreResult<Vec<u64>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare("SELECT linked_at FROM links WHERE offer_id = ?1 ORDER BY linked_at")
                .map_err(sql)?;
            let times: Vec<i64> = stmt
                .query_map([offer.to_string()], |row| row.get(0))
                .map_err(sql)?
                .collect::<Result<_, _>>()
                .map_err(sql)?;
            let Some(&first) = times.first() else {
                return Ok(Vec::new());
            };
            let mut windows = Vec::new();
            for t in times {
                let i = ((t - first) / window_ms.max(1)) as usize;
                if windows.len() <= i {
                    windows.resize(i + 1, 0);
                }
                windows[i] += 1;
            }
            Ok(windows)
        })
        .await
    }

    /// Webhook deliveries by status: (pending, succeeded, failed).
    pub async fn delivery_counts(&self) -> StoreResult<(u64, u64, u64)> {
        self.read(|conn| {
            conn.query_row(
                "SELECT COALESCE(SUM(status = 'pending'), 0), COALESCE(SUM(status = 'succeeded'), 0), \
                 COALESCE(SUM(status = 'failed'), 0) FROM webhook_deliveries",
                [],
                |row| {
                    Ok((
                        row.get::<_, i64>(0)? as u64,
                        row.get::<_, i64>(1)? as u64,
                        row.get::<_, i64>(2)? as u64,
                    ))
                },
            )
            .map_err(sql)
        })
        .await
    }

    /// Rows of the chunk ledger for a job.
    pub async fn ledger_size(&self, job: crate::domain::JobId) -> StoreResult<u64> {
        self.read(move |conn| {
            conn.query_row(
                "SELECT COUNT(*) FROM chunk_ledger WHERE job_id = ?1",
                [job.to_string()],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(sql)
        })
        .await
    }

    /// Milliseconds since the Unix epoch, by the store's clock.
    pub fn clock_ms(&self) -> i64 {
        self.now_ms()
    }
}
