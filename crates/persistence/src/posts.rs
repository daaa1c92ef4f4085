//! Posts: every write also appends its event to the outbox, in the same transaction.

use chrono::NaiveDateTime;
use diesel::connection::SimpleConnection;
use diesel::dsl::count_star;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Nullable, Text, Timestamp as Timestamp_};
use newspaper_domain::{
    AuthorRef, Post, PostChange, PostId, PostOrdering, PostOrderingField, PostStatus, PostTitle,
    Seq, Timestamp, UserId, Viewer,
};

use crate::connection::on_backend;
use crate::database::{in_transaction, write_transaction};
use crate::outbox::{
    APPEND_LOCK_KEY, EncodedEvent, FeedHead, OutboxRepository, feed_head, newest_seq,
};
use crate::schema::{outbox_state, post_counts, posts, users};
use crate::search::{CasefoldedLike, FoundPost, SearchMatch, TrigramMatch};
use crate::sql_functions::{
    AnyOfSelect, FixedPairSql, FixedSql, SqlText, cached_by_type, sql_text,
};
use crate::users::UserRow;
use crate::{DbConnection, PersistenceError, UserRecord};

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
    /// Rows to skip (page-number pagination); ignored with a `keyset`.
    pub offset: u64,
    /// Rows to return.
    pub limit: u64,
    /// Where a cursor page starts; with one, the list is ordered by the first ordering term
    /// and the id alone, and its `count` is not computed.
    pub keyset: Option<Keyset>,
}

/// Where a cursor page starts: the rows after a position in the list's order (or, going back,
/// the rows before it, nearest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyset {
    /// The sort key and id of the post at the position; `None` is the list's start (or, going
    /// back, its end).
    pub position: Option<(SortKey, PostId)>,
    /// Whether the page holds the rows before the position rather than after it.
    pub backwards: bool,
}

/// A post's value of the field a list is ordered by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortKey {
    /// `created_at` or `updated_at`.
    Time(Timestamp),
    /// `title`.
    Text(String),
}

impl SortKey {
    /// `post`'s value of `field`.
    pub fn of(post: &Post, field: PostOrderingField) -> Self {
        match field {
            PostOrderingField::CreatedAt => Self::Time(post.created_at),
            PostOrderingField::UpdatedAt => Self::Time(post.updated_at),
            PostOrderingField::Title => Self::Text(post.title.clone()),
        }
    }
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
            keyset: None,
        }
    }
}

/// One page of a list and the size of the whole list.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// How many items match, over all pages (0 for a keyset page, which does not count).
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

sql_text! {
    /// SQLite's deadline check (see `limits`), made on one row in 64 (by id; SQLite stops at
    /// the first true term of an OR): a call per row costs more than a deep page's walk of the
    /// index itself, and a statement still stops within a few hundred rows of its deadline.
    WithinDeadline = ["((posts.id & 63) <> 0 OR newspaper_within_deadline(posts.id))"];
    /// Posts whose id is in a JSON array (bound), on SQLite.
    AmongIdsSqlite = ["posts.id IN (SELECT value FROM json_each(", "))"];
    /// Posts whose id is in an array literal such as `{1,2}` (bound), on PostgreSQL.
    AmongIdsPostgres = ["posts.id = ANY(CAST(", " AS int8[]))"];
    /// Posts of a status (bound).
    StatusIs = ["posts.status = ", ""];
    /// [`StatusIs`] for SQLite when a search has found the rows: the unary plus keeps the
    /// planner from walking the status index instead of looking the few matches up by id.
    StatusIsById = ["+posts.status = ", ""];
    /// Posts by an author (bound).
    AuthorIs = ["posts.author_id = ", ""];
    /// [`AuthorIs`] for SQLite when a search has found the rows, as [`StatusIsById`].
    AuthorIsById = ["+posts.author_id = ", ""];
    /// Published posts and the drafts of one author (bound). The unary plus keeps SQLite from
    /// answering the OR with two index lookups and a sort of everything they find: walking the
    /// date index and stopping at the page's end is far cheaper when most posts are published.
    PublishedOrDraftsOf = ["(posts.status = 'published' OR +posts.author_id = ", ")"];
}

