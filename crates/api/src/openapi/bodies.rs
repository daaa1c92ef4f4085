//! Request and error bodies as the OpenAPI document describes them. The handlers read bodies
//! field by field (`JsonObject`), to answer every problem in DRF's shape; these types exist to
//! state the contract those handlers keep. Patterns come from the domain's validation rules
//! (see [`super::rules`]).

use std::collections::HashMap;

use newspaper_domain::PostStatus;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

/// Body of `POST /api/auth/register/`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RegisterRequest {
    /// Login email (ASCII, as Django accepts it); unique, case-insensitively.
    #[schema(example = "ann@example.com", min_length = 3)]
    email: String,
    /// 8 to 128 characters, not entirely numeric, not common, not like the email.
    #[schema(example = "correct horse battery", min_length = 8, max_length = 128)]
    password: String,
    /// Display name (letters, digits, `@ . + - _`); defaults to the email's local part.
    #[schema(example = "ann", nullable = false)]
    username: Option<String>,
}

/// Body of `POST /api/auth/token/`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct LoginRequest {
    /// Login email.
    #[schema(example = "ann@example.com")]
    email: String,
    /// Password.
    #[schema(example = "correct horse battery")]
    password: String,
}

/// Body of `POST /api/auth/token/refresh/` and `/api/auth/logout/`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RefreshRequest {
    /// A refresh token.
    #[schema(min_length = 1)]
    refresh: String,
}

/// Body of `POST /api/auth/token/verify/`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct VerifyRequest {
    /// An access or refresh token.
    #[schema(min_length = 1)]
    token: String,
}

/// Body of `POST /api/auth/password-reset/`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PasswordResetRequest {
    /// The account's email.
    #[schema(example = "ann@example.com", min_length = 3)]
    email: String,
}

/// Body of `POST /api/auth/password-reset/confirm/`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PasswordResetConfirmRequest {
    /// From the reset request (the user id, base64url).
    #[schema(example = "MQ", pattern = "^[A-Za-z0-9_-]+={0,2}$")]
    uid: String,
    /// From the reset request; valid for an hour and only until the password changes.
    #[schema(min_length = 1)]
    token: String,
    /// The new password: 8 to 128 characters, not entirely numeric, not common.
    #[schema(example = "a brand new secret", min_length = 8, max_length = 128)]
    new_password: String,
}

/// Body of `POST /api/auth/password/change/`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PasswordChangeRequest {
    /// The current password.
    #[schema(min_length = 1)]
    old_password: String,
    /// The new password: 8 to 128 characters, not entirely numeric, not common.
    #[schema(example = "a brand new secret", min_length = 8, max_length = 128)]
    new_password: String,
}

/// Body of create and PUT. `id`, `author` and the timestamps are read-only and ignored if sent;
/// so is any unknown field.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PostWrite {
    /// 1 to 200 characters once surrounding whitespace is trimmed.
    #[schema(example = "Hello, world")]
    title: String,
    /// Any text up to 100,000 characters; may be empty (default).
    #[schema(max_length = 100_000, nullable = false, example = "First post")]
    content: Option<String>,
    // `draft` (default) or `published`: the schema is the enum's own, without a description
    // beside the `$ref` (some tools misread a `$ref` with siblings).
    #[schema(nullable = false)]
    status: Option<PostStatus>,
}

/// Body of PATCH: any of the fields; those not sent keep their values (an empty body changes
/// nothing but `updated_at`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PostPatch {
    /// 1 to 200 characters once surrounding whitespace is trimmed.
    #[schema(example = "Hello again", nullable = false)]
    title: Option<String>,
    /// Any text up to 100,000 characters; may be empty.
    #[schema(max_length = 100_000, nullable = false)]
    content: Option<String>,
    // `draft` or `published` (the enum's own schema, as above).
    #[schema(nullable = false)]
    status: Option<PostStatus>,
}

/// Field errors: `{"field": ["message", ...]}` (`non_field_errors` for the body as a whole).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"title": ["This field is required."]}))]
pub struct ValidationErrorBody(HashMap<String, Vec<String>>);

/// A 400: field errors, or `{"detail": ...}` when the body is not JSON at all.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum BadRequestBody {
    /// The fields that are wrong, and why.
    Fields(ValidationErrorBody),
    /// The body could not be read (`JSON parse error - ...`).
    Detail(crate::error::ErrorDetail),
}

/// An empty object.
#[derive(Serialize, ToSchema)]
pub struct Empty {}

/// A page of posts: numbered, with a `count` (the default), or by cursor (`?cursor=`).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum PostListPage {
    /// Page-number pagination.
    Numbered(crate::posts::PostPage),
    /// Cursor pagination.
    Cursor(crate::posts::PostCursorPage),
}

/// Query parameters of `GET /api/posts/`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListPostsParams {
    /// Page number from 1, or `last`; a page past the end is a 404.
    #[param(pattern = "^([1-9][0-9]*|last)$", example = "2")]
    page: Option<String>,
    /// Cursor pagination instead of page numbers: empty for the first page, then the opaque
    /// value of a `next` or `previous` link; any depth costs what the first page costs. A
    /// cursor belongs to the first `ordering` term it was made for; any other is a 404
    /// ("Invalid cursor").
    cursor: Option<String>,
    /// Rows per page, at least 1 (default 10); more than 100 is taken as 100.
    #[param(minimum = 1, example = 20)]
    page_size: Option<i64>,
    /// Only `draft` or only `published` posts.
    status: Option<PostStatus>,
    /// Only posts by this user id.
    author: Option<i64>,
    /// Case-insensitive text in the title or content, at most 100 characters.
    #[param(max_length = 100)]
    search: Option<String>,
    /// `created_at`, `updated_at` or `title`, `-` for descending, comma-separated
    /// (default `-created_at`); unknown fields are ignored.
    ordering: Option<String>,
}
