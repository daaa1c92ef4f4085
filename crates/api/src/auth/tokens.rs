//! JSON Web Tokens (HS256): access and refresh tokens as in simplejwt, and the single-use
//! password reset token. Each carries a fingerprint of the password hash, so changing the
//! password revokes every token issued before.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use newspaper_domain::UserId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ApiError;

/// What a token may be used for; never interchangeable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenType {
    /// Authenticates API requests and WebSocket connections.
    Access,
    /// Obtains new token pairs.
    Refresh,
    /// Sets a new password once.
    PasswordReset,
}

/// The claims of every token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// What the token is for.
    pub token_type: TokenType,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issue time, seconds since the epoch.
    pub iat: i64,
    /// Unique id, for blacklisting.
    pub jti: String,
    /// The user.
    pub user_id: i64,
    /// Fingerprint of the user's password hash when the token was issued.
    pub pwv: String,
}

/// An access and a refresh token.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TokenPair {
    /// Short-lived token for `Authorization: Bearer`.
    pub access: String,
    /// Longer-lived token for `/api/auth/token/refresh/`.
    pub refresh: String,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Bad signature, malformed, expired, or `alg` other than HS256 (including `none`).
    #[error("Token is invalid or expired")]
    Invalid,
    /// A valid token of another type.
    #[error("Token has wrong type")]
    WrongType,
}

impl From<TokenError> for ApiError {
    fn from(err: TokenError) -> Self {
        ApiError::Unauthorized(err.to_string())
    }
}

/// Issues and checks tokens with one secret.
#[derive(Clone)]
pub struct TokenService {
    encoding: EncodingKey,
    decoding: DecodingKey,
    secret: Vec<u8>,
    access_ttl: Duration,
    refresh_ttl: Duration,
    reset_ttl: Duration,
    remembered: Arc<RwLock<Remembered>>,
}

/// Entries each map of [`Remembered`] holds at most; a full map starts over.
const MOST_REMEMBERED: usize = 4096;

/// What checking a token computed, kept: a client sends the same access token with every
/// request until it expires, and verifying it again (base64, HMAC, two JSON documents) and
/// hashing the account's password fingerprint again were ~5% of a signed-in list's CPU.
#[derive(Default)]
struct Remembered {
    /// The claims of tokens whose signature verified, by the token's exact text. Expiry and
    /// type are still checked on every use.
    claims: HashMap<Box<str>, Claims>,
    /// Password fingerprints, by password hash.
    versions: HashMap<Box<str>, String>,
}

impl Remembered {
    fn keep<V>(map: &mut HashMap<Box<str>, V>, key: &str, value: V) {
        if map.len() >= MOST_REMEMBERED {
            map.clear();
        }
        map.insert(key.into(), value);
    }
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("access_ttl", &self.access_ttl)
            .field("refresh_ttl", &self.refresh_ttl)
            .finish_non_exhaustive()
    }
}

impl TokenService {
    /// A service signing with `secret`.
    pub fn new(
        secret: &[u8],
        access_ttl: Duration,
        refresh_ttl: Duration,
        reset_ttl: Duration,
    ) -> Self {
        super::hs256::install();
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            secret: secret.to_vec(),
            access_ttl,
            refresh_ttl,
            reset_ttl,
            remembered: Arc::default(),
        }
    }

    /// The fingerprint of a password hash that tokens carry.
    pub fn password_version(&self, password_hash: &str) -> String {
        let remembered = self.remembered.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(version) = remembered.versions.get(password_hash) {
            return version.clone();
        }
        drop(remembered);
        let version = self.compute_password_version(password_hash);
        let mut remembered = self.remembered.write().unwrap_or_else(PoisonError::into_inner);
        Remembered::keep(&mut remembered.versions, password_hash, version.clone());
        version
    }

    fn compute_password_version(&self, password_hash: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(&self.secret);
        hasher.update(b"|password-version|");
        hasher.update(password_hash.as_bytes());
        hex::encode(&hasher.finalize()[..8])
    }

    /// Signs a token of `kind` for `user`; returns it with its claims.
    pub fn issue(
        &self,
        kind: TokenType,
        user: UserId,
        password_hash: &str,
    ) -> Result<(String, Claims), ApiError> {
        let ttl = match kind {
            TokenType::Access => self.access_ttl,
            TokenType::Refresh => self.refresh_ttl,
            TokenType::PasswordReset => self.reset_ttl,
        };
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            token_type: kind,
            iat: now,
            exp: now + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2),
            jti: random_id(),
            user_id: user.0,
            pwv: self.password_version(password_hash),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiError::Internal(format!("signing a token: {e}")))?;
        Ok((token, claims))
    }

    /// A fresh access and refresh token.
    pub fn issue_pair(&self, user: UserId, password_hash: &str) -> Result<TokenPair, ApiError> {
        Ok(TokenPair {
            access: self.issue(TokenType::Access, user, password_hash)?.0,
            refresh: self.issue(TokenType::Refresh, user, password_hash)?.0,
        })
    }

    /// Checks signature, algorithm and expiry (no leeway), then that the type is one of
    /// `accept`.
    pub fn decode(&self, token: &str, accept: &[TokenType]) -> Result<Claims, TokenError> {
        let remembered = self.remembered.read().unwrap_or_else(PoisonError::into_inner);
        let known = remembered.claims.get(token).cloned();
        drop(remembered);
        let claims = match known {
            // As jsonwebtoken judges expiry, with no leeway.
            Some(claims) if claims.exp < jsonwebtoken::get_current_timestamp() as i64 => {
                return Err(TokenError::Invalid);
            }
            Some(claims) => claims,
            None => {
                let mut validation = Validation::new(Algorithm::HS256);
                validation.leeway = 0;
                validation.set_required_spec_claims(&["exp"]);
                let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
                    .map_err(|_| TokenError::Invalid)?
                    .claims;
                let mut remembered =
                    self.remembered.write().unwrap_or_else(PoisonError::into_inner);
                Remembered::keep(&mut remembered.claims, token, claims.clone());
                claims
            }
        };
        if accept.contains(&claims.token_type) { Ok(claims) } else { Err(TokenError::WrongType) }
    }
}

