//! The live feed: the dispatcher that publishes committed outbox events, the WebSocket
//! endpoint and its sessions, presence, and stats.

mod dispatcher;
pub(crate) mod endpoint;
pub mod envelope;
mod origin;
mod presence;
pub mod protocol;
mod session;
pub(crate) mod stats;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use newspaper_domain::Seq;
use newspaper_persistence::CommitMark;
use tokio::sync::{Notify, Semaphore, SemaphorePermit, watch};

use crate::metrics::Metrics;

pub(crate) use dispatcher::forward_remote_wakes;
pub use dispatcher::{DispatchError, DispatchMode, Dispatcher};
pub(crate) use endpoint::blog_feed_socket;
pub use envelope::{BLOG_FEED_GROUP, FeedEnvelope, LayerMessage, post_group, user_group};
pub use origin::origin_allowed;
pub(crate) use presence::run_presence;
pub use stats::RealtimeStats;
pub(crate) use stats::realtime_stats;

/// Group through which instances sharing a layer wake each other's dispatcher after a commit.
pub(crate) const OUTBOX_WAKE_GROUP: &str = "newspaper.outbox";

/// Handle shared by handlers, sessions and background tasks of one instance.
#[derive(Clone, Debug)]
pub struct Realtime {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dispatch_wake: Notify,
    generation: AtomicU64,
    remote_wake: Option<Notify>,
    connections: AtomicUsize,
    presence: watch::Sender<usize>,
    /// Bumped whenever a stream joins the feed; see [`Realtime::next_presence_epoch`].
    presence_epoch: AtomicU64,
    presence_nudge: Notify,
    shutdown: watch::Sender<bool>,
    instance: String,
    /// Open streams per client address, for clients that are limited.
    streams_per_client: Mutex<HashMap<IpAddr, usize>>,
    max_streams_per_client: usize,
    /// Replays (outbox reads for `since`, gaps, rejoins) running at once, at most: replaying
    /// clients cannot take every database connection from API requests.
    replays: Semaphore,
    /// The outbox's oldest retained seq and its head, as read at a commit mark: while the
    /// database's mark stays there, a stream opens without reading them again (a storm of
    /// thousands of connections costs no query each).
    history: Mutex<Option<(CommitMark, Seq, Seq)>>,
    metrics: Arc<Metrics>,
}

/// Limits of the live feed held by [`Realtime`].
#[derive(Debug, Clone, Copy)]
pub struct FeedLimits {
    /// Open streams per client address (0: no limit); loopback clients are never limited.
    pub max_streams_per_client: usize,
    /// Outbox reads for replays running at once.
    pub concurrent_replays: usize,
}

impl Default for FeedLimits {
    fn default() -> Self {
        Self { max_streams_per_client: 0, concurrent_replays: 4 }
    }
}

impl Realtime {
    /// A handle for instance `instance`; `shared_layer` when other instances share the layer
    /// (their dispatchers must hear about our commits).
    pub fn new(instance: String, shared_layer: bool) -> Self {
        Self::with_limits(instance, shared_layer, FeedLimits::default())
    }

    /// [`Realtime::new`] with the given limits.
    pub fn with_limits(instance: String, shared_layer: bool, limits: FeedLimits) -> Self {
        Self {
            inner: Arc::new(Inner {
                dispatch_wake: Notify::new(),
                generation: AtomicU64::new(0),
                remote_wake: shared_layer.then(Notify::new),
                connections: AtomicUsize::new(0),
                presence: watch::Sender::new(0),
                presence_epoch: AtomicU64::new(0),
                presence_nudge: Notify::new(),
                shutdown: watch::Sender::new(false),
                instance,
                streams_per_client: Mutex::new(HashMap::new()),
                max_streams_per_client: limits.max_streams_per_client,
                replays: Semaphore::new(limits.concurrent_replays.max(1)),
                history: Mutex::new(None),
                metrics: Arc::new(Metrics::new()),
            }),
        }
    }

