//! The one helper every black-box test uses: spawn the real server on port 0 against a fresh
//! database, then talk to it over real HTTP and real WebSockets.

mod demo_page;
mod faults;
mod process;
mod scrape;
mod tls;
mod ws;

use std::sync::{Arc, Once};
use std::time::Duration;

pub use demo_page::{artifacts_dir, browser_available, log_has_js, post_item_js};
pub use faults::{Fault, FaultyProxy};
use newspaper_api::{Application, ApplicationHandle, Settings};
pub use newspaper_persistence::testing::{
    POSTGRES_URL_VAR, REQUIRE_SERVICES_VAR, TestDatabase, service_url, skip_unless_required,
};

/// The variable that points tests at a Redis server (they use their own key namespace).
pub const REDIS_URL_VAR: &str = "NEWSPAPER_TEST_REDIS_URL";

/// The Redis URL from [`REDIS_URL_VAR`], or `None` after saying `what` does not run (a failure
/// instead when NEWSPAPER_REQUIRE_SERVICES is set).
pub fn redis_url(what: &str) -> Option<String> {
    service_url(REDIS_URL_VAR, what)
}
use newspaper_persistence::{Database, PoolOptions, UserRepository};
pub use process::{
    ExampleProcess, PrometheusServer, RedisServer, ServerProcess, example_binary, free_port,
};
use reqwest::{Method, StatusCode};
pub use scrape::{Sample, Scrape};
use serde_json::{Value, json};
pub use tls::{TestCa, certificate_names};
use tokio::task::JoinHandle;
pub use ws::{StalledClient, WsClient, WsError, stalled_client};

/// The signing key test servers use, so tests can forge tokens with it.
pub const TEST_SECRET: &str = "test-secret-key-not-for-production";
/// A password that passes every rule.
pub const PASSWORD: &str = "correct horse battery staple";

/// How long a test waits for something that should happen promptly.
pub const PATIENCE: Duration = Duration::from_secs(10);

fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        }
    });
}

/// Settings for a test server on `db`: port 0, cheap bcrypt, no throttling, fixed secret.
pub fn test_settings(db: &TestDatabase) -> Settings {
    let mut settings = Settings::new(db.url().clone());
    settings.bind = "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"));
    settings.secret_key = Some(TEST_SECRET.into());
    settings.bcrypt_cost = 4;
    settings.auth_rate_limit_per_minute = 0;
    settings.workers = Some(2);
    settings.max_connections_per_worker = 25_000;
    settings
}

/// A registered user with fresh tokens.
#[derive(Debug, Clone)]
pub struct TestUser {
    /// User id.
    pub id: i64,
    /// Email (normalised).
    pub email: String,
    /// Access token.
    pub access: String,
    /// Refresh token.
    pub refresh: String,
}

/// A running server and a client for it.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    /// The bound port.
    pub port: u16,
    /// The port of `/metrics` when the settings gave it an address of its own.
    pub metrics_port: Option<u16>,
    /// An HTTP client (no redirects followed, so they can be asserted).
    pub client: reqwest::Client,
    /// The same database the server uses, for setting up and inspecting state.
    pub db: Database,
    /// The settings the server runs with.
    pub settings: Settings,
    /// The database; shared so a restarted server sees the same data.
    pub database: Arc<TestDatabase>,
    handle: ApplicationHandle,
    server: JoinHandle<std::io::Result<()>>,
}

impl TestApp {
    /// A server on a fresh SQLite database.
    pub async fn spawn() -> TestApp {
        Self::spawn_with(Arc::new(TestDatabase::sqlite()), |_| {}).await
    }

    /// A server on `database`, with settings adjusted by `tweak`.
    pub async fn spawn_with(
        database: Arc<TestDatabase>,
        tweak: impl FnOnce(&mut Settings),
    ) -> TestApp {
        init_tracing();
        let mut settings = test_settings(&database);
        tweak(&mut settings);
        let app = Application::build(settings.clone())
            .await
            .unwrap_or_else(|e| panic!("the test server did not start: {e}"));
        let port = app.port();
        let metrics_port = app.metrics_port();
        let handle = app.handle();
        let server = tokio::spawn(app.run_until_stopped());
        let db = Database::connect(
            database.url(),
            PoolOptions { max_size: 4, ..PoolOptions::for_backend(database.url().backend()) },
        )
        .unwrap_or_else(|e| panic!("test database: {e}"));
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        TestApp {
            address: format!("http://127.0.0.1:{port}"),
            port,
            metrics_port,
            client,
            db,
            settings,
            database,
            handle,
            server,
        }
    }

