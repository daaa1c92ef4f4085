//! /api/auth/: accounts and tokens, with simplejwt's behaviour.

use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use newspaper_domain::{Email, RevocationReason, User, UserId, ValidationErrors, now};
use newspaper_persistence::{RefreshTokenRepository, UserRepository};
use serde::Serialize;
use utoipa::ToSchema;

use super::accounts::{NewAccount, email_taken, is_email_taken, new_password as new_password_for};
use super::extractor::{Authenticated, authenticate_as};
use super::tokens::{TokenPair, TokenType};
use crate::ApiError;
use crate::client_addr::client_ip;
use crate::error::ErrorDetail;
use crate::json_body::JsonObject;
use crate::openapi::{
    BadRequestBody, Empty, LoginRequest, PasswordChangeRequest, PasswordResetConfirmRequest,
    PasswordResetRequest, RefreshRequest, RegisterRequest, VerifyRequest,
};
use crate::state::AppState;

/// Answer of `POST /api/auth/password-reset/`; the same whether or not the account exists.
#[derive(Serialize, ToSchema)]
pub struct PasswordResetResponse {
    /// What happens next.
    detail: String,
    /// Debug mode only, for an existing account: the user id to confirm with.
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<String>,
    /// Debug mode only, for an existing account: the single-use reset token.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

/// Answer of a password change: every earlier token is revoked, so here are new ones.
#[derive(Serialize, ToSchema)]
pub struct PasswordChangeResponse {
    /// What happened.
    detail: String,
    /// A new access token.
    access: String,
    /// A new refresh token.
    refresh: String,
}

/// Create an account.
#[utoipa::path(post, path = "/api/auth/register/", tag = "auth", request_body = RegisterRequest,
    responses(
        (status = 201, description = "Account created", body = User),
        (status = 400, description = "Invalid fields, the email is taken, or the body is not JSON", body = BadRequestBody),
        (status = 429, description = "Too many attempts from this client", body = ErrorDetail)))]
pub async fn register(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: JsonObject,
) -> Result<HttpResponse, ApiError> {
    state.throttle.check(client_ip(&req), "register")?;
    let mut errors = ValidationErrors::new();
    let email = body.required_str("email", &mut errors);
    let password = body.required_str("password", &mut errors);
    let username = body.optional_str("username", &mut errors);
    let Some(account) = NewAccount::check(email, password, username, &mut errors) else {
        return Err(errors.into());
    };
    let lookup = account.email.clone();
    if state.db.read(move |conn| UserRepository::find_by_email(conn, &lookup)).await?.is_some() {
        return Err(email_taken());
    }
    let password_hash = state.passwords.hash(account.password.clone()).await?;
    let created = state.db.write(move |conn| account.create(conn, &password_hash, false)).await;
    // Two registrations of one email at once: the second is told as the check above would.
    let user = created.map_err(|e| if is_email_taken(&e) { email_taken() } else { e.into() })?;
    tracing::info!(user = %user.id, "account registered");
    Ok(HttpResponse::Created().json(user))
}

/// Log in: trade email and password for an access and a refresh token.
#[utoipa::path(post, path = "/api/auth/token/", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "An access and a refresh token", body = TokenPair),
        (status = 400, description = "Missing fields, or the body is not JSON", body = BadRequestBody),
        (status = 401, description = "Wrong credentials or inactive account", body = ErrorDetail),
        (status = 429, description = "Too many attempts from this client", body = ErrorDetail)))]
