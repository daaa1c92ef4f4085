//! Posts: every write also appends its event to the outbox, in the same transaction.

use chrono::NaiveDateTime;
use diesel::dsl::count_star;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use newspaper_domain::{
    AuthorRef, Post, PostChange, PostId, PostOrdering, PostOrderingField, PostStatus, PostTitle,
    Seq, Timestamp, UserId, Viewer,
};

use crate::connection::on_backend;
use crate::database::write_transaction;
use crate::outbox::OutboxRepository;
use crate::schema::{post_counts, posts, users};
use crate::search::{SearchMatch, TRIGRAM_MATCH};
use crate::sql_functions::{FixedSql, lower};
use crate::{DbConnection, PersistenceError};

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
            .map_err(|e| PersistenceError::corrupt(format!("post {}", self.id), Some(e.into())))?;
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

/// SQLite's per-row deadline check (see `limits`).
const WITHIN_DEADLINE: &str = "newspaper_within_deadline(posts.id)";
/// Posts whose id is in a JSON array.
const AMONG_IDS: &str = "posts.id IN (SELECT value FROM json_each(";
/// A `LIKE` pattern over the title or content, lower-cased for all of Unicode on SQLite.
const CASEFOLDED_LIKE: &[&str] = &[
    "(newspaper_casefold(posts.title) LIKE ",
    " ESCAPE '\\' OR newspaper_casefold(posts.content) LIKE ",
    " ESCAPE '\\')",
];

/// Posts per status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    /// Drafts.
    pub draft: i64,
    /// Published posts.
    pub published: i64,
}

/// Moves the per-status counters by `draft` and `published` in one statement, in the caller's
/// transaction (one statement locks both rows in one order, whatever the change).
fn adjust_counts(
    conn: &mut DbConnection,
    draft: i64,
    published: i64,
) -> Result<(), PersistenceError> {
    let delta = diesel::dsl::case_when::<_, _, BigInt>(
        post_counts::status.eq(PostStatus::Draft.as_str()),
        draft,
    )
    .otherwise(published);
    let rows = diesel::update(post_counts::table)
        .set(post_counts::count.eq(post_counts::count + delta))
        .execute(conn)?;
    if rows == 2 {
        Ok(())
    } else {
        Err(PersistenceError::corrupt(format!("post_counts has {rows} rows, not 2"), None))
    }
}

/// The counter deltas of a post leaving `from` (if any) for `to` (if any).
fn count_deltas(from: Option<PostStatus>, to: Option<PostStatus>) -> (i64, i64) {
    let weight = |status: Option<PostStatus>, of: PostStatus| i64::from(status == Some(of));
    (
        weight(to, PostStatus::Draft) - weight(from, PostStatus::Draft),
        weight(to, PostStatus::Published) - weight(from, PostStatus::Published),
    )
}

/// The columns an update writes: only those whose value changes.
#[derive(AsChangeset)]
#[diesel(table_name = posts)]
struct PostChangeset<'a> {
    title: Option<&'a str>,
    content: Option<&'a str>,
    status: Option<&'a str>,
    updated_at: NaiveDateTime,
}

/// Which posts a list may include, before its own filters.
#[derive(Debug, Clone, Copy)]
enum Visible {
    All,
    Published,
    DraftsOf(UserId),
    PublishedOrDraftsOf(UserId),
}

/// Queries on the `posts` table.
pub struct PostRepository;

