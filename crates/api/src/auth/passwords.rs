//! bcrypt hashing, always run on the blocking pool: a hash costs tens to hundreds of
//! milliseconds of CPU by design.

use std::sync::{Arc, OnceLock};

use newspaper_domain::Password;

use crate::ApiError;

/// Hashes and checks passwords at a fixed bcrypt cost.
#[derive(Clone)]
pub struct PasswordHasher {
    cost: u32,
    /// A hash of nothing in particular, checked when the account does not exist so that
    /// "no such user" takes as long as "wrong password".
    decoy: Arc<OnceLock<String>>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher").field("cost", &self.cost).finish()
    }
}

impl PasswordHasher {
    /// A hasher at `cost` (4 to 31).
    pub fn new(cost: u32) -> Self {
        Self { cost: cost.clamp(4, 31), decoy: Arc::default() }
    }

    /// Hashes a validated password.
    pub async fn hash(&self, password: Password) -> Result<String, ApiError> {
        let cost = self.cost;
        blocking(move || {
            bcrypt::hash(password.expose(), cost).map_err(|e| ApiError::Internal(e.to_string()))
        })
        .await
    }

    /// Whether `raw` matches `hash`; with no hash (unknown account), spends the same time and
    /// returns false.
    pub async fn verify(&self, raw: String, hash: Option<String>) -> Result<bool, ApiError> {
        let this = self.clone();
        blocking(move || {
            let (target, real) = match &hash {
                Some(hash) => (hash.as_str(), true),
                None => (this.decoy(), false),
            };
            // An error means a malformed hash or an over-long input: either way, no match.
            Ok(bcrypt::verify(&raw, target).unwrap_or(false) && real)
        })
        .await
    }

    fn decoy(&self) -> &str {
        self.decoy.get_or_init(|| {
            bcrypt::hash("decoy password, never matches", self.cost).unwrap_or_default()
        })
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::Internal(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_unknown_accounts_never_match() {
        let hasher = PasswordHasher::new(4);
        let hash = hasher.hash(Password::parse("correct horse", None).unwrap()).await.unwrap();
        assert!(hash.starts_with("$2"));
        assert!(hasher.verify("correct horse".into(), Some(hash.clone())).await.unwrap());
        assert!(!hasher.verify("wrong horse".into(), Some(hash)).await.unwrap());
        assert!(!hasher.verify("decoy password, never matches".into(), None).await.unwrap());
        assert!(!hasher.verify("x".repeat(100), Some("not a hash".into())).await.unwrap());
    }
}
