//! The typed configuration of one server instance. Read once at startup by the binary (from
//! flags and environment) and passed down; nothing in the library reads the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use newspaper_persistence::DatabaseUrl;

use crate::client_addr::TrustedProxies;

/// The shortest signing key accepted outside debug mode, in bytes: HS256 keys shorter than the
/// hash output (32 bytes) are guessable by brute force.
pub const MIN_SECRET_KEY_BYTES: usize = 32;

/// Which channel layer carries real-time events between sessions (and instances).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelLayerSetting {
    /// In this process only: one instance, nothing to run.
    Memory,
    /// Shared through Redis at this URL: several instances behind one address.
    Redis(String),
}

impl ChannelLayerSetting {
    /// `memory` or a `redis://` / `rediss://` URL.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.is_empty() || raw.eq_ignore_ascii_case("memory") {
            Ok(Self::Memory)
        } else if raw.starts_with("redis://") || raw.starts_with("rediss://") {
            Ok(Self::Redis(raw.to_owned()))
        } else {
            Err(format!("unsupported channel layer `{raw}` (use `memory` or redis://...)"))
        }
    }
}

/// Tunables of the WebSocket feed.
#[derive(Debug, Clone)]
pub struct RealtimeSettings {
    /// Messages buffered per connection before it is declared lagging and closed (1013).
    pub channel_capacity: usize,
    /// How long a group membership lasts without renewal (sessions renew their own).
    pub group_expiry: Duration,
    /// Keep events at least this long for `?since=` replay...
    pub history_retention: Duration,
    /// ...or at least this many of the newest, whichever keeps more.
    pub history_min_events: i64,
    /// How often the server pings each client.
    pub heartbeat_interval: Duration,
    /// A client silent for this long is disconnected.
    pub idle_timeout: Duration,
    /// Largest incoming frame or message; bigger ones close the connection with 1009.
    pub max_message_bytes: usize,
    /// Most `post.<id>` groups one connection may follow.
    pub max_subscriptions: usize,
    /// Client messages allowed per second (bursts of twice this are tolerated).
    pub client_messages_per_second: u32,
    /// Presence updates are sent this long after the change that prompts them, and at most
    /// once per this interval (less often with thousands of streams: an instance sends at
    /// most ~10,000 presence frames a second).
    pub presence_interval: Duration,
    /// How often the dispatcher looks for committed events nobody told it about (other
    /// instances' writes, a missed wake-up).
    pub dispatch_poll_interval: Duration,
    /// How long the publishing lease lasts when several instances share the outbox.
    pub dispatch_lease: Duration,
}

impl Default for RealtimeSettings {
    fn default() -> Self {
        Self {
            channel_capacity: 100,
            group_expiry: Duration::from_secs(86_400),
            history_retention: Duration::from_secs(24 * 3600),
            history_min_events: 100_000,
            heartbeat_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            max_message_bytes: 64 * 1024,
            max_subscriptions: 100,
            client_messages_per_second: 20,
            presence_interval: Duration::from_millis(250),
            dispatch_poll_interval: Duration::from_millis(500),
            dispatch_lease: Duration::from_secs(10),
        }
    }
}

/// Everything one instance needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to listen on; port 0 picks a free one.
    pub bind: SocketAddr,
    /// The database (SQLite file by default, or PostgreSQL).
    pub database_url: DatabaseUrl,
    /// Connections in the pool; `None` picks a size for the backend.
    pub database_pool_size: Option<u32>,
    /// The channel layer.
    pub channel_layer: ChannelLayerSetting,
    /// Prefix of the Redis keys and channels; instances share a feed when they share it.
    pub redis_namespace: String,
    /// HS256 signing key for JWTs and reset tokens. Required unless `debug`.
    pub secret_key: Option<String>,
    /// Development mode: generated secret if none, reset tokens in responses, localhost
    /// origins allowed.
    pub debug: bool,
    /// Origins allowed to open WebSockets, besides the server's own host. `*` allows any.
    pub allowed_origins: Vec<String>,
    /// Lifetime of access tokens.
    pub access_token_lifetime: Duration,
    /// Lifetime of refresh tokens.
    pub refresh_token_lifetime: Duration,
    /// Lifetime of password reset tokens.
    pub password_reset_lifetime: Duration,
    /// bcrypt cost; 12 in production, as low as 4 in tests.
    pub bcrypt_cost: u32,
    /// Attempts per client address per minute on login, registration and password reset.
    pub auth_rate_limit_per_minute: u32,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// HTTP worker threads; `None` uses one per core.
    pub workers: Option<usize>,
    /// Connections each worker accepts at most.
    pub max_connections_per_worker: usize,
    /// Kernel send buffer per connection (`SO_SNDBUF`); `None` leaves Linux autotuning on
    /// (up to `net.ipv4.tcp_wmem`, often 4 MiB). Bounds what a client that stops reading can pin
    /// in kernel memory, and how soon it is detected as lagging.
    pub socket_send_buffer_bytes: Option<usize>,
    /// Name of this instance in leases and logs; random when `None`.
    pub instance_id: Option<String>,
    /// WebSocket tunables.
    pub realtime: RealtimeSettings,
    /// Proxies whose `X-Forwarded-For` is believed; see [`TrustedProxies`].
    pub trusted_proxies: TrustedProxies,
    /// Open WebSocket streams allowed per client address (0: no limit). Loopback clients are
    /// not limited.
    pub ws_max_per_client: usize,
    /// How long a request waits for the database (a connection, an answer, its turn to write)
    /// before it is answered 503.
    pub database_timeout: Duration,
    /// How long one statement may run before it is stopped (and the request answered 503).
    pub statement_timeout: Duration,
    /// Writes that may wait for the database writer; past that, writes are answered 503.
    pub write_queue: usize,
    /// PEM file of the certificate authority to trust for `rediss://` instead of the system's.
    pub redis_ca_file: Option<PathBuf>,
    /// Allows debug mode on an address other than loopback (it reveals reset tokens).
    pub allow_debug_on_public_address: bool,
    /// Serve `/metrics` on this address instead of the main one.
    pub metrics_bind: Option<SocketAddr>,
}

