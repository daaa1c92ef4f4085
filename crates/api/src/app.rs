//! Composition: routes (`configure`), the actix server, and the background tasks of one
//! instance (`Application`).

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::{ErrorHandlers, from_fn};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, Resource, web};
use newspaper_events::{
    ChannelLayer, InMemoryChannelLayer, LayerConfig, RedisChannelLayer, RedisOptions,
};
use newspaper_persistence::{Database, PersistenceError, PoolOptions};
use tokio::task::JoinHandle;
use tracing_actix_web::TracingLogger;

use crate::auth::{PasswordHasher, Throttle, TokenService, handlers as auth};
use crate::error::detail_response;
use crate::pages::Pages;
use crate::posts::handlers as posts;
use crate::realtime::{self, DispatchMode, Dispatcher, FeedLimits, Realtime};
use crate::settings::{ChannelLayerSetting, Settings};
use crate::state::AppState;
use crate::{ApiError, middleware, openapi};

/// Why an instance could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The settings would run insecurely (no or a short secret key, debug mode on a public
    /// address).
    #[error("{0}")]
    Insecure(String),
    /// The database could not be opened or migrated.
    #[error("database: {0}")]
    Database(#[from] PersistenceError),
    /// The channel layer could not be set up.
    #[error("channel layer: {0}")]
    ChannelLayer(String),
    /// The templates failed to compile.
    #[error("templates: {0}")]
    Templates(#[from] tera::Error),
    /// The address could not be bound.
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
}

/// `allow` values for the 405 responses of each resource.
const GET: &str = "GET, HEAD, OPTIONS";
const POST: &str = "POST, OPTIONS";
const GET_POST: &str = "GET, POST, HEAD, OPTIONS";
const ITEM: &str = "GET, PUT, PATCH, DELETE, HEAD, OPTIONS";

/// A resource at `path` with a JSON 405 (and `Allow`) for other methods and a bare 200 for
/// OPTIONS.
fn resource(path: &str, allow: &'static str) -> Resource {
    web::resource(path).default_service(web::to(move |req: HttpRequest| async move {
        if req.method() == actix_web::http::Method::OPTIONS {
            return Ok(HttpResponse::Ok()
                .insert_header((actix_web::http::header::ALLOW, allow))
                .finish());
        }
        Err::<HttpResponse, _>(ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            allow,
        })
    }))
}

/// Registers `path` and the same path without its trailing slash, as two plain resources (one
/// resource with two patterns would be matched with a regex on every request).
fn route(
    cfg: &mut web::ServiceConfig,
    path: &str,
    allow: &'static str,
    routes: impl Fn(Resource) -> Resource,
) {
    cfg.service(routes(resource(path, allow)));
    let bare = path.trim_end_matches('/');
    if !bare.is_empty() && bare != path {
        cfg.service(routes(resource(bare, allow)));
    }
}

