//! The HTTP and WebSocket front of the newspaper service: actix-web handlers with Django REST
//! Framework semantics, JWT auth, the OpenAPI document, the live feed, the demo page and
//! Prometheus metrics.
//!
//! Use it to run the whole service ([`Application`]: the `newspaper` binary is a thin CLI around
//! it), or to add it to an actix-web application of your own: start a [`Newspaper`] (database,
//! channel layer, background tasks) and mount its [`Routes`] under any prefix, next to your
//! routes, in your `HttpServer` (`examples/embed.rs` is a whole program). Every link it makes
//! follows the prefix.
//!
//! ```
//! use actix_web::{App, test, web};
//! use newspaper_api::{Newspaper, Settings};
//! use newspaper_persistence::DatabaseUrl;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # actix_web::rt::System::new().block_on(async {
//! let dir = tempfile::tempdir()?;
//! let mut settings = Settings::new(DatabaseUrl::parse(dir.path().join("news.db").to_str().unwrap())?);
//! settings.debug = true; // a generated signing key; set `secret_key` in production
//! let news = Newspaper::start(settings).await?;
//!
//! let routes = news.routes();
//! let app = test::init_service(
//!     App::new()
//!         .route("/", web::get().to(|| async { "my own page" }))
//!         .service(routes.scope("/news")),
//! )
//! .await;
//! let page = test::call_service(&app, test::TestRequest::get().uri("/news/api/posts/").to_request()).await;
//! assert_eq!(page.status(), 200);
//! let own = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
//! assert_eq!(test::read_body(own).await, "my own page");
//!
//! news.shutdown().await;
//! news.stop().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```

mod app;
pub mod auth;
mod client_addr;
mod error;
pub mod health;
mod json_body;
pub mod metrics;
mod middleware;
pub mod openapi;
mod pages;
pub mod posts;
pub mod realtime;
mod service;
mod settings;
mod state;

pub use app::{Application, ApplicationHandle};
pub use client_addr::{TrustedProxies, client_ip};
pub use error::{ApiError, ErrorDetail};
pub use json_body::JsonObject;
pub use pages::Pages;
pub use service::{MountPath, Newspaper, Routes, StartupError, configure};
pub use settings::{ChannelLayerSetting, MIN_SECRET_KEY_BYTES, RealtimeSettings, Settings};
pub use state::AppState;

pub(crate) use auth::random_id as auth_random_id;
