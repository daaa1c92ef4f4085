//! Many WebSocket clients at once, spread over several source addresses.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::report::{account, feed_size, histogram, percentiles, total_rss_kib};
use crate::{FanoutArgs, IdleArgs, ReplayArgs};

type Socket = WebSocketStream<TcpStream>;

/// Host and port of a base URL.
fn authority(url: &str) -> Result<SocketAddr, String> {
    let rest = url.split("://").nth(1).unwrap_or(url).trim_end_matches('/');
    let host_port = rest.split('/').next().unwrap_or(rest).replace("localhost", "127.0.0.1");
    host_port.parse().map_err(|e| format!("{url}: {e} (use an IP address)"))
}

async fn connect(server: SocketAddr, source: Ipv4Addr) -> Result<Socket, String> {
    connect_to(server, source, "").await
}

/// A stream of the feed with `query` (e.g. `?since=5`).
async fn connect_to(server: SocketAddr, source: Ipv4Addr, query: &str) -> Result<Socket, String> {
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket.bind(SocketAddr::new(source.into(), 0)).map_err(|e| format!("bind {source}: {e}"))?;
    let stream = socket.connect(server).await.map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut config = WebSocketConfig::default();
    // Small buffers: tens of thousands of these share one machine with the server.
    config.read_buffer_size = 4096;
    config.write_buffer_size = 0;
    let url = format!("ws://{server}/ws/blog/{query}");
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    Ok(ws)
}

/// Opens `n` connections, at most 256 handshakes at a time, spread over the servers and over
/// source addresses 127.0.0.1..=127.0.0.`source_ips`.
async fn open_many(
    n: usize,
    servers: &[SocketAddr],
    source_ips: u8,
) -> Result<Vec<Socket>, String> {
    let gate = Arc::new(Semaphore::new(256));
    let started = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let gate = gate.clone();
            let server = servers[i % servers.len()];
            let source = Ipv4Addr::new(127, 0, 0, 1 + (i % usize::from(source_ips.max(1))) as u8);
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
                let mut attempt = 0;
                loop {
                    match connect(server, source).await {
                        Ok(ws) => return Ok(ws),
                        Err(e) if attempt < 5 => {
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                            let _ = e;
                        }
                        Err(e) => return Err(e),
                    }
                }
            })
        })
        .collect();
    let mut sockets = Vec::with_capacity(n);
    for task in tasks {
        sockets.push(task.await.map_err(|e| e.to_string())??);
    }
    eprintln!("opened {n} connections in {:.1} s", started.elapsed().as_secs_f64());
    Ok(sockets)
}

async fn wait_for_feed(client: &reqwest::Client, urls: &[String], n: usize) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let size = feed_size(client, urls).await;
        if size as usize >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("only {size} of {n} clients joined the feed"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The post id of a `post_created` frame, read without a JSON parser: frames start
/// `{"event":"post_created","id":<id>,`.
fn created_id(text: &str) -> Option<u64> {
    let rest = text.strip_prefix(r#"{"event":"post_created","id":"#)?;
    let end = rest.find(',')?;
    rest[..end].parse().ok()
}

/// What one client saw: creations as (post id, µs since `base`), and why it stopped early, if
/// it did.
struct Received {
    events: Vec<(u64, u64)>,
    ended: Option<String>,
}

/// Reads until `expected` creations arrived or told to stop.
async fn receive(
    mut ws: Socket,
    expected: usize,
    base: Instant,
    mut stop: watch::Receiver<bool>,
) -> Received {
    let mut events = Vec::with_capacity(expected.min(4096));
    let mut ended = None;
    while events.len() < expected {
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    if let Some(id) = created_id(&text) {
                        events.push((id, base.elapsed().as_micros() as u64));
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    ended = Some(frame.map_or_else(|| "closed".to_owned(), |f| format!("closed {}: {}", u16::from(f.code), f.reason)));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    ended = Some(format!("error: {e}"));
                    break;
                }
                None => {
                    ended = Some("ended".to_owned());
                    break;
                }
            },
            _ = stop.changed() => break,
        }
    }
    Received { events, ended }
}

/// Counts of the reasons clients stopped early.
fn endings(reasons: impl Iterator<Item = String>) -> String {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for reason in reasons {
        *counts.entry(reason).or_default() += 1;
    }
    if counts.is_empty() {
        return "none".into();
    }
    let mut list: Vec<String> = counts.into_iter().map(|(r, n)| format!("{n} × {r}")).collect();
    list.sort();
    list.join("; ")
}

