//! The Redis channel layer: the same local hub as the in-memory layer, joined to other
//! processes through Redis pub/sub.
//!
//! - **One subscription per process per group.** A process subscribes to a group's Redis channel
//!   when the group gets its first local member and unsubscribes when it loses its last; a
//!   message arriving from Redis is fanned out locally, as the same bytes, to every member.
//! - **Direct sends** to another process's channel go through that process's inbox channel.
//! - **Group sizes** are global: each process reports its live local counts to a Redis hash and
//!   keeps a short-lived liveness key fresh; counts of processes whose key expired (a crashed
//!   instance) are dropped.
//! - **Outages.** Sends fail with [`LayerError::Unavailable`] while Redis is unreachable, so a
//!   publisher with a durable source (the outbox) retries. The subscription reconnects with
//!   backoff and re-subscribes; every local receiver then gets
//!   [`RecvError::Interrupted`](crate::RecvError::Interrupted), because messages published in the
//!   meantime are gone from pub/sub.
//!
//! Keys used, under the namespace `NS`: channels `NS:g:<group>` and `NS:i:<process>`, hashes
//! `NS:m:<group>` and liveness keys `NS:a:<process>`. Group sizes are computed by a Lua script
//! that reads liveness keys, so a Redis Cluster is not supported.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{mpsc, watch};

use crate::hub::{Hub, MembershipChange};
use crate::names::random_prefix;
use crate::{
    ChannelLayer, ChannelName, ChannelReceiver, GroupName, LayerConfig, LayerError, LayerStats,
    Message,
};

/// How often this process reports its group sizes and renews its liveness key.
const REPORT_EVERY: Duration = Duration::from_millis(250);

/// Sums the counts of live processes other than the caller, forgetting dead ones.
const GROUP_SIZE_SCRIPT: &str = r"
local total = 0
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local process = entries[i]
  if process ~= ARGV[2] then
    if redis.call('EXISTS', ARGV[1] .. process) == 1 then
      total = total + tonumber(entries[i + 1])
    else
      redis.call('HDEL', KEYS[1], process)
    end
  end
end
return total
";

/// Where and how the layer keeps its state in Redis.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Prefix of every key and channel; processes share a layer when they share it.
    pub namespace: String,
    /// How long a process counts after it last reported: bounds how long a crashed instance's
    /// members are counted.
    pub process_ttl: Duration,
    /// How long one Redis command may take before the layer reports it unavailable.
    pub command_timeout: Duration,
    /// For `rediss://`: the certificate authority (PEM) to trust instead of the system's, for
    /// a Redis whose certificate a private CA signed.
    pub tls_root_ca: Option<Vec<u8>>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            namespace: "newspaper".into(),
            process_ttl: Duration::from_secs(5),
            command_timeout: Duration::from_secs(2),
            tls_root_ca: None,
        }
    }
}

struct Shared {
    hub: Arc<Hub>,
    options: RedisOptions,
    publisher: ConnectionManager,
    /// Groups whose Redis subscription is confirmed: only those count as joined.
    subscribed: Mutex<HashSet<GroupName>>,
    /// Bumped whenever `subscribed` changes, for joins waiting on their confirmation.
    subscriptions: watch::Sender<u64>,
    /// Whether the subscription connection is up (and subscribed to this process's inbox).
    ready: watch::Sender<bool>,
    shutdown: watch::Sender<bool>,
    reconnects: AtomicU64,
    errors: AtomicU64,
}

impl Shared {
    fn group_channel(&self, group: &GroupName) -> String {
        format!("{}:g:{}", self.options.namespace, group.as_str())
    }

    fn inbox(&self, process: &str) -> String {
        format!("{}:i:{process}", self.options.namespace)
    }

    fn members_key(&self, group: &GroupName) -> String {
        format!("{}:m:{}", self.options.namespace, group.as_str())
    }

    fn alive_prefix(&self) -> String {
        format!("{}:a:", self.options.namespace)
    }

    fn is_subscribed(&self, group: &GroupName) -> bool {
        self.subscribed.lock().unwrap_or_else(PoisonError::into_inner).contains(group)
    }
}

fn unavailable(err: redis::RedisError) -> LayerError {
    LayerError::unavailable_because("a Redis command failed", err)
}

impl Shared {
    /// Counts a broker failure and turns it into the layer's error.
    fn failed(&self, err: redis::RedisError) -> LayerError {
        self.errors.fetch_add(1, Ordering::Relaxed);
        unavailable(err)
    }
}

