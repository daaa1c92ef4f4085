//! `GET /api/health/`: whether this instance can serve, for load balancers and orchestrators.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

/// The state of one dependency: `ok`, or what is wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` when every dependency is.
    pub status: &'static str,
    /// The database.
    pub database: String,
    /// The channel layer (Redis, when configured).
    pub channel_layer: String,
    /// This instance's name.
    pub instance: String,
}

/// Checks the database and the channel layer; 503 when either is down.
#[utoipa::path(get, path = "/api/health/", tag = "meta",
    responses((status = 200, body = Health), (status = 503, description = "A dependency is down", body = Health)))]
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let database = match state
        .db
        .read(|conn| newspaper_persistence::OutboxRepository::state(conn).map(|_| ()))
        .await
    {
        Ok(()) => "ok".to_owned(),
        Err(err) => err.to_string(),
    };
    let channel_layer = match state.layer.ready().await {
        Ok(()) => "ok".to_owned(),
        Err(err) => err.to_string(),
    };
    let healthy = database == "ok" && channel_layer == "ok";
    let body = Health {
        status: if healthy { "ok" } else { "unavailable" },
        database,
        channel_layer,
        instance: state.realtime.instance().to_owned(),
    };
    if healthy {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
