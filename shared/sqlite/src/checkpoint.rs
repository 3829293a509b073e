//! Moves the WAL's pages into the database file on a thread of its own, so the writer does
//! not stop to copy and fsync them.
//!
//! SQLite checkpoints on the committing connection by default, every 1,000 WAL pages: the
//! writer copies those pages into the database file and waits for two fsyncs, hundreds of
//! times a second under a big job. Here the writer only nudges this thread after a commit;
//! it runs a PASSIVE checkpoint (which never blocks the writer or the readers), then lets
//! commits gather for [`PASS_EVERY`] so a page written by many commits is copied once.
//! The writer keeps SQLite's own checkpoint as a backstop at [`WRITER_CHECKPOINT_PAGES`]:
//! if this thread falls behind, the WAL stops growing there. Durability is unchanged
//! (`synchronous = NORMAL` syncs at checkpoints, wherever they run).

use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;
use tracing::warn;

use crate::error::{StoreError, StoreResult};

/// The pause between two passes.
pub(crate) const PASS_EVERY: Duration = Duration::from_millis(100);

/// WAL size (pages) at which the writer checkpoints itself (SQLite's default is 1,000).
pub(crate) const WRITER_CHECKPOINT_PAGES: i64 = 16_384;

pub(crate) struct Checkpointer {
    nudge: SyncSender<()>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread on its own connection to `path`.
    pub(crate) fn start(conn: Connection, path: &Path) -> StoreResult<Self> {
        let (nudge, nudged) = mpsc::sync_channel(1);
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let (stopping, file) = (stop.clone(), path.display().to_string());
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run(conn, nudged, stopping, file))
            .map_err(|e| {
                StoreError::internal(format!("cannot start the checkpoint thread: {e}"))
            })?;
        Ok(Checkpointer {
            nudge,
            stop,
            thread: Some(thread),
        })
    }

    /// What the writer calls after a commit: wakes the thread if it is idle, never waits.
    pub(crate) fn nudger(&self) -> impl Fn() + Send + 'static {
        let nudge = self.nudge.clone();
        move || match nudge.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (stopped, wake) = &*self.stop;
        *stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
        wake.notify_all();
        // Wakes a thread waiting for a nudge (the writer's nudger may still be alive).
        let _ = self.nudge.try_send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(conn: Connection, nudged: Receiver<()>, stop: Arc<(Mutex<bool>, Condvar)>, file: String) {
    let (stopped, wake) = &*stop;
    while nudged.recv().is_ok() {
        if *stopped.lock().unwrap_or_else(|p| p.into_inner()) {
            return;
        }
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            // The writer's own checkpoint is the backstop; say so once per failure.
            warn!(file, error = %e, "background WAL checkpoint failed; the writer checkpoints itself");
        }
        let guard = stopped.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = wake
            .wait_timeout_while(guard, PASS_EVERY, |stopped| !*stopped)
            .unwrap_or_else(|p| p.into_inner());
        if *guard {
            return;
        }
    }
}
