//! The connection pool, and the only way callers run queries: off the async threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel::Connection;
use diesel::connection::{AnsiTransactionManager, TransactionManager};

use crate::commit_watch::{CommitMark, CommitWatch};
use crate::connection::{ConnectionManager, ConnectionOptions, Liveness, is_alive};
use crate::group_commit::{BATCH_SIZE_BOUNDS, GroupCommitter};
use crate::head_reads::{HeadReads, Runner, Waiter};
use crate::limits::DeadlineGuard;
use crate::{
    Backend, DatabaseUrl, DbConnection, NewPost, PersistenceError, PostRepository, ReadHead,
    migrations,
};
use newspaper_domain::{AuthorRef, Post, Seq, Timestamp, UserId};

/// How the pool is sized and how long callers wait.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Most connections open at once.
    pub max_size: u32,
    /// How long a caller waits for the database — a free connection, an answer to a read, its
    /// turn at the writer — before failing with `Unavailable`.
    pub connection_timeout: Duration,
    /// How long an SQLite writer waits for another process's write lock.
    pub busy_timeout: Duration,
    /// How long one statement may run before it is stopped (`TimedOut`).
    pub statement_timeout: Duration,
    /// Writes waiting for the writer at most; past that, writes fail at once with
    /// `Unavailable` instead of queueing without bound while the database is slow or down.
    pub write_queue: usize,
    /// A PostgreSQL connection is tested before a read uses it only when the server has not
    /// answered a read for this long, or a read failed since it last did (a connection found
    /// dead after a read failed is dropped, and the read runs again on another).
    pub test_idle_after: Duration,
}

impl PoolOptions {
    /// Sensible sizes for `backend` on a small machine.
    pub fn for_backend(backend: Backend) -> Self {
        Self {
            max_size: match backend {
                Backend::Sqlite => 8,
                Backend::Postgres => 16,
            },
            connection_timeout: Duration::from_secs(5),
            busy_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
            write_queue: 1024,
            test_idle_after: Duration::from_millis(500),
        }
    }

    fn connection(&self) -> ConnectionOptions {
        ConnectionOptions {
            busy_timeout: self.busy_timeout,
            statement_timeout: self.statement_timeout,
        }
    }
}

/// A pooled connection.
pub type PooledConnection = r2d2::PooledConnection<ConnectionManager>;

/// A snapshot of the pool and the writer, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatabaseStats {
    /// Connections open in the pool.
    pub connections: u32,
    /// Of those, idle.
    pub idle_connections: u32,
    /// Callers waiting for a connection now.
    pub waiting: usize,
    /// Writes waiting for the writer now.
    pub write_queue: usize,
    /// Batches the writer ran, per size bucket: `(upper bound, cumulative count)`, the last
    /// bucket unbounded (`u64::MAX`).
    pub batch_sizes: Vec<(u64, u64)>,
    /// Writes run in batches.
    pub writes: u64,
    /// Batches that failed as a whole (could not begin or commit).
    pub failed_batches: u64,
}

/// Handle to the database: cheap to clone, safe to share between threads.
///
/// [`Database::read`] runs its closure on tokio's blocking pool, so a slow query never stalls an
/// async worker. [`Database::write`] hands its closure to one writer thread per database that
/// commits writes in batches (each in its own savepoint, told its outcome only after the
/// commit), so concurrent requests neither fail with "database is locked" nor pay for a commit
/// (and, on PostgreSQL, a WAL flush) each.
#[derive(Clone)]
pub struct Database {
    pool: r2d2::Pool<ConnectionManager>,
    url: DatabaseUrl,
    /// How long callers wait (see [`PoolOptions::connection_timeout`]).
    wait: Duration,
    statement_timeout: Duration,
    writer: Option<GroupCommitter>,
    /// Whether pooled connections need testing before use.
    liveness: Liveness,
    /// Callers waiting for a pooled connection now.
    waiting: Arc<AtomicUsize>,
    /// Serializes writes where there is no writer thread (an in-memory SQLite database).
    write_lock: Option<Arc<Mutex<()>>>,
    /// One permit per pooled connection: the async reads that may hold one at once.
    readers: Arc<tokio::sync::Semaphore>,
    /// Where the backend can tell without a query that nothing was committed (SQLite in WAL).
    commits: Option<Arc<CommitWatch>>,
    /// Head reads waiting to share a statement.
    heads: Arc<HeadReads>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").field("url", &self.url).finish_non_exhaustive()
    }
}

