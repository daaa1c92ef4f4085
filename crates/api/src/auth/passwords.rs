//! bcrypt hashing, always run on the blocking pool: a hash costs tens to hundreds of
//! milliseconds of CPU by design. As Django's `BCryptSHA256PasswordHasher`, the password goes
//! through SHA-256 first, so bcrypt's 72-byte limit never silently truncates a long password
//! (stored as `bcrypt_sha256$<bcrypt hash>`); plain bcrypt hashes stored before still verify.

use std::sync::{Arc, OnceLock};

use newspaper_domain::Password;
use sha2::{Digest, Sha256};

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
            hash_blocking(password.expose(), cost).map_err(|e| ApiError::Internal(e.to_string()))
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
            Ok(verify_blocking(&raw, target) && real)
        })
        .await
    }

    fn decoy(&self) -> &str {
        self.decoy.get_or_init(|| {
            hash_blocking("decoy password, never matches", self.cost).unwrap_or_default()
        })
    }
}

/// The marker of hashes made through SHA-256.
const SHA256_PREFIX: &str = "bcrypt_sha256$";

/// The password as bcrypt sees it: the hex SHA-256 of its UTF-8 bytes (64 ASCII bytes).
fn prehashed(raw: &str) -> String {
    hex::encode(Sha256::digest(raw.as_bytes()))
}

/// A `bcrypt_sha256$` hash of `raw` at `cost`. Blocking; the CLI calls it directly.
pub fn hash_blocking(raw: &str, cost: u32) -> Result<String, bcrypt::BcryptError> {
    bcrypt::hash(prehashed(raw), cost).map(|hash| format!("{SHA256_PREFIX}{hash}"))
}

/// Whether `raw` matches `hash` (either form). Blocking.
pub fn verify_blocking(raw: &str, hash: &str) -> bool {
    match hash.strip_prefix(SHA256_PREFIX) {
        Some(bcrypt_hash) => bcrypt::verify(prehashed(raw), bcrypt_hash).unwrap_or(false),
        None => bcrypt::verify(raw, hash).unwrap_or(false),
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
        assert!(hash.starts_with("bcrypt_sha256$$2"));
        assert!(hasher.verify("correct horse".into(), Some(hash.clone())).await.unwrap());
        assert!(!hasher.verify("wrong horse".into(), Some(hash)).await.unwrap());
        assert!(!hasher.verify("decoy password, never matches".into(), None).await.unwrap());
        assert!(!hasher.verify("x".repeat(100), Some("not a hash".into())).await.unwrap());
    }

    #[tokio::test]
    async fn long_passwords_are_never_truncated_and_old_hashes_still_verify() {
        let hasher = PasswordHasher::new(4);
        let long = "é".repeat(100);
        let hash = hasher.hash(Password::parse(&long, None).unwrap()).await.unwrap();
        assert!(hasher.verify(long.clone(), Some(hash.clone())).await.unwrap());
        // The same first 72 bytes, a different password: plain bcrypt would accept it.
        let mut other = long.clone();
        other.push('x');
        assert!(!hasher.verify(other, Some(hash)).await.unwrap());
        let legacy = bcrypt::hash("correct horse", 4).unwrap();
        assert!(hasher.verify("correct horse".into(), Some(legacy.clone())).await.unwrap());
        assert!(!hasher.verify("wrong horse".into(), Some(legacy)).await.unwrap());
    }
}
