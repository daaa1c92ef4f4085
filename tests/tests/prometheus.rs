//! A real Prometheus (Debian's package) scrapes a test server with the shipped alerting rules
//! loaded: the target is up, the counters it stores match the events the test caused, and
//! every rule evaluates without error and none fires on a healthy instance.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::path::Path;

use newspaper_tests::{PrometheusServer, TestApp};
use serde_json::Value;

fn shipped(file: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/prometheus")
        .join(file)
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_what_the_server_did() {
    if !PrometheusServer::available() {
        return;
    }
    let app = TestApp::spawn().await;
    let ann = app.user("ann@example.com").await;
    let mut readers = vec![app.ws("").await, app.ws("").await];
    app.wait_for_feed_size(2).await;
    for n in 0..3 {
        app.create_post(&ann, &format!("Scraped {n}"), "published").await;
    }
    for reader in &mut readers {
        for _ in 0..3 {
            assert_eq!(reader.next_event().await["event"], "post_created");
        }
    }

    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {rules}\n\
         scrape_configs:\n  - job_name: newspaper\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n",
        rules = shipped("alerts.yml"),
        port = app.port,
    );
    let prometheus = PrometheusServer::start(&config);
    let client = reqwest::Client::new();
    prometheus.wait_until_ready(&client).await;

    prometheus.wait_for_value(&client, "up{job=\"newspaper\"}", 1.0).await;
    // Three creates, each delivered live to two readers.
    prometheus
        .wait_for_value(&client, "newspaper_ws_events_delivered_total{via=\"live\"}", 6.0)
        .await;
    prometheus
        .wait_for_value(
            &client,
            "sum(newspaper_http_requests_total{method=\"POST\",route=\"/api/posts/\",status=\"201\"})",
            3.0,
        )
        .await;
    prometheus.wait_for_value(&client, "newspaper_ws_streams", 2.0).await;
    prometheus.wait_for_value(&client, "newspaper_database_up", 1.0).await;

    // Every shipped rule loaded and evaluates cleanly; on a healthy instance none fires.
    let deadline = tokio::time::Instant::now() + newspaper_tests::PATIENCE * 3;
    let rules = loop {
        let res = client.get(format!("{}/api/v1/rules", prometheus.url())).send().await.unwrap();
        let body: Value = res.json().await.unwrap();
        let rules: Vec<Value> = body["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let evaluated = rules
            .iter()
            .all(|r| r["lastEvaluation"].as_str().is_some_and(|t| !t.starts_with("0001")));
        if !rules.is_empty() && evaluated {
            break rules;
        }
        assert!(tokio::time::Instant::now() < deadline, "rules never evaluated: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let names: Vec<&str> = rules.iter().map(|r| r["name"].as_str().unwrap()).collect();
    for alert in [
        "NewspaperInstanceDown",
        "NewspaperDatabaseUnavailable",
        "NewspaperDispatcherLagging",
        "NewspaperSlowConsumerDrops",
        "NewspaperHttpErrors",
    ] {
        assert!(names.contains(&alert), "{alert} missing from {names:?}");
    }
    for rule in &rules {
        assert_eq!(rule["health"], "ok", "{rule}");
        assert_eq!(rule["state"], "inactive", "{rule}");
    }
}
