//! The `newspaper` binary as an operator uses it: migrate, create-user, serve, stop.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use newspaper_domain::Email;
use newspaper_persistence::{Database, DatabaseUrl, PoolOptions, UserRepository};

fn newspaper(db: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_newspaper"));
    cmd.env_clear().env("NEWSPAPER_DATABASE_URL", db).env("RUST_LOG", "info");
    cmd
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// How many migrations the workspace holds for a dialect (one folder each).
fn migrations_in(dialect: &str) -> usize {
    let folder =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations").join(dialect);
    std::fs::read_dir(folder).unwrap().count()
}

#[test]
fn migrate_applies_once_then_reports_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("news.db");
    let (code, out, err) = run(newspaper(&db).args(["--debug", "migrate"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("applied").count(), migrations_in("sqlite"), "{out}");
    let (code, out, _) = run(newspaper(&db).args(["--debug", "migrate"]));
    assert_eq!((code, out.contains("up to date")), (0, true), "{out}");
}

#[test]
fn migrate_works_on_postgresql_too() {
    let Some(database) = newspaper_persistence::testing::TestDatabase::postgres_from_env() else {
        return;
    };
    let url = database.url().as_connection_string().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let unused = dir.path().join("unused.db");
    let (code, out, err) =
        run(newspaper(&unused).env("NEWSPAPER_DATABASE_URL", &url).args(["--debug", "migrate"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("applied").count(), migrations_in("postgres"), "{out}");
    let (code, out, _) =
        run(newspaper(&unused).env("NEWSPAPER_DATABASE_URL", &url).args(["--debug", "migrate"]));
    assert_eq!((code, out.contains("up to date")), (0, true), "{out}");
    assert!(!unused.exists(), "no SQLite file appears when PostgreSQL is selected");
}

#[test]
fn create_user_makes_staff_and_refuses_duplicates_and_weak_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("news.db");
    let (code, out, err) = run(newspaper(&db).args([
        "--debug",
        "--bcrypt-cost",
        "4",
        "create-user",
        "--email",
        "Boss@Example.com",
        "--password",
        "a strong password",
        "--staff",
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("boss@example.com") && out.contains("(staff)"), "{out}");

    let url = DatabaseUrl::parse(db.to_str().unwrap()).unwrap();
    let pool = Database::connect(&url, PoolOptions::for_backend(url.backend())).unwrap();
    let email = Email::parse("boss@example.com").unwrap();
    let record = UserRepository::find_by_email(&mut pool.get().unwrap(), &email).unwrap().unwrap();
    assert!(record.user.is_staff);
    assert!(newspaper_api::auth::verify_password_blocking(
        "a strong password",
        &record.password_hash
    ));

    let (code, _, err) = run(newspaper(&db).args([
        "--debug",
        "create-user",
        "--email",
        "boss@example.com",
        "--password",
        "another strong one",
    ]));
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");
    let (code, _, err) = run(newspaper(&db).args([
        "--debug",
        "create-user",
        "--email",
        "x@example.com",
        "--password",
        "123",
    ]));
    assert_eq!(code, 1);
    assert!(err.contains("too short"), "{err}");
}

#[test]
fn bad_configuration_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("news.db");
    let (code, _, err) = run(&mut newspaper(&db));
    assert_eq!(code, 2);
    assert!(err.contains("NEWSPAPER_SECRET_KEY"), "{err}");
    assert!(!db.exists(), "nothing was created");
    let (code, _, err) = run(newspaper(&db).args([
        "--debug",
        "--database-url",
        "mysql://localhost/news",
        "migrate",
    ]));
    assert_eq!(code, 2);
    assert!(err.contains("unsupported database scheme"), "{err}");
    let (code, _, err) =
        run(newspaper(&db).env("NEWSPAPER_CHANNEL_LAYER", "kafka://x").arg("--debug"));
    assert_eq!(code, 2);
    assert!(err.contains("unsupported channel layer"), "{err}");
    let (code, _, err) = run(newspaper(&db).env("NEWSPAPER_SECRET_KEY", "too-short"));
    assert_eq!(code, 2);
    assert!(err.contains("at least 32 bytes"), "{err}");
    let (code, _, err) = run(newspaper(&db).args(["--debug", "--bind", "0.0.0.0:0"]));
    assert_eq!(code, 2);
    assert!(err.contains("NEWSPAPER_DEBUG_ON_PUBLIC_ADDRESS"), "{err}");
    assert!(!db.exists(), "nothing was created");
}

#[test]
fn debug_on_a_public_address_starts_only_when_asked_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("news.db");
    let mut child = newspaper(&db)
        .args(["--debug", "--bind", "0.0.0.0:0", "--debug-on-public-address"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut warned = false;
    for line in lines {
        let line = line.unwrap();
        warned |= line.contains("debug mode on a public address");
        if line.contains("listening") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(warned, "a warning is logged at start");
}

#[tokio::test]
async fn serve_logs_each_request_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("news.db");
    let mut child = newspaper(&db)
        .env("NEWSPAPER_SECRET_KEY", "a-signing-key-of-at-least-32-bytes!")
        .env("NEWSPAPER_BIND", "127.0.0.1:0")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let port = loop {
        let line = lines.next().expect("the server logs its port").unwrap();
        if let Some(rest) = line.split("port=").nth(1) {
            break rest.split_whitespace().next().unwrap().parse::<u16>().unwrap();
        }
    };
    let res = reqwest::get(format!("http://127.0.0.1:{port}/api/posts/?page=1")).await.unwrap();
    assert_eq!(res.status(), 200);
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let log = rest.join("\n");
    assert!(
        log.contains("method=GET")
            && log.contains("path=/api/posts/")
            && log.contains("status=200")
            && log.contains("latency_ms"),
        "{log}"
    );
    assert!(log.contains("shutting down"), "{log}");
}

/// `newspaper user ...` against the database of a running server: the change reaches the
/// server through the outbox, so the user's live streams close although no request of the
/// server's own made it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_admin_commands_close_the_users_live_streams() {
    let app = newspaper_tests::TestApp::spawn().await;
    let ann = app.user("ann@example.com").await;
    let boss = app.staff("boss@example.com").await;
    let db = app.database.url().as_connection_string().to_owned();
    let admin = move |args: &'static [&'static str]| {
        let db = db.clone();
        tokio::task::spawn_blocking(move || {
            run(newspaper(std::path::Path::new(&db)).arg("--debug").args(args))
        })
    };
    let mut anonymous = app.ws("").await;
    let mut anns = app.ws(&format!("token={}", ann.access)).await;
    let mut boss_stream = app.ws(&format!("token={}", boss.access)).await;
    app.wait_for_feed_size(3).await;

    let (code, out, err) = admin(&["user", "deactivate", "ANN@example.com"]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ann@example.com: deactivated"), "{out}");
    assert_eq!(anns.close_code().await, (4003, "credentials revoked".to_owned()));
    let (code, out, _) = admin(&["user", "deactivate", "ann@example.com"]).await.unwrap();
    assert_eq!((code, out.contains("nothing to do")), (0, true), "{out}");
    let log_in = || app.log_in("ann@example.com", newspaper_tests::PASSWORD);
    assert_eq!(log_in().await.0, 401, "an inactive account cannot log in");
    let (code, out, _) = admin(&["user", "activate", "ann@example.com"]).await.unwrap();
    assert_eq!((code, out.contains("activated")), (0, true), "{out}");
    assert_eq!(log_in().await.0, 200);

    let (code, out, err) = admin(&["user", "staff", "boss@example.com", "off"]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no longer staff"), "{out}");
    assert_eq!(boss_stream.close_code().await, (4003, "credentials revoked".to_owned()));
    let (code, _, _) = admin(&["user", "staff", "boss@example.com", "on"]).await.unwrap();
    assert_eq!(code, 0);

    let (code, _, err) = admin(&["user", "deactivate", "nobody@example.com"]).await.unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("no account with the email nobody@example.com"), "{err}");
    let (code, _, _) = admin(&["user", "staff", "boss@example.com", "maybe"]).await.unwrap();
    assert_eq!(code, 2, "a usage error");

    // The anonymous stream was never touched.
    let post = app.create_post(&ann, "Still live", "published").await;
    assert_eq!(anonymous.next_event().await["id"], post["id"]);
}
