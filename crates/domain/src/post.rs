//! Posts: the content of the newspaper, and the rules their fields obey.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::time::rfc3339_millis;
use crate::{FieldError, PostId, Timestamp, UserId};

/// Whether a post is visible to everyone or only to its author and staff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum PostStatus {
    /// Visible to its author and staff only.
    #[default]
    Draft,
    /// Visible to everyone.
    Published,
}

impl PostStatus {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PostStatus::Draft => "draft",
            PostStatus::Published => "published",
        }
    }
}

impl fmt::Display for PostStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PostStatus {
    type Err = FieldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "draft" => Ok(PostStatus::Draft),
            "published" => Ok(PostStatus::Published),
            other => Err(FieldError::new(format!("\"{other}\" is not a valid choice."))),
        }
    }
}

/// A post title: trimmed, not blank, at most [`PostTitle::MAX_CHARS`] characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostTitle(String);

impl PostTitle {
    /// The longest title accepted, in characters.
    pub const MAX_CHARS: usize = 200;
    /// What [`PostTitle::parse`] accepts, as a regular expression: 1 to 200 characters once
    /// surrounding whitespace is trimmed, no NUL.
    pub const PATTERN: &'static str = concat!(
        "^[",
        ws!(),
        "]*[^",
        ws!(),
        r"\u0000](?:[^\u0000]{0,198}[^",
        ws!(),
        r"\u0000])?[",
        ws!(),
        "]*$"
    );

    /// Validates a raw title the way DRF's `CharField(max_length=200)` does.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(FieldError::new("This field may not be blank."));
        }
        reject_null_characters(trimmed)?;
        check_max_chars(trimmed, Self::MAX_CHARS)?;
        Ok(Self(trimmed.to_owned()))
    }

    /// The title text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The title text, owned.
    pub fn into_inner(self) -> String {
        self.0
    }
}

/// The longest post content accepted, in characters: long enough for any article, short
/// enough that storing, searching and sending a post has a bounded cost.
pub const MAX_CONTENT_CHARS: usize = 100_000;
/// What [`parse_content`] accepts besides its length, as a regular expression: no NUL.
pub const CONTENT_PATTERN: &str = r"^[^\u0000]*$";

/// Validates post content: any text up to [`MAX_CONTENT_CHARS`], blank allowed, kept exactly as
/// written.
pub fn parse_content(raw: &str) -> Result<String, FieldError> {
    reject_null_characters(raw)?;
    check_max_chars(raw, MAX_CONTENT_CHARS)?;
    Ok(raw.to_owned())
}

/// DRF's `max_length` check and message.
pub fn check_max_chars(raw: &str, max: usize) -> Result<(), FieldError> {
    // Bytes bound characters from above: most inputs are decided without counting.
    if raw.len() > max && raw.chars().count() > max {
        return Err(FieldError::new(format!(
            "Ensure this field has no more than {max} characters."
        )));
    }
    Ok(())
}

/// NUL cannot be stored in PostgreSQL text, and nobody types it on purpose.
fn reject_null_characters(raw: &str) -> Result<(), FieldError> {
    if raw.contains('\0') {
        Err(FieldError::new("Null characters are not allowed."))
    } else {
        Ok(())
    }
}

/// The author of a post as shown with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuthorRef {
    /// The author's user id.
    pub id: UserId,
    /// The author's username.
    pub username: String,
}

/// A post as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Post {
    /// Primary key.
    pub id: PostId,
    /// Title, at most 200 characters.
    pub title: String,
    /// Body text; may be empty.
    pub content: String,
    /// `draft` (author and staff only) or `published` (everyone).
    pub status: PostStatus,
    /// Who wrote it.
    pub author: AuthorRef,
    /// When it was created (RFC 3339, UTC).
    #[serde(with = "rfc3339_millis")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    /// When it last changed (RFC 3339, UTC).
    #[serde(with = "rfc3339_millis")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: Timestamp,
}

