//! The examples run as their documentation says: each is started as its own process and used
//! over the network, the way a developer reading it would try it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use newspaper_tests::{
    ExampleProcess, PASSWORD, PATIENCE, TestApp, WsClient, backend_tests, example_binary, read,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// A line-based client of the rooms example.
struct ChatClient {
    lines: Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
}

impl ChatClient {
    async fn connect(address: std::net::SocketAddr, nick: &str) -> ChatClient {
        let (read, write) = TcpStream::connect(address).await.unwrap().into_split();
        let mut client = ChatClient { lines: BufReader::new(read).lines(), write };
        assert!(client.next().await.starts_with("welcome"));
        client.say(&format!("/nick {nick}")).await;
        assert_eq!(client.next().await, format!("* you are {nick}"));
        client
    }

    async fn say(&mut self, line: &str) {
        self.write.write_all(format!("{line}\n").as_bytes()).await.unwrap();
    }

    async fn next(&mut self) -> String {
        tokio::time::timeout(PATIENCE, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no line within {PATIENCE:?}"))
            .unwrap()
            .unwrap_or_else(|| panic!("the server hung up"))
    }

    /// Skips lines until one equals `wanted`.
    async fn expect(&mut self, wanted: &str) {
        loop {
            if self.next().await == wanted {
                return;
            }
        }
    }

    async fn join(&mut self, room: &str, nick: &str) {
        self.say(&format!("/join {room}")).await;
        let line = self.next().await;
        assert!(line.starts_with(&format!("* {nick} joined (")), "{line}");
    }

    /// Asks for the room's size until it is `n` (presence across instances settles).
    async fn wait_for_who(&mut self, room: &str, n: usize) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            self.say("/who").await;
            let line = loop {
                let line = self.next().await;
                if line.ends_with(&format!(" in {room}")) {
                    break line;
                }
            };
            if line == format!("{n} in {room}") {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "never {n} in {room}: {line}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn rooms_deliver_to_the_room_only_and_count_presence() {
    let rooms = ExampleProcess::start("rooms", &["--listen", "127.0.0.1:0"]);
    let mut ann = ChatClient::connect(rooms.address, "ann").await;
    let mut bob = ChatClient::connect(rooms.address, "bob").await;
    let mut cat = ChatClient::connect(rooms.address, "cat").await;
    ann.join("lobby", "ann").await;
    bob.join("lobby", "bob").await;
    ann.expect("* bob joined (2 here)").await;
    cat.join("kitchen", "cat").await;
    ann.wait_for_who("lobby", 2).await;

    ann.say("hello lobby").await;
    bob.expect("ann: hello lobby").await;
    // Cat, elsewhere, hears only its own room: its next line is what it says itself.
    cat.say("anyone?").await;
    assert_eq!(cat.next().await, "cat: anyone?");

    bob.say("/quit").await;
    ann.expect("* bob left").await;
    ann.wait_for_who("lobby", 1).await;
    ann.say("/join no spaces allowed").await;
    assert!(ann.next().await.starts_with("* a room name is"));
}

#[tokio::test]
async fn rooms_are_shared_by_instances_on_one_redis() {
    let Some(redis) = newspaper_tests::redis_url("the shared-rooms example test") else { return };
    let namespace = format!("rooms-test-{}", std::process::id());
    let args = |_: u8| {
        ["--listen", "127.0.0.1:0", "--redis", redis.as_str(), "--namespace", namespace.as_str()]
    };
    let a = ExampleProcess::start("rooms", &args(0));
    let b = ExampleProcess::start("rooms", &args(1));
    let mut ann = ChatClient::connect(a.address, "ann").await;
    let mut bob = ChatClient::connect(b.address, "bob").await;
    ann.join("lobby", "ann").await;
    bob.join("lobby", "bob").await;
    ann.wait_for_who("lobby", 2).await;
    bob.wait_for_who("lobby", 2).await;
    ann.say("across instances").await;
    bob.expect("ann: across instances").await;
    bob.say("received").await;
    ann.expect("bob: received").await;
}

/// Writes `posts` as the import file and runs the example against `database_url`.
fn import(database_url: &str, posts: &Value) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("posts.json");
    std::fs::write(&file, posts.to_string()).unwrap();
    std::process::Command::new(example_binary("import"))
        .env_clear()
        .args(["--database-url", database_url])
        .arg(&file)
        .output()
        .unwrap()
}

backend_tests! {
    async fn import_writes_all_posts_in_one_transaction_and_live_clients_see_them(database) {
        let app = TestApp::spawn_with(database.clone(), |_| {}).await;
        let ann = app.user("ann@example.com").await;
        let mut reader = app.ws("").await;
        app.wait_for_feed_size(1).await;
        let url = database.url().as_connection_string().to_owned();

        // One bad post (blank title, unknown author): nothing is imported, and it says why.
        let bad = json!([
            {"author": "ann@example.com", "title": "Fine", "status": "published"},
            {"author": "ann@example.com", "title": "   "},
            {"author": "nobody@example.com", "title": "Orphan"},
        ]);
        let out = import(&url, &bad);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("nothing imported"), "{err}");
        assert!(err.contains("post 2: title: This field may not be blank."), "{err}");
        assert!(err.contains("post 3: no user has the email nobody@example.com"), "{err}");
        assert_eq!(app.event_count().await, 0);

        let good = json!([
            {"author": "ann@example.com", "title": "Imported one", "content": "from a file", "status": "published"},
            {"author": "ANN@example.com", "title": "Imported two", "status": "published"},
            {"author": "ann@example.com", "title": "Imported draft"},
        ]);
        let out = import(&url, &good);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "imported 3 posts (feed events 1 to 3)");
        // The server publishes what another process committed: the reader sees the two
        // published posts, in order, and never the draft.
        for title in ["Imported one", "Imported two"] {
            let event = reader.next_event().await;
            assert_eq!((event["event"].as_str(), event["title"].as_str()), (Some("post_created"), Some(title)), "{event}");
        }
        reader.expect_silence(Duration::from_millis(300)).await;
        let (status, page) = app.get("/api/posts/?ordering=created_at", Some(&ann.access)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["count"], 3);
        assert_eq!(page["results"][2]["status"], "draft");
    }
}

