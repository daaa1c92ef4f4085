//! The channel layer contract, after the Django Channels layer specification, typed and async.

use std::time::Duration;

use async_trait::async_trait;

use crate::{ChannelName, ChannelReceiver, GroupName, LayerError, Message};

/// Tunables every layer honours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerConfig {
    /// Messages a channel buffers before it is declared lagging (Channels' `capacity`).
    pub capacity: usize,
    /// How long a group membership lasts unless renewed by another `group_add` (Channels'
    /// `group_expiry`). Bounds how long a member that vanished without `group_discard` (a
    /// crashed process) is counted and sent to.
    pub group_expiry: Duration,
}

impl Default for LayerConfig {
    fn default() -> Self {
        Self { capacity: 100, group_expiry: Duration::from_secs(86_400) }
    }
}

/// Counters of a layer's trouble with its broker, for metrics: they only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerStats {
    /// Times the connection to the broker was lost and made again.
    pub reconnects: u64,
    /// Broker commands that failed (publish, subscribe, report), and failed connection
    /// attempts.
    pub errors: u64,
}

/// A channel layer: named channels with one receiver each, and named groups of channels that
/// can be sent to as one.
///
/// # Delivery guarantee
///
/// - **At most once, in order.** Messages one caller sends to a channel or group arrive at each
///   receiver in the order sent, each at most once.
/// - **Never blocks on a receiver, never grows without bound.** Every channel buffers at most
///   [`LayerConfig::capacity`] messages. Sending to a full channel does not wait: the channel is
///   marked *lagging*, its buffer is freed, it receives nothing more, and its receiver gets
///   [`RecvError::Lagged`](crate::RecvError::Lagged). `send` reports this as
///   [`LayerError::ChannelFull`]; `group_send` skips the member and carries on with the rest.
/// - **Losses are announced.** Where a layer depends on a broker connection (Redis), a receiver
///   gets [`RecvError::Interrupted`](crate::RecvError::Interrupted) after the connection dropped
///   and came back, because messages may have been lost in between. Consumers are expected to
///   keep a durable source of truth (the newspaper's outbox) and catch up from it.
/// - **Memberships expire** after [`LayerConfig::group_expiry`] unless renewed, and end when the
///   channel's receiver is dropped, whichever comes first.
/// - **Channels belong to the process that created them**: `group_add` and `group_discard` must
///   be called on the layer value that returned the receiver. `send` and `group_send` work from
///   any process sharing the layer.
///
/// Names are validated by [`GroupName::new`] and [`ChannelName::new`].
#[async_trait]
pub trait ChannelLayer: Send + Sync + 'static {
    /// Creates a channel owned by this process; messages sent to its name arrive on the
    /// receiver.
    async fn new_channel(&self) -> Result<ChannelReceiver, LayerError>;

    /// Sends one message to one channel. A channel that no longer exists silently drops it,
    /// as in Channels; a full one becomes lagging and the call fails with `ChannelFull`.
    async fn send(&self, channel: &ChannelName, message: Message) -> Result<(), LayerError>;

    /// Adds a channel to a group, or renews its membership. Once it returns, messages sent to
    /// the group from any process reach the channel (while a broker-backed layer is cut off from
    /// its broker, from when it reconnects: its receivers are then told `Interrupted`).
    async fn group_add(&self, group: &GroupName, channel: &ChannelName) -> Result<(), LayerError>;

    /// Removes a channel from a group; removing a non-member is not an error.
    async fn group_discard(
        &self,
        group: &GroupName,
        channel: &ChannelName,
    ) -> Result<(), LayerError>;

    /// Sends one message to every member of a group, on every process. Returns once the
    /// message is handed on (queued locally, published to the broker), never waiting for a
    /// receiver.
    async fn group_send(&self, group: &GroupName, message: Message) -> Result<(), LayerError>;

    /// Offers a message to this process's members of the group only, for information that is
    /// per process anyway (each process computes the same presence count, say). Never blocks,
    /// never fails.
    fn broadcast_local(&self, group: &GroupName, message: Message);

    /// How many channels are members of the group, across every process sharing the layer.
    async fn group_size(&self, group: &GroupName) -> Result<usize, LayerError>;

    /// The groups with members on this process and how many local members each has.
    fn local_groups(&self) -> Vec<(GroupName, usize)>;

    /// The tunables this layer runs with.
    fn config(&self) -> &LayerConfig;

    /// Resolves once the layer can deliver messages (a broker-backed layer has subscribed);
    /// fails if that does not happen soon. Sends before then may be lost.
    async fn ready(&self) -> Result<(), LayerError> {
        Ok(())
    }

    /// Counters of broker trouble (zero for a layer without a broker).
    fn stats(&self) -> LayerStats {
        LayerStats::default()
    }

    /// Shuts the layer down: every receiver of this process gets `RecvError::Closed`.
    async fn close(&self);
}
