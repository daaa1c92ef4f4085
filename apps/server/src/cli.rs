//! Command line and environment: every setting read once, here, into `Settings`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use newspaper_api::{ChannelLayerSetting, RealtimeSettings, Settings};
use newspaper_persistence::DatabaseUrl;

/// newspaper: a real-time publishing service.
#[derive(Debug, Parser)]
#[command(name = "newspaper", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do (default: serve).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (migrations are applied first).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Create an account (for example the first staff user).
    CreateUser {
        /// Login email.
        #[arg(long)]
        email: String,
        /// Password (at least 8 characters, not common, not entirely numeric).
        #[arg(long, env = "NEWSPAPER_NEW_USER_PASSWORD", hide_env_values = true)]
        password: String,
        /// Display name (default: the email's local part).
        #[arg(long)]
        username: Option<String>,
        /// Make the user staff: sees and may change every post.
        #[arg(long)]
        staff: bool,
    },
    /// Administer an existing account (what Django's admin offers).
    User {
        #[command(subcommand)]
        action: UserCommand,
    },
}

/// What to change about an account. Changes that take rights away also close the user's live
/// streams, on every instance, within a second.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Let the user log in again.
    Activate {
        /// The account's email.
        email: String,
    },
    /// Stop the user from logging in and close their live streams.
    Deactivate {
        /// The account's email.
        email: String,
    },
    /// Grant (`on`) or revoke (`off`) staff rights; revoking closes their live streams.
    Staff {
        /// The account's email.
        email: String,
        /// `on` or `off`.
        state: Switch,
    },
}

/// A flag's new value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// Set.
    On,
    /// Cleared.
    Off,
}

fn duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(raw).map_err(|e| format!("{e} (examples: 300, 5m, 1h, 1d)"))
}