pub async fn obtain_token(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: JsonObject,
) -> Result<HttpResponse, ApiError> {
    state.throttle.check(client_ip(&req), "login")?;
    let mut errors = ValidationErrors::new();
    let email = body.required_str("email", &mut errors).map(str::to_owned);
    let password = body.required_str("password", &mut errors).map(str::to_owned);
    let (Some(email), Some(password), true) = (email, password, errors.is_empty()) else {
        return Err(errors.into());
    };
    let record = match Email::parse(&email) {
        Ok(email) => state.db.read(move |conn| UserRepository::find_by_email(conn, &email)).await?,
        Err(_) => None,
    };
    let hash = record.as_ref().map(|r| r.password_hash.clone());
    let matches = state.passwords.verify(password, hash).await?;
    match record {
        Some(record) if matches && record.user.is_active => Ok(HttpResponse::Ok()
            .json(state.tokens.issue_pair(record.user.id, &record.password_hash)?)),
        _ => {
            Err(ApiError::Unauthorized("No active account found with the given credentials".into()))
        }
    }
}

fn required_token(body: &JsonObject, field: &str) -> Result<String, ApiError> {
    let mut errors = ValidationErrors::new();
    body.required_text(field, &mut errors).map(str::to_owned).ok_or_else(|| errors.into())
}

fn blacklisted() -> ApiError {
    ApiError::Unauthorized("Token is blacklisted".into())
}

/// Blacklists a refresh token; fails if it already was (used, or logged out).
async fn consume_refresh(state: &AppState, claims: &super::tokens::Claims) -> Result<(), ApiError> {
    let (jti, user, exp) = (claims.jti.clone(), UserId(claims.user_id), claims.exp);
    let expires_at = chrono::DateTime::from_timestamp(exp, 0).unwrap_or_else(chrono::Utc::now);
    let fresh = state
        .db
        .write(move |conn| RefreshTokenRepository::blacklist(conn, &jti, user, expires_at, now()))
        .await?;
    if fresh { Ok(()) } else { Err(blacklisted()) }
}

/// Rotate a refresh token: the old one is blacklisted, a new pair is returned.
#[utoipa::path(post, path = "/api/auth/token/refresh/", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new pair; the refresh token sent is blacklisted", body = TokenPair),
        (status = 400, description = "Missing field, or the body is not JSON", body = BadRequestBody),
        (status = 401, description = "Invalid, expired, wrong-type or blacklisted token", body = ErrorDetail)))]
pub async fn refresh_token(
    state: web::Data<AppState>,
    body: JsonObject,
) -> Result<HttpResponse, ApiError> {
    let token = required_token(&body, "refresh")?;
    let (user, claims) = authenticate_as(&state, &token, &[TokenType::Refresh]).await?;
    consume_refresh(&state, &claims).await?;
    Ok(HttpResponse::Ok().json(state.tokens.issue_pair(user.user.id, &user.password_hash)?))
}

/// Check a token: 200 if it is valid now, 401 otherwise.
#[utoipa::path(post, path = "/api/auth/token/verify/", tag = "auth", request_body = VerifyRequest,
    responses(
        (status = 200, description = "The token is valid now", body = Empty),
        (status = 400, description = "Missing field, or the body is not JSON", body = BadRequestBody),
        (status = 401, description = "Invalid, expired or blacklisted token", body = ErrorDetail)))]
pub async fn verify_token(
    state: web::Data<AppState>,
    body: JsonObject,
) -> Result<HttpResponse, ApiError> {
    let token = required_token(&body, "token")?;
    let (_, claims) =
        authenticate_as(&state, &token, &[TokenType::Access, TokenType::Refresh]).await?;
    if claims.token_type == TokenType::Refresh {
        let jti = claims.jti.clone();
        if state.db.read(move |conn| RefreshTokenRepository::is_blacklisted(conn, &jti)).await? {
            return Err(blacklisted());
        }
    }
    Ok(HttpResponse::Ok().json(Empty {}))
}

/// Log out: blacklist the refresh token.
#[utoipa::path(post, path = "/api/auth/logout/", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 205, description = "Logged out: the refresh token is blacklisted"),
        (status = 400, description = "Missing field, or the body is not JSON", body = BadRequestBody),
        (status = 401, description = "Invalid, expired, wrong-type or blacklisted token", body = ErrorDetail)))]
