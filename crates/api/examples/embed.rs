//! An existing actix-web application that mounts the whole newspaper service — API, live feed,
//! demo page, OpenAPI document and docs, `/metrics` — under `/news`, next to its own routes,
//! in its own `HttpServer`. Every link the service makes follows the prefix: pagination,
//! `Location`, the pages' API calls and WebSocket URL, the OpenAPI `servers`.
//!
//! ```text
//! cargo run -p newspaper-api --example embed -- --listen 127.0.0.1:8080
//! # http://127.0.0.1:8080/            this application's own page
//! # http://127.0.0.1:8080/news/       newspaper
//! # http://127.0.0.1:8080/news/ws-demo/  the live demo, talking to /news/api/ and /news/ws/blog/
//! ```

use std::net::SocketAddr;

use actix_web::{App, HttpResponse, HttpServer, web};
use clap::Parser;
use newspaper_api::{Newspaper, Settings};
use newspaper_persistence::DatabaseUrl;

/// A shop that also runs a newspaper.
#[derive(Parser)]
struct Args {
    /// Where to listen (port 0 picks a free one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The newspaper's database: an SQLite path or a postgres:// URL.
    #[arg(long, default_value = "embedded-news.db")]
    database_url: String,
    /// Where the newspaper is mounted.
    #[arg(long, default_value = "/news")]
    prefix: String,
}

/// This application's own page.
async fn home() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body("<h1>The shop</h1><p>Also read <a href=\"/news/\">our newspaper</a>.</p>")
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut settings = Settings::new(DatabaseUrl::parse(&args.database_url)?);
    // Debug: a generated signing key and loopback origins; set `secret_key` in production.
    settings.debug = true;
    settings.bind = args.listen;
    let news = Newspaper::start(settings).await?;

    let routes = news.routes();
    let prefix = args.prefix.clone();
    let server = HttpServer::new(move || {
        App::new()
            .route("/", web::get().to(home))
            .route("/healthz", web::get().to(|| async { "ok" }))
            .service(routes.scope(&prefix))
    })
    .bind(args.listen)?
    .disable_signals();
    // With port 0, the port the system picked.
    let address = server.addrs().first().copied().unwrap_or(args.listen);
    let server = server.run();
    println!("embed listening on {address}");

    let handle = server.handle();
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
        // Live streams first (they close with 1001 and clients resume elsewhere), then HTTP.
        news.shutdown().await;
        handle.stop(true).await;
    };
    let (served, ()) = tokio::join!(server, stop);
    served?;
    news.stop().await;
    Ok(())
}
