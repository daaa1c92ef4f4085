//! Publishes committed outbox events to the channel layer, in seq order, exactly once per
//! cursor advance; resumes from the persisted cursor after a restart, so a crash between
//! commit and publish loses nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use newspaper_domain::{Change, Seq, now};
use newspaper_events::{ChannelLayer, GroupName, LayerError};
use newspaper_persistence::{Database, OutboxRepository, PersistenceError, RefreshTokenRepository};

use super::envelope::{BLOG_FEED_GROUP, FeedEnvelope, LayerMessage, post_group, user_group};
use super::{OUTBOX_WAKE_GROUP, Realtime};
use crate::settings::RealtimeSettings;

/// Events read and published per round, at most; see [`Dispatcher::batch`].
const MAX_BATCH: i64 = 256;
/// Pause between rounds while working through a backlog, so that sessions drain their queues
/// instead of overflowing.
const BACKLOG_PAUSE: Duration = Duration::from_millis(5);
/// How often the cursor is written back while publishing: a crash republishes at most this
/// much (streams drop duplicates by seq), and writers are not slowed by a write per batch.
const PERSIST_EVERY: Duration = Duration::from_millis(200);
/// How often old history and expired blacklist entries are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Why a dispatcher round failed (it is retried with backoff either way).
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The outbox could not be read or the cursor written.
    #[error("the outbox could not be read or its cursor written")]
    Database(#[from] PersistenceError),
    /// The channel layer refused an event.
    #[error("the channel layer refused an event")]
    Layer(#[from] LayerError),
}

/// Who may publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DispatchMode {
    /// This instance alone (in-memory layer): always publish.
    Exclusive,
    /// Several instances share the outbox and the layer: publish only while holding the
    /// lease recorded in the database under this instance name.
    Leased {
        /// This instance's name in the lease.
        instance: String,
    },
}

/// The background task that turns outbox rows into layer messages.
pub struct Dispatcher {
    db: Database,
    layer: Arc<dyn ChannelLayer>,
    realtime: Realtime,
    mode: DispatchMode,
    settings: RealtimeSettings,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").field("mode", &self.mode).finish_non_exhaustive()
    }
}

struct State {
    /// The last seq handed to the layer by this instance; `None` until read from the database.
    cursor: Option<Seq>,
    /// The last post event handed to the layer (revocations are not part of the feed's chain
    /// of `prev_seq`); `None` until the cursor is read.
    prev_post: Option<Seq>,
    leader: bool,
    lease_renewed: Option<Instant>,
    last_prune: Instant,
    /// The cursor as last written to the database, and when.
    persisted: Option<(Seq, Instant)>,
}

impl Dispatcher {
    /// A dispatcher; call [`Dispatcher::run`] to start it.
    pub fn new(
        db: Database,
        layer: Arc<dyn ChannelLayer>,
        realtime: Realtime,
        mode: DispatchMode,
        settings: RealtimeSettings,
    ) -> Self {
        Self { db, layer, realtime, mode, settings }
    }

