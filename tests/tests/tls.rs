//! TLS to the services: PostgreSQL with `sslmode=require|verify-ca|verify-full` (the local
//! server has `ssl = on`), and Redis over `rediss://` with a certificate authority the test
//! makes. A server that cannot prove who it is is refused, with a message that says why.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::path::PathBuf;
use std::sync::Arc;

use diesel::RunQueryDsl;
use newspaper_api::{Application, ChannelLayerSetting};
use newspaper_persistence::{Database, DatabaseUrl, PoolOptions, testing::TestDatabase};
use newspaper_tests::{RedisServer, TestApp, TestCa, certificate_names, test_settings};
use reqwest::StatusCode;
use serde_json::json;

/// The test database's URL with `host` and extra query parameters.
fn with(database: &TestDatabase, host: &str, params: &str) -> DatabaseUrl {
    let mut url = url::Url::parse(database.url().as_connection_string()).unwrap();
    url.set_host(Some(host)).unwrap();
    let query = match url.query() {
        Some(q) if !q.is_empty() => format!("{q}&{params}"),
        _ => params.to_owned(),
    };
    url.set_query(Some(&query));
    DatabaseUrl::parse(url.as_str()).unwrap()
}

/// Whether this database connection runs over TLS, per the server.
fn uses_tls(db: &Database) -> bool {
    #[derive(diesel::QueryableByName)]
    struct Ssl {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        ssl: bool,
    }
    let mut conn = db.get().unwrap();
    diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .get_result::<Ssl>(&mut *conn)
        .unwrap()
        .ssl
}

/// The server's own certificate file (self-signed, so it is its own authority).
fn server_certificate(database: &TestDatabase) -> PathBuf {
    #[derive(diesel::QueryableByName)]
    struct Setting {
        #[diesel(sql_type = diesel::sql_types::Text)]
        ssl_cert_file: String,
    }
    let db = Database::connect(database.url(), PoolOptions::for_backend(database.url().backend()))
        .unwrap();
    let mut conn = db.get().unwrap();
    let setting: Setting = diesel::sql_query("SHOW ssl_cert_file").get_result(&mut *conn).unwrap();
    PathBuf::from(setting.ssl_cert_file)
}

async fn start(database: &TestDatabase, url: DatabaseUrl) -> Result<Application, String> {
    let mut settings = test_settings(database);
    settings.database_url = url;
    // Debug: the error with every cause under it (the driver's message is the innermost).
    Application::build(settings).await.map_err(|e| format!("{e:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_over_tls_with_every_sslmode_and_refusals_that_say_why() {
    let Some(database) = TestDatabase::postgres_from_env() else { return };
    // `require`: encrypted (the server says so), no identity check.
    let required = with(&database, "127.0.0.1", "sslmode=require");
    let db = Database::connect(&required, PoolOptions::for_backend(required.backend())).unwrap();
    assert!(uses_tls(&db), "the connection is encrypted");
    let app = TestApp::spawn_with(Arc::new(database), |s| s.database_url = required.clone()).await;
    let ann = app.user("ann@example.com").await;
    app.create_post(&ann, "Over TLS", "published").await;
    assert_eq!(app.get("/api/posts/", None).await.1["count"], 1);
    let database = app.database.clone();

    // `verify-ca`: the server's certificate must chain to the authority given.
    let certificate = server_certificate(&database);
    let root = format!("sslrootcert={}", certificate.display());
    let verified = with(&database, "127.0.0.1", &format!("sslmode=verify-ca&{root}"));
    assert!(uses_tls(
        &Database::connect(&verified, PoolOptions::for_backend(verified.backend())).unwrap()
    ));
    start(&database, verified).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let stranger = dir.path().join("other-ca.pem");
    std::fs::write(&stranger, TestCa::new("not the server's CA").pem()).unwrap();
    let wrong_ca = with(
        &database,
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={}", stranger.display()),
    );
    let refused =
        start(&database, wrong_ca).await.err().expect("a certificate from another CA is refused");
    assert!(refused.contains("certificate verify failed"), "{refused}");

    // `verify-full`: the host name must be in the certificate too.
    let wrong_name = with(&database, "127.0.0.1", &format!("sslmode=verify-full&{root}"));
    let refused = start(&database, wrong_name)
        .await
        .err()
        .expect("a host the certificate does not name is refused");
    assert!(refused.contains("does not match host name"), "{refused}");
    let names = certificate_names(&certificate);
    if names.iter().any(|n| n == "localhost") {
        let full = with(&database, "localhost", &format!("sslmode=verify-full&{root}"));
        start(&database, full).await.unwrap();
    } else {
        eprintln!(
            "the server's certificate names {names:?}, not localhost: verify-full's success case needs that name"
        );
    }
}

/// A Redis that speaks TLS only, with a certificate from a CA made for the test.
fn tls_redis(dir: &std::path::Path) -> Option<(RedisServer, PathBuf)> {
    newspaper_tests::redis_url("the Redis TLS test")?;
    assert!(
        RedisServer::available(),
        "NEWSPAPER_TEST_REDIS_URL is set but redis-server is missing"
    );
    let ca = TestCa::new("newspaper test CA");
    let (ca_file, cert, key) = ca.write_files(dir, &["127.0.0.1", "localhost"]);
    Some((RedisServer::start_tls(&cert, &key), ca_file))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channel_layer_speaks_tls_to_redis_and_refuses_an_unknown_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let Some((redis, ca_file)) = tls_redis(dir.path()) else { return };
    assert!(redis.url().starts_with("rediss://"));
    let app = TestApp::spawn_with(Arc::new(TestDatabase::sqlite()), |s| {
        s.channel_layer = ChannelLayerSetting::Redis(redis.url());
        s.redis_ca_file = Some(ca_file.clone());
    })
    .await;
    let boss = app.staff("boss@example.com").await;
    let (status, health) = app.get("/api/health/", Some(&boss.access)).await;
    assert_eq!(
        (status, &health["details"]["channel_layer"]),
        (StatusCode::OK, &json!("ok")),
        "{health}"
    );
    let mut client = app.ws("").await;
    app.wait_for_feed_size(1).await;
    let post = app.create_post(&boss, "Through rediss://", "published").await;
    assert_eq!(client.next_event().await["id"], post["id"]);

    // Another CA's certificate: the layer never connects, and health says so.
    let other_dir = tempfile::tempdir().unwrap();
    let other_ca = other_dir.path().join("other.pem");
    std::fs::write(&other_ca, TestCa::new("another CA").pem()).unwrap();
    let doubtful = TestApp::spawn_with(Arc::new(TestDatabase::sqlite()), |s| {
        s.channel_layer = ChannelLayerSetting::Redis(redis.url());
        s.redis_ca_file = Some(other_ca);
    })
    .await;
    let boss = doubtful.staff("boss@example.com").await;
    let (status, health) = doubtful.get("/api/health/", Some(&boss.access)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{health}");
    assert_ne!(health["details"]["channel_layer"], "ok");
    assert_eq!(health["details"]["database"], "ok");
}