pub(crate) async fn fanout(args: FanoutArgs) -> Result<(), String> {
    let urls = args.target.url.clone();
    let servers: Vec<SocketAddr> = urls.iter().map(|u| authority(u)).collect::<Result<_, _>>()?;
    let base_url = urls.first().cloned().ok_or("no --url")?;
    let client =
        reqwest::Client::builder().pool_max_idle_per_host(64).build().map_err(|e| e.to_string())?;
    let token = account(&client, &base_url).await?;
    let rss_before = total_rss_kib(&args.target.server_pid);

    let sockets = open_many(args.clients, &servers, args.source_ips).await?;
    wait_for_feed(&client, &urls, args.clients).await?;
    let rss_connected = total_rss_kib(&args.target.server_pid);

    let base = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let receivers: Vec<_> = sockets
        .into_iter()
        .map(|ws| tokio::spawn(receive(ws, args.posts, base, stop_rx.clone())))
        .collect();

    // Post at a steady rate; each POST in its own task so a slow one does not shift the rest.
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate.max(0.001)));
    let in_flight = Arc::new(Semaphore::new(64));
    let mut posting = Vec::with_capacity(args.posts);
    for i in 0..args.posts {
        ticker.tick().await;
        let permit = in_flight.clone().acquire_owned().await.map_err(|e| e.to_string())?;
        let (client, url, token) = (client.clone(), base_url.clone(), token.clone());
        posting.push(tokio::spawn(async move {
            let _permit = permit;
            let sent = base.elapsed().as_micros() as u64;
            let res = client
                .post(format!("{url}/api/posts/"))
                .bearer_auth(&token)
                .json(&serde_json::json!({"title": format!("Fan-out {i}"), "status": "published"}))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let post: serde_json::Value = res.json().await.map_err(|e| e.to_string())?;
            let id = post["id"].as_u64().ok_or_else(|| format!("create failed: {post}"))?;
            Ok::<_, String>((id, sent))
        }));
    }
    let mut sent_at = HashMap::with_capacity(args.posts);
    for task in posting {
        let (id, at) = task.await.map_err(|e| e.to_string())??;
        sent_at.insert(id, at);
    }
    let posted = base.elapsed();

    // Wait for every client to finish, or for the drain period to run out.
    let drain = tokio::spawn(async move {
        tokio::time::sleep(args.drain).await;
        let _ = stop_tx.send(true);
    });
    let mut per_delivery = histogram();
    let mut last_client: HashMap<u64, u64> = HashMap::with_capacity(args.posts);
    let mut deliveries = 0u64;
    let mut complete_clients = 0usize;
    let mut last_receipt = 0u64;
    let mut ended = Vec::new();
    for receiver in receivers {
        let got = receiver.await.map_err(|e| e.to_string())?;
        if got.events.len() == args.posts {
            complete_clients += 1;
        }
        ended.extend(got.ended);
        for (id, at) in got.events {
            let Some(sent) = sent_at.get(&id) else { continue };
            deliveries += 1;
            let latency = at.saturating_sub(*sent);
            let _ = per_delivery.record(latency.max(1));
            let worst = last_client.entry(id).or_default();
            *worst = (*worst).max(latency);
            last_receipt = last_receipt.max(at);
        }
    }
    drain.abort();
    let mut until_last = histogram();
    for latency in last_client.values() {
        let _ = until_last.record((*latency).max(1));
    }
    let expected = (args.clients * args.posts) as u64;
    let first_sent = sent_at.values().min().copied().unwrap_or(0);
    let window = (last_receipt.saturating_sub(first_sent)) as f64 / 1e6;

    println!(
        "fan-out: {} clients on {} instance(s), {} posts at {}/s",
        args.clients,
        servers.len(),
        args.posts,
        args.rate
    );
    println!("  connections held:            {}", args.clients);
    if let (Some(before), Some(after)) = (rss_before, rss_connected) {
        println!(
            "  server RSS:                  {:.1} MiB -> {:.1} MiB connected ({:.1} KiB per connection)",
            before as f64 / 1024.0,
            after as f64 / 1024.0,
            after.saturating_sub(before) as f64 / args.clients as f64
        );
    }
    println!("  posting took:                {:.1} s", posted.as_secs_f64());
    println!("  per-delivery latency:        {}", percentiles(&per_delivery));
    println!("  until the last client has it: {}", percentiles(&until_last));
    println!(
        "  deliveries:                  {deliveries} of {expected} ({} lost)",
        expected.saturating_sub(deliveries)
    );
    println!("  clients with every event:    {complete_clients} of {}", args.clients);
    println!("  connections lost:            {}", endings(ended.into_iter()));
    println!(
        "  delivery rate:               {:.0} deliveries/s over {:.1} s",
        deliveries as f64 / window.max(1e-9),
        window
    );
    Ok(())
}

