//! A small cache of list pages. The front page of a newspaper is read far more often than it
//! changes; every commit (on this instance or, through the channel layer, on another)
//! invalidates the whole cache, and entries expire after a second regardless. Anonymous
//! readers are served from it as it is; a signed-in reader only when the feed head they read
//! with their account is the one the page was read at. Bounded in bytes
//! as well as in entries: a page of large posts cannot make it hold more than its budget.
//!
//! Where the database tells without a query that nothing was committed (SQLite in WAL mode;
//! see [`newspaper_persistence::CommitMark`]), the heads signed-in readers were read with are
//! kept too, each for as long as the database's commit mark stays the one it was read at: a
//! reader whose page is cached is then served without a query, and still exactly (any write,
//! by any process, moves the mark).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use newspaper_domain::{Seq, UserId};
use newspaper_persistence::{CommitMark, ReadHead};
use tokio::sync::oneshot;

/// Pages kept at most; a full cache starts over.
const MAX_ENTRIES: usize = 512;
/// Bytes of page bodies kept at most.
const MAX_BYTES: usize = 16 * 1024 * 1024;
/// Pages larger than this are not cached at all (a few of them would fill the budget).
const MAX_PAGE_BYTES: usize = MAX_BYTES / 16;
/// The longest an entry is served, as a bound should an invalidation be lost.
const TTL: Duration = Duration::from_secs(1);

/// A response body and the feed position it was read at (its `X-Feed-Seq`).
pub type CachedPage = (Seq, Bytes);

#[derive(Default)]
struct Entries {
    generation: u64,
    pages: HashMap<String, (Instant, CachedPage)>,
    /// Bytes of the bodies in `pages`.
    bytes: usize,
}

impl Entries {
    fn clear(&mut self) {
        self.pages.clear();
        self.bytes = 0;
    }

    fn drop_expired(&mut self) {
        let mut freed = 0;
        self.pages.retain(|_, (at, (_, body))| {
            let keep = at.elapsed() < TTL;
            if !keep {
                freed += body.len();
            }
            keep
        });
        self.bytes -= freed;
    }
}

/// Response bodies of `GET /api/posts/`, keyed by URL and by which posts their readers see.
#[derive(Default)]
pub struct ListCache {
    entries: RwLock<Entries>,
}

impl std::fmt::Debug for ListCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListCache").finish_non_exhaustive()
    }
}

impl ListCache {
    /// The body cached for `key`, if it was computed at `generation` and is fresh.
    pub fn get(&self, key: &str, generation: u64) -> Option<CachedPage> {
        let entries = self.entries.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.generation != generation {
            return None;
        }
        entries.pages.get(key).filter(|(at, _)| at.elapsed() < TTL).map(|(_, body)| body.clone())
    }

    /// Stores a body computed from data read at `read_at` (the generation before the read);
    /// dropped if anything was committed since, because it may predate that commit.
    pub fn put(&self, key: String, read_at: u64, current: u64, body: CachedPage) {
        if read_at != current || body.1.len() > MAX_PAGE_BYTES {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.generation != current {
            entries.generation = current;
            entries.clear();
        }
        if entries.pages.len() >= MAX_ENTRIES || entries.bytes + body.1.len() > MAX_BYTES {
            entries.drop_expired();
        }
        if entries.pages.len() >= MAX_ENTRIES || entries.bytes + body.1.len() > MAX_BYTES {
            entries.clear();
        }
        entries.bytes += body.1.len();
        if let Some((_, (_, old))) = entries.pages.insert(key, (Instant::now(), body)) {
            entries.bytes -= old.len();
        }
    }

    /// Entries and bytes held now.
    pub fn size(&self) -> (usize, usize) {
        let entries = self.entries.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        (entries.pages.len(), entries.bytes)
    }
}

/// Read heads kept at most; a full cache starts over.
const MAX_HEADS: usize = 4096;

#[derive(Default)]
struct Heads {
    mark: Option<CommitMark>,
    /// By reader and author filter (a head's counters are read for one author, or all).
    heads: HashMap<(UserId, Option<UserId>), Arc<ReadHead>>,
}

/// The heads (account, feed position, counters) signed-in readers listed posts with, valid
/// only at the commit mark they were read at.
#[derive(Default)]
pub struct HeadCache {
    entries: RwLock<Heads>,
}

impl std::fmt::Debug for HeadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadCache").finish_non_exhaustive()
    }
}

