//! The service without a server of its own: its state and background tasks ([`Newspaper`]),
//! and its routes ([`Routes`]), which mount at the root or under any prefix of an actix app.

use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{HttpServiceFactory, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::{ErrorHandlers, from_fn};
use actix_web::{HttpRequest, HttpResponse, Resource, Scope, web};
use newspaper_events::{
    ChannelLayer, InMemoryChannelLayer, LayerConfig, RedisChannelLayer, RedisOptions,
};
use newspaper_persistence::{Database, PersistenceError, PoolOptions};
use tokio::task::JoinHandle;

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
    #[error("the database could not be opened or migrated")]
    Database(#[from] PersistenceError),
    /// The channel layer could not be set up.
    #[error("the channel layer could not be set up")]
    ChannelLayer(#[from] newspaper_events::LayerError),
    /// The CA file for `rediss://` could not be read.
    #[error("cannot read the Redis CA file {}", path.display())]
    RedisCaFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The templates failed to compile.
    #[error("the templates failed to compile")]
    Templates(#[from] tera::Error),
    /// The address could not be bound.
    #[error("cannot listen")]
    Io(#[from] std::io::Error),
}

/// Where the routes are mounted: `""` at the root, `"/news"` under a prefix. Links the service
/// makes (pagination, `Location`, the pages' API and WebSocket URLs, the OpenAPI `servers`)
/// start with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountPath(String);

impl MountPath {
    /// A prefix such as `/news` (a trailing slash is dropped; `""` or `"/"` is the root).
    ///
    /// # Panics
    ///
    /// On a prefix with anything but ASCII letters, digits and `/ - _ . ~` (a programming
    /// error, caught at startup like an invalid route pattern): pages embed it unescaped.
    pub fn new(prefix: &str) -> Self {
        assert!(
            prefix.chars().all(|c| c.is_ascii_alphanumeric() || "/-_.~".contains(c)),
            "mount path {prefix:?}: use ASCII letters, digits and / - _ . ~"
        );
        let trimmed = prefix.trim_end_matches('/');
        if trimmed.is_empty() {
            MountPath(String::new())
        } else if trimmed.starts_with('/') {
            MountPath(trimmed.to_owned())
        } else {
            MountPath(format!("/{trimmed}"))
        }
    }

    /// The prefix, without a trailing slash (`""` at the root).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The mount path of the routes serving `req`.
    pub(crate) fn of(req: &HttpRequest) -> &str {
        req.app_data::<MountPath>().map_or("", MountPath::as_str)
    }
}

/// The service's state and routes, cheap to clone: what an `HttpServer` factory closure
/// captures to mount the service in every worker.
#[derive(Clone)]
pub struct Routes {
    state: web::Data<AppState>,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes").finish_non_exhaustive()
    }
}

impl Routes {
    /// Every route of the service (API, live feed, pages, `/metrics`) under `prefix` (`""` for
    /// the root), with the service's own middleware: request ids and spans, request logs and
    /// metrics, JSON errors, panics answered with a 500. Paths under the prefix that no route
    /// claims get a JSON 404.
    pub fn scope(
        &self,
        prefix: &str,
    ) -> Scope<
        impl ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<impl actix_web::body::MessageBody + use<>>,
            Error = actix_web::Error,
            InitError = (),
        > + use<>,
    > {
        let mount = MountPath::new(prefix);
        web::scope(mount.as_str())
            .app_data(self.state.clone())
            .app_data(mount)
            .configure(configure)
            .default_service(web::to(not_found))
            .wrap(ErrorHandlers::new().default_handler(middleware::json_error_body))
            .wrap(from_fn(middleware::catch_panics))
            .wrap(from_fn(middleware::observe_requests))
            .wrap(from_fn(middleware::in_request_span))
            .wrap(from_fn(middleware::assign_request_id))
    }

    /// Only `GET /metrics`, for a listener of its own.
    pub fn metrics_only(&self) -> impl HttpServiceFactory + use<> {
        web::resource("/metrics")
            .app_data(self.state.clone())
            .route(web::get().to(crate::metrics::metrics))
    }

    /// The state the handlers share.
    pub fn state(&self) -> &web::Data<AppState> {
        &self.state
    }
}

/// One newspaper instance without an HTTP server of its own: the database (migrated), the
/// channel layer, and the background tasks (the dispatcher that publishes committed changes,
/// presence counts). Serve its [`Routes`] from any actix-web server, under any prefix; call
/// [`Newspaper::shutdown`] before stopping that server and [`Newspaper::stop`] after.
pub struct Newspaper {
    routes: Routes,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Newspaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Newspaper").field("instance", &self.instance()).finish_non_exhaustive()
    }
}

impl Newspaper {
    /// Checks the settings, opens and migrates the database, connects the channel layer and
    /// starts the background tasks. `settings.bind` is not used here: the server that mounts
    /// the routes decides where to listen.
    pub async fn start(settings: Settings) -> Result<Self, StartupError> {
        settings.check().map_err(StartupError::Insecure)?;
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
                        StartupError::RedisCaFile { path: path.clone(), source: e }
                    })?),
                    None => None,
                };
                let options = RedisOptions {
                    namespace: settings.redis_namespace.clone(),
                    tls_root_ca,
                    ..RedisOptions::default()
                };
                let layer = RedisChannelLayer::new(url, layer_config, options)?;
                // Serve HTTP even while Redis is down; the layer keeps reconnecting.
                if let Err(err) = layer.ready().await {
                    tracing::warn!(error = %crate::error::chain(&err), "Redis is not reachable yet; serving HTTP and retrying");
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
            list_heads: Default::default(),
            page_reads: Default::default(),
        });

        let dispatcher =
            Dispatcher::new(db, layer.clone(), realtime.clone(), mode, settings.realtime.clone());
        let tasks = vec![
            tokio::spawn(dispatcher.run()),
            tokio::spawn(realtime::run_presence(
                layer.clone(),
                realtime.clone(),
                settings.realtime.presence_interval,
            )),
            tokio::spawn(realtime::forward_remote_wakes(layer, realtime)),
        ];
        Ok(Self { routes: Routes { state }, tasks })
    }

    /// The routes, to mount (see [`Routes::scope`]).
    pub fn routes(&self) -> Routes {
        self.routes.clone()
    }

    /// This instance's name (logs, the publishing lease).
    pub fn instance(&self) -> &str {
        self.routes.state.realtime.instance()
    }

    /// Closes every live stream with 1001 ("server shutting down") and the channel layer.
    /// Call it before stopping the HTTP server, so clients reconnect with `since`.
    pub async fn shutdown(&self) {
        shutdown_streams(&self.routes.state.realtime, &self.routes.state.layer).await;
    }

    /// Stops the background tasks (after the HTTP server has stopped).
    pub async fn stop(self) {
        self.routes.state.realtime.shutdown();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        self.routes.state.layer.close().await;
    }
}

/// Closes every stream (each says goodbye with 1001) and gives them a moment to queue their
/// close frames before the server stops polling them.
pub(crate) async fn shutdown_streams(realtime: &Realtime, layer: &Arc<dyn ChannelLayer>) {
    realtime.shutdown();
    layer.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
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

/// Registers every route of the service, without state or middleware: prefer
/// [`Routes::scope`], which adds both. To use it directly, give the app (or scope) the state
/// (`web::Data<AppState>`) and, under a prefix, its [`MountPath`].
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
