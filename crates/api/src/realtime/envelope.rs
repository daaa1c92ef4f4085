//! What the feed puts on the channel layer. The layer carries opaque bytes; these are the three
//! kinds of message the feed sends through it, each tagged by its first byte:
//!
//! - a **feed envelope** per post event, carrying the event already rendered for each audience,
//!   so a fan-out to thousands of streams serializes nothing;
//! - a **revocation** per credentials change, sent to the user's own group, which ends that
//!   user's streams unless they hold newer credentials;
//! - a **presence** frame, ready to send, with the epoch it was counted at.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use newspaper_domain::{Audience, PostId, Seq, StoredEvent, UserId, Viewer};

/// The group every feed stream joins.
pub const BLOG_FEED_GROUP: &str = "blog_feed";

/// The group of one post's followers: `post.<id>`.
pub fn post_group(post: PostId) -> String {
    format!("post.{}", post.0)
}

/// The group of one user's authenticated streams: `user.<id>`. Never offered to clients.
pub fn user_group(user: UserId) -> String {
    format!("user.{}", user.0)
}

const FEED: u8 = b'F';
const REVOCATION: u8 = b'R';
const PRESENCE: u8 = b'P';
const VERSION: u8 = 1;
const HAS_PUBLIC: u8 = 1;
const HAS_PRIVILEGED: u8 = 2;
const PRIVILEGED_IS_PUBLIC: u8 = 4;
const FEED_HEADER_LEN: usize = 3 + 4 * 8;

/// Why bytes from the layer could not be read as a feed message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed feed message: {0}")]
pub struct MalformedMessage(&'static str);

/// One message of the feed on the layer. Its frames are `Bytes` when it is built to be sent,
/// and slices of the received message when it is read ([`LayerMessage::decode`]): a delivery
/// to thousands of streams then touches no shared reference count to read one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerMessage<F = Bytes> {
    /// A post event.
    Feed(FeedEnvelope<F>),
    /// `user`'s credentials changed at `seq`: their streams check theirs.
    Revocation {
        /// The revocation's outbox seq.
        seq: Seq,
        /// Whose streams.
        user: UserId,
    },
    /// A presence frame for this process's streams, counted after presence epoch `epoch`.
    Presence {
        /// The value of the presence epoch before the count was taken.
        epoch: u64,
        /// The JSON text frame.
        frame: F,
    },
}

impl<F: AsRef<[u8]>> LayerMessage<F> {
    /// The wire form.
    pub fn encode(&self) -> Bytes {
        match self {
            LayerMessage::Feed(envelope) => envelope.encode(),
            LayerMessage::Revocation { seq, user } => {
                let mut buf = BytesMut::with_capacity(2 + 16);
                buf.put_u8(REVOCATION);
                buf.put_u8(VERSION);
                buf.put_i64(seq.0);
                buf.put_i64(user.0);
                buf.freeze()
            }
            LayerMessage::Presence { epoch, frame } => {
                let frame = frame.as_ref();
                let mut buf = BytesMut::with_capacity(2 + 8 + frame.len());
                buf.put_u8(PRESENCE);
                buf.put_u8(VERSION);
                buf.put_u64(*epoch);
                buf.put_slice(frame);
                buf.freeze()
            }
        }
    }
}

impl<'a> LayerMessage<&'a [u8]> {
    /// Reads a message in place: its frames are slices of `bytes`.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, MalformedMessage> {
        match (bytes.first(), bytes.get(1)) {
            (Some(&FEED), Some(&VERSION)) => FeedEnvelope::decode(bytes).map(LayerMessage::Feed),
            (Some(&REVOCATION), Some(&VERSION)) if bytes.len() == 18 => {
                let mut cursor = &bytes[2..];
                Ok(LayerMessage::Revocation {
                    seq: Seq(cursor.get_i64()),
                    user: UserId(cursor.get_i64()),
                })
            }
            (Some(&PRESENCE), Some(&VERSION)) if bytes.len() >= 10 => {
                let epoch = (&bytes[2..10]).get_u64();
                Ok(LayerMessage::Presence { epoch, frame: &bytes[10..] })
            }
            _ => Err(MalformedMessage("unknown format")),
        }
    }

    /// The message with its frames copied out of the bytes it was read from.
    pub fn into_owned(self) -> LayerMessage {
        let copy = |frame: &[u8]| Bytes::copy_from_slice(frame);
        match self {
            LayerMessage::Feed(e) => LayerMessage::Feed(FeedEnvelope {
                seq: e.seq,
                prev_seq: e.prev_seq,
                post_id: e.post_id,
                author_id: e.author_id,
                public: e.public.map(copy),
                privileged: e.privileged.map(copy),
            }),
            LayerMessage::Revocation { seq, user } => LayerMessage::Revocation { seq, user },
            LayerMessage::Presence { epoch, frame } => {
                LayerMessage::Presence { epoch, frame: copy(frame) }
            }
        }
    }
}