/// A channel layer shared by every process that uses the same Redis and namespace.
pub struct RedisChannelLayer {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for RedisChannelLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisChannelLayer")
            .field("namespace", &self.shared.options.namespace)
            .field("process", &self.shared.hub.prefix())
            .finish_non_exhaustive()
    }
}

impl RedisChannelLayer {
    /// A layer on the Redis at `url` (`redis://host:port/db`). Connects in the background and
    /// keeps reconnecting, so it can be created while Redis is down; see
    /// [`ChannelLayer::ready`]. Must be called inside a tokio runtime.
    pub fn new(url: &str, config: LayerConfig, options: RedisOptions) -> Result<Self, LayerError> {
        let client = match &options.tls_root_ca {
            Some(root) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates { client_tls: None, root_cert: Some(root.clone()) },
            ),
            None => redis::Client::open(url),
        }
        .map_err(unavailable)?;
        let publisher = ConnectionManager::new_lazy_with_config(
            client.clone(),
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(options.command_timeout))
                .set_response_timeout(Some(options.command_timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_secs(1)),
        )
        .map_err(unavailable)?;
        let (changes_tx, changes_rx) = mpsc::unbounded_channel();
        let hub = Hub::new(config, random_prefix("redis"), Some(changes_tx));
        let shared = Arc::new(Shared {
            hub,
            options,
            publisher,
            subscribed: Mutex::new(HashSet::new()),
            subscriptions: watch::Sender::new(0),
            ready: watch::Sender::new(false),
            shutdown: watch::Sender::new(false),
            reconnects: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        });
        let tasks = vec![
            tokio::spawn(subscribe_forever(client, shared.clone(), changes_rx)),
            tokio::spawn(report_forever(shared.clone())),
        ];
        Ok(Self { shared, tasks: Mutex::new(tasks) })
    }

    /// This process's name in Redis (the prefix of its channel names).
    pub fn process(&self) -> &str {
        self.shared.hub.prefix()
    }
}

/// Keeps one pub/sub connection subscribed to this process's inbox and to every group with
/// local members; reconnects with backoff and tells receivers when messages may be lost.
async fn subscribe_forever(
    client: redis::Client,
    shared: Arc<Shared>,
    mut changes: mpsc::UnboundedReceiver<MembershipChange>,
) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut backoff = Duration::from_millis(100);
    let mut connected_before = false;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let pubsub = tokio::select! {
            result = client.get_async_pubsub() => result,
            _ = shutdown.changed() => return,
        };
        let (mut sink, mut stream) = match pubsub {
            Ok(pubsub) => pubsub.split(),
            Err(err) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %err, retry_in = ?backoff, "Redis channel layer: cannot connect");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        // Drain stale changes first, then subscribe to the current truth: changes made after
        // this point are still queued and applied below.
        while changes.try_recv().is_ok() {}
        let groups: Vec<GroupName> =
            shared.hub.local_groups().into_iter().map(|(g, _)| g).collect();
        let mut channels = vec![shared.inbox(shared.hub.prefix())];
        channels.extend(groups.iter().map(|g| shared.group_channel(g)));
        if let Err(err) = sink.subscribe(&channels).await {
            shared.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %err, "Redis channel layer: subscribing failed");
            continue;
        }
        *shared.subscribed.lock().unwrap_or_else(PoisonError::into_inner) =
            groups.into_iter().collect();
        shared.subscriptions.send_modify(|n| *n += 1);
        shared.ready.send_replace(true);
        if connected_before {
            shared.reconnects.fetch_add(1, Ordering::Relaxed);
            tracing::info!("Redis channel layer: reconnected; receivers catch up");
            shared.hub.interrupt_all();
        }
        connected_before = true;
        backoff = Duration::from_millis(100);

        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(message) => deliver(&shared, &message),
                    None => break,
                },
                change = changes.recv() => {
                    let Some(change) = change else { return };
                    let applied = match &change {
                        MembershipChange::Joined(group) => sink.subscribe(shared.group_channel(group)).await,
                        MembershipChange::Left(group) => sink.unsubscribe(shared.group_channel(group)).await,
                    };
                    if applied.is_err() {
                        break;
                    }
                    {
                        let mut subscribed = shared.subscribed.lock().unwrap_or_else(PoisonError::into_inner);
                        match change {
                            MembershipChange::Joined(group) => subscribed.insert(group),
                            MembershipChange::Left(group) => subscribed.remove(&group),
                        };
                    }
                    shared.subscriptions.send_modify(|n| *n += 1);
                }
                _ = shutdown.changed() => return,
            }
        }
        shared.ready.send_replace(false);
        shared.subscribed.lock().unwrap_or_else(PoisonError::into_inner).clear();
        tracing::warn!("Redis channel layer: subscription lost; reconnecting");
    }
}

