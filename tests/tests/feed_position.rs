//! The feed position is exact: `X-Feed-Seq` + `?since=` gives a client exactly the changes after
//! what it loaded, a stream opened without `since` starts at the head as of its handshake, and
//! leaving and rejoining `blog_feed` replays exactly what was missed meanwhile.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use newspaper_tests::{TestApp, WsClient, app_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// `X-Feed-Seq` and the JSON body of a GET.
async fn load(app: &TestApp, path: &str) -> (i64, Value) {
    let res = app.request(Method::GET, path, None).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let seq = res.headers()["x-feed-seq"].to_str().unwrap().parse::<i64>().unwrap();
    (seq, res.json().await.unwrap())
}

/// Titles by post id, as a list page shows them.
fn titles(page: &Value) -> BTreeMap<i64, String> {
    page["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_i64().unwrap(), p["title"].as_str().unwrap().to_owned()))
        .collect()
}

/// Applies post events to a list as the demo page does.
fn apply(state: &mut BTreeMap<i64, String>, event: &Value) {
    let id = event["id"].as_i64().unwrap();
    match event["event"].as_str().unwrap() {
        "post_created" => {
            let previous = state.insert(id, event["title"].as_str().unwrap().to_owned());
            assert!(previous.is_none(), "created twice (a duplicate): {event}");
        }
        "post_updated" => {
            let previous = state.insert(id, event["title"].as_str().unwrap().to_owned());
            assert!(previous.is_some(), "an update of a post never seen (a gap): {event}");
        }
        "post_deleted" => {
            assert!(state.remove(&id).is_some(), "a deletion of a post never seen: {event}");
        }
        other => panic!("not a post event: {other}"),
    }
}

fn seq(event: &Value) -> i64 {
    event["seq"].as_i64().unwrap_or_else(|| panic!("no seq in {event}"))
}

app_tests! {
    async fn load_then_stream_from_x_feed_seq_misses_nothing_and_repeats_nothing(app) {
        let app = Arc::new(app);
        let ann = app.user("ann@example.com").await;
        // A writer that creates, edits and deletes published posts all along.
        let writing = Arc::new(AtomicBool::new(true));
        let writer = {
            let (app, ann, writing) = (app.clone(), ann.clone(), writing.clone());
            tokio::spawn(async move {
                let mut live: Vec<i64> = Vec::new();
                let mut n = 0;
                while writing.load(Ordering::Acquire) {
                    n += 1;
                    // At most 40 posts, so the whole list fits one page.
                    match n % 4 {
                        0 if live.len() > 3 => {
                            let id = live.remove(0);
                            let (status, _) = app.call(Method::DELETE, &format!("/api/posts/{id}/"), Some(&ann.access), None).await;
                            assert_eq!(status, StatusCode::NO_CONTENT);
                        }
                        1 | 2 if live.len() < 40 => {
                            let post = app.create_post(&ann, &format!("Post {n}"), "published").await;
                            live.push(post["id"].as_i64().unwrap());
                        }
                        _ => if let Some(id) = live.last() {
                            let (status, _) = app.call(Method::PATCH, &format!("/api/posts/{id}/"), Some(&ann.access), Some(json!({"title": format!("Edit {n}")}))).await;
                            assert_eq!(status, StatusCode::OK);
                        },
                    }
                }
            })
        };
        // Clients that load the list at different moments, then stream from its position.
        let mut readers: Vec<(BTreeMap<i64, String>, i64, WsClient)> = Vec::new();
        for _ in 0..12 {
            let (position, page) = load(&app, "/api/posts/?page_size=100").await;
            assert!(page["count"].as_u64().unwrap() <= 100, "the test keeps one page");
            let client = app.ws(&format!("since={position}")).await;
            readers.push((titles(&page), position, client));
            // Let the writer move on between readers.
            let before = app.event_count().await;
            while app.event_count().await < before + 3 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        writing.store(false, Ordering::Release);
        writer.await.unwrap();
        let marker = app.create_post(&ann, "The end", "published").await;
        let (_, final_page) = load(&app, "/api/posts/?page_size=100").await;
        let expected = titles(&final_page);
        for (mut state, position, mut client) in readers {
            let mut last = position;
            loop {
                let event = client.next_event().await;
                assert!(seq(&event) > last, "in order, after the loaded position: {event} after {last}");
                last = seq(&event);
                apply(&mut state, &event);
                if event["id"] == marker["id"] { break; }
            }
            assert_eq!(state, expected, "the list loaded at {position} plus its stream is the list now");
        }
    }

    async fn a_stream_without_since_starts_at_the_head_of_its_handshake(app) {
        let ann = app.user("ann@example.com").await;
        for i in 0..15 {
            // Committed just before the handshake, perhaps not yet published: never delivered.
            app.create_post(&ann, &format!("Before {i}"), "published").await;
            let mut client = app.ws("").await;
            let marker = app.create_post(&ann, &format!("After {i}"), "published").await;
            let first = client.next_event().await;
            assert_eq!(first["id"], marker["id"], "round {i}: {first}");
            client.close().await;
        }
    }

    async fn the_position_of_a_single_post_is_exact_too(app) {
        let ann = app.user("ann@example.com").await;
        let post = app.create_post(&ann, "One", "published").await;
        let path = format!("/api/posts/{}/", post["id"]);
        app.call(Method::PATCH, &path, Some(&ann.access), Some(json!({"title": "Two"}))).await;
        let (position, loaded) = load(&app, &path).await;
        assert_eq!(loaded["title"], "Two");
        let mut client = app.ws(&format!("since={position}")).await;
        app.call(Method::PATCH, &path, Some(&ann.access), Some(json!({"title": "Three"}))).await;
        let event = client.next_event().await;
        assert_eq!((&event["event"], &event["title"]), (&json!("post_updated"), &json!("Three")));
        assert!(seq(&event) > position);
        // The anonymous page cache answers with the position it was read at, too.
        let (cached_position, _) = load(&app, "/api/posts/").await;
        let (again, _) = load(&app, "/api/posts/").await;
        assert_eq!(cached_position, again);
        assert_eq!(cached_position, seq(&event));
    }

    async fn leaving_and_rejoining_the_feed_replays_exactly_what_was_missed(app) {
        let ann = app.user("ann@example.com").await;
        let followed = app.create_post(&ann, "Followed", "published").await;
        let other = app.create_post(&ann, "Other", "published").await;
        let mut client = app.ws("").await;
        app.wait_for_feed_size(1).await;
        client.send_json(json!({"action": "subscribe", "group": format!("post.{}", followed["id"])})).await;
        assert_eq!(client.next_event().await["event"], "subscribed");
        client.send_json(json!({"action": "unsubscribe", "group": "blog_feed"})).await;
        assert_eq!(client.next_event().await["event"], "unsubscribed");
        app.wait_for_feed_size(0).await;

        let patch = |id: &Value, title: &str| {
            let path = format!("/api/posts/{id}/");
            let body = json!({"title": title});
            let (app, ann) = (&app, &ann);
            async move { app.call(Method::PATCH, &path, Some(&ann.access), Some(body)).await }
        };
        patch(&followed["id"], "Followed 2").await;
        let delivered = client.next_event().await;
        assert_eq!(delivered["title"], "Followed 2", "the followed post, live while away");
        patch(&other["id"], "Other 2").await;
        let new = app.create_post(&ann, "New while away", "published").await;
        patch(&followed["id"], "Followed 3").await;
        assert_eq!(client.next_event().await["title"], "Followed 3");

        client.send_json(json!({"action": "subscribe", "group": "blog_feed"})).await;
        let mut replayed = Vec::new();
        loop {
            let frame = client.next_event().await;
            if frame["event"] == "subscribed" { break; }
            replayed.push((frame["event"].as_str().unwrap().to_owned(), frame["title"].as_str().unwrap().to_owned()));
        }
        assert_eq!(replayed, [("post_updated".to_owned(), "Other 2".to_owned()), ("post_created".to_owned(), "New while away".to_owned())],
            "what was missed, and none of what was delivered while away");
        app.wait_for_feed_size(1).await;
        app.call(Method::DELETE, &format!("/api/posts/{}/", new["id"]), Some(&ann.access), None).await;
        let live = client.next_event().await;
        assert_eq!((&live["event"], &live["id"]), (&json!("post_deleted"), &new["id"]));
        client.expect_silence(std::time::Duration::from_millis(300)).await;
    }

    async fn post_groups_have_one_spelling(app) {
        let ann = app.user("ann@example.com").await;
        let post = app.create_post(&ann, "Forty-two", "published").await;
        let id = post["id"].as_i64().unwrap();
        let mut client = app.ws("").await;
        client.send_json(json!({"action": "unsubscribe", "group": "blog_feed"})).await;
        assert_eq!(client.next_event().await["event"], "unsubscribed");
        for spelling in [format!("post.0{id}"), format!("post.+{id}"), format!("post.{id} ")] {
            client.send_json(json!({"action": "subscribe", "group": spelling})).await;
            let answer = client.next_event().await;
            assert_eq!(answer["event"], "error", "{spelling}: {answer}");
            assert!(answer["detail"].as_str().unwrap().contains("Unknown group"), "{answer}");
        }
        client.send_json(json!({"action": "subscribe", "group": format!("post.{id}")})).await;
        assert_eq!(client.next_event().await, json!({"event": "subscribed", "group": format!("post.{id}")}));
        app.call(Method::PATCH, &format!("/api/posts/{id}/"), Some(&ann.access), Some(json!({"title": "Edited"}))).await;
        assert_eq!(client.next_event().await["title"], "Edited");
    }

    async fn the_first_presence_a_client_sees_counts_itself(app) {
        let mut clients = Vec::new();
        for n in 1..=4u64 {
            let mut client = app.ws("").await;
            let first = client.next_json().await;
            assert_eq!(first, json!({"event": "presence", "group": "blog_feed", "count": n}));
            clients.push(client);
        }
        // Rejoining after leaving counts itself again.
        let client = &mut clients[0];
        client.send_json(json!({"action": "unsubscribe", "group": "blog_feed"})).await;
        assert_eq!(client.next_event().await["event"], "unsubscribed");
        app.wait_for_feed_size(3).await;
        client.send_json(json!({"action": "subscribe", "group": "blog_feed"})).await;
        let presence = loop {
            let frame = client.next_json().await;
            if frame["event"] == "presence" { break frame; }
            assert_ne!(frame["event"], "subscribed", "a fresh count comes before the answer");
        };
        assert_eq!(presence["count"], 4);
    }
}
