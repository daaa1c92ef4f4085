//! Refresh tokens that may no longer be used (rotated or logged out).

use diesel::prelude::*;
use newspaper_domain::{Timestamp, UserId};

use crate::connection::on_backend;
use crate::schema::refresh_token_blacklist as blacklist;
use crate::{DbConnection, PersistenceError};

/// Queries on the refresh-token blacklist.
pub struct RefreshTokenRepository;

impl RefreshTokenRepository {
    /// Blacklists a token by its `jti`. Returns `false` if it already was, which is how a token
    /// presented twice at once is caught: only one of the two inserts wins.
    pub fn blacklist(
        conn: &mut DbConnection,
        jti: &str,
        user: UserId,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<bool, PersistenceError> {
        // ON CONFLICT rather than catching the violation: on PostgreSQL a failed statement
        // would abort the whole transaction it runs in.
        let values = (
            blacklist::jti.eq(jti),
            blacklist::user_id.eq(user.0),
            blacklist::expires_at.eq(expires_at.naive_utc()),
            blacklist::blacklisted_at.eq(now.naive_utc()),
        );
        let inserted = on_backend!(conn, |c| diesel::insert_into(blacklist::table)
            .values(values)
            .on_conflict_do_nothing()
            .execute(c))?;
        Ok(inserted == 1)
    }

    /// Whether the token with this `jti` was blacklisted.
    pub fn is_blacklisted(conn: &mut DbConnection, jti: &str) -> Result<bool, PersistenceError> {
        Ok(diesel::select(diesel::dsl::exists(blacklist::table.find(jti))).get_result(conn)?)
    }

    /// Forgets entries whose token has expired anyway; returns how many.
    pub fn prune_expired(
        conn: &mut DbConnection,
        now: Timestamp,
    ) -> Result<usize, PersistenceError> {
        Ok(diesel::delete(blacklist::table.filter(blacklist::expires_at.lt(now.naive_utc())))
            .execute(conn)?)
    }
}
