//! One channel: a bounded queue with a single receiver, which is told when it fell behind.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
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

/// Messages waiting for the receiver. The oldest is kept inline: a receiver that keeps up
/// holds one message at a time, and a delivery to thousands of channels then touches no
/// separately allocated buffer per channel (and a channel costs none while it is idle).
#[derive(Default)]
struct Pending {
    oldest: Option<Message>,
    /// The rest, in order; empty whenever `oldest` is.
    rest: VecDeque<Message>,
}

impl Pending {
    fn len(&self) -> usize {
        usize::from(self.oldest.is_some()) + self.rest.len()
    }

    fn push_back(&mut self, message: Message) {
        if self.oldest.is_none() {
            self.oldest = Some(message);
        } else {
            self.rest.push_back(message);
        }
    }

    fn pop_front(&mut self) -> Option<Message> {
        let message = self.oldest.take()?;
        self.oldest = self.rest.pop_front();
        Some(message)
    }
}

/// What a channel's lock guards.
#[derive(Default)]
struct Queue {
    messages: Pending,
    /// The receiver's waker, woken for a message or a state change. It is woken by reference
    /// and kept until the receiver waits from another task: a delivery to thousands of
    /// channels then takes the one lock each already needs, and neither takes nor clones a
    /// waker (each would be a write to memory the receiver's thread shares).
    receiver: Option<Waker>,
}

impl Queue {
    fn wake_receiver(&self) {
        if let Some(waker) = &self.receiver {
            waker.wake_by_ref();
        }
    }

    /// Wakes the receiver for the last time (it will not wait again) and lets go of its waker,
    /// and with it of the receiving task.
    fn release_receiver(&mut self) {
        if let Some(waker) = self.receiver.take() {
            waker.wake();
        }
    }
}

