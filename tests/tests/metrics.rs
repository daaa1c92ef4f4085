//! `GET /metrics` tells an operator what happened, in numbers that match what the test did:
//! requests by route template (never by post id), streams opened and closed by code, events
//! delivered live and replayed, the dispatcher, the writer, the pool and the process.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use newspaper_tests::{Scrape, TestApp, app_tests, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const REQUESTS: &str = "newspaper_http_requests_total";

fn delivered(scrape: &Scrape, via: &str) -> f64 {
    scrape.count("newspaper_ws_events_delivered_total", &[("via", via)])
}

app_tests! {
    async fn requests_are_counted_by_route_template_method_and_status(app) {
        let ann = app.user("ann@example.com").await;
        let post = app.create_post(&ann, "Counted", "published").await;
        let id = post["id"].as_i64().unwrap();
        for _ in 0..2 {
            let (status, _) = app.get(&format!("/api/posts/{id}/"), None).await;
            assert_eq!(status, StatusCode::OK);
        }
        let (status, _) = app.get("/api/posts/987654/", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = app.get("/no/such/page/12345", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = app.call(Method::PATCH, &format!("/api/posts/{id}/"), None, Some(json!({}))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        let scrape = app.metrics().await;
        let route = "/api/posts/{id}/";
        assert_eq!(scrape.count(REQUESTS, &[("method", "GET"), ("route", route), ("status", "200")]), 2.0);
        assert_eq!(scrape.count(REQUESTS, &[("method", "GET"), ("route", route), ("status", "404")]), 1.0);
        assert_eq!(scrape.count(REQUESTS, &[("method", "PATCH"), ("route", route), ("status", "401")]), 1.0);
        assert_eq!(scrape.count(REQUESTS, &[("method", "POST"), ("route", "/api/posts/"), ("status", "201")]), 1.0);
        assert_eq!(scrape.count(REQUESTS, &[("method", "GET"), ("route", "unmatched"), ("status", "404")]), 1.0);
        // Bounded labels: no id, and no path a client made up, ever becomes a label value.
        for sample in scrape.all(REQUESTS) {
            let route = &sample.labels["route"];
            assert!(!route.chars().any(|c| c.is_ascii_digit()), "{route}");
        }
        let histogram = "newspaper_http_request_duration_seconds_count";
        assert_eq!(scrape.count(histogram, &[("method", "GET"), ("route", route)]), 3.0);
        let le = scrape.count("newspaper_http_request_duration_seconds_bucket", &[("method", "GET"), ("route", route), ("le", "+Inf")]);
        assert_eq!(le, 3.0);
    }

    async fn streams_groups_and_deliveries_match_what_clients_saw(app) {
        let ann = app.user("ann@example.com").await;
        let mut reader = app.ws("").await;
        let mut author = app.ws(&format!("token={}", ann.access)).await;
        app.wait_for_feed_size(2).await;
        let first = app.create_post(&ann, "One", "published").await;
        let draft = app.create_post(&ann, "Two", "draft").await;
        let id = first["id"].as_i64().unwrap();
        let (status, _) = app.call(Method::DELETE, &format!("/api/posts/{id}/"), Some(&ann.access), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        // The anonymous reader sees the published post's create and delete; its author also
        // sees the draft.
        let mut seen = 0;
        for client in [&mut reader, &mut author] {
            loop {
                let event = client.next_event().await;
                if event["event"] == "post_deleted" {
                    seen += 1;
                    break;
                }
                if event["event"] == "post_created" {
                    seen += 1;
                }
            }
        }
        assert_eq!(seen, 2 + 3, "{draft}");

        // The dispatcher counts an event once its sends returned, which may be after a client
        // already has it.
        let scrape = app
            .metrics_until("five live deliveries of three events", |s| {
                delivered(s, "live") == 5.0
                    && s.count("newspaper_dispatcher_events_published_total", &[]) == 3.0
            })
            .await;
        assert_eq!(scrape.count("newspaper_ws_streams", &[]), 2.0);
        assert_eq!(scrape.count("newspaper_ws_streams_opened_total", &[]), 2.0);
        assert_eq!(scrape.count("newspaper_ws_group_joins_total", &[("group", "blog_feed")]), 2.0);
        assert_eq!(scrape.count("newspaper_ws_group_joins_total", &[("group", "user")]), 1.0);
        assert_eq!(delivered(&scrape, "replay"), 0.0);

        // A late reader replays what it missed: one replay, two events (drafts stay private).
        let mut late = app.ws("since=0").await;
        assert_eq!(late.next_event().await["event"], "post_created");
        assert_eq!(late.next_event().await["event"], "post_deleted");
        let scrape = app.metrics_until("a replay", |s| delivered(s, "replay") == 2.0).await;
        assert_eq!(scrape.count("newspaper_ws_replays_total", &[]), 1.0);

        // Streams end with their close code: an oversized frame is 1009.
        late.send(Message::text("x".repeat(70_000))).await;
        assert_eq!(late.close_code().await.0, 1009);
        reader.close().await;
        author.close().await;
        // A client whose connection ends without a close frame is `gone`: there is no one to
        // send a close frame to, and it broke no protocol rule (1002).
        drop(app.ws("").await);
        // A stream's end is counted in several metrics, one after the other, and a scrape reads
        // them one after the other too: wait for a scrape that saw every stream's whole end.
        let feed = [("group", "blog_feed")];
        let scrape = app
            .metrics_until("every stream closed", |s| {
                s.count("newspaper_ws_streams", &[]) == 0.0
                    && s.total("newspaper_ws_streams_closed_total") == 4.0
                    && s.count("newspaper_ws_group_leaves_total", &feed)
                        == s.count("newspaper_ws_group_joins_total", &feed)
            })
            .await;
        assert_eq!(scrape.count("newspaper_ws_streams_closed_total", &[("code", "1009")]), 1.0);
        assert_eq!(scrape.count("newspaper_ws_streams_closed_total", &[("code", "1000")]), 2.0);
        assert_eq!(scrape.count("newspaper_ws_streams_closed_total", &[("code", "gone")]), 1.0);
        assert_eq!(scrape.count("newspaper_ws_streams_closed_total", &[("code", "1002")]), 0.0);
        assert_eq!(scrape.count("newspaper_ws_group_joins_total", &feed), 4.0);
    }

    async fn the_dispatcher_writer_pool_and_process_are_visible(app) {
        let ann = app.user("ann@example.com").await;
        for n in 0..3 {
            app.create_post(&ann, &format!("Post {n}"), "published").await;
        }
        let scrape = app
            .metrics_until("the dispatcher catching up", |s| {
                s.count("newspaper_dispatcher_events_published_total", &[]) == 3.0
                    && s.count("newspaper_outbox_backlog_events", &[]) == 0.0
            })
            .await;
        assert_eq!(scrape.get("newspaper_database_up", &[]), Some(1.0));
        let lag = scrape.get("newspaper_dispatcher_lag_seconds", &[]).unwrap();
        assert!((0.0..60.0).contains(&lag), "{lag}");
        // Registration and three creates, at least: every write goes through a batch.
        assert!(scrape.count("newspaper_db_write_batch_size_sum", &[]) >= 4.0, "{}", scrape.text);
        let batches = scrape.count("newspaper_db_write_batch_size_count", &[]);
        assert!(batches >= 1.0 && batches <= scrape.count("newspaper_db_write_batch_size_sum", &[]));
        assert_eq!(scrape.count("newspaper_db_write_batch_size_bucket", &[("le", "+Inf")]), batches);
        assert!(scrape.get("newspaper_db_pool_connections", &[("state", "idle")]).is_some());
        assert!(scrape.get("newspaper_db_pool_connections", &[("state", "in_use")]).is_some());
        assert_eq!(scrape.get("newspaper_db_pool_waiting", &[]), Some(0.0));
        assert_eq!(scrape.get("newspaper_db_write_queue", &[]), Some(0.0));
        assert_eq!(scrape.get("newspaper_db_write_batches_failed_total", &[]), Some(0.0));
        assert_eq!(scrape.get("newspaper_channel_layer_errors_total", &[]), Some(0.0));
        assert!(scrape.count("process_resident_memory_bytes", &[]) > 1e6, "{}", scrape.text);
        assert!(scrape.count("process_open_fds", &[]) > 0.0);
        assert!(scrape.get("process_cpu_seconds_total", &[]).is_some());
        for line in scrape.text.lines().filter(|l| l.starts_with("# TYPE newspaper_")) {
            let name = line.split(' ').nth(2).unwrap();
            let kind = line.split(' ').nth(3).unwrap();
            assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
        }
    }
}

backend_tests! {
    async fn metrics_can_move_to_a_private_address(database) {
        let app = TestApp::spawn_with(database, |s| s.metrics_bind = Some("127.0.0.1:0".parse().unwrap())).await;
        let port = app.metrics_port.expect("a metrics port");
        assert_ne!(port, app.port);
        let (status, body) = app.get("/metrics", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        let (status, _) = app.get("/api/posts/", None).await;
        assert_eq!(status, StatusCode::OK);
        let scrape = app.metrics().await;
        assert_eq!(scrape.count(REQUESTS, &[("route", "/api/posts/"), ("status", "200")]), 1.0);
        // Only /metrics lives there.
        let res = app.client.get(format!("http://127.0.0.1:{port}/api/posts/")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }
}
