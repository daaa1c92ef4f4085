//! One WebSocket stream of the blog feed: authenticates, replays from `since` (or starts at the
//! head as of its handshake), then forwards live events as this viewer sees them, exactly once
//! and in seq order, filling any gap from the outbox. Its rights end with its token or its
//! user's credentials. Slow, silent or abusive clients are closed with the matching code.
//!
//! The parts: [`connection`] (the response body the stream runs in), [`position`] (where the
//! stream is in the event order), [`credentials`] (who it is and until when), [`replay`]
//! (reading the outbox), [`subscriptions`] (groups), [`limits`] (message rate), [`close`] (how
//! it ends), [`woken`] (sources polled only when they woke the session).

mod close;
mod connection;
mod credentials;
mod limits;
mod position;
mod replay;
mod subscriptions;
mod woken;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::BoxBody;
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode};
use bytes::Bytes;
use futures_util::StreamExt;
use newspaper_domain::{PostId, Seq, UserId, Viewer};
use newspaper_events::{ChannelReceiver, GroupName, LayerError, RecvError};
use newspaper_persistence::{OutboxRepository, PersistenceError, UserRepository};

use self::close::{Exit, guarded};
use self::connection::Outgoing;
pub(crate) use self::connection::StreamBody;
use self::credentials::Credentials;
use self::limits::{RateLimiter, Verdict};
use self::position::{Arrival, Position};
use self::woken::PolledWhenWoken;
use super::envelope::{BLOG_FEED_GROUP, FeedEnvelope, LayerMessage, user_group};
use super::protocol::{ClientAction, ServerFrame};
use crate::auth::{TokenType, check_user};
use crate::state::AppState;

/// What the handshake asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionParams {
    pub(crate) token: Option<String>,
    pub(crate) since: Option<Result<Seq, String>>,
}

/// Where a stream begins.
enum Start {
    /// Live from the head as of the handshake: nothing committed before it.
    Head,
    /// Replay what came after this seq first.
    Replay(Seq),
    /// `since` is not in the retained history: say so, then live from the head.
    Resync,
}

/// Opens a stream: joins its groups, fixes where it starts and checks its token before the
/// handshake is answered, so "the head as of the handshake" is a point the client has seen
/// pass (a post committed after the client got its 101 is always delivered). The rest of
/// the stream runs in the returned response body; `upstream` is actix-ws's own body, kept
/// alive (never polled) because its drop ends `stream`.
pub(crate) async fn open_stream(
    state: Arc<AppState>,
    params: SessionParams,
    stream: AggregatedMessageStream,
    slot: super::ClientSlot,
    upstream: BoxBody,
) -> StreamBody {
    let counted = (state.realtime.connection_opened(), slot);
    let metrics = state.realtime.metrics();
    metrics.streams_opened.inc();
    metrics.streams_open.inc();
    let out = Outgoing::default();
    // Rare, large futures are boxed: what stays inline is what every idle connection keeps for
    // its whole life, so its size is memory per connection.
    match Box::pin(open(&state, params, out.clone())).await {
        Ok((session, start)) => {
            let on_end = Box::new(move |exit: Exit, out: &Outgoing| {
                finish(&state, exit, out);
                drop(counted);
            });
            StreamBody::running(out, Box::pin(serve(session, start, stream)), on_end, upstream)
        }
        Err(exit) => {
            drop(counted);
            finish(&state, exit, &out);
            StreamBody::ended(out, upstream)
        }
    }
}

/// Runs an opened stream to the end. The session goes with it, its channel leaving every
/// group before the end is counted.
async fn serve(mut session: FeedSession, start: Start, stream: AggregatedMessageStream) -> Exit {
    match Box::pin(session.start(start)).await {
        Ok(()) => session.event_loop(&mut PolledWhenWoken::new(stream)).await,
        Err(exit) => exit,
    }
}

/// How a client whose connection ended left: with the close frame it sent last, if one was read
/// with its last bytes (the stream reports the end first), or without a word.
async fn farewell(stream: &mut PolledWhenWoken<AggregatedMessageStream>) -> Exit {
    while let Some(frame) = stream.next().await {
        if let Ok(AggregatedMessage::Close(reason)) = frame {
            return Exit::closed_by_client(reason);
        }
    }
    Exit::Gone
}

