//! The transactional outbox: the durable, ordered history of post changes that the real-time
//! feed publishes and replays.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use newspaper_domain::{
    Change, PostChange, PostId, RevocationReason, Seq, StoredEvent, Timestamp, UserId,
};
use serde::{Deserialize, Serialize};

use crate::connection::on_backend;
use crate::schema::{outbox_state, post_events};
use crate::sql_functions::pg_advisory_xact_lock;
use crate::{DbConnection, PersistenceError};

/// Key of the PostgreSQL advisory lock that orders outbox appends ("news" in ASCII).
pub(crate) const APPEND_LOCK_KEY: i64 = 0x6E65_7773;

/// How far the outbox has been published and pruned, and who holds the publishing lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxState {
    /// Every event up to here has been handed to the channel layer.
    pub published: Seq,
    /// Events up to here may have been deleted; a stream resuming from before it must resync.
    pub pruned: Seq,
    /// The instance allowed to publish, if any.
    pub leader: Option<String>,
    /// When that instance's lease runs out.
    pub lease_expires_at: Option<Timestamp>,
}

/// The stored payload of a post change: everything not already in its own column.
#[derive(Serialize, Deserialize)]
struct Payload {
    before: Option<newspaper_domain::PostSnapshot>,
    after: Option<newspaper_domain::PostSnapshot>,
}

/// The stored payload of a revocation.
#[derive(Serialize, Deserialize)]
struct RevocationPayload {
    reason: RevocationReason,
}

/// The `kind` of revocation rows; post rows hold the post event's name.
const REVOCATION_KIND: &str = "credentials_revoked";

#[derive(Queryable, Selectable)]
#[diesel(table_name = post_events)]
struct EventRow {
    seq: i64,
    kind: String,
    post_id: i64,
    author_id: i64,
    payload: String,
    created_at: NaiveDateTime,
}

impl EventRow {
    fn into_event(self) -> Result<StoredEvent, PersistenceError> {
        let corrupt = |e: serde_json::Error| {
            PersistenceError::corrupt(format!("event {}", self.seq), Some(e.into()))
        };
        // Revocation rows keep the user in `author_id` and no post (`post_id` 0).
        let change = if self.kind == REVOCATION_KIND {
            let payload: RevocationPayload =
                serde_json::from_str(&self.payload).map_err(corrupt)?;
            Change::CredentialsRevoked { user: UserId(self.author_id), reason: payload.reason }
        } else {
            let payload: Payload = serde_json::from_str(&self.payload).map_err(corrupt)?;
            Change::Post(PostChange {
                post_id: PostId(self.post_id),
                author_id: UserId(self.author_id),
                before: payload.before,
                after: payload.after,
            })
        };
        Ok(StoredEvent { seq: Seq(self.seq), created_at: self.created_at.and_utc(), change })
    }
}

/// An event as its row stores it.
pub(crate) struct EncodedEvent {
    pub(crate) kind: &'static str,
    /// The post it is about (0 for none).
    pub(crate) post_id: i64,
    /// The post's author, or the user a revocation is about.
    pub(crate) author_id: i64,
    pub(crate) payload: String,
}

impl EncodedEvent {
    pub(crate) fn of(change: &Change) -> Result<Self, PersistenceError> {
        let encoded = match change {
            Change::Post(change) => serde_json::to_string(&Payload {
                before: change.before.clone(),
                after: change.after.clone(),
            })
            .map(|payload| (change.kind().as_str(), change.post_id.0, change.author_id.0, payload)),
            Change::CredentialsRevoked { user, reason } => {
                serde_json::to_string(&RevocationPayload { reason: *reason })
                    .map(|payload| (REVOCATION_KIND, 0, user.0, payload))
            }
        };
        let (kind, post_id, author_id, payload) =
            encoded.map_err(|e| PersistenceError::corrupt("a new event", Some(e.into())))?;
        Ok(Self { kind, post_id, author_id, payload })
    }
}

/// Queries on the outbox tables.
pub struct OutboxRepository;

