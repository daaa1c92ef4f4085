//! Accounts: the user record and the rules for emails, usernames and passwords.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::time::rfc3339_millis;
use crate::{FieldError, Timestamp, UserId};

/// A user as the API shows it; never carries a password or its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    /// Primary key.
    pub id: UserId,
    /// Login email, lower-cased.
    pub email: String,
    /// Display name.
    pub username: String,
    /// Staff see and may change every post.
    pub is_staff: bool,
    /// Inactive users cannot log in and their tokens are refused.
    #[serde(skip_serializing, default = "active_default")]
    pub is_active: bool,
    /// When the account was created (RFC 3339, UTC).
    #[serde(with = "rfc3339_millis")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub date_joined: Timestamp,
}

impl User {
    /// This user as shown on their posts.
    pub fn as_author(&self) -> crate::AuthorRef {
        crate::AuthorRef { id: self.id, username: self.username.clone() }
    }
}

fn active_default() -> bool {
    true
}

/// A syntactically valid email address, trimmed and lower-cased, so that uniqueness is
/// case-insensitive. As Django's validator: an ASCII dot-atom local part of at most 64
/// characters, and a domain of at least two labels (letters, digits, inner hyphens; an
/// international domain in its `xn--` form), at most 254 characters in all.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

/// The characters an address may use before the `@`, besides dots between them.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~-".contains(c)
}

fn is_label(label: &str) -> bool {
    (1..=63).contains(&label.len())
        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

impl Email {
    /// The longest address accepted (RFC 5321 path limit).
    pub const MAX_LEN: usize = 254;
    /// The longest local part accepted.
    pub const MAX_LOCAL_LEN: usize = 64;
    /// What [`Email::parse`] accepts, as an ECMA-262 / Python regular expression (for the
    /// OpenAPI document).
    pub const PATTERN: &'static str = concat!(
        "^[",
        ws!(),
        "]*(?=[^@]{1,64}@)(?=[^",
        ws!(),
        "]{3,254}[",
        ws!(),
        "]*$)",
        "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*",
        "@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?",
        "(?:\\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+",
        "[",
        ws!(),
        "]*$"
    );

    /// Validates and normalises an address.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let invalid = || FieldError::new("Enter a valid email address.");
        let email = raw.trim();
        if email.is_empty() {
            return Err(FieldError::new("This field may not be blank."));
        }
        if email.len() > Self::MAX_LEN {
            return Err(invalid());
        }
        let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
        let local_ok = (1..=Self::MAX_LOCAL_LEN).contains(&local.len())
            && local.split('.').all(|atom| !atom.is_empty() && atom.chars().all(is_atext));
        let labels: Vec<&str> = domain.split('.').collect();
        if !local_ok || labels.len() < 2 || !labels.iter().all(|l| is_label(l)) {
            return Err(invalid());
        }
        Ok(Self(email.to_ascii_lowercase()))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the `@`.
    pub fn local_part(&self) -> &str {
        self.0.split('@').next().unwrap_or_default()
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A display name: 1 to 150 letters, digits and `@ . + - _`, as Django allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    /// The longest username accepted, in characters.
    pub const MAX_CHARS: usize = 150;
    /// What [`Username::parse`] accepts, as a regular expression (Python's Unicode `\w`, as
    /// Django's validator uses).
    pub const PATTERN: &'static str = concat!("^[", ws!(), "]*[\\w.@+-]{1,150}[", ws!(), "]*$");

    fn allowed(c: char) -> bool {
        c.is_alphanumeric() || matches!(c, '@' | '.' | '+' | '-' | '_')
    }

    /// Validates a chosen username (surrounding whitespace is trimmed; blank is an error).
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(FieldError::new("This field may not be blank."));
        }
        crate::check_max_chars(name, Self::MAX_CHARS)?;
        if !name.chars().all(Self::allowed) {
            return Err(FieldError::new(
                "Enter a valid username. This value may contain only letters, numbers, and \
                 @/./+/-/_ characters.",
            ));
        }
        Ok(Self(name.to_owned()))
    }

    /// The username given to someone who did not choose one: their email's local part.
    pub fn from_email(email: &Email) -> Self {
        let name: String = email
            .local_part()
            .chars()
            .filter(|c| Self::allowed(*c))
            .take(Self::MAX_CHARS)
            .collect();
        Self(if name.is_empty() { "user".to_owned() } else { name })
    }

    /// The username text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password that passed the strength rules; its text is never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// Passwords so common that an attacker tries them first (the head of Django's list).