/// Counts the end and says goodbye with the exit's close code.
fn finish(state: &AppState, exit: Exit, out: &Outgoing) {
    state.realtime.nudge_presence();
    let metrics = state.realtime.metrics();
    metrics.streams_open.dec();
    let code = match &exit {
        Exit::Close(code, _) => u16::from(*code).to_string(),
        // It stopped reading, fell behind and left before reading the 1013 it was owed: a
        // slow consumer all the same (an alert counts them).
        Exit::Gone if out.fell_behind() => u16::from(CloseCode::Again).to_string(),
        Exit::Gone => "gone".to_owned(),
    };
    metrics.streams_closed.with_label_values(&[&code]).inc();
    if let Exit::Close(code, reason) = exit {
        out.close(code, &reason);
    }
}

/// Reports a handshake problem on the socket (where a browser can see it) and closes with 1008.
async fn refuse(out: &Outgoing, detail: &str, reason: String) -> Exit {
    out.text(&ServerFrame::Error { detail }.to_text()).await;
    Exit::close(CloseCode::Policy, reason)
}

/// Checks the handshake's token and `since`, joins the groups, and fixes where the stream
/// starts. The order matters: the groups are joined before the outbox head and the user are
/// read, so anything committed after those reads (an event, a revocation) arrives live.
async fn open(
    state: &Arc<AppState>,
    params: SessionParams,
    out: Outgoing,
) -> Result<(FeedSession, Start), Exit> {
    let since = match params.since {
        None => None,
        Some(Ok(seq)) => Some(seq),
        Some(Err(detail)) => {
            return Err(refuse(&out, &detail, "invalid since parameter".into()).await);
        }
    };
    let claims = match &params.token {
        None => None,
        Some(token) => match state.tokens.decode(token, &[TokenType::Access]) {
            Ok(claims) => Some(claims),
            Err(err) => {
                let detail = err.to_string();
                let reason = format!("authentication failed: {detail}");
                return Err(refuse(&out, &detail, reason).await);
            }
        },
    };
    let user = claims.as_ref().map(|c| UserId(c.user_id));
    let layer = &state.layer;
    let joined = async {
        let receiver = layer.new_channel().await?;
        layer.group_add(&GroupName::new(BLOG_FEED_GROUP)?, receiver.name()).await?;
        if let Some(user) = user {
            layer.group_add(&GroupName::new(&user_group(user))?, receiver.name()).await?;
        }
        Ok::<_, LayerError>(receiver)
    };
    let receiver = match joined.await {
        Ok(receiver) => receiver,
        Err(err) => {
            tracing::warn!(error = %crate::error::chain(&err), "could not join the feed");
            return Err(Exit::close(CloseCode::Again, "feed temporarily unavailable; retry"));
        }
    };
    // Counted as joined now, and as left when the stream ends, whichever way it ends.
    let memberships = Memberships::new(state, user.is_some());
    let presence_epoch = state.realtime.next_presence_epoch();
    // Read after the groups were joined; while nothing was committed since the history was
    // last read, what was read then is what a read now would return.
    let mark = state.db.commit_mark();
    let known = mark.filter(|_| user.is_none()).and_then(|m| state.realtime.history_at(m));
    let read = match known {
        Some((pruned, head)) => Ok((pruned, head, None)),
        None => {
            let read = state.db.read(move |conn| {
                let outbox = OutboxRepository::state(conn)?;
                let head = OutboxRepository::latest_seq(conn)?;
                let record = match user {
                    Some(user) => UserRepository::find_by_id(conn, user)?,
                    None => None,
                };
                Ok::<_, PersistenceError>((outbox.pruned, head, record))
            });
            let read = read.await;
            if let (Some(mark), Ok((pruned, head, _))) = (mark, &read) {
                state.realtime.keep_history_at(mark, *pruned, *head);
            }
            read
        }
    };
    let (pruned, head, record) = match read {
        Ok(read) => read,
        Err(err) => {
            tracing::warn!(error = %crate::error::chain(&err), "could not open a stream");
            return Err(Exit::close(CloseCode::Again, "feed temporarily unavailable; retry"));
        }
    };
    let credentials = match claims {
        None => None,
        Some(claims) => match check_user(&state.tokens, record, &claims) {
            Ok(user) => Some(Box::new(Credentials::new(&user, &claims))),
            Err(err) => {
                let detail = err.to_string();
                let reason = format!("authentication failed: {detail}");
                return Err(refuse(&out, &detail, reason).await);
            }
        },
    };
    let (position, start) = match since {
        None => (Position::at(head), Start::Head),
        // Older than the retained history, or from another history altogether.
        Some(since) if since < pruned || since > head => (Position::at(head), Start::Resync),
        Some(since) => (Position::at(since), Start::Replay(since)),
    };
    state.realtime.nudge_presence();
    let settings = &state.settings.realtime;
    let rate = f64::from(settings.client_messages_per_second.max(1));
    memberships.keep();
    let session = FeedSession {
        state: state.clone(),
        out,
        credentials,
        receiver,
        position,
        subscriptions: HashSet::new(),
        presence_epoch,
        last_heard: Instant::now(),
        renewed: Instant::now(),
        limiter: RateLimiter::new(rate, rate * 2.0),
        heartbeat: PolledWhenWoken::new(tokio::time::interval_at(
            tokio::time::Instant::now() + settings.heartbeat_interval,
            settings.heartbeat_interval,
        )),
    };
    Ok((session, start))
}