    /// Runs until shutdown. Failures (database or broker down) are retried with backoff; the
    /// cursor only advances past events the layer accepted.
    pub async fn run(self) {
        let mut shutdown = self.realtime.shutdown_signal();
        let wake_group = GroupName::new(OUTBOX_WAKE_GROUP).ok();
        let mut remote_wake = match (&self.mode, &wake_group) {
            (DispatchMode::Leased { .. }, Some(group)) => self.join_wake_group(group).await,
            _ => None,
        };
        let mut state = State {
            cursor: None,
            prev_post: None,
            leader: self.mode == DispatchMode::Exclusive,
            lease_renewed: None,
            last_prune: Instant::now(),
            persisted: None,
        };
        let mut backoff = Duration::from_millis(50);
        loop {
            if *shutdown.borrow() {
                break;
            }
            let round = self.round(&mut state).await;
            let reached = !matches!(
                &round,
                Err(DispatchError::Database(
                    PersistenceError::Unavailable { .. } | PersistenceError::TimedOut
                ))
            );
            self.realtime.metrics().database_up.set(i64::from(reached));
            let pause = match round {
                Ok(published) if published >= self.batch() as usize => BACKLOG_PAUSE,
                Ok(_) => {
                    backoff = Duration::from_millis(50);
                    if state.leader {
                        self.settings.dispatch_poll_interval
                    } else {
                        self.settings.dispatch_lease / 3
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %crate::error::chain(&err), retry_in = ?backoff, "dispatcher round failed");
                    let wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    wait
                }
            };
            if pause == BACKLOG_PAUSE {
                tokio::time::sleep(pause).await;
                continue;
            }
            tokio::select! {
                _ = self.realtime.inner.dispatch_wake.notified() => {}
                woke = async {
                    match remote_wake.as_mut() {
                        Some(rx) => rx.recv().await.map(|_| ()),
                        None => std::future::pending().await,
                    }
                } => {
                    // Another instance committed: pages cached here may be out of date.
                    self.realtime.content_changed();
                    match (woke, remote_wake.as_mut()) {
                        (Ok(()), Some(rx)) => {
                            // Bursts coalesce into one round.
                            let mut burst = Vec::new();
                            rx.drain_ready(&mut burst, usize::MAX);
                        }
                        (Ok(()), None) | (Err(newspaper_events::RecvError::Interrupted), _) => {}
                        (Err(_), _) => {
                            // The wake channel overflowed or closed: join again with a new one.
                            if let Some(group) = &wake_group {
                                remote_wake = self.join_wake_group(group).await;
                            }
                        }
                    }
                }
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => {}
            }
        }
        if state.leader {
            if let Err(err) = self.persist(&mut state).await {
                tracing::warn!(error = %crate::error::chain(&err), "could not save the dispatch cursor");
            }
        }
        if let DispatchMode::Leased { instance } = &self.mode {
            let instance = instance.clone();
            let released =
                self.db.write(move |conn| OutboxRepository::release_lease(conn, &instance)).await;
            if let Err(err) = released {
                tracing::warn!(error = %crate::error::chain(&err), "could not release the publishing lease");
            }
        }
        tracing::debug!("dispatcher stopped");
    }

    /// Half a session's buffer: a burst (a backlog after an outage, say) then reaches each
    /// session in pieces it can absorb, instead of overflowing every queue at once.
    fn batch(&self) -> i64 {
        i64::try_from(self.settings.channel_capacity / 2).unwrap_or(MAX_BATCH).clamp(1, MAX_BATCH)
    }

    async fn join_wake_group(
        &self,
        group: &GroupName,
    ) -> Option<newspaper_events::ChannelReceiver> {
        let rx = self.layer.new_channel().await.ok()?;
        self.layer.group_add(group, rx.name()).await.ok()?;
        Some(rx)
    }

    /// One round: keep or take the lease, publish one batch, prune now and then.
    async fn round(&self, state: &mut State) -> Result<usize, DispatchError> {
        if let DispatchMode::Leased { instance } = &self.mode {
            let due =
                state.lease_renewed.is_none_or(|t| t.elapsed() >= self.settings.dispatch_lease / 3);
            if due {
                let (who, ttl) = (instance.clone(), self.settings.dispatch_lease);
                let holds = self
                    .db
                    .write(move |conn| {
                        let t = now();
                        let until = t + chrono::Duration::from_std(ttl).unwrap_or_default();
                        OutboxRepository::acquire_lease(conn, &who, until, t)
                    })
                    .await?;
                if holds && !state.leader {
                    tracing::info!(instance = %instance, "took the publishing lease");
                    state.cursor = None;
                    state.prev_post = None;
                }
                state.leader = holds;
                state.lease_renewed = holds.then(Instant::now);
            }
        }
        if !state.leader {
            return Ok(0);
        }
        let published = self.publish_batch(state).await?;
        if state.last_prune.elapsed() >= PRUNE_EVERY {
            state.last_prune = Instant::now();
            self.prune().await?;
        }
        Ok(published)
    }

