//! Who is calling: the bearer token of a request, checked against the token's signature and
//! the user's current state (active, password unchanged).

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use newspaper_domain::{User, UserId, Viewer};
use newspaper_persistence::{UserRecord, UserRepository};

use super::tokens::{Claims, TokenError, TokenService, TokenType};
use crate::ApiError;
use crate::state::AppState;

/// An authenticated, active user.
#[derive(Debug, Clone)]
pub struct AuthUser {
    /// The user as stored now.
    pub user: User,
    /// The user's current password hash (to issue tokens bound to it).
    pub password_hash: String,
}

impl AuthUser {
    /// The identity posts are filtered by.
    pub fn viewer(&self) -> Viewer {
        Viewer::User { id: self.user.id, is_staff: self.user.is_staff }
    }
}

/// Requires a valid access token (401 otherwise).
#[derive(Debug, Clone)]
pub struct Authenticated(pub AuthUser);

/// Anonymous when no token is sent; a token that is sent must be valid (401 otherwise), as
/// with DRF's authentication classes.
#[derive(Debug, Clone)]
pub struct MaybeAuthenticated(pub Option<AuthUser>);

impl MaybeAuthenticated {
    /// The viewer: the user, or anonymous.
    pub fn viewer(&self) -> Viewer {
        self.0.as_ref().map_or(Viewer::Anonymous, AuthUser::viewer)
    }
}

/// A valid access token whose user is not loaded yet, or anonymous when no token is sent: for
/// a read that loads the user in its own database snapshot, one trip to the database instead of
/// two. A token that is sent and does not verify is refused (401) before any read.
#[derive(Debug, Clone)]
pub struct MaybeBearer(pub Option<Claims>);

impl MaybeBearer {
    /// The account the token names, if there is a token.
    pub fn user_id(&self) -> Option<UserId> {
        self.0.as_ref().map(|claims| UserId(claims.user_id))
    }

    /// The viewer the token stands for, checked (as [`authenticate`] does) against `record`,
    /// the account [`MaybeBearer::user_id`] names as read in the caller's snapshot.
    pub fn viewer_of(
        &self,
        tokens: &TokenService,
        record: Option<&UserRecord>,
    ) -> Result<Viewer, ApiError> {
        let Some(claims) = &self.0 else { return Ok(Viewer::Anonymous) };
        let user = &may_act(tokens, record, claims)?.user;
        Ok(Viewer::User { id: user.id, is_staff: user.is_staff })
    }
}

impl FromRequest for MaybeBearer {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready((|| {
            let Some(token) = bearer_token(req)? else { return Ok(MaybeBearer(None)) };
            let state = state_of(req)?;
            Ok(MaybeBearer(Some(state.tokens.decode(&token, &[TokenType::Access])?)))
        })())
    }
}

/// The raw token of an `Authorization: Bearer` header; `Ok(None)` when there is no bearer
/// header at all (other schemes are not ours to judge).
fn bearer_token(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else { return Ok(None) };
    let value = value.to_str().map_err(|_| {
        ApiError::Unauthorized("Authorization header contains invalid characters".into())
    })?;
    let mut parts = value.split_whitespace();
    match parts.next() {
        Some(scheme) if scheme.eq_ignore_ascii_case("bearer") => {}
        _ => return Ok(None),
    }
    match (parts.next(), parts.next()) {
        (Some(token), None) => Ok(Some(token.to_owned())),
        _ => Err(ApiError::Unauthorized(
            "Authorization header must contain two space-delimited values".into(),
        )),
    }
}

/// Checks an access token and loads its user: unknown, inactive, or changed-password users
/// are refused.
pub async fn authenticate(state: &AppState, token: &str) -> Result<AuthUser, ApiError> {
    authenticate_as(state, token, &[TokenType::Access]).await.map(|(user, _)| user)
}

/// Like [`authenticate`] for any of the `accept`ed token types; also returns the claims.
pub(crate) async fn authenticate_as(
    state: &AppState,
    token: &str,
    accept: &[TokenType],
) -> Result<(AuthUser, Claims), ApiError> {
    let claims = state.tokens.decode(token, accept)?;
    let id = UserId(claims.user_id);
    let record = state.db.read(move |conn| UserRepository::find_by_id(conn, id)).await?;
    let user = check_user(&state.tokens, record, &claims)?;
    Ok((user, claims))
}

/// Whether the user a valid token names (as loaded now) may act: they exist, are active, and
/// have not changed their password since the token was issued.
pub(crate) fn check_user(
    tokens: &TokenService,
    record: Option<UserRecord>,
    claims: &Claims,
) -> Result<AuthUser, ApiError> {
    may_act(tokens, record.as_ref(), claims)?;
    let record = record.ok_or_else(|| ApiError::Unauthorized("User not found".into()))?;
    Ok(AuthUser { user: record.user, password_hash: record.password_hash })
}

/// [`check_user`] without taking the record: `record`, if the user may act.
fn may_act<'a>(
    tokens: &TokenService,
    record: Option<&'a UserRecord>,
    claims: &Claims,
) -> Result<&'a UserRecord, ApiError> {
    let record = record.ok_or_else(|| ApiError::Unauthorized("User not found".into()))?;
    if !record.user.is_active {
        return Err(ApiError::Unauthorized("User is inactive".into()));
    }
    if tokens.password_version(&record.password_hash) != claims.pwv {
        return Err(TokenError::Invalid.into());
    }
    Ok(record)
}

fn state_of(req: &HttpRequest) -> Result<web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| ApiError::Internal("application state is not configured".into()))
}

impl FromRequest for MaybeAuthenticated {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = bearer_token(req);
        let state = state_of(req);
        Box::pin(async move {
            match token? {
                None => Ok(MaybeAuthenticated(None)),
                Some(token) => {
                    let state = state?;
                    Ok(MaybeAuthenticated(Some(authenticate(&state, &token).await?)))
                }
            }
        })
    }
}

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let maybe = MaybeAuthenticated::from_request(req, payload);
        Box::pin(async move {
            maybe.await?.0.map(Authenticated).ok_or_else(|| {
                ApiError::Unauthorized("Authentication credentials were not provided.".into())
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn bearer_header_parsing() {
        let req = |v: &str| {
            TestRequest::default().insert_header((header::AUTHORIZATION, v)).to_http_request()
        };
        assert_eq!(bearer_token(&req("Bearer abc")).unwrap(), Some("abc".into()));
        assert_eq!(bearer_token(&req("bearer abc")).unwrap(), Some("abc".into()));
        assert_eq!(bearer_token(&req("Basic dXNlcg==")).unwrap(), None);
        assert!(bearer_token(&req("Bearer")).is_err());
        assert!(bearer_token(&req("Bearer a b")).is_err());
        assert_eq!(bearer_token(&TestRequest::default().to_http_request()).unwrap(), None);
    }
}
