//! The connection a stream runs in. The WebSocket response's body drives the session and hands
//! the HTTP/1 dispatcher the frames the session queued, so the stream is one task: a delivery
//! wakes the connection once, where a session task of its own would be woken first and then
//! wake the connection through a channel (two wake-ups per client per event).
//!
//! The dispatcher polls a body only while its write buffer has room, so a client that stops
//! reading stops its session too: nothing more is queued for it, and its channel on the layer
//! overflows, which leaves the groups and frees what was queued without the session running.
//! Once the client reads again, the session finds its channel lagging and closes with 1013.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::mem;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use actix_http::ws::{CloseCode, CloseReason, OpCode, Parser};
use actix_web::body::{BodySize, BoxBody, MessageBody};
use bytes::{Bytes, BytesMut};

/// Bytes a session may queue before its next write waits for the connection to take them:
/// a burst goes out in one write, and what a client that stopped reading holds stays bounded
/// (the dispatcher's own buffer comes on top).
const QUEUE_LIMIT: usize = 16 * 1024;

/// A close reason is cut to what fits a control frame with its code (RFC 6455 §5.5).
const MAX_CLOSE_REASON_BYTES: usize = 123;

/// A ping or pong payload is at most this long (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD_BYTES: usize = 125;

/// Encoded frames a session wrote and its connection has not yet taken.
#[derive(Default)]
struct Queue {
    bytes: BytesMut,
    /// The session waits for room: poll it once the connection has taken the bytes.
    waiting: bool,
    /// The session's layer queue overflowed: the stream was dropped for falling behind, even
    /// if the client leaves before it reads its 1013.
    fell_behind: bool,
}

/// The session's end of its connection: where it writes frames.
#[derive(Clone, Default)]
pub(super) struct Outgoing(Rc<RefCell<Queue>>);

impl Outgoing {
    /// Queues a text frame now if the queue has room, and says whether it did.
    pub(super) fn try_text(&self, text: &str) -> bool {
        if self.0.borrow().bytes.len() >= QUEUE_LIMIT {
            return false;
        }
        self.write(text.as_bytes(), OpCode::Text);
        true
    }

    /// Queues a text frame, once the queue has room.
    pub(super) async fn text(&self, text: &str) {
        self.room().await;
        self.write(text.as_bytes(), OpCode::Text);
    }

    /// Queues a ping, once the queue has room.
    pub(super) async fn ping(&self) {
        self.room().await;
        self.write(&[], OpCode::Ping);
    }

    /// Queues the answer to a client's ping, once the queue has room.
    pub(super) async fn pong(&self, payload: &[u8]) {
        self.room().await;
        self.write(&payload[..payload.len().min(MAX_CONTROL_PAYLOAD_BYTES)], OpCode::Pong);
    }

    /// Queues the close frame: the last frame of a stream, so it never waits.
    pub(super) fn close(&self, code: CloseCode, reason: &str) {
        let mut end = reason.len().min(MAX_CLOSE_REASON_BYTES);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let reason = CloseReason { code, description: Some(reason[..end].to_owned()) };
        Parser::write_close(&mut self.0.borrow_mut().bytes, Some(reason), false);
    }

    /// Records that the stream fell behind (its layer queue overflowed).
    pub(super) fn mark_fell_behind(&self) {
        self.0.borrow_mut().fell_behind = true;
    }

    /// Whether the stream fell behind.
    pub(super) fn fell_behind(&self) -> bool {
        self.0.borrow().fell_behind
    }

    /// Encodes one whole frame at the end of the queue (server frames are never masked).
    fn write(&self, payload: &[u8], op: OpCode) {
        Parser::write_message(&mut self.0.borrow_mut().bytes, payload, op, true, false);
    }

    fn room(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(|_| {
            let mut queue = self.0.borrow_mut();
            if queue.bytes.len() < QUEUE_LIMIT {
                Poll::Ready(())
            } else {
                // The body polls the session again once it has handed the bytes on; no waker.
                queue.waiting = true;
                Poll::Pending
            }
        })
    }
}

/// What a session waits on (the client's frames, its channel, its timers) wakes the
/// connection through this, and marks the session as worth polling: the dispatcher also
/// polls the body for its own reasons (a write completed), and a session polled for nothing
/// would run its whole `select!` for nothing. The connection's waker is kept as it was at the
/// poll this was made for, not re-registered on every poll: a delivery then costs the
/// publishing thread a flag and a wake-up, and the connection no atomic exchange to register
/// a waker the delivery had just taken.
struct SessionWake {
    woken: AtomicBool,
    connection: Waker,
}

impl Wake for SessionWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.connection.wake_by_ref();
    }
}

/// The session's waker, made for one connection waker.
struct SessionWaker {
    wake: Arc<SessionWake>,
    waker: Waker,
}