/// The state shared by a channel's senders (the layer) and its receiver.
pub(crate) struct ChannelShared {
    pub(crate) name: ChannelName,
    capacity: usize,
    queue: Mutex<Queue>,
    /// Changed only under the lock, so that the receiver, which reads it under the lock
    /// before it waits, never misses a change.
    state: AtomicU8,
    interrupted: AtomicBool,
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
            queue: Mutex::new(Queue::default()),
            state: AtomicU8::new(OPEN),
            interrupted: AtomicBool::new(false),
            lagging: Notify::new(),
            groups: Mutex::new(Vec::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Offers a message without ever blocking: a full buffer marks the channel lagging and
    /// frees what it held, so a slow receiver costs neither time nor memory.
    pub(crate) fn push(&self, message: Message) -> Push {
        if self.state.load(Ordering::Acquire) != OPEN {
            return Push::Refused;
        }
        let mut queue = self.lock();
        if queue.messages.len() >= self.capacity {
            self.state.store(LAGGED, Ordering::Release);
            queue.messages = Pending::default();
            queue.release_receiver();
            drop(queue);
            self.lagging.notify_waiters();
            return Push::Overflowed;
        }
        queue.messages.push_back(message);
        queue.wake_receiver();
        Push::Queued
    }

    pub(crate) fn is_open(&self) -> bool {
        self.state.load(Ordering::Acquire) == OPEN
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn interrupt(&self) {
        let queue = self.lock();
        if self.is_open() {
            self.interrupted.store(true, Ordering::Release);
            queue.wake_receiver();
        }
    }

    pub(crate) fn close(&self) {
        let mut queue = self.lock();
        self.state.store(CLOSED, Ordering::Release);
        queue.messages = Pending::default();
        queue.release_receiver();
        drop(queue);
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
        self.lock().messages.len()
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
        let mut queue = self.shared.lock();
        match self.shared.state.load(Ordering::Acquire) {
            LAGGED => return Poll::Ready(Err(RecvError::Lagged)),
            CLOSED => return Poll::Ready(Err(RecvError::Closed)),
            _ => {}
        }
        if self.shared.interrupted.swap(false, Ordering::AcqRel) {
            return Poll::Ready(Err(RecvError::Interrupted));
        }
        if let Some(message) = queue.messages.pop_front() {
            return Poll::Ready(Ok(message));
        }
        // Kept under the lock: whatever changes the channel after this takes the lock and
        // wakes this waker.
        if !queue.receiver.as_ref().is_some_and(|kept| kept.will_wake(cx.waker())) {
            queue.receiver = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Every message already queued, without waiting (empty when lagging or closed).
    pub fn drain_ready(&mut self, into: &mut Vec<Message>, max: usize) {
        let mut queue = self.shared.lock();
        if !self.shared.is_open() {
            return;
        }
        for _ in 0..max {
            let Some(message) = queue.messages.pop_front() else { break };
            into.push(message);
        }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    use super::*;

    /// A receiving task that counts its wake-ups.
    #[derive(Default)]
    struct Task(AtomicUsize);

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    struct NoOwner;

    impl ChannelOwner for NoOwner {
        fn release(&self, _: &ChannelShared) {}
    }

    fn channel(capacity: usize) -> (Arc<ChannelShared>, ChannelReceiver) {
        let shared = ChannelShared::new(ChannelName::local("t", 1), capacity);
        let owner = Weak::<NoOwner>::new() as Weak<dyn ChannelOwner>;
        (shared.clone(), ChannelReceiver::new(shared, owner))
    }

    #[test]
    fn messages_come_out_in_the_order_they_were_pushed_however_pushes_and_receives_interleave() {
        let (shared, mut receiver) = channel(8);
        let task = Arc::new(Task::default());
        let waker = Waker::from(task);
        let mut cx = Context::from_waker(&waker);
        let mut received = Vec::new();
        let mut next = 0u8;
        // Pushes and receives in runs of 1 to 3, so the inline slot is empty, full and
        // refilled from the rest in every combination.
        for (pushes, receives) in [(1, 1), (2, 1), (3, 2), (1, 3), (2, 2), (3, 1), (0, 3)] {
            for _ in 0..pushes {
                assert_eq!(shared.push(Message::copy_from_slice(&[next])), Push::Queued);
                next += 1;
            }
            for _ in 0..receives {
                if let Poll::Ready(Ok(message)) = receiver.poll_recv(&mut cx) {
                    received.push(message[0]);
                }
            }
            assert_eq!(shared.queued(), usize::from(next) - received.len());
        }
        assert_eq!(received, (0..next).collect::<Vec<_>>());
        assert!(receiver.poll_recv(&mut cx).is_pending());

        for n in 0..3 {
            shared.push(Message::copy_from_slice(&[n]));
        }
        let mut drained = Vec::new();
        receiver.drain_ready(&mut drained, 2);
        assert_eq!(drained, [&[0u8][..], &[1]]);
        assert_eq!(receiver.poll_recv(&mut cx), Poll::Ready(Ok(Message::from(&[2u8][..]))));
    }

    #[test]
    fn a_waiting_receiver_is_woken_by_each_push_and_let_go_once_it_can_wait_no_more() {
        let (shared, mut receiver) = channel(2);
        let task = Arc::new(Task::default());
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(receiver.poll_recv(&mut cx).is_pending());
        assert_eq!(Arc::strong_count(&task), 3, "the channel keeps the task's waker");

        for message in [&b"a"[..], b"b"] {
            assert_eq!(shared.push(Message::copy_from_slice(message)), Push::Queued);
        }
        assert_eq!(task.0.load(Ordering::Relaxed), 2, "each push woke the receiver");
        for message in [&b"a"[..], b"b"] {
            assert_eq!(receiver.poll_recv(&mut cx), Poll::Ready(Ok(Message::from(message))));
        }
        assert!(receiver.poll_recv(&mut cx).is_pending());
        assert_eq!(Arc::strong_count(&task), 3, "waiting again kept the same waker");

        for _ in 0..3 {
            shared.push(Message::from_static(b"x"));
        }
        assert_eq!(task.0.load(Ordering::Relaxed), 5, "the overflow woke it too");
        assert_eq!(Arc::strong_count(&task), 2, "a lagging channel lets go of the task");
        assert_eq!(receiver.poll_recv(&mut cx), Poll::Ready(Err(RecvError::Lagged)));
        assert_eq!(Arc::strong_count(&task), 2);

        let (shared, mut receiver) = channel(2);
        assert!(receiver.poll_recv(&mut cx).is_pending());
        shared.close();
        assert_eq!(task.0.load(Ordering::Relaxed), 6, "closing woke it");
        assert_eq!(Arc::strong_count(&task), 2, "a closed channel lets go of the task");
        assert_eq!(receiver.poll_recv(&mut cx), Poll::Ready(Err(RecvError::Closed)));
    }
}
