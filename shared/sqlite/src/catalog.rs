//! Catalog port on SQLite: offers, locations, links. Linking mirrors the DynamoDB
//! conditional writes: update the location if it exists in the brand, put the link if absent,
//! and on a lost condition read who owns the link (ReturnValuesOnConditionCheckFailure).

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::{from_ms, is_constraint, sql, to_ms, EmbeddedStore};
use crate::domain::{
    BrandId, DriftWatch, JobId, Link, LinkOutcome, LinkedBy, Location, LocationAttributes,
    LocationChange, LocationFilter, LocationId, LocationStatus, Offer, OfferId, OfferRule,
    OfferSchedule, Upserted, WatchedRule,
};
use crate::error::{StoreError, StoreResult};
use crate::ports::{Catalog, Cursor, Page};

impl EmbeddedStore {
    /// `SET column = value` on the row `id` of `table`; false if there is no such row.
    async fn set_text(
        &self,
        table: &'static str,
        column: &'static str,
        id: String,
        value: &str,
    ) -> StoreResult<bool> {
        let value = value.to_owned();
        let changed = self
            .write(move |conn| {
                conn.execute(
                    &format!("UPDATE {table} SET {column} = ?2 WHERE id = ?1"),
                    params![id, value],
                )
                .map_err(sql)
            })
            .await?;
        Ok(changed == 1)
    }
}

