//! Posts: every write also appends its event to the outbox, in the same transaction.

use chrono::NaiveDateTime;
use diesel::dsl::count_star;
use diesel::expression::functions::declare_sql_function;
use diesel::prelude::*;
use diesel::sql_types::Text;
use newspaper_domain::{
    AuthorRef, Post, PostChange, PostId, PostOrdering, PostOrderingField, PostStatus, PostTitle,
    Seq, Timestamp, UserId, Viewer,
};

use crate::connection::on_backend;
use crate::database::write_transaction;
use crate::outbox::OutboxRepository;
use crate::schema::{posts, users};
use crate::{DbConnection, PersistenceError};

#[declare_sql_function]
extern "SQL" {
    fn lower(x: Text) -> Text;
}

/// A post to create.
#[derive(Debug, Clone)]
pub struct NewPost {
    /// Validated title.
    pub title: PostTitle,
    /// Body text.
    pub content: String,
    /// Initial status.
    pub status: PostStatus,
}

/// Changes to apply to a post; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct PostChanges {
    /// New title.
    pub title: Option<PostTitle>,
    /// New body text.
    pub content: Option<String>,
    /// New status.
    pub status: Option<PostStatus>,
}

/// Filters, search, order and page of a post list.
#[derive(Debug, Clone)]
pub struct PostQuery {
    /// Only posts with this status.
    pub status: Option<PostStatus>,
    /// Only posts by this author.
    pub author: Option<UserId>,
    /// Case-insensitive substring of the title or content.
    pub search: Option<String>,
    /// Ordering terms, most significant first.
    pub ordering: Vec<PostOrdering>,
    /// Rows to skip.
    pub offset: u64,
    /// Rows to return.
    pub limit: u64,
}

impl Default for PostQuery {
    fn default() -> Self {
        Self {
            status: None,
            author: None,
            search: None,
            ordering: vec![PostOrdering::DEFAULT],
            offset: 0,
            limit: 10,
        }
    }
}

/// One page of a list and the size of the whole list.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// How many items match, over all pages.
    pub count: u64,
    /// The items of this page.
    pub items: Vec<T>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = posts)]
