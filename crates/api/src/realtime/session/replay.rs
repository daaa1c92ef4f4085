//! Reading the outbox for a stream: a replay from `since`, a gap that live delivery skipped,
//! a catch-up after lost messages, the events missed while away from the feed.

use newspaper_domain::{Change, Seq, StoredEvent};
use newspaper_persistence::OutboxRepository;

use super::FeedSession;
use super::close::Exit;

/// Events read from the outbox per query while replaying.
const REPLAY_BATCH: i64 = 500;

impl FeedSession {
    /// Sends the retained events with `after < seq < before` (no upper bound without
    /// `before`) that this stream follows, as its viewer sees them, except those in `skip`
    /// (sorted: already delivered). Revocations of this stream's user are checked on the way.
    pub(super) async fn replay(
        &mut self,
        after: Seq,
        before: Option<Seq>,
        skip: &[Seq],
    ) -> Result<(), Exit> {
        let until = before.unwrap_or(Seq(i64::MAX));
        let mut from = after;
        self.state.realtime.metrics().replays.inc();
        loop {
            let events: Vec<StoredEvent> = {
                // A bounded number of replays read at once; the rest wait their turn.
                let _turn = self.state.realtime.replay_permit().await;
                self.state
                    .db
                    .read(move |conn| {
                        OutboxRepository::list_between(conn, from, until, REPLAY_BATCH)
                    })
                    .await
                    .map_err(|e| {
                        tracing::warn!(error = %crate::error::chain(&e), "replay failed");
                        Exit::history_unavailable()
                    })?
            };
            let done = (events.len() as i64) < REPLAY_BATCH;
            for event in &events {
                from = event.seq;
                let sent = match &event.change {
                    Change::Post(change) => {
                        let wanted =
                            self.follows(change.post_id) && skip.binary_search(&event.seq).is_err();
                        let audience = self.viewer().audience_for(change.author_id);
                        match event.feed_event(audience).filter(|_| wanted) {
                            Some(feed_event) => {
                                let text = serde_json::to_string(&feed_event).map_err(|e| {
                                    Exit::close(actix_ws::CloseCode::Error, e.to_string())
                                })?;
                                self.send_text(&text).await?;
                                let metrics = self.state.realtime.metrics();
                                metrics.events_delivered.with_label_values(&["replay"]).inc();
                                true
                            }
                            None => false,
                        }
                    }
                    Change::CredentialsRevoked { user, .. } => {
                        if self.user_id() == Some(*user) {
                            self.check_rights().await?;
                        }
                        false
                    }
                };
                self.position.advance(event.seq, sent);
            }
            if done {
                return Ok(());
            }
        }
    }
}
