//! The OpenAPI 3 document (utoipa) at /api/schema/, and the interactive docs at /api/docs/,
//! served entirely from this binary (Swagger UI vendored at build time from the crate registry).

mod bodies;
mod rules;

use std::sync::{Arc, OnceLock};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
pub use bodies::{
    BadRequestBody, Empty, ListPostsParams, LoginRequest, PasswordChangeRequest,
    PasswordResetConfirmRequest, PasswordResetRequest, PostListPage, PostPatch, PostWrite,
    RefreshRequest, RegisterRequest, ValidationErrorBody, VerifyRequest,
};
use rules::{BearerScheme, CommonResponses, ValidationRules};
use utoipa::OpenApi;

use crate::ApiError;
use crate::{auth, posts, realtime};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "newspaper",
        description = "Real-time publishing: accounts with JWT, posts with DRF semantics, and a \
                       WebSocket feed of every change at `/ws/blog/` (a WebSocket, which \
                       OpenAPI cannot describe: see docs/websocket.md).",
        license(name = "MIT OR Apache-2.0")
    ),
    paths(
        auth::handlers::register,
        auth::handlers::obtain_token,
        auth::handlers::refresh_token,
        auth::handlers::verify_token,
        auth::handlers::logout,
        auth::handlers::me,
        auth::handlers::request_password_reset,
        auth::handlers::confirm_password_reset,
        auth::handlers::change_password,
        posts::handlers::list_posts,
        posts::handlers::create_post,
        posts::handlers::retrieve_post,
        posts::handlers::update_post,
        posts::handlers::partial_update_post,
        posts::handlers::destroy_post,
        realtime::stats::realtime_stats,
        crate::health::health,
        schema,
    ),
    modifiers(&BearerScheme, &ValidationRules, &CommonResponses),
    components(schemas(BadRequestBody, ValidationErrorBody)),
    tags(
        (name = "auth", description = "Accounts and tokens"),
        (name = "posts", description = "Posts"),
        (name = "realtime", description = "The live feed's statistics"),
        (name = "meta", description = "This document and the instance's health"),
    )
)]
pub struct ApiDoc;

/// The document, built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
        doc
    })
}

/// The OpenAPI document (JSON; `?format=json` accepted).
#[utoipa::path(get, path = "/api/schema/", tag = "meta",
    params(("format" = Option<String>, Query, description = "Only `json`")),
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/vnd.oai.openapi+json"),
              (status = 404, description = "A format other than JSON was asked for", body = crate::error::ErrorDetail)))]
pub async fn schema(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(req.query_string()).unwrap_or_default();
    if !matches!(
        pairs.iter().find(|(k, _)| k == "format").map(|(_, v)| v.as_str()),
        None | Some("json" | "openapi-json")
    ) {
        return Err(ApiError::not_found());
    }
    let mut response = HttpResponse::Ok();
    response.content_type("application/vnd.oai.openapi+json; charset=utf-8");
    let mount = crate::MountPath::of(&req);
    if mount.is_empty() {
        return Ok(response.json(document()));
    }
    // Mounted under a prefix: the paths are the same, the server they hang from is not.
    let mut doc = document().clone();
    doc.servers = Some(vec![utoipa::openapi::Server::new(mount)]);
    Ok(response.json(doc))
}

/// Swagger UI reading the document of the routes it is mounted with.
fn swagger_config(mount: &str) -> Arc<utoipa_swagger_ui::Config<'static>> {
    Arc::new(
        utoipa_swagger_ui::Config::from(format!("{mount}/api/schema/"))
            // The default validator badge would fetch an image from the internet.
            .validator_url("none")
            .persist_authorization(true),
    )
}

/// Swagger UI's files; `/api/docs` redirects to `/api/docs/`.
pub async fn docs(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let tail = req.match_info().get("tail").unwrap_or_default().to_owned();
    if !req.path().ends_with('/') && tail.is_empty() {
        return Ok(HttpResponse::PermanentRedirect()
            .insert_header((header::LOCATION, format!("{}/api/docs/", crate::MountPath::of(&req))))
            .finish());
    }
    match utoipa_swagger_ui::serve(&tail, swagger_config(crate::MountPath::of(&req))) {
        Ok(Some(file)) => {
            let mut response = HttpResponse::Ok();
            if file.gzpipped {
                response.insert_header((header::CONTENT_ENCODING, "gzip"));
            }
            response.insert_header((header::CACHE_CONTROL, "public, max-age=3600"));
            Ok(response.content_type(file.content_type).body(file.bytes.to_vec()))
        }
        Ok(None) => Err(ApiError::not_found()),
        Err(err) => Err(ApiError::Internal(err.to_string())),
    }
}