/// One post event as it travels on the layer; see [`LayerMessage`] for `F`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEnvelope<F = Bytes> {
    /// The event's outbox seq.
    pub seq: Seq,
    /// The seq of the post event published just before it, so a stream that sees a jump
    /// knows it missed something and can catch up from the outbox.
    pub prev_seq: Seq,
    /// The post concerned.
    pub post_id: PostId,
    /// Its author (who, like staff, sees the privileged rendering).
    pub author_id: UserId,
    /// The JSON text frame for everyone else; `None` when they see nothing of this event.
    pub public: Option<F>,
    /// The JSON text frame for the author and staff.
    pub privileged: Option<F>,
}

impl<F: AsRef<[u8]>> FeedEnvelope<F> {
    /// The frame `viewer` should receive, if any.
    pub fn frame_for(&self, viewer: &Viewer) -> Option<&[u8]> {
        match viewer.audience_for(self.author_id) {
            Audience::Public => self.public.as_ref().map(AsRef::as_ref),
            Audience::Privileged => self.privileged.as_ref().map(AsRef::as_ref),
        }
    }

    /// The wire form: a fixed header, then the renderings.
    pub fn encode(&self) -> Bytes {
        let public = self.public.as_ref().map(AsRef::as_ref);
        let privileged = self.privileged.as_ref().map(AsRef::as_ref);
        let same = matches!((public, privileged), (Some(p), Some(q)) if p == q);
        let mut flags = 0;
        if public.is_some() {
            flags |= HAS_PUBLIC;
        }
        if privileged.is_some() {
            flags |= HAS_PRIVILEGED;
        }
        if same {
            flags |= PRIVILEGED_IS_PUBLIC;
        }
        let body = public.map_or(0, <[u8]>::len)
            + if same { 0 } else { privileged.map_or(0, <[u8]>::len) };
        let mut buf = BytesMut::with_capacity(FEED_HEADER_LEN + 8 + body);
        buf.put_u8(FEED);
        buf.put_u8(VERSION);
        buf.put_u8(flags);
        for n in [self.seq.0, self.prev_seq.0, self.post_id.0, self.author_id.0] {
            buf.put_i64(n);
        }
        if let Some(public) = public {
            put_chunk(&mut buf, public);
        }
        if let (Some(privileged), false) = (privileged, same) {
            put_chunk(&mut buf, privileged);
        }
        buf.freeze()
    }
}

impl FeedEnvelope {
    /// Renders an outbox event for both audiences; `None` for an event that is not a post
    /// change.
    pub fn from_event(event: &StoredEvent, prev_seq: Seq) -> Option<Self> {
        let change = event.change.post()?;
        let render = |audience| {
            event.feed_event(audience).and_then(|e| serde_json::to_vec(&e).ok()).map(Bytes::from)
        };
        let public = render(Audience::Public);
        let privileged = render(Audience::Privileged);
        // Share the buffer when both audiences see the same thing (any published post).
        let privileged = match (&public, privileged) {
            (Some(p), Some(q)) if *p == q => Some(p.clone()),
            (_, q) => q,
        };
        Some(Self {
            seq: event.seq,
            prev_seq,
            post_id: change.post_id,
            author_id: change.author_id,
            public,
            privileged,
        })
    }
}

impl<'a> FeedEnvelope<&'a [u8]> {
    /// Reads an envelope in place: its renderings are slices of `bytes`.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, MalformedMessage> {
        if bytes.len() < FEED_HEADER_LEN {
            return Err(MalformedMessage("too short"));
        }
        let mut cursor = bytes;
        if cursor.get_u8() != FEED || cursor.get_u8() != VERSION {
            return Err(MalformedMessage("unknown format"));
        }
        let flags = cursor.get_u8();
        let (seq, prev_seq, post_id, author_id) =
            (cursor.get_i64(), cursor.get_i64(), cursor.get_i64(), cursor.get_i64());
        let mut offset = FEED_HEADER_LEN;
        let mut take_chunk = || -> Result<&'a [u8], MalformedMessage> {
            let rest = bytes.get(offset..).ok_or(MalformedMessage("truncated"))?;
            if rest.len() < 4 {
                return Err(MalformedMessage("truncated"));
            }
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let start = offset + 4;
            let end = start
                .checked_add(len)
                .filter(|e| *e <= bytes.len())
                .ok_or(MalformedMessage("truncated"))?;
            offset = end;
            Ok(&bytes[start..end])
        };
        let public = if flags & HAS_PUBLIC != 0 { Some(take_chunk()?) } else { None };
        let privileged = if flags & HAS_PRIVILEGED == 0 {
            None
        } else if flags & PRIVILEGED_IS_PUBLIC != 0 {
            public
        } else {
            Some(take_chunk()?)
        };
        Ok(Self {
            seq: Seq(seq),
            prev_seq: Seq(prev_seq),
            post_id: PostId(post_id),
            author_id: UserId(author_id),
            public,
            privileged,
        })
    }
}