impl SessionWaker {
    /// A waker for a session polled from the task `connection` wakes; marked woken, so the
    /// session's next poll registers it with everything the session waits on.
    fn new(connection: &Waker) -> Self {
        let wake =
            Arc::new(SessionWake { woken: AtomicBool::new(true), connection: connection.clone() });
        let waker = Waker::from(wake.clone());
        Self { wake, waker }
    }
}

/// A session run to its end: what the stream ended with.
pub(super) type Running = Pin<Box<dyn Future<Output = super::close::Exit>>>;

/// Called once when the stream ends, whichever way (also when the connection drops the body
/// mid-stream, as `Gone`); writes the close frame, if any, into the queue.
pub(super) type OnEnd = Box<dyn FnOnce(super::close::Exit, &Outgoing)>;

/// The response body of one stream.
pub(crate) struct StreamBody {
    /// Declared first: dropped before `on_end` runs in `drop`, so the session's channel has
    /// left its groups by the time the end is counted.
    session: Option<Running>,
    out: Outgoing,
    /// Made at the first poll, and again if the body is ever polled from another task.
    waker: Option<SessionWaker>,
    on_end: Option<OnEnd>,
    /// actix-ws's own body, never polled. Its drop tells the incoming message stream that the
    /// connection is gone, so it lives exactly as long as this body.
    _upstream: BoxBody,
}

impl StreamBody {
    /// A body running `session`; `on_end` is called with how it ended.
    pub(super) fn running(
        out: Outgoing,
        session: Running,
        on_end: OnEnd,
        upstream: BoxBody,
    ) -> Self {
        Self::new(out, Some(session), Some(on_end), upstream)
    }

    /// A body that only writes what is already queued (a refused stream's error and close).
    pub(super) fn ended(out: Outgoing, upstream: BoxBody) -> Self {
        Self::new(out, None, None, upstream)
    }

    fn new(
        out: Outgoing,
        session: Option<Running>,
        on_end: Option<OnEnd>,
        upstream: BoxBody,
    ) -> Self {
        Self { session, out, waker: None, on_end, _upstream: upstream }
    }
}

impl SessionWaker {
    /// The waker in `slot` if it was made for the task `cx` wakes; a new one otherwise.
    fn for_task<'a>(slot: &'a mut Option<SessionWaker>, cx: &Context<'_>) -> &'a SessionWaker {
        if !slot.as_ref().is_some_and(|made| made.wake.connection.will_wake(cx.waker())) {
            *slot = None;
        }
        slot.get_or_insert_with(|| SessionWaker::new(cx.waker()))
    }

    /// Whether the session should be polled: something it waits on woke it, or it waits for
    /// room in a queue the connection has emptied.
    fn should_poll(&self, out: &Outgoing) -> bool {
        let woken = self.wake.woken.swap(false, Ordering::AcqRel);
        let mut queue = out.0.borrow_mut();
        let room = queue.waiting && queue.bytes.len() < QUEUE_LIMIT;
        if room {
            queue.waiting = false;
        }
        woken || room
    }
}

