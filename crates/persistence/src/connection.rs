//! One connection type for both databases, picked at run time from the URL.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection, SqliteConnection};

use crate::{PersistenceError, limits, search};

mod any {
    // The derive generates undocumented public helper types (`MultiBackend`, rows, binds).
    #![allow(missing_docs)]

    use diesel::{PgConnection, SqliteConnection};

    /// A connection to SQLite or PostgreSQL. Repositories take `&mut DbConnection`, so callers
    /// never care which one it is; the rare backend-specific statement matches on the variant.
    #[derive(diesel::MultiConnection)]
    pub enum DbConnection {
        /// An embedded SQLite database (the default).
        Sqlite(SqliteConnection),
        /// A PostgreSQL server.
        Postgres(PgConnection),
    }
}
pub use any::{DbConnection, MultiBackend};

/// Runs `$body` with `$c` bound to the inner connection: for the statements the multi-backend
/// connection cannot express (`RETURNING`, advisory locks), and for those every request runs,
/// since the multi-backend connection writes a statement's whole SQL text out again on each of
/// diesel's passes over it (its cacheability, its binds), even one known by its type.
macro_rules! on_backend {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::DbConnection::Sqlite($c) => $body,
            $crate::DbConnection::Postgres($c) => $body,
        }
    };
}
pub(crate) use on_backend;

/// Which database a URL points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

/// A parsed `NEWSPAPER_DATABASE_URL`.
///
/// `postgres://` and `postgresql://` select PostgreSQL; `sqlite://PATH`, `sqlite:PATH`, a bare
/// path or `:memory:` select SQLite. Any other scheme is refused rather than silently becoming
/// an SQLite file of that name.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// Path of an SQLite database file, or `:memory:`.
    Sqlite(String),
    /// A libpq connection URL.
    Postgres(String),
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Sqlite(path) => write!(f, "Sqlite({path:?})"),
            DatabaseUrl::Postgres(url) => write!(f, "Postgres({:?})", redact_password(url)),
        }
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Sqlite(path) => write!(f, "sqlite://{path}"),
            DatabaseUrl::Postgres(url) => f.write_str(&redact_password(url)),
        }
    }
}

/// Hides the password of a URL for logs.
fn redact_password(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => raw.to_owned(),
    }
}

impl DatabaseUrl {
    /// Classifies a URL; see the type's documentation for the accepted forms.
    pub fn parse(raw: &str) -> Result<Self, PersistenceError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(PersistenceError::InvalidUrl("the database URL is empty".into()));
        }
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres(raw.to_owned()));
        }
        if let Some(path) = raw.strip_prefix("sqlite://").or_else(|| raw.strip_prefix("sqlite:")) {
            if path.is_empty() {
                return Err(PersistenceError::InvalidUrl("sqlite URL without a path".into()));
            }
            return Ok(DatabaseUrl::Sqlite(path.to_owned()));
        }
        if let Some((scheme, _)) = raw.split_once("://") {
            return Err(PersistenceError::InvalidUrl(format!(
                "unsupported database scheme `{scheme}` (use sqlite:// or postgres://)"
            )));
        }
        Ok(DatabaseUrl::Sqlite(raw.to_owned()))
    }

    /// The URL as given, password included: for handing to another process, never for logs.
    pub fn as_connection_string(&self) -> &str {
        match self {
            DatabaseUrl::Sqlite(path) => path,
            DatabaseUrl::Postgres(url) => url,
        }
    }

    /// The backend this URL selects.
    pub fn backend(&self) -> Backend {
        match self {
            DatabaseUrl::Sqlite(_) => Backend::Sqlite,
            DatabaseUrl::Postgres(_) => Backend::Postgres,
        }
    }

    /// Whether this is an SQLite database that lives only inside one connection.
    pub fn is_in_memory(&self) -> bool {
        matches!(self, DatabaseUrl::Sqlite(path) if path == ":memory:" || path.contains("mode=memory"))
    }

    /// Opens one connection, set up the way every pooled connection is.
    pub fn establish(&self, options: &ConnectionOptions) -> Result<DbConnection, PersistenceError> {
        match self {
            DatabaseUrl::Sqlite(path) => {
                let mut conn = SqliteConnection::establish(path)
                    .map_err(|e| PersistenceError::unavailable_because("cannot open SQLite", e))?;
                limits::register_deadline_function(&mut conn)?;
                search::register_casefold_function(&mut conn)?;
                // WAL lets readers proceed during a write; NORMAL sync is durable at checkpoints
                // and safe against corruption; the busy timeout makes a second writer (another
                // process, a CLI) wait instead of failing with "database is locked".
                // Reads through a memory map and a larger page cache skip a read() per page.
                conn.batch_execute(&format!(
                    "PRAGMA busy_timeout = {};
                     PRAGMA journal_mode = WAL;
                     PRAGMA synchronous = NORMAL;
                     PRAGMA foreign_keys = ON;
                     PRAGMA mmap_size = 268435456;
                     PRAGMA cache_size = -16000;",
                    options.busy_timeout.as_millis()
                ))?;
                Ok(DbConnection::Sqlite(conn))
            }
            DatabaseUrl::Postgres(url) => {
                let mut conn = connect_postgres(&with_network_timeouts(url))?;
                // The server stops any statement (including a wait for a lock) past this.
                conn.batch_execute(&format!(
                    "SET statement_timeout = {}",
                    options.statement_timeout.as_millis().max(1)
                ))?;
                Ok(DbConnection::Postgres(conn))
            }
        }
    }
}