/// A keyset page's start, `(posts.<field>, posts.id) > (?, ?)` (the rows after a position, read
/// in ascending order) or `<` (read descending): a range of the ordering's index.
fn keyset_parts(field: PostOrderingField, descending: bool) -> &'static [&'static str; 3] {
    match (field, descending) {
        (PostOrderingField::CreatedAt, false) => &["(posts.created_at, posts.id) > (", ", ", ")"],
        (PostOrderingField::CreatedAt, true) => &["(posts.created_at, posts.id) < (", ", ", ")"],
        (PostOrderingField::UpdatedAt, false) => &["(posts.updated_at, posts.id) > (", ", ", ")"],
        (PostOrderingField::UpdatedAt, true) => &["(posts.updated_at, posts.id) < (", ", ", ")"],
        (PostOrderingField::Title, false) => &["(posts.title, posts.id) > (", ", ", ")"],
        (PostOrderingField::Title, true) => &["(posts.title, posts.id) < (", ", ", ")"],
    }
}

/// What a read of posts needs besides the posts, read in one statement (one round trip on
/// PostgreSQL, where each costs the server more than the lookups themselves): the reader's
/// account, the feed position, and the counters a list's count is made of.
#[derive(Debug, Clone)]
pub struct ReadHead {
    /// The reader's account, if one was named and it exists; the caller checks it against the
    /// reader's credentials.
    pub reader: Option<UserRecord>,
    /// The feed position the read is at.
    pub seq: Seq,
    counters: ListCounters,
}

impl ReadHead {
    /// Which posts `viewer` sees at this head: readers who see the same posts are given the
    /// same lists, so a page read for one of them, at the same seq, serves them all.
    pub fn visibility_of(&self, viewer: &Viewer) -> Visibility {
        self.counters.visibility_of(viewer)
    }
}

/// Which posts a reader sees, as far as lists tell readers apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Visibility {
    /// Published posts: anonymous readers, and users who have no drafts.
    Published,
    /// Every post: staff.
    Everything,
    /// Published posts and this user's drafts.
    PublishedAndDraftsOf(UserId),
}

/// The counters a list's count is read from, for one reader and one author filter.
#[derive(Debug, Clone, Copy)]
struct ListCounters {
    reader: Option<UserId>,
    author: Option<UserId>,
    /// Published posts (by `author`, if given).
    published: i64,
    /// Drafts (by `author`, if given).
    drafts: i64,
    /// The reader's own drafts.
    own_drafts: i64,
}

impl ListCounters {
    /// What `viewer` sees. A user with no drafts at all (most readers) sees what the public
    /// sees, and a page is then a range of the status index rather than a walk that tests
    /// every entry; whether a user has drafts is known only for the reader these were read for.
    fn visibility_of(&self, viewer: &Viewer) -> Visibility {
        match viewer {
            Viewer::Anonymous => Visibility::Published,
            Viewer::User { is_staff: true, .. } => Visibility::Everything,
            Viewer::User { id, .. } if self.reader == Some(*id) && self.own_drafts == 0 => {
                Visibility::Published
            }
            Viewer::User { id, .. } => Visibility::PublishedAndDraftsOf(*id),
        }
    }

    /// The posts of one part of a list (of `status`, any if `None`), by the author the
    /// counters were read for.
    fn counted(&self, part: Visible, status: Option<PostStatus>) -> i64 {
        match part {
            Visible::Published => self.published,
            Visible::DraftsOf(_) => self.own_drafts,
            Visible::All | Visible::PublishedOrDraftsOf(_) => self.of(status),
        }
    }

    /// Posts of `status` (any, if `None`), by the author the counters were read for.
    fn of(&self, status: Option<PostStatus>) -> i64 {
        match status {
            None => self.published + self.drafts,
            Some(PostStatus::Published) => self.published,
            Some(PostStatus::Draft) => self.drafts,
        }
    }
}

// The counters, each read as a scalar subquery: of one status in all, or by one author (bound).
sql_text! {
    /// Published posts in all.
    PublishedCount = ["(SELECT \"count\" FROM post_counts WHERE status = 'published')"];
    /// Published posts by one author.
    PublishedByCount = [
        "(SELECT \"count\" FROM author_post_counts WHERE status = 'published' AND author_id = ",
        ")",
    ];
    /// Drafts in all.
    DraftCount = ["(SELECT \"count\" FROM post_counts WHERE status = 'draft')"];
    /// Drafts by one author.
    DraftByCount = [
        "(SELECT \"count\" FROM author_post_counts WHERE status = 'draft' AND author_id = ",
        ")",
    ];
}