pub async fn logout(
    state: web::Data<AppState>,
    body: JsonObject,
) -> Result<HttpResponse, ApiError> {
    let token = required_token(&body, "refresh")?;
    let (_, claims) = authenticate_as(&state, &token, &[TokenType::Refresh]).await?;
    consume_refresh(&state, &claims).await?;
    Ok(HttpResponse::ResetContent().finish())
}

/// The authenticated user.
#[utoipa::path(get, path = "/api/auth/me/", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "The authenticated user", body = User),
        (status = 401, description = "No valid access token", body = ErrorDetail)))]
pub async fn me(Authenticated(user): Authenticated) -> HttpResponse {
    HttpResponse::Ok().json(user.user)
}

const RESET_SENT: &str =
    "If an account with this email exists, a password reset link has been sent.";

fn encode_uid(id: UserId) -> String {
    URL_SAFE_NO_PAD.encode(id.0.to_string())
}

fn decode_uid(uid: &str) -> Option<UserId> {
    let bytes = URL_SAFE_NO_PAD.decode(uid.trim_end_matches('=')).ok()?;
    std::str::from_utf8(&bytes).ok()?.parse().ok().map(UserId)
}

/// Ask for a password reset. The answer is the same whether or not the account exists; in
/// debug mode it also carries `uid` and `token` for an existing account.
#[utoipa::path(post, path = "/api/auth/password-reset/", tag = "auth", request_body = PasswordResetRequest,
    responses(
        (status = 200, description = "The same answer whether or not the account exists", body = PasswordResetResponse),
        (status = 400, description = "Invalid email, or the body is not JSON", body = BadRequestBody),
        (status = 429, description = "Too many attempts from this client", body = ErrorDetail)))]
pub async fn request_password_reset(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: JsonObject,
) -> Result<HttpResponse, ApiError> {
    state.throttle.check(client_ip(&req), "password_reset")?;
    let mut errors = ValidationErrors::new();
    let email = body
        .required_str("email", &mut errors)
        .and_then(|e| errors.check("email", Email::parse(e)));
    let (Some(email), true) = (email, errors.is_empty()) else { return Err(errors.into()) };
    let record = state.db.read(move |conn| UserRepository::find_by_email(conn, &email)).await?;
    let mut response = PasswordResetResponse { detail: RESET_SENT.into(), uid: None, token: None };
    if let Some(record) = record.filter(|r| r.user.is_active) {
        let (token, _) =
            state.tokens.issue(TokenType::PasswordReset, record.user.id, &record.password_hash)?;
        let uid = encode_uid(record.user.id);
        if state.settings.debug {
            tracing::info!(user = %record.user.id, %uid, %token, "password reset requested (debug: token in response)");
            response.uid = Some(uid);
            response.token = Some(token);
        } else {
            // No mail transport is configured in this build; the request is recorded only.
            tracing::info!(user = %record.user.id, "password reset requested");
        }
    }
    Ok(HttpResponse::Ok().json(response))
}

fn invalid_reset_token() -> ApiError {
    ApiError::field("token", "Invalid or expired token.")
}

/// Set a new password with a reset token (single use, one hour).
#[utoipa::path(post, path = "/api/auth/password-reset/confirm/", tag = "auth",
    request_body = PasswordResetConfirmRequest,
    responses(
        (status = 200, description = "The password was reset", body = ErrorDetail),
        (status = 400, description = "Invalid uid, token or password, or the body is not JSON", body = BadRequestBody)))]
