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
    let token = match &args.token {
        Some(token) => token.clone(),
        None => account(&client, &base).await?,
    };
    let create = match args.mode.as_str() {
        "list" => false,
        "create" => true,
        other => return Err(format!("unknown mode {other:?} (list or create)")),
    };
    if !create && args.seed > 0 {
        seed(&client, &base, &token, &args).await?;
    }
    let (authenticated, uncached) = (args.authenticated, args.uncached);
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|w| {
            let (client, base, token, stop, errors) =
                (client.clone(), base.clone(), token.clone(), stop.clone(), errors.clone());
            let path = args.path.clone();
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
                    } else {
                        let url = if uncached {
                            let joint = if path.contains('?') { '&' } else { '?' };
                            format!("{base}{path}{joint}req={w}-{n}")
                        } else {
                            format!("{base}{path}")
                        };
                        let get = client.get(url);
                        if authenticated { get.bearer_auth(&token) } else { get }
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
        (true, _) => "POST /api/posts/".to_owned(),
        (false, true) => format!("GET {} (authenticated)", args.path),
        (false, false) => format!("GET {} (anonymous)", args.path),
    };
    let label = if uncached && !create { format!("{label}, every URL unique") } else { label };
    println!("{label}: concurrency {}, {:.1} s", args.concurrency, elapsed);
    println!("  requests ok:   {}", all.len());
    println!("  errors:        {}", errors.load(Ordering::Relaxed));
    println!("  rate:          {:.0} req/s", all.len() as f64 / elapsed);
    println!("  latency:       {}", percentiles(&all));
    Ok(())
}

/// The words seeded posts are made of: common enough that none of them is a rare word.
const VOCABULARY: &[&str] = &[
    "the", "news", "city", "council", "report", "market", "weather", "sport", "season", "team",
    "school", "budget", "river", "bridge", "train", "station", "music", "festival", "health",
    "hospital", "energy", "price", "housing", "street", "police", "court", "election", "vote",
    "minister", "science", "research", "library", "museum", "garden", "farmer", "harvest", "coast",
    "storm", "summer", "winter", "morning", "evening", "people", "village", "story",
];

/// Seed post `i`: `bytes` of vocabulary words (a deterministic pseudo-random walk), with the
/// rare word in every `rare_every`th post.
pub(crate) fn seed_content(i: usize, bytes: usize, rare_every: usize) -> String {
    let mut content = String::with_capacity(bytes + 16);
    if rare_every > 0 && i % rare_every == 0 {
        content.push_str("quokka ");
    }
    let mut state = (i as u64).wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    while content.len() < bytes {
        state =
            state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        content.push_str(VOCABULARY[(state >> 33) as usize % VOCABULARY.len()]);
        content.push(' ');
    }
    content.truncate(bytes.max(1));
    content
}

/// Creates `args.seed` published posts through the API, `args.concurrency` at a time.
async fn seed(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    args: &HttpArgs,
) -> Result<(), String> {
    let next = Arc::new(AtomicU64::new(0));
    let total = args.seed as u64;
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|_| {
            let (client, base, token, next) =
                (client.clone(), base.to_owned(), token.to_owned(), next.clone());
            let (bytes, rare_every) = (args.seed_bytes, args.rare_every);
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return Ok::<(), String>(());
                    }
                    let body = json!({
                        "title": format!("Seed {i}"),
                        "content": seed_content(i as usize, bytes, rare_every),
                        "status": "published",
                    });
                    let res = client
                        .post(format!("{base}/api/posts/"))
                        .bearer_auth(&token)
                        .json(&body)
                        .send()
                        .await
                        .map_err(|e| e.to_string())?;
                    if !res.status().is_success() {
                        return Err(format!("seeding post {i}: {}", res.status()));
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_content_has_the_size_asked_and_the_rare_word_where_asked() {
        let plain = seed_content(3, 2000, 10);
        assert_eq!(plain.len(), 2000);
        assert!(!plain.contains("quokka"));
        assert!(seed_content(20, 2000, 10).starts_with("quokka "));
        assert_ne!(seed_content(1, 200, 0), seed_content(2, 200, 0));
    }
}
