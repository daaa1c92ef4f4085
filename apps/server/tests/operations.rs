//! What an operator reads: every request's log lines carry its id, which the response returns
//! in `X-Request-Id`, in the text format and in `NEWSPAPER_LOG_FORMAT=json`; and metrics on an
//! address of their own with `NEWSPAPER_METRICS_BIND`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::path::Path;

use newspaper_tests::{PASSWORD, ServerProcess, free_port};
use serde_json::{Value, json};

fn start(dir: &Path, format: &str, extra: &[(&str, String)]) -> ServerProcess {
    let mut env = vec![
        ("NEWSPAPER_DATABASE_URL", dir.join("news.db").display().to_string()),
        ("NEWSPAPER_DEBUG", "1".to_owned()),
        ("NEWSPAPER_BCRYPT_COST", "4".to_owned()),
        ("NEWSPAPER_LOG_FORMAT", format.to_owned()),
    ];
    env.extend(extra.iter().cloned());
    ServerProcess::start(Path::new(env!("CARGO_BIN_EXE_newspaper")), &env)
}

fn entry(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"))
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_and_carry_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    // A broker nobody listens on: the server starts anyway, and its health check fails and
    // logs why, inside the request.
    let broker = format!("redis://127.0.0.1:{}", free_port());
    let server = start(dir.path(), "json", &[("NEWSPAPER_CHANNEL_LAYER", broker)]);
    let client = reqwest::Client::new();

    let res = client
        .get(format!("{}/api/health/", server.url()))
        .header("X-Request-Id", "ops-check-1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["x-request-id"], "ops-check-1");
    let warning = entry(
        &server.wait_for_log("the failed health check", |l| l.contains("health check failed")),
    );
    assert_eq!(warning["level"], "WARN");
    assert_eq!(warning["span"]["request_id"], "ops-check-1", "{warning}");
    let layer = warning["fields"]["channel_layer"].as_str().unwrap_or_default();
    assert!(layer.starts_with("channel layer unavailable"), "{warning}");
    let request = entry(&server.wait_for_log("the request line", |l| l.contains("\"status\":503")));
    assert_eq!(request["span"]["request_id"], "ops-check-1", "{request}");
    assert_eq!(request["fields"]["path"], "/api/health/");
    assert!(request["fields"]["latency_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{request}");

    // Without an id of its own, the client gets one, and the handler's lines carry it.
    let res = client
        .post(format!("{}/api/auth/register/", server.url()))
        .json(&json!({"email": "ann@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 16, "{id}");
    let registered =
        entry(&server.wait_for_log("the registration", |l| l.contains("account registered")));
    assert_eq!(registered["span"]["request_id"], id.as_str(), "{registered}");
    assert_eq!(registered["level"], "INFO");
    for line in server.log_lines() {
        entry(&line);
    }
}

#[tokio::test]
async fn text_logs_show_the_request_id_on_the_request_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "text", &[]);
    let res = reqwest::Client::new()
        .get(format!("{}/api/posts/?page=9", server.url()))
        .header("X-Request-Id", "0af7651916cd43dd8448eb211c80319c")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["x-request-id"], "0af7651916cd43dd8448eb211c80319c");
    let line = server.wait_for_log("the request line", |l| l.contains("path=/api/posts/"));
    assert!(line.contains("request_id=0af7651916cd43dd8448eb211c80319c"), "{line}");
    assert!(line.contains("status=404"), "{line}");
}

#[tokio::test]
async fn metrics_bind_serves_metrics_on_a_private_address_only() {
    let dir = tempfile::tempdir().unwrap();
    let private = free_port();
    let server =
        start(dir.path(), "text", &[("NEWSPAPER_METRICS_BIND", format!("127.0.0.1:{private}"))]);
    let client = reqwest::Client::new();
    let public = client.get(format!("{}/metrics", server.url())).send().await.unwrap();
    assert_eq!(public.status(), 404);
    let scrape = client.get(format!("http://127.0.0.1:{private}/metrics")).send().await.unwrap();
    assert_eq!(scrape.status(), 200);
    let text = scrape.text().await.unwrap();
    assert!(
        text.contains(
            r#"newspaper_http_requests_total{method="GET",route="/metrics",status="404"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains("process_resident_memory_bytes"), "{text}");
}

#[test]
fn an_unknown_log_format_or_scheduling_policy_is_refused() {
    for (variable, value, choices) in [
        ("NEWSPAPER_LOG_FORMAT", "xml", "text, json"),
        ("NEWSPAPER_SCHEDULING", "fifo", "batch, normal"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_newspaper"))
            .env_clear()
            .env(variable, value)
            .args(["--debug", "migrate"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{variable}={value}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(choices), "{variable}={value}");
    }
}

/// Every thread of the server runs with the scheduling policy it was given: `SCHED_BATCH` (3)
/// by default, the kernel's default (0) with `NEWSPAPER_SCHEDULING=normal`.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn every_thread_runs_with_the_scheduling_policy_the_server_was_given() {
    for (setting, policy) in [(None, 3), (Some("normal"), 0), (Some("batch"), 3)] {
        let dir = tempfile::tempdir().unwrap();
        let extra: Vec<_> =
            setting.map(|s| ("NEWSPAPER_SCHEDULING", s.to_owned())).into_iter().collect();
        let server = start(dir.path(), "text", &extra);
        // Served by a worker, read from the database: those threads exist by now.
        let res = reqwest::get(format!("{}/api/posts/", server.url())).await.unwrap();
        assert_eq!(res.status(), 200);
        let threads = thread_policies(server.pid());
        assert!(threads.len() >= 4, "{threads:?}");
        assert!(threads.iter().all(|(_, p)| *p == policy), "{setting:?}: {threads:?}");
    }
}

/// (name, scheduling policy) of each thread of `pid`: field 41 of its `stat`, counted from the
/// last ')' because the name may hold spaces.
#[cfg(target_os = "linux")]
fn thread_policies(pid: u32) -> Vec<(String, u32)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .filter_map(|task| {
            // A thread that ended since the listing has no stat to read.
            let stat = std::fs::read_to_string(task.ok()?.path().join("stat")).ok()?;
            let (head, fields) = stat.rsplit_once(')')?;
            let name = head.split_once('(')?.1.to_owned();
            Some((name, fields.split_whitespace().nth(38)?.parse().ok()?))
        })
        .collect()
}
