//! Accounts and authentication: bcrypt passwords, simplejwt-style tokens, the bearer
//! extractor, attempt throttling and the /api/auth/ endpoints.

mod accounts;
mod extractor;
pub(crate) mod handlers;
mod hs256;
mod passwords;
mod throttle;
mod tokens;

pub use accounts::{EMAIL_TAKEN, NewAccount, is_email_taken};
pub use extractor::{AuthUser, Authenticated, MaybeAuthenticated, MaybeBearer, authenticate};
pub(crate) use extractor::{authenticate_as, check_user};
pub use passwords::{
    PasswordHasher, hash_blocking as hash_password_blocking,
    verify_blocking as verify_password_blocking,
};
pub use throttle::Throttle;
pub(crate) use tokens::random_id;
pub use tokens::{Claims, TokenError, TokenPair, TokenService, TokenType};
