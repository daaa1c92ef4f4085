//! Who a stream acts as, and for how long: the rights of an access token end when it expires
//! (unless the client sends a newer one) or when the user's credentials change.

use std::pin::Pin;
use std::time::Duration;

use newspaper_domain::{Timestamp, UserId, Viewer};
use newspaper_persistence::{DbConnection, PersistenceError, UserRepository};
use tokio::time::Sleep;

use crate::auth::{AuthUser, Claims, TokenService};
use crate::realtime::protocol::StreamUser;

/// The rights an authenticated stream holds.
pub(super) struct Credentials {
    /// Who.
    pub(super) user: StreamUser,
    /// The password fingerprint the token was issued for.
    password_version: String,
    /// When the token expires.
    pub(super) expires_at: Timestamp,
    /// Fires at `expires_at`.
    expiry: Pin<Box<Sleep>>,
}

impl Credentials {
    /// The rights of a checked access token.
    pub(super) fn new(user: &AuthUser, claims: &Claims) -> Self {
        let expires_at =
            chrono::DateTime::from_timestamp(claims.exp, 0).unwrap_or_else(chrono::Utc::now);
        let left = (expires_at - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO);
        Self {
            user: StreamUser {
                id: user.user.id,
                username: user.user.username.clone(),
                is_staff: user.user.is_staff,
            },
            password_version: claims.pwv.clone(),
            expires_at,
            expiry: Box::pin(tokio::time::sleep(left)),
        }
    }

    /// The identity events are filtered by.
    pub(super) fn viewer(&self) -> Viewer {
        Viewer::User { id: self.user.id, is_staff: self.user.is_staff }
    }

    /// The user.
    pub(super) fn user_id(&self) -> UserId {
        self.user.id
    }

    /// Resolves when the token expires.
    pub(super) async fn expired(&mut self) {
        self.expiry.as_mut().await;
    }

    /// What a check of these rights against the database needs.
    pub(super) fn rights(&self) -> Rights {
        Rights {
            user: self.user.id,
            password_version: self.password_version.clone(),
            is_staff: self.user.is_staff,
        }
    }
}

/// The rights a stream holds, detached from the stream so a blocking check can own them.
pub(super) struct Rights {
    user: UserId,
    password_version: String,
    is_staff: bool,
}

impl Rights {
    /// Whether these rights still stand, judged by the user as stored now: active, same
    /// password, and still staff if they were. Blocking: run it on the database pool.
    pub(super) fn still_valid(
        &self,
        conn: &mut DbConnection,
        tokens: &TokenService,
    ) -> Result<bool, PersistenceError> {
        let Some(record) = UserRepository::find_by_id(conn, self.user)? else {
            return Ok(false);
        };
        Ok(record.user.is_active
            && tokens.password_version(&record.password_hash) == self.password_version
            && (record.user.is_staff || !self.is_staff))
    }
}

/// The expiry of the stream's token, or never for an anonymous stream.
pub(super) async fn expiry(credentials: &mut Option<Box<Credentials>>) {
    match credentials {
        Some(credentials) => credentials.expired().await,
        None => std::future::pending().await,
    }
}
