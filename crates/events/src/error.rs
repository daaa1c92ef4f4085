//! The one error type of the channel layer.

/// What can go wrong talking to a channel layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayerError {
    /// A group or channel name breaks the naming rules.
    #[error("invalid name {0:?}: use 1-99 ASCII letters, digits, '-', '_' or '.'")]
    InvalidName(String),
    /// The channel's buffer was full; it is now lagging and receives nothing more.
    #[error("channel is full; its receiver is lagging")]
    ChannelFull,
    /// The backing service (Redis) cannot be reached right now.
    #[error("channel layer unavailable: {0}")]
    Unavailable(String),
    /// A message on the layer could not be decoded.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The layer was shut down.
    #[error("channel layer closed")]
    Closed,
}
