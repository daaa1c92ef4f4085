//! Pure types of the newspaper service: who reads and writes, what a post is, what changed, and the
//! rules every input must pass. Nothing here does I/O, so every other crate (and your own services)
//! can share these types.
//!
//! Use it wherever you handle newspaper data outside this workspace — a client, a consumer of the
//! live feed, a tool that validates posts before sending them — to get the same types and the
//! same validation rules (and, with the `openapi` feature, their OpenAPI schemas).
//!
//! ```
//! use newspaper_domain::{PostStatus, PostTitle, UserId, Viewer};
//!
//! let title = PostTitle::parse("Hello, world").unwrap();
//! assert_eq!(title.as_str(), "Hello, world");
//! assert!(PostTitle::parse("   ").is_err());
//!
//! let author = UserId(7);
//! let stranger = Viewer::User { id: UserId(8), is_staff: false };
//! assert!(!stranger.can_see(author, PostStatus::Draft));
//! assert!(stranger.can_see(author, PostStatus::Published));
//! assert!(Viewer::User { id: author, is_staff: false }.can_see(author, PostStatus::Draft));
//! ```

/// The characters `str::trim` removes (Unicode `White_Space`), for the regular expressions that
/// describe the validation rules in the OpenAPI document.
macro_rules! ws {
    () => {
        r"\t-\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000"
    };
}

mod event;
mod ids;
mod post;
mod time;
mod user;
mod validation;
mod viewer;

pub use event::{
    Change, EventKind, FeedEvent, PostChange, PostSnapshot, RevocationReason, StoredEvent,
};
pub use ids::{PostId, Seq, UserId};
pub use post::{
    AuthorRef, CONTENT_PATTERN, MAX_CONTENT_CHARS, Post, PostOrdering, PostOrderingField,
    PostStatus, PostTitle, check_max_chars, parse_content,
};
pub use time::{Timestamp, now, rfc3339_millis};
pub use user::{Email, Password, User, Username};
pub use validation::{FieldError, ValidationErrors};
pub use viewer::{Audience, Viewer};