/// Registers every route of the service. Mount it in your own actix app with the state
/// (`.app_data(web::Data<AppState>)`) and, ideally, the same middleware [`Application`] uses.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PathConfig::default().error_handler(|_, _| ApiError::not_found().into()))
        .app_data(
            web::QueryConfig::default()
                .error_handler(|err, _| ApiError::BadRequest(err.to_string()).into()),
        );
    route(cfg, "/api/posts/", GET_POST, |r| {
        r.route(web::get().to(posts::list_posts))
            .route(web::head().to(posts::list_posts))
            .route(web::post().to(posts::create_post))
    });
    route(cfg, "/api/posts/{id}/", ITEM, |r| {
        r.route(web::get().to(posts::retrieve_post))
            .route(web::head().to(posts::retrieve_post))
            .route(web::put().to(posts::update_post))
            .route(web::patch().to(posts::partial_update_post))
            .route(web::delete().to(posts::destroy_post))
    });
    route(cfg, "/api/auth/register/", POST, |r| r.route(web::post().to(auth::register)));
    route(cfg, "/api/auth/token/", POST, |r| r.route(web::post().to(auth::obtain_token)));
    route(cfg, "/api/auth/token/refresh/", POST, |r| r.route(web::post().to(auth::refresh_token)));
    route(cfg, "/api/auth/token/verify/", POST, |r| r.route(web::post().to(auth::verify_token)));
    route(cfg, "/api/auth/logout/", POST, |r| r.route(web::post().to(auth::logout)));
    route(cfg, "/api/auth/me/", GET, |r| {
        r.route(web::get().to(auth::me)).route(web::head().to(auth::me))
    });
    route(cfg, "/api/auth/password-reset/", POST, |r| {
        r.route(web::post().to(auth::request_password_reset))
    });
    route(cfg, "/api/auth/password-reset/confirm/", POST, |r| {
        r.route(web::post().to(auth::confirm_password_reset))
    });
    route(cfg, "/api/auth/password/change/", POST, |r| {
        r.route(web::post().to(auth::change_password))
    });
    route(cfg, "/api/realtime/stats/", GET, |r| {
        r.route(web::get().to(realtime::realtime_stats))
            .route(web::head().to(realtime::realtime_stats))
    });
    route(cfg, "/api/health/", GET, |r| {
        r.route(web::get().to(crate::health::health)).route(web::head().to(crate::health::health))
    });
    cfg.service(
        web::resource("/metrics")
            .route(web::get().to(crate::metrics::metrics_on_main_port))
            .route(web::head().to(crate::metrics::metrics_on_main_port)),
    );
    route(cfg, "/api/schema/", GET, |r| {
        r.route(web::get().to(openapi::schema)).route(web::head().to(openapi::schema))
    });
    cfg.service(
        web::resource(["/api/docs", "/api/docs/{tail:.*}"])
            .route(web::get().to(openapi::docs))
            .route(web::head().to(openapi::docs)),
    );
    route(cfg, "/ws/blog/", "GET", |r| r.route(web::get().to(realtime::blog_feed_socket)));
    route(cfg, "/ws-demo/", GET, |r| {
        r.route(web::get().to(crate::pages::ws_demo)).route(web::head().to(crate::pages::ws_demo))
    });
    route(cfg, "/", GET, |r| {
        r.route(web::get().to(crate::pages::index)).route(web::head().to(crate::pages::index))
    });
}

/// The answer for every path no route claims: a JSON 404.
async fn not_found() -> HttpResponse {
    detail_response(actix_web::http::StatusCode::NOT_FOUND, "Not found.")
}

/// A random instance name, for leases and logs.
fn instance_name() -> String {
    format!("newspaper-{}", &crate::auth_random_id()[..12])
}

/// One running instance: the HTTP server plus its background tasks.
pub struct Application {
    port: u16,
    server: Server,
    /// `/metrics` on an address of its own, when `NEWSPAPER_METRICS_BIND` says so.
    metrics_server: Option<(u16, Server)>,
    handle: ApplicationHandle,
    tasks: Vec<JoinHandle<()>>,
    layer: Arc<dyn ChannelLayer>,
}

/// Stops an [`Application`] gracefully from elsewhere (signal handler, test).
#[derive(Clone)]
pub struct ApplicationHandle {
    realtime: Realtime,
    layer: Arc<dyn ChannelLayer>,
    server: ServerHandle,
}

impl ApplicationHandle {
    /// Closes every WebSocket with 1001, then stops accepting and finishes in-flight requests.
    pub async fn shutdown(&self) {
        self.realtime.shutdown();
        // Every stream's channel closes; its session says goodbye with 1001.
        self.layer.close().await;
        // Let sessions queue their close frames before the server stops polling them.
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.server.stop(true).await;
    }

    /// Stops at once, like a crash would: no close frames, no lease release.
    pub async fn abort(&self) {
        self.server.stop(false).await;
    }
}

