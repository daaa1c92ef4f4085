//! /api/posts/ over real HTTP: DRF ModelViewSet behaviour, permissions, visibility, bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use newspaper_domain::{AuthorRef, PostStatus, PostTitle, UserId, now};
use newspaper_persistence::{NewPost, OutboxRepository, UserRepository};
use newspaper_tests::{TestApp, TestUser, app_tests, titles};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

app_tests! {
    async fn create_returns_201_with_the_post_and_its_author(app) {
        let ann = app.user("ann@example.com").await;
        let res = app
            .request(Method::POST, "/api/posts/", Some(&ann.access))
            .json(&json!({"title": "  Hello  ", "id": 999, "author": {"id": 77}, "created_at": "2000-01-01T00:00:00Z", "bogus": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        let location = res.headers()[header::LOCATION].to_str().unwrap().to_owned();
        let post: Value = res.json().await.unwrap();
        assert_eq!(location, format!("/api/posts/{}/", post["id"]));
        assert_ne!(post["id"], 999);
        assert_eq!(post["title"], "Hello");
        assert_eq!(post["content"], "");
        assert_eq!(post["status"], "draft");
        assert_eq!(post["author"], json!({"id": ann.id, "username": "ann"}));
        assert!(post["created_at"].as_str().unwrap().ends_with('Z'));
        assert_ne!(post["created_at"], "2000-01-01T00:00:00Z");
        assert_eq!(post["created_at"], post["updated_at"]);
        let keys: Vec<&String> = post.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["author", "content", "created_at", "id", "status", "title", "updated_at"]);
        assert_eq!(app.event_count().await, 1);
    }

    async fn writes_without_a_valid_token_are_401_and_change_nothing(app) {
        let ann = app.user("ann@example.com").await;
        let post = app.create_post(&ann, "Mine", "published").await;
        let id = post["id"].as_i64().unwrap();
        let item = format!("/api/posts/{id}/");
        let cases = [
            (Method::POST, "/api/posts/".to_owned(), None),
            (Method::PUT, item.clone(), None),
            (Method::PATCH, item.clone(), None),
            (Method::DELETE, item.clone(), None),
            (Method::POST, "/api/posts/".to_owned(), Some("not.a.token")),
            (Method::DELETE, item.clone(), Some(ann.refresh.as_str())),
        ];
        for (method, path, token) in cases {
            let res = app.request(method.clone(), &path, token).json(&json!({"title": "Hijacked"})).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
            assert!(res.headers()[header::WWW_AUTHENTICATE].to_str().unwrap().starts_with("Bearer"));
            let body: Value = res.json().await.unwrap();
            assert!(body["detail"].is_string(), "{body}");
        }
        let (_, now) = app.get(&item, None).await;
        assert_eq!(now["title"], "Mine");
        assert_eq!(app.event_count().await, 1, "no event for a rejected request");
    }

    async fn invalid_bodies_are_400_with_field_errors_and_change_nothing(app) {
        let ann = app.user("ann@example.com").await;
        let token = Some(ann.access.as_str());
        let cases = [
            (json!({}), json!({"title": ["This field is required."]})),
            (json!({"title": "   "}), json!({"title": ["This field may not be blank."]})),
            (json!({"title": "x".repeat(201)}), json!({"title": ["Ensure this field has no more than 200 characters."]})),
            (json!({"title": "ok", "status": "live"}), json!({"status": ["\"live\" is not a valid choice."]})),
            (json!({"title": 42}), json!({"title": ["Not a valid string (got number)."]})),
            (json!({"title": null}), json!({"title": ["This field may not be null."]})),
            (json!({"title": "ok", "content": ["a"]}), json!({"content": ["Not a valid string (got array)."]})),
            (json!({"title": "a\u{0}b"}), json!({"title": ["Null characters are not allowed."]})),
            (json!([1, 2]), json!({"non_field_errors": ["Invalid data. Expected a dictionary, but got array."]})),
            (json!("title"), json!({"non_field_errors": ["Invalid data. Expected a dictionary, but got string."]})),
        ];
        for (body, expected) in cases {
            let (status, errors) = app.post("/api/posts/", token, body.clone()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(errors, expected, "{body}");
        }
        let (_, list) = app.get("/api/posts/", token).await;
        assert_eq!(list["count"], 0);
        assert_eq!(app.event_count().await, 0);
    }

    async fn malformed_json_wrong_media_type_and_huge_bodies_are_rejected(app) {
        let ann = app.user("ann@example.com").await;
        let post = |body: Vec<u8>, content_type: &'static str| {
            app.request(Method::POST, "/api/posts/", Some(&ann.access)).header(header::CONTENT_TYPE, content_type).body(body)
        };
        let (status, body) = newspaper_tests::read(post(b"{\"title\": ".to_vec(), "application/json").send().await.unwrap()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["detail"].as_str().unwrap().starts_with("JSON parse error"), "{body}");

        let (status, body) = newspaper_tests::read(post(b"title=x".to_vec(), "text/plain").send().await.unwrap()).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(body, json!({"detail": "Unsupported media type \"text/plain\" in request."}));

        let huge = format!("{{\"title\": \"t\", \"content\": \"{}\"}}", "x".repeat(1024 * 1024 + 10));
        let (status, body) = newspaper_tests::read(post(huge.into_bytes(), "application/json").send().await.unwrap()).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body, json!({"detail": "Request body is too large (limit 1048576 bytes)."}));

        // Content is limited to 100,000 characters (not bytes): at the limit is fine, one more
        // is a field error, and nothing is stored.
        let at_limit = json!({"title": "t", "content": "é".repeat(100_000)});
        let (status, created) = app.post("/api/posts/", Some(&ann.access), at_limit).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(created["content"].as_str().unwrap().chars().count(), 100_000);
        let over = json!({"title": "t", "content": "x".repeat(100_001)});
        let (status, body) = app.post("/api/posts/", Some(&ann.access), over.clone()).await;
        assert_eq!((status, body), (StatusCode::BAD_REQUEST, json!({"content": ["Ensure this field has no more than 100000 characters."]})));
        let path = format!("/api/posts/{}/", created["id"]);
        let (status, body) = app.call(Method::PATCH, &path, Some(&ann.access), Some(json!({"content": "x".repeat(100_001)}))).await;
        assert_eq!((status, &body["content"][0]), (StatusCode::BAD_REQUEST, &json!("Ensure this field has no more than 100000 characters.")));
        assert_eq!(app.event_count().await, 1);
    }

    async fn drafts_are_404_to_everyone_but_their_author_and_staff(app) {
        let ann = app.user("ann@example.com").await;
        let bob = app.user("bob@example.com").await;
        let boss = app.staff("boss@example.com").await;
        let draft = app.create_post(&ann, "Secret", "draft").await;
        let path = format!("/api/posts/{}/", draft["id"]);
        assert_eq!(app.get(&path, None).await.0, StatusCode::NOT_FOUND);
        let (status, body) = app.get(&path, Some(&bob.access)).await;
        assert_eq!((status, body), (StatusCode::NOT_FOUND, json!({"detail": "Not found."})));
        assert_eq!(app.get(&path, Some(&ann.access)).await.1["title"], "Secret");
        assert_eq!(app.get(&path, Some(&boss.access)).await.1["title"], "Secret");
        // Nor can others change or delete it.
        let (status, _) = app.call(Method::PATCH, &path, Some(&bob.access), Some(json!({"title": "x"}))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(app.call(Method::DELETE, &path, Some(&bob.access), None).await.0, StatusCode::NOT_FOUND);
        assert_eq!(app.get("/api/posts/999999/", None).await.0, StatusCode::NOT_FOUND);
        assert_eq!(app.get("/api/posts/abc/", None).await, (StatusCode::NOT_FOUND, json!({"detail": "Not found."})));
    }

    async fn lists_show_what_the_viewer_may_see(app) {
        let ann = app.user("ann@example.com").await;
        let bob = app.user("bob@example.com").await;
        let boss = app.staff("boss@example.com").await;
        app.create_post(&ann, "Ann draft", "draft").await;
        app.create_post(&ann, "Ann live", "published").await;
        app.create_post(&bob, "Bob draft", "draft").await;
        assert_eq!(titles(&app.get("/api/posts/", None).await.1), ["Ann live"]);
        assert_eq!(titles(&app.get("/api/posts/", Some(&ann.access)).await.1), ["Ann live", "Ann draft"]);
        assert_eq!(titles(&app.get("/api/posts/", Some(&bob.access)).await.1), ["Bob draft", "Ann live"]);
        assert_eq!(app.get("/api/posts/", Some(&boss.access)).await.1["count"], 3);
        assert_eq!(titles(&app.get("/api/posts/?status=draft", None).await.1), Vec::<String>::new());
        assert_eq!(titles(&app.get(&format!("/api/posts/?author={}", ann.id), Some(&boss.access)).await.1), ["Ann live", "Ann draft"]);
        // A bad token is refused even where anonymous reading is allowed, as DRF does.
        assert_eq!(app.get("/api/posts/", Some("garbage")).await.0, StatusCode::UNAUTHORIZED);
    }

    async fn lists_search_order_filter_and_paginate_like_drf(app) {
        let ann = app.user("ann@example.com").await;
        for title in ["Alpha News", "beta news", "Gamma", "Delta", "Epsilon"] {
            app.create_post(&ann, title, "published").await;
        }
        let app = &app;
        let get = |q: &'static str| async move { app.get(&format!("/api/posts/{q}"), None).await };
        assert_eq!(titles(&get("?search=NEWS").await.1), ["beta news", "Alpha News"]);
        assert_eq!(titles(&get("?search=gamma+text").await.1), ["Gamma"]);
        let ecole = app.create_post(&ann, "Rentrée à l'ÉCOLE", "draft").await;
        let access = ann.access.as_str();
        let mine = |q: &'static str| async move {
            titles(&app.get(&format!("/api/posts/{q}"), Some(access)).await.1)
        };
        assert_eq!(mine("?search=%C3%A9cole").await, ["Rentrée à l'ÉCOLE"], "case folds beyond ASCII");
        assert_eq!(mine("?search=RENTR%C3%89E+%C3%80").await, ["Rentrée à l'ÉCOLE"]);
        assert_eq!(mine("?search=%C3%A0").await, ["Rentrée à l'ÉCOLE"], "one letter is matched too");
        assert_eq!(mine("?search=%22gamma%22+OR").await, Vec::<String>::new(), "query syntax is text");
        assert_eq!(titles(&get("?search=%C3%A9cole").await.1), Vec::<String>::new(), "drafts stay hidden");
        let path = format!("/api/posts/{}/", ecole["id"]);
        assert_eq!(app.call(reqwest::Method::DELETE, &path, Some(&ann.access), None).await.0, StatusCode::NO_CONTENT);
        assert_eq!(mine("?search=%C3%A9cole").await, Vec::<String>::new(), "a deleted post is gone from the index");
        assert_eq!(titles(&get("?ordering=title").await.1), ["Alpha News", "Delta", "Epsilon", "Gamma", "beta news"]);
        assert_eq!(titles(&get("?ordering=-title").await.1)[0], "beta news");
        assert_eq!(titles(&get("?ordering=created_at").await.1)[0], "Alpha News");
        assert_eq!(titles(&get("?ordering=password").await.1)[0], "Epsilon", "unknown fields fall back to -created_at");
        assert_eq!(titles(&get("?status=published&ordering=updated_at").await.1)[0], "Alpha News");

        let (status, page) = get("?page_size=2&search=e").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["count"], 5);
        assert_eq!(page["previous"], Value::Null);
        let next = page["next"].as_str().unwrap();
        assert_eq!(next, format!("{}/api/posts/?page_size=2&search=e&page=2", app.address));
        let (_, page2) = newspaper_tests::read(app.client.get(next).send().await.unwrap()).await;
        assert_eq!(page2["previous"], json!(format!("{}/api/posts/?page_size=2&search=e", app.address)));
        assert_eq!(page2["next"], json!(format!("{}/api/posts/?page_size=2&search=e&page=3", app.address)));
        let (_, last) = get("?page_size=2&page=last").await;
        assert_eq!((titles(&last).len(), &last["next"]), (1, &Value::Null));
        assert_eq!(get("?page_size=1000").await.1["results"].as_array().unwrap().len(), 5);
        assert_eq!(get("?page=4&page_size=2").await, (StatusCode::NOT_FOUND, json!({"detail": "Invalid page."})));
        assert_eq!(get("?page=0").await.0, StatusCode::NOT_FOUND);
        let (status, errors) = get("?status=live&author=ann").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(errors, json!({
            "author": ["Enter a number."],
            "status": ["Select a valid choice. live is not one of the available choices."]
        }));
    }

    async fn updates_follow_put_and_patch_semantics(app) {
        let ann = app.user("ann@example.com").await;
        let post = app.create_post(&ann, "First", "draft").await;
        let path = format!("/api/posts/{}/", post["id"]);
        let token = Some(ann.access.as_str());

        let (status, errors) = app.call(Method::PUT, &path, token, Some(json!({"content": "no title"}))).await;
        assert_eq!((status, errors), (StatusCode::BAD_REQUEST, json!({"title": ["This field is required."]})));

        let (status, put) = app.call(Method::PUT, &path, token, Some(json!({"title": "Second", "status": "published", "id": 5}))).await;
        assert_eq!(status, StatusCode::OK, "{put}");
        assert_eq!((&put["title"], &put["status"], &put["content"], &put["id"]), (&json!("Second"), &json!("published"), &json!("First text"), &post["id"]));
        assert!(put["updated_at"].as_str().unwrap() >= post["updated_at"].as_str().unwrap());
        assert_eq!(put["created_at"], post["created_at"]);

        let (status, patched) = app.call(Method::PATCH, &path, token, Some(json!({"content": "New body"}))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!((&patched["title"], &patched["content"]), (&json!("Second"), &json!("New body")));

        let (status, errors) = app.call(Method::PATCH, &path, token, Some(json!({"status": "gone"}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{errors}");
        assert_eq!(app.get(&path, None).await.1["status"], "published");
        assert_eq!(app.event_count().await, 3, "create, put, patch; none for the failures");
    }

    async fn only_the_author_or_staff_may_change_a_published_post(app) {
        let ann = app.user("ann@example.com").await;
        let bob = app.user("bob@example.com").await;
        let boss = app.staff("boss@example.com").await;
        let post = app.create_post(&ann, "Ann's", "published").await;
        let path = format!("/api/posts/{}/", post["id"]);
        for method in [Method::PUT, Method::PATCH] {
            let (status, body) = app.call(method, &path, Some(&bob.access), Some(json!({"title": "Bob was here"}))).await;
            assert_eq!((status, body), (StatusCode::FORBIDDEN, json!({"detail": "You do not have permission to perform this action."})));
        }
        // Permission comes before validation: a stranger learns nothing from the body.
        assert_eq!(app.call(Method::PATCH, &path, Some(&bob.access), Some(json!({"status": 5}))).await.0, StatusCode::FORBIDDEN);
        assert_eq!(app.call(Method::DELETE, &path, Some(&bob.access), None).await.0, StatusCode::FORBIDDEN);
        assert_eq!(app.get(&path, None).await.1["title"], "Ann's");
        let (status, body) = app.call(Method::PATCH, &path, Some(&boss.access), Some(json!({"title": "Edited by staff"}))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["author"]["id"], ann.id, "staff edits keep the author");
        assert_eq!(app.call(Method::DELETE, &path, Some(&boss.access), None).await.0, StatusCode::NO_CONTENT);
        assert_eq!(app.event_count().await, 3);
    }

    async fn delete_is_204_then_404(app) {
        let ann = app.user("ann@example.com").await;
        let post = app.create_post(&ann, "Short-lived", "published").await;
        let path = format!("/api/posts/{}/", post["id"]);
        let res = app.request(Method::DELETE, &path, Some(&ann.access)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert!(res.text().await.unwrap().is_empty());
        assert_eq!(app.get(&path, None).await.0, StatusCode::NOT_FOUND);
        assert_eq!(app.call(Method::DELETE, &path, Some(&ann.access), None).await.0, StatusCode::NOT_FOUND);
        assert_eq!(app.event_count().await, 2);
    }

    async fn routes_answer_with_and_without_the_trailing_slash_and_errors_are_json(app) {
        let ann = app.user("ann@example.com").await;
        let post = app.create_post(&ann, "Slash", "published").await;
        assert_eq!(app.get("/api/posts", None).await.1["count"], 1);
        assert_eq!(app.get(&format!("/api/posts/{}", post["id"]), None).await.1["title"], "Slash");
        assert_eq!(app.get("/api/auth/me", Some(&ann.access)).await.1["email"], "ann@example.com");

        let res = app.request(Method::PUT, "/api/posts/", None).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(res.headers()[header::ALLOW], "GET, POST, HEAD, OPTIONS");
        assert_eq!(res.json::<Value>().await.unwrap(), json!({"detail": "Method \"PUT\" not allowed."}));
        assert_eq!(app.call(Method::GET, "/api/auth/token/", None, None).await.0, StatusCode::METHOD_NOT_ALLOWED);
        let res = app.request(Method::OPTIONS, "/api/posts/1/", None).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers()[header::ALLOW].to_str().unwrap().contains("PATCH"));

        for path in ["/api/nothing/", "/api/posts/1/comments/", "/nowhere"] {
            let res = app.request(Method::GET, path, None).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
            assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
            assert_eq!(res.json::<Value>().await.unwrap(), json!({"detail": "Not found."}));
        }
        let head = app.request(Method::HEAD, "/api/posts/", None).send().await.unwrap();
        assert_eq!(head.status(), StatusCode::OK);
        assert!(head.text().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn health_answers_everyone_and_details_only_staff() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/api/health/", None).await, (StatusCode::OK, json!({"status": "ok"})));
    let ann = app.user("ann@example.com").await;
    assert_eq!(
        app.get("/api/health/", Some(&ann.access)).await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    assert_eq!(app.get("/api/health/", Some("not-a-token")).await.1, json!({"status": "ok"}));
    let boss = app.staff("boss@example.com").await;
    let (status, body) = app.get("/api/health/", Some(&boss.access)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["details"],
        json!({"database": "ok", "writer": "ok", "channel_layer": "ok", "instance": body["details"]["instance"]})
    );
}

#[tokio::test]
async fn search_terms_are_at_most_100_characters() {
    let app = TestApp::spawn().await;
    let (status, _) = app.get(&format!("/api/posts/?search={}", "é".repeat(100)), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.get(&format!("/api/posts/?search={}", "x".repeat(101)), None).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::BAD_REQUEST,
            json!({"search": ["Ensure this field has no more than 100 characters."]})
        )
    );
}

#[tokio::test]
async fn search_escapes_like_wildcards() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann@example.com").await;
    app.create_post(&ann, "100% sure", "published").await;
    app.create_post(&ann, "1000 reasons", "published").await;
    assert_eq!(titles(&app.get("/api/posts/?search=100%25", None).await.1), ["100% sure"]);
    assert_eq!(titles(&app.get("/api/posts/?search=1_0", None).await.1), Vec::<String>::new());
}

app_tests! {
    async fn anonymous_pages_are_never_stale_after_a_write_and_never_hold_drafts(app) {
        let ann = app.user("ann@example.com").await;
        let first = app.create_post(&ann, "First", "published").await;
        for _ in 0..3 {
            assert_eq!(titles(&app.get("/api/posts/", None).await.1), ["First"]);
        }
        app.create_post(&ann, "Second", "published").await;
        assert_eq!(titles(&app.get("/api/posts/", None).await.1), ["Second", "First"], "a create shows at once");
        app.call(Method::PATCH, &format!("/api/posts/{}/", first["id"]), Some(&ann.access), Some(json!({"title": "First, edited"}))).await;
        assert_eq!(titles(&app.get("/api/posts/", None).await.1), ["Second", "First, edited"]);
        app.create_post(&ann, "Draft", "draft").await;
        assert_eq!(titles(&app.get("/api/posts/", Some(&ann.access)).await.1), ["Draft", "Second", "First, edited"]);
        assert_eq!(titles(&app.get("/api/posts/", None).await.1), ["Second", "First, edited"], "the author's page is not shared");
        app.call(Method::DELETE, &format!("/api/posts/{}/", first["id"]), Some(&ann.access), None).await;
        assert_eq!(titles(&app.get("/api/posts/", None).await.1), ["Second"]);
        // Pages are keyed by their full URL.
        assert_eq!(app.get("/api/posts/?search=zzz", None).await.1["count"], 0);
        assert_eq!(app.get("/api/posts/?page_size=1", None).await.1["next"], Value::Null);
    }
}

/// Creates a post straight in the database: the server hears of it only when it next reads
/// the outbox.
async fn create_behind_the_servers_back(
    app: &TestApp,
    author: &TestUser,
    title: &str,
    status: PostStatus,
) {
    let author = AuthorRef {
        id: UserId(author.id),
        username: author.email.split('@').next().unwrap().into(),
    };
    let new = NewPost { title: PostTitle::parse(title).unwrap(), content: String::new(), status };
    app.db.create_post(author, new, now()).await.unwrap();
}

/// The titles of `GET /api/posts/` as `token` sees them, and the feed position it was read at.
async fn list_as(app: &TestApp, token: &str) -> (Vec<String>, i64) {
    let res = app.request(Method::GET, "/api/posts/", Some(token)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let seq = res.headers()["X-Feed-Seq"].to_str().unwrap().parse().unwrap();
    (titles(&res.json().await.unwrap()), seq)
}

app_tests! {
    async fn signed_in_readers_share_pages_only_while_the_feed_head_stands_still(app) {
        let ann = app.user("ann@example.com").await;
        let bob = app.user("bob@example.com").await;
        let boss = app.staff("boss@example.com").await;
        app.create_post(&ann, "First", "published").await;
        // Bob has no drafts: he sees what the public sees, and is served the public's page.
        assert_eq!(titles(&app.get("/api/posts/", None).await.1), ["First"]);
        for _ in 0..2 {
            assert_eq!(list_as(&app, &bob.access).await.0, ["First"]);
        }
        let latest = || async { app.db.read(OutboxRepository::latest_seq).await.unwrap().0 };
        create_behind_the_servers_back(&app, &ann, "Second", PostStatus::Published).await;
        assert_eq!(list_as(&app, &bob.access).await, (vec!["Second".to_owned(), "First".to_owned()], latest().await));
        create_behind_the_servers_back(&app, &bob, "Bob's draft", PostStatus::Draft).await;
        assert_eq!(list_as(&app, &bob.access).await, (vec!["Bob's draft".to_owned(), "Second".to_owned(), "First".to_owned()], latest().await));
        for _ in 0..2 {
            assert_eq!(list_as(&app, &ann.access).await.0, ["Second", "First"], "Bob's page is his alone");
            assert_eq!(list_as(&app, &boss.access).await.0, ["Bob's draft", "Second", "First"]);
            assert_eq!(list_as(&app, &bob.access).await.0, ["Bob's draft", "Second", "First"]);
        }
        // A page cached for a reader is no pass: the account is checked on every request.
        let id = UserId(bob.id);
        app.db.write(move |conn| UserRepository::set_active(conn, id, false, now())).await.unwrap();
        assert_eq!(app.get("/api/posts/", Some(&bob.access)).await, (StatusCode::UNAUTHORIZED, json!({"detail": "User is inactive"})));
    }
}

app_tests! {
    async fn readers_who_list_at_the_same_moment_each_get_their_own_page_and_account_check(app) {
        // Heads read at the same moment share a statement, and readers who miss a page at the
        // same head share its read: neither may hand one reader another's page or account.
        let ann = app.user("ann@example.com").await;
        let bob = app.user("bob@example.com").await;
        let carol = app.user("carol@example.com").await;
        let boss = app.staff("boss@example.com").await;
        app.create_post(&ann, "Ann's draft", "draft").await;
        let latest = || async { app.db.read(OutboxRepository::latest_seq).await.unwrap().0 };
        let everyone = ["Ann's draft"];
        let public: [&str; 0] = [];
        let mut published = Vec::new();
        for round in 0..4 {
            let title = format!("News {round}");
            create_behind_the_servers_back(&app, &bob, &title, PostStatus::Published).await;
            published.insert(0, title);
            if round == 3 {
                let id = UserId(carol.id);
                app.db.write(move |conn| UserRepository::set_active(conn, id, false, now())).await.unwrap();
            }
            let seq = latest().await;
            // Anonymous pages follow what this instance has heard of, so only signed-in
            // readers see a write made behind its back at once.
            let readers = [&ann, &bob, &carol, &boss];
            let lists = (0..40).map(|i| {
                let reader = readers[i % readers.len()];
                let request = app.request(Method::GET, "/api/posts/", Some(&reader.access));
                async move {
                    let res = request.send().await.unwrap();
                    let status = res.status();
                    let at = res.headers().get("X-Feed-Seq").map(|v| v.to_str().unwrap().parse::<i64>().unwrap());
                    (reader.id, status, at, res.json::<Value>().await.unwrap())
                }
            });
            for (reader, status, at, body) in futures_util::future::join_all(lists).await {
                if round == 3 && reader == carol.id {
                    assert_eq!((status, body), (StatusCode::UNAUTHORIZED, json!({"detail": "User is inactive"})));
                    continue;
                }
                assert_eq!((status, at), (StatusCode::OK, Some(seq)), "reader {reader}, round {round}");
                let drafts: &[&str] = if reader == ann.id || reader == boss.id { &everyone } else { &public };
                let expected: Vec<String> = published.iter().cloned().chain(drafts.iter().map(|t| (*t).to_owned())).collect();
                assert_eq!(titles(&body), expected, "reader {reader}, round {round}");
            }
        }
    }
}
