//! Writes through one connection, batched: jobs that arrive while a transaction runs share the
//! next one, each in its own savepoint, and learn their outcome only after the commit. One
//! commit per batch instead of one per request multiplies write throughput, and no writer ever
//! waits on SQLite's lock inside the process.
//!
//! Bounded on every side: the queue has a fixed capacity (a full queue fails new writes at
//! once), a caller that stops waiting before its job started abandons it (the job never runs,
//! so the caller's "unavailable" is the truth), and on PostgreSQL each batch first takes the
//! lock that orders all writers, so writers on several instances queue instead of deadlocking.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use diesel::Connection;
use diesel::connection::{AnsiTransactionManager, TransactionManager};
use tokio::sync::oneshot;

use crate::connection::ConnectionOptions;
use crate::database::write_transaction;
use std::mem::take;

use newspaper_domain::{AuthorRef, Post, Seq, Timestamp};

use crate::outbox::OutboxRepository;
use crate::search::IndexUpkeep;
use crate::{DatabaseUrl, DbConnection, NewPost, PersistenceError, PostRepository};

/// Jobs per transaction at most, so that one batch never holds the lock for long.
const MAX_BATCH: usize = 64;

const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const ABANDONED: u8 = 2;

/// What a job leaves to do once its batch committed (or failed to).
type Completion = Box<dyn FnOnce(Option<&Arc<PersistenceError>>) + Send>;

/// A closure waiting for the writer, with the way back to its caller.
trait Job: Send {
    /// Takes the job for running; false if its caller already gave up on it.
    fn claim(&self) -> bool;
    /// Runs in the batch's transaction, inside a savepoint of its own.
    fn run(self: Box<Self>, conn: &mut DbConnection) -> Completion;
    /// The batch could not even start.
    fn fail(self: Box<Self>, err: &Arc<PersistenceError>);
    /// The job as a post to create, which the writer may insert with the batch's other creates.
    fn into_create(self: Box<Self>) -> Result<PostCreate, Box<dyn Job>>;
}

/// What a job's caller is told once its batch committed (or failed to): its own result, or
/// the batch's failure.
fn reply_after_commit<T: Send + 'static, E: From<PersistenceError> + Send + 'static>(
    result: Result<T, E>,
    reply: oneshot::Sender<Result<T, E>>,
) -> Completion {
    Box::new(move |commit_error| {
        let outcome = match (result, commit_error) {
            (Ok(value), None) => Ok(value),
            (Ok(_), Some(err)) => Err(E::from(PersistenceError::of_batch(err, NOT_COMMITTED))),
            (Err(err), _) => Err(err),
        };
        let _ = reply.send(outcome);
    })
}

/// A post to create, handed to the writer as data rather than as a closure, so that the
/// consecutive creates of a batch become one statement (on PostgreSQL; `PostRepository::
/// create_many`).
pub(crate) struct PostCreate {
    post: (AuthorRef, NewPost, Timestamp),
    reply: oneshot::Sender<Result<(Post, Seq), PersistenceError>>,
    state: Arc<AtomicU8>,
}

