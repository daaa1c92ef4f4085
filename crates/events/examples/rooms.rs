//! Chat rooms over plain TCP, built on `newspaper-events` alone: each connection is a channel,
//! each room a group. Nothing here knows about posts, HTTP or the newspaper.
//!
//! ```text
//! cargo run -p newspaper-events --example rooms -- --listen 127.0.0.1:7000
//! nc 127.0.0.1 7000        # in two terminals
//! /nick ann
//! /join lobby
//! hello                    # everyone in the lobby reads "ann: hello"
//! /who                     # "2 in lobby": presence, across every instance
//! ```
//!
//! With `--redis redis://127.0.0.1:6379`, start it twice on two ports: the rooms are shared,
//! a message said on one instance reaches the room's members on the other.
//!
//! Delivery is bounded: a client that stops reading while its room is busy falls more than
//! `--buffer` messages behind, is told so and disconnected, instead of making the server buffer
//! without end or slowing anyone else down.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use clap::Parser;
use newspaper_events::{
    ChannelLayer, ChannelReceiver, GroupName, InMemoryChannelLayer, LayerConfig, RecvError,
    RedisChannelLayer, RedisOptions,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Chat rooms over TCP, on the newspaper channel layer.
#[derive(Parser)]
struct Args {
    /// Where to listen (port 0 picks a free one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
    /// Share rooms with other instances through this Redis (otherwise: this process only).
    #[arg(long)]
    redis: Option<String>,
    /// Prefix of the Redis keys, so several chat services can share one Redis.
    #[arg(long, default_value = "rooms")]
    namespace: String,
    /// Messages buffered per client before a slow one is disconnected.
    #[arg(long, default_value_t = 64)]
    buffer: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = LayerConfig { capacity: args.buffer, ..LayerConfig::default() };
    let layer: Arc<dyn ChannelLayer> = match &args.redis {
        Some(url) => {
            let options = RedisOptions { namespace: args.namespace.clone(), ..Default::default() };
            let layer = RedisChannelLayer::new(url, config, options)?;
            layer.ready().await?;
            Arc::new(layer)
        }
        None => Arc::new(InMemoryChannelLayer::new(config)),
    };
    let listener = TcpListener::bind(args.listen).await?;
    println!("rooms listening on {}", listener.local_addr()?);
    loop {
        let (socket, _) = listener.accept().await?;
        let layer = layer.clone();
        tokio::spawn(async move {
            if let Err(err) = serve(socket, layer).await {
                eprintln!("connection ended: {err}");
            }
        });
    }
}

/// One client: lines in are commands or things said; lines out are what its room says.
async fn serve(socket: TcpStream, layer: Arc<dyn ChannelLayer>) -> anyhow::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut inbox: ChannelReceiver = layer.new_channel().await?;
    let mut nick = format!("guest-{}", &inbox.name().as_str()[inbox.name().as_str().len() - 4..]);
    let mut room: Option<(String, GroupName)> = None;
    write
        .write_all(b"welcome: /nick NAME, /join ROOM, /who, /quit; anything else is said\n")
        .await?;
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line? else { break };
                let reply = match line.split_once(' ').unwrap_or((line.as_str(), "")) {
                    ("/quit", _) => break,
                    ("/nick", name) if !name.trim().is_empty() => {
                        nick = name.trim().to_owned();
                        format!("* you are {nick}")
                    }
                    ("/join", name) => match GroupName::new(&format!("room.{}", name.trim())) {
                        Ok(group) => {
                            if let Some((_, old)) = room.take() {
                                layer.group_discard(&old, inbox.name()).await?;
                            }
                            layer.group_add(&group, inbox.name()).await?;
                            let here = layer.group_size(&group).await?;
                            say(&*layer, &group, format!("* {nick} joined ({here} here)")).await;
                            room = Some((name.trim().to_owned(), group));
                            continue;
                        }
                        Err(_) => "* a room name is 1-90 letters, digits, '-', '_' or '.'".to_owned(),
                    },
                    ("/who", _) => match &room {
                        Some((name, group)) => format!("{} in {name}", layer.group_size(group).await?),
                        None => "* join a room first".to_owned(),
                    },
                    _ => match &room {
                        Some((_, group)) => {
                            say(&*layer, group, format!("{nick}: {line}")).await;
                            continue;
                        }
                        None => "* join a room first".to_owned(),
                    },
                };
                write.write_all(format!("{reply}\n").as_bytes()).await?;
            }
            message = inbox.recv() => match message {
                Ok(text) => {
                    write.write_all(&text).await?;
                    write.write_all(b"\n").await?;
                }
                Err(RecvError::Lagged) => {
                    write.write_all(b"* you fell behind; reconnect\n").await?;
                    break;
                }
                Err(RecvError::Interrupted) => {
                    write.write_all(b"* the broker reconnected: messages may be missing\n").await?;
                }
                Err(RecvError::Closed) => break,
            },
        }
    }
    // Dropping the receiver leaves every group; say goodbye first.
    if let Some((_, group)) = room {
        layer.group_discard(&group, inbox.name()).await?;
        say(&*layer, &group, format!("* {nick} left")).await;
    }
    Ok(())
}

/// Sends a line to everyone in the room, on every instance (this client included).
async fn say(layer: &dyn ChannelLayer, room: &GroupName, text: String) {
    if let Err(err) = layer.group_send(room, Bytes::from(text)).await {
        eprintln!("could not send to {room}: {err}");
    }
}
