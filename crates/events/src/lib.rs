//! The channel layer of the newspaper service: named channels and groups with bounded,
//! lag-aware delivery, after the Django Channels layer specification.
//!
//! Use it on its own in any tokio service that fans messages out to groups of connections —
//! chat rooms (`examples/rooms.rs`), notifications, game lobbies: in one process
//! ([`InMemoryChannelLayer`]) or across processes through Redis ([`RedisChannelLayer`], feature
//! `redis`, on by default). Nothing here knows about HTTP, posts or the newspaper: messages
//! are opaque bytes.
//!
//! ```
//! use bytes::Bytes;
//! use newspaper_events::{ChannelLayer, GroupName, InMemoryChannelLayer, LayerConfig, RecvError};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let layer = InMemoryChannelLayer::new(LayerConfig { capacity: 2, ..LayerConfig::default() });
//! let feed = GroupName::new("blog_feed")?;
//!
//! let mut alice = layer.new_channel().await?;
//! let mut bob = layer.new_channel().await?;
//! layer.group_add(&feed, alice.name()).await?;
//! layer.group_add(&feed, bob.name()).await?;
//! assert_eq!(layer.group_size(&feed).await?, 2);
//!
//! // Serialized once, shared by every member.
//! layer.group_send(&feed, Bytes::from_static(b"{\"event\":\"post_created\"}")).await?;
//! assert_eq!(alice.recv().await?, Bytes::from_static(b"{\"event\":\"post_created\"}"));
//!
//! // Bob never reads: once his buffer of 2 overflows he is dropped, and told so.
//! layer.group_send(&feed, Bytes::from_static(b"2")).await?;
//! layer.group_send(&feed, Bytes::from_static(b"3")).await?;
//! assert_eq!(bob.recv().await, Err(RecvError::Lagged));
//! assert_eq!(layer.group_size(&feed).await?, 1);
//!
//! drop(alice); // leaving is automatic
//! assert_eq!(layer.group_size(&feed).await?, 0);
//! # Ok(())
//! # }
//! ```

mod channel;
mod error;
mod hub;
mod layer;
mod memory;
mod names;
#[cfg(feature = "redis")]
mod redis_layer;

pub use channel::{ChannelReceiver, Message, RecvError};
pub use error::LayerError;
pub use layer::{ChannelLayer, LayerConfig, LayerStats};
pub use memory::InMemoryChannelLayer;
pub use names::{ChannelName, GroupName, MAX_NAME_LEN};
#[cfg(feature = "redis")]
pub use redis_layer::{RedisChannelLayer, RedisOptions};