/// Posts per status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    /// Drafts.
    pub draft: i64,
    /// Published posts.
    pub published: i64,
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

impl Visible {
    /// Whether a post a search found is in this set and passes `query`'s status and author
    /// filters: what `list_at`'s SQL selects, tested on the columns it tests.
    fn admits(self, post: &FoundPost, query: &PostQuery) -> bool {
        let status_is = |status: PostStatus| post.status == status.as_str();
        let by = |author: UserId| post.author_id == author.0;
        let visible = match self {
            Visible::All => true,
            Visible::Published => status_is(PostStatus::Published),
            Visible::DraftsOf(id) => status_is(PostStatus::Draft) && by(id),
            Visible::PublishedOrDraftsOf(id) => status_is(PostStatus::Published) || by(id),
        };
        visible && query.status.is_none_or(status_is) && query.author.is_none_or(by)
    }
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
        if let DbConnection::Postgres(pg) = conn {
            let mut created = Self::create_in_one_statement(pg, vec![(author.clone(), new, now)])?;
            return created.pop().ok_or_else(|| PersistenceError::corrupt("a create", None));
        }
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

    /// Creates several posts, in order, each with its `post_created` event: all of them or,
    /// on an error, none. On PostgreSQL this is one statement whatever their number, which is
    /// how the writer turns a batch of creates into one round trip.
    pub fn create_many(
        conn: &mut DbConnection,
        posts: Vec<(AuthorRef, NewPost, Timestamp)>,
    ) -> Result<Vec<(Post, Seq)>, PersistenceError> {
        match conn {
            DbConnection::Postgres(pg) => Self::create_in_one_statement(pg, posts),
            DbConnection::Sqlite(_) => write_transaction(conn, |conn| {
                posts
                    .into_iter()
                    .map(|(author, new, at)| Self::create(conn, &author, new, at))
                    .collect()
            }),
        }
    }