impl HeadCache {
    /// `reader`'s head for lists of `author`'s posts (all, if `None`), if it was read at `mark`.
    pub fn get(
        &self,
        mark: CommitMark,
        reader: UserId,
        author: Option<UserId>,
    ) -> Option<Arc<ReadHead>> {
        let entries = self.entries.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.mark != Some(mark) {
            return None;
        }
        entries.heads.get(&(reader, author)).cloned()
    }

    /// Keeps a head read after `mark` was: if the mark has not moved since, nothing newer exists.
    pub fn put(
        &self,
        mark: CommitMark,
        reader: UserId,
        author: Option<UserId>,
        head: Arc<ReadHead>,
    ) {
        let mut entries = self.entries.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.mark != Some(mark) || entries.heads.len() >= MAX_HEADS {
            entries.mark = Some(mark);
            entries.heads.clear();
        }
        entries.heads.insert((reader, author), head);
    }
}

/// The page reads under way for signed-in readers, by page key: readers who miss the same
/// page at the same feed head wait for the one read rather than each read it again (after a
/// write, every reader of the front page misses it at once).
#[derive(Default)]
pub struct PageReads {
    flights: Mutex<HashMap<String, Flight>>,
}

impl std::fmt::Debug for PageReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageReads").finish_non_exhaustive()
    }
}

/// One read under way: the head it was asked at and who waits for it.
struct Flight {
    seq: Seq,
    waiters: Vec<oneshot::Sender<CachedPage>>,
}

/// What a reader who missed a page does.
pub enum PageTurn<'a> {
    /// Reads it, and hands it to those who wait ([`PageRead::share`]).
    Read(PageRead<'a>),
    /// Waits for the read under way at its head; if that read fails, reads alone. The page
    /// is exact for the waiter only if it was read at the waiter's head, or if the waiter's
    /// head read again is the one it was read at and the waiter still sees the same posts (a
    /// write may land between the head and the read, and may be the waiter's own first
    /// draft, or a change of its rights).
    Wait(oneshot::Receiver<CachedPage>),
    /// Reads alone (a read at another head is under way).
    Alone,
}

/// The read of a page others may be waiting for; dropping it unshared sends them to read alone.
pub struct PageRead<'a> {
    reads: &'a PageReads,
    key: String,
    seq: Seq,
}

impl PageReads {
    /// What a reader who missed the page at `key`, with the feed head at `seq`, does.
    pub fn turn(&self, key: &str, seq: Seq) -> PageTurn<'_> {
        let mut flights = self.flights.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match flights.get_mut(key) {
            Some(flight) if flight.seq == seq => {
                let (tx, rx) = oneshot::channel();
                flight.waiters.push(tx);
                PageTurn::Wait(rx)
            }
            Some(_) => PageTurn::Alone,
            None => {
                flights.insert(key.to_owned(), Flight { seq, waiters: Vec::new() });
                PageTurn::Read(PageRead { reads: self, key: key.to_owned(), seq })
            }
        }
    }

    fn land(&self, key: &str, seq: Seq) -> Vec<oneshot::Sender<CachedPage>> {
        let mut flights = self.flights.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match flights.get(key) {
            Some(flight) if flight.seq == seq => {
                flights.remove(key).map(|flight| flight.waiters).unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }

    /// Reads under way now.
    pub fn in_flight(&self) -> usize {
        self.flights.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }
}

impl PageRead<'_> {
    /// Hands the page to those who wait, if it is of the posts they asked for (`read_key`,
    /// the key of the page as read, differs if the reader's first draft was committed
    /// meanwhile; then they read alone). It may have been read at a later head than theirs
    /// (`page.0`): a waiter serves it only at the head it was read at
    /// ([`PageTurn::Wait`]).
    pub fn share(self, read_key: &str, page: &CachedPage) {
        let waiters = self.reads.land(&self.key, self.seq);
        if read_key == self.key {
            for waiter in waiters {
                let _ = waiter.send(page.clone());
            }
        }
    }
}

