//! Cursor pagination over real HTTP, as DRF's `CursorPagination` behaves: opaque cursors,
//! `next` / `previous` links both ways, pages that stay put while posts come and go, and
//! `404 {"detail": "Invalid cursor"}` for a cursor the server did not make.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use newspaper_tests::{TestApp, app_tests, titles};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The path and query of an absolute link this server made.
fn path_of(app: &TestApp, link: &Value) -> Option<String> {
    let link = link.as_str()?;
    Some(link.strip_prefix(&app.address).unwrap_or_else(|| panic!("{link} is not ours")).to_owned())
}

/// Follows `key` links from `start` to the end; every page's titles, in the order visited.
async fn walk(app: &TestApp, start: &str, key: &str, token: Option<&str>) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut next = Some(start.to_owned());
    while let Some(path) = next {
        let (status, body) = app.get(&path, token).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert!(body.get("count").is_none(), "a cursor page does not count: {body}");
        pages.push(titles(&body));
        next = path_of(app, &body[key]);
        assert!(pages.len() < 100, "the links loop");
    }
    pages
}

/// Everything `token` sees in this order, read as one numbered page.
async fn everything(app: &TestApp, query: &str, token: Option<&str>) -> Vec<String> {
    let (status, body) = app.get(&format!("/api/posts/?page_size=100&{query}"), token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    titles(&body)
}

app_tests! {
    async fn cursor_pages_walk_the_whole_list_both_ways_in_every_order(app) {
        let ann = app.user("ann@example.com").await;
        let bob = app.user("bob@example.com").await;
        // Titles that tie, so that the id must break ties the same way on every page.
        for (i, (who, status)) in [(&ann, "published"), (&bob, "draft"), (&ann, "draft"), (&bob, "published"),
            (&ann, "published"), (&bob, "published"), (&ann, "published"), (&ann, "draft")].into_iter().enumerate() {
            app.create_post(who, &format!("Title {}", i % 3), status).await;
        }
        let (_, body) = app.get("/api/posts/?cursor=", None).await;
        assert_eq!(body["previous"], Value::Null, "the first page has nothing before it");
        let by_ann = format!("author={}", ann.id);
        for query in ["", "ordering=title", "ordering=-title", "ordering=updated_at", "ordering=created_at",
            "status=published", &by_ann, "status=draft&ordering=-updated_at", "ordering=title,-created_at"] {
            let token = Some(ann.access.as_str());
            let whole = everything(&app, query, token).await;
            assert!(!whole.is_empty(), "{query}");
            let start = format!("/api/posts/?{query}&page_size=3&cursor=");
            let forward = walk(&app, &start, "next", token).await;
            assert_eq!(forward.concat(), if query.contains(',') {
                // A cursor follows the first ordering term, with the id breaking ties.
                everything(&app, "ordering=title", token).await
            } else {
                whole.clone()
            }, "{query}");
            assert!(forward.iter().all(|page| page.len() <= 3 && !page.is_empty()), "{query}: {forward:?}");
            // From the last page back to the first, through the previous links.
            let (_, body) = app.get(&start, token).await;
            let mut last = path_of(&app, &body["next"]);
            let mut at_end = body;
            while let Some(path) = last {
                at_end = app.get(&path, token).await.1;
                last = path_of(&app, &at_end["next"]);
            }
            let Some(back) = path_of(&app, &at_end["previous"]) else {
                assert_eq!(forward.len(), 1, "{query}");
                continue;
            };
            let mut backward = walk(&app, &back, "previous", token).await;
            backward.reverse();
            backward.push(titles(&at_end));
            assert_eq!(backward, forward, "{query}: the same pages back as forth");
            // Links keep the other parameters.
            assert!(back.contains("page_size=3"), "{back}");
        }
        // Another reader never sees ann's drafts through a cursor either.
        let bobs = walk(&app, "/api/posts/?cursor=&page_size=2", "next", Some(&bob.access)).await.concat();
        assert_eq!(bobs, everything(&app, "", Some(&bob.access)).await);
        assert_eq!(bobs.len(), 6);
    }

    async fn cursor_pages_stay_put_while_posts_come_and_go(app) {
        let ann = app.user("ann@example.com").await;
        let mut ids = Vec::new();
        for i in 0..9 {
            ids.push(app.create_post(&ann, &format!("p{i}"), "published").await["id"].as_i64().unwrap());
        }
        let (_, first) = app.get("/api/posts/?cursor=&page_size=3", None).await;
        assert_eq!(titles(&first), ["p8", "p7", "p6"]);
        // Newer posts arrive before the position, and one of the next page's posts goes away.
        app.create_post(&ann, "new 1", "published").await;
        app.create_post(&ann, "new 2", "published").await;
        let (status, _) = app.call(Method::DELETE, &format!("/api/posts/{}/", ids[4]), Some(&ann.access), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (_, second) = app.get(&path_of(&app, &first["next"]).unwrap(), None).await;
        assert_eq!(titles(&second), ["p5", "p3", "p2"], "no repeat, no skip, the deleted one gone");
        let (_, third) = app.get(&path_of(&app, &second["next"]).unwrap(), None).await;
        assert_eq!(titles(&third), ["p1", "p0"]);
        assert_eq!(third["next"], Value::Null);
        // Back from the second page: the three before it, as they are now.
        let (_, back) = app.get(&path_of(&app, &second["previous"]).unwrap(), None).await;
        assert_eq!(titles(&back), ["p8", "p7", "p6"]);
        let (_, front) = app.get(&path_of(&app, &back["previous"]).unwrap(), None).await;
        assert_eq!(titles(&front), ["new 2", "new 1"], "the new posts, found going back");
        assert_eq!(front["previous"], Value::Null);
        // Everything after the last page went away: its next link is gone, and a stale
        // cursor past the end is an empty page that leads back.
        let stale = path_of(&app, &second["next"]).unwrap();
        for id in [ids[0], ids[1]] {
            app.call(Method::DELETE, &format!("/api/posts/{id}/"), Some(&ann.access), None).await;
        }
        let (status, empty) = app.get(&stale, None).await;
        assert_eq!((status, titles(&empty).len()), (StatusCode::OK, 0));
        assert_eq!(empty["next"], Value::Null);
        let (_, last) = app.get(&path_of(&app, &empty["previous"]).unwrap(), None).await;
        assert_eq!(titles(&last), ["p5", "p3", "p2"], "the list's last page");
        assert_eq!(last["next"], Value::Null, "nothing comes after the end");
        let (_, before_last) = app.get(&path_of(&app, &last["previous"]).unwrap(), None).await;
        assert_eq!(titles(&before_last), ["p8", "p7", "p6"]);
    }

    async fn bad_cursors_are_404_invalid_cursor_and_change_nothing(app) {
        let ann = app.user("ann@example.com").await;
        for i in 0..3 {
            app.create_post(&ann, &format!("p{i}"), "published").await;
        }
        let (_, first) = app.get("/api/posts/?cursor=&page_size=1", None).await;
        let next = path_of(&app, &first["next"]).unwrap();
        let cursor = next.split("cursor=").nth(1).unwrap().split('&').next().unwrap().to_owned();
        let forged = |json: &str| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
        };
        for query in [
            "cursor=garbage!".to_owned(),
            "cursor=e30".to_owned(),
            format!("cursor={}", forged(r#"{"o":"-created_at","k":"not a time","i":1}"#)),
            format!("cursor={}", forged(r#"{"o":"-created_at","k":"2026-11-29T10:00:00Z"}"#)),
            format!("cursor={}", forged(r#"{"o":"-created_at","i":1,"k":"2026-11-29T10:00:00Z","drop":"table"}"#)),
            format!("cursor={cursor}&ordering=title"),
            format!("cursor={}", &cursor[..cursor.len() - 2]),
        ] {
            for token in [None, Some(ann.access.as_str())] {
                let (status, body) = app.get(&format!("/api/posts/?{query}"), token).await;
                assert_eq!((status, body), (StatusCode::NOT_FOUND, json!({"detail": "Invalid cursor"})), "{query}");
            }
        }
        let (_, again) = app.get(&next, None).await;
        assert_eq!(titles(&again), ["p1"], "the real cursor still reads");
        assert_eq!(app.event_count().await, 3);
        // An empty list has one empty cursor page.
        let (status, body) = app.get("/api/posts/?cursor=&status=draft", None).await;
        assert_eq!((status, body), (StatusCode::OK, json!({"next": null, "previous": null, "results": []})));
    }
}
