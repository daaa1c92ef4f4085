//! When the database or the broker fails, requests are answered within a deadline (503 with
//! `Retry-After`), nothing is half done, and the service recovers by itself once the dependency
//! is back. Outages are made with a TCP proxy the test owns, between the server and PostgreSQL
//! or Redis: no real service is stopped.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use diesel::Connection;
use diesel::connection::SimpleConnection;
use newspaper_api::ChannelLayerSetting;
use newspaper_persistence::{DatabaseUrl, PostRepository};
use newspaper_tests::{Fault, FaultyProxy, PATIENCE, TestApp, TestDatabase};
use reqwest::{StatusCode, header};
use serde_json::json;

/// How long a request may take to be answered while a dependency is down: the wait for the
/// database plus a statement's time limit (the settings below), and room for a busy machine.
const ANSWER_WITHIN: Duration = Duration::from_secs(6);

fn settings(s: &mut newspaper_api::Settings) {
    s.database_timeout = Duration::from_secs(1);
    s.statement_timeout = Duration::from_secs(2);
}

/// The host and port a URL points at.
fn address_of(url: &str) -> SocketAddr {
    let parsed = url::Url::parse(url).unwrap();
    let host = parsed.host_str().unwrap();
    let host = if host == "localhost" { "127.0.0.1" } else { host };
    format!("{host}:{}", parsed.port_or_known_default().unwrap()).parse().unwrap()
}

/// The same URL, through the proxy.
fn through(url: &str, proxy: &FaultyProxy) -> String {
    let mut parsed = url::Url::parse(url).unwrap();
    parsed.set_host(Some("127.0.0.1")).unwrap();
    parsed.set_port(Some(proxy.port())).unwrap();
    parsed.to_string()
}

/// Sends a request and checks it is a prompt, honest 503.
async fn expect_unavailable(request: reqwest::RequestBuilder, what: &str) {
    let started = tokio::time::Instant::now();
    let res = request.send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "{what}");
    assert!(res.headers().contains_key(header::RETRY_AFTER), "{what}: Retry-After");
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body.get("detail").or(body.get("status")).is_some(), "{what}: {body}");
    assert!(took < ANSWER_WITHIN, "{what} took {took:?}");
    eprintln!("{what}: 503 after {took:?}");
}

