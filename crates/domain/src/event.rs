//! What changed: the outbox record of every committed post write, and how each viewer sees it.

use serde::{Deserialize, Serialize};

use crate::time::rfc3339_millis;
use crate::{Audience, Post, PostId, PostStatus, Seq, Timestamp, UserId};

/// The three events of the feed, spelled as on the wire (`post_created`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The post became visible.
    PostCreated,
    /// The post was visible and still is, with new values.
    PostUpdated,
    /// The post was visible and no longer is.
    PostDeleted,
}

impl EventKind {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::PostCreated => "post_created",
            EventKind::PostUpdated => "post_updated",
            EventKind::PostDeleted => "post_deleted",
        }
    }
}

/// The fields of a post an event carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostSnapshot {
    /// The title at that moment.
    pub title: String,
    /// The status at that moment.
    pub status: PostStatus,
}

impl From<&Post> for PostSnapshot {
    fn from(post: &Post) -> Self {
        Self { title: post.title.clone(), status: post.status }
    }
}

/// One committed change to a post: its state before (none if created) and after (none if
/// deleted). Storing both lets every viewer get the event as seen from their own view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostChange {
    /// The post that changed.
    pub post_id: PostId,
    /// Its author, who (with staff) may see it as a draft.
    pub author_id: UserId,
    /// The post before the change; `None` for a creation.
    pub before: Option<PostSnapshot>,
    /// The post after the change; `None` for a deletion.
    pub after: Option<PostSnapshot>,
}

impl PostChange {
    /// A new post.
    pub fn created(post: &Post) -> Self {
        Self { post_id: post.id, author_id: post.author.id, before: None, after: Some(post.into()) }
    }

    /// An edit, from `before` to `after`.
    pub fn updated(before: &Post, after: &Post) -> Self {
        Self {
            post_id: after.id,
            author_id: after.author.id,
            before: Some(before.into()),
            after: Some(after.into()),
        }
    }

    /// A deletion.
    pub fn deleted(post: &Post) -> Self {
        Self { post_id: post.id, author_id: post.author.id, before: Some(post.into()), after: None }
    }

    /// What happened, as the author sees it.
    pub fn kind(&self) -> EventKind {
        match (&self.before, &self.after) {
            (None, _) => EventKind::PostCreated,
            (Some(_), Some(_)) => EventKind::PostUpdated,
            (Some(_), None) => EventKind::PostDeleted,
        }
    }

    /// What happened as `audience` sees it, with the fields they may see; `None` when the post
    /// was invisible to them both before and after.
    ///
    /// A draft being published is a creation for the public; a post going back to draft is a
    /// deletion for them, carrying the title they last saw, never the draft's.
    pub fn as_seen_by(&self, audience: Audience) -> Option<(EventKind, &PostSnapshot)> {
        let before = self.before.as_ref().filter(|s| audience.can_see(s.status));
        let after = self.after.as_ref().filter(|s| audience.can_see(s.status));
        match (before, after) {
            (None, None) => None,
            (None, Some(after)) => Some((EventKind::PostCreated, after)),
            (Some(_), Some(after)) => Some((EventKind::PostUpdated, after)),
            (Some(before), None) => Some((EventKind::PostDeleted, before)),
        }
    }
}

/// Why a user's live streams lose the rights their tokens granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationReason {
    /// The user changed their password (every earlier token stops working).
    PasswordChanged,
    /// The password was reset with a reset token.
    PasswordReset,
    /// The account was deactivated.
    Deactivated,
    /// The user lost staff rights.
    StaffRevoked,
}

impl RevocationReason {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationReason::PasswordChanged => "password_changed",
            RevocationReason::PasswordReset => "password_reset",
            RevocationReason::Deactivated => "deactivated",
            RevocationReason::StaffRevoked => "staff_revoked",
        }
    }
}

/// Everything the outbox records: post changes, which the feed shows, and revocations, which
/// end the live streams of a user whose credentials changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A post was created, edited or deleted.
    Post(PostChange),
    /// The credentials of `user` no longer grant what they granted.
    CredentialsRevoked {
        /// Whose credentials.
        user: UserId,
        /// What happened to them.
        reason: RevocationReason,
    },
}

impl Change {
    /// The post change, if this is one.
    pub fn post(&self) -> Option<&PostChange> {
        match self {
            Change::Post(change) => Some(change),
            Change::CredentialsRevoked { .. } => None,
        }
    }
}

impl From<PostChange> for Change {
    fn from(change: PostChange) -> Self {
        Change::Post(change)
    }
}

