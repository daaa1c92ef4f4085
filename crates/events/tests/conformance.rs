//! One conformance suite for every channel layer: each test runs against each implementation.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use newspaper_events::{
    ChannelLayer, GroupName, InMemoryChannelLayer, LayerConfig, LayerError, RecvError,
};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);

/// Opens another process's view of one cluster.
type Opener = Box<dyn Fn() -> BoxFuture<'static, Arc<dyn ChannelLayer>>>;

/// The layers under test. Layers from one `cluster` share state the way processes share a
/// broker; `None` means the layer cannot run here (and the test says so).
trait Factory {
    fn cluster(config: LayerConfig) -> Option<Opener>;
}

struct Memory;
impl Factory for Memory {
    fn cluster(config: LayerConfig) -> Option<Opener> {
        // One process only: every "open" returns the same layer.
        let layer: Arc<dyn ChannelLayer> = Arc::new(InMemoryChannelLayer::new(config));
        Some(Box::new(move || {
            let layer = layer.clone();
            Box::pin(async move { layer })
        }))
    }
}

/// The in-memory layer, with every send made from a thread of its own and received on the
/// test's single-threaded runtime: the way the server's publisher reaches streams on actix-web's
/// workers, where every delivery wakes a task on another thread.
struct MemorySentFromAnotherThread;
impl Factory for MemorySentFromAnotherThread {
    fn cluster(config: LayerConfig) -> Option<Opener> {
        // One process only: every "open" returns the same layer.
        let layer: Arc<dyn ChannelLayer> = Arc::new(SentFromAnotherThread {
            layer: Arc::new(InMemoryChannelLayer::new(config)),
            sender: SenderThread::start(),
        });
        Some(Box::new(move || {
            let layer = layer.clone();
            Box::pin(async move { layer })
        }))
    }
}

/// A runtime on a thread of its own, to send from.
struct SenderThread(Option<tokio::runtime::Runtime>);

impl SenderThread {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime to send from");
        Self(Some(runtime))
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        let runtime = self.0.as_ref().expect("running");
        runtime.spawn(work).await.expect("the send completed")
    }
}

