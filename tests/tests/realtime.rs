//! /ws/blog/ end to end: a real server, real WebSocket clients, real posts over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use newspaper_domain::Seq;
use newspaper_persistence::OutboxRepository;
use newspaper_tests::{TestApp, TestDatabase, WsClient, app_tests, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

fn keys(event: &Value) -> Vec<String> {
    event.as_object().unwrap().keys().cloned().collect()
}

/// One raw frame of a message split across several frames (RFC 6455 §5.4).
fn fragment(payload: impl AsRef<[u8]>, opcode: Data, is_final: bool) -> Message {
    Message::Frame(Frame::message(payload.as_ref().to_vec(), OpCode::Data(opcode), is_final))
}

fn seq(event: &Value) -> i64 {
    event["seq"].as_i64().unwrap_or_else(|| panic!("no seq in {event}"))
}

app_tests! {
    async fn two_clients_see_every_change_with_the_tutorial_keys_first(app) {
        let ann = app.user("ann@example.com").await;
        let mut one = app.ws("").await;
        let mut two = app.ws("").await;
        app.wait_for_feed_size(2).await;

        let post = app.create_post(&ann, "Hello", "published").await;
        let path = format!("/api/posts/{}/", post["id"]);
        for client in [&mut one, &mut two] {
            let raw = loop {
                let raw = client.next_text().await;
                if !raw.contains("\"presence\"") { break raw; }
            };
            let prefix = format!("{{\"event\":\"post_created\",\"id\":{},\"title\":\"Hello\",\"status\":\"published\",\"seq\":", post["id"]);
            assert!(raw.starts_with(&prefix), "the tutorial's four keys come first, in order: {raw}");
            let event: Value = serde_json::from_str(&raw).unwrap();
            assert_eq!(keys(&event), ["event", "id", "seq", "status", "timestamp", "title"]);
            assert_eq!((&event["event"], &event["id"], &event["title"], &event["status"]), (&json!("post_created"), &post["id"], &json!("Hello"), &json!("published")));
            let ts = event["timestamp"].as_str().unwrap();
            assert!(ts.ends_with('Z') && ts.len() == "2026-11-23T10:15:02.123Z".len(), "{ts}");
            chrono::DateTime::parse_from_rfc3339(ts).unwrap();
        }
        app.call(Method::PATCH, &path, Some(&ann.access), Some(json!({"title": "Hello again"}))).await;
        app.call(Method::DELETE, &path, Some(&ann.access), None).await;
        for client in [&mut one, &mut two] {
            let updated = client.next_event().await;
            assert_eq!((&updated["event"], &updated["title"]), (&json!("post_updated"), &json!("Hello again")));
            let deleted = client.next_event().await;
            assert_eq!((&deleted["event"], &deleted["id"]), (&json!("post_deleted"), &post["id"]));
            assert!(seq(&deleted) > seq(&updated));
        }
    }

    async fn delete_without_token_is_401_and_sends_no_event(app) {
        let ann = app.user("ann@example.com").await;
        let post = app.create_post(&ann, "Stays", "published").await;
        let mut client = app.ws("").await;
        app.wait_for_feed_size(1).await;
        let (status, _) = app.call(Method::DELETE, &format!("/api/posts/{}/", post["id"]), None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let bob = app.user("bob@example.com").await;
        let (status, _) = app.call(Method::DELETE, &format!("/api/posts/{}/", post["id"]), Some(&bob.access), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        client.expect_silence(Duration::from_millis(700)).await;
    }

    async fn resuming_with_since_replays_exactly_what_was_missed_then_goes_live(app) {
        let ann = app.user("ann@example.com").await;
        let mut client = app.ws("").await;
        app.wait_for_feed_size(1).await;
        app.create_post(&ann, "Seen", "published").await;
        let last = seq(&client.next_event().await);
        client.close().await;

        let mut missed = Vec::new();
        for title in ["Missed 1", "Missed 2", "Missed 3"] {
            missed.push(app.create_post(&ann, title, "published").await);
        }
        let mut resumed = app.ws(&format!("since={last}")).await;
        let replayed: Vec<Value> = vec![resumed.next_event().await, resumed.next_event().await, resumed.next_event().await];
        let titles: Vec<&str> = replayed.iter().map(|e| e["title"].as_str().unwrap()).collect();
        assert_eq!(titles, ["Missed 1", "Missed 2", "Missed 3"]);
        assert!(replayed.windows(2).all(|w| seq(&w[0]) < seq(&w[1])));
        app.wait_for_feed_size(1).await;
        app.create_post(&ann, "Live", "published").await;
        let live = resumed.next_event().await;
        assert_eq!(live["title"], "Live");
        assert!(seq(&live) > seq(&replayed[2]));
        resumed.expect_silence(Duration::from_millis(300)).await;
    }

    async fn drafts_reach_only_their_author_and_staff_live_and_on_replay(app) {
        let ann = app.user("ann@example.com").await;
        let bob = app.user("bob@example.com").await;
        let boss = app.staff("boss@example.com").await;
        let mut anon = app.ws("").await;
        let mut other = app.ws(&format!("token={}", bob.access)).await;
        let mut author = app.ws(&format!("token={}", ann.access)).await;
        let mut staff = app.ws(&format!("token={}", boss.access)).await;
        app.wait_for_feed_size(4).await;

        let draft = app.create_post(&ann, "Secret draft", "draft").await;
        let path = format!("/api/posts/{}/", draft["id"]);
        for client in [&mut author, &mut staff] {
            let e = client.next_event().await;
            assert_eq!((&e["event"], &e["title"], &e["status"]), (&json!("post_created"), &json!("Secret draft"), &json!("draft")));
        }
        app.call(Method::PATCH, &path, Some(&ann.access), Some(json!({"status": "published", "title": "Public now"}))).await;
        for client in [&mut anon, &mut other] {
            let e = client.next_event().await;
            assert_eq!((&e["event"], &e["title"]), (&json!("post_created"), &json!("Public now")), "first sight of it is a creation");
        }
        for client in [&mut author, &mut staff] {
            assert_eq!(client.next_event().await["event"], "post_updated");
        }
        app.call(Method::PATCH, &path, Some(&ann.access), Some(json!({"status": "draft", "title": "Back in the drawer"}))).await;
        for client in [&mut anon, &mut other] {
            let e = client.next_event().await;
            assert_eq!((&e["event"], &e["title"], &e["status"]), (&json!("post_deleted"), &json!("Public now"), &json!("published")), "never the draft's new title");
        }
        for client in [&mut author, &mut staff] {
            let e = client.next_event().await;
            assert_eq!((&e["event"], &e["title"]), (&json!("post_updated"), &json!("Back in the drawer")));
        }
        app.call(Method::DELETE, &path, Some(&ann.access), None).await;
        for client in [&mut author, &mut staff] {
            assert_eq!(client.next_event().await["event"], "post_deleted");
        }
        anon.expect_silence(Duration::from_millis(400)).await;
        other.expect_silence(Duration::from_millis(100)).await;

        // Replay applies the same rule.
        let mut replay = app.ws("since=0").await;
        let first = replay.next_event().await;
        let second = replay.next_event().await;
        assert_eq!((&first["event"], &first["title"]), (&json!("post_created"), &json!("Public now")));
        assert_eq!((&second["event"], &second["title"]), (&json!("post_deleted"), &json!("Public now")));
        replay.expect_silence(Duration::from_millis(300)).await;
        let mut author_replay = app.ws(&format!("since=0&token={}", ann.access)).await;
        let titles: Vec<String> = {
            let mut t = Vec::new();
            for _ in 0..4 { t.push(author_replay.next_event().await["title"].as_str().unwrap().to_owned()); }
            t
        };
        assert_eq!(titles, ["Secret draft", "Public now", "Back in the drawer", "Back in the drawer"]);
    }

    async fn presence_counts_connected_clients_and_groups_empty_when_they_leave(app) {
        let mut first = app.ws("").await;
        first.wait_for_presence(1).await;
        let mut second = app.ws("").await;
        first.wait_for_presence(2).await;
        second.wait_for_presence(2).await;
        let stats = app.stats(None).await;
        assert_eq!((stats["connections"].as_u64(), stats["groups"]["blog_feed"].as_u64()), (Some(2), Some(2)), "{stats}");
        second.close().await;
        first.wait_for_presence(1).await;
        first.close().await;
        app.wait_for_feed_size(0).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while app.stats(None).await["connections"] != 0 {
            assert!(tokio::time::Instant::now() < deadline, "connections never returned to zero");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn clients_that_drop_off_once_they_have_the_last_post_keep_it_from_no_one(app) {
        // The side-by-side benchmark's pattern: each client drops its connection (no close
        // frame) the moment it has every post, so the last post reaches the others while the
        // server tears those streams down.
        const CLIENTS: usize = 100;
        let ann = app.user("ann@example.com").await;
        let mut clients = Vec::with_capacity(CLIENTS);
        for _ in 0..CLIENTS {
            clients.push(app.ws("").await);
        }
        app.wait_for_feed_size(CLIENTS as u64).await;
        let expected = ["first", "second", "last"];
        let readers: Vec<_> = clients
            .into_iter()
            .map(|mut client| tokio::spawn(async move {
                let mut titles = Vec::with_capacity(expected.len());
                while titles.len() < expected.len() {
                    titles.push(client.next_event().await["title"].as_str().unwrap().to_owned());
                }
                titles
            }))
            .collect();
        for title in expected {
            app.create_post(&ann, title, "published").await;
        }
        for reader in readers {
            assert_eq!(reader.await.unwrap(), expected);
        }
        app.wait_for_feed_size(0).await;
    }

    async fn clients_can_follow_single_posts_and_get_errors_without_being_closed(app) {
        let ann = app.user("ann@example.com").await;
        let bob = app.user("bob@example.com").await;
        let followed = app.create_post(&ann, "Followed", "published").await;
        let other = app.create_post(&ann, "Other", "published").await;
        let draft = app.create_post(&ann, "Ann's draft", "draft").await;
        let mut client = app.ws(&format!("token={}", bob.access)).await;

        client.send_json(json!({"action": "ping"})).await;
        assert_eq!(client.next_event().await, json!({"event": "pong"}));
        client.send_json(json!({"action": "unsubscribe", "group": "blog_feed"})).await;
        assert_eq!(client.next_event().await, json!({"event": "unsubscribed", "group": "blog_feed"}));
        let group = format!("post.{}", followed["id"]);
        client.send_json(json!({"action": "subscribe", "group": group})).await;
        assert_eq!(client.next_event().await, json!({"event": "subscribed", "group": group}));
        for (message, needle) in [
            (json!({"action": "subscribe", "group": format!("post.{}", draft["id"])}), "not found"),
            (json!({"action": "subscribe", "group": "post.999999"}), "not found"),
            (json!({"action": "subscribe", "group": "admin"}), "Unknown group"),
            (json!({"action": "subscribe"}), "needs a \"group\""),
            (json!({"action": "dance"}), "Unknown action"),
            (json!({"nothing": true}), "Missing \"action\""),
        ] {
            client.send_json(message.clone()).await;
            let reply = client.next_event().await;
            assert_eq!(reply["event"], "error", "{message} -> {reply}");
            assert!(reply["detail"].as_str().unwrap().contains(needle), "{message} -> {reply}");
        }
        client.send(Message::text("not json")).await;
        assert_eq!(client.next_event().await["event"], "error");

        app.call(Method::PATCH, &format!("/api/posts/{}/", other["id"]), Some(&ann.access), Some(json!({"title": "Other 2"}))).await;
        app.call(Method::PATCH, &format!("/api/posts/{}/", followed["id"]), Some(&ann.access), Some(json!({"title": "Followed 2"}))).await;
        let event = client.next_event().await;
        assert_eq!((&event["event"], &event["title"]), (&json!("post_updated"), &json!("Followed 2")), "only the followed post");
        client.send_json(json!({"action": "ping"})).await;
        assert_eq!(client.next_event().await, json!({"event": "pong"}), "still open after all the errors");
    }

    async fn abuse_closes_with_the_matching_code_and_others_keep_working(app) {
        let ann = app.user("ann@example.com").await;
        let mut bystander = app.ws("").await;

        let mut big = app.ws("").await;
        big.send(Message::text("x".repeat(64 * 1024 + 1))).await;
        assert_eq!(big.close_code().await.0, 1009);

        // The limit is on the whole message, not each frame: fragments that are small on their
        // own but add up to more than 64 KiB are refused too, while a small fragmented message
        // is reassembled and answered.
        let mut fragmented = app.ws("").await;
        fragmented.send(fragment(r#"{"action":"#, Data::Text, false)).await;
        fragmented.send(fragment(r#""ping"}"#, Data::Continue, true)).await;
        assert_eq!(fragmented.next_event().await, json!({"event": "pong"}));
        let chunk = "x".repeat(40 * 1024);
        fragmented.send(fragment(&chunk, Data::Text, false)).await;
        fragmented.send(fragment(&chunk, Data::Continue, true)).await;
        assert_eq!(fragmented.close_code().await.0, 1009);

        let mut not_utf8 = app.ws("").await;
        not_utf8.send(fragment([b'"', 0xff, b'"'], Data::Text, true)).await;
        assert_eq!(not_utf8.close_code().await.0, 1007);
        let mut not_utf8_in_parts = app.ws("").await;
        not_utf8_in_parts.send(fragment(b"\"\xe2", Data::Text, false)).await;
        not_utf8_in_parts.send(fragment(b"\"", Data::Continue, true)).await;
        assert_eq!(not_utf8_in_parts.close_code().await.0, 1007);

        let mut binary = app.ws("").await;
        binary.send(Message::binary(vec![1, 2, 3])).await;
        assert_eq!(binary.close_code().await.0, 1003);

        let mut bad_token = app.ws("token=not-a-token").await;
        assert_eq!(bad_token.next_json().await["event"], "error");
        assert_eq!(bad_token.close_code().await.0, 1008);
        let mut refresh_as_access = app.ws(&format!("token={}", ann.refresh)).await;
        assert_eq!(refresh_as_access.close_code().await.0, 1008);

        let mut bad_since = app.ws("since=yesterday").await;
        assert!(bad_since.next_json().await["detail"].as_str().unwrap().contains("since"));
        assert_eq!(bad_since.close_code().await.0, 1008);

        let mut flood = app.ws("").await;
        for _ in 0..200 {
            flood.send(Message::text(r#"{"action":"ping"}"#)).await;
        }
        let (code, reason) = flood.close_code().await;
        assert_eq!((code, reason.as_str()), (1008, "message rate limit exceeded"));

        let url = format!("ws://127.0.0.1:{}/ws/blog/", app.port);
        let refused = WsClient::connect(&url, Some("https://evil.example")).await;
        match refused {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
            other => panic!("expected 403, got {:?}", other.map(|_| "connected")),
        }
        assert!(WsClient::connect(&url, Some(&format!("http://127.0.0.1:{}", app.port))).await.is_ok(), "own origin is allowed");

        let res = app.client.get(app.url("/ws/blog/")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert!(res.json::<Value>().await.unwrap()["detail"].as_str().unwrap().contains("WebSocket"));
        assert_eq!(app.get("/ws/other/", None).await, (StatusCode::NOT_FOUND, json!({"detail": "Not found."})));
        let other_ws = WsClient::connect(&format!("ws://127.0.0.1:{}/ws/chat/", app.port), None).await;
        assert!(matches!(other_ws, Err(tokio_tungstenite::tungstenite::Error::Http(ref r)) if r.status() == 404));

        app.create_post(&ann, "Still here", "published").await;
        assert_eq!(bystander.next_event().await["title"], "Still here");
    }
}

backend_tests! {
    async fn history_older_than_what_is_kept_asks_for_a_resync(database) {
        let app = TestApp::spawn_with(database, |_| {}).await;
        let ann = app.user("ann@example.com").await;
        for i in 0..3 {
            app.create_post(&ann, &format!("Old {i}"), "published").await;
        }
        let mut watcher = app.ws("since=0").await;
        let last = seq(&watcher.events_until(3).await.pop().unwrap());
        assert_eq!(last, 3);
        // Pruning only ever removes what was published; wait for the cursor to be saved.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while app.db.read(OutboxRepository::state).await.unwrap().published < Seq(3) {
            assert!(tokio::time::Instant::now() < deadline, "the cursor was never saved");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Everything published so far is now past its retention.
        let pruned = app.db.write(|conn| OutboxRepository::prune(conn, Utc::now() + chrono::Duration::hours(1), 1)).await.unwrap();
        assert_eq!(pruned, 2);
        let mut stale = app.ws("since=0").await;
        assert_eq!(stale.next_event().await, json!({"event": "resync_required"}));
        let mut fine = app.ws("since=2").await;
        assert_eq!(fine.next_event().await["title"], "Old 2", "after the horizon, replay still works");
        fine.expect_silence(Duration::from_millis(300)).await;
        let mut future = app.ws("since=999").await;
        assert_eq!(future.next_event().await, json!({"event": "resync_required"}), "a seq from another history");
        // Still live after the resync notice.
        app.wait_for_feed_size(4).await;
        app.create_post(&ann, "New", "published").await;
        assert_eq!(stale.next_event().await["title"], "New");
        assert_eq!(fine.next_event().await["title"], "New");
    }

    async fn a_restart_between_commit_and_publish_loses_nothing(database) {
        let first = TestApp::spawn_with(database.clone(), |_| {}).await;
        let ann = first.user("ann@example.com").await;
        let mut client = first.ws("").await;
        first.wait_for_feed_size(1).await;
        first.create_post(&ann, "Before", "published").await;
        let last = seq(&client.next_event().await);
        first.crash().await;

        // Commits that the crashed instance never published: written straight to the database.
        let db = newspaper_persistence::Database::connect(database.url(), newspaper_persistence::PoolOptions::for_backend(database.url().backend())).unwrap();
        let author = newspaper_domain::AuthorRef { id: newspaper_domain::UserId(ann.id), username: "ann".into() };
        for title in ["During 1", "During 2"] {
            let (title, author) = (title.to_owned(), author.clone());
            db.write(move |conn| {
                let new = newspaper_persistence::NewPost { title: newspaper_domain::PostTitle::parse(&title).unwrap(), content: String::new(), status: newspaper_domain::PostStatus::Published };
                newspaper_persistence::PostRepository::create(conn, &author, new, newspaper_domain::now())
            }).await.unwrap();
        }
        let state = db.read(OutboxRepository::state).await.unwrap();
        assert!(state.published < Seq(last + 2), "they were not published before the restart");

        let second = TestApp::spawn_with(database.clone(), |_| {}).await;
        // The new instance publishes what was pending...
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while db.read(OutboxRepository::state).await.unwrap().published < Seq(last + 2) {
            assert!(tokio::time::Instant::now() < deadline, "pending events were never published");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // ...and the client that lost its connection resumes without a gap or a duplicate.
        let mut resumed = second.ws(&format!("since={last}")).await;
        let titles: Vec<String> = vec![resumed.next_event().await, resumed.next_event().await]
            .into_iter().map(|e| e["title"].as_str().unwrap().to_owned()).collect();
        assert_eq!(titles, ["During 1", "During 2"]);
        second.wait_for_feed_size(1).await;
        second.create_post(&ann, "After", "published").await;
        assert_eq!(resumed.next_event().await["title"], "After");
    }

    async fn shutdown_closes_every_stream_with_1001(database) {
        let app = TestApp::spawn_with(database, |_| {}).await;
        let mut a = app.ws("").await;
        let mut b = app.ws("").await;
        app.wait_for_feed_size(2).await;
        let closing = tokio::spawn(app.stop());
        assert_eq!(a.close_code().await.0, 1001);
        assert_eq!(b.close_code().await.0, 1001);
        closing.await.unwrap();
    }

    async fn silent_clients_are_pinged_then_dropped(database) {
        let app = TestApp::spawn_with(database, |s| {
            s.realtime.heartbeat_interval = Duration::from_millis(200);
            s.realtime.idle_timeout = Duration::from_millis(900);
        }).await;
        let mut lively = app.ws("").await;
        let mut silent = app.ws("").await;
        // A client that reads answers the server's pings and stays; one that says nothing for
        // longer than the idle timeout is closed.
        let until = tokio::time::Instant::now() + Duration::from_millis(1600);
        while tokio::time::Instant::now() < until {
            lively.send_json(json!({"action": "ping"})).await;
            assert_eq!(lively.next_event().await, json!({"event": "pong"}));
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        let (code, reason) = silent.close_code().await;
        assert_eq!((code, reason.as_str()), (1000, "idle timeout"));
        lively.send_json(json!({"action": "ping"})).await;
        assert_eq!(lively.next_event().await, json!({"event": "pong"}));
    }
}

/// A server whose streams buffer `capacity` events, with small kernel send buffers, so a stuck
/// client's backlog builds up in seconds, not minutes.
async fn app_for_stuck_clients(capacity: usize) -> Arc<TestApp> {
    let app = TestApp::spawn_with(Arc::new(TestDatabase::sqlite()), |s| {
        s.realtime.channel_capacity = capacity;
        s.socket_send_buffer_bytes = Some(16 * 1024);
    })
    .await;
    Arc::new(app)
}

/// A client that stops reading must not slow anyone else down, and is dropped once its buffer
/// overflows; it can then resume with `since`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_dropped_without_delaying_others() {
    let app = app_for_stuck_clients(32).await;
    let ann = app.user("ann@example.com").await;
    let mut reader = app.ws("").await;
    let stalled = newspaper_tests::stalled_client(app.port).await;
    app.wait_for_feed_size(2).await;

    // The reader reads all along and notes when each event arrived.
    let (tx, mut arrivals) = tokio::sync::mpsc::unbounded_channel();
    let reading = tokio::spawn(async move {
        loop {
            let event = reader.next_event().await;
            if tx.send((seq(&event), tokio::time::Instant::now())).is_err() {
                return;
            }
        }
    });

    let title = "t".repeat(190);
    let mut sent = 0;
    let mut expected_seq = 0;
    let dropped_after = loop {
        let mut batch = Vec::new();
        for _ in 0..8 {
            let (app, ann, title) = (app.clone(), ann.clone(), title.clone());
            batch.push(tokio::spawn(
                async move { app.create_post(&ann, &title, "published").await },
            ));
        }
        for post in batch {
            post.await.unwrap();
        }
        let committed = tokio::time::Instant::now();
        sent += 8;
        for _ in 0..8 {
            let (seq, at) = tokio::time::timeout(Duration::from_secs(10), arrivals.recv())
                .await
                .expect("the reader was delayed")
                .unwrap();
            expected_seq += 1;
            assert_eq!(seq, expected_seq, "every event, in order");
            assert!(
                at.saturating_duration_since(committed) < Duration::from_secs(2),
                "delivery stalled behind the stuck client"
            );
        }
        if app.stats(None).await["groups"]["blog_feed"] == 1 {
            break sent;
        }
        assert!(sent < 20_000, "the stalled client was never dropped");
    };
    eprintln!("stalled client dropped after {dropped_after} events");
    reading.abort();
    let (code, reason) = stalled.drain_until_close().await;
    assert_eq!(code, Some(1013), "{reason}");
    assert!(reason.contains("since="), "{reason}");
}

/// A client that stops reading, falls behind and then leaves without reading its 1013 is still
/// counted as dropped for falling behind (its session may never have run to see the overflow).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_falls_behind_and_leaves_unread_is_counted_as_a_slow_consumer() {
    let app = app_for_stuck_clients(8).await;
    let ann = app.user("ann@example.com").await;
    let stalled = newspaper_tests::stalled_client(app.port).await;
    app.wait_for_feed_size(1).await;
    let title = "t".repeat(190);
    let mut sent = 0;
    // An overflowing stream leaves the feed at the next event, whether or not its session runs.
    while app.stats(None).await["groups"]["blog_feed"].as_u64().unwrap_or(0) > 0 {
        app.create_post(&ann, &title, "published").await;
        sent += 1;
        assert!(sent < 20_000, "the stalled client never fell behind");
    }
    drop(stalled);
    let scrape = app
        .metrics_until("the stalled stream counted as closed", |s| {
            s.count("newspaper_ws_streams", &[]) == 0.0
                && s.total("newspaper_ws_streams_closed_total") == 1.0
        })
        .await;
    assert_eq!(scrape.count("newspaper_ws_streams_closed_total", &[("code", "1013")]), 1.0);
}
