//! A live stream's rights follow its credentials: `auth` on an open socket logs in and renews,
//! an expired token ends the stream with 4001, and a password change or reset, deactivation or
//! loss of staff ends every stream of that user with 4003. Anonymous streams are never touched.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use newspaper_domain::{UserId, now};
use newspaper_persistence::UserRepository;
use newspaper_tests::{PASSWORD, TestApp, TestUser, WsClient, app_tests, backend_tests};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// How long a revocation may take to close a stream here; the promise is "within a second",
/// and this leaves room for a loaded test machine without letting a stream live on.
const REVOCATION_BOUND: Duration = Duration::from_secs(3);

/// The `exp` claim of a JWT.
fn expiry_of(token: &str) -> i64 {
    newspaper_tests::token_expiry(token)
}

/// A fresh access/refresh pair from a refresh token.
async fn refreshed(app: &TestApp, refresh: &str) -> (String, String) {
    let (status, body) =
        app.post("/api/auth/token/refresh/", None, json!({"refresh": refresh})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (body["access"].as_str().unwrap().to_owned(), body["refresh"].as_str().unwrap().to_owned())
}

/// Sends `auth` and returns the `authenticated` answer.
async fn auth(client: &mut WsClient, token: &str) -> Value {
    client.send_json(json!({"action": "auth", "token": token})).await;
    let answer = client.next_event().await;
    assert_eq!(answer["event"], "authenticated", "{answer}");
    answer
}

/// Sends `auth` and returns the error detail.
async fn auth_refused(client: &mut WsClient, token: &str) -> String {
    client.send_json(json!({"action": "auth", "token": token})).await;
    let answer = client.next_event().await;
    assert_eq!(answer["event"], "error", "{answer}");
    answer["detail"].as_str().unwrap().to_owned()
}

/// Waits for the close and checks it is the revocation, soon enough.
async fn expect_revoked(client: &mut WsClient, since: tokio::time::Instant) {
    let (code, reason) = client.close_code().await;
    assert_eq!((code, reason.as_str()), (4003, "credentials revoked"));
    let took = since.elapsed();
    eprintln!("stream closed {took:?} after the change");
    assert!(took < REVOCATION_BOUND, "took {took:?}");
}

/// An anonymous stream and another user's stream, which no revocation of `user` may touch.
async fn bystanders(app: &TestApp, other: &TestUser) -> (WsClient, WsClient) {
    (app.ws("").await, app.ws(&format!("token={}", other.access)).await)
}

/// Both bystanders still receive what is published.
async fn bystanders_still_live(
    app: &TestApp,
    author: &TestUser,
    anon: &mut WsClient,
    other: &mut WsClient,
) {
    let post = app.create_post(author, "Still here", "published").await;
    for client in [anon, other] {
        assert_eq!(client.next_event().await["id"], post["id"]);
    }
}

app_tests! {
    async fn a_password_change_closes_every_stream_of_the_user_with_4003(app) {
        let ann = app.user("ann@example.com").await;
        let bob = app.user("bob@example.com").await;
        let mut first = app.ws(&format!("token={}", ann.access)).await;
        let mut second = app.ws(&format!("token={}", ann.access)).await;
        let (mut anon, mut other) = bystanders(&app, &bob).await;
        app.wait_for_feed_size(4).await;
        app.create_post(&ann, "Draft before", "draft").await;
        assert_eq!(first.next_event().await["title"], "Draft before");

        let changed_at = tokio::time::Instant::now();
        let (status, tokens) = app.post("/api/auth/password/change/", Some(&ann.access), json!({"old_password": PASSWORD, "new_password": "a brand new secret"})).await;
        assert_eq!(status, StatusCode::OK, "{tokens}");
        expect_revoked(&mut first, changed_at).await;
        expect_revoked(&mut second, changed_at).await;

        // The new token opens a stream that sees the user's drafts; the old one opens nothing.
        let access = tokens["access"].as_str().unwrap().to_owned();
        let mut renewed = app.ws(&format!("token={access}")).await;
        let mut stale = app.ws(&format!("token={}", ann.access)).await;
        assert_eq!(stale.close_code().await.0, 1008);
        let author = TestUser { access, ..ann.clone() };
        app.wait_for_feed_size(3).await;
        app.create_post(&author, "Draft after", "draft").await;
        assert_eq!(renewed.next_event().await["title"], "Draft after");
        bystanders_still_live(&app, &author, &mut anon, &mut other).await;
    }

    async fn a_revocation_never_closes_a_stream_whose_rights_still_stand(app) {
        let ann = app.user("ann@example.com").await;
        let before = app.create_post(&ann, "Before", "published").await;
        let (_, listed) = app.get(&format!("/api/posts/{}/", before["id"]), None).await;
        assert_eq!(listed["title"], "Before");
        let (status, tokens) = app.post("/api/auth/password/change/", Some(&ann.access), json!({"old_password": PASSWORD, "new_password": "a brand new secret"})).await;
        assert_eq!(status, StatusCode::OK);
        let author = TestUser { access: tokens["access"].as_str().unwrap().to_owned(), ..ann.clone() };
        // Replaying from before the change walks over its revocation: the stream's token was
        // issued after it, so the stream stays and goes on live.
        let mut replaying = app.ws(&format!("token={}&since=0", author.access)).await;
        assert_eq!(replaying.next_event().await["title"], "Before");
        app.wait_for_feed_size(1).await;
        app.create_post(&author, "After", "draft").await;
        assert_eq!(replaying.next_event().await["title"], "After");
    }

    async fn auth_on_an_open_stream_logs_in_renews_and_refuses_strangers(app) {
        let ann = app.user("ann@example.com").await;
        let bob = app.user("bob@example.com").await;
        let mut stream = app.ws("").await;
        app.wait_for_feed_size(1).await;
        app.create_post(&ann, "Unseen draft", "draft").await;
        let seen = app.create_post(&ann, "Public", "published").await;
        assert_eq!(stream.next_event().await["id"], seen["id"], "anonymous: no draft");

        let answer = auth(&mut stream, &ann.access).await;
        assert_eq!(answer["user"], json!({"id": ann.id, "username": "ann", "is_staff": false}));
        let expires_at = chrono::DateTime::parse_from_rfc3339(answer["expires_at"].as_str().unwrap()).unwrap();
        assert_eq!(expires_at.timestamp(), expiry_of(&ann.access));
        let keys: Vec<&String> = answer.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["event", "expires_at", "user"]);
        app.create_post(&ann, "Ann's draft", "draft").await;
        assert_eq!(stream.next_event().await["title"], "Ann's draft", "drafts from the next event on");

        // Another user's token, a bad one, a refresh token: refused, identity kept.
        assert!(auth_refused(&mut stream, &bob.access).await.contains("another user"));
        assert!(auth_refused(&mut stream, "not-a-token").await.contains("invalid"));
        assert!(auth_refused(&mut stream, &ann.refresh).await.contains("wrong type"));
        stream.send_json(json!({"action": "auth"})).await;
        assert!(stream.next_event().await["detail"].as_str().unwrap().contains("needs a \"token\""));
        app.create_post(&bob, "Bob's draft", "draft").await;
        app.create_post(&ann, "Ann's second draft", "draft").await;
        assert_eq!(stream.next_event().await["title"], "Ann's second draft", "still Ann, never Bob");

        // The same user's newer token replaces the old one.
        let (access, _) = refreshed(&app, &ann.refresh).await;
        let renewed = auth(&mut stream, &access).await;
        assert_eq!(renewed["user"]["id"], ann.id);
        assert!(renewed["expires_at"].as_str().unwrap() >= answer["expires_at"].as_str().unwrap());

        // A stream opened as Bob cannot become Ann either.
        let mut bobs = app.ws(&format!("token={}", bob.access)).await;
        assert!(auth_refused(&mut bobs, &ann.access).await.contains("another user"));
    }

    async fn revocations_reach_streams_that_follow_single_posts_only(app) {
        let ann = app.user("ann@example.com").await;
        let post = app.create_post(&ann, "Followed", "published").await;
        let mut stream = app.ws(&format!("token={}", ann.access)).await;
        stream.send_json(json!({"action": "unsubscribe", "group": "blog_feed"})).await;
        assert_eq!(stream.next_event().await["event"], "unsubscribed");
        stream.send_json(json!({"action": "subscribe", "group": format!("post.{}", post["id"])})).await;
        assert_eq!(stream.next_event().await["event"], "subscribed");
        let changed_at = tokio::time::Instant::now();
        let (status, _) = app.post("/api/auth/password/change/", Some(&ann.access), json!({"old_password": PASSWORD, "new_password": "a brand new secret"})).await;
        assert_eq!(status, StatusCode::OK);
        expect_revoked(&mut stream, changed_at).await;
    }
}