impl Drop for SenderThread {
    fn drop(&mut self) {
        // Dropped inside the test's runtime, where waiting for another runtime is not allowed.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

struct SentFromAnotherThread {
    layer: Arc<InMemoryChannelLayer>,
    sender: SenderThread,
}

#[async_trait::async_trait]
impl ChannelLayer for SentFromAnotherThread {
    async fn new_channel(&self) -> Result<newspaper_events::ChannelReceiver, LayerError> {
        self.layer.new_channel().await
    }

    async fn send(
        &self,
        channel: &newspaper_events::ChannelName,
        message: Bytes,
    ) -> Result<(), LayerError> {
        let (layer, channel) = (self.layer.clone(), channel.clone());
        self.sender.run(async move { layer.send(&channel, message).await }).await
    }

    async fn group_add(
        &self,
        group: &GroupName,
        channel: &newspaper_events::ChannelName,
    ) -> Result<(), LayerError> {
        self.layer.group_add(group, channel).await
    }

    async fn group_discard(
        &self,
        group: &GroupName,
        channel: &newspaper_events::ChannelName,
    ) -> Result<(), LayerError> {
        self.layer.group_discard(group, channel).await
    }

    async fn group_send(&self, group: &GroupName, message: Bytes) -> Result<(), LayerError> {
        let (layer, group) = (self.layer.clone(), group.clone());
        self.sender.run(async move { layer.group_send(&group, message).await }).await
    }

    fn broadcast_local(&self, group: &GroupName, message: Bytes) {
        let (layer, group) = (self.layer.clone(), group.clone());
        let runtime = self.sender.0.as_ref().expect("running");
        // Synchronous by contract: made on the other thread, and waited for here.
        std::thread::scope(|scope| {
            scope.spawn(|| runtime.block_on(async move { layer.broadcast_local(&group, message) }));
        });
    }

    async fn group_size(&self, group: &GroupName) -> Result<usize, LayerError> {
        self.layer.group_size(group).await
    }

    fn local_groups(&self) -> Vec<(GroupName, usize)> {
        self.layer.local_groups()
    }

    fn config(&self) -> &LayerConfig {
        self.layer.config()
    }

    async fn close(&self) {
        self.layer.close().await;
    }
}

struct Redis;
impl Factory for Redis {
    fn cluster(config: LayerConfig) -> Option<Opener> {
        let url = support::redis_url("the Redis variant")?;
        // A namespace of its own, so tests running at once do not see each other.
        let namespace = format!("test-{}", std::process::id()) + &format!("-{:x}", rand_suffix());
        Some(Box::new(move || {
            let (url, config, namespace) = (url.clone(), config.clone(), namespace.clone());
            Box::pin(async move {
                let options = newspaper_events::RedisOptions {
                    namespace,
                    process_ttl: Duration::from_secs(2),
                    ..Default::default()
                };
                let layer = newspaper_events::RedisChannelLayer::new(&url, config, options)
                    .expect("redis layer");
                layer.ready().await.expect("subscribed to Redis");
                Arc::new(layer) as Arc<dyn ChannelLayer>
            })
        }))
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    hasher.finish()
}

fn group(name: &str) -> GroupName {
    GroupName::new(name).unwrap()
}

async fn recv(rx: &mut newspaper_events::ChannelReceiver) -> Bytes {
    timeout(WAIT, rx.recv()).await.expect("timed out waiting for a message").expect("recv failed")
}

async fn nothing_more(rx: &mut newspaper_events::ChannelReceiver) {
    assert!(timeout(Duration::from_millis(150), rx.recv()).await.is_err(), "unexpected message");
}

/// Waits until `cond` holds, for layers whose membership settles asynchronously.
async fn eventually<F, Fut>(mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "condition never held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn channels_deliver_in_order<F: Factory>() {
    let Some(open) = F::cluster(LayerConfig::default()) else { return };
    let (a, b) = (open().await, open().await);
    let mut rx = a.new_channel().await.unwrap();
    for i in 0..20 {
        b.send(rx.name(), Bytes::from(format!("m{i}"))).await.unwrap();
    }
    for i in 0..20 {
        assert_eq!(recv(&mut rx).await, Bytes::from(format!("m{i}")));
    }
    nothing_more(&mut rx).await;
}

async fn group_send_reaches_members_only<F: Factory>() {
    let Some(open) = F::cluster(LayerConfig::default()) else { return };
    let (a, b) = (open().await, open().await);
    let feed = group("blog_feed");
    let mut m1 = a.new_channel().await.unwrap();
    let mut m2 = b.new_channel().await.unwrap();
    let mut outsider = a.new_channel().await.unwrap();
    a.group_add(&feed, m1.name()).await.unwrap();
    b.group_add(&feed, m2.name()).await.unwrap();
    eventually(|| async { a.group_size(&feed).await.unwrap() == 2 }).await;
    a.group_send(&feed, Bytes::from_static(b"hello")).await.unwrap();
    assert_eq!(recv(&mut m1).await, "hello");
    assert_eq!(recv(&mut m2).await, "hello");
    nothing_more(&mut outsider).await;
    assert_eq!(b.group_size(&feed).await.unwrap(), 2);
    let local: Vec<_> =
        a.local_groups().into_iter().map(|(g, n)| (g.as_str().to_owned(), n)).collect();
    assert!(local.contains(&("blog_feed".to_owned(), if Arc::ptr_eq(&a, &b) { 2 } else { 1 })));
}

async fn a_member_hears_what_is_sent_right_after_it_joined<F: Factory>() {
    let Some(open) = F::cluster(LayerConfig::default()) else { return };
    let (a, b) = (open().await, open().await);
    // Fresh groups each round: the first local member is the one that waits for the broker.
    for round in 0..5 {
        let room = group(&format!("room-{round}"));
        let mut member = a.new_channel().await.unwrap();
        a.group_add(&room, member.name()).await.unwrap();
        b.group_send(&room, Bytes::from(format!("right after {round}"))).await.unwrap();
        assert_eq!(recv(&mut member).await, Bytes::from(format!("right after {round}")));
    }
}

async fn members_share_one_copy_of_a_message<F: Factory>() {
    let Some(open) = F::cluster(LayerConfig::default()) else { return };
    let a = open().await;
    let feed = group("shared");
    let mut m1 = a.new_channel().await.unwrap();
    let mut m2 = a.new_channel().await.unwrap();
    a.group_add(&feed, m1.name()).await.unwrap();
    a.group_add(&feed, m2.name()).await.unwrap();
    eventually(|| async { a.group_size(&feed).await.unwrap() == 2 }).await;
    let payload = Bytes::from(vec![b'x'; 4096]);
    open().await.group_send(&feed, payload).await.unwrap();
    let (x, y) = (recv(&mut m1).await, recv(&mut m2).await);
    assert_eq!(x.as_ptr(), y.as_ptr(), "local members must share the same buffer");
}

async fn broadcast_local_reaches_this_process_only<F: Factory>() {
    let Some(open) = F::cluster(LayerConfig::default()) else { return };
    let (a, b) = (open().await, open().await);
    let feed = group("blog_feed");
    let mut here = a.new_channel().await.unwrap();
    let mut there = b.new_channel().await.unwrap();
    a.group_add(&feed, here.name()).await.unwrap();
    b.group_add(&feed, there.name()).await.unwrap();
    eventually(|| async { a.group_size(&feed).await.unwrap() == 2 }).await;
    a.broadcast_local(&feed, Bytes::from_static(b"{\"count\":2}"));
    assert_eq!(recv(&mut here).await, Bytes::from_static(b"{\"count\":2}"));
    if Arc::ptr_eq(&a, &b) {
        assert_eq!(recv(&mut there).await, Bytes::from_static(b"{\"count\":2}"));
    } else {
        nothing_more(&mut there).await;
    }
}

async fn discard_stops_delivery<F: Factory>() {
    let Some(open) = F::cluster(LayerConfig::default()) else { return };
    let a = open().await;
    let g = group("post.1");
    let mut rx = a.new_channel().await.unwrap();
    a.group_add(&g, rx.name()).await.unwrap();
    a.group_discard(&g, rx.name()).await.unwrap();
    a.group_discard(&g, rx.name()).await.unwrap();
    eventually(|| async { a.group_size(&g).await.unwrap() == 0 }).await;
    a.group_send(&g, Bytes::from_static(b"x")).await.unwrap();
    nothing_more(&mut rx).await;
    assert!(a.local_groups().is_empty());
}

async fn a_full_channel_lags_without_hurting_others<F: Factory>() {
    let Some(open) = F::cluster(LayerConfig { capacity: 3, ..LayerConfig::default() }) else {
        return;
    };
    let (a, b) = (open().await, open().await);
    let feed = group("blog_feed");
    let mut slow = a.new_channel().await.unwrap();
    let mut fast = a.new_channel().await.unwrap();
    a.group_add(&feed, slow.name()).await.unwrap();
    a.group_add(&feed, fast.name()).await.unwrap();
    eventually(|| async { b.group_size(&feed).await.unwrap() == 2 }).await;
    for i in 0..10 {
        b.group_send(&feed, Bytes::from(format!("{i}"))).await.unwrap();
        assert_eq!(recv(&mut fast).await, Bytes::from(format!("{i}")));
    }
    timeout(WAIT, slow.lagged()).await.expect("never marked lagging");
    assert!(slow.is_lagging());
    assert_eq!(slow.recv().await, Err(RecvError::Lagged));
    eventually(|| async { a.group_size(&feed).await.unwrap() == 1 }).await;
    // A lagging channel refuses direct sends too.
    assert!(matches!(
        a.send(slow.name(), Bytes::from_static(b"x")).await,
        Err(LayerError::ChannelFull)
    ));
}

async fn dropping_the_receiver_leaves_every_group<F: Factory>() {
    let Some(open) = F::cluster(LayerConfig::default()) else { return };
    let a = open().await;
    let (g1, g2) = (group("g1"), group("g2"));
    let rx = a.new_channel().await.unwrap();
    a.group_add(&g1, rx.name()).await.unwrap();
    a.group_add(&g2, rx.name()).await.unwrap();
    eventually(|| async { a.group_size(&g2).await.unwrap() == 1 }).await;
    let name = rx.name().clone();
    drop(rx);
    eventually(|| async {
        a.group_size(&g1).await.unwrap() == 0 && a.group_size(&g2).await.unwrap() == 0
    })
    .await;
    assert!(a.local_groups().is_empty());
    // Sending to a channel that is gone is not an error.
    a.send(&name, Bytes::from_static(b"x")).await.unwrap();
}

async fn memberships_expire_unless_renewed<F: Factory>() {
    let Some(open) = F::cluster(LayerConfig {
        group_expiry: Duration::from_millis(300),
        ..LayerConfig::default()
    }) else {
        return;
    };
    let a = open().await;
    let g = group("expiring");
    let mut stale = a.new_channel().await.unwrap();
    let mut renewed = a.new_channel().await.unwrap();
    a.group_add(&g, stale.name()).await.unwrap();
    a.group_add(&g, renewed.name()).await.unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(120)).await;
        a.group_add(&g, renewed.name()).await.unwrap();
    }
    eventually(|| async { a.group_size(&g).await.unwrap() == 1 }).await;
    a.group_send(&g, Bytes::from_static(b"x")).await.unwrap();
    assert_eq!(recv(&mut renewed).await, "x");
    nothing_more(&mut stale).await;
}

async fn names_are_validated<F: Factory>() {
    assert!(matches!(GroupName::new("has space"), Err(LayerError::InvalidName(_))));
    let Some(open) = F::cluster(LayerConfig::default()) else { return };
    let a = open().await;
    let other = InMemoryChannelLayer::default();
    let foreign = other.new_channel().await.unwrap();
    // A channel can only be added to groups by the process that owns it.
    assert!(a.group_add(&group("g"), foreign.name()).await.is_err());
}

async fn close_ends_every_receiver<F: Factory>() {
    let Some(open) = F::cluster(LayerConfig::default()) else { return };
    let a = open().await;
    let mut rx = a.new_channel().await.unwrap();
    a.close().await;
    assert_eq!(timeout(WAIT, rx.recv()).await.unwrap(), Err(RecvError::Closed));
}

async fn concurrent_churn_keeps_per_sender_order<F: Factory>() {
    let Some(open) = F::cluster(LayerConfig { capacity: 10_000, ..LayerConfig::default() }) else {
        return;
    };
    let a = open().await;
    let feed = group("churn");
    let mut steady = a.new_channel().await.unwrap();
    a.group_add(&feed, steady.name()).await.unwrap();
    eventually(|| async { a.group_size(&feed).await.unwrap() == 1 }).await;
    let churn = {
        let a = a.clone();
        let feed = feed.clone();
        tokio::spawn(async move {
            for _ in 0..200 {
                let rx = a.new_channel().await.unwrap();
                a.group_add(&feed, rx.name()).await.unwrap();
                tokio::task::yield_now().await;
                drop(rx);
            }
        })
    };
    let sender = open().await;
    for i in 0..500u32 {
        sender.group_send(&feed, Bytes::from(i.to_be_bytes().to_vec())).await.unwrap();
    }
    churn.await.unwrap();
    for i in 0..500u32 {
        assert_eq!(recv(&mut steady).await, Bytes::from(i.to_be_bytes().to_vec()));
    }
    eventually(|| async { a.group_size(&feed).await.unwrap() == 1 }).await;
}

macro_rules! suite {
    ($module:ident, $factory:ty, $runtime:tt) => {
        mod $module {
            use super::*;
            suite!(@tests $factory, $runtime,
                channels_deliver_in_order,
                group_send_reaches_members_only,
                a_member_hears_what_is_sent_right_after_it_joined,
                members_share_one_copy_of_a_message,
                broadcast_local_reaches_this_process_only,
                discard_stops_delivery,
                a_full_channel_lags_without_hurting_others,
                dropping_the_receiver_leaves_every_group,
                memberships_expire_unless_renewed,
                names_are_validated,
                close_ends_every_receiver,
                concurrent_churn_keeps_per_sender_order);
        }
    };
    (@tests $factory:ty, $runtime:tt, $($name:ident),*) => {
        $(
            #[tokio::test $runtime]
            async fn $name() {
                super::$name::<$factory>().await;
            }
        )*
    };
}

suite!(memory, Memory, (flavor = "multi_thread", worker_threads = 2));
suite!(memory_sent_from_another_thread, MemorySentFromAnotherThread, (flavor = "current_thread"));
suite!(redis, Redis, (flavor = "multi_thread", worker_threads = 2));
