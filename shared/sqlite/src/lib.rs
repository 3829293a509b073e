//! The embedded backend: every port on one SQLite file (WAL). It mirrors the AWS semantics
//! (conditional writes, the chunk ledger, queues with visibility timeout, receive count and
//! dead-letter queue, SNS-style webhook delivery) rather than simplifying them.
// Unit tests may read the machine's time; production code reads bulklink_core::clock::Clock.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

mod catalog;
mod checkpoint;
mod estate;
mod events;
mod imports;
mod inspect;
mod jobs;
pub mod key_file;
mod queue;
mod schema;
mod serial;
mod webhooks;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use checkpoint::Checkpointer;
use serial::{Mode, SerialConnection};

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{Connection, ErrorCode, OpenFlags};
use tokio::sync::Notify;

// The core's modules, under the paths this crate's code names them by.
use bulklink_core::{clock, config, domain, error, ports};

use crate::clock::Clock;
use crate::config::Settings;
use crate::error::{StoreError, StoreResult};
use crate::ports::Ports;
use bulklink_core::sealing::{DataKey, LocalSealer};

pub use estate::EstateChange;
pub use events::EmbeddedEvents;
pub use inspect::{LinkStats, SeededBrand};
pub use queue::EmbeddedQueue;

/// Queue names inside the SQLite file (the AWS backend uses Terraform's names).
pub const FANOUT_QUEUE: &str = "fanout";
pub const FANOUT_DLQ: &str = "fanout-dlq";
pub const CHUNK_QUEUE: &str = "chunks";
pub const CHUNK_DLQ: &str = "chunks-dlq";
pub const WEBHOOK_QUEUE: &str = "webhooks";
pub const WEBHOOK_DLQ: &str = "webhooks-dlq";

/// One SQLite file: a single writer connection (SQLite allows one writer at a time anyway)
/// and a separate reader, so status reads never wait behind a long write. Each connection
/// is owned by a thread of its own; the writer's commits what it is handed in groups
/// (`serial`).
pub struct EmbeddedStore {
    path: PathBuf,
    /// (device, inode) of the file at open: a file removed or replaced under a running
    /// server is noticed (its connections still hold the old one).
    identity: Option<(u64, u64)>,
    writer: SerialConnection,
    reader: SerialConnection,
    /// Declared after the writer, so it stops after the writer's last commit.
    _checkpointer: Checkpointer,
    notifiers: Mutex<HashMap<String, Arc<Notify>>>,
    /// The time every stored time and expiry of this store is read from.
    clock: Clock,
    /// Seals webhook signing secrets before they are stored, opens them when read.
    sealer: Arc<LocalSealer>,
    /// Tests: every call reports the store unavailable.
    #[cfg(feature = "faults")]
    failing: std::sync::atomic::AtomicBool,
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store at `path` and brings its schema up to date; it
    /// keeps the machine's time, and its secrets key beside the file
    /// ([`secrets_key_beside`]).
    pub fn open(path: impl AsRef<Path>) -> StoreResult<Arc<Self>> {
        Self::open_with_clock(path, Clock::system())
    }

    /// [`EmbeddedStore::open`] with the clock its times are read from.
    pub fn open_with_clock(path: impl AsRef<Path>, clock: Clock) -> StoreResult<Arc<Self>> {
        let key = secrets_key_beside(path.as_ref());
        Self::open_with(path, clock, &key)
    }

