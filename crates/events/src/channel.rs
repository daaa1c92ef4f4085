//! One channel: a bounded queue with a single receiver, which is told when it fell behind.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

use crate::{ChannelName, GroupName};

/// A message on the layer: bytes serialized once by the sender and shared, never copied, by
/// every receiver.
pub type Message = Bytes;

/// Why [`ChannelReceiver::recv`] returned no message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// The channel's buffer overflowed, so messages were dropped; the channel receives nothing
    /// more. Close the stream and let the client resume from its source of truth.
    #[error("the receiver fell behind and messages were dropped")]
    Lagged,
    /// Messages may have been lost upstream (a broker connection dropped and came back). The
    /// channel keeps working; catch up from the source of truth, then carry on.
    #[error("delivery was interrupted; messages may be missing")]
    Interrupted,
    /// The layer shut down.
    #[error("the channel layer closed")]
    Closed,
}

const OPEN: u8 = 0;
const LAGGED: u8 = 1;
const CLOSED: u8 = 2;

/// What happened to one message offered to a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    /// Queued.
    Queued,
    /// The buffer was full: the channel is now lagging.
    Overflowed,
    /// The channel no longer accepts messages (lagging or closed).
    Refused,
}

/// The state shared by a channel's senders (the layer) and its receiver.
pub(crate) struct ChannelShared {
    pub(crate) name: ChannelName,
    capacity: usize,
    queue: Mutex<VecDeque<Message>>,
    state: AtomicU8,
    interrupted: AtomicBool,
    /// Wakes the receiver for a message or a state change. There is one receiver, so this is
    /// a waker slot, not a list of waiters: a push costs one atomic swap, and a receiver that
    /// goes back to waiting re-registers the same waker.
    readable: AtomicWaker,
    /// Wakes everyone waiting in [`ChannelReceiver::lagged`].
    lagging: Notify,
    /// The groups this channel is in, so dropping the receiver can leave them all.
    pub(crate) groups: Mutex<Vec<GroupName>>,
}

impl ChannelShared {
    pub(crate) fn new(name: ChannelName, capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            name,
            capacity: capacity.max(1),
            queue: Mutex::new(VecDeque::new()),
            state: AtomicU8::new(OPEN),
            interrupted: AtomicBool::new(false),
            readable: AtomicWaker::new(),
            lagging: Notify::new(),
            groups: Mutex::new(Vec::new()),
        })
    }

    /// Offers a message without ever blocking: a full buffer marks the channel lagging and
    /// frees what it held, so a slow receiver costs neither time nor memory.
    pub(crate) fn push(&self, message: Message) -> Push {
        if self.state.load(Ordering::Acquire) != OPEN {
            return Push::Refused;
        }
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.len() >= self.capacity {
            self.state.store(LAGGED, Ordering::Release);
            *queue = VecDeque::new();
            drop(queue);
            self.readable.wake();
            self.lagging.notify_waiters();
            return Push::Overflowed;
        }
        queue.push_back(message);
        drop(queue);
        self.readable.wake();
        Push::Queued
    }

    pub(crate) fn is_open(&self) -> bool {
        self.state.load(Ordering::Acquire) == OPEN
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn interrupt(&self) {
        if self.is_open() {
            self.interrupted.store(true, Ordering::Release);
            self.readable.wake();
        }
    }

    pub(crate) fn close(&self) {
        self.state.store(CLOSED, Ordering::Release);
        self.queue.lock().unwrap_or_else(PoisonError::into_inner).clear();
        self.readable.wake();
        self.lagging.notify_waiters();
    }

    pub(crate) fn join(&self, group: &GroupName) {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        if !groups.contains(group) {
            groups.push(group.clone());
        }
    }

    pub(crate) fn leave(&self, group: &GroupName) {
        self.groups.lock().unwrap_or_else(PoisonError::into_inner).retain(|g| g != group);
    }

    pub(crate) fn queued(&self) -> usize {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// Cleans up after a receiver that went away: the layer forgets the channel and its
/// memberships, so a cancelled or panicking consumer can never leak group membership.
pub(crate) trait ChannelOwner: Send + Sync {
    fn release(&self, channel: &ChannelShared);
}

/// The receiving end of a channel. Dropping it leaves every group and frees the channel.
pub struct ChannelReceiver {
    shared: Arc<ChannelShared>,
    owner: Weak<dyn ChannelOwner>,
}

impl std::fmt::Debug for ChannelReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelReceiver").field("name", &self.shared.name).finish_non_exhaustive()
    }
}

impl ChannelReceiver {
    pub(crate) fn new(shared: Arc<ChannelShared>, owner: Weak<dyn ChannelOwner>) -> Self {
        Self { shared, owner }
    }

    /// The channel's name, to pass to `group_add` or `send`.
    pub fn name(&self) -> &ChannelName {
        &self.shared.name
    }

    /// The next message. Reports [`RecvError::Lagged`] as soon as the buffer overflowed (what
    /// was still queued is dropped with it), and [`RecvError::Interrupted`] once per upstream
    /// outage.
    pub async fn recv(&mut self) -> Result<Message, RecvError> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Message, RecvError>> {
        // Registered before looking, so a push after the look wakes this waker.
        self.shared.readable.register(cx.waker());
        match self.shared.state.load(Ordering::Acquire) {
            LAGGED => return Poll::Ready(Err(RecvError::Lagged)),
            CLOSED => return Poll::Ready(Err(RecvError::Closed)),
            _ => {}
        }
        // Read before swapping: the flag is shared with the layer, and is almost never set.
        if self.shared.interrupted.load(Ordering::Acquire)
            && self.shared.interrupted.swap(false, Ordering::AcqRel)
        {
            return Poll::Ready(Err(RecvError::Interrupted));
        }
        match self.shared.queue.lock().unwrap_or_else(PoisonError::into_inner).pop_front() {
            Some(message) => Poll::Ready(Ok(message)),
            None => Poll::Pending,
        }
    }

    /// Every message already queued, without waiting (empty when lagging or closed).
    pub fn drain_ready(&mut self, into: &mut Vec<Message>, max: usize) {
        if !self.shared.is_open() {
            return;
        }
        let mut queue = self.shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let n = queue.len().min(max);
        into.extend(queue.drain(..n));
    }

    /// Resolves once the channel is lagging (or closed): lets a consumer that is busy writing
    /// to a slow client notice that it has already lost.
    pub async fn lagged(&self) {
        loop {
            let notified = self.shared.lagging.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.shared.is_open() {
                return;
            }
            notified.await;
        }
    }

    /// Whether the channel overflowed.
    pub fn is_lagging(&self) -> bool {
        self.shared.state.load(Ordering::Acquire) == LAGGED
    }

    /// Messages waiting to be received.
    pub fn queued(&self) -> usize {
        self.shared.queued()
    }
}

impl Drop for ChannelReceiver {
    fn drop(&mut self) {
        self.shared.close();
        if let Some(owner) = self.owner.upgrade() {
            owner.release(&self.shared);
        }
    }
}
