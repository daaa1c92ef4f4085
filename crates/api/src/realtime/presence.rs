//! Presence: how many streams follow `blog_feed`, recomputed after local joins and leaves (and
//! periodically, for other instances' clients), published at most once per interval.

use std::sync::Arc;
use std::time::Duration;

use newspaper_events::{ChannelLayer, GroupName};

use super::Realtime;
use super::envelope::{BLOG_FEED_GROUP, LayerMessage};
use super::protocol::ServerFrame;

/// How often the count is re-read even without local changes (other instances' clients,
/// expired memberships).
const RECHECK: Duration = Duration::from_secs(1);

/// Runs until shutdown, keeping [`Realtime::presence`] current.
pub(crate) async fn run_presence(
    layer: Arc<dyn ChannelLayer>,
    realtime: Realtime,
    interval: Duration,
) {
    let Ok(feed) = GroupName::new(BLOG_FEED_GROUP) else { return };
    let mut shutdown = realtime.shutdown_signal();
    loop {
        let epoch = realtime.presence_epoch();
        match layer.group_size(&feed).await {
            Ok(count) => {
                let changed = realtime.inner.presence.send_if_modified(|current| {
                    let changed = *current != count;
                    *current = count;
                    changed
                });
                if changed {
                    // Through each stream's own queue: no shared lock for every socket to take.
                    let frame = ServerFrame::Presence { group: BLOG_FEED_GROUP, count }.to_text();
                    let message = LayerMessage::Presence { epoch, frame: frame.into_bytes() };
                    layer.broadcast_local(&feed, message.encode());
                }
            }
            Err(err) => {
                tracing::debug!(error = %crate::error::chain(&err), "presence count unavailable")
            }
        }
        // Coalesce: whatever happens during the interval yields one update after it.
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        tokio::select! {
            _ = realtime.inner.presence_nudge.notified() => {}
            _ = tokio::time::sleep(RECHECK) => {}
            _ = shutdown.changed() => return,
        }
    }
}
