//! Accounts: create, look up, change passwords.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use newspaper_domain::{Change, Email, RevocationReason, Timestamp, User, UserId, Username};

use crate::connection::on_backend;
use crate::database::write_transaction;
use crate::outbox::OutboxRepository;
use crate::schema::users;
use crate::sql_functions::lower;
use crate::{DbConnection, PersistenceError};

/// A user together with their password hash, for authentication only.
#[derive(Debug, Clone)]
pub struct UserRecord {
    /// The public part.
    pub user: User,
    /// bcrypt hash of the password.
    pub password_hash: String,
}

/// What is needed to create an account.
#[derive(Debug, Clone)]
pub struct NewUser<'a> {
    /// Normalised email; unique.
    pub email: &'a Email,
    /// Display name.
    pub username: &'a Username,
    /// bcrypt hash of the password.
    pub password_hash: &'a str,
    /// Whether the user is staff.
    pub is_staff: bool,
    /// When the account was created.
    pub date_joined: Timestamp,
}

#[derive(Insertable)]
#[diesel(table_name = users)]
struct NewUserRow<'a> {
    email: &'a str,
    username: &'a str,
    password_hash: &'a str,
    is_staff: bool,
    is_active: bool,
    date_joined: NaiveDateTime,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = users)]
pub(crate) struct UserRow {
    pub(crate) id: i64,
    pub(crate) email: String,
    pub(crate) username: String,
    pub(crate) password_hash: String,
    pub(crate) is_staff: bool,
    pub(crate) is_active: bool,
    pub(crate) date_joined: NaiveDateTime,
}

impl From<UserRow> for UserRecord {
    fn from(row: UserRow) -> Self {
        UserRecord {
            user: User {
                id: UserId(row.id),
                email: row.email,
                username: row.username,
                is_staff: row.is_staff,
                is_active: row.is_active,
                date_joined: row.date_joined.and_utc(),
            },
            password_hash: row.password_hash,
        }
    }
}

/// Queries on the `users` table.
pub struct UserRepository;

impl UserRepository {
    /// The unique index that makes emails unique case-insensitively.
    pub const EMAIL_CONSTRAINT: &'static str = "users_email_key";

    /// Creates an account; fails with `Conflict { constraint: EMAIL_CONSTRAINT }` when the email
    /// is taken.
    pub fn create(conn: &mut DbConnection, new: &NewUser<'_>) -> Result<User, PersistenceError> {
        let row = NewUserRow {
            email: new.email.as_str(),
            username: new.username.as_str(),
            password_hash: new.password_hash,
            is_staff: new.is_staff,
            is_active: true,
            date_joined: new.date_joined.naive_utc(),
        };
        let id: i64 = on_backend!(conn, |c| diesel::insert_into(users::table)
            .values(&row)
            .returning(users::id)
            .get_result(c))?;
        Ok(User {
            id: UserId(id),
            email: new.email.as_str().to_owned(),
            username: new.username.as_str().to_owned(),
            is_staff: new.is_staff,
            is_active: true,
            date_joined: new.date_joined,
        })
    }

    /// The user with this id, if any.
    pub fn find_by_id(
        conn: &mut DbConnection,
        id: UserId,
    ) -> Result<Option<UserRecord>, PersistenceError> {
        Ok(users::table
            .find(id.0)
            .select(UserRow::as_select())
            .first(conn)
            .optional()?
            .map(UserRecord::from))
    }

    /// The user with this (normalised) email, if any; looked up through the unique index on
    /// `lower(email)`.
    pub fn find_by_email(
        conn: &mut DbConnection,
        email: &Email,
    ) -> Result<Option<UserRecord>, PersistenceError> {
        Ok(users::table
            .filter(lower(users::email).eq(email.as_str()))
            .select(UserRow::as_select())
            .first(conn)
            .optional()?
            .map(UserRecord::from))
    }

    /// Replaces the password hash and records the revocation of the user's live streams, in
    /// one transaction.
    pub fn set_password_hash(
        conn: &mut DbConnection,
        id: UserId,
        password_hash: &str,
        reason: RevocationReason,
        now: Timestamp,
    ) -> Result<(), PersistenceError> {
        write_transaction(conn, |conn| {
            let updated = diesel::update(users::table.find(id.0))
                .set(users::password_hash.eq(password_hash))
                .execute(conn)?;
            if updated == 0 {
                return Err(PersistenceError::NotFound);
            }
            revoke(conn, id, reason, now)
        })
    }

    /// Replaces the password hash only if it is still `expected`: the compare-and-swap that
    /// makes a reset token single-use even when presented twice at once. Returns whether it
    /// replaced it; if it did, the user's live streams are revoked with `reason` in the same
    /// transaction.
    pub fn replace_password_hash(
        conn: &mut DbConnection,
        id: UserId,
        expected: &str,
        password_hash: &str,
        reason: RevocationReason,
        now: Timestamp,
    ) -> Result<bool, PersistenceError> {
        write_transaction(conn, |conn| {
            let updated =
                diesel::update(users::table.find(id.0).filter(users::password_hash.eq(expected)))
                    .set(users::password_hash.eq(password_hash))
                    .execute(conn)?;
            if updated == 1 {
                revoke(conn, id, reason, now)?;
            }
            Ok(updated == 1)
        })
    }

    /// Grants or revokes staff rights; returns whether anything changed. Losing staff revokes
    /// the user's live streams (they may have been showing other people's drafts).
    pub fn set_staff(
        conn: &mut DbConnection,
        id: UserId,
        is_staff: bool,
        now: Timestamp,
    ) -> Result<bool, PersistenceError> {
        write_transaction(conn, |conn| {
            let changed = set_flag!(conn, id, users::is_staff, is_staff);
            if changed && !is_staff {
                revoke(conn, id, RevocationReason::StaffRevoked, now)?;
            }
            Ok(changed)
        })
    }

    /// Activates or deactivates an account; returns whether anything changed. Inactive users
    /// cannot log in, and deactivation ends their live streams.
    pub fn set_active(
        conn: &mut DbConnection,
        id: UserId,
        is_active: bool,
        now: Timestamp,
    ) -> Result<bool, PersistenceError> {
        write_transaction(conn, |conn| {
            let changed = set_flag!(conn, id, users::is_active, is_active);
            if changed && !is_active {
                revoke(conn, id, RevocationReason::Deactivated, now)?;
            }
            Ok(changed)
        })
    }
}

/// Sets a boolean column of one user; `Ok(false)` if it already had that value, `NotFound` if
/// there is no such user.
macro_rules! set_flag {
    ($conn:expr, $id:expr, $column:expr, $value:expr) => {{
        let updated = diesel::update(users::table.find($id.0).filter($column.ne($value)))
            .set($column.eq($value))
            .execute($conn)?;
        if updated == 0 {
            let exists: bool =
                diesel::select(diesel::dsl::exists(users::table.find($id.0))).get_result($conn)?;
            if !exists {
                return Err(PersistenceError::NotFound);
            }
        }
        updated == 1
    }};
}
use set_flag;

/// Records, with the change that caused it, that `user`'s live streams lose their rights.
fn revoke(
    conn: &mut DbConnection,
    user: UserId,
    reason: RevocationReason,
    now: Timestamp,
) -> Result<(), PersistenceError> {
    OutboxRepository::append(conn, &Change::CredentialsRevoked { user, reason }, now).map(|_| ())
}
