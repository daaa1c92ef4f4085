//! Throwaway databases for test suites: a temp-file SQLite database, or a fresh PostgreSQL
//! database created for one test and dropped when it ends.

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

use crate::{Database, DatabaseUrl, PersistenceError, PoolOptions};

/// The variable that points the suites at a PostgreSQL server (any database on it; each test
/// creates and drops its own). Without it, PostgreSQL variants of tests skip and say so.
pub const POSTGRES_URL_VAR: &str = "NEWSPAPER_TEST_POSTGRES_URL";

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

    /// The PostgreSQL server URL from [`POSTGRES_URL_VAR`], if set.
    pub fn postgres_server_url() -> Option<String> {
        std::env::var(POSTGRES_URL_VAR).ok().filter(|v| !v.trim().is_empty())
    }

    /// A new, empty PostgreSQL database on the server named by [`POSTGRES_URL_VAR`], or `None`
    /// (after printing why) when the variable is unset.
    pub fn postgres_from_env() -> Option<Self> {
        match Self::postgres_server_url() {
            Some(server) => Some(
                Self::postgres(&server)
                    .unwrap_or_else(|e| panic!("test database on {server}: {e}")),
            ),
            None => {
                eprintln!(
                    "skipped: {POSTGRES_URL_VAR} is not set, so the PostgreSQL variant does not run"
                );
                None
            }
        }
    }

    /// A new, empty PostgreSQL database on `server`.
    pub fn postgres(server: &str) -> Result<Self, PersistenceError> {
        let mut suffix = [0u8; 6];
        getrandom::fill(&mut suffix).map_err(|e| PersistenceError::Unavailable(e.to_string()))?;
        let name = format!(
            "newspaper_test_{}",
            suffix.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let mut admin = PgConnection::establish(server)
            .map_err(|e| PersistenceError::Unavailable(e.to_string()))?;
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
            match PgConnection::establish(&server) {
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