#[tokio::test]
async fn embed_serves_the_newspaper_under_a_prefix_beside_its_own_routes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db").display().to_string();
    let shop = ExampleProcess::start("embed", &["--listen", "127.0.0.1:0", "--database-url", &db]);
    let base = format!("http://{}", shop.address);
    let client =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let get = |path: &str| client.get(format!("{base}{path}")).send();

    // The host application's own routes are untouched.
    let home = get("/").await.unwrap().text().await.unwrap();
    assert!(home.contains("The shop"), "{home}");
    assert_eq!(get("/healthz").await.unwrap().text().await.unwrap(), "ok");

    // The newspaper lives under /news, and every link it makes says so.
    let index = get("/news/").await.unwrap().text().await.unwrap();
    assert!(
        index.contains("href=\"/news/ws-demo/\"") && index.contains("/news/ws/blog/"),
        "{index}"
    );
    let demo = get("/news/ws-demo/").await.unwrap().text().await.unwrap();
    assert!(demo.contains("data-base=\"/news\""), "the demo page calls /news/api/");
    let (status, schema) = read(get("/news/api/schema/").await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(schema["servers"], json!([{"url": "/news"}]));
    let docs = get("/news/api/docs").await.unwrap();
    assert_eq!(docs.headers()["location"], "/news/api/docs/");
    let initializer =
        get("/news/api/docs/swagger-initializer.js").await.unwrap().text().await.unwrap();
    assert!(initializer.contains("/news/api/schema/"), "{initializer}");
    let (status, body) = read(get("/news/no-such-page").await.unwrap()).await;
    assert_eq!((status, body), (StatusCode::NOT_FOUND, json!({"detail": "Not found."})));
    assert_eq!(
        get("/api/posts/").await.unwrap().status(),
        StatusCode::NOT_FOUND,
        "nothing at the root"
    );

    let post = |path: &str, token: Option<&str>, body: Value| {
        let mut req = client.post(format!("{base}{path}")).json(&body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send()
    };
    let (status, _) = read(
        post(
            "/news/api/auth/register/",
            None,
            json!({"email": "ann@example.com", "password": PASSWORD}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, tokens) = read(
        post(
            "/news/api/auth/token/",
            None,
            json!({"email": "ann@example.com", "password": PASSWORD}),
        )
        .await
        .unwrap(),
    )
    .await;
    let token = tokens["access"].as_str().unwrap();

    let mut reader =
        WsClient::connect(&format!("ws://{}/news/ws/blog/", shop.address), None).await.unwrap();
    for title in ["First", "Second"] {
        let res =
            post("/news/api/posts/", Some(token), json!({"title": title, "status": "published"}))
                .await
                .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        let location = res.headers()["location"].to_str().unwrap().to_owned();
        let (_, created) = read(res).await;
        assert_eq!(location, format!("/news/api/posts/{}/", created["id"]));
        let event = reader.next_event().await;
        assert_eq!(event["title"], title, "{event}");
    }
    let (_, page) = read(get("/news/api/posts/?page_size=1").await.unwrap()).await;
    assert_eq!(page["next"], format!("{base}/news/api/posts/?page_size=1&page=2"));
    let metrics = get("/news/metrics").await.unwrap().text().await.unwrap();
    assert!(metrics.contains("route=\"/news/api/posts/\""), "metrics label the mounted routes");
}
