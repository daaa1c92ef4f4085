//! Where a stream stands in the global order of events, kept apart from what it delivered
//! through single-post groups, so that leaving `blog_feed` and coming back replays exactly what
//! was missed: nothing twice, nothing skipped.

use newspaper_domain::Seq;

/// Deliveries remembered while away from the feed; past this a rejoin asks for a resync.
const AWAY_MEMORY: usize = 1024;

/// What a live post event means for this stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Arrival {
    /// Already dealt with (a duplicate, or older than where the stream started).
    Duplicate,
    /// New. With `gap_after`, events after that seq were published but never reached this
    /// stream: fetch them from the outbox before this one.
    Fresh { gap_after: Option<Seq> },
}

/// How to come back to the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Rejoin {
    /// Replay the events after `after`, except `skip` (already delivered while away).
    Replay { after: Seq, skip: Vec<Seq> },
    /// Too much happened while away to remember: tell the client to resync, then go on from
    /// `after`.
    Resync { after: Seq },
}

/// A stream's place in the event order.
#[derive(Debug)]
pub(super) struct Position {
    /// In the feed: every event up to here has been dealt with. Away: where the stream left.
    feed: Seq,
    /// The newest event dealt with through any group; dedupes single-post deliveries.
    last: Seq,
    in_feed: bool,
    /// Seqs delivered through post groups while away from the feed, in order.
    away: Vec<Seq>,
    away_overflowed: bool,
}

impl Position {
    /// A stream in the feed that has dealt with everything up to `seq`.
    pub(super) fn at(seq: Seq) -> Self {
        Self { feed: seq, last: seq, in_feed: true, away: Vec::new(), away_overflowed: false }
    }

    /// Whether the stream follows the whole feed.
    pub(super) fn in_feed(&self) -> bool {
        self.in_feed
    }

    /// Where a client should resume from (`?since=`) if this stream ended now.
    pub(super) fn resume_point(&self) -> Seq {
        if self.in_feed { self.feed } else { self.last }
    }

    /// Where a catch-up after lost messages starts: the feed's position, or (away from the
    /// feed) the last single-post delivery.
    pub(super) fn catch_up_point(&self) -> Seq {
        self.resume_point()
    }

    /// Classifies a live post event `seq` whose predecessor in the feed was `prev`.
    pub(super) fn arrive(&self, seq: Seq, prev: Seq) -> Arrival {
        if self.in_feed {
            if seq <= self.feed {
                return Arrival::Duplicate;
            }
            Arrival::Fresh { gap_after: (prev > self.feed).then_some(self.feed) }
        } else if seq <= self.last {
            Arrival::Duplicate
        } else {
            // Away from the feed the chain of `prev` is not ours to follow: only single posts.
            Arrival::Fresh { gap_after: None }
        }
    }

    /// Records that the event `seq` was dealt with; `sent` when a frame went to the client.
    pub(super) fn advance(&mut self, seq: Seq, sent: bool) {
        if self.in_feed {
            self.feed = self.feed.max(seq);
        } else if sent {
            if self.away.len() < AWAY_MEMORY {
                self.away.push(seq);
            } else {
                self.away_overflowed = true;
            }
        }
        self.last = self.last.max(seq);
    }

    /// Leaves the feed, remembering where.
    pub(super) fn leave(&mut self) {
        if self.in_feed {
            self.in_feed = false;
            self.away.clear();
            self.away_overflowed = false;
        }
    }

    /// Comes back to the feed; the caller replays as told, then calls [`Position::rejoined`].
    pub(super) fn rejoin(&mut self) -> Option<Rejoin> {
        if self.in_feed {
            return None;
        }
        self.in_feed = true;
        let away = std::mem::take(&mut self.away);
        if std::mem::take(&mut self.away_overflowed) {
            self.feed = self.last;
            Some(Rejoin::Resync { after: self.last })
        } else {
            Some(Rejoin::Replay { after: self.feed, skip: away })
        }
    }

    /// The replay after a rejoin is done: the feed is as far as anything delivered.
    pub(super) fn rejoined(&mut self) {
        self.feed = self.feed.max(self.last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_the_feed_duplicates_are_dropped_and_jumps_are_gaps() {
        let mut p = Position::at(Seq(10));
        assert_eq!(p.arrive(Seq(9), Seq(8)), Arrival::Duplicate);
        assert_eq!(p.arrive(Seq(10), Seq(9)), Arrival::Duplicate);
        assert_eq!(p.arrive(Seq(11), Seq(10)), Arrival::Fresh { gap_after: None });
        assert_eq!(p.arrive(Seq(14), Seq(12)), Arrival::Fresh { gap_after: Some(Seq(10)) });
        p.advance(Seq(14), true);
        assert_eq!(p.arrive(Seq(14), Seq(12)), Arrival::Duplicate);
        assert_eq!(p.resume_point(), Seq(14));
    }

    #[test]
    fn single_post_deliveries_while_away_do_not_move_the_feed() {
        let mut p = Position::at(Seq(10));
        p.leave();
        assert!(!p.in_feed());
        // A post followed on its own: delivered, remembered, the feed stays at 10.
        assert_eq!(p.arrive(Seq(12), Seq(11)), Arrival::Fresh { gap_after: None });
        p.advance(Seq(12), true);
        assert_eq!(p.arrive(Seq(12), Seq(11)), Arrival::Duplicate);
        // Something not followed, still queued from before leaving: dealt with, not sent.
        p.advance(Seq(13), false);
        assert_eq!(p.resume_point(), Seq(13));
        assert_eq!(p.rejoin(), Some(Rejoin::Replay { after: Seq(10), skip: vec![Seq(12)] }));
        assert!(p.in_feed());
        for seq in 11..=13 {
            p.advance(Seq(seq), seq != 12);
        }
        p.rejoined();
        assert_eq!(p.resume_point(), Seq(13));
        assert_eq!(p.rejoin(), None, "already in the feed");
    }

    #[test]
    fn too_much_while_away_asks_for_a_resync() {
        let mut p = Position::at(Seq(0));
        p.leave();
        for seq in 1..=(AWAY_MEMORY as i64 + 1) {
            p.advance(Seq(seq), true);
        }
        let last = Seq(AWAY_MEMORY as i64 + 1);
        assert_eq!(p.rejoin(), Some(Rejoin::Resync { after: last }));
        assert_eq!(p.arrive(last, Seq(0)), Arrival::Duplicate);
    }
}
