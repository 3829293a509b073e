//! A connection owned by one thread, which runs the units of work the async tasks hand it
//! one after another. The writer's thread commits in groups: every unit queued while a
//! commit was under way runs inside the next transaction, each in a savepoint of its own,
//! and hears its result only once that transaction is committed.
//!
//! Why: one SQLite file has one writer anyway, and a commit costs the same whether it
//! carries one unit or twenty (the pages the units share — a job's row, a queue's pages —
//! go to the WAL once). Handing work to one thread over a channel, rather than to the
//! blocking pool behind a mutex, also spares each unit the wake-ups of threads that queue
//! for the lock.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::error::{StoreError, StoreResult};

/// Most units one commit carries: bounds how long the first of them waits for its answer.
const MAX_GROUP: usize = 32;

/// How the thread runs what it is handed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Each unit on its own (the reader: nothing to commit).
    OneByOne,
    /// Units queued together share one `BEGIN IMMEDIATE … COMMIT` (the writer).
    GroupCommit,
}

/// A unit of work handed to the thread.
trait Unit: Send {
    /// Runs the work; its result waits for the group's commit.
    fn run(self: Box<Self>, conn: &mut Connection) -> Box<dyn Ran>;
    /// Answers without running (the group's transaction could not be had).
    fn refuse(self: Box<Self>, error: StoreError);
}

/// A unit that ran, waiting to hear whether its group was committed.
trait Ran: Send {
    fn settle(self: Box<Self>, committed: Result<(), &GroupFailure>);
}

struct Work<T, F> {
    work: F,
    answer: oneshot::Sender<StoreResult<T>>,
}

struct Done<T> {
    result: StoreResult<T>,
    answer: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> Unit for Work<T, F>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &mut Connection) -> Box<dyn Ran> {
        let Work { work, answer } = *self;
        let result = in_savepoint(conn, work);
        Box::new(Done { result, answer })
    }

    fn refuse(self: Box<Self>, error: StoreError) {
        let _ = self.answer.send(Err(error));
    }
}

/// Runs one unit inside a savepoint of its own, in the writer's open transaction (or, on
/// the reader, as a transaction of its own): a unit that fails or panics leaves nothing
/// behind, whatever savepoints of its own it released before failing.
fn in_savepoint<T>(
    conn: &mut Connection,
    work: impl FnOnce(&mut Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    conn.execute_batch("SAVEPOINT unit")
        .map_err(|e| GroupFailure::from_sql("cannot open a savepoint", e).error())?;
    let result = catch_unwind(AssertUnwindSafe(|| work(&mut *conn))).unwrap_or_else(|_| {
        Err(StoreError::internal(
            "a store task panicked; its work was rolled back",
        ))
    });
    // After SQLite rolled the whole transaction back (a full disk, an I/O error) there is
    // no savepoint left to close: the caller sees the connection back in autocommit.
    if !conn.is_autocommit() {
        let close = if result.is_ok() {
            "RELEASE unit"
        } else {
            "ROLLBACK TO unit; RELEASE unit"
        };
        if let Err(e) = conn.execute_batch(close) {
            return Err(GroupFailure::from_sql("cannot close a savepoint", e).error());
        }
    }
    result
}

impl<T: Send + 'static> Ran for Done<T> {
    fn settle(self: Box<Self>, committed: Result<(), &GroupFailure>) {
        let result = match (self.result, committed) {
            // A unit that failed says why itself: none of its work is in the file either way.
            (Err(e), _) => Err(e),
            (Ok(value), Ok(())) => Ok(value),
            (Ok(_), Err(failure)) => Err(failure.error()),
        };
        let _ = self.answer.send(result);
    }
}

/// Why a group's transaction did not commit, told to each of its units.
struct GroupFailure {
    message: String,
    retryable: bool,
}

impl GroupFailure {
    /// Classified as every SQLite error of the store is (`crate::sql`).
    fn from_sql(what: &str, e: rusqlite::Error) -> Self {
        let error = crate::sql(e);
        GroupFailure {
            message: format!("{what}: {error}"),
            retryable: error.is_retryable(),
        }
    }