    /// [`PostRepository::create_many`] on PostgreSQL: the posts, the outbox lock and the
    /// events in one statement (atomic by itself, so without a savepoint). Creates wait for
    /// each other in the writer, where every round trip is one that all later creates wait for.
    fn create_in_one_statement(
        pg: &mut diesel::PgConnection,
        posts: Vec<(AuthorRef, NewPost, Timestamp)>,
    ) -> Result<Vec<(Post, Seq)>, PersistenceError> {
        let mut created = Vec::with_capacity(posts.len());
        let (mut kind, mut payloads) = ("", Vec::with_capacity(posts.len()));
        for (author, new, at) in posts {
            let post = Post {
                id: PostId(0),
                title: new.title.into_inner(),
                content: new.content,
                status: new.status,
                author,
                created_at: at,
                updated_at: at,
            };
            // The payload holds no id; the statement fills the event's `post_id` column.
            let event = EncodedEvent::of(&PostChange::created(&post).into())?;
            kind = event.kind;
            payloads.push(event.payload);
            created.push(post);
        }
        if created.is_empty() {
            return Ok(Vec::new());
        }
        // Bound straight from the posts: a content may be large, and is not copied.
        let rows = NewPostRows {
            titles: created.iter().map(|p| p.title.as_str()).collect(),
            contents: created.iter().map(|p| p.content.as_str()).collect(),
            statuses: created.iter().map(|p| p.status.as_str()).collect(),
            authors: created.iter().map(|p| p.author.id.0).collect(),
            times: created.iter().map(|p| p.created_at.naive_utc()).collect(),
            kind,
            payloads,
        };
        let ids: Vec<(i64, i64, i64)> = InsertPostsWithEvents(&rows).load(pg)?;
        if ids.len() != created.len() {
            return Err(PersistenceError::corrupt("a create's returned rows", None));
        }
        Ok(created
            .into_iter()
            .zip(ids)
            .map(|(mut post, (_, id, seq))| {
                post.id = PostId(id);
                (post, Seq(seq))
            })
            .collect())
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

    /// The reader's account (`reader`, if any), the feed position and the counters of a list
    /// by `author` (any, if `None`), in one statement.
    pub fn read_head(
        conn: &mut DbConnection,
        reader: Option<UserId>,
        author: Option<UserId>,
    ) -> Result<ReadHead, PersistenceError> {
        match author {
            None => Self::read_head_counting::<PublishedCount, DraftCount>(conn, reader, author),
            Some(_) => {
                Self::read_head_counting::<PublishedByCount, DraftByCount>(conn, reader, author)
            }
        }
    }

    /// [`PostRepository::read_head`] with the counters `Published` and `Drafts`, bound to
    /// `author` (if they take one): one statement, and so one prepared statement, per pair.
    fn read_head_counting<Published: SqlText, Drafts: SqlText>(
        conn: &mut DbConnection,
        reader: Option<UserId>,
        author: Option<UserId>,
    ) -> Result<ReadHead, PersistenceError> {
        // No account has a negative id: an anonymous read joins no one.
        let reader_id = reader.map_or(-1, |r| r.0);
        let author_id = author.map_or(0, |a| a.0);
        let (user, head, published, drafts, own_drafts): (
            Option<UserRow>,
            FeedHead,
            Option<i64>,
            Option<i64>,
            Option<i64>,
        ) = on_backend!(conn, |c| {
            cached_by_type(
                outbox_state::table
                    .find(1)
                    .left_join(users::table.on(users::id.eq(reader_id)))
                    .select((
                        Option::<UserRow>::as_select(),
                        feed_head(),
                        FixedSql::<Published, BigInt, _, Nullable<BigInt>>::new(author_id),
                        FixedSql::<Drafts, BigInt, _, Nullable<BigInt>>::new(author_id),
                        FixedSql::<DraftByCount, BigInt, _, Nullable<BigInt>>::new(reader_id),
                    ))
                    .limit(1),
            )
            .get_result(c)
        })?;
        Ok(ReadHead {
            reader: user.map(UserRecord::from),
            seq: newest_seq(head),
            counters: ListCounters {
                reader,
                author,
                published: published.unwrap_or(0),
                drafts: drafts.unwrap_or(0),
                own_drafts: own_drafts.unwrap_or(0),
            },
        })
    }

    /// [`PostRepository::read_head`] for several `(reader, author)` pairs, answered in the
    /// order asked, all at one feed position: on PostgreSQL in one statement, so that many
    /// requests cost the database one round trip.
    pub fn read_heads(
        conn: &mut DbConnection,
        asked: &[(Option<UserId>, Option<UserId>)],
    ) -> Result<Vec<ReadHead>, PersistenceError> {
        if asked.is_empty() {
            return Ok(Vec::new());
        }
        let DbConnection::Postgres(pg) = conn else {
            // In process, one statement each costs no round trip. Each in its own snapshot is
            // still exact for its caller: it was read after the caller asked.
            return asked
                .iter()
                .map(|&(reader, author)| Self::read_head(conn, reader, author))
                .collect();
        };
        use diesel::sql_types::{Array, Bool};
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = Nullable<BigInt>)]
            id: Option<i64>,
            #[diesel(sql_type = Nullable<Text>)]
            email: Option<String>,
            #[diesel(sql_type = Nullable<Text>)]
            username: Option<String>,
            #[diesel(sql_type = Nullable<Text>)]
            password_hash: Option<String>,
            #[diesel(sql_type = Nullable<Bool>)]
            is_staff: Option<bool>,
            #[diesel(sql_type = Nullable<Bool>)]
            is_active: Option<bool>,
            #[diesel(sql_type = Nullable<Timestamp_>)]
            date_joined: Option<NaiveDateTime>,
            #[diesel(sql_type = Nullable<BigInt>)]
            newest: Option<i64>,
            #[diesel(sql_type = BigInt)]
            pruned_seq: i64,
            #[diesel(sql_type = BigInt)]
            published_seq: i64,
            #[diesel(sql_type = Nullable<BigInt>)]
            published: Option<i64>,
            #[diesel(sql_type = Nullable<BigInt>)]
            drafts: Option<i64>,
            #[diesel(sql_type = Nullable<BigInt>)]
            own_drafts: Option<i64>,
        }
        // The same reads as `read_head`, one row per pair; the uncorrelated ones (the feed
        // position, the counters of all posts) run once for the whole statement.
        const READ_HEADS: &str = r#"
