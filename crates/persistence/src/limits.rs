//! How long a statement may run. PostgreSQL stops statements itself (`statement_timeout`, set
//! on every connection). SQLite has no such setting, so list queries call a function of ours
//! on the rows they look at (one in 64, by id), which fails the statement once the deadline of
//! the read it belongs to has passed: an expensive search stops instead of holding a connection.

use std::cell::Cell;
use std::time::{Duration, Instant};

use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::{BigInt, Bool};
use diesel::sqlite::Sqlite;
use diesel::{QueryResult, SqliteConnection};

/// The SQL function list queries call on the rows they look at, on SQLite.
pub(crate) const DEADLINE_FUNCTION: &str = "newspaper_within_deadline";
/// The error a statement stopped by the deadline fails with.
pub(crate) const DEADLINE_MESSAGE: &str = "statement deadline exceeded";

thread_local! {
    /// The deadline of the read running on this thread, if any.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Sets the deadline of the read about to run on this thread; cleared when dropped.
pub(crate) struct DeadlineGuard(Option<Instant>);

impl DeadlineGuard {
    /// Statements run on this thread from now on stop after `timeout`.
    pub(crate) fn start(timeout: Duration) -> Self {
        let previous = DEADLINE.with(|d| d.replace(Some(Instant::now() + timeout)));
        Self(previous)
    }
}

impl Drop for DeadlineGuard {
    fn drop(&mut self) {
        DEADLINE.with(|d| d.set(self.0));
    }
}

/// What the per-row function returns: `true`, or, once the deadline passed, an error that
/// SQLite turns into the failure of the whole statement.
#[derive(Debug)]
struct WithinDeadline;

impl ToSql<Bool, Sqlite> for WithinDeadline {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        let expired = DEADLINE.with(|d| d.get().is_some_and(|deadline| Instant::now() >= deadline));
        if expired {
            return Err(DEADLINE_MESSAGE.into());
        }
        <bool as ToSql<Bool, Sqlite>>::to_sql(&true, out)
    }
}

/// Makes [`DEADLINE_FUNCTION`] available on an SQLite connection. It takes a column (the row
/// id), so SQLite calls it for each row rather than once per statement.
pub(crate) fn register_deadline_function(conn: &mut SqliteConnection) -> QueryResult<()> {
    conn.register_sql_function::<BigInt, Bool, i64, WithinDeadline, _>(
        DEADLINE_FUNCTION,
        false,
        |_row: i64| WithinDeadline,
    )
}

#[cfg(test)]
mod tests {
    use diesel::connection::SimpleConnection;
    use diesel::prelude::*;

    use super::*;

    #[test]
    fn a_scan_past_its_deadline_fails_and_the_next_read_runs() {
        let mut conn = SqliteConnection::establish(":memory:").unwrap();
        register_deadline_function(&mut conn).unwrap();
        conn.batch_execute(
            "CREATE TABLE t (id INTEGER PRIMARY KEY);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000)
             INSERT INTO t SELECT i FROM n;",
        )
        .unwrap();
        let query = format!("SELECT count(*) AS n FROM t WHERE {DEADLINE_FUNCTION}(id)");
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        let stopped = {
            let _deadline = DeadlineGuard::start(Duration::ZERO);
            diesel::sql_query(&query).get_result::<Count>(&mut conn)
        };
        let message = stopped.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains(DEADLINE_MESSAGE), "{message}");
        let counted = {
            let _deadline = DeadlineGuard::start(Duration::from_secs(60));
            diesel::sql_query(&query).get_result::<Count>(&mut conn).unwrap().n
        };
        assert_eq!(counted, 200_000);
        // Outside any read, there is no deadline.
        assert_eq!(diesel::sql_query(&query).get_result::<Count>(&mut conn).unwrap().n, 200_000);
    }
}
