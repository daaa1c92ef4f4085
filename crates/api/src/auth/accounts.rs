//! Creating an account: the one set of rules, whether the request comes from
//! `POST /api/auth/register/` or from `newspaper create-user`.

use newspaper_domain::{Email, Password, User, Username, ValidationErrors, now};
use newspaper_persistence::{DbConnection, NewUser, PersistenceError, UserRepository};

use crate::ApiError;

/// A validated request for an account.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// Normalised email.
    pub email: Email,
    /// A password that passed the strength rules.
    pub password: Password,
    /// The chosen username, or the email's local part.
    pub username: Username,
}

impl NewAccount {
    /// Checks the raw fields (`None` for a field not given), recording every problem under its
    /// field name.
    pub fn check(
        email: Option<&str>,
        password: Option<&str>,
        username: Option<&str>,
        errors: &mut ValidationErrors,
    ) -> Option<NewAccount> {
        let email = email.and_then(|raw| errors.check("email", Email::parse(raw)));
        let username = username.and_then(|raw| errors.check("username", Username::parse(raw)));
        let password = password
            .and_then(|raw| errors.check_all("password", Password::parse(raw, email.as_ref())));
        let (Some(email), Some(password), true) = (email, password, errors.is_empty()) else {
            return None;
        };
        let username = username.unwrap_or_else(|| Username::from_email(&email));
        Some(NewAccount { email, password, username })
    }

    /// Stores the account with its password hash. A taken email is a
    /// [`PersistenceError::Conflict`] that [`is_email_taken`] recognises.
    pub fn create(
        &self,
        conn: &mut DbConnection,
        password_hash: &str,
        is_staff: bool,
    ) -> Result<User, PersistenceError> {
        let new = NewUser {
            email: &self.email,
            username: &self.username,
            password_hash,
            is_staff,
            date_joined: now(),
        };
        UserRepository::create(conn, &new)
    }
}

/// Whether `err` says the email already has an account.
pub fn is_email_taken(err: &PersistenceError) -> bool {
    matches!(err, PersistenceError::Conflict { constraint } if constraint == UserRepository::EMAIL_CONSTRAINT)
}

/// What a client is told when the email already has an account.
pub const EMAIL_TAKEN: &str = "A user with this email already exists.";

/// The 400 for an email that already has an account.
pub(crate) fn email_taken() -> ApiError {
    ApiError::field("email", EMAIL_TAKEN)
}

/// A new password for the account with this email, or the 400 that names, under `field`, every
/// rule it breaks.
pub(crate) fn new_password(field: &str, raw: &str, email: &str) -> Result<Password, ApiError> {
    let mut errors = ValidationErrors::new();
    errors
        .check_all(field, Password::parse(raw, Email::parse(email).ok().as_ref()))
        .ok_or_else(|| errors.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_recorded_under_its_field() {
        let mut errors = ValidationErrors::new();
        assert!(NewAccount::check(Some("nope"), Some("123"), Some("a b"), &mut errors).is_none());
        let fields: Vec<&String> = errors.fields().keys().collect();
        assert_eq!(fields, ["email", "password", "username"]);
        let mut errors = ValidationErrors::new();
        let account =
            NewAccount::check(Some("Ann@Example.com"), Some("correct horse"), None, &mut errors)
                .unwrap();
        assert_eq!((account.email.as_str(), account.username.as_str()), ("ann@example.com", "ann"));
    }
}
