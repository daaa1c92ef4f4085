//! `GET /api/health/`: whether this instance can serve, for load balancers and orchestrators.
//! It reads through the pool, writes through the writer and asks the channel layer, each within
//! the database deadline. Anyone gets the verdict; what failed and why is logged, and shown to
//! staff only (a driver's error can name hosts and users).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use newspaper_persistence::PersistenceError;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::authenticate;
use crate::state::AppState;

/// The verdict, and for staff the state of each dependency.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` when every dependency is, `unavailable` otherwise.
    pub status: &'static str,
    /// Staff only: the state of each dependency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<HealthDetails>,
}

/// What each dependency answered: `ok`, or what is wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthDetails {
    /// Reads through the connection pool.
    pub database: String,
    /// Writes through the database writer.
    pub writer: String,
    /// The channel layer (Redis, when configured).
    pub channel_layer: String,
    /// This instance's name.
    pub instance: String,
}

fn verdict<E: std::error::Error + 'static>(outcome: Result<(), E>) -> String {
    match outcome {
        Ok(()) => "ok".to_owned(),
        Err(err) => crate::error::chain(&err),
    }
}

/// Whether the request carries a staff user's valid token (anything else counts as anonymous
/// here: health answers everyone).
async fn is_staff(state: &AppState, req: &HttpRequest) -> bool {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match token {
        Some(token) => authenticate(state, token).await.is_ok_and(|user| user.user.is_staff),
        None => false,
    }
}

/// Checks reads, writes and the channel layer; 503 when any of them fails.
#[utoipa::path(get, path = "/api/health/", tag = "meta",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Every dependency answered (details for staff)", body = Health),
        (status = 503, description = "A dependency is down (details for staff, and in the log)", body = Health)))]
pub async fn health(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let (database, writer, channel_layer) = tokio::join!(
        state.db.read(|conn| newspaper_persistence::OutboxRepository::state(conn).map(|_| ())),
        state.db.write(|_| Ok::<_, PersistenceError>(())),
        state.layer.ready(),
    );
    let details = HealthDetails {
        database: verdict(database),
        writer: verdict(writer),
        channel_layer: verdict(channel_layer),
        instance: state.realtime.instance().to_owned(),
    };
    let healthy = [&details.database, &details.writer, &details.channel_layer]
        .iter()
        .all(|state| *state == "ok");
    if !healthy {
        tracing::warn!(
            database = %details.database,
            writer = %details.writer,
            channel_layer = %details.channel_layer,
            "health check failed"
        );
    }
    let body = Health {
        status: if healthy { "ok" } else { "unavailable" },
        details: is_staff(&state, &req).await.then_some(details),
    };
    let mut response =
        if healthy { HttpResponse::Ok() } else { HttpResponse::ServiceUnavailable() };
    if !healthy {
        response.insert_header((header::RETRY_AFTER, "1"));
    }
    response.insert_header((header::CACHE_CONTROL, "no-store")).json(body)
}
