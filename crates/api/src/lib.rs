//! The HTTP and WebSocket front of the newspaper service: actix-web handlers with Django REST
//! Framework semantics, JWT auth, the OpenAPI document, the live feed and the demo page.
//!
//! Run a whole instance with [`Application`], or mount the routes in your own actix app with
//! [`configure`] and an [`AppState`].
//!
//! ```no_run
//! use newspaper_api::{Application, Settings};
//! use newspaper_persistence::DatabaseUrl;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut settings = Settings::new(DatabaseUrl::parse("newspaper.db")?);
//! settings.debug = true; // generated secret, localhost origins
//! settings.bind = "127.0.0.1:0".parse()?;
//! let app = Application::build(settings).await?;
//! println!("listening on port {}", app.port());
//! app.run_until_stopped().await?;
//! # Ok(())
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
mod settings;
mod state;

pub use app::{Application, ApplicationHandle, StartupError, configure};
pub use client_addr::{TrustedProxies, client_ip};
pub use error::{ApiError, ErrorDetail};
pub use json_body::JsonObject;
pub use pages::Pages;
pub use settings::{ChannelLayerSetting, MIN_SECRET_KEY_BYTES, RealtimeSettings, Settings};
pub use state::AppState;

pub(crate) use auth::random_id as auth_random_id;
