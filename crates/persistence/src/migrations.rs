//! Embedded migrations, one folder per dialect, chosen by the connection's backend.

use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::{DbConnection, PersistenceError};

const SQLITE: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
const POSTGRES: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

/// Applies every pending migration; returns the versions applied.
pub fn run_pending(conn: &mut DbConnection) -> Result<Vec<String>, PersistenceError> {
    let applied = match conn {
        DbConnection::Sqlite(c) => c.run_pending_migrations(SQLITE).map(versions),
        DbConnection::Postgres(c) => c.run_pending_migrations(POSTGRES).map(versions),
    };
    applied.map_err(|e| PersistenceError::Migration(e.to_string()))
}

/// Reverts every applied migration, newest first; returns the versions reverted.
pub fn revert_all(conn: &mut DbConnection) -> Result<Vec<String>, PersistenceError> {
    let reverted = match conn {
        DbConnection::Sqlite(c) => c.revert_all_migrations(SQLITE).map(versions),
        DbConnection::Postgres(c) => c.revert_all_migrations(POSTGRES).map(versions),
    };
    reverted.map_err(|e| PersistenceError::Migration(e.to_string()))
}

/// Migrations not yet applied.
pub fn pending(conn: &mut DbConnection) -> Result<Vec<String>, PersistenceError> {
    let pending = match conn {
        DbConnection::Sqlite(c) => {
            c.pending_migrations(SQLITE).map(|m| m.iter().map(|m| m.name().to_string()).collect())
        }
        DbConnection::Postgres(c) => {
            c.pending_migrations(POSTGRES).map(|m| m.iter().map(|m| m.name().to_string()).collect())
        }
    };
    pending.map_err(|e| PersistenceError::Migration(e.to_string()))
}

fn versions(list: Vec<diesel::migration::MigrationVersion<'_>>) -> Vec<String> {
    list.into_iter().map(|v| v.to_string()).collect()
}
