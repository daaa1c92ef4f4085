//! `/ws/blog/`: checks a handshake (upgrade, origin) and hands the connection to a session.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use newspaper_domain::Seq;

use super::origin_allowed;
use super::session::{self, SessionParams};
use crate::ApiError;
use crate::client_addr::client_ip;
use crate::state::AppState;

fn is_websocket_upgrade(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Reads `?token=` and `?since=`; a bad `since` is reported on the socket, after the upgrade,
/// where a browser can see it.
fn session_params(query: &str) -> SessionParams {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    let get = |key: &str| pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let since = get("since").filter(|s| !s.trim().is_empty()).map(|raw| {
        raw.trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(Seq)
            .ok_or_else(|| format!("since must be a non-negative integer, got {raw:?}"))
    });
    SessionParams { token: get("token").filter(|t| !t.is_empty()), since }
}

/// Open the live feed (WebSocket). See docs/websocket.md for the protocol.
#[utoipa::path(get, path = "/ws/blog/", tag = "realtime",
    params(
        ("token" = Option<String>, Query, description = "Access token; without it the stream is anonymous"),
        ("since" = Option<i64>, Query, description = "Replay retained events after this seq first")),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket handshake", body = crate::error::ErrorDetail),
        (status = 403, description = "Origin not allowed", body = crate::error::ErrorDetail),
        (status = 429, description = "Too many open streams from this client", body = crate::error::ErrorDetail),
        (status = 503, description = "Shutting down", body = crate::error::ErrorDetail)))]
pub(crate) async fn blog_feed_socket(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    if !is_websocket_upgrade(&req) {
        return Err(ApiError::BadRequest(
            "This is a WebSocket endpoint: connect with a WebSocket client (ws:// and an \
             `Upgrade: websocket` header), not a plain HTTP request."
                .into(),
        ));
    }
    if state.realtime.is_shutting_down() {
        return Err(ApiError::Unavailable("shutting down".into()));
    }
    let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok());
    let settings = &state.settings;
    if !origin_allowed(origin, host, &settings.allowed_origins, settings.debug) {
        tracing::info!(origin = origin.unwrap_or_default(), "WebSocket origin refused");
        return Err(ApiError::Forbidden("Origin not allowed.".into()));
    }
    let client = client_ip(&req);
    let Some(slot) = state.realtime.admit(client) else {
        tracing::info!(%client, "WebSocket refused: too many open streams");
        return Err(ApiError::TooManyStreams(state.realtime.max_streams_per_client()));
    };
    let params = session_params(req.query_string());
    // The stream writes its frames through its own response body, not actix-ws's session.
    let (response, _, stream) =
        actix_ws::handle(&req, body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let limit = settings.realtime.max_message_bytes;
    let stream =
        stream.max_frame_size(limit).aggregate_continuations().max_continuation_size(limit);
    let (response, upstream) = response.into_parts();
    let body = session::open_stream(state.into_inner(), params, stream, slot, upstream).await;
    Ok(response.set_body(body).map_into_boxed_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_parse_token_and_since() {
        let p = session_params("token=abc&since=42");
        assert_eq!(p.token.as_deref(), Some("abc"));
        assert_eq!(p.since, Some(Ok(Seq(42))));
        assert!(matches!(session_params("since=-1").since, Some(Err(_))));
        assert!(matches!(session_params("since=abc").since, Some(Err(_))));
        let empty = session_params("token=&since=");
        assert_eq!((empty.token, empty.since), (None, None));
    }
}
