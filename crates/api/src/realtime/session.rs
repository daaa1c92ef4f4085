//! One WebSocket stream of the blog feed: authenticates, replays from `since`, then forwards
//! live events as this viewer sees them, exactly once and in seq order, filling any gap from
//! the outbox. Slow, silent or abusive clients are closed with the matching code.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_ws::{
    AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, ProtocolError, Session,
};
use bytes::Bytes;
use bytestring::ByteString;
use futures_util::{SinkExt, StreamExt};
use newspaper_domain::{PostId, Seq, StoredEvent, Viewer};
use newspaper_events::{
    BLOG_FEED_GROUP, ChannelReceiver, FeedEnvelope, GroupName, RecvError, post_group,
};
use newspaper_persistence::{OutboxRepository, PostRepository};
use serde_json::{Value, json};

use crate::auth::authenticate;
use crate::state::AppState;

/// What actix-ws says when fragments add up past `max_continuation_size`; it has no variant of
/// its own, so this text is the only way to tell it from a broken socket (a test pins it).
const CONTINUATION_TOO_LARGE: &str = "Exceeded maximum continuation size";

/// Events read from the outbox per query while replaying.
const REPLAY_BATCH: i64 = 500;
/// Rate-limit violations tolerated before the connection is closed.
const MAX_STRIKES: u32 = 50;

/// What the handshake asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionParams {
    pub(crate) token: Option<String>,
    pub(crate) since: Option<Result<Seq, String>>,
}

/// How a session ends.
enum Exit {
    /// Send a close frame with this code and reason.
    Close(CloseCode, String),
    /// The peer is gone; nothing to send.
    Gone,
}

impl Exit {
    fn close(code: CloseCode, reason: impl Into<String>) -> Self {
        Exit::Close(code, reason.into())
    }

    fn shutdown() -> Self {
        Exit::close(CloseCode::Away, "server shutting down")
    }
}

/// Runs one connection to the end.
pub(crate) async fn run(
    state: Arc<AppState>,
    params: SessionParams,
    ws: Session,
    mut stream: AggregatedMessageStream,
) {
    let _counted = state.realtime.connection_opened();
    // Rare, large futures are boxed: what stays inline is what every idle connection keeps for
    // its whole life, so its size is memory per connection.
    let (exit, ws) = match Box::pin(open(&state, params, ws)).await {
        Ok((mut session, since)) => {
            let exit = match Box::pin(session.start(since)).await {
                Ok(()) => session.event_loop(&mut stream).await,
                Err(exit) => exit,
            };
            // Dropping the session leaves every group before presence is recounted.
            (exit, session.ws)
        }
        Err(failed) => failed,
    };
    state.realtime.nudge_presence();
    if let Exit::Close(code, reason) = exit {
        // The outgoing queue may be full (a client that stopped reading); never wait long.
        actix_web::rt::spawn(async move {
            let reason = CloseReason { code, description: Some(reason) };
            let _ = tokio::time::timeout(Duration::from_secs(5), ws.close(Some(reason))).await;
        });
    }
}

/// Authenticates and joins `blog_feed`; returns the session and where to replay from, or how
/// to close (with the socket, to close it).
async fn open(
    state: &Arc<AppState>,
    params: SessionParams,
    mut ws: Session,
) -> Result<(FeedSession, Option<Seq>), (Exit, Session)> {
    let viewer = match &params.token {
        None => Viewer::Anonymous,
        Some(token) => match authenticate(state, token).await {
            Ok(user) => user.viewer(),
            Err(err) => {
                let detail = err.to_string();
                let _ = ws.text(json!({"event": "error", "detail": detail}).to_string()).await;
                let exit =
                    Exit::close(CloseCode::Policy, format!("authentication failed: {detail}"));
                return Err((exit, ws));
            }
        },
    };
    let since = match params.since {
        None => None,
        Some(Ok(seq)) => Some(seq),
        Some(Err(detail)) => {
            let _ = ws.text(json!({"event": "error", "detail": detail}).to_string()).await;
            return Err((Exit::close(CloseCode::Policy, "invalid since parameter"), ws));
        }
    };
    let layer = &state.layer;
    let unavailable = |e: newspaper_events::LayerError| {
        tracing::warn!(error = %e, "could not join the feed");
        Exit::close(CloseCode::Again, "feed temporarily unavailable; retry")
    };
    let joined = async {
        let receiver = layer.new_channel().await?;
        let feed = GroupName::new(BLOG_FEED_GROUP)?;
        layer.group_add(&feed, receiver.name()).await?;
        Ok::<_, newspaper_events::LayerError>((receiver, feed))
    };
    let (receiver, feed) = match joined.await {
        Ok(joined) => joined,
        Err(e) => return Err((unavailable(e), ws)),
    };
    state.realtime.nudge_presence();
    let settings = &state.settings.realtime;
    let rate = f64::from(settings.client_messages_per_second.max(1));
    Ok((
        FeedSession {
            state: state.clone(),
            ws,
            viewer,
            receiver,
            feed,
            in_feed: true,
            subscriptions: HashSet::new(),
            last_seq: None,
            last_heard: Instant::now(),
            renewed: Instant::now(),
            bucket: TokenBucket::new(rate, rate * 2.0),
            strikes: 0,
            heartbeat: tokio::time::interval_at(
                tokio::time::Instant::now() + settings.heartbeat_interval,
                settings.heartbeat_interval,
            ),
        },
        since,
    ))
}

