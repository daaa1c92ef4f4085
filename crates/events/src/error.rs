//! The one error type of the channel layer. A broker's error is kept as the source, never
//! flattened into the message, so a log line can show the whole chain.

use std::sync::Arc;

/// What can go wrong talking to a channel layer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LayerError {
    /// A group or channel name breaks the naming rules.
    #[error("invalid name {0:?}: use 1-99 ASCII letters, digits, '-', '_' or '.'")]
    InvalidName(String),
    /// The channel's buffer was full; it is now lagging and receives nothing more.
    #[error("channel is full; its receiver is lagging")]
    ChannelFull,
    /// The backing service (Redis) cannot be reached right now.
    #[error("channel layer unavailable: {reason}")]
    Unavailable {
        /// What happened, in our words.
        reason: String,
        /// The broker client's error, if there was one (shared: errors are cloned to every
        /// waiting caller).
        #[source]
        cause: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// The layer was shut down.
    #[error("channel layer closed")]
    Closed,
}

impl LayerError {
    /// [`LayerError::Unavailable`] with no underlying error.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        LayerError::Unavailable { reason: reason.into(), cause: None }
    }

    /// [`LayerError::Unavailable`] caused by `cause`.
    pub fn unavailable_because(
        reason: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        LayerError::Unavailable { reason: reason.into(), cause: Some(Arc::new(cause)) }
    }
}