    /// This instance's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Counts a new stream of `client` against its limit; `None` when it has too many open.
    pub(crate) fn admit(&self, client: IpAddr) -> Option<ClientSlot> {
        let max = self.inner.max_streams_per_client;
        if max == 0 || client.is_loopback() {
            return Some(ClientSlot { realtime: self.clone(), client: None });
        }
        let mut counts =
            self.inner.streams_per_client.lock().unwrap_or_else(PoisonError::into_inner);
        let open = counts.entry(client).or_default();
        if *open >= max {
            return None;
        }
        *open += 1;
        Some(ClientSlot { realtime: self.clone(), client: Some(client) })
    }

    /// The most streams one client may have open.
    pub(crate) fn max_streams_per_client(&self) -> usize {
        self.inner.max_streams_per_client
    }

    /// Waits for a turn to read the outbox for a replay.
    pub(crate) async fn replay_permit(&self) -> Option<SemaphorePermit<'_>> {
        self.inner.replays.acquire().await.ok()
    }

    /// The outbox's oldest retained seq and head, if they were read at `mark`.
    pub(crate) fn history_at(&self, mark: CommitMark) -> Option<(Seq, Seq)> {
        let history = self.inner.history.lock().unwrap_or_else(PoisonError::into_inner);
        history.filter(|(at, ..)| *at == mark).map(|(_, pruned, head)| (pruned, head))
    }

    /// Keeps the outbox's oldest retained seq and head, read after `mark` was.
    pub(crate) fn keep_history_at(&self, mark: CommitMark, pruned: Seq, head: Seq) {
        *self.inner.history.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((mark, pruned, head));
    }

    /// Tells the dispatcher (here and, with a shared layer, on every instance) that an outbox
    /// event was committed.
    pub fn committed(&self) {
        self.content_changed();
        self.inner.dispatch_wake.notify_one();
        if let Some(remote) = &self.inner.remote_wake {
            remote.notify_one();
        }
    }

    /// Counts a change to the posts (here or on another instance), invalidating cached pages.
    pub fn content_changed(&self) {
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// How many changes this instance has heard of; cached pages are only valid for one value.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// Starts a graceful shutdown: sessions close with 1001, background tasks stop.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    /// WebSocket connections open on this instance.
    pub fn connections(&self) -> usize {
        self.inner.connections.load(Ordering::Relaxed)
    }

    /// This instance's name.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// The current `blog_feed` presence count.
    pub fn presence(&self) -> usize {
        *self.inner.presence.borrow()
    }

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }

    /// Marks a stream's joining the feed. Presence counts taken at an earlier epoch may not
    /// include it, so the stream ignores them (it has sent its own, fresh count).
    pub(crate) fn next_presence_epoch(&self) -> u64 {
        self.inner.presence_epoch.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The epoch a presence count is about to be taken at.
    pub(crate) fn presence_epoch(&self) -> u64 {
        self.inner.presence_epoch.load(Ordering::Acquire)
    }

    pub(crate) fn nudge_presence(&self) {
        self.inner.presence_nudge.notify_one();
    }

    pub(crate) fn connection_opened(&self) -> ConnectionGuard {
        self.inner.connections.fetch_add(1, Ordering::Relaxed);
        self.nudge_presence();
        ConnectionGuard { realtime: self.clone() }
    }
}

/// Counts a connection for as long as it lives, however its session ends.
pub(crate) struct ConnectionGuard {
    realtime: Realtime,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.realtime.inner.connections.fetch_sub(1, Ordering::Relaxed);
        self.realtime.nudge_presence();
    }
}

/// One open stream counted against its client's limit, for as long as it lives.
pub(crate) struct ClientSlot {
    realtime: Realtime,
    client: Option<IpAddr>,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let Some(client) = self.client else { return };
        let mut counts =
            self.realtime.inner.streams_per_client.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = counts.get_mut(&client) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                counts.remove(&client);
            }
        }
    }
}
