//! Throwaway databases for test suites: a temp-file SQLite database, or a fresh PostgreSQL
//! database created for one test and dropped when it ends.

use diesel::connection::SimpleConnection;

use crate::{Database, DatabaseUrl, PersistenceError, PoolOptions};

/// The variable that points the suites at a PostgreSQL server (any database on it; each test
/// creates and drops its own). Without it, PostgreSQL variants of tests skip and say so.
pub const POSTGRES_URL_VAR: &str = "NEWSPAPER_TEST_POSTGRES_URL";

/// Set it (CI does) and a test whose service or tool is missing fails instead of skipping, so a
/// green run means everything ran.
pub const REQUIRE_SERVICES_VAR: &str = "NEWSPAPER_REQUIRE_SERVICES";

/// For a test that cannot run here (`why`: what is missing and how to provide it): says it is
/// skipped and returns, or fails when [`REQUIRE_SERVICES_VAR`] is set.
pub fn skip_unless_required(why: &str) {
    assert!(
        std::env::var_os(REQUIRE_SERVICES_VAR).is_none(),
        "{REQUIRE_SERVICES_VAR} is set, but {why}"
    );
    eprintln!("skipped: {why}");
}

/// The URL of a service from the variable `var`, or `None` when it is unset (after
/// [`skip_unless_required`] said which test, `what`, does not run).
pub fn service_url(var: &str, what: &str) -> Option<String> {
    let url = std::env::var(var).ok().filter(|v| !v.trim().is_empty());
    if url.is_none() {
        skip_unless_required(&format!("{var} is not set, so {what} does not run"));
    }
    url
}

/// A database that exists for as long as this value.
pub struct TestDatabase {
    url: DatabaseUrl,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl std::fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDatabase").field("url", &self.url).finish_non_exhaustive()
    }
}

impl TestDatabase {
    /// A new SQLite database in its own temporary directory.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let path = dir.path().join("test.db");
        Self {
            url: DatabaseUrl::Sqlite(path.to_string_lossy().into_owned()),
            _dir: Some(dir),
            postgres: None,
        }
    }

    /// The PostgreSQL server URL from [`POSTGRES_URL_VAR`], if set (see [`service_url`]).
    pub fn postgres_server_url() -> Option<String> {
        service_url(POSTGRES_URL_VAR, "the PostgreSQL variant")
    }

    /// A new, empty PostgreSQL database on the server named by [`POSTGRES_URL_VAR`], or `None`
    /// (after printing why) when the variable is unset.
    pub fn postgres_from_env() -> Option<Self> {
        Self::postgres_server_url().map(|server| {
            Self::postgres(&server).unwrap_or_else(|e| panic!("test database on {server}: {e}"))
        })
    }

    /// A new, empty PostgreSQL database on `server`.
    pub fn postgres(server: &str) -> Result<Self, PersistenceError> {
        let mut suffix = [0u8; 6];
        getrandom::fill(&mut suffix)
            .map_err(|e| PersistenceError::unavailable(format!("no randomness: {e}")))?;
        let name = format!("newspaper_test_{}", hex::encode(suffix));
        let mut admin = crate::connection::connect_postgres(server)?;
        admin.batch_execute(&format!("CREATE DATABASE \"{name}\""))?;
        let mut url =
            url::Url::parse(server).map_err(|e| PersistenceError::InvalidUrl(e.to_string()))?;
        url.set_path(&format!("/{name}"));
        Ok(Self {
            url: DatabaseUrl::Postgres(url.to_string()),
            _dir: None,
            postgres: Some((server.to_owned(), name)),
        })
    }

    /// Where the database is.
    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// A pool on it with migrations applied.
    pub fn migrated(&self) -> Database {
        let db = Database::connect(&self.url, PoolOptions::for_backend(self.url.backend()))
            .unwrap_or_else(|e| panic!("connect {}: {e}", self.url));
        db.run_migrations().unwrap_or_else(|e| panic!("migrate {}: {e}", self.url));
        db
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some((server, name)) = self.postgres.take() {
            match crate::connection::connect_postgres(&server) {
                Ok(mut admin) => {
                    if let Err(e) = admin
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    {
                        eprintln!("could not drop test database {name}: {e}");
                    }
                }
                Err(e) => eprintln!("could not drop test database {name}: {e}"),
            }
        }
    }
}

