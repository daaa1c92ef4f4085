//! The one error type of the persistence layer. Causes are kept as sources (never flattened
//! into the message), so a log line can show the whole chain.

use std::sync::Arc;

use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// An underlying error, shared: a batch that fails as a whole reports the same cause to every
/// write in it.
pub type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

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
    /// No connection could be had in time, the database is unreachable, or it refused the
    /// work for now (a full write queue, a deadlock): the request may be retried.
    #[error("database unavailable: {reason}")]
    Unavailable {
        /// What happened, in our words.
        reason: String,
        /// The driver's or the pool's error, if there was one.
        #[source]
        cause: Option<Cause>,
    },
    /// The database URL names no backend this build supports.
    #[error("invalid database url: {0}")]
    InvalidUrl(String),
    /// A migration failed to apply or revert.
    #[error("migration failed")]
    Migration(#[source] Cause),
    /// The database rejected or failed a query.
    #[error("database query failed")]
    Query(#[source] DieselError),
    /// A stored value could not be decoded (an outbox payload, a status).
    #[error("stored data is corrupt: {what}")]
    Corrupt {
        /// Which value.
        what: String,
        /// Why it could not be decoded, if a decoder said.
        #[source]
        cause: Option<Cause>,
    },
    /// The blocking task running the query panicked or was cancelled.
    #[error("database task failed: {0}")]
    Task(String),
    /// A statement ran past its time limit and was stopped.
    #[error("a statement ran past its time limit and was stopped")]
    TimedOut,
}

impl PersistenceError {
    /// [`PersistenceError::Unavailable`] with no underlying error.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        PersistenceError::Unavailable { reason: reason.into(), cause: None }
    }

    /// [`PersistenceError::Unavailable`] caused by `cause`.
    pub fn unavailable_because(
        reason: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        PersistenceError::Unavailable { reason: reason.into(), cause: Some(Arc::new(cause)) }
    }

    /// What each caller of a batch (writes committed together, reads made in one statement)
    /// that failed as a whole is told: `reason`, with the batch's error shared as the cause (a
    /// time-out or a failed task as itself).
    pub(crate) fn of_batch(err: &Arc<PersistenceError>, reason: &str) -> PersistenceError {
        match &**err {
            PersistenceError::TimedOut => PersistenceError::TimedOut,
            PersistenceError::Task(why) => PersistenceError::Task(why.clone()),
            _ => PersistenceError::Unavailable { reason: reason.into(), cause: Some(err.clone()) },
        }
    }

    /// [`PersistenceError::Corrupt`]: `what` could not be decoded, for this reason.
    pub fn corrupt(
        what: impl Into<String>,
        cause: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        PersistenceError::Corrupt { what: what.into(), cause: cause.map(Cause::from) }
    }
}

impl From<DieselError> for PersistenceError {
    fn from(err: DieselError) -> Self {
        match err {
            DieselError::NotFound => PersistenceError::NotFound,
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, ref info) => {
                PersistenceError::Conflict {
                    constraint: info
                        .constraint_name()
                        .map(str::to_owned)
                        .unwrap_or_else(|| sqlite_constraint(info.message())),
                }
            }
            DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _) => {
                PersistenceError::unavailable_because("the connection was closed", err)
            }
            DieselError::DatabaseError(kind, ref info) if is_timeout(info.message()) => {
                tracing::debug!(?kind, message = info.message(), "statement stopped");
                PersistenceError::TimedOut
            }
            // Concurrent transactions that had to give way: the request may simply be retried.
            DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => {
                PersistenceError::unavailable_because("the transaction had to give way", err)
            }
            DieselError::DatabaseError(_, ref info)
                if info.message().starts_with("deadlock detected") =>
            {
                PersistenceError::unavailable_because("the transaction had to give way", err)
            }
            other => PersistenceError::Query(other),
        }
    }
}

impl From<r2d2::Error> for PersistenceError {
    fn from(err: r2d2::Error) -> Self {
        PersistenceError::unavailable_because("no pooled connection in time", err)
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
    use std::error::Error as _;

    use super::*;

    #[test]
    fn causes_are_sources_not_text() {
        let err = PersistenceError::unavailable_because(
            "could not connect",
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
        );
        assert_eq!(err.to_string(), "database unavailable: could not connect");
        assert_eq!(err.source().map(ToString::to_string), Some("refused".to_owned()));
        let query = PersistenceError::from(DieselError::RollbackTransaction);
        assert_eq!(query.to_string(), "database query failed");
        assert!(query.source().is_some());
    }

    #[test]
    fn sqlite_messages_name_the_constraint() {
        assert_eq!(
            sqlite_constraint("UNIQUE constraint failed: index 'users_email_key'"),
            "users_email_key"
        );
        assert_eq!(sqlite_constraint("UNIQUE constraint failed: users.email"), "users.email");
    }
}
