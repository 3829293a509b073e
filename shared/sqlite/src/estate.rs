//! The feed of location changes that standing rules follow: rows the `estate_changes`
//! triggers write in the same transaction as each change, read in order and removed once
//! followed.

use rusqlite::params;

use super::{from_ms, sql, EmbeddedStore};
use crate::domain::LocationId;
use crate::error::StoreResult;
use chrono::{DateTime, Utc};

/// One change to follow: its place in the feed, the location, and when it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EstateChange {
    pub seq: i64,
    pub location_id: LocationId,
    pub changed_at: Option<DateTime<Utc>>,
}

impl EmbeddedStore {
    /// The oldest changes not yet followed, in the order they were written.
    pub async fn estate_changes(&self, limit: usize) -> StoreResult<Vec<EstateChange>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT seq, location_id, changed_at FROM estate_changes ORDER BY seq LIMIT ?1",
                )
                .map_err(sql)?;
            let rows = stmt
                .query_map([limit as i64], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, Option<i64>>(2)?,
                    ))
                })
                .map_err(sql)?;
            let mut changes = Vec::new();
            for row in rows {
                let (seq, id, at) = row.map_err(sql)?;
                changes.push(EstateChange {
                    seq,
                    location_id: id.parse()?,
                    changed_at: at.map(from_ms),
                });
            }
            Ok(changes)
        })
        .await
    }

    /// Removes the changes up to `seq`, once followed.
    pub async fn followed_estate_changes(&self, seq: i64) -> StoreResult<()> {
        self.write(move |conn| {
            conn.execute("DELETE FROM estate_changes WHERE seq <= ?1", params![seq])
                .map_err(sql)?;
            Ok(())
        })
        .await
    }
}
