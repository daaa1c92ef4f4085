//! The groups a stream follows: the whole feed (`blog_feed`, joined at the handshake), single
//! posts (`post.<id>`), and, for an authenticated stream, its user's group (never offered).

use newspaper_domain::PostId;
use newspaper_events::GroupName;
use newspaper_persistence::PostRepository;

use super::FeedSession;
use super::close::Exit;
use super::position::Rejoin;
use crate::realtime::envelope::{BLOG_FEED_GROUP, post_group, user_group};
use crate::realtime::protocol::ServerFrame;

/// The post of a `post.<id>` group, in its one canonical spelling: a positive id in decimal
/// with no sign and no leading zero (`post.042` is not `post.42`; it is no group at all).
pub(super) fn parse_post_group(group: &str) -> Option<PostId> {
    let digits = group.strip_prefix("post.")?;
    let id = digits.parse::<i64>().ok().filter(|id| *id > 0)?;
    (id.to_string() == digits).then_some(PostId(id))
}

fn truncate(s: &str) -> String {
    s.chars().take(100).collect()
}

impl FeedSession {
    pub(super) async fn subscribe(&mut self, group: &str) -> Result<(), Exit> {
        if group == BLOG_FEED_GROUP {
            return self.rejoin_feed().await;
        }
        let Some(id) = parse_post_group(group) else {
            return self
                .send_error(&format!(
                    "Unknown group {:?}; use blog_feed or post.<id>, e.g. post.42.",
                    truncate(group)
                ))
                .await;
        };
        if !self.subscriptions.contains(&id) {
            if self.subscriptions.len() >= self.state.settings.realtime.max_subscriptions {
                return self.send_error("Too many subscriptions on this connection.").await;
            }
            let viewer = self.viewer();
            let visible = self
                .state
                .db
                .read(move |conn| PostRepository::find_visible_to(conn, &viewer, id))
                .await;
            match visible {
                Ok(Some(_)) => {}
                Ok(None) => return self.send_error(&format!("Post {} not found.", id.0)).await,
                Err(err) => {
                    tracing::warn!(error = %crate::error::chain(&err), "subscription check failed");
                    return self.send_error("Could not subscribe right now; retry.").await;
                }
            }
            let joined = match GroupName::new(group) {
                Ok(name) => self.state.layer.group_add(&name, self.receiver.name()).await,
                Err(err) => Err(err),
            };
            if let Err(err) = joined {
                tracing::warn!(error = %crate::error::chain(&err), "could not join a post group");
                return self.send_error("Could not subscribe right now; retry.").await;
            }
            self.state.realtime.metrics().joined("post");
            self.subscriptions.insert(id);
        }
        self.send_frame(&ServerFrame::Subscribed { group }).await
    }

    /// Comes back to the whole feed, first replaying what was missed while away.
    async fn rejoin_feed(&mut self) -> Result<(), Exit> {
        if !self.position.in_feed() {
            let joined = match GroupName::new(BLOG_FEED_GROUP) {
                Ok(feed) => self.state.layer.group_add(&feed, self.receiver.name()).await,
                Err(err) => Err(err),
            };
            if let Err(err) = joined {
                tracing::warn!(error = %crate::error::chain(&err), "could not rejoin the feed");
                return self.send_error("The feed is temporarily unavailable; retry.").await;
            }
            self.state.realtime.metrics().joined("blog_feed");
            self.presence_epoch = self.state.realtime.next_presence_epoch();
            self.state.realtime.nudge_presence();
            // Joined first, so nothing published from here on is missed; what is both in the
            // replay and in the queue is dropped as a duplicate.
            match self.position.rejoin() {
                Some(Rejoin::Replay { after, skip }) => {
                    Box::pin(self.replay(after, None, &skip)).await?;
                }
                Some(Rejoin::Resync { after }) => {
                    self.send_frame(&ServerFrame::ResyncRequired).await?;
                    Box::pin(self.replay(after, None, &[])).await?;
                }
                None => {}
            }
            self.position.rejoined();
            self.send_presence().await?;
        }
        self.send_frame(&ServerFrame::Subscribed { group: BLOG_FEED_GROUP }).await
    }

    pub(super) async fn unsubscribe(&mut self, group: &str) -> Result<(), Exit> {
        if group == BLOG_FEED_GROUP {
            if self.position.in_feed() {
                if let Ok(feed) = GroupName::new(BLOG_FEED_GROUP) {
                    let _ = self.state.layer.group_discard(&feed, self.receiver.name()).await;
                }
                self.position.leave();
                self.state.realtime.metrics().left("blog_feed");
                self.state.realtime.nudge_presence();
            }
        } else if let Some(id) = parse_post_group(group) {
            if self.subscriptions.remove(&id) {
                if let Ok(name) = GroupName::new(group) {
                    let _ = self.state.layer.group_discard(&name, self.receiver.name()).await;
                }
                self.state.realtime.metrics().left("post");
            }
        } else {
            return self.send_error(&format!("Unknown group {:?}.", truncate(group))).await;
        }
        self.send_frame(&ServerFrame::Unsubscribed { group }).await
    }

    /// Renews every membership before it expires.
    pub(super) async fn renew_memberships(&mut self) {
        self.renewed = std::time::Instant::now();
        let mut groups: Vec<String> = self.subscriptions.iter().map(|id| post_group(*id)).collect();
        if self.position.in_feed() {
            groups.push(BLOG_FEED_GROUP.to_owned());
        }
        if let Some(user) = self.user_id() {
            groups.push(user_group(user));
        }
        for group in groups.iter().filter_map(|g| GroupName::new(g).ok()) {
            if let Err(err) = self.state.layer.group_add(&group, self.receiver.name()).await {
                tracing::warn!(error = %crate::error::chain(&err), group = %group, "could not renew membership");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_groups_have_one_spelling() {
        assert_eq!(parse_post_group("post.42"), Some(PostId(42)));
        for bad in
            ["post.042", "post.+42", "post.0", "post.-1", "post.x", "posts.1", "post.", "post.4 "]
        {
            assert_eq!(parse_post_group(bad), None, "{bad}");
        }
    }
}
