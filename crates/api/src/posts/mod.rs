//! Posts over HTTP: input validation, list queries and pagination, and the handlers.

mod cache;
mod cursor;
pub(crate) mod handlers;
mod input;
mod list;

pub use cache::{HeadCache, ListCache, PageReads};
pub use cursor::PostCursorPage;
pub use list::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, MAX_SEARCH_CHARS, PostPage};