struct PostRow {
    id: i64,
    title: String,
    content: String,
    status: String,
    author_id: i64,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

impl PostRow {
    fn into_post(self, username: String) -> Result<Post, PersistenceError> {
        let status = self
            .status
            .parse::<PostStatus>()
            .map_err(|e| PersistenceError::Corrupt(format!("post {}: {e}", self.id)))?;
        Ok(Post {
            id: PostId(self.id),
            title: self.title,
            content: self.content,
            status,
            author: AuthorRef { id: UserId(self.author_id), username },
            created_at: self.created_at.and_utc(),
            updated_at: self.updated_at.and_utc(),
        })
    }
}

#[derive(Insertable)]
#[diesel(table_name = posts)]
struct NewPostRow<'a> {
    title: &'a str,
    content: &'a str,
    status: &'a str,
    author_id: i64,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

/// `%term%` for LIKE, with the wildcards of the term itself escaped.
fn like_pattern(term: &str) -> String {
    let mut pattern = String::with_capacity(term.len() + 2);
    pattern.push('%');
    for c in term.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// Queries on the `posts` table.
pub struct PostRepository;

impl PostRepository {
    /// Creates a post by `author` and appends its `post_created` event; returns the post and
    /// the event's seq.
    pub fn create(
        conn: &mut DbConnection,
        author: UserId,
        new: NewPost,
        now: Timestamp,
    ) -> Result<(Post, Seq), PersistenceError> {
        write_transaction(conn, |conn| {
            let username: String =
                users::table.find(author.0).select(users::username).first(conn)?;
            let row = NewPostRow {
                title: new.title.as_str(),
                content: &new.content,
                status: new.status.as_str(),
                author_id: author.0,
                created_at: now.naive_utc(),
                updated_at: now.naive_utc(),
            };
            let id: i64 = on_backend!(conn, |c| diesel::insert_into(posts::table)
                .values(&row)
                .returning(posts::id)
                .get_result(c))?;
            let post = Post {
                id: PostId(id),
                title: new.title.into_inner(),
                content: new.content,
                status: new.status,
                author: AuthorRef { id: author, username },
                created_at: now,
                updated_at: now,
            };
            let seq = OutboxRepository::append(conn, &PostChange::created(&post), now)?;
            Ok((post, seq))
        })
    }

    /// The post with this id, whoever may see it.
    pub fn find(conn: &mut DbConnection, id: PostId) -> Result<Option<Post>, PersistenceError> {
        posts::table
            .inner_join(users::table)
            .filter(posts::id.eq(id.0))
            .select((PostRow::as_select(), users::username))
            .first::<(PostRow, String)>(conn)
            .optional()?
            .map(|(row, username)| row.into_post(username))
            .transpose()
    }

    /// The post with this id if `viewer` may see it; drafts of others are "not found".
    pub fn find_visible_to(
        conn: &mut DbConnection,
        viewer: &Viewer,
        id: PostId,
    ) -> Result<Option<Post>, PersistenceError> {
        Ok(Self::find(conn, id)?.filter(|post| viewer.can_see(post.author.id, post.status)))
    }

    /// Applies `changes` to `current` (as loaded in this transaction), bumps `updated_at` and
    /// appends a `post_updated` event; returns the new post and the event's seq.
    pub fn update(
        conn: &mut DbConnection,
        current: &Post,
        changes: PostChanges,
        now: Timestamp,
    ) -> Result<(Post, Seq), PersistenceError> {
        write_transaction(conn, |conn| {
            let mut updated = current.clone();
            if let Some(title) = changes.title {
                updated.title = title.into_inner();
            }
            if let Some(content) = changes.content {
                updated.content = content;
            }
            if let Some(status) = changes.status {
                updated.status = status;
            }
            updated.updated_at = now;
            let rows = diesel::update(posts::table.find(current.id.0))
                .set((
                    posts::title.eq(&updated.title),
                    posts::content.eq(&updated.content),
                    posts::status.eq(updated.status.as_str()),
                    posts::updated_at.eq(now.naive_utc()),
                ))
                .execute(conn)?;
            if rows == 0 {
                return Err(PersistenceError::NotFound);
            }
            let seq = OutboxRepository::append(conn, &PostChange::updated(current, &updated), now)?;
            Ok((updated, seq))
        })
    }

    /// Deletes `current` and appends a `post_deleted` event; returns the event's seq.
    pub fn delete(
        conn: &mut DbConnection,
        current: &Post,
        now: Timestamp,
    ) -> Result<Seq, PersistenceError> {
        write_transaction(conn, |conn| {
            let rows = diesel::delete(posts::table.find(current.id.0)).execute(conn)?;
            if rows == 0 {
                return Err(PersistenceError::NotFound);
            }
            OutboxRepository::append(conn, &PostChange::deleted(current), now)
        })
    }

    /// One page of the posts `viewer` may see that match `query`, and how many match in all.
    pub fn list_visible_to(
        conn: &mut DbConnection,
        viewer: &Viewer,
        query: &PostQuery,
    ) -> Result<Page<Post>, PersistenceError> {
        // The same filters on two bases: the count reads `posts` alone (a covering index scan
        // for the common case), the page joins the authors' names for its few rows.
        macro_rules! filtered {
            ($base:expr) => {{
                let mut q = $base.into_boxed();
                q = match viewer {
                    Viewer::Anonymous => q.filter(posts::status.eq(PostStatus::Published.as_str())),
                    Viewer::User { is_staff: true, .. } => q,
                    Viewer::User { id, .. } => q.filter(
                        posts::status
                            .eq(PostStatus::Published.as_str())
                            .or(posts::author_id.eq(id.0)),
                    ),
                };
                if let Some(status) = query.status {
                    q = q.filter(posts::status.eq(status.as_str()));
                }
                if let Some(author) = query.author {
                    q = q.filter(posts::author_id.eq(author.0));
                }
                if let Some(term) = query.search.as_deref().filter(|t| !t.is_empty()) {
                    let pattern = like_pattern(term);
                    q = q.filter(
                        lower(posts::title).like(pattern.clone()).escape('\\').or(lower(
                            posts::content,
                        )
                        .like(pattern)
                        .escape('\\')),
                    );
                }
                q
            }};
        }

        let count: i64 = filtered!(posts::table).select(count_star()).first(conn)?;
        if query.limit == 0 || query.offset >= u64::try_from(count).unwrap_or_default() {
            return Ok(Page { count: u64::try_from(count).unwrap_or_default(), items: Vec::new() });
        }
        let mut page = filtered!(posts::table.inner_join(users::table))
            .select((PostRow::as_select(), users::username));
        for term in &query.ordering {
            page = match (term.field, term.descending) {
                (PostOrderingField::CreatedAt, false) => {
                    page.then_order_by(posts::created_at.asc())
                }
                (PostOrderingField::CreatedAt, true) => {
                    page.then_order_by(posts::created_at.desc())
                }
                (PostOrderingField::UpdatedAt, false) => {
                    page.then_order_by(posts::updated_at.asc())
                }
                (PostOrderingField::UpdatedAt, true) => {
                    page.then_order_by(posts::updated_at.desc())
                }
                (PostOrderingField::Title, false) => page.then_order_by(posts::title.asc()),
                (PostOrderingField::Title, true) => page.then_order_by(posts::title.desc()),
            };
        }
        // A total order, so that pages never repeat or skip rows with equal sort keys.
        let newest_first = query.ordering.first().is_none_or(|t| t.descending);
        page = if newest_first {
            page.then_order_by(posts::id.desc())
        } else {
            page.then_order_by(posts::id.asc())
        };
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let offset = i64::try_from(query.offset).unwrap_or(i64::MAX);
        let rows: Vec<(PostRow, String)> = page.limit(limit).offset(offset).load(conn)?;
        let items = rows
            .into_iter()
            .map(|(row, username)| row.into_post(username))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page { count: u64::try_from(count).unwrap_or_default(), items })
    }
}

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn like_pattern_escapes_wildcards_and_lowercases() {
        assert_eq!(like_pattern("Hello"), "%hello%");
        assert_eq!(like_pattern("100%_a\\b"), "%100\\%\\_a\\\\b%");
    }
}