impl Drop for PageRead<'_> {
    fn drop(&mut self) {
        // Shared already, or failed: either way no one may wait for it any more.
        drop(self.reads.land(&self.key, self.seq));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_invalidates_and_stale_reads_are_not_stored() {
        let cache = ListCache::default();
        cache.put("a".into(), 1, 1, (Seq(1), Bytes::from_static(b"page")));
        assert_eq!(cache.get("a", 1), Some((Seq(1), Bytes::from_static(b"page"))));
        assert_eq!(cache.get("a", 2), None, "a commit since");
        cache.put("b".into(), 1, 2, (Seq(1), Bytes::from_static(b"old")));
        assert_eq!(cache.get("b", 2), None, "read before a commit that happened meanwhile");
        cache.put("b".into(), 2, 2, (Seq(2), Bytes::from_static(b"new")));
        assert_eq!(cache.get("b", 2), Some((Seq(2), Bytes::from_static(b"new"))));
        assert_eq!(cache.get("a", 2), None);
    }

    #[test]
    fn the_cache_is_bounded_in_bytes_and_drops_what_expired() {
        let cache = ListCache::default();
        let page = Bytes::from(vec![b'x'; MAX_PAGE_BYTES]);
        for i in 0..40 {
            cache.put(format!("k{i}"), 0, 0, (Seq(0), page.clone()));
            assert!(cache.size().1 <= MAX_BYTES, "after {i}: {:?}", cache.size());
        }
        let too_big = Bytes::from(vec![b'x'; MAX_PAGE_BYTES + 1]);
        cache.put("huge".into(), 0, 0, (Seq(0), too_big));
        assert_eq!(cache.get("huge", 0), None, "a page too large for the cache is not kept");
        // Expired entries make room before anything fresh is dropped.
        let cache = ListCache::default();
        cache.put("old".into(), 0, 0, (Seq(0), page.clone()));
        cache.entries.write().unwrap().pages.get_mut("old").unwrap().0 = Instant::now() - TTL;
        for i in 0..15 {
            cache.put(format!("k{i}"), 0, 0, (Seq(0), page.clone()));
        }
        cache.put("last".into(), 0, 0, (Seq(0), page.clone()));
        assert!(cache.get("k0", 0).is_some(), "fresh entries survive: {:?}", cache.size());
        assert_eq!(cache.size(), (16, 16 * MAX_PAGE_BYTES));
    }

    #[test]
    fn entries_expire_and_the_cache_is_bounded() {
        let cache = ListCache::default();
        for i in 0..MAX_ENTRIES + 1 {
            cache.put(format!("k{i}"), 0, 0, (Seq(0), Bytes::new()));
        }
        assert_eq!(cache.size().0, 1);
        cache
            .entries
            .write()
            .unwrap()
            .pages
            .insert("old".into(), (Instant::now() - TTL, (Seq(0), Bytes::new())));
        assert_eq!(cache.get("old", 0), None);
    }

    #[test]
    fn readers_who_miss_a_page_at_one_head_wait_for_one_read() {
        let reads = PageReads::default();
        let PageTurn::Read(first) = reads.turn("p", Seq(5)) else { panic!("the first reads") };
        let PageTurn::Wait(mut second) = reads.turn("p", Seq(5)) else {
            panic!("the second waits")
        };
        assert!(matches!(reads.turn("p", Seq(6)), PageTurn::Alone), "another head reads alone");
        assert!(matches!(reads.turn("q", Seq(5)), PageTurn::Read(_)), "another page is its own");
        let page = (Seq(5), Bytes::from_static(b"page"));
        first.share("p", &page);
        assert_eq!(second.try_recv().unwrap(), page);
        assert_eq!(reads.in_flight(), 0);
        assert!(matches!(reads.turn("p", Seq(5)), PageTurn::Read(_)), "a later miss reads again");
    }

    #[test]
    fn a_read_that_fails_or_reads_another_page_sends_its_waiters_to_read_alone() {
        let reads = PageReads::default();
        let PageTurn::Read(first) = reads.turn("p", Seq(5)) else { panic!() };
        let PageTurn::Wait(mut waiting) = reads.turn("p", Seq(5)) else { panic!() };
        drop(first);
        assert!(waiting.try_recv().is_err());
        assert_eq!(reads.in_flight(), 0);
        let PageTurn::Read(first) = reads.turn("p", Seq(5)) else { panic!() };
        let PageTurn::Wait(mut waiting) = reads.turn("p", Seq(5)) else { panic!() };
        first.share("user 1 p", &(Seq(5), Bytes::from_static(b"drafts")));
        assert!(waiting.try_recv().is_err(), "a page of other posts is not theirs");
        assert_eq!(reads.in_flight(), 0);
        // A page read after a later write is handed over with the head it was read at.
        let PageTurn::Read(first) = reads.turn("p", Seq(5)) else { panic!() };
        let PageTurn::Wait(mut waiting) = reads.turn("p", Seq(5)) else { panic!() };
        first.share("p", &(Seq(6), Bytes::from_static(b"newer")));
        assert_eq!(waiting.try_recv().unwrap().0, Seq(6), "handed over, for the waiter to judge");
        assert_eq!(reads.in_flight(), 0);
    }
}