impl Application {
    /// Opens the database (running migrations), sets up the channel layer, binds the
    /// listener and starts the dispatcher and presence tasks. Serve with
    /// [`Application::run_until_stopped`].
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        settings.check().map_err(StartupError::Insecure)?;
        if settings.debug && !settings.bind.ip().is_loopback() {
            tracing::warn!(
                bind = %settings.bind,
                "debug mode on a public address: password-reset tokens are in responses"
            );
        }
        let secret = match &settings.secret_key {
            Some(secret) if !secret.is_empty() => secret.clone().into_bytes(),
            _ => {
                tracing::warn!(
                    "no NEWSPAPER_SECRET_KEY set: using a random key (debug mode); tokens will not survive a restart"
                );
                crate::auth_random_id().into_bytes()
            }
        };
        let url = settings.database_url.clone();
        let mut options = PoolOptions::for_backend(url.backend());
        if let Some(size) = settings.database_pool_size {
            options.max_size = size;
        }
        options.connection_timeout = settings.database_timeout;
        options.statement_timeout = settings.statement_timeout;
        options.write_queue = settings.write_queue;
        let pool_size = options.max_size;
        let db = tokio::task::spawn_blocking(move || {
            let db = Database::connect(&url, options)?;
            let applied = db.run_migrations()?;
            if !applied.is_empty() {
                tracing::info!(?applied, "applied migrations");
            }
            Ok::<_, PersistenceError>(db)
        })
        .await
        .map_err(|e| StartupError::Database(PersistenceError::Task(e.to_string())))??;
        tracing::info!(database = %db.url(), "database ready");

        let instance = settings.instance_id.clone().unwrap_or_else(instance_name);
        let layer_config = LayerConfig {
            capacity: settings.realtime.channel_capacity,
            group_expiry: settings.realtime.group_expiry,
        };
        let (layer, mode): (Arc<dyn ChannelLayer>, DispatchMode) = match &settings.channel_layer {
            ChannelLayerSetting::Memory => {
                (Arc::new(InMemoryChannelLayer::new(layer_config)), DispatchMode::Exclusive)
            }
            ChannelLayerSetting::Redis(url) => {
                let tls_root_ca = match &settings.redis_ca_file {
                    Some(path) => Some(std::fs::read(path).map_err(|e| {
                        StartupError::ChannelLayer(format!("{}: {e}", path.display()))
                    })?),
                    None => None,
                };
                let options = RedisOptions {
                    namespace: settings.redis_namespace.clone(),
                    tls_root_ca,
                    ..RedisOptions::default()
                };
                let layer = RedisChannelLayer::new(url, layer_config, options)
                    .map_err(|e| StartupError::ChannelLayer(e.to_string()))?;
                // Serve HTTP even while Redis is down; the layer keeps reconnecting.
                if let Err(err) = layer.ready().await {
                    tracing::warn!(error = %err, "Redis is not reachable yet; serving HTTP and retrying");
                }
                (Arc::new(layer), DispatchMode::Leased { instance: instance.clone() })
            }
        };
        let shared = mode != DispatchMode::Exclusive;
        // Replays may use half the pool at most: the rest is for API requests.
        let limits = FeedLimits {
            max_streams_per_client: settings.ws_max_per_client,
            concurrent_replays: usize::try_from(pool_size / 2).unwrap_or(1).max(1),
        };
        let realtime = Realtime::with_limits(instance.clone(), shared, limits);
        realtime.metrics().observe(db.clone(), layer.clone());

        let settings = Arc::new(settings);
        let state = web::Data::new(AppState {
            db: db.clone(),
            tokens: TokenService::new(
                &secret,
                settings.access_token_lifetime,
                settings.refresh_token_lifetime,
                settings.password_reset_lifetime,
            ),
            passwords: PasswordHasher::new(settings.bcrypt_cost),
            throttle: Throttle::new(settings.auth_rate_limit_per_minute),
            layer: layer.clone(),
            realtime: realtime.clone(),
            settings: settings.clone(),
            pages: Pages::load()?,
            list_cache: Default::default(),
        });

