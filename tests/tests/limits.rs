//! Hostile or unlucky input has a bounded cost: statements stop at their time limit (503), a
//! client is who the trusted proxies say it is, and per-client limits (login attempts, open
//! streams) hold behind a proxy without locking everyone else out; replays wait their turn.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use diesel::RunQueryDsl;
use newspaper_persistence::DbConnection;
use newspaper_tests::{PASSWORD, PATIENCE, TestApp, WsClient, backend_tests};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

/// Fills the database with `n` published posts of 3,000 `x`s each, straight through SQL: slow
/// to scan for a term a trigram index cannot answer, cheap to index (one trigram per post).
async fn fill(app: &TestApp, author: i64, n: i64) {
    app.db
        .write(move |conn| {
            let sql = match conn {
                DbConnection::Sqlite(_) => format!(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n})
                     INSERT INTO posts (title, content, status, author_id, created_at, updated_at)
                     SELECT 'filler ' || i, replace(hex(zeroblob(1500)), '0', 'x'), 'published',
                            {author}, '2026-01-01 00:00:00', '2026-01-01 00:00:00' FROM n"
                ),
                DbConnection::Postgres(_) => {
                    // The setup itself is not what is being limited.
                    diesel::sql_query("SET LOCAL statement_timeout = 0").execute(conn)?;
                    format!(
                        "INSERT INTO posts (title, content, status, author_id, created_at, updated_at)
                         SELECT 'filler ' || i, repeat('x', 3000), 'published', {author},
                                '2026-01-01 00:00:00', '2026-01-01 00:00:00'
                         FROM generate_series(1, {n}) AS i"
                    )
                }
            };
            // The counters follow by trigger, as with every write.
            diesel::sql_query(sql).execute(conn)?;
            Ok::<_, newspaper_persistence::PersistenceError>(())
        })
        .await
        .unwrap();
}

fn forwarded(client: &str) -> [(&'static str, &str); 1] {
    [("X-Forwarded-For", client)]
}

backend_tests! {
    async fn a_statement_past_its_time_limit_is_a_503_and_the_next_request_is_served(database) {
        let app = TestApp::spawn_with(database, |s| s.statement_timeout = Duration::from_millis(150)).await;
        let ann = app.user("ann@example.com").await;
        fill(&app, ann.id, 50_000).await;
        // A two-letter term (no trigram for an index to answer) that every post almost
        // contains: every row is read and tried at each of its characters, far past the limit.
        let res = app.request(reqwest::Method::GET, "/api/posts/?search=xq", Some(&ann.access)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[header::RETRY_AFTER], "1");
        assert_eq!(res.json::<Value>().await.unwrap(), json!({"detail": "The service is temporarily unavailable. Please retry."}));
        // The connection that was stopped serves the next request.
        for _ in 0..5 {
            let (status, page) = app.get("/api/posts/?page_size=1", Some(&ann.access)).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(page["count"], 50_000);
        }
    }

    async fn streams_per_client_are_limited_behind_trusted_proxies(database) {
        let app = TestApp::spawn_with(database, |s| {
            s.ws_max_per_client = 2;
            s.trusted_proxies = "127.0.0.1".parse().unwrap();
        })
        .await;
        let url = format!("ws://127.0.0.1:{}/ws/blog/", app.port);
        let first = WsClient::connect_with(&url, &forwarded("203.0.113.1")).await.unwrap();
        let _second = WsClient::connect_with(&url, &forwarded("203.0.113.1")).await.unwrap();
        match WsClient::connect_with(&url, &forwarded("203.0.113.1")).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 429);
                let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
                assert_eq!(body, json!({"detail": "Too many open streams from this address (at most 2)."}));
            }
            other => panic!("expected 429, got {:?}", other.map(|_| "a stream")),
        }
        // Other clients behind the same proxy are not affected; nor are local ones.
        let _other = WsClient::connect_with(&url, &forwarded("203.0.113.2")).await.unwrap();
        let _local = [app.ws("").await, app.ws("").await, app.ws("").await];
        // A closed stream frees its place.
        first.close().await;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while WsClient::connect_with(&url, &forwarded("203.0.113.1")).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "the place was never freed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn replays_wait_their_turn_and_all_complete(database) {
        // A pool of 2: one connection for replays at a time, the other for requests.
        let app = Arc::new(TestApp::spawn_with(database, |s| s.database_pool_size = Some(2)).await);
        let ann = app.user("ann@example.com").await;
        fill(&app, ann.id, 10).await;
        for i in 0..600 {
            if i % 100 == 0 { tokio::task::yield_now().await; }
            app.create_post(&ann, &format!("Event {i}"), "published").await;
        }
        let mut replaying = Vec::new();
        for _ in 0..12 {
            let app = app.clone();
            replaying.push(tokio::spawn(async move {
                let mut client = app.ws("since=0").await;
                client.events_until(600).await.len()
            }));
        }
        // Meanwhile requests are answered.
        for _ in 0..10 {
            assert_eq!(app.get("/api/posts/", Some(&ann.access)).await.0, StatusCode::OK);
        }
        for replay in replaying {
            assert_eq!(replay.await.unwrap(), 600, "every event, exactly once");
        }
    }
}

/// A client that sends its attempts from another address than the proxy's.
fn client_from(address: &str) -> reqwest::Client {
    reqwest::Client::builder().local_address(address.parse::<IpAddr>().unwrap()).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_throttle_sees_clients_behind_the_proxy_and_ignores_claims_from_others() {
    let app = TestApp::spawn_with(Arc::new(newspaper_tests::TestDatabase::sqlite()), |s| {
        s.auth_rate_limit_per_minute = 3;
        s.trusted_proxies = "127.0.0.1".parse().unwrap();
    })
    .await;
    // Registration is throttled too; log the user in once, with the limit's allowance.
    let (status, _) = app
        .post(
            "/api/auth/register/",
            None,
            json!({"email": "ann@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let proxy = client_from("127.0.0.1");
    let login = |client: &reqwest::Client, forwarded_for: &str, password: &str| {
        client
            .post(app.url("/api/auth/token/"))
            .header("X-Forwarded-For", forwarded_for)
            .json(&json!({"email": "ann@example.com", "password": password}))
            .send()
    };
    for _ in 0..3 {
        assert_eq!(login(&proxy, "198.51.100.1", "wrong password").await.unwrap().status(), 401);
    }
    let throttled = login(&proxy, "198.51.100.1", PASSWORD).await.unwrap();
    assert_eq!(throttled.status(), 429);
    assert!(throttled.headers().contains_key(header::RETRY_AFTER));
    // Everyone else behind the same proxy still logs in.
    assert_eq!(login(&proxy, "198.51.100.2", PASSWORD).await.unwrap().status(), 200);
    assert_eq!(login(&proxy, "1.1.1.1, 198.51.100.3", PASSWORD).await.unwrap().status(), 200);
    // A client that is not a trusted proxy cannot dodge the limit by claiming to be others.
    let direct = client_from("127.0.0.2");
    for i in 0..3 {
        let status =
            login(&direct, &format!("192.0.2.{i}"), "wrong password").await.unwrap().status();
        assert_eq!(status, 401);
    }
    assert_eq!(login(&direct, "192.0.2.99", PASSWORD).await.unwrap().status(), 429);
}
