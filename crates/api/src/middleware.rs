//! Cross-cutting request handling: one log line per request, panics turned into JSON 500s,
//! and JSON bodies for error responses produced outside our handlers.

use std::panic::AssertUnwindSafe;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::{ErrorHandlerResponse, Next};
use actix_web::{HttpMessage, web};
use futures_util::FutureExt;
use tracing::Instrument;

use crate::ApiError;
use crate::error::ErrorDetail;
use crate::state::AppState;

/// The id of one request: the client's `X-Request-Id` if it sent a sane one, or a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// The request id header, in requests and responses.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

impl RequestId {
    /// A client's id is kept if it is 1 to 64 characters of letters, digits and `. _ : -`:
    /// enough for UUIDs and trace ids, nothing that could forge a log line.
    fn from_client(value: &HeaderValue) -> Option<Self> {
        let id = value.to_str().ok()?;
        let sane = (1..=64).contains(&id.len())
            && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'));
        sane.then(|| RequestId(id.to_owned()))
    }

    /// Ids need to be unique, not secret: a random start per process, then counted, so no
    /// request pays a system call for randomness.
    fn generate() -> Self {
        static START: OnceLock<u64> = OnceLock::new();
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let start = *START.get_or_init(|| {
            let id = crate::auth_random_id();
            u64::from_str_radix(&id[..16], 16).unwrap_or_default()
        });
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        RequestId(format!("{:016x}", start.wrapping_add(n)))
    }
}

/// Gives every request an id, kept in its extensions (for its log span) and returned in the
/// `X-Request-Id` response header.
pub async fn assign_request_id(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(RequestId::from_client)
        .unwrap_or_else(RequestId::generate);
    let value = HeaderValue::from_str(&id.0).ok();
    req.extensions_mut().insert(id);
    let mut response = next.call(req).await?;
    if let Some(value) = value {
        response.headers_mut().insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    Ok(response)
}

/// Runs the rest of the chain in the request's span, so every line logged while the request
/// is handled carries its id. Only the handling: the response body is polled outside it. The
/// live feed's bodies are polled for hours, on every delivery, and entering and leaving a span
/// on each poll cost ~4% of a delivery's CPU; their handshake is logged by the request line.
pub async fn in_request_span(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let span = {
        let extensions = req.extensions();
        let id = extensions.get::<RequestId>().map_or("", |id| id.0.as_str());
        tracing::info_span!("request", request_id = %id)
    };
    next.call(req).instrument(span).await
}

/// A method as a metric label: the standard ones, or `other` (labels stay a bounded set).
fn method_label(method: &actix_web::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

/// Logs method, path, status, client and latency of every request (inside its span, so with
/// its id), and counts it in the metrics by route template.
pub async fn observe_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.path().to_owned();
    let client = crate::client_addr::client_ip(req.request());
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let response = next.call(req).await;
    let (status, route) = match &response {
        Ok(res) => (res.status().as_u16(), res.request().match_pattern()),
        Err(err) => (err.as_response_error().status_code().as_u16(), None),
    };
    let elapsed = started.elapsed();
    if let Some(state) = state {
        let metrics = state.realtime.metrics();
        let route = route.as_deref().unwrap_or("unmatched");
        let method = method_label(&method);
        metrics.http_requests.with_label_values(&[method, route, &status.to_string()]).inc();
        metrics.http_duration.with_label_values(&[method, route]).observe(elapsed.as_secs_f64());
    }
    // Hundredths of a millisecond, as a number: JSON logs can sum and compare it.
    let latency_ms = (elapsed.as_secs_f64() * 100_000.0).round() / 100.0;
    tracing::info!(target: "newspaper::http", %method, %path, status, %client, latency_ms, "request");
    response
}

/// Turns a panicking handler into a logged 500 with a JSON body, instead of a dropped
/// connection. (It returns the error rather than a response: the request cannot be cloned up
/// front, because routing still needs to own it.)
pub async fn catch_panics(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let method = req.method().clone();
    let path = req.path().to_owned();
    let call = match std::panic::catch_unwind(AssertUnwindSafe(|| next.call(req))) {
        Ok(call) => call,
        Err(panic) => return Err(panicked(&method, &path, &*panic)),
    };
    match AssertUnwindSafe(call).catch_unwind().await {
        Ok(response) => response,
        Err(panic) => Err(panicked(&method, &path, &*panic)),
    }
}

fn panicked(
    method: &actix_web::http::Method,
    path: &str,
    panic: &(dyn std::any::Any + Send),
) -> actix_web::Error {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    ApiError::Internal(format!("handler panicked: {method} {path}: {message}")).into()
}

/// For `ErrorHandlers::default_handler`: gives any error response without a JSON body one
/// (`{"detail": "<reason>"}`), so clients never see an empty or HTML error.
pub fn json_error_body<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if is_json || res.status() == StatusCode::SWITCHING_PROTOCOLS {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let detail = status.canonical_reason().unwrap_or("Error").to_owned();
    let (req, old) = res.into_parts();
    let mut response =
        actix_web::HttpResponse::build(status).json(ErrorDetail { detail: format!("{detail}.") });
    for (name, value) in old.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            response.headers_mut().insert(name.clone(), value.clone());
        }
    }
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(ErrorHandlerResponse::Response(ServiceResponse::new(req, response).map_into_right_body()))
}

#[cfg(test)]
mod tests {
    use actix_web::middleware::{ErrorHandlers, from_fn};
    use actix_web::{App, HttpResponse, test, web};

    use super::*;

    #[actix_web::test]
    async fn a_panicking_handler_becomes_a_json_500() {
        let app = test::init_service(
            App::new()
                .wrap(from_fn(catch_panics))
                .route(
                    "/boom",
                    web::get().to(|| async {
                        #[allow(clippy::panic)]
                        if true {
                            panic!("kaboom")
                        }
                        HttpResponse::Ok().finish()
                    }),
                )
                .route("/fine", web::get().to(|| async { HttpResponse::Ok().body("ok") })),
        )
        .await;
        // The server turns the returned error into this response, after logging it.
        let err = test::try_call_service(&app, test::TestRequest::get().uri("/boom").to_request())
            .await
            .err()
            .expect("a panic becomes an error");
        let res = err.error_response();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = actix_web::body::to_bytes(res.into_body()).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body, serde_json::json!({"detail": "A server error occurred."}));
        let res =
            test::call_service(&app, test::TestRequest::get().uri("/fine").to_request()).await;
        assert_eq!(res.status(), StatusCode::OK);
    }

    #[actix_web::test]
    async fn bare_error_responses_get_json_bodies() {
        let app = test::init_service(
            App::new()
                .wrap(ErrorHandlers::new().default_handler(json_error_body))
                .route(
                    "/teapot",
                    web::get().to(|| async { HttpResponse::ImATeapot().body("<h1>no</h1>") }),
                )
                .route(
                    "/json",
                    web::get().to(|| async {
                        HttpResponse::BadRequest().json(serde_json::json!({"a": ["b"]}))
                    }),
                ),
        )
        .await;
        let res =
            test::call_service(&app, test::TestRequest::get().uri("/teapot").to_request()).await;
        assert_eq!(res.status(), StatusCode::IM_A_TEAPOT);
        let body: serde_json::Value = test::read_body_json(res).await;
        assert_eq!(body, serde_json::json!({"detail": "I'm a teapot."}));
        let res =
            test::call_service(&app, test::TestRequest::get().uri("/json").to_request()).await;
        let body: serde_json::Value = test::read_body_json(res).await;
        assert_eq!(body, serde_json::json!({"a": ["b"]}));
    }
}
