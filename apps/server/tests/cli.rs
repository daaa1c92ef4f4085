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

#[test]
fn migrate_applies_once_then_reports_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("news.db");
    let (code, out, err) = run(newspaper(&db).args(["--debug", "migrate"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("applied").count(), 4, "{out}");
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
    assert_eq!(out.matches("applied").count(), 4, "{out}");
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
    assert!(bcrypt::verify("a strong password", &record.password_hash).unwrap());

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
}

#[tokio::test]
async fn serve_logs_each_request_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("news.db");
    let mut child = newspaper(&db)
        .env("NEWSPAPER_SECRET_KEY", "k")
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