/// An outbox entry: a change with its place in the global order and its commit time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Position in the outbox, strictly increasing in commit order.
    pub seq: Seq,
    /// When the change was committed.
    pub created_at: Timestamp,
    /// The change itself.
    pub change: Change,
}

impl StoredEvent {
    /// The message `audience` receives for this event, if any (revocations are never shown).
    pub fn feed_event(&self, audience: Audience) -> Option<FeedEvent> {
        let change = self.change.post()?;
        let (event, snapshot) = change.as_seen_by(audience)?;
        Some(FeedEvent {
            event,
            id: change.post_id,
            title: snapshot.title.clone(),
            status: snapshot.status,
            seq: self.seq,
            timestamp: self.created_at,
        })
    }
}

/// One post event as a WebSocket client receives it. The first four keys are exactly those of
/// the Django Channels tutorial, so its clients keep working.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedEvent {
    /// `post_created`, `post_updated` or `post_deleted`.
    pub event: EventKind,
    /// The post's id.
    pub id: PostId,
    /// The post's title (for a deletion, the last title the receiver could see).
    pub title: String,
    /// The post's status (for a deletion, the last status the receiver could see).
    pub status: PostStatus,
    /// The event's outbox position; resume a stream with `?since=<seq>`.
    pub seq: Seq,
    /// When the change was committed (RFC 3339 UTC, milliseconds).
    #[serde(with = "rfc3339_millis")]
    pub timestamp: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;
    use PostStatus::{Draft, Published};

    fn change(before: Option<PostStatus>, after: Option<PostStatus>) -> PostChange {
        let snap = |title: &str, status| PostSnapshot { title: title.into(), status };
        PostChange {
            post_id: PostId(5),
            author_id: UserId(1),
            before: before.map(|s| snap("old", s)),
            after: after.map(|s| snap("new", s)),
        }
    }

    fn seen(c: &PostChange, audience: Audience) -> Option<(EventKind, &str)> {
        c.as_seen_by(audience).map(|(k, s)| (k, s.title.as_str()))
    }

    #[test]
    fn privileged_viewers_see_every_change_as_it_happened() {
        use EventKind::*;
        let p = Audience::Privileged;
        assert_eq!(seen(&change(None, Some(Draft)), p), Some((PostCreated, "new")));
        assert_eq!(seen(&change(Some(Draft), Some(Published)), p), Some((PostUpdated, "new")));
        assert_eq!(seen(&change(Some(Draft), None), p), Some((PostDeleted, "old")));
    }

    #[test]
    fn public_sees_visibility_transitions_and_never_a_draft_title() {
        use EventKind::*;
        let p = Audience::Public;
        assert_eq!(seen(&change(None, Some(Draft)), p), None);
        assert_eq!(seen(&change(None, Some(Published)), p), Some((PostCreated, "new")));
        assert_eq!(seen(&change(Some(Draft), Some(Draft)), p), None);
        assert_eq!(seen(&change(Some(Draft), Some(Published)), p), Some((PostCreated, "new")));
        assert_eq!(seen(&change(Some(Published), Some(Published)), p), Some((PostUpdated, "new")));
        assert_eq!(seen(&change(Some(Published), Some(Draft)), p), Some((PostDeleted, "old")));
        assert_eq!(seen(&change(Some(Published), None), p), Some((PostDeleted, "old")));
        assert_eq!(seen(&change(Some(Draft), None), p), None);
    }

    #[test]
    fn feed_event_keeps_the_tutorial_keys_first() {
        let event = StoredEvent {
            seq: Seq(1017),
            created_at: chrono::DateTime::parse_from_rfc3339("2026-11-23T10:15:02.123456Z")
                .unwrap()
                .with_timezone(&chrono::Utc),
            change: change(None, Some(Published)).into(),
        };
        let json = serde_json::to_string(&event.feed_event(Audience::Public).unwrap()).unwrap();
        assert_eq!(
            json,
            r#"{"event":"post_created","id":5,"title":"new","status":"published","seq":1017,"timestamp":"2026-11-23T10:15:02.123Z"}"#
        );
        assert_eq!(event.change.post().map(PostChange::kind), Some(EventKind::PostCreated));
        let revoked = StoredEvent {
            change: Change::CredentialsRevoked {
                user: UserId(1),
                reason: RevocationReason::PasswordChanged,
            },
            ..event
        };
        assert_eq!(revoked.feed_event(Audience::Privileged), None);
    }
}