/// The groups a stream joined during its handshake, counted as left if the handshake fails
/// after all (the stream's channel, dropped with it, leaves them).
struct Memberships<'a> {
    state: &'a AppState,
    user: bool,
    kept: bool,
}

impl<'a> Memberships<'a> {
    fn new(state: &'a AppState, user: bool) -> Self {
        let metrics = state.realtime.metrics();
        metrics.joined("blog_feed");
        if user {
            metrics.joined("user");
        }
        Self { state, user, kept: false }
    }

    /// The stream goes on: its session counts the leaves when it ends.
    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Memberships<'_> {
    fn drop(&mut self) {
        if !self.kept {
            let metrics = self.state.realtime.metrics();
            metrics.left("blog_feed");
            if self.user {
                metrics.left("user");
            }
        }
    }
}

struct FeedSession {
    state: Arc<AppState>,
    out: Outgoing,
    /// `None` for an anonymous stream.
    credentials: Option<Box<Credentials>>,
    receiver: ChannelReceiver,
    position: Position,
    subscriptions: HashSet<PostId>,
    /// Presence frames counted before this epoch may predate this stream's joining the feed.
    presence_epoch: u64,
    last_heard: Instant,
    renewed: Instant,
    limiter: RateLimiter,
    /// Pings the client and checks that it is still heard from.
    heartbeat: PolledWhenWoken<tokio::time::Interval>,
}

impl Drop for FeedSession {
    /// Counts the groups left: the session's channel, dropped with it, leaves them.
    fn drop(&mut self) {
        if self.receiver.is_lagging() {
            // A client that stopped reading is not polled, so its session may end here, when
            // the connection drops, without having seen the overflow.
            self.out.mark_fell_behind();
        }
        let metrics = self.state.realtime.metrics();
        if self.position.in_feed() {
            metrics.left("blog_feed");
        }
        for _ in &self.subscriptions {
            metrics.left("post");
        }
        if self.credentials.is_some() {
            metrics.left("user");
        }
    }
}

impl FeedSession {
    async fn start(&mut self, start: Start) -> Result<(), Exit> {
        self.send_presence().await?;
        match start {
            Start::Head => Ok(()),
            Start::Resync => self.send_frame(&ServerFrame::ResyncRequired).await,
            Start::Replay(since) => self.replay(since, None, &[]).await,
        }
    }

    /// The feed's presence count, fresh, so that the first one a client sees includes itself.
    async fn send_presence(&mut self) -> Result<(), Exit> {
        let count = match GroupName::new(BLOG_FEED_GROUP) {
            Ok(feed) => self.state.layer.group_size(&feed).await.ok(),
            Err(_) => None,
        };
        let count = count.unwrap_or_else(|| self.state.realtime.presence().max(1));
        self.send_frame(&ServerFrame::Presence { group: BLOG_FEED_GROUP, count }).await
    }

    fn viewer(&self) -> Viewer {
        self.credentials.as_deref().map_or(Viewer::Anonymous, Credentials::viewer)
    }

    fn user_id(&self) -> Option<UserId> {
        self.credentials.as_deref().map(Credentials::user_id)
    }

