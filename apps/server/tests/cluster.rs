//! Two `newspaper` processes behind one address: sharing PostgreSQL and Redis, every guarantee
//! of the live feed holds across them, through an instance crash and a Redis restart.
//! Needs NEWSPAPER_TEST_POSTGRES_URL, NEWSPAPER_TEST_REDIS_URL and a `redis-server` binary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::time::Duration;

use newspaper_tests::{PASSWORD, RedisServer, ServerProcess, TEST_SECRET, TestDatabase, WsClient};
use serde_json::{Value, json};

fn environment() -> Option<(TestDatabase, RedisServer)> {
    newspaper_tests::redis_url("the multi-instance test")?;
    if !RedisServer::available() {
        newspaper_tests::skip_unless_required(
            "no redis-server binary to run a Redis of the test's own",
        );
        return None;
    }
    let database = TestDatabase::postgres_from_env()?;
    Some((database, RedisServer::start()))
}

fn instance(
    database: &TestDatabase,
    redis: &RedisServer,
    name: &str,
    namespace: &str,
) -> ServerProcess {
    ServerProcess::start(
        Path::new(env!("CARGO_BIN_EXE_newspaper")),
        &[
            ("NEWSPAPER_DATABASE_URL", database.url().as_connection_string().to_owned()),
            ("NEWSPAPER_CHANNEL_LAYER", redis.url()),
            ("NEWSPAPER_REDIS_NAMESPACE", namespace.to_owned()),
            ("NEWSPAPER_SECRET_KEY", TEST_SECRET.to_owned()),
            ("NEWSPAPER_INSTANCE_ID", name.to_owned()),
            ("NEWSPAPER_BCRYPT_COST", "4".to_owned()),
            ("NEWSPAPER_AUTH_RATE_LIMIT", "0".to_owned()),
        ],
    )
}