/// Configuration; each flag can also come from the environment variable named beside it.
#[derive(Debug, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "NEWSPAPER_BIND", default_value = "127.0.0.1:8000", global = true)]
    pub bind: SocketAddr,
    /// sqlite file path (default), sqlite://PATH, or postgres://USER@HOST/DB.
    #[arg(long, env = "NEWSPAPER_DATABASE_URL", default_value = "newspaper.db", global = true)]
    pub database_url: String,
    /// Database connections per instance (default: 8 for SQLite, 16 for PostgreSQL).
    #[arg(long, env = "NEWSPAPER_DATABASE_POOL_SIZE", global = true)]
    pub database_pool_size: Option<u32>,
    /// `memory` (one instance) or redis://HOST:PORT (several instances).
    #[arg(long, env = "NEWSPAPER_CHANNEL_LAYER", default_value = "memory", global = true)]
    pub channel_layer: String,
    /// Prefix of the Redis keys and channels; instances share a feed when they share it.
    #[arg(long, env = "NEWSPAPER_REDIS_NAMESPACE", default_value = "newspaper", global = true)]
    pub redis_namespace: String,
    /// Signing key for tokens; required unless --debug.
    #[arg(long, env = "NEWSPAPER_SECRET_KEY", hide_env_values = true, global = true)]
    pub secret_key: Option<String>,
    /// Development mode: generated secret, reset tokens in responses, localhost origins.
    #[arg(long, env = "NEWSPAPER_DEBUG", global = true, value_parser = clap::builder::FalseyValueParser::new())]
    pub debug: bool,
    /// Extra origins allowed to open WebSockets (comma-separated; `*` for any).
    #[arg(long, env = "NEWSPAPER_ALLOWED_ORIGINS", value_delimiter = ',', global = true)]
    pub allowed_origins: Vec<String>,
    /// Access token lifetime.
    #[arg(long, env = "NEWSPAPER_ACCESS_TOKEN_LIFETIME", default_value = "5m", value_parser = duration, global = true)]
    pub access_token_lifetime: Duration,
    /// Refresh token lifetime.
    #[arg(long, env = "NEWSPAPER_REFRESH_TOKEN_LIFETIME", default_value = "1d", value_parser = duration, global = true)]
    pub refresh_token_lifetime: Duration,
    /// bcrypt cost (4-31).
    #[arg(long, env = "NEWSPAPER_BCRYPT_COST", default_value_t = 12, global = true)]
    pub bcrypt_cost: u32,
    /// Login, registration and reset attempts per client per minute (0: unlimited).
    #[arg(long, env = "NEWSPAPER_AUTH_RATE_LIMIT", default_value_t = 30, global = true)]
    pub auth_rate_limit: u32,
    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "NEWSPAPER_WORKERS", global = true)]
    pub workers: Option<usize>,
    /// This instance's name in logs and the publishing lease (default: random).
    #[arg(long, env = "NEWSPAPER_INSTANCE_ID", global = true)]
    pub instance_id: Option<String>,
    /// Events buffered per WebSocket before a slow client is dropped (1013).
    #[arg(long, env = "NEWSPAPER_WS_BUFFER", default_value_t = 100, global = true)]
    pub ws_buffer: usize,
    /// Kernel send buffer per connection in bytes (default: Linux autotuning).
    #[arg(long, env = "NEWSPAPER_SOCKET_SEND_BUFFER", global = true)]
    pub socket_send_buffer: Option<usize>,
    /// Keep feed history at least this long for ?since= ...
    #[arg(long, env = "NEWSPAPER_HISTORY_RETENTION", default_value = "24h", value_parser = duration, global = true)]
    pub history_retention: Duration,
    /// ... or at least this many events, whichever keeps more.
    #[arg(long, env = "NEWSPAPER_HISTORY_MIN_EVENTS", default_value_t = 100_000, global = true)]
    pub history_min_events: i64,
    /// Server ping interval on WebSockets.
    #[arg(long, env = "NEWSPAPER_WS_PING_INTERVAL", default_value = "20s", value_parser = duration, global = true)]
    pub ws_ping_interval: Duration,
    /// Close WebSockets silent for this long.
    #[arg(long, env = "NEWSPAPER_WS_IDLE_TIMEOUT", default_value = "60s", value_parser = duration, global = true)]
    pub ws_idle_timeout: Duration,
    /// Proxies whose X-Forwarded-For is believed: addresses and CIDR blocks, comma-separated.
    #[arg(long, env = "NEWSPAPER_TRUSTED_PROXIES", default_value = "", global = true)]
    pub trusted_proxies: String,
    /// Open WebSocket streams allowed per client address (0: no limit; loopback never limited).
    #[arg(long, env = "NEWSPAPER_WS_MAX_PER_CLIENT", default_value_t = 0, global = true)]
    pub ws_max_per_client: usize,
    /// How long a request waits for the database before it is answered 503.
    #[arg(long, env = "NEWSPAPER_DATABASE_TIMEOUT", default_value = "5s", value_parser = duration, global = true)]
    pub database_timeout: Duration,
    /// How long one statement may run before it is stopped (the request is answered 503).
    #[arg(long, env = "NEWSPAPER_STATEMENT_TIMEOUT", default_value = "5s", value_parser = duration, global = true)]
    pub statement_timeout: Duration,
    /// Writes that may wait for the database writer; past that, writes are answered 503.
    #[arg(long, env = "NEWSPAPER_WRITE_QUEUE", default_value_t = 1024, global = true)]
    pub write_queue: usize,
    /// PEM file of the certificate authority to trust for rediss:// (default: the system's).
    #[arg(long, env = "NEWSPAPER_REDIS_CA_FILE", global = true)]
    pub redis_ca_file: Option<std::path::PathBuf>,
    /// Allow --debug on an address other than loopback (debug mode reveals reset tokens).
    #[arg(long, env = "NEWSPAPER_DEBUG_ON_PUBLIC_ADDRESS", global = true, value_parser = clap::builder::FalseyValueParser::new())]
    pub debug_on_public_address: bool,
    /// Serve `/metrics` on this address instead of the main one (keep it private).
    #[arg(long, env = "NEWSPAPER_METRICS_BIND", global = true)]
    pub metrics_bind: Option<SocketAddr>,
    /// Log filter (tracing's env-filter syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info", global = true)]
    pub log: String,
    /// Log lines as text, or as one JSON object per line.
    #[arg(long, env = "NEWSPAPER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// How Linux schedules the server's threads (docs/operations.md, "CPU scheduling").
    #[arg(long, env = "NEWSPAPER_SCHEDULING", value_enum, default_value_t = Scheduling::Batch, global = true)]
    pub scheduling: Scheduling,
}

/// The scheduling policy of the server's threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scheduling {
    /// `SCHED_BATCH`: a thread woken by a socket waits for the running thread's time slice
    /// instead of preempting it, so bursts of wake-ups (many clients leaving at once) are
    /// handled in batches and other processes on the cores are not switched out for each.
    Batch,
    /// The kernel's default (`SCHED_OTHER`), or whatever the process was started with.
    Normal,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with the request's span fields (`request_id`).
    Json,
}