pub async fn confirm_password_reset(
    state: web::Data<AppState>,
    body: JsonObject,
) -> Result<HttpResponse, ApiError> {
    let mut errors = ValidationErrors::new();
    let uid = body.required_text("uid", &mut errors).map(str::to_owned);
    let token = body.required_text("token", &mut errors).map(str::to_owned);
    let new_password = body.required_str("new_password", &mut errors).map(str::to_owned);
    let (Some(uid), Some(token), Some(new_password), true) =
        (uid, token, new_password, errors.is_empty())
    else {
        return Err(errors.into());
    };
    let user_id = decode_uid(&uid).ok_or_else(|| ApiError::field("uid", "Invalid value."))?;
    let claims = state
        .tokens
        .decode(&token, &[TokenType::PasswordReset])
        .map_err(|_| invalid_reset_token())?;
    if claims.user_id != user_id.0 {
        return Err(invalid_reset_token());
    }
    let record = state.db.read(move |conn| UserRepository::find_by_id(conn, user_id)).await?;
    let record = record.filter(|r| r.user.is_active).ok_or_else(invalid_reset_token)?;
    if state.tokens.password_version(&record.password_hash) != claims.pwv {
        return Err(invalid_reset_token());
    }
    let password = new_password_for("new_password", &new_password, &record.user.email)?;
    let new_hash = state.passwords.hash(password).await?;
    let old_hash = record.password_hash;
    let replaced = state
        .db
        .write(move |conn| {
            UserRepository::replace_password_hash(
                conn,
                user_id,
                &old_hash,
                &new_hash,
                RevocationReason::PasswordReset,
                now(),
            )
        })
        .await?;
    if !replaced {
        return Err(invalid_reset_token());
    }
    // The user's live streams, anywhere, lose the rights of the old password.
    state.realtime.committed();
    tracing::info!(user = %user_id, "password reset");
    Ok(HttpResponse::Ok().json(ErrorDetail { detail: "Password has been reset.".into() }))
}

/// Change the password; every token issued before is revoked and a new pair returned.
#[utoipa::path(post, path = "/api/auth/password/change/", tag = "auth", security(("bearer" = [])),
    request_body = PasswordChangeRequest,
    responses(
        (status = 200, description = "Changed; earlier tokens are revoked, here are new ones", body = PasswordChangeResponse),
        (status = 400, description = "Wrong old password, weak new one, or the body is not JSON", body = BadRequestBody),
        (status = 401, description = "No valid access token", body = ErrorDetail)))]
pub async fn change_password(
    state: web::Data<AppState>,
    Authenticated(user): Authenticated,
    body: JsonObject,
) -> Result<HttpResponse, ApiError> {
    let mut errors = ValidationErrors::new();
    let old = body.required_str("old_password", &mut errors).map(str::to_owned);
    let new = body.required_str("new_password", &mut errors).map(str::to_owned);
    let (Some(old), Some(new), true) = (old, new, errors.is_empty()) else {
        return Err(errors.into());
    };
    let wrong_old = || {
        ApiError::field(
            "old_password",
            "Your old password was entered incorrectly. Please enter it again.",
        )
    };
    if !state.passwords.verify(old, Some(user.password_hash.clone())).await? {
        return Err(wrong_old());
    }
    let password = new_password_for("new_password", &new, &user.user.email)?;
    let new_hash = state.passwords.hash(password).await?;
    let (id, old_hash, stored) = (user.user.id, user.password_hash.clone(), new_hash.clone());
    let replaced = state
        .db
        .write(move |conn| {
            UserRepository::replace_password_hash(
                conn,
                id,
                &old_hash,
                &stored,
                RevocationReason::PasswordChanged,
                now(),
            )
        })
        .await?;
    if !replaced {
        return Err(wrong_old());
    }
    state.realtime.committed();
    let pair = state.tokens.issue_pair(id, &new_hash)?;
    tracing::info!(user = %id, "password changed");
    Ok(HttpResponse::Ok().json(PasswordChangeResponse {
        detail: "Password changed. Earlier tokens no longer work.".into(),
        access: pair.access,
        refresh: pair.refresh,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_round_trip_like_django() {
        assert_eq!(encode_uid(UserId(1)), "MQ");
        assert_eq!(decode_uid("MQ"), Some(UserId(1)));
        assert_eq!(decode_uid("MQ=="), Some(UserId(1)));
        assert_eq!(decode_uid(&encode_uid(UserId(123_456))), Some(UserId(123_456)));
        assert_eq!(decode_uid("!!"), None);
        assert_eq!(decode_uid("YWJj"), None);
    }
}