#[async_trait]
impl Catalog for EmbeddedStore {
    async fn create_offer(&self, offer: &Offer) -> StoreResult<()> {
        let offer = offer.clone();
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO offers (id, brand_id, name, locations_total, schedule) \
                 VALUES (?1, ?2, ?3, 0, ?4)",
                params![
                    offer.id.to_string(),
                    offer.brand_id.to_string(),
                    offer.name,
                    schedule_json(offer.schedule.as_ref())?
                ],
            )
            .map_err(|e| {
                if is_constraint(&e) {
                    StoreError::Conflict(format!("offer {} already exists", offer.id))
                } else {
                    sql(e)
                }
            })?;
            Ok(())
        })
        .await
    }

    async fn get_offer(&self, id: OfferId) -> StoreResult<Option<Offer>> {
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT brand_id, name, locations_total, schedule FROM offers WHERE id = ?1",
            )
            .map_err(sql)?
            .query_row([id.to_string()], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, Option<String>>(3)?,
                ))
            })
            .optional()
            .map_err(sql)?
            .map(|(brand, name, total, schedule)| {
                Ok(Offer {
                    id,
                    brand_id: brand.parse()?,
                    name,
                    locations_total: total as u64,
                    schedule: schedule_of(schedule.as_deref())?,
                })
            })
            .transpose()
        })
        .await
    }

    async fn page_brand_offers(
        &self,
        brand: BrandId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<Offer>> {
        let after = after.map(|c| c.position().to_owned()).unwrap_or_default();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, name, locations_total, schedule FROM offers \
                     WHERE brand_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
                )
                .map_err(sql)?;
            let rows = stmt
                .query_map(params![brand.to_string(), after, limit as i64 + 1], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                        row.get::<_, Option<String>>(3)?,
                    ))
                })
                .map_err(sql)?;
            let mut offers = Vec::new();
            for row in rows {
                let (id, name, total, schedule) = row.map_err(sql)?;
                offers.push(Offer {
                    id: id.parse()?,
                    brand_id: brand,
                    name,
                    locations_total: total as u64,
                    schedule: schedule_of(schedule.as_deref())?,
                });
            }
            Ok(page_of(offers, limit, |offer| offer.id.to_string()))
        })
        .await
    }

    async fn create_locations(&self, locations: &[Location]) -> StoreResult<()> {
        let locations = locations.to_vec();
        self.write(move |conn| {
            let tx = conn.savepoint().map_err(sql)?;
            let mut conflict = None;
            {
                for loc in &locations {
                    if !insert_location(&tx, loc)? {
                        conflict = Some(match &loc.external_id {
                            Some(ext) if find_external(&tx, loc.brand_id, ext)?.is_some() => {
                                format!("a location with externalId '{ext}' already exists")
                            }
                            _ => format!("location {} already exists", loc.id),
                        });
                        break;
                    }
                }
            }
            let Some(conflict) = conflict else {
                return tx.commit().map_err(sql);
            };
            drop(tx);
            // The same batch sent again whole (a retried request) is already created.
            for loc in &locations {
                let stored = read_location(conn, loc.id)?;
                if !stored.is_some_and(|stored| stored.same_as_sent(loc)) {
                    return Err(StoreError::Conflict(conflict));
                }
            }
            Ok(())
        })
        .await
    }

    async fn get_location(&self, id: LocationId) -> StoreResult<Option<Location>> {
        self.read(move |conn| read_location(conn, id)).await
    }

    async fn page_brand_locations(
        &self,
        brand: BrandId,
        status: Option<LocationStatus>,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<LocationId>> {
        // With a status the position is the last id; without, `closed:id` (0 then 1).
        let after = match (status, after) {
            (_, None) => (0, String::new()),
            (Some(status), Some(c)) => (closed_flag(status), c.position().to_owned()),
            (None, Some(c)) => match c.position().split_once(':') {
                Some(("0", id)) => (0, id.to_owned()),
                Some(("1", id)) => (1, id.to_owned()),
                _ => return Err(StoreError::Invalid("cursor is not one of this list".into())),
            },
        };
        self.read(move |conn| {
            let (sql_text, flags) = match status {
                Some(status) => (
                    "SELECT closed, id FROM locations WHERE brand_id = ?1 AND closed = ?2 \
                     AND id > ?3 ORDER BY id LIMIT ?4",
                    closed_flag(status),
                ),
                None => (
                    "SELECT closed, id FROM locations WHERE brand_id = ?1 \
                     AND (closed, id) > (?2, ?3) ORDER BY closed, id LIMIT ?4",
                    after.0,
                ),
            };
            let mut stmt = conn.prepare_cached(sql_text).map_err(sql)?;
            let rows = stmt
                .query_map(
                    params![brand.to_string(), flags, after.1, limit as i64 + 1],
                    |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)),
                )
                .map_err(sql)?;
            let mut ids = Vec::with_capacity(limit.min(16_384));
            for row in rows {
                let (closed, id) = row.map_err(sql)?;
                ids.push((closed, id.parse::<LocationId>()?));
            }
            let page = page_of(ids, limit, |(closed, id)| match status {
                Some(_) => id.to_string(),
                None => format!("{closed}:{id}"),
            });
            Ok(Page {
                items: page.items.into_iter().map(|(_, id)| id).collect(),
                next: page.next,
            })
        })
        .await
    }

    async fn link_locations(
        &self,
        offer: OfferId,
        brand: BrandId,
        by: LinkedBy,
        ids: &[LocationId],
    ) -> StoreResult<Vec<LinkOutcome>> {
        let (ids, clock) = (ids.to_vec(), self.clock().clone());
        self.write(move |conn| {
            let tx = conn.savepoint().map_err(sql)?;
            let outcomes = link_in(&tx, offer, brand, by, &ids, clock.now_ms())?;
            tx.commit().map_err(sql)?;
            Ok(outcomes)
        })
        .await
    }

    async fn unlink_locations(
        &self,
        offer: OfferId,
        by: JobId,
        only_by: Option<JobId>,
        ids: &[LocationId],
    ) -> StoreResult<Vec<LinkOutcome>> {
        let (ids, clock) = (ids.to_vec(), self.clock().clone());
        self.write(move |conn| {
            let tx = conn.savepoint().map_err(sql)?;
            let outcomes = unlink_in(&tx, offer, by, only_by, &ids, clock.now_ms())?;
            tx.commit().map_err(sql)?;
            Ok(outcomes)
        })
        .await
    }

    async fn unlinked_by(
        &self,
        offer: OfferId,
        ids: &[LocationId],
    ) -> StoreResult<Vec<Option<JobId>>> {
        let ids = ids.to_vec();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT job_id FROM unlinks WHERE offer_id = ?1 AND location_id = ?2",
                )
                .map_err(sql)?;
            let offer = offer.to_string();
            ids.iter()
                .map(|id| {
                    stmt.query_row(params![offer, id.to_string()], |row| {
                        row.get::<_, String>(0)
                    })
                    .optional()
                    .map_err(sql)?
                    .map(|job| job.parse::<JobId>().map_err(StoreError::from))
                    .transpose()
                })
                .collect()
        })
        .await
    }

    async fn page_offer_link_ids(
        &self,
        offer: OfferId,
        made_by: Option<LinkedBy>,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<LocationId>> {
        let after = after.map(|c| c.position().to_owned()).unwrap_or_default();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT location_id FROM links WHERE offer_id = ?1 AND location_id > ?2 \
                     AND (?3 IS NULL OR linked_by = ?3) ORDER BY location_id LIMIT ?4",
                )
                .map_err(sql)?;
            let rows = stmt
                .query_map(
                    params![
                        offer.to_string(),
                        after,
                        made_by.map(LinkedBy::to_attr),
                        limit as i64 + 1
                    ],
                    |row| row.get::<_, String>(0),
                )
                .map_err(sql)?;
            let mut ids = Vec::with_capacity(limit.min(16_384));
            for row in rows {
                ids.push(row.map_err(sql)?.parse::<LocationId>()?);
            }
            Ok(page_of(ids, limit, |id| id.to_string()))
        })
        .await
    }

    async fn set_offer_schedule(&self, id: OfferId, schedule: &OfferSchedule) -> StoreResult<bool> {
        let json = schedule_json(Some(schedule))?;
        self.write(move |conn| {
            let changed = conn
                .execute(
                    "UPDATE offers SET schedule = ?2 WHERE id = ?1",
                    params![id.to_string(), json],
                )
                .map_err(sql)?;
            Ok(changed == 1)
        })
        .await
    }

    async fn rename_offer(&self, id: OfferId, name: &str) -> StoreResult<Option<Offer>> {
        if !self
            .set_text("offers", "name", id.to_string(), name)
            .await?
        {
            return Ok(None);
        }
        self.get_offer(id).await
    }

    async fn locations_matching(
        &self,
        brand: BrandId,
        ids: &[LocationId],
        filter: &LocationFilter,
    ) -> StoreResult<Vec<Location>> {
        let (ids, filter) = (ids.to_vec(), filter.clone());
        self.read(move |conn| {
            let mut kept = Vec::new();
            for id in ids {
                if let Some(location) = read_location(conn, id)? {
                    if location.brand_id == brand && filter.matches(&location) {
                        kept.push(location);
                    }
                }
            }
            Ok(kept)
        })
        .await
    }

    async fn external_ids(&self, ids: &[LocationId]) -> StoreResult<Vec<Option<String>>> {
        let ids = ids.to_vec();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT external_id FROM locations WHERE id = ?1")
                .map_err(sql)?;
            ids.iter()
                .map(|id| {
                    stmt.query_row([id.to_string()], |row| row.get::<_, Option<String>>(0))
                        .optional()
                        .map(Option::flatten)
                        .map_err(sql)
                })
                .collect()
        })
        .await
    }

    async fn find_by_external_id(
        &self,
        brand: BrandId,
        external_id: &str,
    ) -> StoreResult<Option<Location>> {
        let external_id = external_id.to_owned();
        self.read(
            move |conn| match find_external(conn, brand, &external_id)? {
                Some(id) => read_location(conn, id),
                None => Ok(None),
            },
        )
        .await
    }

    async fn upsert_by_external_id(&self, location: &Location) -> StoreResult<Upserted> {
        let location = location.clone();
        let now = self.clock().now();
        // One writer unit finds and writes: nothing comes between on one file.
        self.write(move |conn| {
            Ok(crate::imports::upsert_in(conn, &location, now, None)?.unmarked()?)
        })
        .await
    }

    async fn update_location(
        &self,
        id: LocationId,
        change: &LocationChange,
    ) -> StoreResult<Option<Location>> {
        let change = change.clone();
        let now = self.clock().now();
        self.write(move |conn| {
            let Some(location) = read_location(conn, id)? else {
                return Ok(None);
            };
            let Some(changed) = location.changed(&change, now) else {
                return Ok(Some(location));
            };
            write_change(conn, &location, changed).map(Some)
        })
        .await
    }

    async fn delete_location(&self, id: LocationId) -> StoreResult<Option<Vec<OfferId>>> {
        self.write(move |conn| {
            let tx = conn.savepoint().map_err(sql)?;
            let id = id.to_string();
            if tx
                .execute("DELETE FROM locations WHERE id = ?1", [&id])
                .map_err(sql)?
                == 0
            {
                return Ok(None);
            }
            let offers = leave_offers(&tx, &id)?;
            tx.commit().map_err(sql)?;
            Ok(Some(offers))
        })
        .await
    }

    async fn link_direct(&self, offer: &Offer, location: LocationId) -> StoreResult<LinkOutcome> {
        let (offer_id, brand, clock) = (offer.id, offer.brand_id, self.clock().clone());
        self.write(move |conn| {
            let tx = conn.savepoint().map_err(sql)?;
            let outcome = link_in(
                &tx,
                offer_id,
                brand,
                LinkedBy::Direct,
                &[location],
                clock.now_ms(),
            )?
            .pop()
            .ok_or_else(|| StoreError::internal("link produced no outcome"))?;
            if outcome == LinkOutcome::Linked {
                tx.execute(
                    "UPDATE offers SET locations_total = locations_total + 1 WHERE id = ?1",
                    [offer_id.to_string()],
                )
                .map_err(sql)?;
            }
            tx.commit().map_err(sql)?;
            Ok(outcome)
        })
        .await
    }

    async fn put_rule(&self, rule: &OfferRule) -> StoreResult<()> {
        let rule = rule.clone();
        let filter = serde_json::to_string(&rule.filter)
            .map_err(|e| StoreError::internal(format!("cannot write a rule: {e}")))?;
        self.write(move |conn| {
            let id = rule.offer_id.to_string();
            let exists = conn
                .prepare_cached("SELECT 1 FROM offers WHERE id = ?1")
                .map_err(sql)?
                .exists([&id])
                .map_err(sql)?;
            if !exists {
                return Err(StoreError::Invalid(format!(
                    "offer {} does not exist",
                    rule.offer_id
                )));
            }
            conn.prepare_cached(
                "INSERT OR REPLACE INTO rules (offer_id, brand_id, filter, set_at) \
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(sql)?
            .execute(params![
                id,
                rule.brand_id.to_string(),
                filter,
                to_ms(rule.set_at)
            ])
            .map_err(sql)?;
            Ok(())
        })
        .await
    }

    async fn get_rule(&self, offer: OfferId) -> StoreResult<Option<OfferRule>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT offer_id, brand_id, filter, set_at FROM rules WHERE offer_id = ?1",
                )
                .map_err(sql)?;
            let mut rules = rules_of(&mut stmt, &offer.to_string())?;
            Ok(rules.pop())
        })
        .await
    }

    async fn brand_rules(&self, brand: BrandId) -> StoreResult<Vec<OfferRule>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT offer_id, brand_id, filter, set_at FROM rules WHERE brand_id = ?1 \
                     ORDER BY offer_id",
                )
                .map_err(sql)?;
            rules_of(&mut stmt, &brand.to_string())
        })
        .await
    }

    async fn page_rules(
        &self,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<WatchedRule>> {
        let after = after.map(|c| c.position().to_owned()).unwrap_or_default();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT offer_id, brand_id, filter, set_at, drift_since, drift_notified \
                     FROM rules WHERE offer_id > ?1 ORDER BY offer_id LIMIT ?2",
                )
                .map_err(sql)?;
            let rows = stmt
                .query_map(params![after, limit as i64 + 1], |row| {
                    Ok((
                        (
                            row.get::<_, String>(0)?,
                            row.get::<_, String>(1)?,
                            row.get::<_, String>(2)?,
                            row.get::<_, i64>(3)?,
                        ),
                        row.get::<_, Option<i64>>(4)?,
                        row.get::<_, bool>(5)?,
                    ))
                })
                .map_err(sql)?;
            let mut rules = Vec::new();
            for row in rows {
                let (columns, since, notified) = row.map_err(sql)?;
                rules.push(WatchedRule {
                    rule: rule_of(columns)?,
                    watch: DriftWatch {
                        since: since.map(from_ms),
                        notified,
                    },
                });
            }
            Ok(page_of(rules, limit, |r| r.rule.offer_id.to_string()))
        })
        .await
    }

    async fn note_drift(
        &self,
        rule: &OfferRule,
        was: DriftWatch,
        now: DriftWatch,
    ) -> StoreResult<bool> {
        let (offer, set_at) = (rule.offer_id.to_string(), to_ms(rule.set_at));
        let changed = self
            .write(move |conn| {
                conn.prepare_cached(
                    "UPDATE rules SET drift_since = ?1, drift_notified = ?2 \
                     WHERE offer_id = ?3 AND set_at = ?4 \
                     AND drift_since IS ?5 AND drift_notified = ?6",
                )
                .map_err(sql)?
                .execute(params![
                    now.since.map(to_ms),
                    now.notified,
                    offer,
                    set_at,
                    was.since.map(to_ms),
                    was.notified
                ])
                .map_err(sql)
            })
            .await?;
        Ok(changed == 1)
    }

    /// One writer unit reads each location, decides and writes: nothing comes between.
    async fn follow_rule(
        &self,
        rule: &OfferRule,
        ids: &[LocationId],
        by: LinkedBy,
    ) -> StoreResult<Vec<LinkOutcome>> {
        let (rule, ids, clock) = (rule.clone(), ids.to_vec(), self.clock().clone());
        self.write(move |conn| {
            let mut outcomes = Vec::with_capacity(ids.len());
            for id in &ids {
                outcomes.push(follow_in(conn, &rule, *id, by, clock.now_ms())?);
            }
            Ok(outcomes)
        })
        .await
    }

    async fn delete_rule(&self, offer: OfferId) -> StoreResult<bool> {
        let deleted = self
            .write(move |conn| {
                conn.execute("DELETE FROM rules WHERE offer_id = ?1", [offer.to_string()])
                    .map_err(sql)
            })
            .await?;
        Ok(deleted == 1)
    }

    async fn existing_links(
        &self,
        offer: OfferId,
        ids: &[LocationId],
    ) -> StoreResult<Vec<Option<LinkedBy>>> {
        let ids = ids.to_vec();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT linked_by FROM links WHERE offer_id = ?1 AND location_id = ?2",
                )
                .map_err(sql)?;
            let offer = offer.to_string();
            ids.iter()
                .map(|id| {
                    stmt.query_row(params![offer, id.to_string()], |row| {
                        row.get::<_, String>(0)
                    })
                    .optional()
                    .map_err(sql)?
                    .map(|by| LinkedBy::from_attr(&by).map_err(StoreError::from))
                    .transpose()
                })
                .collect()
        })
        .await
    }

    async fn page_offer_links(
        &self,
        offer: OfferId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<Link>> {
        let after = after.map(|c| c.position().to_owned()).unwrap_or_default();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT location_id, linked_by, linked_at FROM links \
                     WHERE offer_id = ?1 AND location_id > ?2 ORDER BY location_id LIMIT ?3",
                )
                .map_err(sql)?;
            let rows = stmt
                .query_map(params![offer.to_string(), after, limit as i64 + 1], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                })
                .map_err(sql)?;
            let mut links = Vec::new();
            for row in rows {
                let (location, by, at) = row.map_err(sql)?;
                links.push(Link {
                    offer_id: offer,
                    location_id: location.parse()?,
                    linked_by: LinkedBy::from_attr(&by)?,
                    linked_at: from_ms(at),
                });
            }
            Ok(page_of(links, limit, |link| link.location_id.to_string()))
        })
        .await
    }
}