    async fn publish_batch(&self, state: &mut State) -> Result<usize, DispatchError> {
        let after = match state.cursor {
            Some(seq) => seq,
            None => self.db.read(OutboxRepository::state).await?.published,
        };
        state.cursor = Some(after);
        let batch = self.batch();
        let (events, head) = self
            .db
            .read(move |conn| {
                let events = OutboxRepository::list_after(conn, after, batch)?;
                Ok::<_, newspaper_persistence::PersistenceError>((
                    events,
                    OutboxRepository::latest_seq(conn)?,
                ))
            })
            .await?;
        let metrics = self.realtime.metrics();
        if events.is_empty() {
            metrics.outbox_backlog.set(head.0.saturating_sub(after.0).max(0));
            // Caught up: nothing committed is waiting, so nothing is late.
            metrics.dispatcher_lag.set(0.0);
            // Idle: a good moment to write back whatever was published since the last time.
            self.persist(state).await?;
            return Ok(0);
        }
        let feed = GroupName::new(BLOG_FEED_GROUP)?;
        let mut prev = state.prev_post.unwrap_or(after);
        for event in &events {
            if let Some(envelope) = FeedEnvelope::from_event(event, prev) {
                let post = GroupName::new(&post_group(envelope.post_id))?;
                let wire = LayerMessage::Feed(envelope).encode();
                self.layer.group_send(&feed, wire.clone()).await?;
                self.layer.group_send(&post, wire).await?;
                prev = event.seq;
            } else if let Change::CredentialsRevoked { user, .. } = &event.change {
                let wire = LayerMessage::<bytes::Bytes>::Revocation { seq: event.seq, user: *user }
                    .encode();
                self.layer.group_send(&GroupName::new(&user_group(*user))?, wire).await?;
            }
            state.cursor = Some(event.seq);
            state.prev_post = Some(prev);
            metrics.events_published.inc();
        }
        if let Some(last) = events.last() {
            let lag = (now() - last.created_at).num_milliseconds().max(0) as f64 / 1000.0;
            metrics.dispatcher_lag.set(lag);
            metrics.outbox_backlog.set(head.0.saturating_sub(last.seq.0).max(0));
        }
        if state.persisted.is_none_or(|(_, at)| at.elapsed() >= PERSIST_EVERY) {
            self.persist(state).await?;
        }
        Ok(events.len())
    }

    /// Writes the cursor back (if it moved), while this instance still leads.
    async fn persist(&self, state: &mut State) -> Result<(), DispatchError> {
        let Some(cursor) = state.cursor else { return Ok(()) };
        if state.persisted.is_some_and(|(seq, _)| seq == cursor) {
            return Ok(());
        }
        let leader = match &self.mode {
            DispatchMode::Exclusive => None,
            DispatchMode::Leased { instance } => Some(instance.clone()),
        };
        let still_leader = self
            .db
            .write(move |conn| OutboxRepository::mark_published(conn, cursor, leader.as_deref()))
            .await?;
        state.persisted = Some((cursor, Instant::now()));
        if !still_leader {
            tracing::warn!(
                "lost the publishing lease while publishing; another instance takes over"
            );
            state.leader = false;
            state.lease_renewed = None;
        }
        Ok(())
    }

    async fn prune(&self) -> Result<(), DispatchError> {
        let retention =
            chrono::Duration::from_std(self.settings.history_retention).unwrap_or_default();
        let keep = self.settings.history_min_events;
        let (events, tokens) = self
            .db
            .write(move |conn| {
                let t = now();
                let events = OutboxRepository::prune(conn, t - retention, keep)?;
                let tokens = RefreshTokenRepository::prune_expired(conn, t)?;
                Ok::<_, PersistenceError>((events, tokens))
            })
            .await?;
        if events + tokens > 0 {
            tracing::info!(events, tokens, "pruned history");
        }
        Ok(())
    }
}

/// Forwards local commits to the dispatchers of other instances, coalescing bursts into one
/// message.
pub(crate) async fn forward_remote_wakes(layer: Arc<dyn ChannelLayer>, realtime: Realtime) {
    let Some(remote) = realtime.inner.remote_wake.as_ref() else { return };
    let Ok(group) = GroupName::new(OUTBOX_WAKE_GROUP) else { return };
    let mut shutdown = realtime.shutdown_signal();
    loop {
        tokio::select! {
            _ = remote.notified() => {}
            _ = shutdown.changed() => return,
        }
        if let Err(err) = layer.group_send(&group, bytes::Bytes::new()).await {
            // Other instances still poll; a lost wake-up only delays them.
            if !matches!(err, LayerError::Closed) {
                tracing::debug!(error = %crate::error::chain(&err), "could not wake other dispatchers");
            }
        }
    }
}