impl Database {
    /// Opens a pool for `url` (blocking: call at startup or inside `spawn_blocking`).
    pub fn connect(url: &DatabaseUrl, options: PoolOptions) -> Result<Self, PersistenceError> {
        // Every connection to `:memory:` is a different database, so such a pool holds one.
        let max_size = if url.is_in_memory() { 1 } else { options.max_size.max(1) };
        let liveness = Liveness::new(options.test_idle_after);
        let manager = ConnectionManager {
            url: url.clone(),
            options: options.connection(),
            liveness: liveness.clone(),
        };
        let pool = r2d2::Pool::builder()
            .max_size(max_size)
            .min_idle(Some(1))
            .connection_timeout(options.connection_timeout)
            // An embedded database cannot drop a connection; a server can, so check those.
            .test_on_check_out(url.backend() == Backend::Postgres)
            .build(manager)?;
        let (writer, write_lock) = if url.is_in_memory() {
            // The writer needs a connection of its own, which `:memory:` cannot share.
            (None, Some(Arc::new(Mutex::new(()))))
        } else {
            // Writes serialize anyway (SQLite's single writer; the outbox lock on PostgreSQL),
            // so batching them into fewer commits is pure gain.
            (Some(GroupCommitter::start(url, options.connection(), options.write_queue)?), None)
        };
        let commits = CommitWatch::open(url, &options.connection())?.map(Arc::new);
        Ok(Self {
            pool,
            url: url.clone(),
            wait: options.connection_timeout,
            statement_timeout: options.statement_timeout,
            writer,
            liveness,
            waiting: Arc::default(),
            write_lock,
            readers: Arc::new(tokio::sync::Semaphore::new(max_size as usize)),
            commits,
            heads: Arc::default(),
        })
    }

    /// The pool's and the writer's state now.
    pub fn stats(&self) -> DatabaseStats {
        let state = self.pool.state();
        let mut stats = DatabaseStats {
            connections: state.connections,
            idle_connections: state.idle_connections,
            waiting: self.waiting.load(Ordering::Relaxed),
            ..DatabaseStats::default()
        };
        if let Some(writer) = &self.writer {
            let counters = &writer.counters;
            stats.write_queue = counters.queued.load(Ordering::Relaxed).max(0) as usize;
            stats.writes = counters.writes.load(Ordering::Relaxed);
            stats.failed_batches = counters.failed_batches.load(Ordering::Relaxed);
            let mut cumulative = 0;
            let bounds = BATCH_SIZE_BOUNDS.iter().copied().chain([u64::MAX]);
            for (bound, count) in bounds.zip(&counters.batches) {
                cumulative += count.load(Ordering::Relaxed);
                stats.batch_sizes.push((bound, cumulative));
            }
        }
        stats
    }

    /// A mark of what is committed now, read without a query where the backend allows it
    /// (SQLite in WAL mode; `None` otherwise, and now and then while a commit is under way):
    /// while the mark read later equals this one, nothing was committed in between, by this
    /// process or any other. Lets callers reuse what they read at a mark without asking the
    /// database again, and without missing a write made behind their back.
    pub fn commit_mark(&self) -> Option<CommitMark> {
        self.commits.as_ref()?.mark()
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.url.backend()
    }

    /// The URL it was opened with.
    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// A connection for synchronous callers (CLI commands, tests). Blocks.
    pub fn get(&self) -> Result<PooledConnection, PersistenceError> {
        Ok(self.pool.get()?)
    }

    /// Applies pending migrations for this backend; returns the versions applied. Blocks.
    pub fn run_migrations(&self) -> Result<Vec<String>, PersistenceError> {
        let mut conn = self.get()?;
        migrations::run_pending(&mut conn)
    }