struct FeedSession {
    state: Arc<AppState>,
    ws: Session,
    viewer: Viewer,
    receiver: ChannelReceiver,
    feed: GroupName,
    in_feed: bool,
    subscriptions: HashSet<PostId>,
    /// The newest seq this stream has dealt with (sent, or skipped as invisible).
    last_seq: Option<Seq>,
    last_heard: Instant,
    renewed: Instant,
    bucket: TokenBucket,
    strikes: u32,
    /// Pings the client; also bounds how long a write may stall.
    heartbeat: tokio::time::Interval,
}

impl FeedSession {
    async fn start(&mut self, since: Option<Seq>) -> Result<(), Exit> {
        // The count as last computed; a change that this connection makes arrives shortly.
        let count = self.state.realtime.presence();
        self.send_json(json!({"event": "presence", "group": BLOG_FEED_GROUP, "count": count}))
            .await?;
        let Some(since) = since else { return Ok(()) };
        let (state, latest) = self
            .state
            .db
            .read(|conn| {
                Ok::<_, newspaper_persistence::PersistenceError>((
                    OutboxRepository::state(conn)?,
                    OutboxRepository::latest_seq(conn)?,
                ))
            })
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "replay unavailable");
                Exit::close(CloseCode::Again, "history temporarily unavailable; retry")
            })?;
        if since < state.pruned || since > latest {
            // Older than the retained history, or from another history altogether.
            return self.send_json(json!({"event": "resync_required"})).await;
        }
        self.last_seq = Some(since);
        self.catch_up(since, None).await
    }

    async fn event_loop(&mut self, stream: &mut AggregatedMessageStream) -> Exit {
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
                    Some(Err(err)) => Err(exit_for_bad_frame(&err, settings.max_message_bytes)),
                },
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
        let ping = self.ws.send(actix_ws::Message::Ping(Bytes::new()));
        guarded(ping, &self.receiver, &mut self.heartbeat, self.last_seq, settings.idle_timeout)
            .await
    }

    async fn renew_memberships(&mut self) {
        self.renewed = Instant::now();
        let layer = &self.state.layer;
        let mut groups: Vec<GroupName> = self
            .subscriptions
            .iter()
            .filter_map(|id| GroupName::new(&post_group(*id)).ok())
            .collect();
        if self.in_feed {
            groups.push(self.feed.clone());
        }
        for group in groups {
            if let Err(err) = layer.group_add(&group, self.receiver.name()).await {
                tracing::warn!(error = %err, group = %group, "could not renew membership");
            }
        }
    }

    async fn on_client_message(&mut self, message: AggregatedMessage) -> Result<(), Exit> {
        match message {
            AggregatedMessage::Text(text) => {
                if !self.bucket.take() {
                    self.strikes += 1;
                    if self.strikes > MAX_STRIKES {
                        return Err(Exit::close(CloseCode::Policy, "message rate limit exceeded"));
                    }
                    return self.send_error("Too many messages; slow down.").await;
                }
                Box::pin(self.on_action(&text)).await
            }
            AggregatedMessage::Binary(_) => Err(Exit::close(
                CloseCode::Unsupported,
                "binary frames are not supported; send JSON text",
            )),
            AggregatedMessage::Ping(payload) => {
                let stall = self.state.settings.realtime.idle_timeout;
                let pong = self.ws.send(actix_ws::Message::Pong(payload));
                guarded(pong, &self.receiver, &mut self.heartbeat, self.last_seq, stall).await
            }
            AggregatedMessage::Pong(_) => Ok(()),
            AggregatedMessage::Close(reason) => {
                let code = reason.map_or(CloseCode::Normal, |r| r.code);
                Err(Exit::close(code, ""))
            }
        }
    }

    async fn on_action(&mut self, text: &str) -> Result<(), Exit> {
        let Ok(Value::Object(message)) = serde_json::from_str::<Value>(text) else {
            return self
                .send_error("Messages must be JSON objects such as {\"action\": \"ping\"}.")
                .await;
        };
        let group = message.get("group").and_then(Value::as_str);
        match message.get("action").and_then(Value::as_str) {
            Some("ping") => self.send_json(json!({"event": "pong"})).await,
            Some("subscribe") => match group {
                Some(group) => self.subscribe(group).await,
                None => self.send_error("subscribe needs a \"group\", e.g. \"post.42\".").await,
            },
            Some("unsubscribe") => match group {
                Some(group) => self.unsubscribe(group).await,
                None => self.send_error("unsubscribe needs a \"group\".").await,
            },
            Some(other) => {
                let other: String = other.chars().take(50).collect();
                self.send_error(&format!(
                    "Unknown action {other:?}; use ping, subscribe or unsubscribe."
                ))
                .await
            }
            None => self.send_error("Missing \"action\" (ping, subscribe or unsubscribe).").await,
        }
    }

    async fn subscribe(&mut self, group: &str) -> Result<(), Exit> {
        if group == BLOG_FEED_GROUP {
            if !self.in_feed {
                if let Err(err) = self.state.layer.group_add(&self.feed, self.receiver.name()).await
                {
                    tracing::warn!(error = %err, "could not rejoin the feed");
                    return self.send_error("The feed is temporarily unavailable; retry.").await;
                }
                self.in_feed = true;
                self.state.realtime.nudge_presence();
                if let Some(last) = self.last_seq {
                    Box::pin(self.catch_up(last, None)).await?;
                }
            }
            return self.send_json(json!({"event": "subscribed", "group": group})).await;
        }
        let Some(id) = parse_post_group(group) else {
            return self
                .send_error(&format!(
                    "Unknown group {:?}; use blog_feed or post.<id>.",
                    truncate(group)
                ))
                .await;
        };
        if !self.subscriptions.contains(&id) {
            if self.subscriptions.len() >= self.state.settings.realtime.max_subscriptions {
                return self.send_error("Too many subscriptions on this connection.").await;
            }
            let viewer = self.viewer;
            let visible = self
                .state
                .db
                .read(move |conn| PostRepository::find_visible_to(conn, &viewer, id))
                .await;
            match visible {
                Ok(Some(_)) => {}
                Ok(None) => return self.send_error(&format!("Post {} not found.", id.0)).await,
                Err(err) => {
                    tracing::warn!(error = %err, "subscription check failed");
                    return self.send_error("Could not subscribe right now; retry.").await;
                }
            }
            let joined = match GroupName::new(group) {
                Ok(name) => self.state.layer.group_add(&name, self.receiver.name()).await,
                Err(err) => Err(err),
            };
            if let Err(err) = joined {
                tracing::warn!(error = %err, "could not join a post group");
                return self.send_error("Could not subscribe right now; retry.").await;
            }
            self.subscriptions.insert(id);
        }
        self.send_json(json!({"event": "subscribed", "group": group})).await
    }

    async fn unsubscribe(&mut self, group: &str) -> Result<(), Exit> {
        if group == BLOG_FEED_GROUP {
            if self.in_feed {
                let _ = self.state.layer.group_discard(&self.feed, self.receiver.name()).await;
                self.in_feed = false;
                self.state.realtime.nudge_presence();
            }
        } else if let Some(id) = parse_post_group(group) {
            if self.subscriptions.remove(&id) {
                if let Ok(name) = GroupName::new(group) {
                    let _ = self.state.layer.group_discard(&name, self.receiver.name()).await;
                }
            }
        } else {
            return self.send_error(&format!("Unknown group {:?}.", truncate(group))).await;
        }
        self.send_json(json!({"event": "unsubscribed", "group": group})).await
    }

    async fn on_layer_message(&mut self, message: Result<Bytes, RecvError>) -> Result<(), Exit> {
        // Decide synchronously, so that only the outgoing frame lives across the send: this
        // future is part of every connection's task, and its size is memory per connection.
        let (seq, gap, frame) = match self.plan(message) {
            Plan::Deliver { seq, gap, frame } => (seq, gap, frame),
            Plan::Forward(text) => return Box::pin(self.send_text(text)).await,
            Plan::Skip => return Ok(()),
            Plan::Resume => return Box::pin(self.resume_after_interruption()).await,
            Plan::Exit(exit) => return Err(exit),
        };
        if let Some(last) = gap {
            // Something was published that never reached us: fetch it before going on.
            Box::pin(self.catch_up(last, Some(seq))).await?;
        }
        self.last_seq = Some(seq);
        let Some(text) = frame else { return Ok(()) };
        // Boxed: what a connection keeps while idle is the largest state its task can be in,
        // and a send in progress would otherwise be that state, for every idle connection.
        Box::pin(self.send_text(text)).await
    }

    /// What to do with one message from the layer.
    fn plan(&self, message: Result<Bytes, RecvError>) -> Plan {
        // A ready-made frame for every stream of this process (presence).
        if let Ok(bytes) = &message {
            if bytes.first() == Some(&b'{') {
                return match (self.in_feed, ByteString::try_from(bytes.clone())) {
                    (true, Ok(text)) => Plan::Forward(text),
                    _ => Plan::Skip,
                };
            }
        }
        let envelope = match message.map(|bytes| FeedEnvelope::decode(&bytes)) {
            Ok(Ok(envelope)) => envelope,
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "ignoring a malformed feed message");
                return Plan::Skip;
            }
            Err(RecvError::Lagged) => return Plan::Exit(lagged_exit(self.last_seq)),
            Err(RecvError::Interrupted) => return Plan::Resume,
            Err(RecvError::Closed) => return Plan::Exit(Exit::shutdown()),
        };
        if self.last_seq.is_some_and(|last| envelope.seq <= last) {
            return Plan::Skip;
        }
        let gap = self.last_seq.filter(|last| self.in_feed && envelope.prev_seq > *last);
        let frame = if self.follows(envelope.post_id) {
            envelope
                .frame_for(&self.viewer)
                .and_then(|bytes| ByteString::try_from(bytes.clone()).ok())
        } else {
            None
        };
        Plan::Deliver { seq: envelope.seq, gap, frame }
    }

    async fn resume_after_interruption(&mut self) -> Result<(), Exit> {
        match self.last_seq {
            Some(last) => self.catch_up(last, None).await,
            None => self.send_json(json!({"event": "resync_required"})).await,
        }
    }

    /// Sends the retained events after `after` (and before `before`), as this viewer sees them.
    async fn catch_up(&mut self, after: Seq, before: Option<Seq>) -> Result<(), Exit> {
        let mut from = after;
        loop {
            let until = before.unwrap_or(Seq(i64::MAX));
            let events: Vec<StoredEvent> = self
                .state
                .db
                .read(move |conn| OutboxRepository::list_between(conn, from, until, REPLAY_BATCH))
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, "catch-up failed");
                    Exit::close(
                        CloseCode::Again,
                        "history temporarily unavailable; resume with since",
                    )
                })?;
            let done = (events.len() as i64) < REPLAY_BATCH;
            for event in &events {
                from = event.seq;
                if self.follows(event.change.post_id) {
                    let audience = self.viewer.audience_for(event.change.author_id);
                    if let Some(feed_event) = event.feed_event(audience) {
                        let text = serde_json::to_string(&feed_event)
                            .map_err(|e| Exit::close(CloseCode::Error, e.to_string()))?;
                        self.send_text(text.into()).await?;
                    }
                }
                self.last_seq = Some(event.seq);
            }
            if done {
                return Ok(());
            }
        }
    }

    fn follows(&self, post: PostId) -> bool {
        self.in_feed || self.subscriptions.contains(&post)
    }

    async fn send_error(&mut self, detail: &str) -> Result<(), Exit> {
        self.send_json(json!({"event": "error", "detail": detail})).await
    }

    async fn send_json(&mut self, value: Value) -> Result<(), Exit> {
        self.send_text(value.to_string().into()).await
    }

    async fn send_text(&mut self, text: ByteString) -> Result<(), Exit> {
        let stall = self.state.settings.realtime.idle_timeout;
        // The sink's `send` future is a fraction of the size of `Session::text`'s.
        let send = self.ws.send(actix_ws::Message::Text(text));
        guarded(send, &self.receiver, &mut self.heartbeat, self.last_seq, stall).await
    }
}