backend_tests! {
    async fn a_password_reset_deactivation_and_loss_of_staff_close_streams_with_4003(database) {
        let app = TestApp::spawn_with(database, |s| s.debug = true).await;
        let ann = app.user("ann@example.com").await;
        let boss = app.staff("boss@example.com").await;
        let bob = app.user("bob@example.com").await;
        let (mut anon, mut other) = bystanders(&app, &bob).await;

        // A reset through the API.
        let mut stream = app.ws(&format!("token={}", ann.access)).await;
        app.wait_for_feed_size(3).await;
        let (_, issued) = app.post("/api/auth/password-reset/", None, json!({"email": "ann@example.com"})).await;
        let changed_at = tokio::time::Instant::now();
        let (status, _) = app.post("/api/auth/password-reset/confirm/", None, json!({"uid": issued["uid"], "token": issued["token"], "new_password": "a brand new secret"})).await;
        assert_eq!(status, StatusCode::OK);
        expect_revoked(&mut stream, changed_at).await;

        // Written straight to the database by another process (as the CLI does): the
        // dispatcher finds the revocation on its own, without a wake-up from this instance.
        let mut staff_stream = app.ws(&format!("token={}", boss.access)).await;
        let boss_id = UserId(boss.id);
        app.wait_for_feed_size(3).await;
        // Gaining rights takes nothing away; losing them does.
        let changed_at = tokio::time::Instant::now();
        assert!(!app.db.write(move |conn| UserRepository::set_staff(conn, boss_id, true, now())).await.unwrap());
        assert!(app.db.write(move |conn| UserRepository::set_staff(conn, boss_id, false, now())).await.unwrap());
        expect_revoked(&mut staff_stream, changed_at).await;

        let mut bobs_second = app.ws(&format!("token={}", bob.access)).await;
        let bob_id = UserId(bob.id);
        app.wait_for_feed_size(3).await;
        let changed_at = tokio::time::Instant::now();
        assert!(app.db.write(move |conn| UserRepository::set_active(conn, bob_id, false, now())).await.unwrap());
        expect_revoked(&mut bobs_second, changed_at).await;
        expect_revoked(&mut other, changed_at).await;

        // The anonymous stream saw none of it, and is still live.
        let carol = app.user("carol@example.com").await;
        let post = app.create_post(&carol, "After it all", "published").await;
        assert_eq!(anon.next_event().await["id"], post["id"]);
    }

    async fn a_stream_ends_with_its_token_unless_renewed_on_the_socket(database) {
        let app = TestApp::spawn_with(database, |s| s.access_token_lifetime = Duration::from_secs(2)).await;
        let ann = app.user("ann@example.com").await;
        let mut renewing = app.ws(&format!("token={}", ann.access)).await;
        let mut lapsing = app.ws(&format!("token={}", ann.access)).await;
        let mut anonymous = app.ws("").await;
        app.wait_for_feed_size(3).await;

        // Renew until the renewing stream holds a token that outlives the first one (tokens
        // count whole seconds, so one issued in the same second expires with it).
        let first_expiry = expiry_of(&ann.access);
        let mut refresh = ann.refresh.clone();
        let mut access;
        loop {
            (access, refresh) = refreshed(&app, &refresh).await;
            if expiry_of(&access) > first_expiry {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        auth(&mut renewing, &access).await;

        let (code, reason) = lapsing.close_code().await;
        assert_eq!((code, reason.as_str()), (4001, "token expired"));
        assert!(chrono::Utc::now().timestamp() >= first_expiry, "not before the token expired");

        // Past the first token's expiry: renew once more (as the demo page does before each
        // expiry) and the stream keeps its drafts.
        let (access, _) = refreshed(&app, &refresh).await;
        auth(&mut renewing, &access).await;
        let author = TestUser { access, ..ann.clone() };
        app.create_post(&author, "Still mine", "draft").await;
        assert_eq!(renewing.next_event().await["title"], "Still mine");
        let public = app.create_post(&author, "For all", "published").await;
        assert_eq!(renewing.next_event().await["id"], public["id"]);
        assert_eq!(anonymous.next_event().await["id"], public["id"], "anonymous streams never expire");
    }
}
