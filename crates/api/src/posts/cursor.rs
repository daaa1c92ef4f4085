//! Cursor pagination as DRF's `CursorPagination` does it: `?cursor=` is an opaque position in
//! the list's order, so a page at any depth costs what the first page costs, and pages stay put
//! while posts are added or removed before them. `?cursor=` with no value is the first page.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SecondsFormat, Utc};
use newspaper_domain::{Post, PostId, PostOrdering, PostOrderingField};
use newspaper_persistence::{Keyset, SortKey};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ApiError;

/// A page of posts read by cursor. It has no `count`: counting is what a cursor spares.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostCursorPage {
    /// Absolute URL of the next page (its `cursor` is opaque).
    pub next: Option<String>,
    /// Absolute URL of the previous page (its `cursor` is opaque).
    pub previous: Option<String>,
    /// This page's posts.
    pub results: Vec<Post>,
}

/// What a cursor holds before it is encoded (JSON, then unpadded base64url).
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct CursorWire {
    /// The ordering the cursor belongs to, as `?ordering=` spells it.
    o: String,
    /// The sort key of the post at the position (RFC 3339 for times).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    k: Option<String>,
    /// The id of the post at the position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    i: Option<i64>,
    /// Backwards: the page holds the posts before the position.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    r: bool,
}

/// DRF's answer to a cursor it cannot read.
pub(crate) fn invalid_cursor() -> ApiError {
    ApiError::NotFound("Invalid cursor".into())
}

/// Reads a cursor for a list ordered by `ordering`; an empty one is the list's first page. A
/// cursor made for another ordering is as invalid as a forged one.
pub(crate) fn decode(raw: &str, ordering: PostOrdering) -> Result<Keyset, ApiError> {
    if raw.is_empty() {
        return Ok(Keyset { position: None, backwards: false });
    }
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid_cursor())?;
    let wire: CursorWire = serde_json::from_slice(&bytes).map_err(|_| invalid_cursor())?;
    if wire.o != ordering.to_param() {
        return Err(invalid_cursor());
    }
    let position = match (wire.k, wire.i) {
        (None, None) => None,
        (Some(key), Some(id)) => {
            let key = match ordering.field {
                PostOrderingField::CreatedAt | PostOrderingField::UpdatedAt => SortKey::Time(
                    DateTime::parse_from_rfc3339(&key)
                        .map_err(|_| invalid_cursor())?
                        .with_timezone(&Utc),
                ),
                PostOrderingField::Title => SortKey::Text(key),
            };
            Some((key, PostId(id)))
        }
        _ => return Err(invalid_cursor()),
    };
    Ok(Keyset { position, backwards: wire.r })
}

/// The cursor of the page after `post` (or, `backwards`, before it; with no post, the last
/// page) in a list ordered by `ordering`.
pub(crate) fn encode(ordering: PostOrdering, post: Option<&Post>, backwards: bool) -> String {
    let (k, i) = match post {
        None => (None, None),
        Some(post) => {
            let key = match SortKey::of(post, ordering.field) {
                // Every digit stored: a cursor must compare equal to the row it came from.
                SortKey::Time(at) => at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                SortKey::Text(text) => text,
            };
            (Some(key), Some(post.id.0))
        }
    };
    let wire = CursorWire { o: ordering.to_param(), k, i, r: backwards };
    // A struct of strings, numbers and a bool always serializes.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&wire).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use newspaper_domain::{AuthorRef, PostStatus, UserId};

    fn post(id: i64, title: &str) -> Post {
        let at = DateTime::parse_from_rfc3339("2026-11-29T10:00:00.123456Z").unwrap().to_utc();
        Post {
            id: PostId(id),
            title: title.into(),
            content: String::new(),
            status: PostStatus::Published,
            author: AuthorRef { id: UserId(1), username: "ann".into() },
            created_at: at,
            updated_at: at,
        }
    }

    #[test]
    fn a_cursor_reads_back_as_the_position_it_was_made_at() {
        let by_title = PostOrdering { field: PostOrderingField::Title, descending: false };
        let p = post(7, "Zürich, \"quoted\"");
        let keyset = decode(&encode(by_title, Some(&p), true), by_title).unwrap();
        assert_eq!(keyset.position, Some((SortKey::Text(p.title.clone()), PostId(7))));
        assert!(keyset.backwards);
        let newest = PostOrdering::DEFAULT;
        let keyset = decode(&encode(newest, Some(&p), false), newest).unwrap();
        assert_eq!(keyset.position, Some((SortKey::Time(p.created_at), PostId(7))));
        assert!(!keyset.backwards);
        let end = decode(&encode(newest, None, true), newest).unwrap();
        assert_eq!((end.position, end.backwards), (None, true));
        assert_eq!(decode("", newest).unwrap().position, None);
    }

    #[test]
    fn forged_or_foreign_cursors_are_invalid() {
        let newest = PostOrdering::DEFAULT;
        let by_title = PostOrdering { field: PostOrderingField::Title, descending: false };
        let made = encode(newest, Some(&post(1, "a")), false);
        let forged = |json: &str| URL_SAFE_NO_PAD.encode(json);
        for raw in [
            "%%%".to_owned(),
            "bm90IGpzb24".to_owned(),
            forged(r#"{"o":"-created_at","k":"yesterday","i":1}"#),
            forged(r#"{"o":"-created_at","k":"2026-11-29T10:00:00Z"}"#),
            forged(r#"{"o":"-created_at","i":"1"}"#),
            forged(r#"{"o":"-created_at","x":1}"#),
            forged(r#"{"o":"-password"}"#),
        ] {
            assert!(matches!(decode(&raw, newest), Err(ApiError::NotFound(_))), "{raw}");
        }
        assert!(matches!(decode(&made, by_title), Err(ApiError::NotFound(_))));
        assert!(decode(&made, newest).is_ok());
    }
}
