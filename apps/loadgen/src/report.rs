//! Numbers out: latency histograms, process memory, and the account the load runs as.

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// A latency histogram in microseconds, 1 µs to 10 minutes.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|e| panic!("histogram bounds: {e}"))
}

/// `p50 / p99 / max` in milliseconds.
pub(crate) fn percentiles(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "n/a".into();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max())
    )
}

/// Resident memory of a process in KiB, from /proc.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// Total resident memory of the given processes in KiB.
pub(crate) fn total_rss_kib(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|pid| rss_kib(*pid)).sum()
}

/// Registers a fresh account and returns an access token.
pub(crate) async fn account(client: &reqwest::Client, base: &str) -> Result<String, String> {
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let email = format!("loadgen-{unique}@example.com");
    let password = "loadgen password 1";
    let registered = client
        .post(format!("{base}/api/auth/register/"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .map_err(|e| format!("register: {e}"))?;
    if !registered.status().is_success() {
        return Err(format!(
            "register: {} {}",
            registered.status(),
            registered.text().await.unwrap_or_default()
        ));
    }
    let tokens: Value = client
        .post(format!("{base}/api/auth/token/"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .map_err(|e| format!("login: {e}"))?
        .json()
        .await
        .map_err(|e| format!("login: {e}"))?;
    tokens["access"].as_str().map(str::to_owned).ok_or_else(|| format!("login: {tokens}"))
}

/// Members of `blog_feed` summed over every server.
pub(crate) async fn feed_size(client: &reqwest::Client, urls: &[String]) -> u64 {
    let mut total = 0;
    for url in urls {
        let stats: Value = match client.get(format!("{url}/api/realtime/stats/")).send().await {
            Ok(res) => res.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        // With a shared layer every instance reports the global size; take the largest.
        total = total.max(stats["groups"]["blog_feed"].as_u64().unwrap_or(0));
    }
    total
}