impl OutboxRepository {
    /// Appends an event; must run inside the transaction that made the change, so that the
    /// event exists if and only if the change committed.
    ///
    /// On PostgreSQL, appends are serialized by a transaction-scoped advisory lock taken just
    /// before the insert, so seq values are handed out in commit order: a reader that has seen
    /// seq N never later finds a newly committed event with a smaller seq.
    pub fn append(
        conn: &mut DbConnection,
        change: &Change,
        now: Timestamp,
    ) -> Result<Seq, PersistenceError> {
        Self::serialize_writers(conn)?;
        let event = EncodedEvent::of(change)?;
        let values = (
            post_events::kind.eq(event.kind),
            post_events::post_id.eq(event.post_id),
            post_events::author_id.eq(event.author_id),
            post_events::payload.eq(event.payload),
            post_events::created_at.eq(now.naive_utc()),
        );
        let seq: i64 = on_backend!(conn, |c| diesel::insert_into(post_events::table)
            .values(values.clone())
            .returning(post_events::seq)
            .get_result(c))?;
        Ok(Seq(seq))
    }

    /// Waits, inside the caller's write transaction, until no other writer (of any instance)
    /// holds the outbox lock, and holds it until the transaction ends. On PostgreSQL this is a
    /// transaction-scoped advisory lock (taking it again in the same transaction is free); on
    /// SQLite the write transaction itself already excludes every other writer.
    pub fn serialize_writers(conn: &mut DbConnection) -> Result<(), PersistenceError> {
        if let DbConnection::Postgres(pg) = conn {
            diesel::select(pg_advisory_xact_lock(APPEND_LOCK_KEY)).execute(pg)?;
        }
        Ok(())
    }

