//! The one place errors become HTTP responses, in the shape Django REST Framework clients
//! expect: `{"field": ["message"]}` for validation, `{"detail": "message"}` for the rest.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use newspaper_domain::ValidationErrors;
use newspaper_events::LayerError;
use newspaper_persistence::PersistenceError;
use serde::Serialize;

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Field-level validation failed (400).
    #[error("invalid input: {0}")]
    Validation(ValidationErrors),
    /// The request as a whole is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// Missing or invalid credentials (401, with `WWW-Authenticate: Bearer`).
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated but not allowed (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such resource, or one the requester may not know about (404).
    #[error("{0}")]
    NotFound(String),
    /// The resource exists but not with this method (405).
    #[error("Method \"{method}\" not allowed.")]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The `Allow` header value.
        allow: &'static str,
    },
    /// The body is larger than the limit (413).
    #[error("Request body is too large (limit {0} bytes).")]
    PayloadTooLarge(usize),
    /// The body is not JSON (415).
    #[error("Unsupported media type \"{0}\" in request.")]
    UnsupportedMediaType(String),
    /// Too many attempts (429).
    #[error("Request was throttled. Expected available in {0} seconds.")]
    Throttled(u64),
    /// The client already has as many live streams open as it may (429).
    #[error("Too many open streams from this address (at most {0}).")]
    TooManyStreams(usize),
    /// A dependency (database, broker) is down or saturated (503).
    #[error("The service is temporarily unavailable. Please retry.")]
    Unavailable(String),
    /// A bug or an unexpected failure (500); the cause is logged, never shown.
    #[error("A server error occurred.")]
    Internal(String),
}

/// The `{"detail": ...}` body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// What went wrong, for humans.
    pub detail: String,
}

impl ApiError {
    /// "Not found." — the body DRF gives for a missing object or route.
    pub fn not_found() -> Self {
        ApiError::NotFound("Not found.".into())
    }

    /// "You do not have permission to perform this action." — DRF's 403.
    pub fn forbidden() -> Self {
        ApiError::Forbidden("You do not have permission to perform this action.".into())
    }

    /// A single-field validation error.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        ApiError::Validation(ValidationErrors::single(field, message))
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(errors: ValidationErrors) -> Self {
        ApiError::Validation(errors)
    }
}

/// An error and every cause under it, `outer: inner: innermost`, for the log line of a 500 or
/// a 503 (the response itself never shows it).
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl From<PersistenceError> for ApiError {
    fn from(err: PersistenceError) -> Self {
        match err {
            PersistenceError::NotFound => ApiError::not_found(),
            PersistenceError::Unavailable { .. } | PersistenceError::TimedOut => {
                ApiError::Unavailable(chain(&err))
            }
            other => ApiError::Internal(chain(&other)),
        }
    }
}

impl From<LayerError> for ApiError {
    fn from(err: LayerError) -> Self {
        match err {
            LayerError::Unavailable { .. } => ApiError::Unavailable(chain(&err)),
            other => ApiError::Internal(chain(&other)),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Throttled(_) | ApiError::TooManyStreams(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ApiError::Internal(cause) => tracing::error!(%cause, "internal error"),
            ApiError::Unavailable(cause) => tracing::warn!(%cause, "dependency unavailable"),
            _ => {}
        }
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthorized(_) => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"api\""));
            }
            ApiError::MethodNotAllowed { allow, .. } => {
                response.insert_header((header::ALLOW, HeaderValue::from_static(allow)));
            }
            ApiError::Throttled(seconds) => {
                response.insert_header((header::RETRY_AFTER, seconds.to_string()));
            }
            ApiError::Unavailable(_) => {
                response.insert_header((header::RETRY_AFTER, "1"));
            }
            _ => {}
        }
        match self {
            ApiError::Validation(errors) => response.json(errors),
            other => response.json(ErrorDetail { detail: other.to_string() }),
        }
    }
}

/// A `{"detail": ...}` response for statuses produced outside our handlers.
pub(crate) fn detail_response(status: StatusCode, detail: &str) -> HttpResponse {
    HttpResponse::build(status).json(ErrorDetail { detail: detail.to_owned() })
}

#[cfg(test)]
mod tests {
    use actix_web::body::to_bytes;

    use super::*;

    async fn body_of(err: ApiError) -> (StatusCode, serde_json::Value, HttpResponse<()>) {
        let response = err.error_response();
        let (head, body) = response.into_parts();
        let bytes = to_bytes(body).await.unwrap();
        (head.status(), serde_json::from_slice(&bytes).unwrap(), head)
    }

    #[actix_web::test]
    async fn validation_errors_are_keyed_by_field() {
        let (status, body, _) = body_of(ApiError::field("title", "This field is required.")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body, serde_json::json!({"title": ["This field is required."]}));
    }

    #[actix_web::test]
    async fn unauthorized_carries_www_authenticate() {
        let (status, body, head) = body_of(ApiError::Unauthorized("nope".into())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body, serde_json::json!({"detail": "nope"}));
        assert!(
            head.headers()
                .get(header::WWW_AUTHENTICATE)
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
    }

    #[actix_web::test]
    async fn internal_errors_hide_their_cause() {
        let (status, body, _) = body_of(ApiError::Internal("secret stack".into())).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body, serde_json::json!({"detail": "A server error occurred."}));
        let (status, _, head) =
            body_of(ApiError::from(PersistenceError::unavailable("pool timeout"))).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(head.headers().contains_key(header::RETRY_AFTER));
    }

    #[test]
    fn the_logged_cause_is_the_whole_chain() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = PersistenceError::unavailable_because("cannot connect to PostgreSQL", refused);
        match ApiError::from(err) {
            ApiError::Unavailable(cause) => {
                assert_eq!(cause, "database unavailable: cannot connect to PostgreSQL: refused")
            }
            other => panic!("{other:?}"),
        }
    }
}
