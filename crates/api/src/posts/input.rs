//! A post body, checked field by field: required and optional fields, DRF's messages, unknown
//! and read-only fields ignored.

use newspaper_domain::{PostStatus, PostTitle, ValidationErrors, parse_content};
use newspaper_persistence::{NewPost, PostChanges};

use crate::json_body::JsonObject;

/// The validated fields of a post body.
#[derive(Debug, Clone)]
pub(crate) struct PostInput {
    title: Option<PostTitle>,
    content: Option<String>,
    status: Option<PostStatus>,
}

impl PostInput {
    /// Validates a body; `full` (create, PUT) makes `title` required.
    pub(crate) fn parse(body: &JsonObject, full: bool) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let title = if full {
            body.required_str("title", &mut errors)
        } else {
            body.optional_str("title", &mut errors)
        }
        .and_then(|raw| errors.check("title", PostTitle::parse(raw)));
        let content = body
            .optional_str("content", &mut errors)
            .and_then(|raw| errors.check("content", parse_content(raw)));
        let status = body
            .optional_str("status", &mut errors)
            .and_then(|raw| errors.check("status", raw.parse::<PostStatus>()));
        errors.into_result(PostInput { title, content, status })
    }

    /// The post to create; `None` if the title is missing (only possible for a partial body).
    pub(crate) fn into_new_post(self) -> Option<NewPost> {
        Some(NewPost {
            title: self.title?,
            content: self.content.unwrap_or_default(),
            status: self.status.unwrap_or_default(),
        })
    }

    /// The changes to apply; fields not sent are left as they are.
    pub(crate) fn into_changes(self) -> PostChanges {
        PostChanges { title: self.title, content: self.content, status: self.status }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn body(v: serde_json::Value) -> JsonObject {
        JsonObject(v.as_object().cloned().unwrap())
    }

    fn errors(v: serde_json::Value, full: bool) -> serde_json::Value {
        serde_json::to_value(PostInput::parse(&body(v), full).unwrap_err()).unwrap()
    }

    #[test]
    fn create_requires_a_valid_title_and_status() {
        assert_eq!(errors(json!({}), true), json!({"title": ["This field is required."]}));
        assert_eq!(
            errors(json!({"title": " ", "status": "live", "content": null}), true),
            json!({
                "title": ["This field may not be blank."],
                "status": ["\"live\" is not a valid choice."],
                "content": ["This field may not be null."]
            })
        );
        assert_eq!(
            errors(json!({"title": 5}), true),
            json!({"title": ["Not a valid string (got number)."]})
        );
    }

    #[test]
    fn defaults_and_ignored_fields() {
        let input = PostInput::parse(
            &body(json!({"title": "T", "id": 99, "author": {"id": 1}, "created_at": "x", "extra": true})),
            true,
        )
        .unwrap();
        let new = input.into_new_post().unwrap();
        assert_eq!(
            (new.title.as_str(), new.content.as_str(), new.status),
            ("T", "", PostStatus::Draft)
        );
    }

    #[test]
    fn partial_bodies_change_only_what_they_name() {
        let changes =
            PostInput::parse(&body(json!({"status": "published"})), false).unwrap().into_changes();
        assert!(changes.title.is_none() && changes.content.is_none());
        assert_eq!(changes.status, Some(PostStatus::Published));
    }
}