pub(crate) async fn idle(args: IdleArgs) -> Result<(), String> {
    let urls = args.target.url.clone();
    let servers: Vec<SocketAddr> = urls.iter().map(|u| authority(u)).collect::<Result<_, _>>()?;
    let client = reqwest::Client::new();
    let rss_before = total_rss_kib(&args.target.server_pid);
    let sockets = open_many(args.clients, &servers, args.source_ips).await?;
    wait_for_feed(&client, &urls, args.clients).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = total_rss_kib(&args.target.server_pid);
    // Keep reading (pings, presence) so that the connections stay healthy while held.
    let (stop_tx, stop_rx) = watch::channel(false);
    let holders: Vec<_> = sockets
        .into_iter()
        .map(|ws| tokio::spawn(receive(ws, usize::MAX, Instant::now(), stop_rx.clone())))
        .collect();
    tokio::time::sleep(args.hold).await;
    let still = feed_size(&client, &urls).await;
    let _ = stop_tx.send(true);
    let mut ended = Vec::new();
    for holder in holders {
        if let Ok(received) = holder.await {
            ended.extend(received.ended);
        }
    }
    println!("idle: {} connections on {} instance(s)", args.clients, servers.len());
    println!("  still joined after {:.0} s:   {still}", args.hold.as_secs_f64());
    println!("  connections lost:            {}", endings(ended.into_iter()));
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        println!(
            "  server RSS:                  {:.1} MiB -> {:.1} MiB ({:.2} KiB per connection)",
            before as f64 / 1024.0,
            after as f64 / 1024.0,
            after.saturating_sub(before) as f64 / args.clients as f64
        );
    }
    Ok(())
}

/// Opens streams one after the other, each resuming `back` events before the head, and times
/// each until it has received the head's event.
pub(crate) async fn replay(args: ReplayArgs) -> Result<(), String> {
    let base = args.target.url.first().cloned().ok_or("no --url")?;
    let server = authority(&base)?;
    let client = reqwest::Client::new();
    let res = client
        .get(format!("{base}/api/posts/?page_size=1"))
        .bearer_auth(&args.token)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let head: i64 = res
        .headers()
        .get("X-Feed-Seq")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or("no X-Feed-Seq on the list")?;
    let since = (head - args.back).max(0);
    let query = format!("?since={since}&token={}", args.token);
    let mut latencies = histogram();
    let mut frames = 0u64;
    let started = Instant::now();
    while started.elapsed() < args.duration {
        let opened = Instant::now();
        let mut ws = connect_to(server, Ipv4Addr::LOCALHOST, &query).await?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let event: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    if event["event"] == "resync_required" {
                        return Err(format!("seq {since} is no longer retained"));
                    }
                    if let Some(seq) = event["seq"].as_i64() {
                        frames += 1;
                        if seq >= head {
                            break;
                        }
                    }
                }
                Some(Ok(_)) => {}
                other => return Err(format!("the stream ended before the head: {other:?}")),
            }
        }
        let _ = latencies.record(opened.elapsed().as_micros() as u64);
        let _ = ws.close(None).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!("replay of {} events (since={since}): {:.1} s", head - since, elapsed);
    println!("  streams:       {}", latencies.len());
    println!("  events/s:      {:.0}", frames as f64 / elapsed);
    println!("  open to head:  {}", percentiles(&latencies));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_id_of_a_creation_frame_only() {
        assert_eq!(created_id(r#"{"event":"post_created","id":42,"title":"x"}"#), Some(42));
        assert_eq!(created_id(r#"{"event":"post_updated","id":42}"#), None);
        assert_eq!(created_id(r#"{"event":"presence","count":3}"#), None);
    }

    #[test]
    fn urls_become_socket_addresses() {
        assert_eq!(authority("http://127.0.0.1:8000").unwrap(), "127.0.0.1:8000".parse().unwrap());
        assert_eq!(authority("http://localhost:9/").unwrap(), "127.0.0.1:9".parse().unwrap());
        assert!(authority("http://example.com").is_err());
    }
}
