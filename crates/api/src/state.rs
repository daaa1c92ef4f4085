//! What every handler can reach: the database, token and password services, the channel
//! layer, the realtime handle, settings and templates.

use std::sync::Arc;

use newspaper_events::ChannelLayer;
use newspaper_persistence::Database;

use crate::auth::{PasswordHasher, Throttle, TokenService};
use crate::pages::Pages;
use crate::realtime::Realtime;
use crate::settings::Settings;

/// Shared application state, registered as `web::Data<AppState>`.
pub struct AppState {
    /// The database.
    pub db: Database,
    /// Issues and checks JWTs.
    pub tokens: TokenService,
    /// Hashes and checks passwords.
    pub passwords: PasswordHasher,
    /// Limits login, registration and reset attempts.
    pub throttle: Throttle,
    /// The channel layer.
    pub layer: Arc<dyn ChannelLayer>,
    /// The live feed's shared handle.
    pub realtime: Realtime,
    /// The settings this instance started with.
    pub settings: Arc<Settings>,
    /// HTML pages.
    pub pages: Pages,
    /// List pages, by which posts their readers see.
    pub list_cache: crate::posts::ListCache,
    /// The heads signed-in readers listed posts with, while nothing is committed.
    pub list_heads: crate::posts::HeadCache,
    /// Page reads under way for signed-in readers, that others who miss the page wait for.
    pub page_reads: crate::posts::PageReads,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("db", &self.db)
            .field("realtime", &self.realtime)
            .finish_non_exhaustive()
    }
}
