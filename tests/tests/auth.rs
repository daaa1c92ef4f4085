//! /api/auth/ over real HTTP: registration, JWT login/refresh/verify/logout, password reset and
//! change, throttling, and every way a token can be bad.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use newspaper_api::auth::{TokenService, TokenType};
use newspaper_domain::UserId;
use newspaper_persistence::UserRepository;
use newspaper_tests::{PASSWORD, TEST_SECRET, TestApp, app_tests, backend_tests};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

fn forge(kind: TokenType, user: i64, password_hash: &str) -> String {
    let minute = Duration::from_secs(60);
    TokenService::new(TEST_SECRET.as_bytes(), minute, minute, minute)
        .issue(kind, UserId(user), password_hash)
        .unwrap()
        .0
}

async fn password_hash(app: &TestApp, id: i64) -> String {
    app.db
        .read(move |conn| UserRepository::find_by_id(conn, UserId(id)))
        .await
        .unwrap()
        .unwrap()
        .password_hash
}

app_tests! {
    async fn register_creates_a_user_without_exposing_the_password(app) {
        let (status, user) = app
            .post("/api/auth/register/", None, json!({"email": " Ann.Lee@Example.COM ", "password": PASSWORD, "is_staff": true}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{user}");
        assert_eq!(user["email"], "ann.lee@example.com");
        assert_eq!(user["username"], "ann.lee");
        assert_eq!(user["is_staff"], false, "is_staff cannot be self-assigned");
        let keys: Vec<&String> = user.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["date_joined", "email", "id", "is_staff", "username"]);
        let (_, named) = app.post("/api/auth/register/", None, json!({"email": "b@example.com", "password": PASSWORD, "username": "Bee"})).await;
        assert_eq!(named["username"], "Bee");
    }

    async fn register_rejects_bad_input_with_field_errors(app) {
        app.user("taken@example.com").await;
        let cases = [
            (json!({}), json!({"email": ["This field is required."], "password": ["This field is required."]})),
            (json!({"email": "nope", "password": PASSWORD}), json!({"email": ["Enter a valid email address."]})),
            (json!({"email": "TAKEN@example.com", "password": PASSWORD}), json!({"email": ["A user with this email already exists."]})),
            (json!({"email": "c@example.com", "password": "short"}), json!({"password": ["This password is too short. It must contain at least 8 characters."]})),
            (json!({"email": "c@example.com", "password": "12345678901"}), json!({"password": ["This password is entirely numeric."]})),
            (json!({"email": "c@example.com", "password": "password123"}), json!({"password": ["This password is too common."]})),
            (json!({"email": "chris@example.com", "password": "chris-2026!"}), json!({"password": ["The password is too similar to the email address."]})),
            (json!({"email": 5, "password": PASSWORD}), json!({"email": ["Not a valid string (got number)."]})),
            (json!({"email": "c@example.com", "password": PASSWORD, "username": "has space"}), json!({"username": ["Enter a valid username. This value may contain only letters, numbers, and @/./+/-/_ characters."]})),
        ];
        for (body, expected) in cases {
            let (status, errors) = app.post("/api/auth/register/", None, body.clone()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(errors, expected, "{body}");
        }
        let (status, _) = app.post("/api/auth/token/", None, json!({"email": "c@example.com", "password": PASSWORD})).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "nothing was created");
    }

    async fn login_issues_typed_tokens_and_refuses_bad_credentials(app) {
        let ann = app.user("ann@example.com").await;
        let (status, me) = app.get("/api/auth/me/", Some(&ann.access)).await;
        assert_eq!((status, &me["id"]), (StatusCode::OK, &json!(ann.id)));
        let denied = json!({"detail": "No active account found with the given credentials"});
        assert_eq!(app.post("/api/auth/token/", None, json!({"email": "ann@example.com", "password": "wrong password"})).await, (StatusCode::UNAUTHORIZED, denied.clone()));
        assert_eq!(app.post("/api/auth/token/", None, json!({"email": "nobody@example.com", "password": PASSWORD})).await, (StatusCode::UNAUTHORIZED, denied.clone()));
        assert_eq!(app.post("/api/auth/token/", None, json!({"email": "not an email", "password": PASSWORD})).await, (StatusCode::UNAUTHORIZED, denied.clone()));
        assert_eq!(app.post("/api/auth/token/", None, json!({"email": "ANN@example.com", "password": PASSWORD})).await.0, StatusCode::OK);
        let (status, errors) = app.post("/api/auth/token/", None, json!({"email": "ann@example.com"})).await;
        assert_eq!((status, errors), (StatusCode::BAD_REQUEST, json!({"password": ["This field is required."]})));
    }

    async fn every_kind_of_bad_token_is_401(app) {
        let ann = app.user("ann@example.com").await;
        let hash = password_hash(&app, ann.id).await;
        let invalid = json!({"detail": "Token is invalid or expired"});
        let mut tampered: Vec<&str> = ann.access.split('.').collect();
        tampered[2] = "AAAA";
        let unsigned = {
            let parts: Vec<&str> = ann.access.split('.').collect();
            format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", parts[1])
        };
        let other_key = TokenService::new(b"another key", Duration::from_secs(60), Duration::from_secs(60), Duration::from_secs(60))
            .issue(TokenType::Access, UserId(ann.id), &hash).unwrap().0;
        for (token, expected) in [
            (tampered.join("."), invalid.clone()),
            (unsigned, invalid.clone()),
            (other_key, invalid.clone()),
            ("garbage".to_owned(), invalid.clone()),
            (ann.refresh.clone(), json!({"detail": "Token has wrong type"})),
            (forge(TokenType::Access, 424_242, &hash), json!({"detail": "User not found"})),
            (forge(TokenType::PasswordReset, ann.id, &hash), json!({"detail": "Token has wrong type"})),
        ] {
            let res = app.request(Method::GET, "/api/auth/me/", Some(&token)).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{token}");
            assert!(res.headers().contains_key(header::WWW_AUTHENTICATE));
            assert_eq!(res.json::<Value>().await.unwrap(), expected);
        }
        let (status, body) = app.call(Method::GET, "/api/auth/me/", None, None).await;
        assert_eq!((status, body), (StatusCode::UNAUTHORIZED, json!({"detail": "Authentication credentials were not provided."})));
        let res = app.client.get(app.url("/api/auth/me/")).header(header::AUTHORIZATION, "Bearer a b").send().await.unwrap();
        assert_eq!(res.json::<Value>().await.unwrap(), json!({"detail": "Authorization header must contain two space-delimited values"}));
        let res = app.client.get(app.url("/api/auth/me/")).header(header::AUTHORIZATION, "Basic YTpi").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

        let id = UserId(ann.id);
        app.db.write(move |conn| UserRepository::set_active(conn, id, false, newspaper_domain::now())).await.unwrap();
        assert_eq!(app.get("/api/auth/me/", Some(&ann.access)).await, (StatusCode::UNAUTHORIZED, json!({"detail": "User is inactive"})));
        let (status, _) = app.post("/api/auth/token/", None, json!({"email": "ann@example.com", "password": PASSWORD})).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "inactive users cannot log in");
    }

    async fn refresh_rotates_and_blacklists_the_old_token(app) {
        let ann = app.user("ann@example.com").await;
        let (status, pair) = app.post("/api/auth/token/refresh/", None, json!({"refresh": ann.refresh})).await;
        assert_eq!(status, StatusCode::OK, "{pair}");
        assert_ne!(pair["refresh"], json!(ann.refresh));
        assert_eq!(app.get("/api/auth/me/", pair["access"].as_str()).await.0, StatusCode::OK);
        assert_eq!(app.post("/api/auth/token/refresh/", None, json!({"refresh": ann.refresh})).await, (StatusCode::UNAUTHORIZED, json!({"detail": "Token is blacklisted"})));
        assert_eq!(app.post("/api/auth/token/refresh/", None, json!({"refresh": ann.access})).await, (StatusCode::UNAUTHORIZED, json!({"detail": "Token has wrong type"})));
        assert_eq!(app.post("/api/auth/token/refresh/", None, json!({})).await, (StatusCode::BAD_REQUEST, json!({"refresh": ["This field is required."]})));
        assert_eq!(app.post("/api/auth/token/refresh/", None, json!({"refresh": pair["refresh"]})).await.0, StatusCode::OK);
    }

    async fn verify_and_logout(app) {
        let ann = app.user("ann@example.com").await;
        assert_eq!(app.post("/api/auth/token/verify/", None, json!({"token": ann.access})).await, (StatusCode::OK, json!({})));
        assert_eq!(app.post("/api/auth/token/verify/", None, json!({"token": ann.refresh})).await.0, StatusCode::OK);
        assert_eq!(app.post("/api/auth/token/verify/", None, json!({"token": "x.y.z"})).await, (StatusCode::UNAUTHORIZED, json!({"detail": "Token is invalid or expired"})));
        let res = app.request(Method::POST, "/api/auth/logout/", None).json(&json!({"refresh": ann.refresh})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::RESET_CONTENT);
        assert!(res.text().await.unwrap().is_empty());
        assert_eq!(app.post("/api/auth/token/verify/", None, json!({"token": ann.refresh})).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(app.post("/api/auth/token/refresh/", None, json!({"refresh": ann.refresh})).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(app.post("/api/auth/logout/", None, json!({"refresh": ann.refresh})).await.0, StatusCode::UNAUTHORIZED);
    }

    async fn password_change_revokes_every_earlier_token(app) {
        let ann = app.user("ann@example.com").await;
        let change = |old: &str, new: &str| json!({"old_password": old, "new_password": new});
        let (status, errors) = app.post("/api/auth/password/change/", Some(&ann.access), change("wrong old", "a new strong pass")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(errors, json!({"old_password": ["Your old password was entered incorrectly. Please enter it again."]}));
        let (status, errors) = app.post("/api/auth/password/change/", Some(&ann.access), change(PASSWORD, "123")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(errors["new_password"].as_array().unwrap().len(), 2, "{errors}");
        assert_eq!(app.post("/api/auth/password/change/", None, change(PASSWORD, "a new strong pass")).await.0, StatusCode::UNAUTHORIZED);

        let (status, body) = app.post("/api/auth/password/change/", Some(&ann.access), change(PASSWORD, "a new strong pass")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(app.get("/api/auth/me/", Some(&ann.access)).await.0, StatusCode::UNAUTHORIZED, "old access token revoked");
        assert_eq!(app.post("/api/auth/token/refresh/", None, json!({"refresh": ann.refresh})).await.0, StatusCode::UNAUTHORIZED, "old refresh token revoked");
        assert_eq!(app.get("/api/auth/me/", body["access"].as_str()).await.0, StatusCode::OK);
        assert_eq!(app.post("/api/auth/token/", None, json!({"email": ann.email, "password": PASSWORD})).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(app.post("/api/auth/token/", None, json!({"email": ann.email, "password": "a new strong pass"})).await.0, StatusCode::OK);
    }
}

backend_tests! {
    async fn password_reset_is_single_use_and_debug_only_reveals_the_token(database) {
        let app = TestApp::spawn_with(database, |s| s.debug = true).await;
        let ann = app.user("ann@example.com").await;
        let sent = "If an account with this email exists, a password reset link has been sent.";
        let (status, unknown) = app.post("/api/auth/password-reset/", None, json!({"email": "nobody@example.com"})).await;
        assert_eq!((status, unknown), (StatusCode::OK, json!({"detail": sent})));
        let (status, issued) = app.post("/api/auth/password-reset/", None, json!({"email": "ANN@example.com"})).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(issued["detail"], sent);
        let (uid, token) = (issued["uid"].as_str().unwrap().to_owned(), issued["token"].as_str().unwrap().to_owned());
        assert_eq!(app.post("/api/auth/password-reset/", None, json!({"email": "bad"})).await.0, StatusCode::BAD_REQUEST);

        let confirm = |uid: &str, token: &str, pw: &str| json!({"uid": uid, "token": token, "new_password": pw});
        let invalid = json!({"token": ["Invalid or expired token."]});
        assert_eq!(app.post("/api/auth/password-reset/confirm/", None, confirm("Mg", &token, "brand new secret")).await, (StatusCode::BAD_REQUEST, invalid.clone()));
        assert_eq!(app.post("/api/auth/password-reset/confirm/", None, confirm("%%", &token, "brand new secret")).await, (StatusCode::BAD_REQUEST, json!({"uid": ["Invalid value."]})));
        assert_eq!(app.post("/api/auth/password-reset/confirm/", None, confirm(&uid, &ann.access, "brand new secret")).await, (StatusCode::BAD_REQUEST, invalid.clone()));
        let (status, weak) = app.post("/api/auth/password-reset/confirm/", None, confirm(&uid, &token, "1234")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(weak["new_password"].is_array(), "{weak}");

        let (status, done) = app.post("/api/auth/password-reset/confirm/", None, confirm(&uid, &token, "brand new secret")).await;
        assert_eq!((status, done), (StatusCode::OK, json!({"detail": "Password has been reset."})));
        assert_eq!(app.post("/api/auth/password-reset/confirm/", None, confirm(&uid, &token, "another new secret")).await, (StatusCode::BAD_REQUEST, invalid), "single use");
        assert_eq!(app.post("/api/auth/token/", None, json!({"email": ann.email, "password": "brand new secret"})).await.0, StatusCode::OK);
        assert_eq!(app.get("/api/auth/me/", Some(&ann.access)).await.0, StatusCode::UNAUTHORIZED, "tokens from before the reset are revoked");
    }

    async fn outside_debug_mode_the_reset_answer_reveals_nothing(database) {
        let app = TestApp::spawn_with(database, |s| s.debug = false).await;
        app.user("ann@example.com").await;
        let (_, known) = app.post("/api/auth/password-reset/", None, json!({"email": "ann@example.com"})).await;
        let (_, unknown) = app.post("/api/auth/password-reset/", None, json!({"email": "nobody@example.com"})).await;
        assert_eq!(known, unknown);
        assert!(known.get("token").is_none());
    }

    async fn reset_tokens_expire(database) {
        let app = TestApp::spawn_with(database, |s| { s.debug = true; s.password_reset_lifetime = Duration::from_secs(1); }).await;
        let ann = app.user("ann@example.com").await;
        let (_, issued) = app.post("/api/auth/password-reset/", None, json!({"email": ann.email})).await;
        newspaper_tests::wait_until_expired(issued["token"].as_str().unwrap()).await;
        let (status, body) = app.post("/api/auth/password-reset/confirm/", None, json!({"uid": issued["uid"], "token": issued["token"], "new_password": "brand new secret"})).await;
        assert_eq!((status, body), (StatusCode::BAD_REQUEST, json!({"token": ["Invalid or expired token."]})));
    }

    async fn access_tokens_expire(database) {
        let app = TestApp::spawn_with(database, |s| s.access_token_lifetime = Duration::from_secs(1)).await;
        let ann = app.user("ann@example.com").await;
        assert_eq!(app.get("/api/auth/me/", Some(&ann.access)).await.0, StatusCode::OK);
        newspaper_tests::wait_until_expired(&ann.access).await;
        assert_eq!(app.get("/api/auth/me/", Some(&ann.access)).await, (StatusCode::UNAUTHORIZED, json!({"detail": "Token is invalid or expired"})));
        let (status, pair) = app.post("/api/auth/token/refresh/", None, json!({"refresh": ann.refresh})).await;
        assert_eq!(status, StatusCode::OK, "the refresh token outlives the access token");
        assert_eq!(app.get("/api/auth/me/", pair["access"].as_str()).await.0, StatusCode::OK);
    }

    async fn login_attempts_are_throttled_per_client(database) {
        let app = TestApp::spawn_with(database, |s| s.auth_rate_limit_per_minute = 3).await;
        for _ in 0..3 {
            assert_eq!(app.post("/api/auth/token/", None, json!({"email": "x@example.com", "password": "wrong one!"})).await.0, StatusCode::UNAUTHORIZED);
        }
        let res = app.request(Method::POST, "/api/auth/token/", None).json(&json!({"email": "x@example.com", "password": "wrong one!"})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = res.headers()[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry));
        let body: Value = res.json().await.unwrap();
        assert!(body["detail"].as_str().unwrap().starts_with("Request was throttled."), "{body}");
        // Other endpoints keep their own budget.
        assert_eq!(app.post("/api/auth/register/", None, json!({"email": "y@example.com", "password": PASSWORD})).await.0, StatusCode::CREATED);
    }
}

backend_tests! {
    async fn concurrent_refreshes_of_one_token_succeed_once(database) {
        let app = Arc::new(TestApp::spawn_with(database, |_| {}).await);
        let ann = app.user("ann@example.com").await;
        let attempts: Vec<_> = (0..6)
            .map(|_| {
                let (app, refresh) = (app.clone(), ann.refresh.clone());
                tokio::spawn(async move { app.post("/api/auth/token/refresh/", None, json!({"refresh": refresh})).await.0 })
            })
            .collect();
        let mut statuses = Vec::new();
        for attempt in attempts {
            statuses.push(attempt.await.unwrap());
        }
        assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1, "{statuses:?}");
        assert!(statuses.iter().all(|s| [StatusCode::OK, StatusCode::UNAUTHORIZED].contains(s)), "{statuses:?}");
        // Writes in the same batches as the refused ones are unharmed.
        app.create_post(&ann, "Still writing", "published").await;
    }
}