SELECT u.id, u.email, u.username, u.password_hash, u.is_staff, u.is_active, u.date_joined,
  (SELECT max(seq) FROM post_events) AS newest, s.pruned_seq, s.published_seq,
  CASE WHEN r.author IS NULL
    THEN (SELECT "count" FROM post_counts WHERE status = 'published')
    ELSE (SELECT "count" FROM author_post_counts WHERE status = 'published' AND author_id = r.author)
  END AS published,
  CASE WHEN r.author IS NULL
    THEN (SELECT "count" FROM post_counts WHERE status = 'draft')
    ELSE (SELECT "count" FROM author_post_counts WHERE status = 'draft' AND author_id = r.author)
  END AS drafts,
  (SELECT "count" FROM author_post_counts WHERE status = 'draft' AND author_id = r.reader)
    AS own_drafts
FROM unnest($1::int8[], $2::int8[]) WITH ORDINALITY AS r(reader, author, ord)
CROSS JOIN outbox_state s
LEFT JOIN users u ON u.id = r.reader
WHERE s.id = 1
ORDER BY r.ord"#;
        // No account has a negative id: an anonymous read joins no one.
        let readers: Vec<i64> =
            asked.iter().map(|(reader, _)| reader.map_or(-1, |r| r.0)).collect();
        let authors: Vec<Option<i64>> =
            asked.iter().map(|(_, author)| author.map(|a| a.0)).collect();
        let rows: Vec<Row> = diesel::sql_query(READ_HEADS)
            .bind::<Array<BigInt>, _>(readers)
            .bind::<Array<Nullable<BigInt>>, _>(authors)
            .load(pg)?;
        if rows.len() != asked.len() {
            return Err(PersistenceError::corrupt("outbox_state", None));
        }
        let heads = asked.iter().zip(rows).map(|(&(reader, author), row)| {
            let user = match (row.id, row.email, row.username, row.password_hash) {
                (Some(id), Some(email), Some(username), Some(password_hash)) => Some(UserRow {
                    id,
                    email,
                    username,
                    password_hash,
                    is_staff: row.is_staff.unwrap_or(false),
                    is_active: row.is_active.unwrap_or(false),
                    date_joined: row.date_joined.unwrap_or_default(),
                }),
                _ => None,
            };
            ReadHead {
                reader: user.map(UserRecord::from),
                seq: newest_seq((row.newest, row.pruned_seq, row.published_seq)),
                counters: ListCounters {
                    reader,
                    author,
                    published: row.published.unwrap_or(0),
                    drafts: row.drafts.unwrap_or(0),
                    own_drafts: row.own_drafts.unwrap_or(0),
                },
            }
        });
        Ok(heads.collect())
    }

    /// One page of the posts `viewer` may see that match `query`, and how many match in all.
    pub fn list_visible_to(
        conn: &mut DbConnection,
        viewer: &Viewer,
        query: &PostQuery,
    ) -> Result<Page<Post>, PersistenceError> {
        let head = Self::read_head(conn, viewer.user_id(), query.author)?;
        Self::list_at(conn, viewer, &head, query)
    }

    /// [`PostRepository::list_visible_to`] with the counters of a [`ReadHead`] read before, in
    /// the same transaction (read again if it was read for another reader or author).
    pub fn list_at(
        conn: &mut DbConnection,
        viewer: &Viewer,
        head: &ReadHead,
        query: &PostQuery,
    ) -> Result<Page<Post>, PersistenceError> {
        let counters =
            if head.counters.reader == viewer.user_id() && head.counters.author == query.author {
                head.counters
            } else {
                Self::read_head(conn, viewer.user_id(), query.author)?.counters
            };
        // The same filters on several bases: counts read `posts` alone (covering index scans),
        // the page joins the authors' names for its few rows.
        // On SQLite, a function of ours is called for every row a list query looks at, and
        // stops the query once its read's deadline has passed (PostgreSQL has
        // `statement_timeout`).
        let sqlite = matches!(conn, DbConnection::Sqlite(_));
        let search = query.search.as_deref().filter(|t| !t.is_empty()).map(|term| {
            if sqlite { SearchMatch::for_sqlite(term) } else { SearchMatch::for_postgres(term) }
        });
        // A rare term's few matches are found once, not again by each query below (each would
        // test the matching rows' texts again). Any plan of that lookup reads the trigram index.
        let search = search.map(|search| crate::search::resolve_few(conn, search)).transpose()?;
        if matches!(search, Some(SearchMatch::Scan(_))) && !sqlite && in_transaction(conn)? {
            // Whether the trigram index pays for a scan depends on the pattern: plan for its
            // value (a read transaction asked for generic plans; outside one, plans are custom).
            conn.batch_execute("SET LOCAL plan_cache_mode = auto")?;
        }
        // With a trigram search on SQLite, the few matching rows are looked up by id; a unary
        // plus keeps the planner from walking a status or author index instead and testing
        // every row it holds against the matches.
        let by_id =
            sqlite && matches!(search, Some(SearchMatch::Trigrams(_) | SearchMatch::Ids { .. }));
        // A boxed statement is looked up by its SQL text, whatever its pieces: the filters
        // below may differ in type.
        macro_rules! with_status {
            ($q:expr, $status:expr) => {{
                let status: PostStatus = $status;
                if by_id {
                    $q.filter(FixedSql::<StatusIsById, Text, _>::new(status.as_str()))
                } else {
                    $q.filter(FixedSql::<StatusIs, Text, _>::new(status.as_str()))
                }
            }};
        }
        macro_rules! by_author {
            ($q:expr, $author:expr) => {{
                let author: UserId = $author;
                if by_id {
                    $q.filter(FixedSql::<AuthorIsById, BigInt, _>::new(author.0))
                } else {
                    $q.filter(FixedSql::<AuthorIs, BigInt, _>::new(author.0))
                }
            }};
        }
        macro_rules! filtered {
            ($base:expr, $visible:expr) => {{
                let mut q = $base.into_boxed();
                if sqlite {
                    q = q.filter(FixedSql::<WithinDeadline, _, _>::plain());
                }
                q = match $visible {
                    Visible::All => q,
                    Visible::Published => with_status!(q, PostStatus::Published),
                    Visible::DraftsOf(id) => by_author!(with_status!(q, PostStatus::Draft), id),
                    Visible::PublishedOrDraftsOf(id) => {
                        q.filter(FixedSql::<PublishedOrDraftsOf, BigInt, _>::new(id.0))
                    }
                };
                if let Some(status) = query.status {
                    q = with_status!(q, status);
                }
                if let Some(author) = query.author {
                    q = by_author!(q, author);
                }
                match &search {
                    None => {}
                    Some(SearchMatch::Trigrams(phrase)) => {
                        q = q.filter(FixedSql::<TrigramMatch, Text, _>::new(phrase.clone()));
                    }
                    Some(SearchMatch::Ids { among, .. }) if sqlite => {
                        q = q.filter(FixedSql::<AmongIdsSqlite, Text, _>::new(among.clone()));
                    }
                    Some(SearchMatch::Ids { among, .. }) => {
                        q = q.filter(FixedSql::<AmongIdsPostgres, Text, _>::new(among.clone()));
                    }
                    Some(SearchMatch::Scan(pattern)) => {
                        q = q.filter(FixedSql::<CasefoldedLike, Text, _>::new(pattern.clone()));
                    }
                }
                q
            }};
        }

        let (count_parts, page_visibility) = match counters.visibility_of(viewer) {
            Visibility::Published => (vec![Visible::Published], Visible::Published),
            Visibility::Everything => (vec![Visible::All], Visible::All),
            // Published posts plus one's own drafts: two disjoint sets, counted apart.
            Visibility::PublishedAndDraftsOf(id) => {
                (vec![Visible::Published, Visible::DraftsOf(id)], Visible::PublishedOrDraftsOf(id))
            }
        };
        // Without a search, every count is read from the counters the triggers keep; a
        // search that found few posts counts those it has in hand, and one that found many
        // counts its matches, which the trigram index bounds.
        let wanted = |status: PostStatus| query.status.is_none_or(|s| s == status);
        let mut count: i64 = 0;
        if query.keyset.is_none() {
            for part in count_parts {
                count += match part {
                    Visible::Published if !wanted(PostStatus::Published) => 0,
                    Visible::DraftsOf(_) if !wanted(PostStatus::Draft) => 0,
                    Visible::DraftsOf(id) if query.author.is_some_and(|a| a != id) => 0,
                    _ => match &search {
                        Some(SearchMatch::Ids { found, .. }) => {
                            found.iter().filter(|post| part.admits(post, query)).count() as i64
                        }
                        Some(_) => on_backend!(&mut *conn, |c| {
                            filtered!(posts::table, part).select(count_star()).first::<i64>(c)
                        })?,
                        None => counters.counted(part, query.status),
                    },
                };
            }
        }
        let count = u64::try_from(count).unwrap_or_default();
        if query.limit == 0 || (query.keyset.is_none() && query.offset >= count) {
            return Ok(Page { count, items: Vec::new() });
        }

        // The page in two statements: its ids from an index that holds every column the
        // filters test (the rows a deep page skips are never read), then its rows by id.
        let keyset = query.keyset.as_ref();
        let terms = match keyset {
            Some(_) => &query.ordering[..query.ordering.len().min(1)],
            None => &query.ordering[..],
        };
        // A backwards page is read in the reverse order, from its position, then turned round.
        let backwards = keyset.is_some_and(|k| k.backwards);
        let position = keyset.and_then(|k| k.position.as_ref()).map(|(key, id)| {
            let term = terms.first().copied().unwrap_or(PostOrdering::DEFAULT);
            (keyset_parts(term.field, term.descending != backwards), key, *id)
        });
        // The same total order for the ids and (on PostgreSQL) for the rows they select: the
        // terms, then the id, which runs the way the first term does, as the indexes hold it,
        // so that pages never repeat or skip rows with equal sort keys.
        let newest_first = terms.first().is_none_or(|t| t.descending) != backwards;
        macro_rules! ordered {
            ($q:expr) => {{
                let mut q = $q;
                for term in terms {
                    q = match (term.field, term.descending != backwards) {
                        (PostOrderingField::CreatedAt, false) => {
                            q.then_order_by(posts::created_at.asc())
                        }
                        (PostOrderingField::CreatedAt, true) => {
                            q.then_order_by(posts::created_at.desc())
                        }
                        (PostOrderingField::UpdatedAt, false) => {
                            q.then_order_by(posts::updated_at.asc())
                        }
                        (PostOrderingField::UpdatedAt, true) => {
                            q.then_order_by(posts::updated_at.desc())
                        }
                        (PostOrderingField::Title, false) => q.then_order_by(posts::title.asc()),
                        (PostOrderingField::Title, true) => q.then_order_by(posts::title.desc()),
                    };
                }
                if newest_first {
                    q.then_order_by(posts::id.desc())
                } else {
                    q.then_order_by(posts::id.asc())
                }
            }};
        }
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let offset =
            if keyset.is_some() { 0 } else { i64::try_from(query.offset).unwrap_or(i64::MAX) };
        // The page's `$columns` of `$base`, in order (built for each backend's own connection,
        // which it runs on).
        macro_rules! page_of {
            ($base:expr, $columns:expr) => {{
                let mut q = filtered!($base, page_visibility).select($columns);
                q = match position {
                    None => q,
                    Some((parts, SortKey::Time(at), id)) => {
                        q.filter(FixedPairSql::<Timestamp_, _, BigInt, _>::new(
                            parts,
                            at.naive_utc(),
                            id.0,
                        ))
                    }
                    Some((parts, SortKey::Text(text), id)) => {
                        q.filter(FixedPairSql::<Text, _, BigInt, _>::new(parts, text.clone(), id.0))
                    }
                };
                ordered!(q).limit(limit).offset(offset)
            }};
        }
        let lite = match conn {
            DbConnection::Sqlite(lite) => lite,
            DbConnection::Postgres(pg) => {
                // One statement: a round trip costs PostgreSQL more than sorting the page's rows.
                let rows: Vec<(PostRow, String)> = ordered!(
                    posts::table
                        .inner_join(users::table)
                        .filter(AnyOfSelect::new("posts.id", page_of!(posts::table, posts::id)))
                        .select((PostRow::as_select(), users::username))
                        .into_boxed()
                )
                .load(pg)?;
                return page_in_order(count, rows, backwards);
            }
        };
        let mut ids: Vec<i64> = page_of!(posts::table, posts::id).load(lite)?;
        if backwards {
            ids.reverse();
        }
        if ids.is_empty() {
            return Ok(Page { count, items: Vec::new() });
        }
        let as_json = serde_json::to_string(&ids)
            .map_err(|e| PersistenceError::corrupt("a page's ids", Some(e.into())))?;
        let rows: Vec<(PostRow, String)> = cached_by_type(
            posts::table
                .inner_join(users::table)
                .filter(FixedSql::<AmongIdsSqlite, Text, _>::new(as_json))
                .select((PostRow::as_select(), users::username)),
        )
        .load(lite)?;
        let position: std::collections::HashMap<i64, usize> =
            ids.iter().enumerate().map(|(at, id)| (*id, at)).collect();
        let mut items = rows
            .into_iter()
            .map(|(row, username)| row.into_post(username))
            .collect::<Result<Vec<_>, _>>()?;
        items.sort_by_key(|post| position.get(&post.id.0).copied().unwrap_or(usize::MAX));
        Ok(Page { count, items })
    }
}