/// The rules a statement selecting `offer_id, brand_id, filter, set_at` by `key` finds.
fn rules_of(stmt: &mut rusqlite::CachedStatement<'_>, key: &str) -> StoreResult<Vec<OfferRule>> {
    let rows = stmt
        .query_map([key], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, i64>(3)?,
            ))
        })
        .map_err(sql)?;
    let mut rules = Vec::new();
    for row in rows {
        rules.push(rule_of(row.map_err(sql)?)?);
    }
    Ok(rules)
}

/// A rule from its columns `offer_id, brand_id, filter, set_at`.
fn rule_of(
    (offer, brand, filter, set_at): (String, String, String, i64),
) -> StoreResult<OfferRule> {
    Ok(OfferRule {
        offer_id: offer.parse()?,
        brand_id: brand.parse()?,
        filter: serde_json::from_str(&filter).map_err(|e| {
            StoreError::internal(format!("offer {offer} has an unreadable rule: {e}"))
        })?,
        set_at: from_ms(set_at),
    })
}

/// One location brought to what the rule wants of it, inside the caller's writer unit.
fn follow_in(
    conn: &Connection,
    rule: &OfferRule,
    id: LocationId,
    by: LinkedBy,
    at: i64,
) -> StoreResult<LinkOutcome> {
    let Some(location) = read_location(conn, id)?.filter(|l| l.brand_id == rule.brand_id) else {
        return Ok(LinkOutcome::NotFound);
    };
    let (offer, location_id) = (rule.offer_id.to_string(), id.to_string());
    let owner: Option<String> = conn
        .prepare_cached("SELECT linked_by FROM links WHERE offer_id = ?1 AND location_id = ?2")
        .map_err(sql)?
        .query_row(params![offer, location_id], |row| row.get(0))
        .optional()
        .map_err(sql)?;
    let job = match by {
        LinkedBy::Job(job) => Some(job.to_string()),
        _ => None,
    };
    let count = |delta: i64| {
        conn.prepare_cached(
            "UPDATE offers SET locations_total = locations_total + ?2 WHERE id = ?1",
        )
        .map_err(sql)?
        .execute(params![offer, delta])
        .map_err(sql)
    };
    Ok(match (rule.wants(&location), owner) {
        (true, Some(owner)) if job.is_some() && owner == by.to_attr() => LinkOutcome::Linked,
        (true, Some(_)) => LinkOutcome::AlreadyLinked,
        (true, None) => {
            conn.prepare_cached(
                "INSERT INTO links (offer_id, location_id, linked_by, linked_at) \
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(sql)?
            .execute(params![offer, location_id, by.to_attr(), at])
            .map_err(sql)?;
            conn.execute(
                "DELETE FROM unlinks WHERE offer_id = ?1 AND location_id = ?2",
                params![offer, location_id],
            )
            .map_err(sql)?;
            conn.execute(
                "UPDATE locations SET has_offer = 1 WHERE id = ?1",
                [&location_id],
            )
            .map_err(sql)?;
            count(1)?;
            LinkOutcome::Linked
        }
        (false, Some(_)) => {
            conn.execute(
                "DELETE FROM links WHERE offer_id = ?1 AND location_id = ?2",
                params![offer, location_id],
            )
            .map_err(sql)?;
            if let Some(job) = &job {
                conn.execute(
                    "INSERT OR REPLACE INTO unlinks (offer_id, location_id, job_id, unlinked_at) \
                     VALUES (?1, ?2, ?3, ?4)",
                    params![offer, location_id, job, at],
                )
                .map_err(sql)?;
            }
            conn.execute(
                "UPDATE locations SET has_offer = EXISTS \
                 (SELECT 1 FROM links WHERE links.location_id = locations.id) WHERE id = ?1",
                [&location_id],
            )
            .map_err(sql)?;
            count(-1)?;
            LinkOutcome::Unlinked
        }
        (false, None) => {
            let replay = match &job {
                Some(job) => conn
                    .prepare_cached(
                        "SELECT 1 FROM unlinks WHERE offer_id = ?1 AND location_id = ?2 \
                         AND job_id = ?3",
                    )
                    .map_err(sql)?
                    .exists(params![offer, location_id, job])
                    .map_err(sql)?,
                None => false,
            };
            if replay {
                LinkOutcome::Unlinked
            } else {
                LinkOutcome::NotLinked
            }
        }
    })
}

/// The per-location conditional writes, inside the caller's transaction.
fn link_in(
    tx: &Connection,
    offer: OfferId,
    brand: BrandId,
    by: LinkedBy,
    ids: &[LocationId],
    at: i64,
) -> StoreResult<Vec<LinkOutcome>> {
    let mut mark = tx
        .prepare_cached(
            "UPDATE locations SET has_offer = 1 WHERE id = ?1 AND brand_id = ?2 AND closed = 0",
        )
        .map_err(sql)?;
    let mut put = tx
        .prepare_cached(
            "INSERT INTO links (offer_id, location_id, linked_by, linked_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT DO NOTHING",
        )
        .map_err(sql)?;
    let mut owner = tx
        .prepare_cached("SELECT linked_by FROM links WHERE offer_id = ?1 AND location_id = ?2")
        .map_err(sql)?;
    let mut forget_unlink = tx
        .prepare_cached("DELETE FROM unlinks WHERE offer_id = ?1 AND location_id = ?2")
        .map_err(sql)?;
    let (offer, brand, by_attr) = (offer.to_string(), brand.to_string(), by.to_attr());
    let mut outcomes = Vec::with_capacity(ids.len());
    for id in ids {
        let id = id.to_string();
        if mark.execute(params![id, brand]).map_err(sql)? == 0 {
            outcomes.push(LinkOutcome::NotFound);
            continue;
        }
        if put.execute(params![offer, id, by_attr, at]).map_err(sql)? == 1 {
            // Linked again: an earlier unlink's mark no longer describes the link.
            forget_unlink.execute(params![offer, id]).map_err(sql)?;
            outcomes.push(LinkOutcome::Linked);
            continue;
        }
        let old: String = owner
            .query_row(params![offer, id], |row| row.get(0))
            .map_err(sql)?;
        // Only a job is one actor across deliveries; two direct links are two requests.
        let replay = matches!(by, LinkedBy::Job(_)) && old == by_attr;
        outcomes.push(if replay {
            LinkOutcome::Linked
        } else {
            LinkOutcome::AlreadyLinked
        });
    }
    Ok(outcomes)
}

/// The per-location removals, inside the caller's transaction: delete the link (if it is
/// one `only_by` made), leave the mark that `by` removed it, and derive `has_offer` from
/// the links the location still has.
fn unlink_in(
    tx: &Connection,
    offer: OfferId,
    by: JobId,
    only_by: Option<JobId>,
    ids: &[LocationId],
    at: i64,
) -> StoreResult<Vec<LinkOutcome>> {
    let mut delete = tx
        .prepare_cached(
            "DELETE FROM links WHERE offer_id = ?1 AND location_id = ?2 \
             AND (?3 IS NULL OR linked_by = ?3)",
        )
        .map_err(sql)?;
    let mut mark = tx
        .prepare_cached(
            "INSERT OR REPLACE INTO unlinks (offer_id, location_id, job_id, unlinked_at) \
             VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(sql)?;
    let mut marked = tx
        .prepare_cached(
            "SELECT 1 FROM unlinks WHERE offer_id = ?1 AND location_id = ?2 AND job_id = ?3",
        )
        .map_err(sql)?;
    let mut derive = tx
        .prepare_cached(
            "UPDATE locations SET has_offer = EXISTS \
             (SELECT 1 FROM links WHERE links.location_id = locations.id) WHERE id = ?1",
        )
        .map_err(sql)?;
    let (offer, by, only_by) = (
        offer.to_string(),
        by.to_string(),
        only_by.map(|j| LinkedBy::Job(j).to_attr()),
    );
    let mut outcomes = Vec::with_capacity(ids.len());
    for id in ids {
        let id = id.to_string();
        if delete.execute(params![offer, id, only_by]).map_err(sql)? == 1 {
            mark.execute(params![offer, id, by, at]).map_err(sql)?;
            derive.execute([&id]).map_err(sql)?;
            outcomes.push(LinkOutcome::Unlinked);
        } else if marked.exists(params![offer, id, by]).map_err(sql)? {
            // Removed by an earlier delivery of this job's chunk.
            outcomes.push(LinkOutcome::Unlinked);
        } else {
            outcomes.push(LinkOutcome::NotLinked);
        }
    }
    Ok(outcomes)
}

/// Turns `limit + 1` fetched rows into a page: the extra row only says another page exists.
pub(super) fn page_of<T>(mut items: Vec<T>, limit: usize, key: impl Fn(&T) -> String) -> Page<T> {
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|last| Cursor::from_position(key(last)))
    } else {
        None
    };
    Page { items, next }
}