impl MessageBody for StreamBody {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        if this.session.is_some() {
            let waker = SessionWaker::for_task(&mut this.waker, cx);
            if waker.should_poll(&this.out) {
                let mut session_cx = Context::from_waker(&waker.waker);
                let poll = this.session.as_mut().map(|s| s.as_mut().poll(&mut session_cx));
                if let Some(Poll::Ready(exit)) = poll {
                    this.session = None;
                    if let Some(on_end) = this.on_end.take() {
                        on_end(exit, &this.out);
                    }
                }
            }
        }
        let mut queue = this.out.0.borrow_mut();
        if !queue.bytes.is_empty() {
            return Poll::Ready(Some(Ok(mem::take(&mut queue.bytes).freeze())));
        }
        if this.session.is_none() {
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

impl Drop for StreamBody {
    fn drop(&mut self) {
        // The connection went away mid-stream.
        self.session = None;
        if let Some(on_end) = self.on_end.take() {
            on_end(super::close::Exit::Gone, &self.out);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::super::close::Exit;
    use super::*;

    /// Polls the body once, as the dispatcher does while its write buffer has room.
    async fn next_chunk(body: &mut StreamBody) -> Poll<Option<Bytes>> {
        poll_fn(|cx| {
            Poll::Ready(
                Pin::new(&mut *body)
                    .poll_next(cx)
                    .map(|chunk| chunk.map(|c| c.unwrap_or_default())),
            )
        })
        .await
    }

    /// The frames in `bytes`, as a client reads them: (opcode, payload).
    fn frames(bytes: &[u8]) -> Vec<(OpCode, Vec<u8>)> {
        let mut buf = BytesMut::from(bytes);
        let mut frames = Vec::new();
        while let Some((fin, op, payload)) = Parser::parse(&mut buf, false, 1 << 20).unwrap() {
            assert!(fin);
            frames.push((op, payload.map(|p| p.to_vec()).unwrap_or_default()));
        }
        assert!(buf.is_empty(), "a frame was cut");
        frames
    }

    fn closing_on_end(ended: Rc<Cell<Option<bool>>>) -> OnEnd {
        Box::new(move |exit: Exit, out: &Outgoing| {
            ended.set(Some(matches!(exit, Exit::Gone)));
            if let Exit::Close(code, reason) = exit {
                out.close(code, &reason);
            }
        })
    }

    #[tokio::test]
    async fn the_body_hands_on_what_its_session_wrote_then_the_close_then_ends() {
        let out = Outgoing::default();
        let writer = out.clone();
        let session: Running = Box::pin(async move {
            for n in 0..3 {
                writer.text(&format!("frame {n}")).await;
            }
            writer.pong(&[7; 200]).await;
            Exit::close(CloseCode::Again, "é".repeat(100))
        });
        let ended = Rc::new(Cell::new(None));
        let body =
            StreamBody::running(out, session, closing_on_end(ended.clone()), BoxBody::new(()));
        let bytes = actix_web::body::to_bytes(body).await.unwrap();
        let frames = frames(&bytes);
        assert_eq!(frames.len(), 5);
        for (n, frame) in frames[..3].iter().enumerate() {
            assert_eq!(frame, &(OpCode::Text, format!("frame {n}").into_bytes()));
        }
        assert_eq!(frames[3], (OpCode::Pong, vec![7; MAX_CONTROL_PAYLOAD_BYTES]));
        let (op, close) = &frames[4];
        assert_eq!(*op, OpCode::Close);
        assert_eq!(close[..2], 1013u16.to_be_bytes());
        // Cut at a character boundary, within a control frame's limit.
        assert_eq!(std::str::from_utf8(&close[2..]).unwrap(), "é".repeat(61));
        assert_eq!(ended.get(), Some(false), "the end is reported once, as it happened");
    }

    #[tokio::test]
    async fn a_session_that_fills_the_queue_waits_until_the_connection_takes_it() {
        let out = Outgoing::default();
        let writer = out.clone();
        let frame = "x".repeat(1000);
        let session: Running = Box::pin(async move {
            for _ in 0..50 {
                writer.text(&frame).await;
            }
            Exit::Gone
        });
        let ended = Rc::new(Cell::new(None));
        let mut body =
            StreamBody::running(out, session, closing_on_end(ended.clone()), BoxBody::new(()));
        let mut chunks = Vec::new();
        while let Poll::Ready(Some(chunk)) = next_chunk(&mut body).await {
            assert!(chunk.len() < QUEUE_LIMIT + 1010, "the queue is bounded: {}", chunk.len());
            chunks.push(chunk);
        }
        assert!(chunks.len() > 1, "a full queue made the session wait");
        let frames = frames(&chunks.concat());
        assert_eq!(frames.len(), 50);
        assert_eq!(ended.get(), Some(true));
        assert_eq!(next_chunk(&mut body).await, Poll::Ready(None));
    }

    #[tokio::test]
    async fn the_session_is_polled_only_when_something_it_waits_on_woke_it() {
        let polls = Rc::new(Cell::new(0));
        let waker = Rc::new(RefCell::new(None::<Waker>));
        let session: Running = {
            let (polls, waker) = (polls.clone(), waker.clone());
            Box::pin(poll_fn(move |cx| {
                polls.set(polls.get() + 1);
                *waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }))
        };
        let ended = Rc::new(Cell::new(None));
        let mut body = StreamBody::running(
            Outgoing::default(),
            session,
            closing_on_end(ended.clone()),
            BoxBody::new(()),
        );
        assert_eq!(next_chunk(&mut body).await, Poll::Pending);
        assert_eq!(next_chunk(&mut body).await, Poll::Pending);
        assert_eq!(polls.get(), 1, "the dispatcher polling on its own does not run the session");
        waker.borrow().as_ref().unwrap().wake_by_ref();
        assert_eq!(next_chunk(&mut body).await, Poll::Pending);
        assert_eq!(polls.get(), 2);
        assert_eq!(ended.get(), None);
    }

    #[tokio::test]
    async fn a_body_dropped_mid_stream_drops_its_session_then_reports_the_client_gone() {
        struct Flag(Rc<Cell<bool>>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.set(true);
            }
        }
        let session_dropped = Rc::new(Cell::new(false));
        let flag = Flag(session_dropped.clone());
        let session: Running = Box::pin(async move {
            let _flag = flag;
            std::future::pending::<()>().await;
            Exit::Gone
        });
        let seen = Rc::new(Cell::new(None));
        let on_end: OnEnd = {
            let (seen, session_dropped) = (seen.clone(), session_dropped.clone());
            Box::new(move |exit, _| {
                seen.set(Some((matches!(exit, Exit::Gone), session_dropped.get())))
            })
        };
        let mut body = StreamBody::running(Outgoing::default(), session, on_end, BoxBody::new(()));
        assert_eq!(next_chunk(&mut body).await, Poll::Pending);
        drop(body);
        assert_eq!(seen.get(), Some((true, true)));
    }
}