    /// Opens the store at `path` with `clock`, sealing webhook signing secrets with the key
    /// file at `secrets_key` (created, mode 0600, when missing; refused if others can read
    /// it). Plaintext secrets stored before sealing are sealed now.
    pub fn open_with(
        path: impl AsRef<Path>,
        clock: Clock,
        secrets_key: &Path,
    ) -> StoreResult<Arc<Self>> {
        let path = path.as_ref().to_path_buf();
        let key = key_file::load_or_create(secrets_key, "secrets key")
            .map_err(|e| StoreError::internal_from(e.to_string(), e))?;
        let key = DataKey::from_bytes(&key[..key_file::KEY_BYTES]).expect("the key file's size");
        let sealer = Arc::new(LocalSealer::new(key));
        let mut writer = open_connection(&path, false)?;
        schema::migrate(&mut writer)?;
        webhooks::seal_plaintext_secrets(&mut writer, &sealer)?;
        writer
            .pragma_update(
                None,
                "wal_autocheckpoint",
                checkpoint::WRITER_CHECKPOINT_PAGES,
            )
            .map_err(sql)?;
        let reader = open_connection(&path, true)?;
        let checkpointer = Checkpointer::start(open_connection(&path, false)?, &path)?;
        let nudge = checkpointer.nudger();
        let identity = file_identity(&path);
        Ok(Arc::new(EmbeddedStore {
            path,
            identity,
            writer: SerialConnection::start(
                writer,
                "sqlite-writer",
                Mode::GroupCommit,
                Some(Box::new(nudge)),
            )?,
            reader: SerialConnection::start(reader, "sqlite-reader", Mode::OneByOne, None)?,
            _checkpointer: checkpointer,
            notifiers: Mutex::new(HashMap::new()),
            clock,
            sealer,
            #[cfg(feature = "faults")]
            failing: Default::default(),
        }))
    }

    /// The clock this store reads the time from.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The store's time, in milliseconds since the epoch (what it stores).
    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file this store opened is still the one at its path.
    pub fn check_file(&self) -> Result<(), String> {
        let path = self.path.display();
        match (std::fs::metadata(&self.path), self.identity) {
            (Err(e), _) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
                "the database file {path} was removed while the server runs; restart it"
            )),
            (Err(e), _) => Err(format!("the database file {path} cannot be read: {e}")),
            (Ok(_), None) => Ok(()),
            (Ok(_), Some(opened)) if file_identity(&self.path) == Some(opened) => Ok(()),
            (Ok(_), Some(_)) => Err(format!(
                "the database file {path} was replaced by another file while the server runs; restart it"
            )),
        }
    }

    /// Runs `f` on the writer connection off the async runtime, inside a transaction it
    /// may share with other writes: `f` opens a savepoint (`conn.savepoint()`), never a
    /// transaction, and hears its result once the transaction is committed.
    pub(crate) async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        self.check_faults()?;
        self.writer.run(f).await
    }

    /// Runs `f` on the reader connection off the async runtime.
    pub(crate) async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        self.check_faults()?;
        self.reader.run(f).await
    }

    /// Tests (feature `faults`): from now on every read and write reports the store
    /// unavailable (as a busy SQLite file does), until switched off.
    #[cfg(feature = "faults")]
    pub fn fail_every_call(&self, on: bool) {
        self.failing.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    #[cfg(feature = "faults")]
    fn check_faults(&self) -> StoreResult<()> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::unavailable(
                "injected: the store is unavailable",
            ));
        }
        Ok(())
    }

    #[cfg(not(feature = "faults"))]
    fn check_faults(&self) -> StoreResult<()> {
        Ok(())
    }

    /// Wakes long-polling receivers of a queue (or the webhook deliverer).
    pub(crate) fn notifier(&self, name: &str) -> Arc<Notify> {
        let mut map = self
            .notifiers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.entry(name.to_owned()).or_default().clone()
    }
}

#[cfg(unix)]
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_identity(_path: &Path) -> Option<(u64, u64)> {
    None
}

#[async_trait::async_trait]
impl crate::ports::Health for EmbeddedStore {
    async fn check(&self) -> Result<(), String> {
        self.check_file()
    }
}

/// The secrets key of the store at `db` when none is named: `bulklink-secrets.key` in the
/// same directory (with the default paths, beside the token key `bulklink.key`).
pub fn secrets_key_beside(db: &Path) -> PathBuf {
    db.parent()
        .unwrap_or_else(|| Path::new(""))
        .join(SECRETS_KEY_FILE)
}

/// The secrets key's file name.
pub const SECRETS_KEY_FILE: &str = "bulklink-secrets.key";