/// Opens a PostgreSQL connection. Every libpq connection of the process goes through here (or
/// calls [`init_tls`] first), so that OpenSSL is initialized without an exit handler: libpq
/// negotiates TLS whenever the server offers it, and OpenSSL's default clean-up at exit would
/// free its state while other threads (a pool's reaper, the writer) still close connections —
/// a double free that aborts the process as it ends.
pub fn connect_postgres(url: &str) -> Result<PgConnection, PersistenceError> {
    init_tls();
    PgConnection::establish(url)
        .map_err(|e| PersistenceError::unavailable_because("cannot connect to PostgreSQL", e))
}

/// Initializes OpenSSL for libpq once, without an exit handler (see [`connect_postgres`]).
pub fn init_tls() {
    openssl_sys::init();
}

/// What every connection is set up with.
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// How long an SQLite writer waits for another process's write lock.
    pub busy_timeout: Duration,
    /// How long one statement (on SQLite: one read) may run before it is stopped.
    pub statement_timeout: Duration,
}

/// libpq parameters that bound how long a dead or unreachable server can hold a caller: a
/// connect timeout, TCP keepalives, and a TCP user timeout (unacknowledged data fails the
/// connection). Parameters the URL sets itself are left as they are.
const NETWORK_TIMEOUTS: &[(&str, &str)] = &[
    ("connect_timeout", "5"),
    ("keepalives", "1"),
    ("keepalives_idle", "10"),
    ("keepalives_interval", "5"),
    ("keepalives_count", "3"),
    ("tcp_user_timeout", "10000"),
];

fn with_network_timeouts(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else { return raw.to_owned() };
    let present: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
    {
        let mut query = url.query_pairs_mut();
        for (key, value) in NETWORK_TIMEOUTS {
            if !present.iter().any(|p| p == key) {
                query.append_pair(key, value);
            }
        }
    }
    url.to_string()
}

/// r2d2 manager that opens connections through [`DatabaseUrl::establish`].
#[derive(Debug)]
pub struct ConnectionManager {
    pub(crate) url: DatabaseUrl,
    pub(crate) options: ConnectionOptions,
    pub(crate) liveness: Liveness,
}

/// Whether the server answered a moment ago, so a connection handed out now need not be
/// tested first (HikariCP's "alive bypass window"): under load a test per checkout is a round
/// trip per read for nothing, while after a quiet spell, or once a read has failed, every
/// checkout is tested again, so connections a restarted server dropped are replaced before
/// they are used.
#[derive(Debug, Clone)]
pub(crate) struct Liveness(Arc<Answers>);

