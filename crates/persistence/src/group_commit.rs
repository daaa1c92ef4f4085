//! SQLite writes through one connection, batched: jobs that arrive while a transaction runs
//! share the next one, each in its own savepoint, and learn their outcome only after the commit.
//! One commit per batch instead of one per request multiplies write throughput, and no writer
//! ever waits on SQLite's lock inside the process.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::time::Duration;

use diesel::Connection;
use diesel::connection::{AnsiTransactionManager, TransactionManager};
use tokio::sync::oneshot;

use crate::database::write_transaction;
use crate::{DatabaseUrl, DbConnection, PersistenceError};

/// Jobs per transaction at most, so that one batch never holds the lock for long.
const MAX_BATCH: usize = 64;

/// What a job leaves to do once its batch committed (or failed to).
type Completion = Box<dyn FnOnce(Option<&PersistenceError>) + Send>;

/// A closure waiting for the writer, with the way back to its caller.
trait Job: Send {
    /// Runs in the batch's transaction, inside a savepoint of its own.
    fn run(self: Box<Self>, conn: &mut DbConnection) -> Completion;
    /// The batch could not even start.
    fn fail(self: Box<Self>, err: &PersistenceError);
}

struct Closure<F, T, E> {
    f: F,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<F, T, E> Job for Closure<F, T, E>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<PersistenceError> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &mut DbConnection) -> Completion {
        let Closure { f, reply } = *self;
        // Nested in the batch's transaction, so this is a savepoint: a failing job rolls back
        // its own changes only.
        let result = write_transaction(conn, f);
        Box::new(move |commit_error| {
            let outcome = match (result, commit_error) {
                (Ok(value), None) => Ok(value),
                (Ok(_), Some(err)) => Err(E::from(copy_error(err))),
                (Err(err), _) => Err(err),
            };
            let _ = reply.send(outcome);
        })
    }

    fn fail(self: Box<Self>, err: &PersistenceError) {
        let _ = self.reply.send(Err(E::from(copy_error(err))));
    }
}

/// The same error for every job of a failed batch (the error types hold no clonable causes).
fn copy_error(err: &PersistenceError) -> PersistenceError {
    match err {
        PersistenceError::Unavailable(why) => PersistenceError::Unavailable(why.clone()),
        other => PersistenceError::Task(format!("the write batch failed: {other}")),
    }
}

/// Handle to the writer thread.
#[derive(Clone)]
pub(crate) struct GroupCommitter {
    jobs: mpsc::Sender<Box<dyn Job>>,
}

impl GroupCommitter {
    /// Opens the writer's own connection and starts its thread; the thread ends when the last
    /// handle is dropped.
    pub(crate) fn start(
        url: &DatabaseUrl,
        busy_timeout: Duration,
    ) -> Result<Self, PersistenceError> {
        let conn = url.establish(busy_timeout)?;
        let (jobs, queue) = mpsc::channel::<Box<dyn Job>>();
        let url = url.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer(conn, &url, busy_timeout, &queue))
            .map_err(|e| PersistenceError::Unavailable(e.to_string()))?;
        Ok(Self { jobs })
    }

    /// Queues `f`; the receiver yields its result once its batch committed.
    pub(crate) fn submit<T, E, F>(&self, f: F) -> oneshot::Receiver<Result<T, E>>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<PersistenceError> + Send + 'static,
    {
        let (reply, outcome) = oneshot::channel();
        // If the writer is gone the reply is dropped, and the caller sees that.
        let _ = self.jobs.send(Box::new(Closure { f, reply }));
        outcome
    }
}

/// Rolls back every open transaction level; false if the connection refuses.
fn roll_back_everything(conn: &mut DbConnection) -> bool {
    type Manager = <DbConnection as Connection>::TransactionManager;
    loop {
        match Manager::transaction_manager_status_mut(conn).transaction_depth() {
            Ok(None) => return true,
            Ok(Some(_)) => {
                if Manager::rollback_transaction(conn).is_err() {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
}

fn writer(
    mut conn: DbConnection,
    url: &DatabaseUrl,
    busy_timeout: Duration,
    queue: &mpsc::Receiver<Box<dyn Job>>,
) {
    type Manager = <DbConnection as Connection>::TransactionManager;
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let begun = match &mut conn {
            DbConnection::Sqlite(c) => {
                AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")
            }
            DbConnection::Postgres(_) => Manager::begin_transaction(&mut conn),
        };
        if let Err(err) = begun.map_err(PersistenceError::from) {
            tracing::error!(error = %err, "could not start a write transaction");
            for job in batch {
                job.fail(&err);
            }
            // The connection may be broken: start over with a new one.
            if let Ok(fresh) = url.establish(busy_timeout) {
                conn = fresh;
            }
            continue;
        }
        let mut completions = Vec::with_capacity(batch.len());
        let mut panicked = false;
        for job in batch {
            if panicked {
                // The transaction is in an unknown state: this job never runs.
                job.fail(&PersistenceError::Task("an earlier write in its batch panicked".into()));
                continue;
            }
            match catch_unwind(AssertUnwindSafe(|| job.run(&mut conn))) {
                Ok(completion) => completions.push(completion),
                // The panicking job's reply was dropped with it; its caller sees that.
                Err(_) => panicked = true,
            }
        }
        let committed = if panicked {
            Err(PersistenceError::Task("a write in this batch panicked".into()))
        } else {
            Manager::commit_transaction(&mut conn).map_err(PersistenceError::from)
        };
        let failure = committed.err();
        if failure.is_some() && !roll_back_everything(&mut conn) {
            // The connection cannot even roll back: start over with a new one.
            if let Ok(fresh) = url.establish(busy_timeout) {
                conn = fresh;
            }
        }
        for completion in completions {
            completion(failure.as_ref());
        }
    }
}
