//! The layer as the server uses it: receivers on several threads, each running a
//! single-threaded runtime (as actix-web's workers do), and a sender on another thread. (The
//! conformance suite runs every promise with sends made from another thread too.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use newspaper_events::{
    ChannelLayer, ChannelReceiver, GroupName, InMemoryChannelLayer, LayerConfig,
};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);

fn single_threaded() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

async fn recv(rx: &mut ChannelReceiver) -> Bytes {
    timeout(WAIT, rx.recv()).await.expect("timed out waiting for a message").expect("recv failed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads_each_receive_every_event_in_order_with_direct_sends_in_between() {
    // Room for everything: each thread reads its channels one after the other.
    let layer = Arc::new(InMemoryChannelLayer::new(LayerConfig {
        capacity: 1_000,
        ..LayerConfig::default()
    }));
    let feed = GroupName::new("feed").unwrap();
    const EVENTS: u32 = 300;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (names_tx, names_rx) = std::sync::mpsc::channel();
    let receivers: Vec<_> = (0..3)
        .map(|_| {
            let (layer, feed, ready, names) =
                (layer.clone(), feed.clone(), ready_tx.clone(), names_tx.clone());
            std::thread::spawn(move || {
                single_threaded().block_on(async move {
                    let mut channels = Vec::new();
                    for _ in 0..4 {
                        let rx = layer.new_channel().await.unwrap();
                        layer.group_add(&feed, rx.name()).await.unwrap();
                        names.send(rx.name().clone()).unwrap();
                        channels.push(rx);
                    }
                    ready.send(()).unwrap();
                    let mut seen = Vec::new();
                    for rx in &mut channels {
                        let mut got = Vec::new();
                        // Each event to the group, and after every tenth one a direct send.
                        for _ in 0..EVENTS + EVENTS / 10 {
                            got.push(recv(rx).await);
                        }
                        seen.push(got);
                    }
                    seen
                })
            })
        })
        .collect();
    for _ in 0..3 {
        ready_rx.recv().unwrap();
    }
    let names: Vec<_> = names_rx.try_iter().collect();
    assert_eq!(names.len(), 12);
    assert_eq!(layer.group_size(&feed).await.unwrap(), 12);

    let mut expected = Vec::new();
    for i in 0..EVENTS {
        layer.group_send(&feed, Bytes::from(format!("event {i}"))).await.unwrap();
        expected.push(Bytes::from(format!("event {i}")));
        if i % 10 == 9 {
            for name in &names {
                layer.send(name, Bytes::from(format!("direct after {i}"))).await.unwrap();
            }
            expected.push(Bytes::from(format!("direct after {i}")));
        }
    }
    for receiver in receivers {
        for got in receiver.join().unwrap() {
            assert_eq!(got, expected);
        }
    }
}