#[derive(Debug)]
struct Answers {
    /// When the server last answered, in milliseconds after `epoch`; 0 for "not lately".
    at: AtomicU64,
    epoch: Instant,
    /// How long an answer vouches for every connection of the pool, in milliseconds.
    window: u64,
}

impl Liveness {
    /// Trusting connections for `window` after each answer.
    pub(crate) fn new(window: Duration) -> Self {
        let window = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        Self(Arc::new(Answers { at: AtomicU64::new(0), epoch: Instant::now(), window }))
    }

    fn now(&self) -> u64 {
        // Offset by one so that no answer ever reads as "not lately".
        u64::try_from(self.0.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// The server just answered a read.
    pub(crate) fn answered(&self) {
        self.0.at.store(self.now(), Ordering::Relaxed);
    }

    /// A read failed: test every connection until one answers again.
    pub(crate) fn doubted(&self) {
        self.0.at.store(0, Ordering::Relaxed);
    }

    fn vouches(&self) -> bool {
        let at = self.0.at.load(Ordering::Relaxed);
        at != 0 && self.now().saturating_sub(at) < self.0.window
    }
}

/// Tests `conn` with a trivial statement. One that fails is marked broken, so that the pool
/// drops it rather than hand it out again.
pub(crate) fn is_alive(conn: &mut DbConnection) -> bool {
    if conn.batch_execute("SELECT 1").is_ok() {
        return true;
    }
    on_backend!(conn, |c| {
        use diesel::connection::{AnsiTransactionManager, TransactionManager};
        AnsiTransactionManager::transaction_manager_status_mut(c).set_in_error();
    });
    false
}

/// A connection error as the pool keeps it: r2d2 stores only the text of the last one (in its
/// timeout error), so the text carries every cause — the driver's reason is the useful part.
#[derive(Debug)]
pub struct PoolConnectError(PersistenceError);

impl fmt::Display for PoolConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = std::error::Error::source(&self.0);
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl std::error::Error for PoolConnectError {}

impl r2d2::ManageConnection for ConnectionManager {
    type Connection = DbConnection;
    type Error = PoolConnectError;

    fn connect(&self) -> Result<DbConnection, PoolConnectError> {
        self.url.establish(&self.options).map_err(PoolConnectError)
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), PoolConnectError> {
        if self.liveness.vouches() {
            return Ok(());
        }
        conn.batch_execute("SELECT 1").map_err(|e| PoolConnectError(e.into()))
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        on_backend!(conn, |c| diesel::r2d2::R2D2Connection::is_broken(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_select_the_backend_by_scheme() {
        assert_eq!(
            DatabaseUrl::parse("newspaper.db").unwrap(),
            DatabaseUrl::Sqlite("newspaper.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite://x/y.db").unwrap(),
            DatabaseUrl::Sqlite("x/y.db".into())
        );
        assert_eq!(DatabaseUrl::parse("sqlite:y.db").unwrap(), DatabaseUrl::Sqlite("y.db".into()));
        assert!(DatabaseUrl::parse(":memory:").unwrap().is_in_memory());
        assert_eq!(DatabaseUrl::parse("postgresql://u@h/db").unwrap().backend(), Backend::Postgres);
        assert!(matches!(DatabaseUrl::parse("mysql://h/db"), Err(PersistenceError::InvalidUrl(_))));
        assert!(DatabaseUrl::parse("  ").is_err());
        assert!(DatabaseUrl::parse("sqlite://").is_err());
    }

    #[test]
    fn postgres_urls_get_network_timeouts_unless_they_set_their_own() {
        let url = with_network_timeouts("postgres://u@h/db?sslmode=require&connect_timeout=2");
        assert!(url.contains("sslmode=require") && url.contains("connect_timeout=2"), "{url}");
        assert_eq!(url.matches("connect_timeout").count(), 1, "{url}");
        assert!(url.contains("tcp_user_timeout=10000") && url.contains("keepalives=1"), "{url}");
    }

    #[test]
    fn passwords_never_reach_logs() {
        let url = DatabaseUrl::parse("postgres://user:hunter2@db.example/news").unwrap();
        assert!(!format!("{url} {url:?}").contains("hunter2"));
    }
}