/// A location's attributes as stored: `NULL` for none.
fn attributes_json(attributes: &LocationAttributes) -> StoreResult<Option<String>> {
    if *attributes == LocationAttributes::default() {
        return Ok(None);
    }
    serde_json::to_string(attributes)
        .map(Some)
        .map_err(|e| StoreError::internal(format!("cannot write location attributes: {e}")))
}

pub(crate) fn read_location(conn: &Connection, id: LocationId) -> StoreResult<Option<Location>> {
    struct Row {
        brand: String,
        address: String,
        has_offer: bool,
        external_id: Option<String>,
        attributes: Option<String>,
        created_at: Option<i64>,
        updated_at: Option<i64>,
        closed: bool,
    }
    let row = conn
        .prepare_cached(
            "SELECT brand_id, address, has_offer, external_id, attributes, created_at, updated_at, \
             closed FROM locations WHERE id = ?1",
        )
        .map_err(sql)?
        .query_row([id.to_string()], |r| {
            Ok(Row {
                brand: r.get(0)?,
                address: r.get(1)?,
                has_offer: r.get(2)?,
                external_id: r.get(3)?,
                attributes: r.get(4)?,
                created_at: r.get(5)?,
                updated_at: r.get(6)?,
                closed: r.get(7)?,
            })
        })
        .optional()
        .map_err(sql)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let attributes = match row.attributes {
        None => LocationAttributes::default(),
        Some(json) => serde_json::from_str(&json).map_err(|e| {
            StoreError::internal(format!("location {id} has unreadable attributes: {e}"))
        })?,
    };
    Ok(Some(Location {
        id,
        brand_id: row.brand.parse()?,
        address: row.address,
        has_offer: row.has_offer,
        external_id: row.external_id,
        attributes,
        status: if row.closed {
            LocationStatus::Closed
        } else {
            LocationStatus::Active
        },
        created_at: row.created_at.map(from_ms),
        updated_at: row.updated_at.map(from_ms),
    }))
}

