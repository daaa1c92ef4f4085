//! Reads of the feed head (with each reader's account) that arrive together share one trip to
//! the database: on PostgreSQL one statement answers all of them.

use std::sync::{Arc, Mutex, PoisonError};

use newspaper_domain::UserId;
use tokio::sync::oneshot;

use crate::{PersistenceError, ReadHead};

/// What one caller asks: its account (if signed in) and the author its list is filtered by.
pub(crate) type HeadKey = (Option<UserId>, Option<UserId>);

/// How many batches may be at the database at once: a second one goes out while the first
/// is on its way back, so the database is not idle between them.
const BATCHES_IN_FLIGHT: usize = 2;

/// Most reads in one batch: one statement stays short.
const MOST_PER_BATCH: usize = 256;

/// The reads waiting for a batch, and how many batch runners are at work.
#[derive(Default)]
pub(crate) struct HeadReads {
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiter>,
    runners: usize,
}

/// One caller waiting for its head.
pub(crate) struct Waiter {
    pub(crate) key: HeadKey,
    pub(crate) reply: oneshot::Sender<Result<ReadHead, PersistenceError>>,
}

impl HeadReads {
    /// Queues a read; a [`Runner`] if the caller must start one (none is free to take it).
    pub(crate) fn enqueue(self: &Arc<Self>, waiter: Waiter) -> Option<Runner> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.waiting.push(waiter);
        if queue.runners < BATCHES_IN_FLIGHT {
            queue.runners += 1;
            return Some(Runner { reads: self.clone(), stopped: false });
        }
        None
    }
}

/// A batch runner's place: given back when it finds nothing to do, or when it is dropped
/// before that (its task cancelled by a runtime shutting down, or a panic), so that later
/// reads start runners again rather than wait for one that is gone.
pub(crate) struct Runner {
    reads: Arc<HeadReads>,
    stopped: bool,
}

impl Runner {
    /// The next batch; `None` (and the runner is done) when nothing waits. Every read in a
    /// batch was queued before the batch's statement starts, so each is answered with what
    /// was committed when it asked, or later.
    pub(crate) fn next_batch(&mut self) -> Option<Vec<Waiter>> {
        let mut queue = self.reads.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.waiting.is_empty() {
            queue.runners -= 1;
            self.stopped = true;
            return None;
        }
        let take = queue.waiting.len().min(MOST_PER_BATCH);
        Some(queue.waiting.drain(..take).collect())
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        if !self.stopped {
            let mut queue = self.reads.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.runners -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter() -> (Waiter, oneshot::Receiver<Result<ReadHead, PersistenceError>>) {
        let (reply, answer) = oneshot::channel();
        (Waiter { key: (Some(UserId(1)), None), reply }, answer)
    }

    #[test]
    fn runners_start_up_to_the_limit_and_stop_when_nothing_waits() {
        let reads = Arc::new(HeadReads::default());
        let mut answers = Vec::new();
        let mut runners = Vec::new();
        for _ in 0..5 {
            let (w, a) = waiter();
            answers.push(a);
            runners.extend(reads.enqueue(w));
        }
        assert_eq!(runners.len(), BATCHES_IN_FLIGHT);
        assert_eq!(runners[0].next_batch().map(|b| b.len()), Some(5));
        for runner in &mut runners {
            assert!(runner.next_batch().is_none());
        }
        // With every runner stopped, the next read starts one again.
        let (w, _a) = waiter();
        assert!(reads.enqueue(w).is_some());
    }

    #[test]
    fn a_runner_dropped_mid_batch_gives_its_place_back() {
        let reads = Arc::new(HeadReads::default());
        let (w, _a) = waiter();
        let mut first = reads.enqueue(w).unwrap();
        let (w, _b) = waiter();
        let second = reads.enqueue(w).unwrap();
        assert!(first.next_batch().is_some());
        drop((first, second));
        let (w, _c) = waiter();
        assert!(reads.enqueue(w).is_some(), "no runner is left, so this read starts one");
    }

    #[test]
    fn a_batch_holds_at_most_its_limit() {
        let reads = Arc::new(HeadReads::default());
        let mut answers = Vec::new();
        let mut runners = Vec::new();
        for _ in 0..MOST_PER_BATCH + 3 {
            let (w, a) = waiter();
            answers.push(a);
            runners.extend(reads.enqueue(w));
        }
        assert_eq!(runners[0].next_batch().map(|b| b.len()), Some(MOST_PER_BATCH));
        assert_eq!(runners[0].next_batch().map(|b| b.len()), Some(3));
    }
}