/// Waits until the health check passes again.
async fn wait_until_healthy(app: &TestApp) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        if app.get("/api/health/", None).await.0 == StatusCode::OK {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "never healthy again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Posts stored, read directly (not through the proxy).
async fn post_count(app: &TestApp) -> i64 {
    let counts = app.db.read(PostRepository::count_by_status).await.unwrap();
    counts.draft + counts.published
}

/// PostgreSQL behind a proxy the test controls, and an app that reaches it only through it.
async fn app_behind_proxy() -> Option<(TestApp, FaultyProxy)> {
    let database = Arc::new(TestDatabase::postgres_from_env()?);
    let direct = database.url().as_connection_string().to_owned();
    let proxy = FaultyProxy::start(address_of(&direct)).await;
    let proxied = DatabaseUrl::parse(&through(&direct, &proxy)).unwrap();
    let app = TestApp::spawn_with(database, |s| {
        settings(s);
        s.database_url = proxied;
    })
    .await;
    Some((app, proxy))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_answered_503_in_time_and_the_service_heals() {
    let Some((app, proxy)) = app_behind_proxy().await else { return };
    let ann = app.user("ann@example.com").await;
    app.create_post(&ann, "Before", "published").await;

    proxy.set(Fault::Blackhole);
    expect_unavailable(
        app.request(reqwest::Method::GET, "/api/posts/", Some(&ann.access)),
        "an authenticated list",
    )
    .await;
    expect_unavailable(
        app.request(reqwest::Method::POST, "/api/posts/", Some(&ann.access))
            .json(&json!({"title": "Lost?"})),
        "a create",
    )
    .await;
    expect_unavailable(app.request(reqwest::Method::GET, "/api/health/", None), "the health check")
        .await;

    proxy.set(Fault::None);
    wait_until_healthy(&app).await;
    app.create_post(&ann, "After", "published").await;
    // The create answered 503 did not happen later behind the client's back.
    assert_eq!(post_count(&app).await, 2);
    let (_, listed) = app.get("/api/posts/", None).await;
    assert_eq!(listed["count"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_or_cut_database_is_answered_503_and_the_service_heals() {
    let Some((app, proxy)) = app_behind_proxy().await else { return };
    let ann = app.user("ann@example.com").await;
    proxy.set(Fault::Refuse);
    expect_unavailable(
        app.request(reqwest::Method::GET, "/api/posts/", Some(&ann.access)),
        "a list",
    )
    .await;
    expect_unavailable(
        app.request(reqwest::Method::POST, "/api/auth/token/", None)
            .json(&json!({"email": "ann@example.com", "password": newspaper_tests::PASSWORD})),
        "a login",
    )
    .await;
    proxy.set(Fault::None);
    wait_until_healthy(&app).await;
    // Connections cut in the middle of work are replaced, too.
    proxy.cut();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, _) = app
            .post(
                "/api/posts/",
                Some(&ann.access),
                json!({"title": "After the cut", "status": "published"}),
            )
            .await;
        if status == StatusCode::CREATED {
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "a failure is a 503, never a 500");
        assert!(tokio::time::Instant::now() < deadline, "never wrote again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(post_count(&app).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_lock_held_elsewhere_is_a_503_in_time_and_the_write_never_happens_later() {
    let database = Arc::new(TestDatabase::sqlite());
    let path = database.url().as_connection_string().to_owned();
    let app = TestApp::spawn_with(database, settings).await;
    let ann = app.user("ann@example.com").await;
    // Another process (a backup, a migration, a careless script) holds SQLite's write lock.
    let mut other = diesel::SqliteConnection::establish(&path).unwrap();
    other.batch_execute("BEGIN IMMEDIATE").unwrap();
    expect_unavailable(
        app.request(reqwest::Method::POST, "/api/posts/", Some(&ann.access))
            .json(&json!({"title": "Blocked"})),
        "a create while the lock is held",
    )
    .await;
    // Reads go on meanwhile.
    assert_eq!(app.get("/api/posts/", None).await.0, StatusCode::OK);
    other.batch_execute("ROLLBACK").unwrap();
    app.create_post(&ann, "Unblocked", "published").await;
    assert_eq!(post_count(&app).await, 1, "the write answered 503 never ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_keeps_writes_working_and_streams_catch_up() {
    let Some(redis_url) = newspaper_tests::redis_url("the broker outage test") else { return };
    let proxy = FaultyProxy::start(address_of(&redis_url)).await;
    let proxied = through(&redis_url, &proxy);
    let namespace = format!("faults-{}", std::process::id());
    let app = TestApp::spawn_with(Arc::new(TestDatabase::sqlite()), |s| {
        settings(s);
        s.channel_layer = ChannelLayerSetting::Redis(proxied);
        s.redis_namespace = namespace;
    })
    .await;
    let ann = app.user("ann@example.com").await;
    let mut client = app.ws("").await;
    app.wait_for_feed_size(1).await;

    // Connections cut: the layer reconnects and the stream catches up from the outbox.
    proxy.cut();
    let post = app.create_post(&ann, "During the cut", "published").await;
    assert_eq!(client.next_event().await["id"], post["id"]);

    // Unreachable: health says so, writes still work, the stream gets them afterwards.
    proxy.set(Fault::Blackhole);
    expect_unavailable(app.request(reqwest::Method::GET, "/api/health/", None), "the health check")
        .await;
    let during = app.create_post(&ann, "While unreachable", "published").await;
    proxy.set(Fault::None);
    wait_until_healthy(&app).await;
    assert_eq!(client.next_event().await["id"], during["id"]);
    let after = app.create_post(&ann, "After", "published").await;
    assert_eq!(client.next_event().await["id"], after["id"]);
}