/// Inserts a location; false if its id, or its external id in the brand, is taken.
pub(crate) fn insert_location(conn: &Connection, loc: &Location) -> StoreResult<bool> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO locations \
             (id, brand_id, address, has_offer, external_id, attributes, created_at, updated_at, \
              closed) VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6, ?7, ?8)",
        )
        .map_err(sql)?
        .execute(params![
            loc.id.to_string(),
            loc.brand_id.to_string(),
            loc.address,
            loc.external_id,
            attributes_json(&loc.attributes)?,
            loc.created_at.map(to_ms),
            loc.updated_at.map(to_ms),
            closed_flag(loc.status),
        ]);
    match inserted {
        Ok(_) => Ok(true),
        Err(e) if is_constraint(&e) => Ok(false),
        Err(e) => Err(sql(e)),
    }
}

/// Writes a changed location's address, attributes, status and `updatedAt`; closing an
/// active one also leaves every offer it carried, in the same unit (its savepoint). The
/// location as written.
pub(crate) fn write_change(
    conn: &Connection,
    before: &Location,
    changed: Location,
) -> StoreResult<Location> {
    conn.prepare_cached(
        "UPDATE locations SET address = ?2, attributes = ?3, updated_at = ?4, closed = ?5 \
         WHERE id = ?1",
    )
    .map_err(sql)?
    .execute(params![
        changed.id.to_string(),
        changed.address,
        attributes_json(&changed.attributes)?,
        changed.updated_at.map(to_ms),
        closed_flag(changed.status),
    ])
    .map_err(sql)?;
    let mut changed = changed;
    if before.is_active() && !changed.is_active() {
        leave_offers(conn, &changed.id.to_string())?;
        changed.has_offer = false;
    }
    Ok(changed)
}

