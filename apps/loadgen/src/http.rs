//! HTTP request rate at a fixed concurrency over keep-alive connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use serde_json::json;

use crate::HttpArgs;
use crate::report::{account, histogram, percentiles};

pub(crate) async fn run(args: HttpArgs) -> Result<(), String> {
    let base = args.target.url.first().cloned().ok_or("no --url")?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| e.to_string())?;
    let token = account(&client, &base).await?;
    let create = match args.mode.as_str() {
        "list" => false,
        "create" => true,
        other => return Err(format!("unknown mode {other:?} (list or create)")),
    };
    if !create {
        for i in 0..args.seed {
            client
                .post(format!("{base}/api/posts/"))
                .bearer_auth(&token)
                .json(&json!({"title": format!("Seed {i}"), "content": "Lorem ipsum dolor sit amet.", "status": "published"}))
                .send()
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    let authenticated = args.authenticated;
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|w| {
            let (client, base, token, stop, errors) =
                (client.clone(), base.clone(), token.clone(), stop.clone(), errors.clone());
            tokio::spawn(async move {
                let mut latencies = histogram();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let request = if create {
                        client
                            .post(format!("{base}/api/posts/"))
                            .bearer_auth(&token)
                            .json(&json!({"title": format!("Load {w}-{n}"), "content": "Benchmark body.", "status": "published"}))
                    } else if authenticated {
                        client.get(format!("{base}/api/posts/")).bearer_auth(&token)
                    } else {
                        client.get(format!("{base}/api/posts/"))
                    };
                    match request.send().await {
                        Ok(res) if res.status().is_success() => {
                            let _ = res.bytes().await;
                            let _ = latencies.record(sent.elapsed().as_micros() as u64);
                        }
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    n += 1;
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(args.duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = histogram();
    for worker in workers {
        let h = worker.await.map_err(|e| e.to_string())?;
        all.add(&h).map_err(|e| e.to_string())?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let label = match (create, authenticated) {
        (true, _) => "POST /api/posts/",
        (false, true) => "GET /api/posts/ (authenticated)",
        (false, false) => "GET /api/posts/ (anonymous)",
    };
    println!("{label}: concurrency {}, {:.1} s", args.concurrency, elapsed);
    println!("  requests ok:   {}", all.len());
    println!("  errors:        {}", errors.load(Ordering::Relaxed));
    println!("  rate:          {:.0} req/s", all.len() as f64 / elapsed);
    println!("  latency:       {}", percentiles(&all));
    Ok(())
}