    /// Up to `limit` events after `after`, oldest first.
    pub fn list_after(
        conn: &mut DbConnection,
        after: Seq,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, PersistenceError> {
        post_events::table
            .filter(post_events::seq.gt(after.0))
            .order(post_events::seq.asc())
            .limit(limit)
            .select(EventRow::as_select())
            .load(conn)?
            .into_iter()
            .map(EventRow::into_event)
            .collect()
    }

    /// Events with `after < seq < before`, oldest first, at most `limit`.
    pub fn list_between(
        conn: &mut DbConnection,
        after: Seq,
        before: Seq,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, PersistenceError> {
        post_events::table
            .filter(post_events::seq.gt(after.0).and(post_events::seq.lt(before.0)))
            .order(post_events::seq.asc())
            .limit(limit)
            .select(EventRow::as_select())
            .load(conn)?
            .into_iter()
            .map(EventRow::into_event)
            .collect()
    }

    /// The newest seq ever handed out (0 for an empty history).
    pub fn latest_seq(conn: &mut DbConnection) -> Result<Seq, PersistenceError> {
        // One statement: every read of a list or a post asks for this.
        let head: FeedHead = outbox_state::table.find(1).select(feed_head()).first(conn)?;
        Ok(newest_seq(head))
    }

    /// The dispatcher's bookkeeping row.
    pub fn state(conn: &mut DbConnection) -> Result<OutboxState, PersistenceError> {
        let (published, pruned, leader, lease): (i64, i64, Option<String>, Option<NaiveDateTime>) =
            outbox_state::table
                .find(1)
                .select((
                    outbox_state::published_seq,
                    outbox_state::pruned_seq,
                    outbox_state::leader,
                    outbox_state::lease_expires_at,
                ))
                .first(conn)?;
        Ok(OutboxState {
            published: Seq(published),
            pruned: Seq(pruned),
            leader,
            lease_expires_at: lease.map(|t| t.and_utc()),
        })
    }

    /// Takes or renews the publishing lease for `instance` until `until`, if nobody else holds
    /// an unexpired one. Returns whether `instance` now holds it.
    pub fn acquire_lease(
        conn: &mut DbConnection,
        instance: &str,
        until: Timestamp,
        now: Timestamp,
    ) -> Result<bool, PersistenceError> {
        let rows = diesel::update(
            outbox_state::table.find(1).filter(
                outbox_state::leader
                    .eq(instance)
                    .or(outbox_state::leader.is_null())
                    .or(outbox_state::lease_expires_at.is_null())
                    .or(outbox_state::lease_expires_at.lt(now.naive_utc())),
            ),
        )
        .set((
            outbox_state::leader.eq(instance),
            outbox_state::lease_expires_at.eq(until.naive_utc()),
        ))
        .execute(conn)?;
        Ok(rows == 1)
    }

    /// Gives up the lease if `instance` holds it (at shutdown, so a successor need not wait).
    pub fn release_lease(conn: &mut DbConnection, instance: &str) -> Result<(), PersistenceError> {
        diesel::update(outbox_state::table.find(1).filter(outbox_state::leader.eq(instance)))
            .set((
                outbox_state::leader.eq(None::<String>),
                outbox_state::lease_expires_at.eq(None::<NaiveDateTime>),
            ))
            .execute(conn)?;
        Ok(())
    }

    /// Records that everything up to `through` was published. With `leader`, only while that
    /// instance still holds the lease (returns `false` otherwise).
    pub fn mark_published(
        conn: &mut DbConnection,
        through: Seq,
        leader: Option<&str>,
    ) -> Result<bool, PersistenceError> {
        match leader {
            Some(leader) => {
                // Matches whenever `leader` holds the lease, even if the cursor is already
                // there (so "no row changed" means "lost the lease"); never moves it back.
                let advanced = diesel::dsl::case_when::<_, _, diesel::sql_types::BigInt>(
                    outbox_state::published_seq.lt(through.0),
                    through.0,
                )
                .otherwise(outbox_state::published_seq);
                let rows = diesel::update(
                    outbox_state::table.find(1).filter(outbox_state::leader.eq(leader)),
                )
                .set(outbox_state::published_seq.eq(advanced))
                .execute(conn)?;
                Ok(rows == 1)
            }
            None => {
                diesel::update(
                    outbox_state::table.find(1).filter(outbox_state::published_seq.lt(through.0)),
                )
                .set(outbox_state::published_seq.eq(through.0))
                .execute(conn)?;
                Ok(true)
            }
        }
    }

    /// Deletes published events that are both older than `older_than` and not among the newest
    /// `keep_last`; returns how many were deleted. Unpublished events are never deleted.
    pub fn prune(
        conn: &mut DbConnection,
        older_than: Timestamp,
        keep_last: i64,
    ) -> Result<usize, PersistenceError> {
        let state = Self::state(conn)?;
        let newest: Option<i64> =
            post_events::table.select(diesel::dsl::max(post_events::seq)).first(conn)?;
        let bound = state.published.0.min(newest.unwrap_or(0).saturating_sub(keep_last));
        if bound <= state.pruned.0 {
            return Ok(0);
        }
        let doomed = post_events::table
            .filter(post_events::seq.le(bound))
            .filter(post_events::created_at.lt(older_than.naive_utc()));
        let highest: Option<i64> = doomed.select(diesel::dsl::max(post_events::seq)).first(conn)?;
        let Some(highest) = highest else { return Ok(0) };
        let deleted = diesel::delete(
            post_events::table
                .filter(post_events::seq.le(highest))
                .filter(post_events::created_at.lt(older_than.naive_utc())),
        )
        .execute(conn)?;
        diesel::update(outbox_state::table.find(1).filter(outbox_state::pruned_seq.lt(highest)))
            .set(outbox_state::pruned_seq.eq(highest))
            .execute(conn)?;
        Ok(deleted)
    }
}

/// What the newest seq is computed from: the newest event kept, and the positions pruning and
/// publishing have reached (events can all be pruned, and must never be handed out again).
pub(crate) type FeedHead = (Option<i64>, i64, i64);

/// The columns of [`FeedHead`], selected from `outbox_state` (joined to anything).
#[allow(clippy::type_complexity)]
pub(crate) fn feed_head() -> (
    diesel::dsl::SingleValue<
        diesel::dsl::Select<post_events::table, diesel::helper_types::max<post_events::seq>>,
    >,
    outbox_state::pruned_seq,
    outbox_state::published_seq,
) {
    (
        post_events::table.select(diesel::dsl::max(post_events::seq)).single_value(),
        outbox_state::pruned_seq,
        outbox_state::published_seq,
    )
}

/// The newest seq ever handed out (0 for an empty history), as a [`FeedHead`] tells it.
pub(crate) fn newest_seq((max, pruned, published): FeedHead) -> Seq {
    Seq(max.unwrap_or(0).max(pruned).max(published))
}
