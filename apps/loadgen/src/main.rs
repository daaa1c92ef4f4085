//! `loadgen`: load for a running newspaper server — WebSocket fan-out latency and throughput,
//! idle connection memory, and HTTP request rates — and large archives written straight into
//! its database. See docs/benchmarks.md for the scenarios.

mod archive;
mod http;
mod report;
mod swarm;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Load generator for the newspaper service.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// N WebSocket clients, posts created at a steady rate; reports delivery latency, rate, loss.
    Fanout(FanoutArgs),
    /// N idle WebSocket clients; reports the server's memory per connection.
    Idle(IdleArgs),
    /// HTTP request rate of `GET /api/posts/` or `POST /api/posts/` at a fixed concurrency.
    Http(HttpArgs),
    /// Streams that resume from a feed position: how long the replay of the last N events takes.
    Replay(ReplayArgs),
    /// Writes an archive of posts straight into a database through the persistence layer (no
    /// server, no HTTP), each with its feed event, as fast as the database takes them.
    Archive(ArchiveArgs),
}

#[derive(Debug, Args)]
struct ReplayArgs {
    #[command(flatten)]
    target: Target,
    /// The access token of a user who sees every event replayed (their author, or staff).
    #[arg(long)]
    token: String,
    /// How many events back from the head each stream resumes.
    #[arg(long, default_value_t = 1000)]
    back: i64,
    /// How long to keep opening streams, one after the other.
    #[arg(long, default_value = "5", value_parser = secs)]
    duration: Duration,
}

#[derive(Debug, Args)]
struct ArchiveArgs {
    /// The database: an SQLite path or a postgres:// URL (migrated if it is not yet).
    #[arg(long)]
    database_url: String,
    /// Posts to write.
    #[arg(long, default_value_t = 1_000_000)]
    posts: usize,
    /// Email of the existing user who writes most posts.
    #[arg(long)]
    author: String,
    /// Email of an existing user who writes every `other_every`th post.
    #[arg(long)]
    other: String,
    /// How often the other user writes (every Nth post).
    #[arg(long, default_value_t = 10)]
    other_every: usize,
    /// Every Nth post is a draft.
    #[arg(long, default_value_t = 10)]
    drafts_every: usize,
    /// Size of each post's content in bytes.
    #[arg(long, default_value_t = 300)]
    content_bytes: usize,
    /// Every Nth post holds the rare word `quokka` (0: none does).
    #[arg(long, default_value_t = 10_000)]
    rare_every: usize,
    /// Posts per transaction (default: 10,000 on SQLite; 1,000 on PostgreSQL, where a
    /// transaction's posts are one statement, `PostRepository::create_many`).
    #[arg(long)]
    batch: Option<usize>,
}

/// Where the server is.
#[derive(Debug, Clone, Args)]
struct Target {
    /// Base URL of the server(s); several (comma-separated) spread clients and posts over
    /// instances: clients round-robin, posts go to the first.
    #[arg(long, default_value = "http://127.0.0.1:8000", value_delimiter = ',')]
    url: Vec<String>,
    /// PIDs of the server processes, to read their resident memory.
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
}

#[derive(Debug, Args)]
struct FanoutArgs {
    #[command(flatten)]
    target: Target,
    /// WebSocket clients.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Posts to create.
    #[arg(long, default_value_t = 100)]
    posts: usize,
    /// Posts per second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Source addresses 127.0.0.1 .. 127.0.0.N, so more than one address's worth of ephemeral
    /// ports can be used.
    #[arg(long, default_value_t = 16)]
    source_ips: u8,
    /// How long to wait for stragglers after the last post.
    #[arg(long, default_value = "30", value_parser = secs)]
    drain: Duration,
}

#[derive(Debug, Args)]
struct IdleArgs {
    #[command(flatten)]
    target: Target,
    /// WebSocket clients to hold open.
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// Source addresses 127.0.0.1 .. 127.0.0.N.
    #[arg(long, default_value_t = 16)]
    source_ips: u8,
    /// How long to hold them once connected.
    #[arg(long, default_value = "5", value_parser = secs)]
    hold: Duration,
}

#[derive(Debug, Args)]
struct HttpArgs {
    #[command(flatten)]
    target: Target,
    /// `list` (GET /api/posts/) or `create` (POST /api/posts/).
    #[arg(long, default_value = "list")]
    mode: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to run.
    #[arg(long, default_value = "10", value_parser = secs)]
    duration: Duration,
    /// Posts to create before a `list` run, so the list has something to page through.
    #[arg(long, default_value_t = 50)]
    seed: usize,
    /// Send the list requests with a token (a signed-in reader's account is checked on every
    /// request; a page is served from the server's cache only if no write came since).
    #[arg(long)]
    authenticated: bool,
    /// Make every request's URL unique (`req=W-N` added to the query, which the server
    /// ignores), so that no page comes from the server's page cache: what a read costs.
    #[arg(long)]
    uncached: bool,
    /// What a `list` run requests: the path and query, e.g. `/api/posts/?search=quokka`.
    #[arg(long, default_value = "/api/posts/")]
    path: String,
    /// Size of each seeded post's content in bytes (words of a fixed vocabulary).
    #[arg(long, default_value_t = 27)]
    seed_bytes: usize,
    /// Every Nth seeded post also holds the rare word `quokka` (0: none does).
    #[arg(long, default_value_t = 0)]
    rare_every: usize,
    /// The access token to send with `--authenticated` requests, instead of a new account's.
    #[arg(long)]
    token: Option<String>,
}

fn secs(raw: &str) -> Result<Duration, String> {
    raw.trim_end_matches('s').parse::<f64>().map(Duration::from_secs_f64).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::Fanout(args) => swarm::fanout(args).await,
            Command::Idle(args) => swarm::idle(args).await,
            Command::Http(args) => http::run(args).await,
            Command::Replay(args) => swarm::replay(args).await,
            Command::Archive(args) => tokio::task::spawn_blocking(move || archive::write(&args))
                .await
                .map_err(|e| e.to_string())
                .and_then(|done| done),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(problem) => {
            eprintln!("loadgen: {problem}");
            ExitCode::FAILURE
        }
    }
}
