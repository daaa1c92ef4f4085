//! What the blog feed puts on the layer: one envelope per outbox event carrying the event
//! already rendered for each audience, so a fan-out to thousands of streams serializes nothing.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use newspaper_domain::{Audience, PostId, Seq, StoredEvent, UserId, Viewer};

use crate::LayerError;

/// The group every feed stream joins.
pub const BLOG_FEED_GROUP: &str = "blog_feed";

/// The group of one post's followers: `post.<id>`.
pub fn post_group(post: PostId) -> String {
    format!("post.{}", post.0)
}

const MAGIC: u8 = b'F';
const VERSION: u8 = 1;
const HAS_PUBLIC: u8 = 1;
const HAS_PRIVILEGED: u8 = 2;
const PRIVILEGED_IS_PUBLIC: u8 = 4;
const HEADER_LEN: usize = 3 + 4 * 8;

/// One feed event as it travels on the layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEnvelope {
    /// The event's outbox seq.
    pub seq: Seq,
    /// The seq of the event published just before it, so a stream that sees a jump knows it
    /// missed something and can catch up from the outbox.
    pub prev_seq: Seq,
    /// The post concerned.
    pub post_id: PostId,
    /// Its author (who, like staff, sees the privileged rendering).
    pub author_id: UserId,
    /// The JSON text frame for everyone else; `None` when they see nothing of this event.
    pub public: Option<Bytes>,
    /// The JSON text frame for the author and staff.
    pub privileged: Option<Bytes>,
}

impl FeedEnvelope {
    /// Renders an outbox event for both audiences.
    pub fn from_event(event: &StoredEvent, prev_seq: Seq) -> Result<Self, LayerError> {
        let render = |audience| -> Result<Option<Bytes>, LayerError> {
            event
                .feed_event(audience)
                .map(|e| serde_json::to_vec(&e).map(Bytes::from))
                .transpose()
                .map_err(|e| LayerError::Malformed(e.to_string()))
        };
        let public = render(Audience::Public)?;
        let privileged = render(Audience::Privileged)?;
        // Share the buffer when both audiences see the same thing (any published post).
        let privileged = match (&public, privileged) {
            (Some(p), Some(q)) if *p == q => Some(p.clone()),
            (_, q) => q,
        };
        Ok(Self {
            seq: event.seq,
            prev_seq,
            post_id: event.change.post_id,
            author_id: event.change.author_id,
            public,
            privileged,
        })
    }

    /// The frame `viewer` should receive, if any.
    pub fn frame_for(&self, viewer: &Viewer) -> Option<&Bytes> {
        match viewer.audience_for(self.author_id) {
            Audience::Public => self.public.as_ref(),
            Audience::Privileged => self.privileged.as_ref(),
        }
    }

    /// The wire form: a fixed header, then the renderings.
    pub fn encode(&self) -> Bytes {
        let same = matches!((&self.public, &self.privileged), (Some(p), Some(q)) if p == q);
        let mut flags = 0;
        if self.public.is_some() {
            flags |= HAS_PUBLIC;
        }
        if self.privileged.is_some() {
            flags |= HAS_PRIVILEGED;
        }
        if same {
            flags |= PRIVILEGED_IS_PUBLIC;
        }
        let body = self.public.as_ref().map_or(0, Bytes::len)
            + if same { 0 } else { self.privileged.as_ref().map_or(0, Bytes::len) };
        let mut buf = BytesMut::with_capacity(HEADER_LEN + 8 + body);
        buf.put_u8(MAGIC);
        buf.put_u8(VERSION);
        buf.put_u8(flags);
        for n in [self.seq.0, self.prev_seq.0, self.post_id.0, self.author_id.0] {
            buf.put_i64(n);
        }
        if let Some(public) = &self.public {
            put_chunk(&mut buf, public);
        }
        if let (Some(privileged), false) = (&self.privileged, same) {
            put_chunk(&mut buf, privileged);
        }
        buf.freeze()
    }

    /// Reads an envelope without copying the renderings (they stay slices of `bytes`).
    pub fn decode(bytes: &Bytes) -> Result<Self, LayerError> {
        let malformed = |why: &str| LayerError::Malformed(format!("feed envelope: {why}"));
        if bytes.len() < HEADER_LEN {
            return Err(malformed("too short"));
        }
        let mut cursor = &bytes[..];
        if cursor.get_u8() != MAGIC || cursor.get_u8() != VERSION {
            return Err(malformed("unknown format"));
        }
        let flags = cursor.get_u8();
        let (seq, prev_seq, post_id, author_id) =
            (cursor.get_i64(), cursor.get_i64(), cursor.get_i64(), cursor.get_i64());
        let mut offset = HEADER_LEN;
        let mut take_chunk = || -> Result<Bytes, LayerError> {
            let rest = bytes.get(offset..).ok_or_else(|| malformed("truncated"))?;
            if rest.len() < 4 {
                return Err(malformed("truncated"));
            }
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let start = offset + 4;
            let end = start
                .checked_add(len)
                .filter(|e| *e <= bytes.len())
                .ok_or_else(|| malformed("truncated"))?;
            offset = end;
            Ok(bytes.slice(start..end))
        };
        let public = if flags & HAS_PUBLIC != 0 { Some(take_chunk()?) } else { None };
        let privileged = if flags & HAS_PRIVILEGED == 0 {
            None
        } else if flags & PRIVILEGED_IS_PUBLIC != 0 {
            public.clone()
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

fn put_chunk(buf: &mut BytesMut, chunk: &Bytes) {
    buf.put_u32(u32::try_from(chunk.len()).unwrap_or(u32::MAX));
    buf.put_slice(chunk);
}

#[cfg(test)]
mod tests {
    use newspaper_domain::{PostChange, PostSnapshot, PostStatus, now};

    use super::*;

    fn event(before: Option<PostStatus>, after: Option<PostStatus>) -> StoredEvent {
        let snap = |status| PostSnapshot { title: "T".into(), status };
        StoredEvent {
            seq: Seq(9),
            created_at: now(),
            change: PostChange {
                post_id: PostId(3),
                author_id: UserId(1),
                before: before.map(snap),
                after: after.map(snap),
            },
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
    fn round_trips_and_shares_identical_renderings() {
        for (before, after) in [
            (None, Some(PostStatus::Published)),
            (Some(PostStatus::Published), Some(PostStatus::Draft)),
            (Some(PostStatus::Draft), None),
        ] {
            let env = FeedEnvelope::from_event(&event(before, after), Seq(8)).unwrap();
            let wire = env.encode();
            let back = FeedEnvelope::decode(&wire).unwrap();
            assert_eq!(back, env);
        }
        let published =
            FeedEnvelope::from_event(&event(None, Some(PostStatus::Published)), Seq(0)).unwrap();
        let wire = published.encode();
        let json_len = published.public.as_ref().unwrap().len();
        assert_eq!(wire.len(), HEADER_LEN + 4 + json_len, "one copy of a shared rendering");
    }

    #[test]
    fn garbage_is_rejected_not_panicked_on() {
        for junk in [&b""[..], b"F", b"X\x01\x00aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"] {
            assert!(FeedEnvelope::decode(&Bytes::copy_from_slice(junk)).is_err());
        }
        let env =
            FeedEnvelope::from_event(&event(None, Some(PostStatus::Published)), Seq(0)).unwrap();
        let wire = env.encode();
        assert!(FeedEnvelope::decode(&wire.slice(..wire.len() - 1)).is_err());
        assert_eq!(post_group(PostId(42)), "post.42");
    }
}