impl Config {
    /// The typed settings, or why these flags make no sense.
    pub fn settings(&self) -> Result<Settings, String> {
        let url = DatabaseUrl::parse(&self.database_url).map_err(|e| e.to_string())?;
        let mut settings = Settings::new(url);
        settings.bind = self.bind;
        settings.database_pool_size = self.database_pool_size;
        settings.channel_layer = ChannelLayerSetting::parse(&self.channel_layer)?;
        settings.redis_namespace = self.redis_namespace.clone();
        settings.secret_key = self.secret_key.clone().filter(|s| !s.is_empty());
        settings.debug = self.debug;
        settings.allowed_origins = self
            .allowed_origins
            .iter()
            .map(|o| o.trim().to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        settings.access_token_lifetime = self.access_token_lifetime;
        settings.refresh_token_lifetime = self.refresh_token_lifetime;
        settings.bcrypt_cost = self.bcrypt_cost;
        settings.auth_rate_limit_per_minute = self.auth_rate_limit;
        settings.workers = self.workers;
        settings.instance_id = self.instance_id.clone();
        settings.socket_send_buffer_bytes = self.socket_send_buffer;
        settings.realtime = RealtimeSettings {
            channel_capacity: self.ws_buffer.max(1),
            history_retention: self.history_retention,
            history_min_events: self.history_min_events.max(0),
            heartbeat_interval: self.ws_ping_interval,
            idle_timeout: self.ws_idle_timeout,
            ..RealtimeSettings::default()
        };
        settings.trusted_proxies =
            self.trusted_proxies.parse().map_err(|e| format!("NEWSPAPER_TRUSTED_PROXIES: {e}"))?;
        settings.ws_max_per_client = self.ws_max_per_client;
        settings.database_timeout = self.database_timeout;
        settings.statement_timeout = self.statement_timeout;
        settings.write_queue = self.write_queue.max(1);
        settings.redis_ca_file = self.redis_ca_file.clone();
        settings.allow_debug_on_public_address = self.debug_on_public_address;
        settings.metrics_bind = self.metrics_bind;
        settings.check()?;
        if !(4..=31).contains(&settings.bcrypt_cost) {
            return Err("the bcrypt cost must be between 4 and 31".into());
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_accept_seconds_and_units() {
        assert_eq!(duration("300").unwrap(), Duration::from_secs(300));
        assert_eq!(duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(duration("1d").unwrap(), Duration::from_secs(86_400));
        assert!(duration("soon").is_err());
    }

    #[test]
    fn settings_refuse_a_missing_secret_outside_debug() {
        let cli = Cli::try_parse_from(["newspaper", "--database-url", "x.db"]).unwrap();
        if std::env::var_os("NEWSPAPER_SECRET_KEY").is_none()
            && std::env::var_os("NEWSPAPER_DEBUG").is_none()
        {
            assert!(cli.config.settings().is_err());
        }
        let cli =
            Cli::try_parse_from(["newspaper", "--debug", "--database-url", "mysql://x"]).unwrap();
        assert!(cli.config.settings().unwrap_err().contains("unsupported database scheme"));
        let cli = Cli::try_parse_from(["newspaper", "--secret-key", "k"]).unwrap();
        assert!(cli.config.settings().unwrap_err().contains("at least 32 bytes"));
        let cli = Cli::try_parse_from([
            "newspaper",
            "--secret-key",
            "a-signing-key-of-at-least-32-bytes!",
            "--channel-layer",
            "redis://127.0.0.1:6379",
            "--trusted-proxies",
            "127.0.0.1,10.0.0.0/8",
        ])
        .unwrap();
        let settings = cli.config.settings().unwrap();
        assert_eq!(
            settings.channel_layer,
            ChannelLayerSetting::Redis("redis://127.0.0.1:6379".into())
        );
        assert_eq!(settings.trusted_proxies.to_string(), "127.0.0.1/32,10.0.0.0/8");
        let cli =
            Cli::try_parse_from(["newspaper", "--debug", "--trusted-proxies", "nope"]).unwrap();
        assert!(cli.config.settings().unwrap_err().contains("NEWSPAPER_TRUSTED_PROXIES"));
        let cli = Cli::try_parse_from(["newspaper", "--debug", "--bind", "0.0.0.0:8000"]).unwrap();
        assert!(cli.config.settings().unwrap_err().contains("NEWSPAPER_DEBUG_ON_PUBLIC_ADDRESS"));
        let cli = Cli::try_parse_from([
            "newspaper",
            "--debug",
            "--bind",
            "0.0.0.0:8000",
            "--debug-on-public-address",
        ])
        .unwrap();
        assert!(cli.config.settings().is_ok());
        let cli = Cli::try_parse_from([
            "newspaper",
            "--debug",
            "create-user",
            "--email",
            "a@b.co",
            "--password",
            "pw",
            "--staff",
        ])
        .unwrap();
        assert!(matches!(cli.command, Some(Command::CreateUser { staff: true, .. })));
        let cli = Cli::try_parse_from(["newspaper", "--debug", "user", "staff", "a@b.co", "off"])
            .unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::User { action: UserCommand::Staff { state: Switch::Off, .. } })
        ));
        assert!(Cli::try_parse_from(["newspaper", "user", "staff", "a@b.co", "maybe"]).is_err());
    }
}