impl PostRepository {
    /// Creates a post by `author` (who must exist) and appends its `post_created` event;
    /// returns the post and the event's seq.
    pub fn create(
        conn: &mut DbConnection,
        author: &AuthorRef,
        new: NewPost,
        now: Timestamp,
    ) -> Result<(Post, Seq), PersistenceError> {
        write_transaction(conn, |conn| {
            let row = NewPostRow {
                title: new.title.as_str(),
                content: &new.content,
                status: new.status.as_str(),
                author_id: author.id.0,
                created_at: now.naive_utc(),
                updated_at: now.naive_utc(),
            };
            let id: i64 = on_backend!(conn, |c| diesel::insert_into(posts::table)
                .values(&row)
                .returning(posts::id)
                .get_result(c))?;
            let (draft, published) = count_deltas(None, Some(new.status));
            adjust_counts(conn, draft, published)?;
            let post = Post {
                id: PostId(id),
                title: new.title.into_inner(),
                content: new.content,
                status: new.status,
                author: author.clone(),
                created_at: now,
                updated_at: now,
            };
            let seq = OutboxRepository::append(conn, &PostChange::created(&post).into(), now)?;
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

    /// The post with this id, locked until the end of the caller's write transaction (on
    /// PostgreSQL; SQLite's write transaction already excludes other writers), so that what a
    /// write reads is what it changes.
    pub fn find_for_update(
        conn: &mut DbConnection,
        id: PostId,
    ) -> Result<Option<Post>, PersistenceError> {
        if let DbConnection::Postgres(pg) = conn {
            // Only the post's row: the author's is read, not changed.
            let locked: Option<i64> =
                posts::table.find(id.0).select(posts::id).for_update().first(pg).optional()?;
            if locked.is_none() {
                return Ok(None);
            }
        }
        Self::find(conn, id)
    }

    /// The post with this id if `viewer` may see it; drafts of others are "not found".
    pub fn find_visible_to(
        conn: &mut DbConnection,
        viewer: &Viewer,
        id: PostId,
    ) -> Result<Option<Post>, PersistenceError> {
        Ok(Self::find(conn, id)?.filter(|post| viewer.can_see(post.author.id, post.status)))
    }

    /// Applies `changes` to `current` (as loaded in this transaction, ideally with
    /// [`PostRepository::find_for_update`]), writing only the columns whose value changes, bumps
    /// `updated_at` and appends a `post_updated` event; returns the new post and the event's
    /// seq.
    pub fn update(
        conn: &mut DbConnection,
        current: &Post,
        changes: PostChanges,
        now: Timestamp,
    ) -> Result<(Post, Seq), PersistenceError> {
        write_transaction(conn, |conn| {
            let mut updated = current.clone();
            let title = changes.title.map(PostTitle::into_inner).filter(|t| *t != current.title);
            let content = changes.content.filter(|c| *c != current.content);
            let status = changes.status.filter(|s| *s != current.status);
            if let Some(title) = &title {
                updated.title.clone_from(title);
            }
            if let Some(content) = &content {
                updated.content.clone_from(content);
            }
            if let Some(status) = status {
                updated.status = status;
            }
            updated.updated_at = now;
            let changeset = PostChangeset {
                title: title.as_deref(),
                content: content.as_deref(),
                status: status.map(PostStatus::as_str),
                updated_at: now.naive_utc(),
            };
            let rows =
                diesel::update(posts::table.find(current.id.0)).set(&changeset).execute(conn)?;
            if rows == 0 {
                return Err(PersistenceError::NotFound);
            }
            if status.is_some() {
                let (draft, published) = count_deltas(Some(current.status), Some(updated.status));
                adjust_counts(conn, draft, published)?;
            }
            let seq = OutboxRepository::append(
                conn,
                &PostChange::updated(current, &updated).into(),
                now,
            )?;
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
            let (draft, published) = count_deltas(Some(current.status), None);
            adjust_counts(conn, draft, published)?;
            OutboxRepository::append(conn, &PostChange::deleted(current).into(), now)
        })
    }

    /// How many posts there are of each status, from the counters kept with every write.
    pub fn count_by_status(conn: &mut DbConnection) -> Result<StatusCounts, PersistenceError> {
        let rows: Vec<(String, i64)> =
            post_counts::table.select((post_counts::status, post_counts::count)).load(conn)?;
        let mut counts = StatusCounts::default();
        for (status, count) in rows {
            match status.parse::<PostStatus>() {
                Ok(PostStatus::Draft) => counts.draft = count,
                Ok(PostStatus::Published) => counts.published = count,
                Err(e) => return Err(PersistenceError::corrupt("post_counts", Some(e.into()))),
            }
        }
        Ok(counts)
    }

    /// One page of the posts `viewer` may see that match `query`, and how many match in all.
    pub fn list_visible_to(
        conn: &mut DbConnection,
        viewer: &Viewer,
        query: &PostQuery,
    ) -> Result<Page<Post>, PersistenceError> {
        // The same filters on several bases: counts read `posts` alone (covering index scans),
        // the page joins the authors' names for its few rows.
        // On SQLite, a function of ours is called for every row a list query looks at, and
        // stops the query once its read's deadline has passed (PostgreSQL has
        // `statement_timeout`).
        let sqlite = matches!(conn, DbConnection::Sqlite(_));
        let search = query.search.as_deref().filter(|t| !t.is_empty()).map(|term| {
            if sqlite { SearchMatch::for_sqlite(term) } else { SearchMatch::for_postgres(term) }
        });
        // A rare term's few matches are found once, not again by each query below.
        let search = match search {
            Some(SearchMatch::Trigrams(phrase)) => Some(crate::search::resolve_few(conn, phrase)?),
            other => other,
        };
        // With a trigram search on SQLite, the few matching rows are looked up by id; a unary
        // plus keeps the planner from walking a status or author index instead and testing
        // every row it holds against the matches.
        let by_id = matches!(search, Some(SearchMatch::Trigrams(_) | SearchMatch::Ids(_)));
        let status_is = |status: PostStatus| {
            let parts: &'static [&'static str] =
                if by_id { &["+posts.status = ", ""] } else { &["posts.status = ", ""] };
            FixedSql::<Text, _>::new(parts, status.as_str())
        };
        let author_is = |author: UserId| {
            let parts: &'static [&'static str] =
                if by_id { &["+posts.author_id = ", ""] } else { &["posts.author_id = ", ""] };
            FixedSql::<BigInt, _>::new(parts, author.0)
        };
        macro_rules! filtered {
            ($base:expr, $visible:expr) => {{
                let mut q = $base.into_boxed();
                if sqlite {
                    q = q.filter(FixedSql::plain(&[WITHIN_DEADLINE]));
                }
                q = match $visible {
                    Visible::All => q,
                    Visible::Published => q.filter(status_is(PostStatus::Published)),
                    Visible::DraftsOf(id) => {
                        q.filter(status_is(PostStatus::Draft)).filter(author_is(id))
                    }
                    // The unary plus keeps SQLite from answering the OR with two index lookups
                    // and a sort of everything they find: walking the date index and stopping
                    // at the page's end is far cheaper when most posts are published.
                    Visible::PublishedOrDraftsOf(id) => q.filter(FixedSql::<BigInt, _>::new(
                        &["(posts.status = 'published' OR +posts.author_id = ", ")"],
                        id.0,
                    )),
                };
                if let Some(status) = query.status {
                    q = q.filter(status_is(status));
                }
                if let Some(author) = query.author {
                    q = q.filter(author_is(author));
                }
                match &search {
                    None => {}
                    Some(SearchMatch::Trigrams(phrase)) => {
                        q = q.filter(FixedSql::<Text, _>::new(
                            &[TRIGRAM_MATCH, ")"],
                            phrase.clone(),
                        ));
                    }
                    Some(SearchMatch::Ids(ids)) => {
                        q = q.filter(FixedSql::<Text, _>::new(&[AMONG_IDS, "))"], ids.clone()));
                    }
                    Some(SearchMatch::Scan(pattern)) if sqlite => {
                        q = q.filter(FixedSql::<Text, _>::new(CASEFOLDED_LIKE, pattern.clone()));
                    }
                    Some(SearchMatch::Scan(pattern)) => {
                        q = q.filter(
                            lower(posts::title).like(pattern.clone()).escape('\\').or(lower(
                                posts::content,
                            )
                            .like(pattern.clone())
                            .escape('\\')),
                        );
                    }
                }
                q
            }};
        }

        let (count_parts, page_visibility) = match viewer {
            Viewer::Anonymous => (vec![Visible::Published], Visible::Published),
            Viewer::User { is_staff: true, .. } => (vec![Visible::All], Visible::All),
            // Published posts plus one's own drafts: two disjoint sets, each counted by index.
            Viewer::User { id, .. } => (
                vec![Visible::Published, Visible::DraftsOf(*id)],
                Visible::PublishedOrDraftsOf(*id),
            ),
        };
        // Without a search or author filter, whole statuses are counted by the counters kept
        // with every write; only a user's own drafts need counting.
        let unfiltered = search.is_none() && query.author.is_none();
        let stored = if unfiltered { Some(Self::count_by_status(conn)?) } else { None };
        let wanted = |status: PostStatus| query.status.is_none_or(|s| s == status);
        let mut count: i64 = 0;
        for part in count_parts {
            count += match (&stored, part) {
                (Some(stored), Visible::Published) => {
                    if wanted(PostStatus::Published) {
                        stored.published
                    } else {
                        0
                    }
                }
                (Some(stored), Visible::All) => {
                    (if wanted(PostStatus::Published) { stored.published } else { 0 })
                        + (if wanted(PostStatus::Draft) { stored.draft } else { 0 })
                }
                (_, Visible::DraftsOf(_)) if !wanted(PostStatus::Draft) => 0,
                _ => filtered!(posts::table, part).select(count_star()).first::<i64>(conn)?,
            };
        }
        if query.limit == 0 || query.offset >= u64::try_from(count).unwrap_or_default() {
            return Ok(Page { count: u64::try_from(count).unwrap_or_default(), items: Vec::new() });
        }
        let mut page = filtered!(posts::table.inner_join(users::table), page_visibility)
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
    use super::*;

    #[test]
    fn fixed_sql_names_the_functions_registered_on_sqlite() {
        assert!(WITHIN_DEADLINE.starts_with(crate::limits::DEADLINE_FUNCTION));
        assert!(CASEFOLDED_LIKE[0].contains(crate::search::CASEFOLD_FUNCTION));
        assert!(CASEFOLDED_LIKE[1].contains(crate::search::CASEFOLD_FUNCTION));
    }

    #[test]
    fn counter_deltas_follow_the_status() {
        use PostStatus::{Draft, Published};
        assert_eq!(count_deltas(None, Some(Draft)), (1, 0));
        assert_eq!(count_deltas(Some(Draft), Some(Published)), (-1, 1));
        assert_eq!(count_deltas(Some(Published), Some(Draft)), (1, -1));
        assert_eq!(count_deltas(Some(Published), None), (0, -1));
        assert_eq!(count_deltas(Some(Draft), Some(Draft)), (0, 0));
    }
}
