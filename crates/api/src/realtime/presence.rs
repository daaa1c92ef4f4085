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
/// Presence frames one instance sends per second at most, all its streams together. During a
/// storm of connections the count changes all the time, and sending it to every stream at the
/// configured interval cost as much CPU as the storm itself (with 10,000 streams, 40,000
/// frames a second).
const MAX_FRAMES_PER_SECOND: f64 = 10_000.0;

/// The pause between two counts: the configured interval, or longer with so many streams that
/// a count sent to them all at that interval would exceed [`MAX_FRAMES_PER_SECOND`].
fn pause(interval: Duration, streams: usize) -> Duration {
    interval.max(Duration::from_secs_f64(streams as f64 / MAX_FRAMES_PER_SECOND))
}

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
            _ = tokio::time::sleep(pause(interval, realtime.connections())) => {}
            _ = shutdown.changed() => return,
        }
        tokio::select! {
            _ = realtime.inner.presence_nudge.notified() => {}
            _ = tokio::time::sleep(RECHECK) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_paced_by_the_interval_and_by_the_frames_they_cost() {
        let interval = Duration::from_millis(250);
        assert_eq!(pause(interval, 0), interval);
        assert_eq!(pause(interval, 2_500), interval, "4 counts a second to 2,500 streams");
        assert_eq!(pause(interval, 10_000), Duration::from_secs(1));
        assert_eq!(pause(interval, 50_000), Duration::from_secs(5));
    }
}
