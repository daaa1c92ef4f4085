//! The one error type of the persistence layer.

use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// Everything that can go wrong storing or loading data.
#[derive(Debug, thiserror::Error)]
pub enum PersistenceError {
    /// The row asked for does not exist.
    #[error("record not found")]
    NotFound,
    /// A unique constraint (named) rejected the write.
    #[error("unique constraint `{constraint}` violated")]
    Conflict {
        /// The constraint or index name, e.g. `users_email_key`.
        constraint: String,
    },
    /// No connection could be had in time, or the database is unreachable.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database URL names no backend this build supports.
    #[error("invalid database url: {0}")]
    InvalidUrl(String),
    /// A migration failed to apply or revert.
    #[error("migration failed: {0}")]
    Migration(String),
    /// The database rejected or failed a query.
    #[error("database query failed: {0}")]
    Query(DieselError),
    /// A stored value could not be decoded (an outbox payload, a status).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The blocking task running the query panicked or was cancelled.
    #[error("database task failed: {0}")]
    Task(String),
    /// A statement ran past its time limit and was stopped.
    #[error("a statement ran past its time limit and was stopped")]
    TimedOut,
}

impl From<DieselError> for PersistenceError {
    fn from(err: DieselError) -> Self {
        match err {
            DieselError::NotFound => PersistenceError::NotFound,
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                PersistenceError::Conflict {
                    constraint: info
                        .constraint_name()
                        .map(str::to_owned)
                        .unwrap_or_else(|| sqlite_constraint(info.message())),
                }
            }
            DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, info) => {
                PersistenceError::Unavailable(info.message().to_owned())
            }
            DieselError::DatabaseError(kind, info) if is_timeout(info.message()) => {
                tracing::debug!(?kind, message = info.message(), "statement stopped");
                PersistenceError::TimedOut
            }
            // Concurrent transactions that had to give way: the request may simply be retried.
            DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, info) => {
                PersistenceError::Unavailable(info.message().to_owned())
            }
            DieselError::DatabaseError(_, info)
                if info.message().starts_with("deadlock detected") =>
            {
                PersistenceError::Unavailable(info.message().to_owned())
            }
            other => PersistenceError::Query(other),
        }
    }
}

impl From<r2d2::Error> for PersistenceError {
    fn from(err: r2d2::Error) -> Self {
        PersistenceError::Unavailable(err.to_string())
    }
}

/// PostgreSQL's `statement_timeout`, or the SQLite deadline of [`crate::limits`].
fn is_timeout(message: &str) -> bool {
    message.contains("canceling statement due to statement timeout")
        || message.contains(crate::limits::DEADLINE_MESSAGE)
}

/// SQLite reports no constraint name; recover it from the message, which reads
/// `UNIQUE constraint failed: index 'users_email_key'` or `UNIQUE constraint failed: users.email`.
fn sqlite_constraint(message: &str) -> String {
    let detail = message.rsplit(": ").next().unwrap_or(message);
    match detail.strip_prefix("index '") {
        Some(rest) => rest.trim_end_matches('\'').to_owned(),
        None => detail.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_messages_name_the_constraint() {
        assert_eq!(
            sqlite_constraint("UNIQUE constraint failed: index 'users_email_key'"),
            "users_email_key"
        );
        assert_eq!(sqlite_constraint("UNIQUE constraint failed: users.email"), "users.email");
    }
}