impl Job for PostCreate {
    fn claim(&self) -> bool {
        self.state.compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    fn run(self: Box<Self>, conn: &mut DbConnection) -> Completion {
        let PostCreate { post: (author, new, at), reply, .. } = *self;
        let result = write_transaction(conn, |conn| PostRepository::create(conn, &author, new, at));
        reply_after_commit(result, reply)
    }

    fn fail(self: Box<Self>, err: &Arc<PersistenceError>) {
        let _ = self.reply.send(Err(PersistenceError::of_batch(err, NOT_COMMITTED)));
    }

    fn into_create(self: Box<Self>) -> Result<PostCreate, Box<dyn Job>> {
        Ok(*self)
    }
}

/// Runs claimed creates as one statement in a savepoint of their own; if that fails for one
/// create's sake (a constraint), runs each alone, so that only the failing ones fail. False if
/// one panicked (the batch is lost).
fn run_creates(
    conn: &mut DbConnection,
    creates: Vec<PostCreate>,
    completions: &mut Vec<Completion>,
) -> bool {
    let posts = creates.iter().map(|create| create.post.clone()).collect();
    let merged = catch_unwind(AssertUnwindSafe(|| {
        write_transaction(conn, |conn| PostRepository::create_many(conn, posts))
    }));
    match merged {
        Ok(Ok(created)) => {
            for (create, outcome) in creates.into_iter().zip(created) {
                completions.push(reply_after_commit(Ok(outcome), create.reply));
            }
            true
        }
        Ok(Err(err @ (PersistenceError::TimedOut | PersistenceError::Unavailable { .. }))) => {
            // Not one create's fault: running each alone would only wait as long again, each.
            let err = Arc::new(err);
            for create in creates {
                let _ = create.reply.send(Err(PersistenceError::of_batch(&err, NOT_COMMITTED)));
            }
            true
        }
        Ok(Err(_)) => {
            for create in creates {
                match catch_unwind(AssertUnwindSafe(|| Box::new(create).run(conn))) {
                    Ok(completion) => completions.push(completion),
                    Err(_) => return false,
                }
            }
            true
        }
        Err(_) => false,
    }
}

/// What the writes of a batch that failed as a whole are told.
const NOT_COMMITTED: &str = "the write could not be committed";

struct Closure<F, T, E> {
    f: F,
    reply: oneshot::Sender<Result<T, E>>,
    state: Arc<AtomicU8>,
}

impl<F, T, E> Job for Closure<F, T, E>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<PersistenceError> + Send + 'static,
{
    fn claim(&self) -> bool {
        self.state.compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    fn run(self: Box<Self>, conn: &mut DbConnection) -> Completion {
        let Closure { f, reply, .. } = *self;
        // Nested in the batch's transaction, so this is a savepoint: a failing job rolls back
        // its own changes only.
        reply_after_commit(write_transaction(conn, f), reply)
    }

    fn fail(self: Box<Self>, err: &Arc<PersistenceError>) {
        let _ = self.reply.send(Err(E::from(PersistenceError::of_batch(err, NOT_COMMITTED))));
    }

    fn into_create(self: Box<Self>) -> Result<PostCreate, Box<dyn Job>> {
        Err(self)
    }
}

/// A write handed to the writer: its outcome, once the batch it ran in ended.
pub(crate) struct Ticket<T, E> {
    outcome: oneshot::Receiver<Result<T, E>>,
    state: Arc<AtomicU8>,
}

impl<T, E: From<PersistenceError>> Ticket<T, E> {
    /// Waits for the outcome. If the writer has not started the job within `wait`, the job is
    /// abandoned (it will never run) and the caller is told the database is unavailable; once
    /// started, the job is waited for (its statements are bounded by the statement timeout).
    pub(crate) async fn outcome(mut self, wait: Duration) -> Result<T, E> {
        if let Ok(outcome) = tokio::time::timeout(wait, &mut self.outcome).await {
            return outcome.unwrap_or_else(|_| Err(writer_gone().into()));
        }
        let abandoned = self
            .state
            .compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if abandoned {
            return Err(PersistenceError::unavailable(
                "the database did not take the write in time",
            )
            .into());
        }
        self.outcome.await.unwrap_or_else(|_| Err(writer_gone().into()))
    }