        let listener = bind_listener(settings.bind)?;
        let port = listener.local_addr()?.port();
        let app_state = state.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .configure(configure)
                .default_service(web::to(not_found))
                .wrap(ErrorHandlers::new().default_handler(middleware::json_error_body))
                .wrap(from_fn(middleware::catch_panics))
                .wrap(from_fn(middleware::observe_requests))
                .wrap(TracingLogger::<middleware::RequestSpans>::new())
                .wrap(from_fn(middleware::assign_request_id))
        })
        // Before `listen`: the listener copies the connect hook when it is added.
        .on_connect({
            let send_buffer = settings.socket_send_buffer_bytes;
            move |connection, _| tune_socket(connection, send_buffer)
        })
        .listen(listener)?
        .max_connections(settings.max_connections_per_worker)
        .disable_signals()
        .shutdown_timeout(5);
        if let Some(workers) = settings.workers {
            server = server.workers(workers.max(1));
        }
        let server = server.run();
        let metrics_server = match settings.metrics_bind {
            Some(address) => {
                let metrics_state = state.clone();
                let listener = bind_listener(address)?;
                let metrics_port = listener.local_addr()?.port();
                tracing::info!(address = %listener.local_addr()?, "metrics listening");
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(metrics_state.clone())
                        .route("/metrics", web::get().to(crate::metrics::metrics))
                })
                .listen(listener)?
                .workers(1)
                .disable_signals()
                .run();
                Some((metrics_port, server))
            }
            None => None,
        };

        let dispatcher =
            Dispatcher::new(db, layer.clone(), realtime.clone(), mode, settings.realtime.clone());
        let tasks = vec![
            tokio::spawn(dispatcher.run()),
            tokio::spawn(realtime::run_presence(
                layer.clone(),
                realtime.clone(),
                settings.realtime.presence_interval,
            )),
            tokio::spawn(realtime::forward_remote_wakes(layer.clone(), realtime.clone())),
        ];
        tracing::info!(%instance, address = %settings.bind.ip(), port, "listening");
        let handle = ApplicationHandle { realtime, layer: layer.clone(), server: server.handle() };
        Ok(Self { port, server, metrics_server, handle, tasks, layer })
    }

    /// The port actually bound (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port `/metrics` is served on when it has an address of its own.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_server.as_ref().map(|(port, _)| *port)
    }

    /// A handle to stop this instance.
    pub fn handle(&self) -> ApplicationHandle {
        self.handle.clone()
    }

    /// Serves until stopped, then stops the background tasks and the layer.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let metrics = self.metrics_server.map(|(_, server)| {
            let handle = server.handle();
            (handle, tokio::spawn(server))
        });
        let result = self.server.await;
        if let Some((handle, running)) = metrics {
            handle.stop(true).await;
            let _ = running.await;
        }
        self.handle.realtime.shutdown();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        self.layer.close().await;
        result
    }
}

/// Binds with a deep accept queue: the standard library's 128 drops connections when thousands
/// of clients reconnect at once (after a restart, say).
fn bind_listener(address: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket =
        socket2::Socket::new(socket2::Domain::for_address(address), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Detects dead or never-reading peers at the TCP level: keepalive for idle connections, and a
/// user timeout so that a client which stops reading cannot pin buffers forever.
fn tune_socket(connection: &dyn std::any::Any, send_buffer: Option<usize>) {
    if let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
        let socket = socket2::SockRef::from(stream);
        if let Some(bytes) = send_buffer {
            let _ = socket.set_send_buffer_size(bytes);
        }
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(60))
            .with_interval(Duration::from_secs(10));
        let _ = socket.set_tcp_keepalive(&keepalive);
        let _ = socket.set_tcp_user_timeout(Some(Duration::from_secs(120)));
        let _ = socket.set_tcp_nodelay(true);
    }
}
