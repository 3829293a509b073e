//! The SQLite schema: the DynamoDB tables of DESIGN §4 as tables and indexes, plus queues
//! and webhook deliveries. Times are milliseconds since the Unix epoch.

use rusqlite::Connection;

use super::sql;
use crate::error::{StoreError, StoreResult};

const VERSION: i64 = 1;

const SCHEMA: &str = r#"
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

pub(super) fn migrate(conn: &Connection) -> StoreResult<()> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sql)?;
    if version > VERSION {
        return Err(StoreError::Internal(format!(
            "the SQLite file has schema version {version}, newer than this build ({VERSION})"
        )));
    }
    conn.execute_batch(SCHEMA).map_err(sql)?;
    conn.pragma_update(None, "user_version", VERSION)
        .map_err(sql)?;
    Ok(())
}