    async fn event_loop(&mut self, stream: &mut PolledWhenWoken<AggregatedMessageStream>) -> Exit {
        let settings = self.state.settings.realtime.clone();
        loop {
            let step = tokio::select! {
                biased;
                frame = stream.next() => match frame {
                    None => Err(Exit::Gone),
                    Some(Ok(message)) => {
                        self.last_heard = Instant::now();
                        Box::pin(self.on_client_message(message)).await
                    }
                    Some(Err(err)) => match Exit::bad_frame(&err, settings.max_message_bytes) {
                        // A close frame that came with the connection's last bytes still says
                        // how the client left.
                        Exit::Gone => Err(farewell(stream).await),
                        exit => Err(exit),
                    },
                },
                // Before the queue: no event reaches a stream whose token has expired.
                () = credentials::expiry(&mut self.credentials) => Err(Exit::token_expired()),
                message = self.receiver.recv() => self.on_layer_message(message).await,
                _ = self.heartbeat.tick() => Box::pin(self.on_heartbeat(&settings)).await,
            };
            if let Err(exit) = step {
                return exit;
            }
        }
    }

    async fn on_heartbeat(
        &mut self,
        settings: &crate::settings::RealtimeSettings,
    ) -> Result<(), Exit> {
        if self.last_heard.elapsed() >= settings.idle_timeout {
            return Err(Exit::close(CloseCode::Normal, "idle timeout"));
        }
        if self.renewed.elapsed() >= settings.group_expiry / 2 {
            self.renew_memberships().await;
        }
        let resume = self.position.resume_point();
        guarded(self.out.ping(), &self.receiver, resume).await
    }

    async fn on_client_message(&mut self, message: AggregatedMessage) -> Result<(), Exit> {
        match message {
            AggregatedMessage::Text(text) => match self.limiter.check() {
                Verdict::Allow => Box::pin(self.on_action(&text)).await,
                Verdict::Refuse => self.send_error("Too many messages; slow down.").await,
                Verdict::Close => {
                    Err(Exit::close(CloseCode::Policy, "message rate limit exceeded"))
                }
            },
            AggregatedMessage::Binary(_) => Err(Exit::close(
                CloseCode::Unsupported,
                "binary frames are not supported; send JSON text",
            )),
            AggregatedMessage::Ping(payload) => {
                let resume = self.position.resume_point();
                guarded(self.out.pong(&payload), &self.receiver, resume).await
            }
            AggregatedMessage::Pong(_) => Ok(()),
            AggregatedMessage::Close(reason) => Err(Exit::closed_by_client(reason)),
        }
    }

    async fn on_action(&mut self, text: &str) -> Result<(), Exit> {
        match ClientAction::parse(text) {
            Ok(ClientAction::Ping) => self.send_frame(&ServerFrame::Pong).await,
            Ok(ClientAction::Subscribe { group }) => self.subscribe(&group).await,
            Ok(ClientAction::Unsubscribe { group }) => self.unsubscribe(&group).await,
            Ok(ClientAction::Auth { token }) => self.authenticate(&token).await,
            Err(detail) => self.send_error(&detail).await,
        }
    }

    /// `{"action":"auth"}`: logs an anonymous stream in, or renews the same user's token.
    async fn authenticate(&mut self, token: &str) -> Result<(), Exit> {
        let claims = match self.state.tokens.decode(token, &[TokenType::Access]) {
            Ok(claims) => claims,
            Err(err) => return self.send_error(&err.to_string()).await,
        };
        let user = UserId(claims.user_id);
        if self.user_id().is_some_and(|current| current != user) {
            return self
                .send_error("This stream is authenticated as another user; open a new stream to switch users.")
                .await;
        }
        // A new login joins the user's group before the check, so a revocation committed
        // after the check reaches this stream.
        let new_login = self.credentials.is_none();
        let group = GroupName::new(&user_group(user)).ok();
        if let (true, Some(group)) = (new_login, &group) {
            if let Err(err) = self.state.layer.group_add(group, self.receiver.name()).await {
                tracing::warn!(error = %crate::error::chain(&err), "could not join the user's group");
                return self.send_error("Could not authenticate right now; retry.").await;
            }
            self.state.realtime.metrics().joined("user");
        }
        match crate::auth::authenticate_as(&self.state, token, &[TokenType::Access]).await {
            Ok((user, claims)) => {
                let credentials = Credentials::new(&user, &claims);
                let frame = ServerFrame::Authenticated {
                    user: credentials.user.clone(),
                    expires_at: credentials.expires_at,
                };
                self.credentials = Some(Box::new(credentials));
                self.send_frame(&frame).await
            }
            Err(err) => {
                if let (true, Some(group)) = (new_login, &group) {
                    let _ = self.state.layer.group_discard(group, self.receiver.name()).await;
                    self.state.realtime.metrics().left("user");
                }
                self.send_error(&err.to_string()).await
            }
        }
    }