impl Settings {
    /// Development defaults: localhost:8000, `newspaper.db`, in-memory layer.
    pub fn new(database_url: DatabaseUrl) -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8000)),
            database_url,
            database_pool_size: None,
            channel_layer: ChannelLayerSetting::Memory,
            redis_namespace: "newspaper".into(),
            secret_key: None,
            debug: false,
            allowed_origins: Vec::new(),
            access_token_lifetime: Duration::from_secs(5 * 60),
            refresh_token_lifetime: Duration::from_secs(24 * 3600),
            password_reset_lifetime: Duration::from_secs(3600),
            bcrypt_cost: bcrypt::DEFAULT_COST,
            auth_rate_limit_per_minute: 30,
            max_body_bytes: 1024 * 1024,
            workers: None,
            max_connections_per_worker: 100_000,
            socket_send_buffer_bytes: None,
            instance_id: None,
            realtime: RealtimeSettings::default(),
            trusted_proxies: TrustedProxies::default(),
            ws_max_per_client: 0,
            database_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
            write_queue: 1024,
            redis_ca_file: None,
            allow_debug_on_public_address: false,
            metrics_bind: None,
        }
    }

    /// Refuses settings that would run insecurely: a signing key shorter than
    /// [`MIN_SECRET_KEY_BYTES`] (or none) outside debug mode, and debug mode on a public
    /// address unless explicitly allowed.
    pub fn check(&self) -> Result<(), String> {
        match (&self.secret_key, self.debug) {
            (Some(key), false) if key.len() < MIN_SECRET_KEY_BYTES => {
                return Err(format!(
                    "NEWSPAPER_SECRET_KEY must be at least {MIN_SECRET_KEY_BYTES} bytes (it is {}); \
                     generate one with `openssl rand -hex 32`",
                    key.len()
                ));
            }
            (None, false) => {
                return Err("NEWSPAPER_SECRET_KEY is required unless NEWSPAPER_DEBUG is on".into());
            }
            _ => {}
        }
        if self.debug && !self.bind.ip().is_loopback() && !self.allow_debug_on_public_address {
            return Err(format!(
                "debug mode reveals password-reset tokens and must not face a network: it is \
                 refused on {} unless NEWSPAPER_DEBUG_ON_PUBLIC_ADDRESS=1 \
                 (--debug-on-public-address) says you mean it",
                self.bind
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_secrets_and_public_debug_are_refused() {
        let mut settings = Settings::new(DatabaseUrl::parse("x.db").unwrap());
        assert!(settings.check().unwrap_err().contains("required"));
        settings.secret_key = Some("short".into());
        assert!(settings.check().unwrap_err().contains("at least 32 bytes"));
        settings.secret_key = Some("k".repeat(32));
        assert!(settings.check().is_ok());
        settings.debug = true;
        settings.secret_key = None;
        assert!(settings.check().is_ok(), "debug on loopback needs no key");
        settings.bind = "0.0.0.0:8000".parse().unwrap();
        assert!(settings.check().unwrap_err().contains("NEWSPAPER_DEBUG_ON_PUBLIC_ADDRESS"));
        settings.allow_debug_on_public_address = true;
        assert!(settings.check().is_ok());
    }

    #[test]
    fn channel_layer_setting_accepts_memory_and_redis_only() {
        assert_eq!(ChannelLayerSetting::parse("memory"), Ok(ChannelLayerSetting::Memory));
        assert_eq!(ChannelLayerSetting::parse(""), Ok(ChannelLayerSetting::Memory));
        assert_eq!(
            ChannelLayerSetting::parse("redis://127.0.0.1:6379/0"),
            Ok(ChannelLayerSetting::Redis("redis://127.0.0.1:6379/0".into()))
        );
        assert!(ChannelLayerSetting::parse("amqp://x").is_err());
    }
}