    /// Runs a read-only closure on the blocking pool. Its statements stop at the statement
    /// timeout, and the caller gives up (`Unavailable`) if no answer comes within the wait: a
    /// database that hangs (an unreachable server) never holds a request longer than that.
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: Fn(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<PersistenceError> + Send + 'static,
    {
        let pool = self.pool.clone();
        let liveness = self.liveness.clone();
        let statement_timeout = self.statement_timeout;
        // Reads wait for a connection here, as tasks, rather than as blocking threads parked
        // on the pool: as many threads run as there are connections, and a burst of requests
        // costs no thread wake-ups for connections they cannot have yet.
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let permit = tokio::time::timeout(self.wait, self.readers.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        let permit = match permit {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) | Err(_) => {
                return Err(PersistenceError::unavailable("no pooled connection in time").into());
            }
        };
        let read = run_blocking(move || {
            let _permit = permit;
            let _deadline = DeadlineGuard::start(statement_timeout);
            let mut conn = pool.get().map_err(PersistenceError::from)?;
            let outcome = f(&mut conn);
            // An embedded database cannot drop a connection (and its pool tests none).
            if !matches!(*conn, DbConnection::Postgres(_)) {
                return outcome;
            }
            if outcome.is_ok() {
                liveness.answered();
                return outcome;
            }
            // Most failures are the caller's (a missing row, a bad token). The one that
            // matters here is a connection the server dropped while it sat in the pool: it
            // is dropped in turn, and the read, which changed nothing, runs again on a
            // connection tested first.
            liveness.doubted();
            if is_alive(&mut conn) {
                return outcome;
            }
            drop(conn);
            let mut conn = pool.get().map_err(PersistenceError::from)?;
            let outcome = f(&mut conn);
            if outcome.is_ok() {
                liveness.answered();
            }
            outcome
        });
        // A read has no effect, so abandoning it is safe; its thread ends when the
        // connection's own timeouts fire.
        match tokio::time::timeout(self.wait + statement_timeout, read).await {
            Ok(outcome) => outcome,
            Err(_) => {
                Err(PersistenceError::unavailable("the database did not answer in time").into())
            }
        }
    }

    /// Runs a read-only closure in one read transaction, so that every statement in it sees
    /// the same snapshot of the database (`REPEATABLE READ` on PostgreSQL; an SQLite read
    /// transaction holds one snapshot by nature). What makes `X-Feed-Seq` exact: the seq and
    /// the rows it describes are read from the same state.
    pub async fn read_snapshot<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: Fn(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<PersistenceError> + Send + 'static,
    {
        self.read(move |conn| snapshot_transaction(conn, &f)).await
    }

    /// [`PostRepository::read_head`] for `reader` and a list by `author`, as read after this
    /// call began. Reads that arrive while others are at the database wait for them and then
    /// go together ([`PostRepository::read_heads`]: one statement on PostgreSQL), so a burst
    /// of requests costs the database and the blocking pool a few trips, not one each.
    pub async fn read_head(
        &self,
        reader: Option<UserId>,
        author: Option<UserId>,
    ) -> Result<ReadHead, PersistenceError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if let Some(runner) = self.heads.enqueue(Waiter { key: (reader, author), reply }) {
            let this = self.clone();
            tokio::spawn(async move { this.run_head_batches(runner).await });
        }
        answer
            .await
            .unwrap_or_else(|_| Err(PersistenceError::Task("the head read was dropped".into())))
    }

    /// Reads batches of queued heads until none is left.
    async fn run_head_batches(&self, mut runner: Runner) {
        while let Some(batch) = runner.next_batch() {
            let keys: Vec<_> = batch.iter().map(|waiter| waiter.key).collect();
            let read = self.read(move |conn| PostRepository::read_heads(conn, &keys)).await;
            match read {
                Ok(heads) => {
                    for (waiter, head) in batch.into_iter().zip(heads) {
                        let _ = waiter.reply.send(Ok(head));
                    }
                }
                Err(err @ (PersistenceError::TimedOut | PersistenceError::Unavailable { .. })) => {
                    // Not one read's fault: reading each alone would only wait as long again.
                    let err = Arc::new(err);
                    for waiter in batch {
                        let _ = waiter.reply.send(Err(PersistenceError::of_batch(
                            &err,
                            "the read could not be made",
                        )));
                    }
                }
                Err(_) => {
                    // Each read alone, so that each is told its own error.
                    for Waiter { key: (reader, author), reply } in batch {
                        let this = self.clone();
                        tokio::spawn(async move {
                            let head = this
                                .read(move |conn| PostRepository::read_head(conn, reader, author))
                                .await;
                            let _ = reply.send(head);
                        });
                    }
                }
            }
        }
    }

    /// Runs a closure as one atomic write: committed if it returns `Ok`, rolled back if it
    /// returns `Err` (or panics). The result arrives only once the write is durable.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<PersistenceError> + Send + 'static,
    {
        if let Some(writer) = &self.writer {
            return match writer.submit(f) {
                Ok(ticket) => ticket.outcome(self.wait).await,
                Err(err) => Err(err.into()),
            };
        }
        let this = self.clone();
        run_blocking(move || this.write_in_own_transaction(f)).await
    }

    /// Creates a post by `author` with its `post_created` event, as
    /// [`PostRepository::create`] in a [`Database::write`] would; through the writer, the
    /// creates of one batch are one statement on PostgreSQL.
    pub async fn create_post(
        &self,
        author: AuthorRef,
        new: NewPost,
        at: Timestamp,
    ) -> Result<(Post, Seq), PersistenceError> {
        if let Some(writer) = &self.writer {
            return match writer.submit_create((author, new, at)) {
                Ok(ticket) => ticket.outcome(self.wait).await,
                Err(err) => Err(err),
            };
        }
        self.write(move |conn| PostRepository::create(conn, &author, new, at)).await
    }

    /// [`Database::write`] for synchronous callers (not from inside an async task). Blocks.
    pub fn write_blocking<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<PersistenceError> + Send + 'static,
    {
        if let Some(writer) = &self.writer {
            return match writer.submit(f) {
                Ok(ticket) => ticket.blocking_outcome(),
                Err(err) => Err(err.into()),
            };
        }
        self.write_in_own_transaction(f)
    }

    fn write_in_own_transaction<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E>,
        E: From<PersistenceError>,
    {
        // Take the in-process write lock before a connection, so queued writers do not hold
        // connections that readers need.
        let _serialized = self
            .write_lock
            .as_ref()
            .map(|lock| lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let mut conn = self.pool.get().map_err(PersistenceError::from)?;
        write_transaction(&mut conn, f)
    }
}

/// Runs `f` inside a write transaction (a savepoint when one is already open): `BEGIN IMMEDIATE` on SQLite (taking the write lock up
/// front, so a read-then-write never fails on a stale snapshot), a plain `BEGIN` on PostgreSQL.
pub(crate) fn write_transaction<T, E, F>(conn: &mut DbConnection, f: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E>,
    E: From<PersistenceError>,
{
    type Manager = <DbConnection as Connection>::TransactionManager;
    // Inside an open transaction this becomes a savepoint, so repository writes compose.
    let nested = in_transaction(conn)?;
    let begun = match conn {
        DbConnection::Sqlite(c) if !nested => {
            AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")
        }
        _ => Manager::begin_transaction(conn),
    };
    begun.map_err(PersistenceError::from)?;
    // A panic rolls back like an error would, and is reported as one, so the connection (and,
    // on SQLite, every other write of the batch) is left usable.
    let outcome = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn))) {
        Ok(outcome) => outcome,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %message, "a database write panicked; rolled back");
            Err(PersistenceError::Task(format!("the write panicked: {message}")).into())
        }
    };
    match outcome {
        Ok(value) => match Manager::commit_transaction(conn) {
            Ok(()) => Ok(value),
            Err(err) => {
                let _ = Manager::rollback_transaction(conn);
                Err(PersistenceError::from(err).into())
            }
        },
        Err(err) => {
            if let Err(rollback) = Manager::rollback_transaction(conn) {
                tracing::error!(error = %rollback, "rollback failed");
            }
            Err(err)
        }
    }
}