/// Hands a message from Redis to the local members it is for.
fn deliver(shared: &Shared, message: &redis::Msg) {
    let channel = message.get_channel_name();
    let payload = message.get_payload_bytes();
    let namespace = &shared.options.namespace;
    if let Some(group) =
        channel.strip_prefix(namespace.as_str()).and_then(|c| c.strip_prefix(":g:"))
    {
        if let Ok(group) = GroupName::new(group) {
            // One copy out of the connection's buffer, then shared by every member.
            shared.hub.fan_out(&group, &Bytes::copy_from_slice(payload));
        }
    } else if let Some((name, body)) = unframe(payload) {
        if let Ok(name) = ChannelName::new(name) {
            let _ = shared.hub.send(&name, Bytes::copy_from_slice(body));
        }
    }
}

/// Inbox messages: the target channel's name, then the message.
fn frame(channel: &ChannelName, message: &[u8]) -> Bytes {
    let name = channel.as_str().as_bytes();
    let mut buf = BytesMut::with_capacity(2 + name.len() + message.len());
    buf.put_u16(u16::try_from(name.len()).unwrap_or(u16::MAX));
    buf.put_slice(name);
    buf.put_slice(message);
    buf.freeze()
}

fn unframe(payload: &[u8]) -> Option<(&str, &[u8])> {
    let len = usize::from(u16::from_be_bytes([*payload.first()?, *payload.get(1)?]));
    let name = std::str::from_utf8(payload.get(2..2 + len)?).ok()?;
    Some((name, payload.get(2 + len..)?))
}

/// Reports this process's group sizes and keeps its liveness key fresh, until shutdown; then
/// removes both, so the process stops counting at once.
async fn report_forever(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut connection = shared.publisher.clone();
    let process = shared.hub.prefix().to_owned();
    let alive = format!("{}{process}", shared.alive_prefix());
    let ttl_ms = u64::try_from(shared.options.process_ttl.as_millis()).unwrap_or(u64::MAX);
    let mut reported: HashSet<GroupName> = HashSet::new();
    loop {
        let current: Vec<(GroupName, usize)> = shared
            .hub
            .local_groups()
            .into_iter()
            .filter(|(group, _)| shared.is_subscribed(group))
            .collect();
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(&alive).arg(1).arg("PX").arg(ttl_ms).ignore();
        for (group, size) in &current {
            let key = shared.members_key(group);
            pipe.cmd("HSET").arg(&key).arg(&process).arg(*size).ignore();
            pipe.cmd("PEXPIRE").arg(&key).arg(ttl_ms.saturating_mul(4)).ignore();
        }
        let now: HashSet<GroupName> = current.iter().map(|(g, _)| g.clone()).collect();
        for gone in reported.difference(&now) {
            pipe.cmd("HDEL").arg(shared.members_key(gone)).arg(&process).ignore();
        }
        match pipe.query_async::<()>(&mut connection).await {
            Ok(()) => reported = now,
            Err(err) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %err, "Redis channel layer: could not report group sizes")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(REPORT_EVERY) => {}
            _ = shutdown.changed() => break,
        }
    }
    let mut pipe = redis::pipe();
    pipe.cmd("DEL").arg(&alive).ignore();
    for group in &reported {
        pipe.cmd("HDEL").arg(shared.members_key(group)).arg(&process).ignore();
    }
    let _ = tokio::time::timeout(
        shared.options.command_timeout,
        pipe.query_async::<()>(&mut connection),
    )
    .await;
}

#[async_trait]
impl ChannelLayer for RedisChannelLayer {
    async fn new_channel(&self) -> Result<ChannelReceiver, LayerError> {
        Ok(self.shared.hub.new_channel())
    }

    async fn send(&self, channel: &ChannelName, message: Message) -> Result<(), LayerError> {
        if self.shared.hub.is_local(channel) {
            return self.shared.hub.send(channel, message);
        }
        let mut connection = self.shared.publisher.clone();
        redis::cmd("PUBLISH")
            .arg(self.shared.inbox(channel.prefix()))
            .arg(frame(channel, &message).as_ref())
            .query_async::<i64>(&mut connection)
            .await
            .map(|_| ())
            .map_err(|e| self.shared.failed(e))
    }