/// A page of `count` posts in all, of `rows` read in the page's order (in reverse, if
/// `backwards`).
fn page_in_order(
    count: u64,
    rows: Vec<(PostRow, String)>,
    backwards: bool,
) -> Result<Page<Post>, PersistenceError> {
    let mut items = rows
        .into_iter()
        .map(|(row, username)| row.into_post(username))
        .collect::<Result<Vec<_>, _>>()?;
    if backwards {
        items.reverse();
    }
    Ok(Page { count, items })
}

/// Posts to create, column by column (bound as arrays).
struct NewPostRows<'a> {
    titles: Vec<&'a str>,
    contents: Vec<&'a str>,
    statuses: Vec<&'static str>,
    authors: Vec<i64>,
    times: Vec<NaiveDateTime>,
    kind: &'static str,
    payloads: Vec<String>,
}

/// Posts and their `post_created` events, in one PostgreSQL statement: ids drawn in the
/// input's order, the posts inserted, the outbox lock taken before the events' seqs are
/// (`OutboxRepository::append`'s order guarantee), the events inserted; it returns each
/// input's position, post id and seq, in input order.
struct InsertPostsWithEvents<'a>(&'a NewPostRows<'a>);

impl QueryFragment<Pg> for InsertPostsWithEvents<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        use diesel::sql_types::Array;
        let rows = self.0;
        out.push_sql(
            "WITH input AS MATERIALIZED (SELECT nextval(pg_get_serial_sequence('posts', 'id')) \
             AS id, i.* FROM unnest(",
        );
        out.push_bind_param::<Array<Text>, _>(&rows.titles)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&rows.contents)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&rows.statuses)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(&rows.authors)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Timestamp_>, _>(&rows.times)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&rows.payloads)?;
        out.push_sql(
            ") WITH ORDINALITY AS i (title, content, status, author_id, at, payload, n) \
             ORDER BY i.n), \
             new_posts AS (INSERT INTO posts \
             (id, title, content, status, author_id, created_at, updated_at) \
             SELECT id, title, content, status, author_id, at, at FROM input), \
             ordered AS (SELECT pg_advisory_xact_lock(",
        );
        out.push_bind_param::<BigInt, _>(&APPEND_LOCK_KEY)?;
        out.push_sql(
            ")), events AS (INSERT INTO post_events \
             (kind, post_id, author_id, payload, created_at) SELECT ",
        );
        out.push_bind_param::<Text, _>(&rows.kind)?;
        out.push_sql(
            ", input.id, input.author_id, input.payload, input.at FROM input, ordered \
             ORDER BY input.n RETURNING post_id, seq) \
             SELECT input.n, input.id, events.seq FROM input JOIN events ON events.post_id = input.id \
             ORDER BY input.n",
        );
        Ok(())
    }
}

// The text is fixed (only bound values vary), so the type names it: the prepared statement
// is found without writing the text again.
impl QueryId for InsertPostsWithEvents<'_> {
    type QueryId = InsertPostsWithEvents<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for InsertPostsWithEvents<'_> {
    type SqlType = (BigInt, BigInt, BigInt);
}

impl RunQueryDsl<diesel::PgConnection> for InsertPostsWithEvents<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_sql_names_the_functions_registered_on_sqlite() {
        assert!(
            WithinDeadline::PARTS[0].contains(&format!("{}(", crate::limits::DEADLINE_FUNCTION))
        );
        assert!(CasefoldedLike::PARTS[0].contains(crate::search::CASEFOLD_FUNCTION));
        assert!(CasefoldedLike::PARTS[1].contains(crate::search::CASEFOLD_FUNCTION));
    }
}