/// Removes every link of the location, each offer's `locationsTotal` one less, and clears
/// `has_offer`, inside the caller's transaction: the offers it left.
fn leave_offers(tx: &Connection, id: &str) -> StoreResult<Vec<OfferId>> {
    let offers: Vec<String> = {
        let mut stmt = tx
            .prepare_cached("SELECT offer_id FROM links WHERE location_id = ?1")
            .map_err(sql)?;
        let rows = stmt.query_map([id], |row| row.get(0)).map_err(sql)?;
        rows.collect::<Result<_, _>>().map_err(sql)?
    };
    tx.execute("DELETE FROM links WHERE location_id = ?1", [id])
        .map_err(sql)?;
    let mut count = tx
        .prepare_cached("UPDATE offers SET locations_total = locations_total - 1 WHERE id = ?1")
        .map_err(sql)?;
    for offer in &offers {
        count.execute([offer]).map_err(sql)?;
    }
    tx.execute("UPDATE locations SET has_offer = 0 WHERE id = ?1", [id])
        .map_err(sql)?;
    offers
        .iter()
        .map(|o| o.parse::<OfferId>().map_err(StoreError::from))
        .collect()
}

/// How a status is stored: `closed` 1 or 0.
fn closed_flag(status: LocationStatus) -> i64 {
    match status {
        LocationStatus::Active => 0,
        LocationStatus::Closed => 1,
    }
}

pub(crate) fn find_external(
    conn: &Connection,
    brand: BrandId,
    external_id: &str,
) -> StoreResult<Option<LocationId>> {
    let id: Option<String> = conn
        .prepare_cached("SELECT id FROM locations WHERE brand_id = ?1 AND external_id = ?2")
        .map_err(sql)?
        .query_row(params![brand.to_string(), external_id], |row| row.get(0))
        .optional()
        .map_err(sql)?;
    Ok(id.map(|id| id.parse()).transpose()?)
}

/// An offer's schedule as stored (JSON, `NULL` for none).
fn schedule_json(schedule: Option<&OfferSchedule>) -> StoreResult<Option<String>> {
    schedule
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::internal(format!("cannot write a schedule: {e}")))
}

/// A stored schedule read back.
fn schedule_of(json: Option<&str>) -> StoreResult<Option<OfferSchedule>> {
    json.map(serde_json::from_str)
        .transpose()
        .map_err(|e| StoreError::internal(format!("an offer's schedule does not read: {e}")))
}