/// Whether `conn` is inside a transaction (or a savepoint).
pub(crate) fn in_transaction(conn: &mut DbConnection) -> Result<bool, PersistenceError> {
    type Manager = <DbConnection as Connection>::TransactionManager;
    Ok(Manager::transaction_manager_status_mut(conn).transaction_depth()?.is_some())
}

/// Runs `f` in a read-only transaction with one snapshot.
pub(crate) fn snapshot_transaction<T, E, F>(conn: &mut DbConnection, f: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E>,
    E: From<PersistenceError>,
{
    type Manager = <DbConnection as Connection>::TransactionManager;
    let begun = match conn {
        DbConnection::Sqlite(c) => AnsiTransactionManager::begin_transaction_sql(c, "BEGIN"),
        // Generic plans, set in the same round trip: PostgreSQL would otherwise plan a list's
        // statements anew at every run (a `LIMIT` given as a parameter makes its generic plan
        // look dear), and planning cost three times the run. A list's statements are written so
        // that any plan of them walks an index that holds every column they test (see
        // `PostRepository::list_at`); a search, whose best plan depends on its pattern, asks
        // for custom plans again.
        DbConnection::Postgres(c) => AnsiTransactionManager::begin_transaction_sql(
            c,
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
             SET LOCAL plan_cache_mode = force_generic_plan",
        ),
    };
    begun.map_err(PersistenceError::from)?;
    let outcome = f(conn);
    // Nothing was written, so ending the transaction either way is the same; a failure to end
    // it leaves the connection unusable, which r2d2 notices.
    let ended = match &outcome {
        Ok(_) => Manager::commit_transaction(conn),
        Err(_) => Manager::rollback_transaction(conn),
    };
    if let Err(err) = ended {
        tracing::warn!(error = %err, "could not end a read transaction");
        let _ = Manager::rollback_transaction(conn);
    }
    outcome
}

async fn run_blocking<T, E, F>(f: F) -> Result<T, E>
where
    F: FnOnce() -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<PersistenceError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(join) => Err(PersistenceError::Task(join.to_string()).into()),
    }
}