async fn post(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> Value {
    let mut request = client.post(format!("{base}{path}")).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert!(response.status().is_success(), "{path}: {}", response.status());
    response.json().await.unwrap()
}

async fn presence_reaches(client: &mut WsClient, count: u64) {
    tokio::time::timeout(Duration::from_secs(20), client.wait_for_presence(count))
        .await
        .unwrap_or_else(|_| panic!("presence never reached {count}"));
}

/// Post events until `n` have arrived, in order and without duplicates.
async fn events(client: &mut WsClient, n: usize, after: i64) -> Vec<Value> {
    let mut got = Vec::new();
    let mut last = after;
    while got.len() < n {
        let event = client.next_event().await;
        let seq = event["seq"].as_i64().unwrap_or_else(|| panic!("not a post event: {event}"));
        assert!(seq > last, "out of order or duplicate: {seq} after {last}");
        last = seq;
        got.push(event);
    }
    got
}

fn titles(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["title"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_feed_through_a_crash_and_a_redis_restart() {
    let Some((database, mut redis)) = environment() else { return };
    let namespace = format!("cluster-{}", std::process::id());
    // A starts first, so it holds the publishing lease throughout.
    let a = instance(&database, &redis, "a", &namespace);
    let b = instance(&database, &redis, "b", &namespace);
    let http = reqwest::Client::new();
    let base_a = a.url();
    post(
        &http,
        &base_a,
        "/api/auth/register/",
        None,
        json!({"email": "ann@example.com", "password": PASSWORD}),
    )
    .await;
    let tokens = post(
        &http,
        &base_a,
        "/api/auth/token/",
        None,
        json!({"email": "ann@example.com", "password": PASSWORD}),
    )
    .await;
    let token = tokens["access"].as_str().unwrap().to_owned();

    // Presence counts the clients of both instances.
    let ws = |port: u16, query: String| async move {
        WsClient::connect(&format!("ws://127.0.0.1:{port}/ws/blog/?{query}"), None).await.unwrap()
    };
    let mut on_b = ws(b.port, String::new()).await;
    let mut on_a = ws(a.port, String::new()).await;
    presence_reaches(&mut on_b, 2).await;
    presence_reaches(&mut on_a, 2).await;

    // Posts written on A reach a client on B, in seq order.
    for i in 0..5 {
        post(
            &http,
            &base_a,
            "/api/posts/",
            Some(&token),
            json!({"title": format!("From A {i}"), "status": "published"}),
        )
        .await;
    }
    let seen = events(&mut on_b, 5, 0).await;
    assert_eq!(titles(&seen), (0..5).map(|i| format!("From A {i}")).collect::<Vec<_>>());
    let last_on_b = seen[4]["seq"].as_i64().unwrap();
    let first_on_a = events(&mut on_a, 5, 0).await;
    assert_eq!(titles(&first_on_a), titles(&seen));

    // B dies. Its client is gone; its count expires; it resumes on A and misses nothing.
    b.kill();
    drop(on_b);
    presence_reaches(&mut on_a, 1).await;
    for i in 0..3 {
        post(
            &http,
            &base_a,
            "/api/posts/",
            Some(&token),
            json!({"title": format!("While B was down {i}"), "status": "published"}),
        )
        .await;
    }
    let mut resumed = ws(a.port, format!("since={last_on_b}")).await;
    let replayed = events(&mut resumed, 3, last_on_b).await;
    assert_eq!(
        titles(&replayed),
        (0..3).map(|i| format!("While B was down {i}")).collect::<Vec<_>>()
    );
    let _ = events(&mut on_a, 3, first_on_a[4]["seq"].as_i64().unwrap()).await;
    let before_outage = replayed[2]["seq"].as_i64().unwrap();

    // Redis restarts mid-stream: HTTP keeps working, and the connected clients get every
    // event of the outage once Redis is back, without reconnecting.
    redis.kill();
    for i in 0..2 {
        post(
            &http,
            &base_a,
            "/api/posts/",
            Some(&token),
            json!({"title": format!("During the outage {i}"), "status": "published"}),
        )
        .await;
    }
    // Until the instance has noticed: its health check fails (the load balancer hears of it).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while http.get(format!("{base_a}/api/health/")).send().await.unwrap().status() != 503 {
        assert!(tokio::time::Instant::now() < deadline, "the outage never showed in health");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listed: Value = http
        .get(format!("{base_a}/api/posts/?search=outage"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["count"], 2, "reads work while Redis is down");
    redis.restart();
    post(
        &http,
        &base_a,
        "/api/posts/",
        Some(&token),
        json!({"title": "After the outage", "status": "published"}),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while http.get(format!("{base_a}/api/health/")).send().await.unwrap().status() != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never healthy again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for client in [&mut resumed, &mut on_a] {
        let after = events(client, 3, before_outage).await;
        assert_eq!(
            titles(&after),
            ["During the outage 0", "During the outage 1", "After the outage"]
        );
    }

    // A new instance joins and is live at once.
    let c = instance(&database, &redis, "c", &namespace);
    let mut on_c = ws(c.port, String::new()).await;
    presence_reaches(&mut on_c, 3).await;
    post(
        &http,
        &base_a,
        "/api/posts/",
        Some(&token),
        json!({"title": "Hello C", "status": "published"}),
    )
    .await;
    assert_eq!(on_c.next_event().await["title"], "Hello C");
}

/// Credentials and positions across instances: a password change on A closes the user's
/// stream on B with 4003, and a list loaded from one instance is followed exactly from its
/// `X-Feed-Seq` on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_on_one_instance_closes_the_users_streams_on_another() {
    let Some((database, redis)) = environment() else { return };
    let namespace = format!("revoke-{}", std::process::id());
    let a = instance(&database, &redis, "a", &namespace);
    let b = instance(&database, &redis, "b", &namespace);
    let http = reqwest::Client::new();
    let (base_a, base_b) = (a.url(), b.url());
    let credentials = json!({"email": "ann@example.com", "password": PASSWORD});
    post(&http, &base_a, "/api/auth/register/", None, credentials.clone()).await;
    let tokens = post(&http, &base_a, "/api/auth/token/", None, credentials).await;
    let token = tokens["access"].as_str().unwrap().to_owned();
    post(
        &http,
        &base_a,
        "/api/posts/",
        Some(&token),
        json!({"title": "Seen", "status": "published"}),
    )
    .await;

    // Loaded from B, streamed from A.
    let loaded = http.get(format!("{base_b}/api/posts/")).send().await.unwrap();
    let position: i64 = loaded.headers()["x-feed-seq"].to_str().unwrap().parse().unwrap();
    let listed: Value = loaded.json().await.unwrap();
    assert_eq!(listed["count"], 1);
    let ws = |port: u16, query: String| async move {
        WsClient::connect(&format!("ws://127.0.0.1:{port}/ws/blog/?{query}"), None).await.unwrap()
    };
    let mut follower = ws(a.port, format!("since={position}")).await;
    let mut anns_on_b = ws(b.port, format!("token={token}")).await;
    let mut anonymous_on_b = ws(b.port, String::new()).await;
    presence_reaches(&mut anonymous_on_b, 3).await;
    post(&http, &base_a, "/api/posts/", Some(&token), json!({"title": "Draft", "status": "draft"}))
        .await;
    assert_eq!(anns_on_b.next_event().await["title"], "Draft", "B shows Ann her draft");
    post(
        &http,
        &base_a,
        "/api/posts/",
        Some(&token),
        json!({"title": "New", "status": "published"}),
    )
    .await;
    let first = follower.next_event().await;
    assert_eq!(first["title"], "New", "exactly what came after the list loaded from B");
    assert_eq!(anonymous_on_b.next_event().await["title"], "New");

    let changed_at = tokio::time::Instant::now();
    post(
        &http,
        &base_a,
        "/api/auth/password/change/",
        Some(&token),
        json!({"old_password": PASSWORD, "new_password": "a brand new secret"}),
    )
    .await;
    let (code, reason) = anns_on_b.close_code().await;
    assert_eq!((code, reason.as_str()), (4003, "credentials revoked"));
    eprintln!("closed on B {:?} after the change on A", changed_at.elapsed());
    assert!(changed_at.elapsed() < Duration::from_secs(3));
    // Nobody else was touched.
    let tokens = post(
        &http,
        &base_b,
        "/api/auth/token/",
        None,
        json!({"email": "ann@example.com", "password": "a brand new secret"}),
    )
    .await;
    let token = tokens["access"].as_str().unwrap().to_owned();
    post(
        &http,
        &base_b,
        "/api/posts/",
        Some(&token),
        json!({"title": "After", "status": "published"}),
    )
    .await;
    assert_eq!(anonymous_on_b.next_event().await["title"], "After");
    assert_eq!(follower.next_event().await["title"], "After");
}
