//! Presence: how many streams follow `blog_feed`, recomputed an interval after local joins and
//! leaves (and periodically, for other instances' clients), published at most once per interval.

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
        let paced = pause(interval, realtime.connections());
        tokio::select! {
            _ = realtime.inner.presence_nudge.notified() => {
                // Counted an interval after the change, not as it happens: the joins and
                // leaves of a burst (a deploy's reconnections, a crowd leaving at once) then
                // yield one update to every stream after the burst, not one as it begins and
                // another after it, while the burst's own streams still need the CPU.
                tokio::select! {
                    _ = tokio::time::sleep(paced) => {}
                    _ = shutdown.changed() => return,
                }
            }
            _ = tokio::time::sleep(RECHECK.max(paced)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use newspaper_events::InMemoryChannelLayer;

    use super::*;

    /// The count a presence message on the layer carries.
    fn count_in(message: &[u8]) -> u64 {
        let Ok(LayerMessage::Presence { frame, .. }) = LayerMessage::decode(message) else {
            panic!("not a presence message: {message:?}");
        };
        let frame: serde_json::Value = serde_json::from_slice(frame).expect("a JSON frame");
        frame["count"].as_u64().expect("a count")
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_joins_after_a_quiet_spell_is_counted_once_an_interval_after_it_began() {
        let layer: Arc<dyn ChannelLayer> = Arc::new(InMemoryChannelLayer::default());
        let realtime = Realtime::new("presence-test".into(), false);
        let feed = GroupName::new(BLOG_FEED_GROUP).expect("a group name");
        let interval = Duration::from_millis(250);
        let task = tokio::spawn(run_presence(layer.clone(), realtime.clone(), interval));
        let join = || async {
            let channel = layer.new_channel().await.expect("a channel");
            layer.group_add(&feed, channel.name()).await.expect("joined");
            realtime.nudge_presence();
            channel
        };
        let mut watcher = join().await;
        assert_eq!(count_in(&watcher.recv().await.expect("a count")), 1);

        tokio::time::sleep(Duration::from_secs(10)).await;
        let began = tokio::time::Instant::now();
        let mut crowd = Vec::new();
        for _ in 0..3 {
            crowd.push(join().await);
            tokio::time::sleep(interval / 5).await;
        }
        let update = watcher.recv().await.expect("a count");
        assert_eq!(count_in(&update), 4, "the burst's first join was counted on its own");
        assert!(began.elapsed() >= interval, "counted {:?} after the burst began", began.elapsed());

        drop(crowd);
        realtime.nudge_presence();
        assert_eq!(count_in(&watcher.recv().await.expect("a count")), 1, "the crowd left");
        realtime.shutdown();
        task.await.expect("the presence task ends at shutdown");
    }

    #[test]
    fn counts_are_paced_by_the_interval_and_by_the_frames_they_cost() {
        let interval = Duration::from_millis(250);
        assert_eq!(pause(interval, 0), interval);
        assert_eq!(pause(interval, 2_500), interval, "4 counts a second to 2,500 streams");
        assert_eq!(pause(interval, 10_000), Duration::from_secs(1));
        assert_eq!(pause(interval, 50_000), Duration::from_secs(5));
    }
}
