//! HTML pages rendered with tera from the top-level `templates/` folder, compiled into the
//! binary so it serves them from anywhere. They load nothing from other hosts.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use tera::{Context, Tera};

use crate::ApiError;
use crate::state::AppState;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../../templates/base.html")),
    ("index.html", include_str!("../../../templates/index.html")),
    ("ws_demo.html", include_str!("../../../templates/ws_demo.html")),
];

/// The compiled templates.
#[derive(Clone)]
pub struct Pages {
    tera: Arc<Tera>,
}

impl std::fmt::Debug for Pages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pages").finish_non_exhaustive()
    }
}

impl Pages {
    /// Compiles every template; fails on a syntax error.
    pub fn load() -> Result<Self, tera::Error> {
        let mut tera = Tera::default();
        tera.add_raw_templates(TEMPLATES.iter().copied())?;
        Ok(Self { tera: Arc::new(tera) })
    }

    fn render(&self, name: &str, context: &Context) -> Result<HttpResponse, ApiError> {
        let html = self
            .tera
            .render(name, context)
            .map_err(|e| ApiError::Internal(format!("rendering {name}: {e:?}")))?;
        Ok(HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            // Our pages load only our own scripts, styles and sockets.
            .insert_header((
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; \
                 img-src 'self' data:; connect-src 'self' ws: wss:; frame-ancestors 'none'",
            ))
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
            .body(html))
    }
}

fn base_context(req: &HttpRequest) -> Context {
    let mut context = Context::new();
    context.insert("host", req.connection_info().host());
    // Where the service is mounted: the pages' links, API calls and socket URL start with it.
    context.insert("base", crate::MountPath::of(req));
    context.insert("version", env!("CARGO_PKG_VERSION"));
    context
}

/// `/ws-demo/`: the live demo page.
pub async fn ws_demo(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    state.pages.render("ws_demo.html", &base_context(&req))
}

/// `/`: what this is and where to go.
pub async fn index(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    state.pages.render("index.html", &base_context(&req))
}