    fn error(&self) -> StoreError {
        if self.retryable {
            StoreError::unavailable(self.message.clone())
        } else {
            StoreError::internal(self.message.clone())
        }
    }
}

/// One connection, owned by its thread. Dropping it lets the thread finish what it was
/// handed and close the connection before the drop returns.
pub(crate) struct SerialConnection {
    units: Option<mpsc::Sender<Box<dyn Unit>>>,
    thread: Option<JoinHandle<()>>,
}

/// Called on the connection's thread after each commit.
pub(crate) type AfterCommit = Box<dyn Fn() + Send>;

impl SerialConnection {
    pub(crate) fn start(
        conn: Connection,
        name: &str,
        mode: Mode,
        after_commit: Option<AfterCommit>,
    ) -> StoreResult<Self> {
        let (units, queued) = mpsc::channel::<Box<dyn Unit>>();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || serve(conn, queued, mode, after_commit))
            .map_err(|e| StoreError::internal(format!("cannot start the {name} thread: {e}")))?;
        Ok(SerialConnection {
            units: Some(units),
            thread: Some(thread),
        })
    }

    /// Runs `work` on the connection; answers once it is committed (the writer) or done.
    pub(crate) async fn run<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let sent = self
            .units
            .as_ref()
            .map(|units| units.send(Box::new(Work { work, answer })));
        if !matches!(sent, Some(Ok(()))) {
            return Err(StoreError::internal(
                "the store's connection thread has stopped",
            ));
        }
        answered.await.unwrap_or_else(|_| {
            Err(StoreError::internal(
                "the store's connection thread stopped before answering",
            ))
        })
    }
}

impl Drop for SerialConnection {
    fn drop(&mut self) {
        drop(self.units.take());
        if let Some(thread) = self.thread.take() {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

fn serve(
    mut conn: Connection,
    queued: mpsc::Receiver<Box<dyn Unit>>,
    mode: Mode,
    after_commit: Option<AfterCommit>,
) {
    while let Ok(first) = queued.recv() {
        match mode {
            Mode::OneByOne => first.run(&mut conn).settle(Ok(())),
            Mode::GroupCommit => {
                let mut group = vec![first];
                while group.len() < MAX_GROUP {
                    match queued.try_recv() {
                        Ok(unit) => group.push(unit),
                        Err(_) => break,
                    }
                }
                if commit_group(&mut conn, group) {
                    if let Some(after_commit) = &after_commit {
                        after_commit();
                    }
                }
            }
        }
    }
}

/// Runs a group in one transaction; whether it was committed.
fn commit_group(conn: &mut Connection, group: Vec<Box<dyn Unit>>) -> bool {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let failure = GroupFailure::from_sql("cannot begin a write", e);
        for unit in group {
            unit.refuse(failure.error());
        }
        return false;
    }
    let mut ran: Vec<Box<dyn Ran>> = Vec::with_capacity(group.len());
    let mut units = group.into_iter();
    for unit in units.by_ref() {
        let done = unit.run(conn);
        let lost = conn.is_autocommit();
        ran.push(done);
        if lost {
            // SQLite rolled the whole transaction back (a full disk, an I/O error): the
            // units before this one lost their work too, and the rest are not started.
            let failure = GroupFailure {
                message: "SQLite rolled back a group of writes after an error; retry".into(),
                retryable: true,
            };
            for done in ran {
                done.settle(Err(&failure));
            }
            for unit in units {
                unit.refuse(failure.error());
            }
            return false;
        }
    }
    match conn.execute_batch("COMMIT") {
        Ok(()) => {
            for done in ran {
                done.settle(Ok(()));
            }
            true
        }
        Err(e) => {
            let failure = GroupFailure::from_sql("cannot commit", e);
            let _ = conn.execute_batch("ROLLBACK");
            for done in ran {
                done.settle(Err(&failure));
            }
            false
        }
    }
}