    /// Returns once this process is subscribed to the group, so that a message any process
    /// publishes to the group after the join reaches the new member (one round trip for the
    /// first local member of a group, nothing for the others). While Redis is unreachable it
    /// returns at once: the membership takes effect on reconnection, and receivers are told
    /// [`RecvError::Interrupted`](crate::RecvError::Interrupted).
    async fn group_add(&self, group: &GroupName, channel: &ChannelName) -> Result<(), LayerError> {
        // Watch before looking, so a confirmation in between is not missed.
        let mut changes = self.shared.subscriptions.subscribe();
        self.shared.hub.add(group, channel)?;
        if !*self.shared.ready.borrow() {
            return Ok(());
        }
        let confirmed = async {
            while !self.shared.is_subscribed(group) {
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(self.shared.options.command_timeout, confirmed).await;
        Ok(())
    }

    async fn group_discard(
        &self,
        group: &GroupName,
        channel: &ChannelName,
    ) -> Result<(), LayerError> {
        self.shared.hub.discard(group, channel);
        Ok(())
    }

    async fn group_send(&self, group: &GroupName, message: Message) -> Result<(), LayerError> {
        let mut connection = self.shared.publisher.clone();
        redis::cmd("PUBLISH")
            .arg(self.shared.group_channel(group))
            .arg(message.as_ref())
            .query_async::<i64>(&mut connection)
            .await
            .map(|_| ())
            .map_err(|e| self.shared.failed(e))
    }

    fn broadcast_local(&self, group: &GroupName, message: Message) {
        self.shared.hub.fan_out(group, &message);
    }

    async fn group_size(&self, group: &GroupName) -> Result<usize, LayerError> {
        let mut connection = self.shared.publisher.clone();
        let others: i64 = redis::Script::new(GROUP_SIZE_SCRIPT)
            .key(self.shared.members_key(group))
            .arg(self.shared.alive_prefix())
            .arg(self.shared.hub.prefix())
            .invoke_async(&mut connection)
            .await
            .map_err(|e| self.shared.failed(e))?;
        // Local members count at once, even before the group's subscription is confirmed: a
        // stream that just joined must see itself in the count.
        let local = self.shared.hub.local_size(group);
        Ok(usize::try_from(others).unwrap_or_default() + local)
    }

    fn local_groups(&self) -> Vec<(GroupName, usize)> {
        self.shared.hub.local_groups()
    }

    fn config(&self) -> &LayerConfig {
        self.shared.hub.config()
    }

    fn stats(&self) -> LayerStats {
        LayerStats {
            reconnects: self.shared.reconnects.load(Ordering::Relaxed),
            errors: self.shared.errors.load(Ordering::Relaxed),
        }
    }

    async fn ready(&self) -> Result<(), LayerError> {
        let mut ready = self.shared.ready.subscribe();
        let connected = async {
            while !*ready.borrow_and_update() {
                if ready.changed().await.is_err() {
                    return false;
                }
            }
            true
        };
        match tokio::time::timeout(self.shared.options.command_timeout * 2, connected).await {
            Ok(true) => {}
            _ => return Err(LayerError::unavailable("not subscribed to Redis yet")),
        }
        // Subscribed is not enough: a connection to an unreachable host looks subscribed until
        // TCP gives up. A round trip on the publishing connection tells.
        let mut connection = self.shared.publisher.clone();
        let command = redis::cmd("PING");
        let ping = command.query_async::<String>(&mut connection);
        match tokio::time::timeout(self.shared.options.command_timeout, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(unavailable(err)),
            Err(_) => Err(LayerError::unavailable("Redis did not answer in time")),
        }
    }

    async fn close(&self) {
        self.shared.shutdown.send_replace(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for task in tasks {
            let _ = task.await;
        }
        self.shared.hub.close_all();
    }
}

impl Drop for RedisChannelLayer {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_frames_round_trip() {
        let name = ChannelName::new("redis.ab!1f").unwrap();
        let framed = frame(&name, b"hello");
        assert_eq!(unframe(&framed), Some(("redis.ab!1f", &b"hello"[..])));
        assert_eq!(unframe(b""), None);
        assert_eq!(unframe(&[0, 9, b'x']), None);
    }
}