const COMMON_PASSWORDS: &[&str] = &[
    "password",
    "password1",
    "password123",
    "12345678",
    "123456789",
    "1234567890",
    "qwerty123",
    "qwertyuiop",
    "iloveyou",
    "sunshine",
    "princess",
    "football",
    "baseball",
    "welcome1",
    "letmein1",
    "passw0rd",
    "abc12345",
    "abcd1234",
    "11111111",
    "00000000",
    "1q2w3e4r",
    "zaq12wsx",
    "trustno1",
    "superman",
    "starwars",
    "whatever",
    "michelle",
    "jennifer",
    "computer",
    "corvette",
    "mercedes",
    "qwertyui",
    "asdfghjk",
    "zxcvbnm1",
    "dragon12",
    "monkey12",
    "changeme",
    "internet",
    "liverpool",
    "chelsea1",
    "password!",
    "admin123",
    "welcome123",
    "qwerty12",
    "987654321",
    "88888888",
    "55555555",
    "aaaaaaaa",
    "1qaz2wsx",
];

impl Password {
    /// The shortest password accepted, in characters.
    pub const MIN_CHARS: usize = 8;
    /// The longest password accepted, in characters (passwords are hashed through SHA-256
    /// before bcrypt, so bcrypt's 72-byte limit does not apply; this bounds the work).
    pub const MAX_CHARS: usize = 128;
    /// What [`Password::parse`] can be seen to require without knowing the account: 8 to 128
    /// characters, not all ASCII digits, no NUL (the length is the schema's `minLength` and
    /// `maxLength`). Common passwords and ones like the email are refused too.
    pub const PATTERN: &'static str = "^[^\\u0000]*[^0-9\\u0000][^\\u0000]*$";

    /// Checks a new password against Django's default rules; returns every rule it breaks.
    pub fn parse(raw: &str, email: Option<&Email>) -> Result<Self, Vec<FieldError>> {
        let mut problems = Vec::new();
        let chars = raw.chars().count();
        if chars < Self::MIN_CHARS {
            problems.push(FieldError::new(format!(
                "This password is too short. It must contain at least {} characters.",
                Self::MIN_CHARS
            )));
        }
        if chars > Self::MAX_CHARS {
            problems.push(FieldError::new(format!(
                "Ensure this field has no more than {} characters.",
                Self::MAX_CHARS
            )));
        }
        if raw.contains('\0') {
            problems.push(FieldError::new("Null characters are not allowed."));
        }
        if !raw.is_empty() && raw.chars().all(|c| c.is_ascii_digit()) {
            problems.push(FieldError::new("This password is entirely numeric."));
        }
        let lowered = raw.to_lowercase();
        if COMMON_PASSWORDS.contains(&lowered.as_str()) {
            problems.push(FieldError::new("This password is too common."));
        }
        if let Some(email) = email {
            let local = email.local_part();
            if local.len() >= 4 && (lowered.contains(local) || local.contains(&lowered)) {
                problems.push(FieldError::new("The password is too similar to the email address."));
            }
        }
        if problems.is_empty() { Ok(Self(raw.to_owned())) } else { Err(problems) }
    }

    /// The password text, for hashing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_is_normalised_and_checked() {
        assert_eq!(Email::parse("  Ann@Example.COM ").unwrap().as_str(), "ann@example.com");
        for bad in [
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "a b@example.com",
            "ann@exa_mple.com",
            "ann@-x.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(Email::parse("").unwrap_err().0, "This field may not be blank.");
        for bad in [
            "ann.@example.com",
            ".ann@example.com",
            "an..n@example.com",
            "ännä@example.com",
            "ann@exämple.com",
            "ann@a.b-",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(Email::parse("o'brien+news@xn--exmple-cua.com").is_ok());
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(65))).is_err());
        assert!(Email::parse(&format!("a@{}.com", "b".repeat(64))).is_err());
        assert_eq!(Email::parse("ann@example.com").unwrap().local_part(), "ann");
    }

    #[test]
    fn username_rules_follow_django() {
        assert!(Username::parse("ann.lee+news@x_y-z").is_ok());
        assert!(Username::parse("ann lee").is_err());
        assert!(Username::parse(&"a".repeat(151)).is_err());
        let email = Email::parse("o'brien@example.com").unwrap();
        assert_eq!(Username::from_email(&email).as_str(), "obrien");
    }

    #[test]
    fn password_rules_report_every_problem() {
        let email = Email::parse("annabel@example.com").unwrap();
        assert!(Password::parse("correct horse battery", Some(&email)).is_ok());
        let problems = Password::parse("1234", None).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(Password::parse("Password", None).is_err());
        assert!(Password::parse("annabel-2026", Some(&email)).is_err());
        assert!(Password::parse(&"é".repeat(128), None).is_ok(), "characters, not bytes");
        assert!(Password::parse(&"x".repeat(129), None).is_err());
        assert_eq!(format!("{:?}", Password::parse("s3cret-pass", None).unwrap()), "Password(***)");
    }

    #[test]
    fn user_json_never_has_password_or_active_flag() {
        let user = User {
            id: UserId(1),
            email: "a@b.co".into(),
            username: "a".into(),
            is_staff: false,
            is_active: true,
            date_joined: crate::now(),
        };
        let json = serde_json::to_value(&user).unwrap();
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["date_joined", "email", "id", "is_staff", "username"]);
    }
}
