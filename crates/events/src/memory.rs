//! The in-process channel layer: everything in memory, nothing to run.

use std::sync::Arc;

use async_trait::async_trait;

use crate::hub::Hub;
use crate::names::random_prefix;
use crate::{
    ChannelLayer, ChannelName, ChannelReceiver, GroupName, LayerConfig, LayerError, Message,
};

/// A channel layer inside one process, for a single server instance (the default).
///
/// Cheap to clone; clones share the same channels and groups. Sends never block and never
/// copy the message: every member gets the same reference-counted bytes.
#[derive(Clone)]
pub struct InMemoryChannelLayer {
    hub: Arc<Hub>,
}

impl std::fmt::Debug for InMemoryChannelLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryChannelLayer").field("config", self.hub.config()).finish()
    }
}

impl InMemoryChannelLayer {
    /// A new, empty layer.
    pub fn new(config: LayerConfig) -> Self {
        Self { hub: Hub::new(config, random_prefix("memory"), None) }
    }
}

impl Default for InMemoryChannelLayer {
    fn default() -> Self {
        Self::new(LayerConfig::default())
    }
}

#[async_trait]
impl ChannelLayer for InMemoryChannelLayer {
    async fn new_channel(&self) -> Result<ChannelReceiver, LayerError> {
        Ok(self.hub.new_channel())
    }

    async fn send(&self, channel: &ChannelName, message: Message) -> Result<(), LayerError> {
        self.hub.send(channel, message)
    }

    async fn group_add(&self, group: &GroupName, channel: &ChannelName) -> Result<(), LayerError> {
        self.hub.add(group, channel)
    }

    async fn group_discard(
        &self,
        group: &GroupName,
        channel: &ChannelName,
    ) -> Result<(), LayerError> {
        self.hub.discard(group, channel);
        Ok(())
    }

    async fn group_send(&self, group: &GroupName, message: Message) -> Result<(), LayerError> {
        self.hub.fan_out(group, &message);
        Ok(())
    }

    fn broadcast_local(&self, group: &GroupName, message: Message) {
        self.hub.fan_out(group, &message);
    }

    async fn group_size(&self, group: &GroupName) -> Result<usize, LayerError> {
        Ok(self.hub.local_size(group))
    }

    fn local_groups(&self) -> Vec<(GroupName, usize)> {
        self.hub.local_groups()
    }

    fn config(&self) -> &LayerConfig {
        self.hub.config()
    }

    async fn close(&self) {
        self.hub.close_all();
    }
}