fn open_connection(path: &Path, read_only: bool) -> StoreResult<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags).map_err(|e| {
        StoreError::unavailable(format!("cannot open SQLite file {}: {e}", path.display()))
    })?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(sql)?;
    if !read_only {
        // WAL lets the reader run beside the writer; NORMAL sync is durable across process
        // crashes (the crash-resume guarantee) and loses at most the last commits on power loss.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql)?;
    }
    conn.pragma_update(None, "cache_size", -8_000)
        .map_err(sql)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Maps an SQLite error: lock contention is retryable, anything else is not.
pub(crate) fn sql(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::unavailable_from(format!("SQLite is busy: {e}"), e)
        }
        Some(ErrorCode::DiskFull | ErrorCode::CannotOpen | ErrorCode::SystemIoFailure) => {
            StoreError::unavailable_from(format!("SQLite I/O: {e}"), e)
        }
        _ => StoreError::internal_from(format!("SQLite: {e}"), e),
    }
}

pub(crate) fn is_constraint(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation)
}

pub(crate) fn to_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// The embedded backend's ports, built on one store.
pub fn ports(store: &Arc<EmbeddedStore>, settings: &Settings) -> Ports {
    let queue = |name: &str, dlq: Option<&str>| -> Arc<dyn crate::ports::Queue> {
        Arc::new(EmbeddedQueue::new(
            store.clone(),
            name,
            dlq.map(|d| (d.to_owned(), settings.max_receive_count)),
            settings.visibility_timeout,
        ))
    };
    let webhook_queue = Arc::new(EmbeddedQueue::new(
        store.clone(),
        WEBHOOK_QUEUE,
        Some((WEBHOOK_DLQ.to_owned(), settings.max_receive_count)),
        settings.webhook_visibility_timeout,
    ));
    use crate::ports::TypedQueue;
    Ports {
        catalog: store.clone(),
        location_imports: store.clone(),
        imports: store.clone(),
        uploads: Arc::new(imports::DirUploads::beside(store.path())),
        jobs: store.clone(),
        ledger: store.clone(),
        runtime_settings: store.clone(),
        fanout_queue: TypedQueue::new(queue(FANOUT_QUEUE, Some(FANOUT_DLQ))),
        chunk_queue: TypedQueue::new(queue(CHUNK_QUEUE, Some(CHUNK_DLQ))),
        chunk_dlq: TypedQueue::new(queue(CHUNK_DLQ, None)),
        events: Arc::new(EmbeddedEvents::new(TypedQueue::new(webhook_queue.clone()))),
        webhooks: store.clone(),
        webhook_queue: TypedQueue::new(webhook_queue),
        health: store.clone(),
        clock: store.clock().clone(),
        sources: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use futures::poll;
    use rusqlite::Connection;

    use super::*;

    /// A store in a new file, with a test table `t` of numbers.
    async fn fresh() -> (tempfile::TempDir, Arc<EmbeddedStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path().join("store.db")).unwrap();
        store
            .write(|conn| {
                conn.execute_batch("CREATE TABLE t (x INTEGER)")
                    .map_err(sql)
            })
            .await
            .unwrap();
        (dir, store)
    }

    /// Numbers in the test table, read by a connection of the test's own (what is
    /// committed, nothing else).
    fn committed(store: &EmbeddedStore) -> Vec<i64> {
        let conn = Connection::open(store.path()).unwrap();
        let mut stmt = conn.prepare("SELECT x FROM t ORDER BY x").unwrap();
        let rows = stmt.query_map([], |row| row.get(0)).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    fn insert(conn: &mut Connection, x: i64) -> StoreResult<()> {
        let sp = conn.savepoint().map_err(sql)?;
        sp.execute("INSERT INTO t (x) VALUES (?1)", [x])
            .map_err(sql)?;
        sp.commit().map_err(sql)
    }

    /// Holds the writer inside a unit until the returned sender is used, so the writes
    /// made meanwhile queue up and form the next group together.
    async fn hold_writer(
        store: &Arc<EmbeddedStore>,
    ) -> (mpsc::Sender<()>, tokio::task::JoinHandle<StoreResult<()>>) {
        let (release, released) = mpsc::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel();
        let store2 = store.clone();
        let held = tokio::spawn(async move {
            store2
                .write(move |_conn| {
                    let _ = started.send(());
                    let _ = released.recv();
                    Ok(())
                })
                .await
        });
        running.await.unwrap();
        (release, held)
    }

    #[tokio::test]
    async fn writes_queued_together_share_one_commit_and_a_failing_one_loses_only_its_own_work() {
        let (_dir, store) = fresh().await;
        let (release, held) = hold_writer(&store).await;

        let mut first = Box::pin(store.write(|conn| insert(conn, 1)));
        let mut failing = Box::pin(store.write(|conn| {
            insert(conn, 2)?;
            Err::<(), _>(StoreError::Invalid("this unit changes its mind".into()))
        }));
        let path = store.path().to_path_buf();
        let mut last = Box::pin(store.write(move |conn| {
            insert(conn, 3)?;
            // What another connection sees while this group is still open: not the
            // first unit's row, which is in this group's transaction.
            let outside: i64 = Connection::open(&path)
                .and_then(|c| c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)))
                .map_err(sql)?;
            Ok(outside)
        }));
        // Each is handed to the writer on its first poll and waits for it.
        assert!(poll!(&mut first).is_pending());
        assert!(poll!(&mut failing).is_pending());
        assert!(poll!(&mut last).is_pending());
        release.send(()).unwrap();
        held.await.unwrap().unwrap();

        first.await.expect("the first unit's write is committed");
        assert!(matches!(failing.await, Err(StoreError::Invalid(_))));
        assert_eq!(
            last.await.unwrap(),
            0,
            "the three units share one transaction"
        );
        assert_eq!(
            committed(&store),
            vec![1, 3],
            "only the failing unit's row is gone"
        );
    }

    #[tokio::test]
    async fn a_unit_that_loses_the_groups_transaction_fails_every_unit_in_it_and_the_writer_carries_on(
    ) {
        let (_dir, store) = fresh().await;
        let (release, held) = hold_writer(&store).await;

        let mut before = Box::pin(store.write(|conn| insert(conn, 10)));
        // As SQLite does after a full disk or an I/O error: the whole transaction is gone.
        let mut breaking = Box::pin(store.write(|conn| {
            conn.execute_batch("ROLLBACK").map_err(sql)?;
            Err::<(), _>(StoreError::unavailable("the disk is full"))
        }));
        let mut after = Box::pin(store.write(|conn| insert(conn, 11)));
        assert!(poll!(&mut before).is_pending());
        assert!(poll!(&mut breaking).is_pending());
        assert!(poll!(&mut after).is_pending());
        release.send(()).unwrap();
        held.await.unwrap().unwrap();

        let lost = before
            .await
            .expect_err("its work was rolled back with the group");
        assert!(lost.is_retryable(), "{lost}");
        assert!(breaking.await.is_err());
        let refused = after.await.expect_err("not started in a broken group");
        assert!(refused.is_retryable(), "{refused}");
        assert!(committed(&store).is_empty());

        let panicked = store
            .write(|conn| -> StoreResult<()> {
                insert(conn, 12)?;
                panic!("a bug in a store function")
            })
            .await
            .expect_err("a panic is an error, not a crash");
        assert!(panicked.to_string().contains("panicked"), "{panicked}");
        store.write(|conn| insert(conn, 13)).await.unwrap();
        assert_eq!(committed(&store), vec![13]);
    }

    #[tokio::test]
    async fn the_wal_reaches_the_database_file_without_the_writer_checkpointing() {
        let (_dir, store) = fresh().await;
        let before = std::fs::metadata(store.path()).unwrap().len();
        // 2 MiB: more than SQLite's own checkpoint threshold (1,000 pages), far below the
        // writer's backstop (`WRITER_CHECKPOINT_PAGES`).
        store
            .write(|conn| {
                conn.execute_batch("CREATE TABLE blobs (b BLOB)")
                    .map_err(sql)?;
                conn.execute("INSERT INTO blobs (b) VALUES (zeroblob(2097152))", [])
                    .map_err(sql)?;
                Ok(())
            })
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let size = std::fs::metadata(store.path()).unwrap().len();
            if size >= before + 2 * 1024 * 1024 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the database file is still {size} bytes: nothing checkpointed the WAL"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
