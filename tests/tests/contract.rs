//! The server keeps the OpenAPI document's word, case by case: what the document allows is
//! accepted, what it forbids is refused in the documented 400 shape. Each case is one that
//! property-based testing (schemathesis) found where the two disagreed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use newspaper_tests::{PASSWORD, TestApp, app_tests};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

async fn register(app: &TestApp, body: Value) -> (StatusCode, Value) {
    app.post("/api/auth/register/", None, body).await
}

/// Sends raw bytes as a JSON body.
async fn post_raw(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
    body: &'static [u8],
) -> (StatusCode, Value) {
    let res = app
        .request(Method::POST, path, token)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    newspaper_tests::read(res).await
}

app_tests! {
    async fn usernames_are_optional_but_never_null_or_blank(app) {
        let (status, body) = register(&app, json!({"email": "ann@example.com", "password": PASSWORD, "username": null})).await;
        assert_eq!((status, body), (StatusCode::BAD_REQUEST, json!({"username": ["This field may not be null."]})));
        let (status, body) = register(&app, json!({"email": "ann@example.com", "password": PASSWORD, "username": "  "})).await;
        assert_eq!((status, body), (StatusCode::BAD_REQUEST, json!({"username": ["This field may not be blank."]})));
        let (status, body) = register(&app, json!({"email": "ann@example.com", "password": PASSWORD})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["username"], "ann");
    }

    async fn emails_follow_the_documented_ascii_rules(app) {
        for bad in ["ann@exämple.com", "änn@example.com", "a..b@example.com", ".ann@example.com", "ann@example", "ann@-example.com", "ann@@example.com"] {
            let (status, body) = register(&app, json!({"email": bad, "password": PASSWORD})).await;
            assert_eq!((status, body), (StatusCode::BAD_REQUEST, json!({"email": ["Enter a valid email address."]})), "{bad}");
        }
        for good in ["Ann.O'Neil+news@Example.COM", "ann@xn--exmple-cua.com", "  bob@example.org "] {
            let (status, body) = register(&app, json!({"email": good, "password": PASSWORD})).await;
            assert_eq!(status, StatusCode::CREATED, "{good}: {body}");
            assert_eq!(body["email"], good.trim().to_ascii_lowercase());
        }
        assert_eq!(app.event_count().await, 0, "registering publishes nothing");
    }

    async fn long_passwords_count_every_character(app) {
        // Past bcrypt's 72 bytes: the whole password matters, not its first 72 bytes.
        let long = "é".repeat(60);
        let (status, body) = register(&app, json!({"email": "ann@example.com", "password": long})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(app.log_in("ann@example.com", &long).await.0, StatusCode::OK);
        let almost = format!("{}x", &long[..long.len() - 2]);
        assert_eq!(app.log_in("ann@example.com", &almost).await.0, StatusCode::UNAUTHORIZED);
        let (status, body) = register(&app, json!({"email": "bob@example.com", "password": "p".repeat(129)})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body, json!({"password": ["Ensure this field has no more than 128 characters."]}));
    }

    async fn a_body_that_is_not_json_is_a_documented_400_on_every_post(app) {
        let ann = app.user("ann@example.com").await;
        for path in ["/api/auth/register/", "/api/auth/token/", "/api/auth/token/refresh/", "/api/auth/token/verify/", "/api/auth/logout/", "/api/auth/password-reset/", "/api/auth/password-reset/confirm/", "/api/auth/password/change/", "/api/posts/"] {
            let (status, body) = post_raw(&app, path, Some(&ann.access), b"\x00").await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
            let detail = body["detail"].as_str().unwrap_or_else(|| panic!("{path}: {body}"));
            assert!(detail.starts_with("JSON parse error - "), "{path}: {detail}");
            assert_eq!(body.as_object().unwrap().len(), 1, "{path}: {body}");
        }
        assert_eq!(app.event_count().await, 0);
    }

    async fn a_post_needs_only_a_title_and_null_is_never_a_value(app) {
        let ann = app.user("ann@example.com").await;
        let (status, post) = app.post("/api/posts/", Some(&ann.access), json!({"title": "Only a title"})).await;
        assert_eq!(status, StatusCode::CREATED, "{post}");
        assert_eq!((post["status"].as_str(), post["content"].as_str()), (Some("draft"), Some("")));
        for field in ["content", "status"] {
            let (status, body) = app.post("/api/posts/", Some(&ann.access), json!({"title": "T", field: null})).await;
            assert_eq!((status, body), (StatusCode::BAD_REQUEST, json!({field: ["This field may not be null."]})));
        }
        let (status, body) = app.post("/api/posts/", Some(&ann.access), json!({"content": "no title"})).await;
        assert_eq!((status, body), (StatusCode::BAD_REQUEST, json!({"title": ["This field is required."]})));
        assert_eq!(app.event_count().await, 1);
    }

    async fn an_empty_patch_changes_nothing_but_updated_at(app) {
        let ann = app.user("ann@example.com").await;
        let post = app.create_post(&ann, "Kept", "published").await;
        let path = format!("/api/posts/{}/", post["id"]);
        let (status, patched) = app.call(Method::PATCH, &path, Some(&ann.access), Some(json!({}))).await;
        assert_eq!(status, StatusCode::OK, "{patched}");
        for field in ["id", "title", "content", "status", "author", "created_at"] {
            assert_eq!(patched[field], post[field], "{field}");
        }
        // No body at all is the same as an empty object.
        let res = app.request(Method::PATCH, &path, Some(&ann.access)).send().await.unwrap();
        let (status, again) = newspaper_tests::read(res).await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(again["title"], "Kept");
    }

    async fn list_parameters_are_read_strictly(app) {
        let ann = app.user("ann@example.com").await;
        app.create_post(&ann, "Listed", "published").await;
        for (query, field, message) in [
            ("page_size=9223372036854775808", "page_size", "A valid integer is required."),
            ("page_size=abc", "page_size", "A valid integer is required."),
            ("page_size=", "page_size", "A valid integer is required."),
            ("page_size=0", "page_size", "Ensure this value is greater than or equal to 1."),
            ("page_size=-3", "page_size", "Ensure this value is greater than or equal to 1."),
            ("author=", "author", "Enter a number."),
            ("author=%2B1", "author", "Enter a number."),
            ("author=ann", "author", "Enter a number."),
        ] {
            let (status, body) = app.get(&format!("/api/posts/?{query}"), None).await;
            assert_eq!((status, body), (StatusCode::BAD_REQUEST, json!({field: [message]})), "{query}");
        }
        let (status, body) = app.get("/api/posts/?status=", None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["status"][0].as_str().unwrap().contains("is not one of the available choices"), "{body}");
        for query in ["page=", "page=%2B1", "page=0", "page=two"] {
            let (status, body) = app.get(&format!("/api/posts/?{query}"), None).await;
            assert_eq!((status, body), (StatusCode::NOT_FOUND, json!({"detail": "Invalid page."})), "{query}");
        }
        // The largest page size the document allows, and larger ones clamped to it.
        for query in ["page_size=100", "page_size=9223372036854775807", "search=&ordering="] {
            let (status, body) = app.get(&format!("/api/posts/?{query}"), None).await;
            assert_eq!(status, StatusCode::OK, "{query}: {body}");
            assert_eq!(body["count"], 1, "{query}");
        }
    }

    async fn a_reset_confirmation_needs_a_uid(app) {
        let ann = app.user("ann@example.com").await;
        let body = json!({"uid": "", "token": "x", "new_password": "a brand new secret"});
        let (status, body) = app.post("/api/auth/password-reset/confirm/", None, body).await;
        assert_eq!((status, body), (StatusCode::BAD_REQUEST, json!({"uid": ["This field may not be blank."]})));
        assert_eq!(app.log_in(&ann.email, PASSWORD).await.0, StatusCode::OK, "nothing changed");
    }

    async fn every_response_carries_a_request_id(app) {
        let sent = app.request(Method::GET, "/api/posts/", None).header("X-Request-Id", "trace-4bf92f3577b34da6").send().await.unwrap();
        assert_eq!(sent.headers()["x-request-id"], "trace-4bf92f3577b34da6");
        // An id that could forge a log line or bloat it is replaced by one of ours.
        for insane in ["has space", "semi;colon", &"x".repeat(65), "quote\"d"] {
            let res = app.request(Method::GET, "/api/posts/", None).header("X-Request-Id", insane).send().await.unwrap();
            let id = res.headers()["x-request-id"].to_str().unwrap();
            assert_ne!(id, insane);
            assert_eq!(id.len(), 16, "{id}");
        }
        let mut ids = std::collections::HashSet::new();
        for (method, path) in [(Method::GET, "/api/posts/"), (Method::GET, "/api/posts/99/"), (Method::POST, "/api/posts/"), (Method::GET, "/nowhere"), (Method::DELETE, "/api/schema/")] {
            let res = app.request(method.clone(), path, None).send().await.unwrap();
            let id = res.headers().get("x-request-id").unwrap_or_else(|| panic!("{method} {path}: {}", res.status()));
            assert!(ids.insert(id.to_str().unwrap().to_owned()), "ids are unique");
        }
    }
}