/// What a layer message calls for.
enum Plan {
    /// Send `frame` (if this viewer sees anything), after fetching what came after `gap`.
    Deliver { seq: Seq, gap: Option<Seq>, frame: Option<ByteString> },
    /// Send this frame as it is.
    Forward(ByteString),
    /// A duplicate, or nothing for us.
    Skip,
    /// Messages may have been lost upstream: catch up from the outbox.
    Resume,
    /// End the stream.
    Exit(Exit),
}

/// The close for a stream whose buffer overflowed.
fn lagged_exit(last_seq: Option<Seq>) -> Exit {
    let resume = last_seq.map_or_else(String::new, |s| format!("?since={}", s.0));
    Exit::close(CloseCode::Again, format!("too slow: events were dropped; reconnect with {resume}"))
}

/// The close for a frame the client should not have sent (RFC 6455 §7.4.1): too big is 1009,
/// text that is not UTF-8 is 1007, anything else breaks the protocol (1002).
fn exit_for_bad_frame(err: &ProtocolError, max_message_bytes: usize) -> Exit {
    match err {
        ProtocolError::Overflow => too_big(max_message_bytes),
        ProtocolError::Io(io) if io.to_string() == CONTINUATION_TOO_LARGE => {
            too_big(max_message_bytes)
        }
        ProtocolError::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            Exit::close(CloseCode::Invalid, "text message is not valid UTF-8")
        }
        other => Exit::close(CloseCode::Protocol, other.to_string()),
    }
}

