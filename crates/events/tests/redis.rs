//! What only the Redis layer has: group sizes that span processes and forget dead ones.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod support;

use std::time::Duration;

use newspaper_events::{ChannelLayer, GroupName, LayerConfig, RedisChannelLayer, RedisOptions};

fn redis_url() -> Option<String> {
    support::redis_url("this Redis test")
}

async fn size_becomes(layer: &RedisChannelLayer, group: &GroupName, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let size = layer.group_size(group).await.unwrap();
        if size == n {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "group size stayed {size}, not {n}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_of_a_process_that_stopped_reporting_stop_counting() {
    let Some(url) = redis_url() else { return };
    let namespace = format!("test-ghost-{}", std::process::id());
    let options = RedisOptions {
        namespace: namespace.clone(),
        process_ttl: Duration::from_secs(1),
        ..RedisOptions::default()
    };
    let layer = RedisChannelLayer::new(&url, LayerConfig::default(), options).unwrap();
    layer.ready().await.unwrap();
    let feed = GroupName::new("blog_feed").unwrap();
    let member = layer.new_channel().await.unwrap();
    layer.group_add(&feed, member.name()).await.unwrap();
    size_becomes(&layer, &feed, 1).await;

    // Another process reported five members and then died: its liveness key runs out.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let members = format!("{namespace}:m:blog_feed");
    redis::cmd("HSET").arg(&members).arg("ghost").arg(5).query_async::<()>(&mut raw).await.unwrap();
    redis::cmd("SET")
        .arg(format!("{namespace}:a:ghost"))
        .arg(1)
        .arg("PX")
        .arg(400)
        .query_async::<()>(&mut raw)
        .await
        .unwrap();
    assert_eq!(layer.group_size(&feed).await.unwrap(), 6, "live processes count");
    size_becomes(&layer, &feed, 1).await;
    let still: bool =
        redis::cmd("HEXISTS").arg(&members).arg("ghost").query_async(&mut raw).await.unwrap();
    assert!(!still, "the dead process's entry is removed");

    // A process that shuts down cleanly stops counting at once.
    let second = RedisChannelLayer::new(
        &url,
        LayerConfig::default(),
        RedisOptions { namespace, process_ttl: Duration::from_secs(60), ..RedisOptions::default() },
    )
    .unwrap();
    second.ready().await.unwrap();
    let other = second.new_channel().await.unwrap();
    second.group_add(&feed, other.name()).await.unwrap();
    size_becomes(&layer, &feed, 2).await;
    second.close().await;
    size_becomes(&layer, &feed, 1).await;
    layer.close().await;
}