    /// Waits for the outcome from a thread outside the async runtime, however long it takes.
    pub(crate) fn blocking_outcome(self) -> Result<T, E> {
        self.outcome.blocking_recv().unwrap_or_else(|_| Err(writer_gone().into()))
    }
}

/// A write whose reply never came: the writer thread panicked on it or is gone.
fn writer_gone() -> PersistenceError {
    PersistenceError::Task("the write failed in the database writer".into())
}

/// Upper bounds of the batch-size histogram.
pub const BATCH_SIZE_BOUNDS: [u64; 7] = [1, 2, 4, 8, 16, 32, 64];

/// What the writer has done, for metrics.
#[derive(Debug, Default)]
pub(crate) struct WriterCounters {
    /// Writes waiting in the queue now. Counted after the send, so that a count of n means n
    /// writes are really in the queue; the writer may take a job before its sender counts it,
    /// hence signed (briefly -1), where unsigned would wrap to 2^64 - 1.
    pub(crate) queued: AtomicIsize,
    /// Batches committed (or failed) so far, by size bucket (`BATCH_SIZE_BOUNDS`, then larger).
    pub(crate) batches: [AtomicU64; BATCH_SIZE_BOUNDS.len() + 1],
    /// Writes run in batches so far.
    pub(crate) writes: AtomicU64,
    /// Batches that failed as a whole.
    pub(crate) failed_batches: AtomicU64,
}

impl WriterCounters {
    fn record_batch(&self, size: usize, failed: bool) {
        let size = u64::try_from(size).unwrap_or(u64::MAX);
        let bucket =
            BATCH_SIZE_BOUNDS.iter().position(|b| size <= *b).unwrap_or(BATCH_SIZE_BOUNDS.len());
        self.batches[bucket].fetch_add(1, Ordering::Relaxed);
        self.writes.fetch_add(size, Ordering::Relaxed);
        if failed {
            self.failed_batches.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Handle to the writer thread.
#[derive(Clone)]
pub(crate) struct GroupCommitter {
    jobs: mpsc::SyncSender<Box<dyn Job>>,
    pub(crate) counters: Arc<WriterCounters>,
}

impl GroupCommitter {
    /// Opens the writer's own connection and starts its thread, with room for `capacity`
    /// waiting writes; the thread ends when the last handle is dropped.
    pub(crate) fn start(
        url: &DatabaseUrl,
        options: ConnectionOptions,
        capacity: usize,
    ) -> Result<Self, PersistenceError> {
        let conn = url.establish(&options)?;
        let (jobs, queue) = mpsc::sync_channel::<Box<dyn Job>>(capacity.max(1));
        let url = url.clone();
        let counters = Arc::new(WriterCounters::default());
        let thread_counters = counters.clone();
        std::thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || writer(conn, &url, &options, &queue, &thread_counters))
            .map_err(|e| PersistenceError::unavailable_because("cannot start the writer", e))?;
        Ok(Self { jobs, counters })
    }

    /// Queues `f`, or fails at once if the queue is full (the database is not keeping up).
    pub(crate) fn submit<T, E, F>(&self, f: F) -> Result<Ticket<T, E>, PersistenceError>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<PersistenceError> + Send + 'static,
    {
        let (reply, outcome) = oneshot::channel();
        let state = Arc::new(AtomicU8::new(QUEUED));
        self.enqueue(Box::new(Closure { f, reply, state: state.clone() }))?;
        Ok(Ticket { outcome, state })
    }

    /// Queues a post's create (see [`PostCreate`]), or fails at once if the queue is full.
    pub(crate) fn submit_create(
        &self,
        post: (AuthorRef, NewPost, Timestamp),
    ) -> Result<Ticket<(Post, Seq), PersistenceError>, PersistenceError> {
        let (reply, outcome) = oneshot::channel();
        let state = Arc::new(AtomicU8::new(QUEUED));
        self.enqueue(Box::new(PostCreate { post, reply, state: state.clone() }))?;
        Ok(Ticket { outcome, state })
    }

    fn enqueue(&self, job: Box<dyn Job>) -> Result<(), PersistenceError> {
        match self.jobs.try_send(job) {
            Ok(()) => {
                self.counters.queued.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(mpsc::TrySendError::Full(_)) => {
                Err(PersistenceError::unavailable("the write queue is full"))
            }
            Err(mpsc::TrySendError::Disconnected(_)) => Err(writer_gone()),
        }
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

/// Opens the batch's transaction. On PostgreSQL every batch, on every instance, first takes the
/// one lock that orders writers: all other locks are taken after it, so two writers can never
/// hold locks the other one wants (no deadlock), and what a write reads is current.
fn begin_batch(conn: &mut DbConnection) -> Result<(), PersistenceError> {
    type Manager = <DbConnection as Connection>::TransactionManager;
    match conn {
        DbConnection::Sqlite(c) => {
            AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")?;
        }
        DbConnection::Postgres(_) => {
            Manager::begin_transaction(conn)?;
            OutboxRepository::serialize_writers(conn)?;
        }
    }
    Ok(())
}

fn writer(
    mut conn: DbConnection,
    url: &DatabaseUrl,
    options: &ConnectionOptions,
    queue: &mpsc::Receiver<Box<dyn Job>>,
    counters: &WriterCounters,
) {
    type Manager = <DbConnection as Connection>::TransactionManager;
    let mut upkeep = IndexUpkeep::default();
    loop {
        let first = match upkeep.idle_before_step() {
            None => match queue.recv() {
                Ok(job) => job,
                Err(mpsc::RecvError) => return,
            },
            Some(idle) => match queue.recv_timeout(idle) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let DbConnection::Sqlite(sqlite) = &mut conn {
                        upkeep.step(sqlite);
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            },
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        counters.queued.fetch_sub(batch.len() as isize, Ordering::Relaxed);
        let size = batch.len();
        if let Err(err) = begin_batch(&mut conn) {
            counters.record_batch(size, true);
            let err = Arc::new(err);
            tracing::error!(
                error = &*err as &dyn std::error::Error,
                "could not start a write transaction"
            );
            for job in batch {
                job.fail(&err);
            }
            // The connection may be broken: start over with a new one.
            roll_back_everything(&mut conn);
            if let Ok(fresh) = url.establish(options) {
                conn = fresh;
            }
            continue;
        }
        let mut completions = Vec::with_capacity(batch.len());
        let mut panicked = false;
        // Round trips are what a batch costs on PostgreSQL: its consecutive creates go in one
        // statement (each other write runs after the creates queued before it).
        let merge_creates = matches!(conn, DbConnection::Postgres(_));
        let mut creates = Vec::new();
        for job in batch {
            if panicked {
                // The transaction is in an unknown state: this job never runs.
                job.fail(&Arc::new(PersistenceError::Task(
                    "an earlier write in its batch panicked".into(),
                )));
                continue;
            }
            if !job.claim() {
                // Its caller was already told the database did not take it in time.
                continue;
            }
            let job = if merge_creates {
                match job.into_create() {
                    Ok(create) => {
                        creates.push(create);
                        continue;
                    }
                    Err(job) => job,
                }
            } else {
                job
            };
            if !creates.is_empty() && !run_creates(&mut conn, take(&mut creates), &mut completions)
            {
                // The panicking create's reply was dropped with it; its caller sees that.
                panicked = true;
                job.fail(&Arc::new(PersistenceError::Task(
                    "an earlier write in its batch panicked".into(),
                )));
                continue;
            }
            match catch_unwind(AssertUnwindSafe(|| job.run(&mut conn))) {
                Ok(completion) => completions.push(completion),
                // The panicking job's reply was dropped with it; its caller sees that.
                Err(_) => panicked = true,
            }
        }
        if !creates.is_empty() && !run_creates(&mut conn, creates, &mut completions) {
            panicked = true;
        }
        let committed = if panicked {
            Err(PersistenceError::Task("a write in this batch panicked".into()))
        } else {
            Manager::commit_transaction(&mut conn).map_err(PersistenceError::from)
        };
        let failure = committed.err().map(Arc::new);
        counters.record_batch(size, failure.is_some());
        if failure.is_none() && matches!(conn, DbConnection::Sqlite(_)) {
            upkeep.wrote();
        }
        if let Some(err) = &failure {
            tracing::error!(error = &**err as &dyn std::error::Error, "a write batch failed");
        }
        if failure.is_some() && !roll_back_everything(&mut conn) {
            // The connection cannot even roll back: start over with a new one.
            if let Ok(fresh) = url.establish(options) {
                conn = fresh;
            }
        }
        for completion in completions {
            completion(failure.as_ref());
        }
    }
}
