//! Concurrent writers on two instances sharing one PostgreSQL: PATCHes of different fields of
//! the same posts, and deletions, all at once. Nothing fails with a 5xx, no write is lost or
//! undone by another (each post ends as its last acknowledged writes left it), and the
//! per-status counters equal the rows.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::sync::Arc;

use diesel::RunQueryDsl;
use newspaper_tests::{TestApp, TestDatabase, TestUser};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const POSTS: usize = 16;
const ROUNDS: usize = 8;

/// What one writer last had acknowledged, per post: `None` once the post is gone.
type Acknowledged = BTreeMap<i64, Option<Value>>;

/// PATCHes `field` of every post, round after round, on `app`; returns the last value
/// acknowledged per post.
async fn writer(
    app: Arc<TestApp>,
    user: TestUser,
    ids: Vec<i64>,
    field: &'static str,
) -> Acknowledged {
    let mut acknowledged: Acknowledged = ids.iter().map(|id| (*id, None)).collect();
    let mut gone = std::collections::BTreeSet::new();
    for round in 0..ROUNDS {
        for id in &ids {
            if gone.contains(id) {
                continue;
            }
            let value = match field {
                "status" => json!(if round % 2 == 0 { "draft" } else { "published" }),
                other => json!(format!("{other} {round} of {id}")),
            };
            let (status, body) = app
                .call(
                    Method::PATCH,
                    &format!("/api/posts/{id}/"),
                    Some(&user.access),
                    Some(json!({field: value})),
                )
                .await;
            match status {
                StatusCode::OK => {
                    assert_eq!(body[field], value, "the answer shows the write");
                    acknowledged.insert(*id, Some(value));
                }
                StatusCode::NOT_FOUND => {
                    gone.insert(*id);
                    acknowledged.insert(*id, None);
                }
                other => panic!("PATCH {field} of {id}: {other} {body}"),
            }
        }
    }
    acknowledged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_two_instances_lose_nothing_and_keep_counts_exact() {
    let Some(database) = TestDatabase::postgres_from_env() else { return };
    let database = Arc::new(database);
    let a = Arc::new(TestApp::spawn_with(database.clone(), |_| {}).await);
    let b = Arc::new(TestApp::spawn_with(database.clone(), |_| {}).await);
    let ann = a.user("ann@example.com").await;
    let boss = b.staff("boss@example.com").await;
    let mut ids = Vec::new();
    for i in 0..POSTS {
        let post = a
            .create_post(&ann, &format!("Post {i}"), if i % 2 == 0 { "published" } else { "draft" })
            .await;
        ids.push(post["id"].as_i64().unwrap());
    }
    let reversed: Vec<i64> = ids.iter().rev().copied().collect();
    // Each field has one writer, on alternating instances and in opposite orders.
    let statuses = tokio::spawn(writer(a.clone(), ann.clone(), ids.clone(), "status"));
    let contents = tokio::spawn(writer(b.clone(), ann.clone(), reversed.clone(), "content"));
    let titles = tokio::spawn(writer(a.clone(), boss.clone(), reversed, "title"));
    // Meanwhile every fourth post is deleted, through the other instance.
    let doomed: Vec<i64> = ids.iter().copied().step_by(4).collect();
    let deleter = {
        let (b, boss, doomed) = (b.clone(), boss.clone(), doomed.clone());
        tokio::spawn(async move {
            for id in doomed {
                let (status, body) = b
                    .call(Method::DELETE, &format!("/api/posts/{id}/"), Some(&boss.access), None)
                    .await;
                assert_eq!(status, StatusCode::NO_CONTENT, "DELETE {id}: {body}");
            }
        })
    };
    let (statuses, contents, titles) =
        (statuses.await.unwrap(), contents.await.unwrap(), titles.await.unwrap());
    deleter.await.unwrap();

    for id in &ids {
        let (status, post) = a.get(&format!("/api/posts/{id}/"), Some(&boss.access)).await;
        if doomed.contains(id) {
            assert_eq!(status, StatusCode::NOT_FOUND, "post {id} was deleted");
            continue;
        }
        assert_eq!(status, StatusCode::OK);
        for (field, acknowledged) in
            [("status", &statuses), ("content", &contents), ("title", &titles)]
        {
            assert_eq!(
                Some(&post[field]),
                acknowledged[id].as_ref(),
                "{field} of post {id}: {post}"
            );
        }
    }
    // The counters are the rows.
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        status: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        counted: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        stored: i64,
    }
    let rows: Vec<Row> =
        a.db.read(|conn| {
            diesel::sql_query(
                "SELECT c.status, c.count AS stored,
                        (SELECT count(*) FROM posts p WHERE p.status = c.status) AS counted
                 FROM post_counts c ORDER BY c.status",
            )
            .load(conn)
            .map_err(newspaper_persistence::PersistenceError::from)
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!(row.stored, row.counted, "the {} counter", row.status);
    }
    let (_, listed) = b.get("/api/posts/?page_size=100", Some(&boss.access)).await;
    assert_eq!(listed["count"].as_u64().unwrap() as usize, POSTS - doomed.len());
    assert_eq!(listed["results"].as_array().unwrap().len(), POSTS - doomed.len());
}