/// Declares each test twice, in a module named after it: `sqlite` always runs, `postgres` runs
/// when [`POSTGRES_URL_VAR`] is set and otherwise passes after printing that it skipped.
///
/// ```ignore
/// newspaper_persistence::backend_tests! {
///     fn creates_a_user(db) { let db = db.migrated(); /* ... */ }
/// }
/// ```
#[macro_export]
macro_rules! backend_tests {
    ($( $(#[$meta:meta])* fn $name:ident($db:ident) $body:block )*) => {
        $(
            $(#[$meta])*
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                #[test]
                fn sqlite() {
                    let $db = $crate::testing::TestDatabase::sqlite();
                    $body
                }

                #[test]
                fn postgres() {
                    let Some($db) = $crate::testing::TestDatabase::postgres_from_env() else {
                        return;
                    };
                    $body
                }
            }
        )*
    };
}

/// How the database answered the statements of a call: the indexes it searched or walked, and
/// the tables it read whole. For plan tests, so that a query which stops using its index fails
/// a test instead of slowing down in production.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Indexes used (by name; `<table> primary key` for SQLite's rowid).
    pub indexes: std::collections::BTreeSet<String>,
    /// Tables read row by row without an index.
    pub full_scans: std::collections::BTreeSet<String>,
    /// Sorts of rows no index delivered in order (SQLite's temporary B-trees; PostgreSQL's
    /// statistics do not tell).
    pub sorts: usize,
    /// The plans as the database printed them (SQLite), for failure messages.
    pub plans: Vec<String>,
    /// Table rows fetched through indexes, per table (PostgreSQL's statistics; empty on
    /// SQLite): what a query read beyond its index-only scans.
    pub rows_fetched: std::collections::BTreeMap<String, i64>,
}

/// Runs `call` and reports how the database answered its statements. On SQLite, each
/// statement is captured and explained (`EXPLAIN QUERY PLAN`). On PostgreSQL, `call` runs in a
/// transaction with sequential scans discouraged (tiny test tables would otherwise always be
/// scanned) and generic plans, as a read transaction has, and the transaction's own
/// statistics tell which indexes and scans it used; the transaction is rolled back.
pub fn access_of<T>(
    conn: &mut crate::DbConnection,
    call: impl FnOnce(&mut crate::DbConnection) -> T,
) -> (T, Access) {
    use std::sync::{Arc, Mutex};

    use diesel::connection::InstrumentationEvent;
    use diesel::{Connection, RunQueryDsl};

    match conn {
        crate::DbConnection::Sqlite(_) => {
            let seen: Arc<Mutex<Vec<String>>> = Arc::default();
            let sink = seen.clone();
            conn.set_instrumentation(move |event: InstrumentationEvent<'_>| {
                if let InstrumentationEvent::StartQuery { query, .. } = event {
                    let text = query.to_string();
                    let sql = text.split(" -- binds:").next().unwrap_or_default().to_owned();
                    if let Ok(mut seen) = sink.lock() {
                        seen.push(sql);
                    }
                }
            });
            let outcome = call(conn);
            conn.set_instrumentation(|_: InstrumentationEvent<'_>| {});
            let statements = seen.lock().map(|s| s.clone()).unwrap_or_default();
            let mut access = Access::default();
            #[derive(diesel::QueryableByName)]
            struct Step {
                #[diesel(sql_type = diesel::sql_types::Text)]
                detail: String,
            }
            for sql in statements.iter().filter(|s| s.trim_start().starts_with("SELECT")) {
                let steps: Vec<Step> = diesel::sql_query(format!("EXPLAIN QUERY PLAN {sql}"))
                    .load(conn)
                    .unwrap_or_else(|e| panic!("EXPLAIN {sql}: {e}"));
                let mut plan = format!("{sql}\n");
                for step in steps {
                    record_sqlite_step(&step.detail, &mut access);
                    plan.push_str(&format!("  {}\n", step.detail));
                }
                access.plans.push(plan);
            }
            (outcome, access)
        }
        crate::DbConnection::Postgres(_) => {
            #[derive(diesel::QueryableByName)]
            struct Count {
                #[diesel(sql_type = diesel::sql_types::Text)]
                name: String,
                #[diesel(sql_type = diesel::sql_types::Text)]
                kind: String,
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                scans: i64,
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                fetched: i64,
            }
            // The backend's not yet flushed statistics (earlier transactions included), read
            // before and after the call: the difference is the call's.
            type Counts = std::collections::BTreeMap<(String, String), (i64, i64)>;
            fn counts(conn: &mut crate::DbConnection) -> Result<Counts, diesel::result::Error> {
                let rows: Vec<Count> = diesel::sql_query(
                    "SELECT c.relname::text AS name, c.relkind::text AS kind,
                            pg_stat_get_xact_numscans(c.oid) AS scans,
                            pg_stat_get_xact_tuples_fetched(c.oid) AS fetched
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE c.relkind IN ('i', 'r') AND n.nspname = current_schema()",
                )
                .load(conn)?;
                Ok(rows.into_iter().map(|r| ((r.kind, r.name), (r.scans, r.fetched))).collect())
            }
            let mut result = None;
            let ran = conn.transaction::<(), diesel::result::Error, _>(|conn| {
                diesel::sql_query("SET LOCAL enable_seqscan = off").execute(conn)?;
                // The plans a read transaction runs with (see `Database::read_snapshot`).
                diesel::sql_query("SET LOCAL plan_cache_mode = force_generic_plan")
                    .execute(conn)?;
                let before = counts(conn)?;
                let outcome = call(conn);
                let after = counts(conn)?;
                let mut access = Access::default();
                for ((kind, name), (scans, fetched)) in after {
                    let (scans_before, fetched_before) =
                        before.get(&(kind.clone(), name.clone())).copied().unwrap_or_default();
                    if kind == "r" && fetched > fetched_before {
                        access.rows_fetched.insert(name.clone(), fetched - fetched_before);
                    }
                    if scans > scans_before {
                        if kind == "i" {
                            access.indexes.insert(name);
                        } else {
                            access.full_scans.insert(name);
                        }
                    }
                }
                result = Some((outcome, access));
                Err(diesel::result::Error::RollbackTransaction)
            });
            result.unwrap_or_else(|| panic!("the call could not be run in a transaction: {ran:?}"))
        }
    }
}

/// Reads one line of SQLite's `EXPLAIN QUERY PLAN`.
fn record_sqlite_step(detail: &str, access: &mut Access) {
    if detail.starts_with("USE TEMP B-TREE") {
        access.sorts += 1;
        return;
    }
    let words: Vec<&str> = detail.split_whitespace().collect();
    let (Some(&verb), Some(&table)) = (words.first(), words.get(1)) else { return };
    if verb != "SEARCH" && verb != "SCAN" {
        return;
    }
    // An FTS5 table reports "VIRTUAL TABLE INDEX n:..."; an `M` in it means MATCH used the
    // full-text index, anything else reads every row of the table.
    if detail.contains("VIRTUAL TABLE") {
        match words.last() {
            Some(index) if index.contains('M') => {
                access.indexes.insert(format!("{table} full-text index"));
            }
            _ => {
                access.full_scans.insert(table.to_owned());
            }
        }
        return;
    }
    match words.iter().position(|w| *w == "INDEX") {
        Some(at) => {
            if let Some(index) = words.get(at + 1) {
                access.indexes.insert((*index).to_owned());
            }
        }
        None if detail.contains("INTEGER PRIMARY KEY") => {
            access.indexes.insert(format!("{table} primary key"));
        }
        None if verb == "SCAN" => {
            access.full_scans.insert(table.to_owned());
        }
        None => {}
    }
}

/// Segments of SQLite's full-text search index now (`None` on PostgreSQL, which has none).
pub fn search_index_segments(
    conn: &mut crate::DbConnection,
) -> Result<Option<i64>, PersistenceError> {
    match conn {
        crate::DbConnection::Sqlite(sqlite) => Ok(Some(crate::search::index_segments(sqlite)?)),
        crate::DbConnection::Postgres(_) => Ok(None),
    }
}