fn too_big(max_message_bytes: usize) -> Exit {
    Exit::close(CloseCode::Size, format!("message larger than {max_message_bytes} bytes"))
}

/// Waits for a write to be queued, but not past the point where the client has already lost:
/// overflow of its event buffer, shutdown (its channel closes), or a write stalled for `stall`
/// (checked on heartbeat
/// ticks, so the hot path arms no timer of its own).
async fn guarded(
    write: impl std::future::Future<Output = Result<(), actix_ws::Closed>>,
    receiver: &ChannelReceiver,
    heartbeat: &mut tokio::time::Interval,
    last_seq: Option<Seq>,
    stall: Duration,
) -> Result<(), Exit> {
    let started = Instant::now();
    let mut write = std::pin::pin!(write);
    loop {
        tokio::select! {
            biased;
            written = &mut write => return written.map_err(|_| Exit::Gone),
            _ = receiver.lagged() => return Err(lagged_exit(last_seq)),
            _ = heartbeat.tick() => {
                if started.elapsed() >= stall {
                    return Err(Exit::close(CloseCode::Policy, "write stalled"));
                }
            }
        }
    }
}

fn parse_post_group(group: &str) -> Option<PostId> {
    group.strip_prefix("post.")?.parse::<i64>().ok().filter(|id| *id > 0).map(PostId)
}

fn truncate(s: &str) -> String {
    s.chars().take(100).collect()
}

/// A token bucket: `rate` messages per second, bursts of up to `burst`.
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(rate: f64, burst: f64) -> Self {
        Self { rate, burst, tokens: burst, at: Instant::now() }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_groups_parse_positive_ids_only() {
        assert_eq!(parse_post_group("post.42"), Some(PostId(42)));
        assert_eq!(parse_post_group("post.0"), None);
        assert_eq!(parse_post_group("post.x"), None);
        assert_eq!(parse_post_group("posts.1"), None);
    }

    #[test]
    fn token_bucket_allows_bursts_then_throttles() {
        let mut bucket = TokenBucket::new(1.0, 3.0);
        assert!(bucket.take() && bucket.take() && bucket.take());
        assert!(!bucket.take());
    }
}
