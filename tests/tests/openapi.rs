//! The OpenAPI document and the docs page: valid OpenAPI 3, every route listed and served,
//! unchanged unless on purpose, and no asset loaded from another host.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::path::PathBuf;

use newspaper_tests::TestApp;
use reqwest::{Method, StatusCode, header};
use serde_json::Value;

/// Every operation the app serves. Keep in step with `configure` in crates/api/src/app.rs.
const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/auth/register/"),
    ("POST", "/api/auth/token/"),
    ("POST", "/api/auth/token/refresh/"),
    ("POST", "/api/auth/token/verify/"),
    ("POST", "/api/auth/logout/"),
    ("GET", "/api/auth/me/"),
    ("POST", "/api/auth/password-reset/"),
    ("POST", "/api/auth/password-reset/confirm/"),
    ("POST", "/api/auth/password/change/"),
    ("GET", "/api/posts/"),
    ("POST", "/api/posts/"),
    ("GET", "/api/posts/{id}/"),
    ("PUT", "/api/posts/{id}/"),
    ("PATCH", "/api/posts/{id}/"),
    ("DELETE", "/api/posts/{id}/"),
    ("GET", "/api/realtime/stats/"),
    ("GET", "/api/schema/"),
    ("GET", "/api/health/"),
];

async fn schema_text(app: &TestApp, query: &str) -> (StatusCode, String) {
    let res = app.client.get(app.url(&format!("/api/schema/{query}"))).send().await.unwrap();
    (res.status(), res.text().await.unwrap())
}

#[tokio::test]
async fn the_schema_is_openapi_3_and_lists_every_route_the_app_serves() {
    let app = TestApp::spawn().await;
    let (status, text) = schema_text(&app, "?format=json").await;
    assert_eq!(status, StatusCode::OK);
    let spec = oas3::from_json(&text).expect("the document parses as OpenAPI 3.1");
    assert!(spec.openapi.starts_with("3."), "{}", spec.openapi);

    let documented: BTreeSet<(String, String)> = spec
        .paths
        .iter()
        .flatten()
        .flat_map(|(path, item)| {
            item.methods().into_iter().map(move |(m, _)| (m.to_string(), path.clone()))
        })
        .collect();
    let expected: BTreeSet<(String, String)> =
        ROUTES.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    assert_eq!(documented, expected);

    let raw: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(raw["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    for (method, path) in ROUTES {
        let op = &raw["paths"][path][method.to_lowercase()];
        let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{method} {path}"));
        assert!(!responses.is_empty(), "{method} {path} documents no responses");
        // OpenAPI requires a description on every response (3.1 §4.8.17).
        for (status, response) in responses {
            assert!(
                response["description"].is_string(),
                "{method} {path} {status} has no description"
            );
        }
        if *path != "/api/schema/" {
            assert!(
                responses.contains_key("503"),
                "{method} {path} does not say it can be unavailable"
            );
        }
    }
    // The live feed is a WebSocket, which OpenAPI cannot describe; the description points to it.
    assert!(raw["paths"].get("/ws/blog/").is_none());
    assert!(raw["info"]["description"].as_str().unwrap().contains("docs/websocket.md"));
    // Every write documents its error responses.
    assert!(raw["paths"]["/api/posts/"]["post"]["responses"]["401"].is_object());
    assert!(raw["paths"]["/api/posts/{id}/"]["patch"]["responses"]["403"].is_object());

    // And every documented operation is actually served (not 404 or 405).
    let ann = app.user("ann@example.com").await;
    let post = app.create_post(&ann, "Route check", "published").await;
    for (method, path) in ROUTES {
        let path = path.replace("{id}", &post["id"].to_string());
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let res = app
            .request(method.clone(), &path, Some(&ann.access))
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        assert!(
            ![StatusCode::NOT_FOUND, StatusCode::METHOD_NOT_ALLOWED].contains(&res.status()),
            "{method} {path} answered {}",
            res.status()
        );
    }
}

#[tokio::test]
async fn the_schema_only_speaks_json_and_matches_the_committed_snapshot() {
    let app = TestApp::spawn().await;
    let (status, plain) = schema_text(&app, "").await;
    assert_eq!(status, StatusCode::OK);
    let (_, json) = schema_text(&app, "?format=json").await;
    assert_eq!(plain, json);
    assert_eq!(schema_text(&app, "?format=yaml").await.0, StatusCode::NOT_FOUND);

    let served: Value = serde_json::from_str(&plain).unwrap();
    let pretty = format!("{}\n", serde_json::to_string_pretty(&served).unwrap());
    let snapshot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&snapshot, &pretty).unwrap();
    }
    let committed = std::fs::read_to_string(&snapshot).unwrap_or_default();
    assert!(
        committed == pretty,
        "the API contract changed; if on purpose, run `UPDATE_SNAPSHOTS=1 cargo test -p newspaper-tests --test openapi` and commit docs/openapi.json"
    );
}

#[tokio::test]
async fn the_docs_page_is_served_by_us_with_no_external_assets() {
    let app = TestApp::spawn().await;
    let res = app.client.get(app.url("/api/docs")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(res.headers()[header::LOCATION], "/api/docs/");
    let res = app.client.get(app.url("/api/docs/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let html = res.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    let mut assets = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for part in html.split(attr).skip(1) {
            assets.push(part.split('"').next().unwrap().to_owned());
        }
    }
    assert!(!assets.is_empty());
    for asset in &assets {
        assert!(!asset.contains("//"), "external asset {asset}");
        let url = app.url(&format!("/api/docs/{}", asset.trim_start_matches("./")));
        assert_eq!(app.client.get(&url).send().await.unwrap().status(), StatusCode::OK, "{asset}");
    }
    let init = app
        .client
        .get(app.url("/api/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(init.contains("/api/schema/"), "{init}");
    assert!(
        init.contains("\"validatorUrl\": \"none\""),
        "the validator badge would call out: {init}"
    );
    assert_eq!(
        app.client.get(app.url("/api/docs/nope.js")).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_home_page_links_the_demo_and_the_docs() {
    let app = TestApp::spawn().await;
    let res = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    let html = res.text().await.unwrap();
    assert!(html.contains("href=\"/ws-demo/\"") && html.contains("href=\"/api/docs/\""));
    assert!(!html.contains("http://") && !html.contains("https://"));
}
