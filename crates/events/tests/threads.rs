//! The layer as the server uses it: receivers on several threads, each running a
//! single-threaded runtime (as actix-web's workers do), and a sender on another thread. (The
//! conformance suite runs every promise with sends made from another thread too.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use newspaper_events::{
    ChannelLayer, ChannelReceiver, GroupName, InMemoryChannelLayer, LayerConfig, RecvError,
};

const WAIT: Duration = Duration::from_secs(5);

fn single_threaded() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

async fn recv(rx: &mut ChannelReceiver) -> Bytes {
    woken(rx.recv()).await
}

/// Waits for a message, failing if none comes; unlike `timeout`, which polls the inner future
/// once more when its deadline passes, this never lets a receiver that was not woken pass.
async fn woken<F: Future<Output = Result<Bytes, RecvError>>>(receiving: F) -> Bytes {
    tokio::select! {
        biased;
        () = tokio::time::sleep(WAIT) => panic!("the receiver was never woken"),
        message = receiving => message.expect("recv failed"),
    }
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
                    // Waiting before anything is sent, so the first message must wake this
                    // thread from the sender's.
                    let first = {
                        let mut receiving = Box::pin(channels[0].recv());
                        let waiting =
                            poll_fn(|cx| Poll::Ready(receiving.as_mut().poll(cx).is_pending()))
                                .await;
                        assert!(waiting, "nothing was sent yet");
                        ready.send(()).unwrap();
                        woken(receiving).await
                    };
                    let mut seen = Vec::new();
                    for (n, rx) in channels.iter_mut().enumerate() {
                        let mut got = Vec::new();
                        if n == 0 {
                            got.push(first.clone());
                        }
                        // Each event to the group, and after every tenth one a direct send.
                        while got.len() < (EVENTS + EVENTS / 10) as usize {
                            got.push(recv(rx).await);
                        }
                        seen.push(got);
                    }
                    seen
                })
            })
        })
        .collect();
    // A receiving thread that fails before it is ready then fails the wait below too.
    drop((ready_tx, names_tx));
    for _ in 0..3 {
        ready_rx.recv().expect("every receiving thread waiting");
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

/// Clients leave as soon as they have what they came for, so a receiver may leave the group
/// while a fan-out to it is still pushing and while others on its thread are waiting: none of
/// those still in the group may miss an event or wait for it unwoken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_that_leave_once_they_have_their_events_keep_none_from_the_others() {
    const THREADS: usize = 2;
    const PER_THREAD: usize = 500;
    const EVENTS: usize = 20;
    let layer = Arc::new(InMemoryChannelLayer::new(LayerConfig {
        capacity: EVENTS + 1,
        ..LayerConfig::default()
    }));
    let feed = GroupName::new("feed").unwrap();
    let expected: Vec<Bytes> = (0..EVENTS).map(|i| Bytes::from(format!("event {i}"))).collect();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| {
            let (layer, feed, ready, expected) =
                (layer.clone(), feed.clone(), ready_tx.clone(), expected.clone());
            std::thread::spawn(move || {
                let local = tokio::task::LocalSet::new();
                single_threaded().block_on(local.run_until(async move {
                    let mut receivers = Vec::with_capacity(PER_THREAD);
                    for n in 0..PER_THREAD {
                        let mut rx = layer.new_channel().await.unwrap();
                        layer.group_add(&feed, rx.name()).await.unwrap();
                        // From one event to all of them, so that some leave during every
                        // fan-out after the first.
                        let wanted = 1 + (thread * PER_THREAD + n) % EVENTS;
                        receivers.push(tokio::task::spawn_local(async move {
                            let mut got = Vec::with_capacity(wanted);
                            while got.len() < wanted {
                                got.push(recv(&mut rx).await);
                            }
                            got
                        }));
                    }
                    ready.send(()).unwrap();
                    for receiver in receivers {
                        let got = receiver.await.unwrap();
                        assert_eq!(got, expected[..got.len()]);
                    }
                }));
            })
        })
        .collect();
    drop(ready_tx);
    for _ in 0..THREADS {
        ready_rx.recv().expect("every receiving thread joined");
    }
    assert_eq!(layer.group_size(&feed).await.unwrap(), THREADS * PER_THREAD);
    for event in &expected {
        layer.group_send(&feed, event.clone()).await.unwrap();
    }
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(layer.group_size(&feed).await.unwrap(), 0, "every receiver left");
}