/// 128 random bits, hex: token ids and generated secrets.
pub(crate) fn random_id() -> String {
    let mut bytes = [0u8; 16];
    // Without OS randomness no token can be trusted; refuse loudly rather than issue weak ids.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut bytes).expect("the operating system refused to provide random bytes");
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    fn service() -> TokenService {
        let m = Duration::from_secs(60);
        TokenService::new(b"test secret", m, m * 10, m)
    }

    #[test]
    fn tokens_round_trip_and_are_typed() {
        let s = service();
        let pair = s.issue_pair(UserId(7), "hash").unwrap();
        let claims = s.decode(&pair.access, &[TokenType::Access]).unwrap();
        assert_eq!((claims.user_id, claims.token_type), (7, TokenType::Access));
        assert_eq!(claims.pwv, s.password_version("hash"));
        assert_ne!(claims.pwv, s.password_version("other hash"));
        assert_eq!(s.decode(&pair.refresh, &[TokenType::Access]), Err(TokenError::WrongType));
        assert_eq!(s.decode(&pair.access, &[TokenType::Refresh]), Err(TokenError::WrongType));
        assert!(s.decode(&pair.refresh, &[TokenType::Access, TokenType::Refresh]).is_ok());
    }

    #[test]
    fn tampered_foreign_expired_and_unsigned_tokens_are_invalid() {
        let s = service();
        let (token, _) = s.issue(TokenType::Access, UserId(1), "h").unwrap();
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
        payload["user_id"] = 2.into();
        parts[1] = URL_SAFE_NO_PAD.encode(payload.to_string());
        assert_eq!(s.decode(&parts.join("."), &[TokenType::Access]), Err(TokenError::Invalid));

        let other = TokenService::new(
            b"other",
            Duration::from_secs(60),
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
        assert_eq!(other.decode(&token, &[TokenType::Access]), Err(TokenError::Invalid));

        let expired =
            TokenService::new(b"test secret", Duration::ZERO, Duration::ZERO, Duration::ZERO);
        let (old, _) = expired.issue(TokenType::Access, UserId(1), "h").unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(s.decode(&old, &[TokenType::Access]), Err(TokenError::Invalid));

        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let unsigned = format!("{header}.{}.", parts[1]);
        assert_eq!(s.decode(&unsigned, &[TokenType::Access]), Err(TokenError::Invalid));
        assert_eq!(s.decode("garbage", &[TokenType::Access]), Err(TokenError::Invalid));
    }

    #[test]
    fn a_remembered_token_still_expires_and_is_still_typed() {
        let s = service();
        let (token, _) = s.issue(TokenType::Access, UserId(3), "h").unwrap();
        assert!(s.decode(&token, &[TokenType::Access]).is_ok());
        assert!(s.remembered.read().unwrap().claims.contains_key(token.as_str()));
        assert_eq!(s.decode(&token, &[TokenType::Refresh]), Err(TokenError::WrongType));
        let past = jsonwebtoken::get_current_timestamp() as i64 - 1;
        s.remembered.write().unwrap().claims.get_mut(token.as_str()).unwrap().exp = past;
        assert_eq!(s.decode(&token, &[TokenType::Access]), Err(TokenError::Invalid));
        // Nothing unverified is remembered, and a service remembers only what it verified.
        assert_eq!(s.decode("garbage", &[TokenType::Access]), Err(TokenError::Invalid));
        assert!(!s.remembered.read().unwrap().claims.contains_key("garbage"));
        let other =
            TokenService::new(b"other", Duration::from_secs(60), Duration::ZERO, Duration::ZERO);
        let (fresh, _) = s.issue(TokenType::Access, UserId(3), "h").unwrap();
        assert!(s.decode(&fresh, &[TokenType::Access]).is_ok());
        assert_eq!(other.decode(&fresh, &[TokenType::Access]), Err(TokenError::Invalid));
        // Fingerprints are the same remembered or not.
        assert_eq!(s.password_version("h"), s.compute_password_version("h"));
        assert_eq!(s.password_version("h"), s.password_version("h"));
    }

    #[test]
    fn what_is_remembered_is_bounded() {
        let s = service();
        for i in 0..MOST_REMEMBERED + 10 {
            s.password_version(&format!("hash {i}"));
        }
        assert!(s.remembered.read().unwrap().versions.len() <= MOST_REMEMBERED);
    }
}