fn put_chunk(buf: &mut BytesMut, chunk: &[u8]) {
    buf.put_u32(u32::try_from(chunk.len()).unwrap_or(u32::MAX));
    buf.put_slice(chunk);
}

#[cfg(test)]
mod tests {
    use newspaper_domain::{Change, PostChange, PostSnapshot, PostStatus, RevocationReason, now};

    use super::*;

    fn event(before: Option<PostStatus>, after: Option<PostStatus>) -> StoredEvent {
        let snap = |status| PostSnapshot { title: "T".into(), status };
        StoredEvent {
            seq: Seq(9),
            created_at: now(),
            change: Change::Post(PostChange {
                post_id: PostId(3),
                author_id: UserId(1),
                before: before.map(snap),
                after: after.map(snap),
            }),
        }
    }

    #[test]
    fn drafts_have_no_public_rendering() {
        let env = FeedEnvelope::from_event(&event(None, Some(PostStatus::Draft)), Seq(8)).unwrap();
        assert!(env.public.is_none());
        assert!(env.frame_for(&Viewer::Anonymous).is_none());
        assert!(env.frame_for(&Viewer::User { id: UserId(2), is_staff: false }).is_none());
        assert!(env.frame_for(&Viewer::User { id: UserId(2), is_staff: true }).is_some());
        let author = env.frame_for(&Viewer::User { id: UserId(1), is_staff: false }).unwrap();
        assert!(
            std::str::from_utf8(author).unwrap().starts_with(r#"{"event":"post_created","id":3"#)
        );
    }

    #[test]
    fn every_kind_round_trips_and_identical_renderings_are_shared() {
        for (before, after) in [
            (None, Some(PostStatus::Published)),
            (Some(PostStatus::Published), Some(PostStatus::Draft)),
            (Some(PostStatus::Draft), None),
        ] {
            let env = LayerMessage::Feed(
                FeedEnvelope::from_event(&event(before, after), Seq(8)).unwrap(),
            );
            assert_eq!(LayerMessage::decode(&env.encode()).unwrap().into_owned(), env);
        }
        let published =
            FeedEnvelope::from_event(&event(None, Some(PostStatus::Published)), Seq(0)).unwrap();
        let json_len = published.public.as_ref().unwrap().len();
        assert_eq!(published.encode().len(), FEED_HEADER_LEN + 4 + json_len, "one shared copy");
        for message in [
            LayerMessage::Revocation { seq: Seq(12), user: UserId(4) },
            LayerMessage::Presence { epoch: 7, frame: Bytes::from_static(b"{\"event\":1}") },
        ] {
            assert_eq!(LayerMessage::decode(&message.encode()).unwrap().into_owned(), message);
        }
        let revoked = StoredEvent {
            change: Change::CredentialsRevoked {
                user: UserId(1),
                reason: RevocationReason::Deactivated,
            },
            ..event(None, None)
        };
        assert_eq!(FeedEnvelope::from_event(&revoked, Seq(0)), None);
    }

    #[test]
    fn garbage_is_rejected_not_panicked_on() {
        for junk in [
            &b""[..],
            b"F",
            b"R\x01",
            b"P\x01abc",
            b"X\x01\x00aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert!(LayerMessage::decode(&Bytes::copy_from_slice(junk)).is_err());
        }
        let env =
            FeedEnvelope::from_event(&event(None, Some(PostStatus::Published)), Seq(0)).unwrap();
        let wire = env.encode();
        assert!(LayerMessage::decode(&wire.slice(..wire.len() - 1)).is_err());
        assert_eq!(post_group(PostId(42)), "post.42");
        assert_eq!(user_group(UserId(7)), "user.7");
    }
}
