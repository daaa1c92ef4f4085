//! Whether anyone — this process or another — has committed to an SQLite database since a
//! given moment, told without a query. In WAL mode every commit rewrites the header of the
//! wal-index (the `-shm` file next to the database), and SQLite's own readers compare that
//! header to know whether what they cached is still current
//! (<https://www.sqlite.org/walformat.html>, "The WAL-Index Header"). Reading it costs two
//! `pread`s of 48 bytes, where a query costs a trip to the blocking pool.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

use diesel::sql_types::Text;
use diesel::{QueryableByName, RunQueryDsl, SqliteConnection};

use crate::connection::ConnectionOptions;
use crate::{DatabaseUrl, DbConnection, PersistenceError};

/// Bytes in one copy of the wal-index header; two copies follow each other at offset 0.
const HEADER_LEN: usize = 48;
/// Offset of the header's `isInit` byte: 1 once the wal-index is built.
const IS_INIT: usize = 12;

/// A point in an SQLite database's history of commits, as [`crate::Database::commit_mark`]
/// reads it: while the mark read now equals one read earlier, nothing was committed between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommitMark([u8; HEADER_LEN]);

/// Reads the [`CommitMark`] of one SQLite database in WAL mode.
pub(crate) struct CommitWatch {
    shm: File,
    /// Keeps the wal-index alive: SQLite resets it only when its last connection closes, and a
    /// reset wal-index would be a file this watch no longer reads.
    _keeper: Mutex<SqliteConnection>,
}

#[derive(QueryableByName)]
struct Text1 {
    #[diesel(sql_type = Text)]
    value: String,
}

fn text(conn: &mut SqliteConnection, query: &str) -> Result<String, PersistenceError> {
    Ok(diesel::sql_query(query).get_result::<Text1>(conn)?.value)
}

impl CommitWatch {
    /// A watch of the database at `url`; `None` where there is no wal-index to read (not
    /// SQLite, in memory, or not in WAL mode), so callers query the database instead.
    pub(crate) fn open(
        url: &DatabaseUrl,
        options: &ConnectionOptions,
    ) -> Result<Option<Self>, PersistenceError> {
        if url.is_in_memory() {
            return Ok(None);
        }
        let DbConnection::Sqlite(mut keeper) = url.establish(options)? else { return Ok(None) };
        // A read maps the wal-index (building it if this is the first connection).
        if text(&mut keeper, "SELECT journal_mode AS value FROM pragma_journal_mode")? != "wal" {
            return Ok(None);
        }
        let file = text(
            &mut keeper,
            "SELECT file AS value FROM pragma_database_list WHERE name = 'main'",
        )?;
        if file.is_empty() {
            return Ok(None);
        }
        // Without it (a directory this process may not read, say) reads simply query.
        let Ok(shm) = File::open(format!("{file}-shm")) else { return Ok(None) };
        Ok(Some(Self { shm, _keeper: Mutex::new(keeper) }))
    }

    /// The mark now; `None` while a commit is rewriting the header, and the caller queries the
    /// database instead.
    pub(crate) fn mark(&self) -> Option<CommitMark> {
        // SQLite writes the second copy, then the first. Reading the first, then the second,
        // and finding them equal means neither was half-written (SQLite's readers do the same).
        let mut first = [0; HEADER_LEN];
        let mut second = [0; HEADER_LEN];
        self.shm.read_exact_at(&mut first, 0).ok()?;
        self.shm.read_exact_at(&mut second, HEADER_LEN as u64).ok()?;
        (first == second && first[IS_INIT] == 1).then_some(CommitMark(first))
    }
}

#[cfg(test)]
mod tests {
    use diesel::connection::SimpleConnection;

    use super::*;
    use crate::{Database, PoolOptions};

    fn open(path: &std::path::Path) -> Database {
        let url = DatabaseUrl::parse(path.to_str().unwrap()).unwrap();
        let db = Database::connect(&url, PoolOptions::for_backend(url.backend())).unwrap();
        db.run_migrations().unwrap();
        db
    }

    #[test]
    fn the_mark_moves_with_every_commit_from_any_connection_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("news.db");
        let db = open(&path);
        let before = db.commit_mark().expect("a file database in WAL mode has a mark");
        // Reads commit nothing.
        let mut conn = db.get().unwrap();
        crate::OutboxRepository::latest_seq(&mut conn).unwrap();
        drop(conn);
        assert_eq!(db.commit_mark(), Some(before));

        // Another handle (as another process would be) commits a change: the mark moves. (A
        // commit that changes no page writes nothing, and leaves the mark, rightly, as it was.)
        let other = open(&path);
        other
            .get()
            .unwrap()
            .batch_execute("UPDATE outbox_state SET pruned_seq = pruned_seq + 1")
            .unwrap();
        let after = db.commit_mark().unwrap();
        assert_ne!(after, before);
        assert_eq!(other.commit_mark(), Some(after), "both handles read the same wal-index");

        // And so does a commit of this handle's own writer.
        db.write_blocking(|conn| {
            conn.batch_execute("UPDATE outbox_state SET pruned_seq = pruned_seq + 1")
                .map_err(PersistenceError::from)
        })
        .unwrap();
        assert_ne!(db.commit_mark(), Some(after));
    }

    #[test]
    fn only_a_file_database_in_wal_mode_has_a_mark() {
        let url = DatabaseUrl::parse(":memory:").unwrap();
        let db = Database::connect(&url, PoolOptions::for_backend(url.backend())).unwrap();
        assert_eq!(db.commit_mark(), None);
    }
}