    async fn on_layer_message(&mut self, message: Result<Bytes, RecvError>) -> Result<(), Exit> {
        let bytes = match message {
            Ok(bytes) => bytes,
            Err(RecvError::Lagged) => return Err(Exit::lagged(self.position.resume_point())),
            Err(RecvError::Interrupted) => {
                // Messages may have been lost upstream: catch up from the outbox.
                let after = self.position.catch_up_point();
                return Box::pin(self.replay(after, None, &[])).await;
            }
            Err(RecvError::Closed) => return Err(Exit::shutdown()),
        };
        match LayerMessage::decode(&bytes) {
            Ok(LayerMessage::Feed(envelope)) => self.on_post_event(envelope).await,
            Ok(LayerMessage::Presence { epoch, frame }) => {
                if !self.position.in_feed() || epoch < self.presence_epoch {
                    return Ok(());
                }
                match std::str::from_utf8(frame) {
                    Ok(text) => self.send_text(text).await,
                    Err(_) => Ok(()),
                }
            }
            Ok(LayerMessage::Revocation { user, .. }) if self.user_id() == Some(user) => {
                Box::pin(self.check_rights()).await
            }
            Ok(LayerMessage::Revocation { .. }) => Ok(()),
            Err(err) => {
                tracing::warn!(error = %crate::error::chain(&err), "ignoring a malformed feed message");
                Ok(())
            }
        }
    }

    async fn on_post_event(&mut self, envelope: FeedEnvelope<&[u8]>) -> Result<(), Exit> {
        // Decide synchronously, so that only the outgoing frame lives across the send: this
        // future is part of every connection's task, and its size is memory per connection.
        let Arrival::Fresh { gap_after } = self.position.arrive(envelope.seq, envelope.prev_seq)
        else {
            return Ok(());
        };
        if let Some(after) = gap_after {
            // Something was published that never reached us: fetch it before going on.
            Box::pin(self.replay(after, Some(envelope.seq), &[])).await?;
        }
        let frame = if self.follows(envelope.post_id) {
            envelope.frame_for(&self.viewer()).and_then(|bytes| std::str::from_utf8(bytes).ok())
        } else {
            None
        };
        self.position.advance(envelope.seq, frame.is_some());
        let Some(text) = frame else { return Ok(()) };
        self.state.realtime.metrics().events_delivered_live.inc();
        self.send_text(text).await
    }

    /// The user's credentials changed somewhere: this stream keeps its rights only if they
    /// still stand (it may already hold a token issued after the change).
    async fn check_rights(&mut self) -> Result<(), Exit> {
        let Some(credentials) = &self.credentials else { return Ok(()) };
        let rights = credentials.rights();
        let state = self.state.clone();
        match self.state.db.read(move |conn| rights.still_valid(conn, &state.tokens)).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Exit::revoked()),
            Err(err) => {
                // Without an answer the stream cannot keep rights that may be gone.
                tracing::warn!(error = %crate::error::chain(&err), "could not check a stream's credentials");
                Err(Exit::history_unavailable())
            }
        }
    }

    fn follows(&self, post: PostId) -> bool {
        self.position.in_feed() || self.subscriptions.contains(&post)
    }

    async fn send_error(&mut self, detail: &str) -> Result<(), Exit> {
        self.send_frame(&ServerFrame::Error { detail }).await
    }

    async fn send_frame(&mut self, frame: &ServerFrame<'_>) -> Result<(), Exit> {
        self.send_text(&frame.to_text()).await
    }

    async fn send_text(&mut self, text: &str) -> Result<(), Exit> {
        if self.out.try_text(text) {
            return Ok(());
        }
        // Boxed, with its own copy of the frame: what a connection keeps while idle is the
        // largest state its task can be in, and a send waiting for room would otherwise be
        // that state, for every idle connection.
        Box::pin(self.send_when_there_is_room(text.to_owned())).await
    }

    async fn send_when_there_is_room(&mut self, text: String) -> Result<(), Exit> {
        let resume = self.position.resume_point();
        guarded(self.out.text(&text), &self.receiver, resume).await
    }
}