/// A field posts can be ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostOrderingField {
    /// Creation time.
    CreatedAt,
    /// Last modification time.
    UpdatedAt,
    /// Title, as stored.
    Title,
}

impl PostOrderingField {
    /// Every field, in the order the API documents them.
    pub const ALL: [PostOrderingField; 3] = [Self::CreatedAt, Self::UpdatedAt, Self::Title];

    /// The field's name in `?ordering=`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::CreatedAt => "created_at",
            Self::UpdatedAt => "updated_at",
            Self::Title => "title",
        }
    }
}

/// One ordering term: a field and a direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostOrdering {
    /// What to order by.
    pub field: PostOrderingField,
    /// Largest first when true.
    pub descending: bool,
}

impl PostOrdering {
    /// Newest first: the default order of every list.
    pub const DEFAULT: PostOrdering =
        PostOrdering { field: PostOrderingField::CreatedAt, descending: true };

    /// Parses DRF's `ordering` parameter (`title`, `-created_at`, comma-separated); like DRF,
    /// unknown fields are ignored, and nothing valid means the default order.
    pub fn parse_list(raw: &str) -> Vec<PostOrdering> {
        let terms: Vec<PostOrdering> = raw
            .split(',')
            .filter_map(|term| {
                let term = term.trim();
                let (descending, name) = match term.strip_prefix('-') {
                    Some(rest) => (true, rest),
                    None => (false, term),
                };
                let field = PostOrderingField::ALL.into_iter().find(|f| f.name() == name)?;
                Some(PostOrdering { field, descending })
            })
            .collect();
        if terms.is_empty() { vec![Self::DEFAULT] } else { terms }
    }

    /// The term as `?ordering=` spells it: `title`, `-created_at`.
    pub fn to_param(self) -> String {
        let sign = if self.descending { "-" } else { "" };
        format!("{sign}{}", self.field.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_is_trimmed_and_bounded() {
        assert_eq!(PostTitle::parse("  Hi  ").unwrap().as_str(), "Hi");
        assert_eq!(PostTitle::parse(" \n").unwrap_err().0, "This field may not be blank.");
        assert!(PostTitle::parse(&"é".repeat(200)).is_ok());
        assert_eq!(
            PostTitle::parse(&"é".repeat(201)).unwrap_err().0,
            "Ensure this field has no more than 200 characters."
        );
        assert_eq!(PostTitle::parse("a\0b").unwrap_err().0, "Null characters are not allowed.");
    }

    #[test]
    fn content_keeps_whitespace_but_not_nul() {
        assert_eq!(parse_content("  x\n").unwrap(), "  x\n");
        assert!(parse_content("").is_ok());
        assert!(parse_content("\0").is_err());
    }

    #[test]
    fn status_parses_only_known_choices() {
        assert_eq!("draft".parse::<PostStatus>().unwrap(), PostStatus::Draft);
        assert_eq!("published".parse::<PostStatus>().unwrap(), PostStatus::Published);
        assert_eq!(
            "Published".parse::<PostStatus>().unwrap_err().0,
            "\"Published\" is not a valid choice."
        );
        assert_eq!(serde_json::to_string(&PostStatus::Published).unwrap(), "\"published\"");
    }

    #[test]
    fn ordering_ignores_unknown_fields_and_defaults_to_newest_first() {
        assert_eq!(PostOrdering::parse_list(""), vec![PostOrdering::DEFAULT]);
        for field in PostOrderingField::ALL {
            for descending in [false, true] {
                let term = PostOrdering { field, descending };
                assert_eq!(PostOrdering::parse_list(&term.to_param()), vec![term]);
            }
        }
        assert_eq!(PostOrdering::parse_list("password,author"), vec![PostOrdering::DEFAULT]);
        assert_eq!(
            PostOrdering::parse_list("title, -updated_at,bogus"),
            vec![
                PostOrdering { field: PostOrderingField::Title, descending: false },
                PostOrdering { field: PostOrderingField::UpdatedAt, descending: true },
            ]
        );
    }
}
