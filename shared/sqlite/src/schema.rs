//! The SQLite schema: the DynamoDB tables of DESIGN §4 as tables and indexes, plus queues,
//! webhook subscriptions and deliveries. Times are milliseconds since the Unix epoch.
//! Versioned with `PRAGMA user_version`: a file of an earlier release is brought forward
//! once, migration by migration, each in its own transaction.

use rusqlite::{params, Connection, Transaction};

use super::sql;
use crate::domain::{Action, JobSpec};
use crate::error::{StoreError, StoreResult};

/// One step forward from the version before it.
type Migration = fn(&Transaction<'_>) -> StoreResult<()>;

/// `MIGRATIONS[i]` takes a file from version `i` to `i + 1`.
const MIGRATIONS: &[Migration] = &[
    v1_initial,
    v2_own_webhooks,
    v3_job_kinds,
    v4_many_brands,
    v5_job_specs,
    v6_location_attributes,
    v7_location_status_and_offers_by_brand,
    v8_imports,
    v9_chunk_outcomes,
    v10_held_jobs,
    v11_offer_schedules,
    v12_webhook_progress,
    v13_drift_watch,
];

/// The schema version this build writes.
pub(super) const VERSION: i64 = MIGRATIONS.len() as i64;

/// Version 1: the first release's tables.
const V1: &str = r#"
CREATE TABLE IF NOT EXISTS offers (
    id TEXT PRIMARY KEY,
    brand_id TEXT NOT NULL,
    name TEXT NOT NULL,
    locations_total INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS locations (
    id TEXT PRIMARY KEY,
    brand_id TEXT NOT NULL,
    address TEXT NOT NULL,
    has_offer INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
-- The brand index (gsi1 on AWS): keys only, in id order.
CREATE INDEX IF NOT EXISTS locations_by_brand ON locations (brand_id, id);

CREATE TABLE IF NOT EXISTS links (
    offer_id TEXT NOT NULL,
    location_id TEXT NOT NULL,
    linked_by TEXT NOT NULL,
    linked_at INTEGER NOT NULL,
    PRIMARY KEY (offer_id, location_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    brand_id TEXT NOT NULL,
    offer_id TEXT NOT NULL,
    callback_url TEXT,
    total INTEGER NOT NULL DEFAULT 0,
    linked INTEGER NOT NULL DEFAULT 0,
    already_linked INTEGER NOT NULL DEFAULT 0,
    not_found INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    cancelled INTEGER NOT NULL DEFAULT 0,
    fanout_cursor TEXT,
    fanout_done INTEGER NOT NULL DEFAULT 0,
    chunks_total INTEGER NOT NULL DEFAULT 0,
    chunks_done INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    notified_at INTEGER
) WITHOUT ROWID;
-- A brand's jobs newest first: job ids are UUID v7, so id order is creation order.
CREATE INDEX IF NOT EXISTS jobs_by_brand ON jobs (brand_id, id);
-- Sparse index of jobs the sweeper may need to finish or notify.
CREATE INDEX IF NOT EXISTS jobs_unsettled ON jobs (updated_at) WHERE notified_at IS NULL;

CREATE TABLE IF NOT EXISTS chunk_ledger (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    linked INTEGER NOT NULL,
    already_linked INTEGER NOT NULL,
    not_found INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    cancelled INTEGER NOT NULL,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS failures (
    job_id TEXT NOT NULL,
    location_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    PRIMARY KEY (job_id, location_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS idempotency (
    key_hash TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    job_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS active_jobs (
    offer_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS queue_messages (
    id INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at INTEGER NOT NULL,
    visible_at INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt TEXT
);
CREATE INDEX IF NOT EXISTS queue_ready ON queue_messages (queue, visible_at, id);

CREATE TABLE IF NOT EXISTS subscriptions (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    filter TEXT NOT NULL,
    status TEXT NOT NULL,
    token TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (url, filter)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY,
    subscription_id TEXT NOT NULL,
    message_type TEXT NOT NULL,
    message_id TEXT NOT NULL,
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    dead INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (dead, next_attempt_at);
CREATE INDEX IF NOT EXISTS deliveries_by_subscription ON deliveries (subscription_id);
"#;

fn v1_initial(tx: &Transaction<'_>) -> StoreResult<()> {
    tx.execute_batch(V1).map_err(sql)
}

/// Version 2: webhooks are bulklink's own (Standard Webhooks) instead of SNS-style
/// subscriptions with a confirmation handshake.
const V2: &str = r#"
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    brand_id TEXT NOT NULL,
    url TEXT NOT NULL,
    filter TEXT NOT NULL,
    description TEXT,
    status TEXT NOT NULL,
    secret TEXT NOT NULL,
    previous_secret TEXT,
    previous_secret_until INTEGER,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
-- A brand's subscriptions, newest first; the deliverer reads a brand's active ones.
CREATE INDEX webhooks_by_brand ON webhooks (brand_id, created_at, id);

CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    subscription_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    job_id TEXT NOT NULL,
    brand_id TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    first_attempt_at INTEGER,
    last_attempt_at INTEGER,
    last_status_code INTEGER,
    last_error TEXT,
    next_attempt_at INTEGER,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
-- Delivery ids are ordered by their event's time: id order is newest-first order.
CREATE INDEX webhook_deliveries_by_subscription ON webhook_deliveries (subscription_id, id);
CREATE INDEX webhook_deliveries_by_job ON webhook_deliveries (job_id, id);
CREATE INDEX webhook_deliveries_by_age ON webhook_deliveries (created_at);
-- Pending deliveries by when they are due (the sweeper's safety net for lost messages).
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
"#;

fn v2_own_webhooks(tx: &Transaction<'_>) -> StoreResult<()> {
    tx.execute_batch(V2).map_err(sql)?;
    // A subscription of a brand keeps its URL and filter and gets a signing secret (its
    // owner reads one with rotate-secret). Its undelivered SNS envelopes are dropped: the
    // format they were made in is gone. Subscriptions of no brand (made before access
    // control) have no owner to hand a secret to, and go.
    let old: Vec<(String, String, String, i64)> = {
        let mut stmt = tx
            .prepare("SELECT id, url, filter, created_at FROM subscriptions")
            .map_err(sql)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .map_err(sql)?;
        rows.collect::<Result<_, _>>().map_err(sql)?
    };
    let mut kept = 0;
    for (id, url, filter, created_at) in &old {
        let Ok(parsed) = serde_json::from_str::<crate::domain::SubscriptionFilter>(filter) else {
            continue;
        };
        let Some(brand) = parsed.brand_id else {
            continue;
        };
        tx.execute(
            "INSERT INTO webhooks (id, brand_id, url, filter, status, secret, created_at) \
             VALUES (?1, ?2, ?3, ?4, 'active', ?5, ?6)",
            params![
                id,
                brand.to_string(),
                url,
                filter,
                crate::domain::WebhookSecret::generate().as_str(),
                created_at
            ],
        )
        .map_err(sql)?;
        kept += 1;
    }
    if !old.is_empty() {
        tracing::warn!(
            kept,
            dropped = old.len() - kept,
            "webhook subscriptions moved to signed webhooks; owners get their secret with POST /webhooks/{{id}}/rotate-secret"
        );
    }
    tx.execute_batch("DROP TABLE deliveries; DROP TABLE subscriptions;")
        .map_err(sql)
}

/// Version 3: jobs of several kinds. A job stores its action and parent; counters for
/// unlinking; the marks unlinking leaves (so a replay recognises its own work); one undo per
/// job; `has_offer` derived from the links, with the index that makes that cheap.
const V3: &str = r#"
ALTER TABLE jobs ADD COLUMN action TEXT NOT NULL DEFAULT 'link';
ALTER TABLE jobs ADD COLUMN parent_job_id TEXT;
ALTER TABLE jobs ADD COLUMN unlinked INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN not_linked INTEGER NOT NULL DEFAULT 0;
ALTER TABLE chunk_ledger ADD COLUMN unlinked INTEGER NOT NULL DEFAULT 0;
ALTER TABLE chunk_ledger ADD COLUMN not_linked INTEGER NOT NULL DEFAULT 0;

-- The job that removed a link, until the location is linked to the offer again.
CREATE TABLE unlinks (
    offer_id TEXT NOT NULL,
    location_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    unlinked_at INTEGER NOT NULL,
    PRIMARY KEY (offer_id, location_id)
) WITHOUT ROWID;

-- At most one undo per job.
CREATE TABLE undos (
    parent_job_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL
) WITHOUT ROWID;

-- A location's links, for has_offer.
CREATE INDEX links_by_location ON links (location_id);
UPDATE locations SET has_offer = EXISTS (SELECT 1 FROM links WHERE links.location_id = locations.id);
"#;

fn v3_job_kinds(tx: &Transaction<'_>) -> StoreResult<()> {
    tx.execute_batch(V3).map_err(sql)
}

/// Version 4: many brands at once. Queue messages carry a group (a chunk's brand) that
/// receives serve fairly; jobs can be paused, their chunks parked meanwhile; settings that
/// operators change at runtime (the write budget).
const V4: &str = r#"
ALTER TABLE queue_messages ADD COLUMN grp TEXT NOT NULL DEFAULT '';
CREATE INDEX queue_ready_by_group ON queue_messages (queue, grp, visible_at, id);
-- Receives go by group now: the index they used before would only cost every write.
DROP INDEX queue_ready;
-- When each group of a queue was last served: receives take the least recent first.
CREATE TABLE queue_groups (
    queue TEXT NOT NULL,
    grp TEXT NOT NULL,
    served INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, grp)
) WITHOUT ROWID;
INSERT OR IGNORE INTO queue_groups (queue, grp) SELECT DISTINCT queue, '' FROM queue_messages;

ALTER TABLE jobs ADD COLUMN paused_at INTEGER;
ALTER TABLE jobs ADD COLUMN paused_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN chunks_parked INTEGER NOT NULL DEFAULT 0;
-- Chunks a paused job's workers took off the queue, until the job leaves PAUSED.
CREATE TABLE parked_chunks (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    parked_at INTEGER NOT NULL,
    token TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;

CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
"#;

fn v4_many_brands(tx: &Transaction<'_>) -> StoreResult<()> {
    tx.execute_batch(V4).map_err(sql)
}

/// Version 5: a job is data. Its kind, action, source and parent are one serialized value
/// (`JobSpec`, column `spec`), written for every existing job from the columns it replaces.
fn v5_job_specs(tx: &Transaction<'_>) -> StoreResult<()> {
    tx.execute_batch("ALTER TABLE jobs ADD COLUMN spec TEXT NOT NULL DEFAULT ''")
        .map_err(sql)?;
    let jobs: Vec<(String, String, String, Option<String>)> = tx
        .prepare("SELECT id, kind, action, parent_job_id FROM jobs")
        .map_err(sql)?
        .query_map([], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .map_err(sql)?
        .collect::<Result<_, _>>()
        .map_err(sql)?;
    for (id, kind, action, parent) in jobs {
        let spec = JobSpec::legacy(
            kind.parse()?,
            Action::from_attr(&action)?,
            parent.map(|p| p.parse()).transpose()?,
        )?;
        tx.execute(
            "UPDATE jobs SET spec = ?1 WHERE id = ?2",
            params![spec.to_json(), id],
        )
        .map_err(sql)?;
    }
    tx.execute_batch(
        "ALTER TABLE jobs DROP COLUMN kind;
         ALTER TABLE jobs DROP COLUMN action;
         ALTER TABLE jobs DROP COLUMN parent_job_id;",
    )
    .map_err(sql)
}

/// Version 6: a location's external id (unique in its brand), attributes (one JSON
/// object, `NULL` for none) and times. Existing locations keep none of them.
fn v6_location_attributes(tx: &Transaction<'_>) -> StoreResult<()> {
    tx.execute_batch(
        "ALTER TABLE locations ADD COLUMN external_id TEXT;
         ALTER TABLE locations ADD COLUMN attributes TEXT;
         ALTER TABLE locations ADD COLUMN created_at INTEGER;
         ALTER TABLE locations ADD COLUMN updated_at INTEGER;
         CREATE UNIQUE INDEX locations_by_external_id ON locations (brand_id, external_id)
             WHERE external_id IS NOT NULL;",
    )
    .map_err(sql)
}

/// Version 7: a location's status (`closed` 1 when the store has closed; every existing
/// location is active), the brand index by status so a job pages only active ones, an
/// index of each brand's offers, offers' standing rules (`filter`: the rule's `where` as
/// JSON), and the feed of location changes the rules follow (`estate_changes`, fed by
/// triggers).
fn v7_location_status_and_offers_by_brand(tx: &Transaction<'_>) -> StoreResult<()> {
    tx.execute_batch(
        "ALTER TABLE locations ADD COLUMN closed INTEGER NOT NULL DEFAULT 0;
         DROP INDEX locations_by_brand;
         CREATE INDEX locations_by_brand ON locations (brand_id, closed, id);
         CREATE INDEX offers_by_brand ON offers (brand_id, id);
         CREATE TABLE rules (
             offer_id TEXT PRIMARY KEY,
             brand_id TEXT NOT NULL,
             filter TEXT NOT NULL,
             set_at INTEGER NOT NULL
         ) WITHOUT ROWID;
         CREATE INDEX rules_by_brand ON rules (brand_id, offer_id);
         -- What the estate follower has to look at: every location created or changed in a
         -- brand with a rule, written in the same transaction as the change (the SQLite
         -- counterpart of a DynamoDB stream). Links only touch has_offer: not a change.
         CREATE TABLE estate_changes (
             seq INTEGER PRIMARY KEY AUTOINCREMENT,
             location_id TEXT NOT NULL,
             changed_at INTEGER
         );
         CREATE TRIGGER estate_created AFTER INSERT ON locations
             WHEN EXISTS (SELECT 1 FROM rules WHERE brand_id = NEW.brand_id)
             BEGIN
                 INSERT INTO estate_changes (location_id, changed_at)
                     VALUES (NEW.id, NEW.updated_at);
             END;
         CREATE TRIGGER estate_changed AFTER UPDATE OF address, attributes, closed ON locations
             WHEN EXISTS (SELECT 1 FROM rules WHERE brand_id = NEW.brand_id)
             BEGIN
                 INSERT INTO estate_changes (location_id, changed_at)
                     VALUES (NEW.id, NEW.updated_at);
             END;",
    )
    .map_err(sql)
}

/// Version 8: imports. Their counters on jobs and chunks, the mark an import writes on each
/// location it touches (`imported_by`: `ImportMark::to_attr`), and import records (`body`:
/// the import as JSON, its start apart). A job on no offer (an import) has `offer_id` ''.
fn v8_imports(tx: &Transaction<'_>) -> StoreResult<()> {
    tx.execute_batch(
        "ALTER TABLE jobs ADD COLUMN created INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE jobs ADD COLUMN updated INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE jobs ADD COLUMN unchanged INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE jobs ADD COLUMN closed INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE jobs ADD COLUMN invalid INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE chunk_ledger ADD COLUMN created INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE chunk_ledger ADD COLUMN updated INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE chunk_ledger ADD COLUMN unchanged INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE chunk_ledger ADD COLUMN closed INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE chunk_ledger ADD COLUMN invalid INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE locations ADD COLUMN imported_by TEXT;
         CREATE TABLE imports (
             id TEXT PRIMARY KEY,
             body TEXT NOT NULL,
             started_at INTEGER
         ) WITHOUT ROWID;",
    )
    .map_err(sql)
}

/// Version 9: each chunk's outcomes (`ChunkTally::encode`), the rows of its job's report;
/// `NULL` for a chunk accounted before.
fn v9_chunk_outcomes(tx: &Transaction<'_>) -> StoreResult<()> {
    tx.execute_batch("ALTER TABLE chunk_ledger ADD COLUMN outcomes BLOB;")
        .map_err(sql)
}

/// Version 10: jobs held before they start — `not_before` (SCHEDULED until then, found by
/// the scheduler through a partial index), the creator's and the approver's `sub`.
fn v10_held_jobs(tx: &Transaction<'_>) -> StoreResult<()> {
    tx.execute_batch(
        "ALTER TABLE jobs ADD COLUMN not_before INTEGER;
         ALTER TABLE jobs ADD COLUMN created_by TEXT;
         ALTER TABLE jobs ADD COLUMN approved_by TEXT;
         CREATE INDEX jobs_scheduled ON jobs (not_before) WHERE status = 'SCHEDULED';",
    )
    .map_err(sql)
}

/// Version 11: an offer's schedule (`OfferSchedule` as JSON; `NULL` for none), and the
/// offers whose start the scheduler is to make, by time.
fn v11_offer_schedules(tx: &Transaction<'_>) -> StoreResult<()> {
    tx.execute_batch(
        "ALTER TABLE offers ADD COLUMN schedule TEXT;
         CREATE TABLE offer_starts (
             offer_id TEXT PRIMARY KEY,
             starts_at INTEGER NOT NULL
         ) WITHOUT ROWID;
         CREATE INDEX offer_starts_by_time ON offer_starts (starts_at);",
    )
    .map_err(sql)
}

/// Version 12: a subscription's `progressEverySeconds` (`NULL`: no `job.progress`), its
/// `rateLimitPerSec` and next free send slot (microseconds), its failing streak's start and
/// why it was disabled, and each brand's event log
/// (what replays read; `body` is the event's JSON).
fn v12_webhook_progress(tx: &Transaction<'_>) -> StoreResult<()> {
    tx.execute_batch(
        "ALTER TABLE webhooks ADD COLUMN progress_every_seconds INTEGER;
         ALTER TABLE webhooks ADD COLUMN rate_limit_per_sec INTEGER;
         ALTER TABLE webhooks ADD COLUMN next_send_at INTEGER;
         ALTER TABLE webhooks ADD COLUMN failing_since INTEGER;
         ALTER TABLE webhooks ADD COLUMN disabled_reason TEXT;
         CREATE TABLE webhook_events (
             brand_id TEXT NOT NULL,
             occurred_at INTEGER NOT NULL,
             event_id TEXT NOT NULL,
             body TEXT NOT NULL,
             PRIMARY KEY (brand_id, occurred_at, event_id)
         ) WITHOUT ROWID;
         CREATE INDEX webhook_events_by_age ON webhook_events (occurred_at);",
    )
    .map_err(sql)
}

/// Version 13: what the drift watch last saw of each rule (`drift_since`: since when its
/// links have disagreed with it; `drift_notified`: the brand was told of that stretch).
/// `INSERT OR REPLACE` of a rule starts both afresh.
fn v13_drift_watch(tx: &Transaction<'_>) -> StoreResult<()> {
    tx.execute_batch(
        "ALTER TABLE rules ADD COLUMN drift_since INTEGER;
         ALTER TABLE rules ADD COLUMN drift_notified INTEGER NOT NULL DEFAULT 0;",
    )
    .map_err(sql)
}

pub(super) fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sql)?;
    if version > VERSION {
        return Err(StoreError::internal(format!(
            "the SQLite file has schema version {version}, newer than this build ({VERSION}); \
             run a newer bulklink"
        )));
    }
    for (from, step) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let tx = conn.transaction().map_err(sql)?;
        step(&tx)?;
        tx.pragma_update(None, "user_version", from as i64 + 1)
            .map_err(sql)?;
        tx.commit().map_err(sql)?;
        if version > 0 {
            tracing::info!(to = from + 1, "migrated the SQLite schema");
        }
    }
    Ok(())
}
