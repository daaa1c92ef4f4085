//! Sources of the session's `select!` that are polled only after they woke it. A delivery
//! wakes the session and runs its `select!`, which polls every branch; the client's frames and
//! the heartbeat almost never have anything new then, and finding that out (actix-ws's close
//! signal, payload and frame decoder; the timer entry) cost more than the delivery's own work.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::Stream;
use futures_util::task::AtomicWaker;

/// Set by the source's own waker; the task's waker is called with it.
struct Signal {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// A source (a stream, a timer) polled with a waker of its own, and only once that waker was
/// called or its last poll was ready.
pub(super) struct PolledWhenWoken<T> {
    inner: T,
    signal: Arc<Signal>,
    waker: Waker,
    /// The task waker last registered in `signal`, while `signal` still holds it (a wake-up
    /// takes it): polls from that task then skip registering it again.
    registered: Option<Waker>,
}

impl<T> PolledWhenWoken<T> {
    /// Wraps `inner`; its first poll always reaches it.
    pub(super) fn new(inner: T) -> Self {
        let signal = Arc::new(Signal { woken: AtomicBool::new(true), task: AtomicWaker::new() });
        let waker = Waker::from(signal.clone());
        Self { inner, signal, waker, registered: None }
    }

    /// Polls `inner` with `poll` if it woke since it was last pending.
    fn poll_with<R>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut T, &mut Context<'_>) -> Poll<R>,
    ) -> Poll<R> {
        let woken = self.signal.woken.swap(false, Ordering::AcqRel);
        // A wake-up took the task's waker; a task that moved has another one.
        let kept = self.registered.as_ref().is_some_and(|task| task.will_wake(cx.waker()));
        if woken || !kept {
            self.signal.task.register(cx.waker());
            self.registered = Some(cx.waker().clone());
        }
        if !woken {
            return Poll::Pending;
        }
        let result = poll(&mut self.inner, &mut Context::from_waker(&self.waker));
        if result.is_ready() {
            // It may have more ready at once; it will not wake for that.
            self.signal.woken.store(true, Ordering::Release);
        }
        result
    }
}

impl<S: Stream + Unpin> Stream for PolledWhenWoken<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        self.get_mut().poll_with(cx, |inner, cx| Pin::new(inner).poll_next(cx))
    }
}

impl PolledWhenWoken<tokio::time::Interval> {
    /// The interval's next tick.
    pub(super) async fn tick(&mut self) {
        poll_fn(|cx| self.poll_with(cx, |interval, cx| interval.poll_tick(cx).map(drop))).await;
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use futures_util::StreamExt;
    use futures_util::task::noop_waker_ref;

    use super::*;

    /// A stream that counts its polls and yields what `ready` holds.
    struct Counted {
        polls: Rc<Cell<u32>>,
        ready: Rc<Cell<Option<u32>>>,
        waker: Rc<std::cell::RefCell<Option<Waker>>>,
    }

    impl Stream for Counted {
        type Item = u32;

        fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<u32>> {
            self.polls.set(self.polls.get() + 1);
            match self.ready.take() {
                Some(n) => Poll::Ready(Some(n)),
                None => {
                    *self.waker.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        }
    }

    #[test]
    fn a_source_is_polled_again_only_after_it_woke_or_was_ready() {
        let polls = Rc::new(Cell::new(0));
        let ready = Rc::new(Cell::new(None));
        let waker = Rc::new(std::cell::RefCell::new(None));
        let mut source = PolledWhenWoken::new(Counted {
            polls: polls.clone(),
            ready: ready.clone(),
            waker: waker.clone(),
        });
        let task_woken =
            Arc::new(Signal { woken: AtomicBool::new(false), task: AtomicWaker::new() });
        let task_waker = Waker::from(task_woken.clone());
        let mut cx = Context::from_waker(&task_waker);

        assert_eq!(source.poll_next_unpin(&mut cx), Poll::Pending);
        assert_eq!(source.poll_next_unpin(&mut cx), Poll::Pending);
        assert_eq!(polls.get(), 1, "not polled again before it woke");

        ready.set(Some(7));
        waker.borrow_mut().take().expect("the source kept a waker").wake();
        assert!(task_woken.woken.load(Ordering::Acquire), "its wake-up reached the task");
        assert_eq!(source.poll_next_unpin(&mut cx), Poll::Ready(Some(7)));
        assert_eq!(source.poll_next_unpin(&mut cx), Poll::Pending);
        assert_eq!(polls.get(), 3, "polled again after a ready item, without a wake-up");

        // The first wake-up took the task's waker: the second must still reach the task.
        task_woken.woken.store(false, Ordering::Release);
        ready.set(Some(8));
        waker.borrow_mut().take().expect("the source kept a waker").wake();
        assert!(task_woken.woken.load(Ordering::Acquire), "a second wake-up reached the task");
        assert_eq!(source.poll_next_unpin(&mut cx), Poll::Ready(Some(8)));
        assert_eq!(source.poll_next_unpin(&mut cx), Poll::Pending);
        assert_eq!(polls.get(), 5);
        assert_eq!(
            source.poll_next_unpin(&mut Context::from_waker(noop_waker_ref())),
            Poll::Pending
        );
        assert_eq!(polls.get(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wrapped_interval_still_ticks() {
        let period = std::time::Duration::from_secs(5);
        let start = tokio::time::Instant::now();
        let mut heartbeat = PolledWhenWoken::new(tokio::time::interval_at(start + period, period));
        heartbeat.tick().await;
        heartbeat.tick().await;
        assert_eq!(start.elapsed(), period * 2);
    }
}