    /// Stops gracefully (WebSockets get 1001).
    pub async fn stop(self) {
        self.handle.shutdown().await;
        let _ = tokio::time::timeout(PATIENCE, self.server).await;
    }

    /// Stops abruptly, as a crash would (no close frames, no lease release).
    pub async fn crash(self) {
        self.handle.abort().await;
        self.server.abort();
        let _ = self.server.await;
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// A request with an optional bearer token.
    pub fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut req = self.client.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req
    }

    /// Sends a request and returns status and JSON body (`Value::Null` for an empty body).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.request(method, path, token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap_or_else(|e| panic!("request to {path} failed: {e}"));
        read(res).await
    }

    /// GET.
    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(Method::GET, path, token, None).await
    }

    /// POST a JSON body.
    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, token, Some(body)).await
    }

    /// `POST /api/auth/token/`: status and body (the token pair on success).
    pub async fn log_in(&self, email: &str, password: &str) -> (StatusCode, Value) {
        self.post("/api/auth/token/", None, json!({"email": email, "password": password})).await
    }

    /// Logs `user` in again (with [`PASSWORD`]): the same user with fresh tokens.
    pub async fn fresh_tokens(&self, user: &TestUser) -> TestUser {
        let (status, tokens) = self.log_in(&user.email, PASSWORD).await;
        assert_eq!(status, StatusCode::OK, "login {}: {tokens}", user.email);
        TestUser {
            access: tokens["access"].as_str().unwrap_or_default().to_owned(),
            refresh: tokens["refresh"].as_str().unwrap_or_default().to_owned(),
            ..user.clone()
        }
    }

    /// Registers and logs in a user.
    pub async fn user(&self, email: &str) -> TestUser {
        let (status, body) = self
            .post("/api/auth/register/", None, json!({"email": email, "password": PASSWORD}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "register {email}: {body}");
        let id = body["id"].as_i64().unwrap_or_default();
        let (status, tokens) = self.log_in(email, PASSWORD).await;
        assert_eq!(status, StatusCode::OK, "login {email}: {tokens}");
        TestUser {
            id,
            email: body["email"].as_str().unwrap_or_default().to_owned(),
            access: tokens["access"].as_str().unwrap_or_default().to_owned(),
            refresh: tokens["refresh"].as_str().unwrap_or_default().to_owned(),
        }
    }

    /// Registers a user and makes them staff.
    pub async fn staff(&self, email: &str) -> TestUser {
        let user = self.user(email).await;
        let id = newspaper_domain::UserId(user.id);
        self.db
            .write(move |conn| UserRepository::set_staff(conn, id, true, newspaper_domain::now()))
            .await
            .unwrap_or_else(|e| panic!("set staff: {e}"));
        user
    }

    /// Creates a post as `user`; returns its JSON.
    pub async fn create_post(&self, user: &TestUser, title: &str, status: &str) -> Value {
        let (code, body) = self
            .post(
                "/api/posts/",
                Some(&user.access),
                json!({"title": title, "content": format!("{title} text"), "status": status}),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED, "create post: {body}");
        body
    }

    /// Opens `/ws/blog/` with a query string (e.g. `token=...&since=3`).
    pub async fn ws(&self, query: &str) -> WsClient {
        WsClient::connect(&format!("ws://127.0.0.1:{}/ws/blog/?{query}", self.port), None)
            .await
            .unwrap_or_else(|e| panic!("WebSocket handshake failed: {e:?}"))
    }

    /// How many outbox events exist.
    pub async fn event_count(&self) -> usize {
        self.db
            .read(|conn| {
                newspaper_persistence::OutboxRepository::list_after(
                    conn,
                    newspaper_domain::Seq(0),
                    1_000_000,
                )
            })
            .await
            .map(|events| events.len())
            .unwrap_or_else(|e| panic!("outbox: {e}"))
    }

    /// Realtime stats as JSON.
    pub async fn stats(&self, token: Option<&str>) -> Value {
        let (status, body) = self.get("/api/realtime/stats/", token).await;
        assert_eq!(status, StatusCode::OK);
        body
    }

    /// Scrapes `/metrics` (on its own port when it has one).
    pub async fn metrics(&self) -> Scrape {
        let port = self.metrics_port.unwrap_or(self.port);
        let res = self
            .client
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("scrape: {e}"));
        assert_eq!(res.status(), StatusCode::OK);
        let kind = res.headers().get("content-type").cloned();
        assert_eq!(
            kind.as_ref().and_then(|v| v.to_str().ok()),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        Scrape::parse(&res.text().await.unwrap_or_default())
    }

    /// Scrapes until `ready` accepts a scrape (counters are updated as sessions run), or panics
    /// with the last one.
    pub async fn metrics_until(&self, what: &str, ready: impl Fn(&Scrape) -> bool) -> Scrape {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let scrape = self.metrics().await;
            if ready(&scrape) {
                return scrape;
            }
            assert!(tokio::time::Instant::now() < deadline, "never {what}:\n{}", scrape.text);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until `blog_feed` has `n` members (per the stats endpoint).
    pub async fn wait_for_feed_size(&self, n: u64) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let stats = self.stats(None).await;
            if stats["groups"]["blog_feed"].as_u64() == Some(n) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "blog_feed never had {n} members: {stats}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// The `exp` claim of a JWT (seconds since the epoch), read without checking the signature.
pub fn token_expiry(token: &str) -> i64 {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap_or_else(|| panic!("not a JWT: {token}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap_or_else(|e| panic!("JWT payload: {e}"));
    let claims: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}"));
    claims["exp"].as_i64().unwrap_or_else(|| panic!("no exp in {claims}"))
}

/// Waits until the clock is past `token`'s expiry: the condition the server checks (in whole
/// seconds, with no leeway), so the token is refused from then on.
pub async fn wait_until_expired(token: &str) {
    let expired_at = std::time::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(token_expiry(token)).unwrap_or_default() + 1);
    while std::time::SystemTime::now() < expired_at {
        let left = expired_at.duration_since(std::time::SystemTime::now()).unwrap_or_default();
        tokio::time::sleep(left).await;
    }
}

/// The titles of a list page's `results`, in order.
pub fn titles(page: &Value) -> Vec<String> {
    page["results"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list page: {page}"))
        .iter()
        .map(|p| p["title"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Status and JSON body of a response (`Value::Null` when empty, `{"_raw": text}` when not JSON).
pub async fn read(res: reqwest::Response) -> (StatusCode, Value) {
    let status = res.status();
    let text = res.text().await.unwrap_or_default();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| json!({ "_raw": text }))
    };
    (status, body)
}

/// Declares each async test twice, in a module named after it: `sqlite` always runs, and
/// `postgres` runs when NEWSPAPER_TEST_POSTGRES_URL is set (otherwise it says it skipped).
/// The body gets `$db: Arc<TestDatabase>`.
#[macro_export]
macro_rules! backend_tests {
    ($( $(#[$meta:meta])* async fn $name:ident($db:ident) $body:block )*) => {
        $(
            $(#[$meta])*
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let $db = ::std::sync::Arc::new($crate::TestDatabase::sqlite());
                    $body
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let Some(db) = $crate::TestDatabase::postgres_from_env() else { return };
                    let $db = ::std::sync::Arc::new(db);
                    $body
                }
            }
        )*
    };
}

/// Like [`backend_tests!`], with a server already spawned on the database: the body gets
/// `$app: TestApp`.
#[macro_export]
macro_rules! app_tests {
    ($( $(#[$meta:meta])* async fn $name:ident($app:ident) $body:block )*) => {
        $(
            $crate::backend_tests! {
                $(#[$meta])*
                async fn $name(database) {
                    let $app = $crate::TestApp::spawn_with(database, |_| {}).await;
                    $body
                }
            }
        )*
    };
}
