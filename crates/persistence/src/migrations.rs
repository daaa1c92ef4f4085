//! Embedded migrations, one folder per dialect, chosen by the connection's backend.

use diesel::Connection;
use diesel::connection::SimpleConnection;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::{DbConnection, PersistenceError};

const SQLITE: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
const POSTGRES: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

/// Key of the PostgreSQL advisory lock held while migrating ("migr" in ASCII).
pub const MIGRATION_LOCK_KEY: i64 = 0x6D69_6772;

/// Applies every pending migration; returns the versions applied. Instances starting together
/// take turns (an immediate transaction on SQLite, an advisory lock on PostgreSQL): the first
/// migrates, the others then find nothing to do.
pub fn run_pending(conn: &mut DbConnection) -> Result<Vec<String>, PersistenceError> {
    match conn {
        // One IMMEDIATE transaction around them all: a second process waits for the first,
        // then finds nothing pending.
        DbConnection::Sqlite(c) => c.immediate_transaction(|c| {
            c.run_pending_migrations(SQLITE)
                .map(versions)
                .map_err(|e| PersistenceError::Migration(e.into()))
        }),
        // One transaction around them all, under a lock held to its end: a second instance
        // waits for the first, then finds nothing pending. Neither the migrations (one may
        // rebuild an index over a large table) nor that wait is a request: neither stops at the
        // statement timeout the pool set for requests, which holds again after the transaction.
        DbConnection::Postgres(c) => c.transaction(|c| {
            c.batch_execute(&format!(
                "SET LOCAL statement_timeout = 0; SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"
            ))?;
            c.run_pending_migrations(POSTGRES)
                .map(versions)
                .map_err(|e| PersistenceError::Migration(e.into()))
        }),
    }
}

/// Reverts every applied migration, newest first; returns the versions reverted.
pub fn revert_all(conn: &mut DbConnection) -> Result<Vec<String>, PersistenceError> {
    let reverted = match conn {
        DbConnection::Sqlite(c) => c.revert_all_migrations(SQLITE).map(versions),
        DbConnection::Postgres(c) => c.revert_all_migrations(POSTGRES).map(versions),
    };
    reverted.map_err(|e| PersistenceError::Migration(e.into()))
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
    pending.map_err(|e| PersistenceError::Migration(e.into()))
}

fn versions(list: Vec<diesel::migration::MigrationVersion<'_>>) -> Vec<String> {
    list.into_iter().map(|v| v.to_string()).collect()
}
