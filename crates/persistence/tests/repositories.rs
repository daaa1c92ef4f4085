//! Repository behaviour against real databases: SQLite always, PostgreSQL when
//! NEWSPAPER_TEST_POSTGRES_URL is set.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;

use chrono::Duration;
use diesel::prelude::*;
use newspaper_domain::{
    Change, Email, EventKind, Post, PostId, PostOrdering, PostOrderingField, PostStatus, PostTitle,
    RevocationReason, Seq, Timestamp, User, UserId, Username, Viewer, now,
};
use newspaper_persistence::{
    Database, DbConnection, Keyset, NewPost, NewUser, OutboxRepository, Page, PersistenceError,
    PoolOptions, PostChanges, PostQuery, PostRepository, RefreshTokenRepository, SortKey,
    UserRepository, Visibility, backend_tests, migrations,
};

fn user(conn: &mut DbConnection, email: &str, staff: bool) -> User {
    let email = Email::parse(email).unwrap();
    UserRepository::create(
        conn,
        &NewUser {
            email: &email,
            username: &Username::from_email(&email),
            password_hash: "hash",
            is_staff: staff,
            date_joined: now(),
        },
    )
    .unwrap()
}

fn new_post(title: &str, status: PostStatus) -> NewPost {
    NewPost { title: PostTitle::parse(title).unwrap(), content: format!("{title} body"), status }
}

fn titles(db: &Database, viewer: Viewer, query: PostQuery) -> Vec<String> {
    let mut conn = db.get().unwrap();
    PostRepository::list_visible_to(&mut conn, &viewer, &query)
        .unwrap()
        .items
        .into_iter()
        .map(|p| p.title)
        .collect()
}

fn at(offset_secs: i64) -> Timestamp {
    now() + Duration::seconds(offset_secs)
}

#[test]
fn an_idle_writer_merges_a_search_index_that_commits_have_split() {
    let test_db = newspaper_persistence::testing::TestDatabase::sqlite();
    let db = test_db.migrated();
    let mut conn = db.get().unwrap();
    let ann = user(&mut conn, "ann@example.com", false);
    // Without FTS5's own merging, every commit that writes posts leaves a segment of its own.
    diesel::sql_query("INSERT INTO posts_search (posts_search, rank) VALUES ('automerge', 0)")
        .execute(&mut *conn)
        .unwrap();
    diesel::sql_query("INSERT INTO posts_search (posts_search, rank) VALUES ('crisismerge', 1000)")
        .execute(&mut *conn)
        .unwrap();
    let segments = |conn: &mut DbConnection| {
        newspaper_persistence::testing::search_index_segments(conn).unwrap().unwrap()
    };
    let mut most = 0;
    for i in 0..12 {
        let author = ann.as_author();
        let title = PostTitle::parse(&format!("Walrus {i}")).unwrap();
        db.write_blocking(move |c| {
            PostRepository::create(
                c,
                &author,
                NewPost { title, content: "tusks".into(), status: PostStatus::Published },
                at(i),
            )
        })
        .unwrap();
        most = most.max(segments(&mut conn));
    }
    // Nothing merges below eight segments, so the second commit's is still there to count.
    assert!(most >= 2, "each commit added a segment");
    // Once the writer has been idle a moment, it merges them all into one, step by step.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while segments(&mut conn) > 1 {
        assert!(std::time::Instant::now() < deadline, "still {} segments", segments(&mut conn));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let found = |term: &str| {
        titles(
            &db,
            Viewer::Anonymous,
            PostQuery { search: Some(term.into()), limit: 20, ..PostQuery::default() },
        )
    };
    assert_eq!(found("walrus").len(), 12);
    assert_eq!(found("WALRUS 7"), ["Walrus 7"]);
    assert_eq!(found("tusk").len(), 12, "contents are in the merged index too");
    let author = ann.as_author();
    let title = PostTitle::parse("Walrus late").unwrap();
    db.write_blocking(move |c| {
        PostRepository::create(
            c,
            &author,
            NewPost { title, content: "tusks".into(), status: PostStatus::Published },
            at(20),
        )
    })
    .unwrap();
    assert_eq!(found("walrus late"), ["Walrus late"], "a write after the merge is found");
    assert_eq!(found("walrus").len(), 13);
}

/// The migrations each backend has (both have the same versions).
const MIGRATIONS: usize = 7;

/// PostgreSQL only: there the pool stops every statement at a time limit meant for requests.
#[test]
fn migrations_wait_for_another_instance_longer_than_a_request_may_run() {
    let Some(test_db) = newspaper_persistence::testing::TestDatabase::postgres_from_env() else {
        return;
    };
    let url = test_db.url().clone();
    // Another instance, migrating: it holds the migration lock.
    let other = Database::connect(&url, PoolOptions::for_backend(url.backend())).unwrap();
    let mut other = other.get().unwrap();
    let DbConnection::Postgres(other) = &mut *other else { unreachable!("a PostgreSQL URL") };
    let lock = |verb: &str| format!("SELECT pg_{verb}({})", migrations::MIGRATION_LOCK_KEY);
    diesel::sql_query(lock("advisory_lock")).execute(other).unwrap();

    let mut options = PoolOptions::for_backend(url.backend());
    options.statement_timeout = std::time::Duration::from_millis(100);
    let db = Database::connect(&url, options).unwrap();
    let migrating = std::thread::spawn(move || {
        let applied = db.run_migrations().map(|versions| versions.len());
        (db, applied)
    });
    // Until this instance has waited for the lock twice as long as a request may run, or has
    // given up.
    #[derive(QueryableByName)]
    struct Waiting {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        backends: i64,
    }
    const WAITED_LONG: &str = "SELECT count(*) AS backends FROM pg_stat_activity \
        WHERE datname = current_database() AND wait_event = 'advisory' \
        AND clock_timestamp() - query_start > interval '200 milliseconds'";
    while !migrating.is_finished() {
        let waiting: Waiting = diesel::sql_query(WAITED_LONG).get_result(other).unwrap();
        if waiting.backends > 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    diesel::sql_query(lock("advisory_unlock")).execute(other).unwrap();
    let (db, applied) = migrating.join().unwrap();
    assert_eq!(applied.unwrap(), MIGRATIONS);

    // The limit holds again for the requests that use the connection next.
    #[derive(QueryableByName)]
    struct Setting {
        #[diesel(sql_type = diesel::sql_types::Text)]
        statement_timeout: String,
    }
    let mut conn = db.get().unwrap();
    let DbConnection::Postgres(conn) = &mut *conn else { unreachable!("a PostgreSQL URL") };
    let setting: Setting = diesel::sql_query("SHOW statement_timeout").get_result(conn).unwrap();
    assert_eq!(setting.statement_timeout, "100ms");
}

backend_tests! {
    fn migrations_run_up_down_and_up_again(test_db) {
        let db = test_db.migrated();
        let mut conn = db.get().unwrap();
        assert!(migrations::pending(&mut conn).unwrap().is_empty());
        let reverted = migrations::revert_all(&mut conn).unwrap();
        assert_eq!(reverted.len(), MIGRATIONS);
        assert_eq!(migrations::pending(&mut conn).unwrap().len(), MIGRATIONS);
        assert_eq!(migrations::run_pending(&mut conn).unwrap().len(), MIGRATIONS);
        user(&mut conn, "a@example.com", false);
    }

    fn instances_migrating_at_once_do_not_collide(test_db) {
        let url = test_db.url().clone();
        let runs: Vec<_> = (0..3)
            .map(|_| {
                let url = url.clone();
                std::thread::spawn(move || {
                    let db = Database::connect(&url, newspaper_persistence::PoolOptions::for_backend(url.backend())).unwrap();
                    db.run_migrations().unwrap().len()
                })
            })
            .collect();
        let applied: Vec<usize> = runs.into_iter().map(|r| r.join().unwrap()).collect();
        assert_eq!(applied.iter().sum::<usize>(), MIGRATIONS, "each migration applied once: {applied:?}");
    }

    fn schema_rs_matches_the_migrated_database(test_db) {
        use newspaper_persistence::schema::*;
        let db = test_db.migrated();
        let mut conn = db.get().unwrap();
        // Selecting every column of schema.rs fails if a column is missing or mistyped.
        outbox_state::table.select(outbox_state::all_columns).load::<(i64, i64, i64, Option<String>, Option<chrono::NaiveDateTime>)>(&mut conn).unwrap();
        post_events::table.select(post_events::all_columns).load::<(i64, String, i64, i64, String, chrono::NaiveDateTime)>(&mut conn).unwrap();
        posts::table.select(posts::all_columns).load::<(i64, String, String, String, i64, chrono::NaiveDateTime, chrono::NaiveDateTime)>(&mut conn).unwrap();
        refresh_token_blacklist::table.select(refresh_token_blacklist::all_columns).load::<(String, i64, chrono::NaiveDateTime, chrono::NaiveDateTime)>(&mut conn).unwrap();
        users::table.select(users::all_columns).load::<(i64, String, String, String, bool, bool, chrono::NaiveDateTime)>(&mut conn).unwrap();
        // And the database has no column schema.rs lacks.
        post_counts::table.select(post_counts::all_columns).load::<(String, i64)>(&mut conn).unwrap();
        author_post_counts::table.select(author_post_counts::all_columns).load::<(i64, String, i64)>(&mut conn).unwrap();
        let expected = [("author_post_counts", 3), ("outbox_state", 5), ("post_counts", 2), ("post_events", 6), ("posts", 7), ("refresh_token_blacklist", 4), ("users", 7)];
        for (table, columns) in expected {
            #[derive(QueryableByName)]
            struct Count { #[diesel(sql_type = diesel::sql_types::BigInt)] n: i64 }
            let sql = match &mut *conn {
                DbConnection::Sqlite(_) => format!("SELECT count(*) AS n FROM pragma_table_info('{table}')"),
                DbConnection::Postgres(_) => format!("SELECT count(*) AS n FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = '{table}'"),
            };
            let found = diesel::sql_query(sql).get_result::<Count>(&mut *conn).unwrap().n;
            assert_eq!(found, columns, "columns of {table}");
        }
    }

    fn emails_are_unique_case_insensitively(test_db) {
        let db = test_db.migrated();
        let mut conn = db.get().unwrap();
        let ann = user(&mut conn, "Ann@Example.com", false);
        assert_eq!(ann.email, "ann@example.com");
        let email = Email::parse("ANN@example.COM").unwrap();
        let dup = UserRepository::create(&mut conn, &NewUser {
            email: &email,
            username: &Username::parse("other").unwrap(),
            password_hash: "x",
            is_staff: false,
            date_joined: now(),
        });
        match dup {
            Err(PersistenceError::Conflict { constraint }) => {
                assert_eq!(constraint, UserRepository::EMAIL_CONSTRAINT)
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        let found = UserRepository::find_by_email(&mut conn, &email).unwrap().unwrap();
        assert_eq!(found.user, ann);
        assert_eq!(found.password_hash, "hash");
        assert!(UserRepository::find_by_id(&mut conn, UserId(999)).unwrap().is_none());
        UserRepository::set_password_hash(&mut conn, ann.id, "new", RevocationReason::PasswordReset, now()).unwrap();
        assert!(UserRepository::set_active(&mut conn, ann.id, false, now()).unwrap());
        let again = UserRepository::find_by_id(&mut conn, ann.id).unwrap().unwrap();
        assert_eq!((again.password_hash.as_str(), again.user.is_active), ("new", false));
        assert!(matches!(UserRepository::set_staff(&mut conn, UserId(999), true, now()), Err(PersistenceError::NotFound)));
        assert!(matches!(UserRepository::set_active(&mut conn, UserId(999), true, now()), Err(PersistenceError::NotFound)));
    }

    fn credential_changes_revoke_live_streams_in_the_same_transaction(test_db) {
        let db = test_db.migrated();
        let mut conn = db.get().unwrap();
        let ann = user(&mut conn, "ann@example.com", true);
        let revocations = |conn: &mut newspaper_persistence::DbConnection| -> Vec<RevocationReason> {
            OutboxRepository::list_after(conn, Seq(0), 100).unwrap().into_iter().filter_map(|e| match e.change {
                Change::CredentialsRevoked { user, reason } => { assert_eq!(user, ann.id); Some(reason) }
                Change::Post(_) => None,
            }).collect()
        };
        // Changes that take nothing away record nothing; a change to the same value is no change.
        assert!(!UserRepository::set_staff(&mut conn, ann.id, true, now()).unwrap());
        assert!(!UserRepository::set_active(&mut conn, ann.id, true, now()).unwrap());
        assert!(revocations(&mut conn).is_empty());
        assert!(UserRepository::set_staff(&mut conn, ann.id, false, now()).unwrap());
        assert!(!UserRepository::set_staff(&mut conn, ann.id, false, now()).unwrap());
        assert!(UserRepository::set_active(&mut conn, ann.id, false, now()).unwrap());
        assert!(UserRepository::set_active(&mut conn, ann.id, true, now()).unwrap());
        // A compare-and-swap that loses revokes nothing.
        assert!(!UserRepository::replace_password_hash(&mut conn, ann.id, "stale", "x", RevocationReason::PasswordReset, now()).unwrap());
        assert!(UserRepository::replace_password_hash(&mut conn, ann.id, "hash", "new", RevocationReason::PasswordChanged, now()).unwrap());
        assert_eq!(revocations(&mut conn), [RevocationReason::StaffRevoked, RevocationReason::Deactivated, RevocationReason::PasswordChanged]);
        // A revocation rolled back with its change leaves no trace.
        let id = ann.id;
        let failed: Result<(), PersistenceError> = db.write_blocking(move |conn| {
            UserRepository::set_password_hash(conn, id, "newer", RevocationReason::PasswordReset, now())?;
            Err(PersistenceError::NotFound)
        });
        assert!(failed.is_err());
        assert_eq!(revocations(&mut conn).len(), 3);
        assert_eq!(UserRepository::find_by_id(&mut conn, id).unwrap().unwrap().password_hash, "new");
        // Post events are told apart from revocations.
        assert!(OutboxRepository::list_after(&mut conn, Seq(0), 100).unwrap().iter().all(|e| e.feed_event(newspaper_domain::Audience::Privileged).is_none()));
    }

    fn every_post_write_appends_its_event_in_order(test_db) {
        let db = test_db.migrated();
        let mut conn = db.get().unwrap();
        let ann = user(&mut conn, "ann@example.com", false);
        let (post, s1) = PostRepository::create(&mut conn, &ann.as_author(), new_post("Draft", PostStatus::Draft), now()).unwrap();
        assert_eq!(post.author.username, "ann");
        let changes = PostChanges { title: Some(PostTitle::parse("Live").unwrap()), status: Some(PostStatus::Published), content: None };
        let (updated, s2) = PostRepository::update(&mut conn, &post, changes, now()).unwrap();
        assert_eq!((updated.title.as_str(), updated.status, updated.content.as_str()), ("Live", PostStatus::Published, "Draft body"));
        assert!(updated.updated_at >= post.updated_at);
        let s3 = PostRepository::delete(&mut conn, &updated, now()).unwrap();
        assert!(s1 < s2 && s2 < s3);
        assert!(PostRepository::find(&mut conn, post.id).unwrap().is_none());

        let events = OutboxRepository::list_after(&mut conn, Seq(0), 10).unwrap();
        let kinds: Vec<_> = events.iter().map(|e| (e.seq, e.change.post().unwrap().kind())).collect();
        assert_eq!(kinds, [(s1, EventKind::PostCreated), (s2, EventKind::PostUpdated), (s3, EventKind::PostDeleted)]);
        let update = events[1].change.post().unwrap();
        assert_eq!(update.before.as_ref().unwrap().title, "Draft");
        assert_eq!(update.after.as_ref().unwrap().status, PostStatus::Published);
        assert_eq!(OutboxRepository::list_after(&mut conn, s1, 1).unwrap()[0].seq, s2);
        assert_eq!(OutboxRepository::list_between(&mut conn, Seq(0), s3, 10).unwrap().len(), 2);
        assert_eq!(OutboxRepository::latest_seq(&mut conn).unwrap(), s3);
    }

    fn a_failed_transaction_leaves_neither_post_nor_event(test_db) {
        let db = test_db.migrated();
        let ann = db.write_blocking(|conn| Ok::<_, PersistenceError>(user(conn, "ann@example.com", false))).unwrap();
        let author = ann.as_author();
        let result: Result<(), PersistenceError> = db.write_blocking(move |conn| {
            PostRepository::create(conn, &author, new_post("Doomed", PostStatus::Published), now())?;
            Err(PersistenceError::NotFound)
        });
        assert!(result.is_err());
        let mut conn = db.get().unwrap();
        assert_eq!(PostRepository::list_visible_to(&mut conn, &Viewer::Anonymous, &PostQuery::default()).unwrap().count, 0);
        assert!(OutboxRepository::list_after(&mut conn, Seq(0), 10).unwrap().is_empty());
        // A post by a user that does not exist fails on the author lookup and writes nothing.
        assert!(PostRepository::create(&mut conn, &newspaper_domain::AuthorRef { id: UserId(4242), username: "ghost".into() }, new_post("x", PostStatus::Draft), now()).is_err());
        assert!(OutboxRepository::list_after(&mut conn, Seq(0), 10).unwrap().is_empty());
    }

    fn failing_writes_roll_back_only_themselves_and_a_panic_hurts_nothing_later(test_db) {
        let db = test_db.migrated();
        let author = db.write_blocking(|conn| Ok::<_, PersistenceError>(user(conn, "ann@example.com", false))).unwrap().as_author();
        let writers: Vec<_> = (0..40)
            .map(|i| {
                let (db, author) = (db.clone(), author.clone());
                std::thread::spawn(move || {
                    db.write_blocking(move |conn| {
                        PostRepository::create(conn, &author, new_post(&format!("p{i}"), PostStatus::Published), now())?;
                        if i % 3 == 0 { Err(PersistenceError::NotFound) } else { Ok(()) }
                    })
                    .is_ok()
                })
            })
            .collect();
        let succeeded = writers.into_iter().map(|w| w.join().unwrap()).filter(|ok| *ok).count();
        assert_eq!(succeeded, 26);
        let page = PostRepository::list_visible_to(&mut db.get().unwrap(), &Viewer::Anonymous, &PostQuery { limit: 100, ..PostQuery::default() }).unwrap();
        assert_eq!(page.count, 26);
        assert!(page.items.iter().all(|p| p.title[1..].parse::<u32>().unwrap() % 3 != 0), "only the successful writes remain");
        assert_eq!(OutboxRepository::list_after(&mut db.get().unwrap(), Seq(0), 100).unwrap().len(), 26);

        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            db.write_blocking(|_conn| -> Result<(), PersistenceError> { panic!("a bug in a write") })
        }));
        assert!(matches!(panicked, Ok(Err(PersistenceError::Task(_)))), "the caller gets an error, not a hang");
        let after = db.write_blocking(move |conn| PostRepository::create(conn, &author, new_post("after", PostStatus::Published), now()));
        assert!(after.is_ok(), "writes keep working");
    }

    fn drafts_are_visible_to_their_author_and_staff_only(test_db) {
        let db = test_db.migrated();
        let mut conn = db.get().unwrap();
        let ann = user(&mut conn, "ann@example.com", false);
        let bob = user(&mut conn, "bob@example.com", false);
        let boss = user(&mut conn, "boss@example.com", true);
        let (draft, _) = PostRepository::create(&mut conn, &ann.as_author(), new_post("Ann draft", PostStatus::Draft), at(0)).unwrap();
        PostRepository::create(&mut conn, &ann.as_author(), new_post("Ann live", PostStatus::Published), at(1)).unwrap();
        PostRepository::create(&mut conn, &bob.as_author(), new_post("Bob draft", PostStatus::Draft), at(2)).unwrap();
        drop(conn);

        let as_user = |u: &User| Viewer::User { id: u.id, is_staff: u.is_staff };
        assert_eq!(titles(&db, Viewer::Anonymous, PostQuery::default()), ["Ann live"]);
        assert_eq!(titles(&db, as_user(&ann), PostQuery::default()), ["Ann live", "Ann draft"]);
        assert_eq!(titles(&db, as_user(&bob), PostQuery::default()), ["Bob draft", "Ann live"]);
        assert_eq!(titles(&db, as_user(&boss), PostQuery::default()), ["Bob draft", "Ann live", "Ann draft"]);
        let count = |viewer: Viewer, query: PostQuery| {
            PostRepository::list_visible_to(&mut db.get().unwrap(), &viewer, &query).unwrap().count
        };
        assert_eq!(count(as_user(&bob), PostQuery::default()), 2, "published plus own drafts");
        assert_eq!(count(as_user(&boss), PostQuery::default()), 3);
        assert_eq!(count(Viewer::Anonymous, PostQuery::default()), 1);
        let searching = PostQuery { search: Some("draft".into()), ..PostQuery::default() };
        assert_eq!(count(as_user(&bob), searching.clone()), 1);
        assert_eq!(titles(&db, as_user(&ann), searching), ["Ann draft"]);
        let drafts = PostQuery { status: Some(PostStatus::Draft), ..PostQuery::default() };
        assert!(titles(&db, Viewer::Anonymous, drafts.clone()).is_empty());
        assert_eq!(titles(&db, as_user(&bob), drafts), ["Bob draft"]);

        let mut conn = db.get().unwrap();
        assert!(PostRepository::find_visible_to(&mut conn, &as_user(&bob), draft.id).unwrap().is_none());
        assert!(PostRepository::find_visible_to(&mut conn, &as_user(&boss), draft.id).unwrap().is_some());
        assert!(PostRepository::find_visible_to(&mut conn, &Viewer::Anonymous, PostId(999)).unwrap().is_none());

        // Readers who see the same posts are told apart no further (they share cached pages):
        // a user without drafts sees what the public sees, whatever the author filter.
        let carl = user(&mut conn, "carl@example.com", false);
        let visibility = |conn: &mut _, viewer: Viewer, author: Option<UserId>| {
            PostRepository::read_head(conn, viewer.user_id(), author).unwrap().visibility_of(&viewer)
        };
        assert_eq!(visibility(&mut conn, Viewer::Anonymous, None), Visibility::Published);
        assert_eq!(visibility(&mut conn, as_user(&carl), None), Visibility::Published);
        assert_eq!(visibility(&mut conn, as_user(&carl), Some(ann.id)), Visibility::Published);
        assert_eq!(visibility(&mut conn, as_user(&bob), None), Visibility::PublishedAndDraftsOf(bob.id));
        assert_eq!(visibility(&mut conn, as_user(&bob), Some(ann.id)), Visibility::PublishedAndDraftsOf(bob.id));
        assert_eq!(visibility(&mut conn, as_user(&boss), None), Visibility::Everything);
        // Read for another reader, a head cannot tell whether this one has drafts.
        let anonymous_head = PostRepository::read_head(&mut conn, None, None).unwrap();
        assert_eq!(anonymous_head.visibility_of(&as_user(&carl)), Visibility::PublishedAndDraftsOf(carl.id));
    }

    fn lists_filter_search_order_and_paginate(test_db) {
        let db = test_db.migrated();
        let mut conn = db.get().unwrap();
        let ann = user(&mut conn, "ann@example.com", false);
        let bob = user(&mut conn, "bob@example.com", false);
        for (i, (author, title)) in [(&ann, "Alpha news"), (&bob, "beta NEWS"), (&ann, "Gamma"), (&bob, "100% sure_thing")].into_iter().enumerate() {
            PostRepository::create(&mut conn, &author.as_author(), new_post(title, PostStatus::Published), at(i as i64)).unwrap();
        }
        drop(conn);
        let q = |f: &dyn Fn(&mut PostQuery)| { let mut q = PostQuery::default(); f(&mut q); titles(&db, Viewer::Anonymous, q) };
        assert_eq!(q(&|q| q.search = Some("NEWS".into())), ["beta NEWS", "Alpha news"]);
        assert_eq!(q(&|q| q.search = Some("body".into())).len(), 4, "search covers content");
        assert_eq!(q(&|q| q.search = Some("100%".into())), ["100% sure_thing"]);
        assert!(q(&|q| q.search = Some("s_r".into())).is_empty(), "underscore is literal");
        assert_eq!(q(&|q| q.search = Some("e_t".into())), ["100% sure_thing"]);
        assert_eq!(q(&|q| q.author = Some(ann.id)), ["Gamma", "Alpha news"]);
        assert_eq!(q(&|q| q.ordering = PostOrdering::parse_list("title")), ["100% sure_thing", "Alpha news", "Gamma", "beta NEWS"]);
        assert_eq!(q(&|q| q.ordering = PostOrdering::parse_list("created_at")), ["Alpha news", "beta NEWS", "Gamma", "100% sure_thing"]);
        assert_eq!(q(&|q| { q.limit = 2; q.offset = 2; }), ["beta NEWS", "Alpha news"]);
        let mut conn = db.get().unwrap();
        let page = PostRepository::list_visible_to(&mut conn, &Viewer::Anonymous, &PostQuery { limit: 1, offset: 10, ..PostQuery::default() }).unwrap();
        assert_eq!((page.count, page.items.len()), (4, 0));
    }

    fn search_folds_case_for_all_of_unicode_and_follows_every_write(test_db) {
        let db = test_db.migrated();
        let mut conn = db.get().unwrap();
        let ann = user(&mut conn, "ann@example.com", false);
        let mut create = |title: &str, content: &str| {
            let new = NewPost { title: PostTitle::parse(title).unwrap(), content: content.into(), status: PostStatus::Published };
            PostRepository::create(&mut conn, &ann.as_author(), new, now()).unwrap().0
        };
        let ecole = create("ÉCOLE d'été", "Straße");
        create("He said \"hi\" OR NOT", "x* NEAR(y)");
        let plain = create("plain", "ÜBER alles");
        // Casing that depends on a letter's place (a capital sigma lower-cases to ς at a word's
        // end, to σ elsewhere) or changes a text's length (İ to i and a combining dot): a term
        // is found where it is written, in any case, however the text around it goes on.
        let greek = create("ΣΟΦΌΣ ΟΣΑ", "İstanbul");
        drop(conn);
        let found = |term: &str| {
            titles(&db, Viewer::Anonymous, PostQuery { search: Some(term.into()), ..PostQuery::default() })
        };
        assert_eq!(found("école"), ["ÉCOLE d'été"]);
        assert_eq!(found("D'ÉTÉ"), ["ÉCOLE d'été"]);
        assert_eq!(found("STRAßE"), ["ÉCOLE d'été"], "content is searched too");
        assert_eq!(found("über"), ["plain"]);
        assert_eq!(found("üB"), ["plain"], "a term too short for a trigram folds case too");
        assert_eq!(found("É"), ["ÉCOLE d'été"]);
        assert_eq!(found("\"HI\" or"), ["He said \"hi\" OR NOT"], "query syntax is literal text");
        assert_eq!(found("x* near(y)"), ["He said \"hi\" OR NOT"]);
        assert!(found("hi OR plain").is_empty());
        assert!(found("écoles").is_empty());
        assert_eq!(found("ΣΟΦΌΣ"), ["ΣΟΦΌΣ ΟΣΑ"], "the word as written");
        assert_eq!(found("σοφός"), ["ΣΟΦΌΣ ΟΣΑ"], "a final sigma is a case of the capital");
        assert_eq!(found("ός"), ["ΣΟΦΌΣ ΟΣΑ"]);
        assert_eq!(found("σοφόσ ο"), ["ΣΟΦΌΣ ΟΣΑ"]);
        assert_eq!(found("ΟΣ"), ["ΣΟΦΌΣ ΟΣΑ"], "a sigma that does not end the text");
        assert_eq!(found("İSTANBUL"), ["ΣΟΦΌΣ ΟΣΑ"]);
        assert_eq!(found("İs"), ["ΣΟΦΌΣ ΟΣΑ"]);

        let mut conn = db.get().unwrap();
        let renamed = PostChanges { title: Some(PostTitle::parse("Renamed").unwrap()), content: Some("nothing".into()), status: None };
        PostRepository::update(&mut conn, &plain, renamed, now()).unwrap();
        PostRepository::delete(&mut conn, &ecole, now()).unwrap();
        PostRepository::delete(&mut conn, &greek, now()).unwrap();
        drop(conn);
        assert!(found("über").is_empty(), "the old text is gone from the index");
        assert_eq!(found("RENAMED"), ["Renamed"]);
        assert_eq!(found("nothing"), ["Renamed"]);
        assert!(found("école").is_empty());
        assert!(found("straße").is_empty());
    }

    fn a_search_is_answered_from_the_trigram_index(test_db) {
        let db = test_db.migrated();
        let mut conn = db.get().unwrap();
        let ann = user(&mut conn, "ann@example.com", false);
        for i in 0..200 {
            // Rows of a realistic size, so that reading them all costs what it would.
            let filler = format!("common words of post {i} ").repeat(60);
            let content = if i == 77 { format!("a rare Zebra here {filler}") } else { filler };
            let new = NewPost { title: PostTitle::parse(&format!("Post {i}")).unwrap(), content, status: PostStatus::Published };
            PostRepository::create(&mut conn, &ann.as_author(), new, now()).unwrap();
        }
        if let DbConnection::Postgres(_) = &*conn {
            // As autovacuum would: without statistics the planner guesses every filter alike,
            // and new rows wait in the trigram indexes' pending lists until vacuumed.
            diesel::sql_query("VACUUM ANALYZE posts").execute(&mut *conn).unwrap();
        }
        let query = PostQuery { search: Some("zEbRa".into()), ..PostQuery::default() };
        let (page, access) = newspaper_persistence::testing::access_of(&mut conn, |conn| {
            PostRepository::list_visible_to(conn, &Viewer::User { id: ann.id, is_staff: false }, &query).unwrap()
        });
        assert_eq!((page.count, page.items.len()), (1, 1));
        let index = match &*conn {
            DbConnection::Sqlite(_) => "posts_search full-text index",
            DbConnection::Postgres(_) => "posts_content_trgm_idx",
        };
        assert!(access.indexes.contains(index), "{access:#?}");
        assert!(!access.full_scans.contains("posts"), "{access:#?}");
    }

    fn a_search_counts_and_pages_what_each_viewer_may_see_however_many_posts_match(test_db) {
        let db = test_db.migrated();
        let mut conn = db.get().unwrap();
        let ann = user(&mut conn, "ann@example.com", false);
        let bob = user(&mut conn, "bob@example.com", false);
        let boss = user(&mut conn, "boss@example.com", true);
        drop(conn);
        // "Common" matches more posts than a search carries along as ids (1,000); "rare" a
        // few. A fifth of each are Bob's drafts, a fifth Ann's, the rest published.
        let (ann_writes, bob_writes) = (ann.as_author(), bob.as_author());
        db.write_blocking(move |conn| {
            for i in 0..1010 {
                let (author, status) = match i % 5 {
                    0 => (&bob_writes, PostStatus::Draft),
                    1 => (&ann_writes, PostStatus::Draft),
                    _ => (&ann_writes, PostStatus::Published),
                };
                let rare = if i % 101 == 0 { " RARE" } else { "" };
                let title = PostTitle::parse(&format!("Common {i:04}{rare}")).unwrap();
                PostRepository::create(conn, author, NewPost { title, content: "text".into(), status }, at(i))?;
            }
            Ok::<_, PersistenceError>(())
        })
        .unwrap();
        let ann_reads = Viewer::User { id: ann.id, is_staff: false };
        let bob_reads = Viewer::User { id: bob.id, is_staff: false };
        let staff = Viewer::User { id: boss.id, is_staff: true };
        let list = |viewer: &Viewer, term: &str, status: Option<PostStatus>| {
            let query = PostQuery { search: Some(term.into()), status, limit: 4, ..PostQuery::default() };
            let page = PostRepository::list_visible_to(&mut db.get().unwrap(), viewer, &query).unwrap();
            let titles: Vec<String> = page.items.into_iter().map(|p| p.title).collect();
            (page.count, titles)
        };
        // The titles of the seeded posts numbered `numbers`, in that order.
        let titled = |numbers: &[u32], rare: bool| -> Vec<String> {
            numbers.iter().map(|n| format!("Common {n:04}{}", if rare { " RARE" } else { "" })).collect()
        };
        assert_eq!(list(&staff, "common", None).0, 1010);
        assert_eq!(list(&Viewer::Anonymous, "COMMON 1", None), (6, titled(&[1009, 1008, 1007, 1004], false)));
        assert_eq!(list(&staff, "COMMON 1", None).0, 10);
        assert_eq!(list(&Viewer::Anonymous, "common", None), (606, titled(&[1009, 1008, 1007, 1004], false)));
        assert_eq!(list(&ann_reads, "common", None), (808, titled(&[1009, 1008, 1007, 1006], false)));
        assert_eq!(list(&bob_reads, "common", None), (808, titled(&[1009, 1008, 1007, 1005], false)));
        assert_eq!(list(&ann_reads, "common", Some(PostStatus::Draft)), (202, titled(&[1006, 1001, 996, 991], false)));
        assert_eq!(list(&Viewer::Anonymous, "rare", None), (6, titled(&[909, 808, 707, 404], true)));
        assert_eq!(list(&ann_reads, "rare", None), (8, titled(&[909, 808, 707, 606], true)));
        assert_eq!(list(&bob_reads, "rare", None), (8, titled(&[909, 808, 707, 505], true)));
        assert_eq!(list(&staff, "rare", None), (10, titled(&[909, 808, 707, 606], true)));
        assert_eq!(list(&bob_reads, "rare", Some(PostStatus::Draft)), (2, titled(&[505, 0], true)));
        // The few posts a search found are paged like any list: ordered, from an offset, and
        // by cursor both ways.
        let by_title = vec![PostOrdering { field: PostOrderingField::Title, descending: false }];
        let rare_page = |viewer: &Viewer, offset: u64, keyset: Option<Keyset>| {
            let query = PostQuery { search: Some("rare".into()), ordering: by_title.clone(), offset, limit: 3, keyset, ..PostQuery::default() };
            PostRepository::list_visible_to(&mut db.get().unwrap(), viewer, &query).unwrap()
        };
        let titles = |page: &Page<Post>| page.items.iter().map(|p| p.title.clone()).collect::<Vec<_>>();
        let rare_titled = |numbers: &[u32]| -> Vec<String> { titled(numbers, true) };
        let second = rare_page(&staff, 3, None);
        assert_eq!((second.count, titles(&second)), (10, rare_titled(&[303, 404, 505])));
        assert_eq!(titles(&rare_page(&bob_reads, 3, None)), rare_titled(&[404, 505, 707]));
        let position = |post: &Post| Some((SortKey::of(post, PostOrderingField::Title), post.id));
        let after = rare_page(&staff, 0, Some(Keyset { position: position(&second.items[2]), backwards: false }));
        assert_eq!(titles(&after), rare_titled(&[606, 707, 808]));
        let before = rare_page(&staff, 0, Some(Keyset { position: position(&second.items[0]), backwards: true }));
        assert_eq!(titles(&before), rare_titled(&[0, 101, 202]));
    }

    fn status_counters_follow_every_write_and_match_a_real_count(test_db) {
        let db = test_db.migrated();
        let mut conn = db.get().unwrap();
        let ann = user(&mut conn, "ann@example.com", false);
        let boss = user(&mut conn, "boss@example.com", true);
        let mut posts = Vec::new();
        for i in 0..6 {
            let status = if i % 2 == 0 { PostStatus::Draft } else { PostStatus::Published };
            posts.push(PostRepository::create(&mut conn, &ann.as_author(), new_post(&format!("p{i}"), status), now()).unwrap().0);
        }
        let publish = PostChanges { status: Some(PostStatus::Published), ..PostChanges::default() };
        PostRepository::update(&mut conn, &posts[0], publish.clone(), now()).unwrap();
        let (republished, _) = PostRepository::update(&mut conn, &posts[1], publish, now()).unwrap();
        PostRepository::delete(&mut conn, &posts[2], now()).unwrap();
        PostRepository::delete(&mut conn, &republished, now()).unwrap();
        // A failed write moves no counter.
        let author = ann.as_author();
        let _ = db.write_blocking(move |c| {
            PostRepository::create(c, &author, new_post("rolled back", PostStatus::Published), now())?;
            Err::<(), _>(PersistenceError::NotFound)
        });
        let real = |status: &str| {
            newspaper_persistence::schema::posts::table
                .filter(newspaper_persistence::schema::posts::status.eq(status))
                .count()
                .get_result::<i64>(&mut db.get().unwrap())
                .unwrap()
        };
        let counts = PostRepository::count_by_status(&mut conn).unwrap();
        assert_eq!((counts.draft, counts.published), (real("draft"), real("published")));
        assert_eq!((counts.draft, counts.published), (1, 3));
        let staff = Viewer::User { id: boss.id, is_staff: true };
        let anon = PostRepository::list_visible_to(&mut conn, &Viewer::Anonymous, &PostQuery::default()).unwrap();
        assert_eq!(anon.count, 3);
        assert_eq!(PostRepository::list_visible_to(&mut conn, &staff, &PostQuery::default()).unwrap().count, 4);
        let drafts = PostQuery { status: Some(PostStatus::Draft), ..PostQuery::default() };
        assert_eq!(PostRepository::list_visible_to(&mut conn, &staff, &drafts).unwrap().count, 1);
        assert_eq!(PostRepository::list_visible_to(&mut conn, &Viewer::Anonymous, &drafts).unwrap().count, 0);
        let author = Viewer::User { id: ann.id, is_staff: false };
        assert_eq!(PostRepository::list_visible_to(&mut conn, &author, &PostQuery::default()).unwrap().count, 4);
    }

    fn every_count_is_read_from_counters_that_match_a_real_count(test_db) {
        let db = test_db.migrated();
        let mut conn = db.get().unwrap();
        let ann = user(&mut conn, "ann@example.com", false);
        let bob = user(&mut conn, "bob@example.com", false);
        let boss = user(&mut conn, "boss@example.com", true);
        let mut posts = Vec::new();
        for i in 0..12 {
            let (who, status) = match i % 4 {
                0 => (&ann, PostStatus::Draft),
                1 | 2 => (&ann, PostStatus::Published),
                _ => (&bob, if i == 3 { PostStatus::Draft } else { PostStatus::Published }),
            };
            posts.push(PostRepository::create(&mut conn, &who.as_author(), new_post(&format!("p{i}"), status), now()).unwrap().0);
        }
        let publish = PostChanges { status: Some(PostStatus::Published), ..PostChanges::default() };
        PostRepository::update(&mut conn, &posts[0], publish, now()).unwrap();
        let retitle = PostChanges { title: Some(PostTitle::parse("renamed").unwrap()), ..PostChanges::default() };
        PostRepository::update(&mut conn, &posts[1], retitle, now()).unwrap();
        PostRepository::delete(&mut conn, &posts[3], now()).unwrap();
        PostRepository::delete(&mut conn, &posts[5], now()).unwrap();
        let visible = |viewer: &Viewer, post: &Post| viewer.can_see(post.author.id, post.status);
        let everything = PostRepository::list_visible_to(&mut conn, &Viewer::User { id: boss.id, is_staff: true }, &PostQuery { limit: 100, ..PostQuery::default() }).unwrap().items;
        assert_eq!(everything.len(), 10);
        let viewers = [Viewer::Anonymous, Viewer::User { id: ann.id, is_staff: false }, Viewer::User { id: bob.id, is_staff: false }, Viewer::User { id: boss.id, is_staff: true }];
        for viewer in &viewers {
            for status in [None, Some(PostStatus::Draft), Some(PostStatus::Published)] {
                for author in [None, Some(ann.id), Some(bob.id), Some(boss.id)] {
                    let query = PostQuery { status, author, limit: 0, ..PostQuery::default() };
                    let (page, access) = newspaper_persistence::testing::access_of(&mut conn, |conn| PostRepository::list_visible_to(conn, viewer, &query).unwrap());
                    let real = everything.iter().filter(|p| visible(viewer, p) && status.is_none_or(|s| s == p.status) && author.is_none_or(|a| a == p.author.id)).count();
                    assert_eq!(page.count, real as u64, "{viewer:?} {status:?} {author:?}");
                    assert!(!access.full_scans.contains("posts") && !access.indexes.iter().any(|i| i.starts_with("posts")), "counted from the counters: {access:#?}");
                }
            }
        }
        // A head read once serves the lists of its reader and author; any other list reads its
        // own counters again rather than use the wrong ones.
        let head = PostRepository::read_head(&mut conn, Some(ann.id), Some(ann.id)).unwrap();
        assert_eq!(head.reader.as_ref().map(|r| r.user.id), Some(ann.id));
        assert_eq!(head.seq, OutboxRepository::latest_seq(&mut conn).unwrap());
        for viewer in &viewers {
            for author in [None, Some(ann.id), Some(bob.id)] {
                let query = PostQuery { author, limit: 0, ..PostQuery::default() };
                let at_head = PostRepository::list_at(&mut conn, viewer, &head, &query).unwrap().count;
                let alone = PostRepository::list_visible_to(&mut conn, viewer, &query).unwrap().count;
                assert_eq!(at_head, alone, "{viewer:?} {author:?}");
            }
        }
        let nobody = PostRepository::read_head(&mut conn, Some(UserId(i64::MAX)), None).unwrap();
        assert!(nobody.reader.is_none());
        assert_eq!(nobody.seq, head.seq);
        // Heads read together (one statement on PostgreSQL) are each the head read alone.
        let readers = [None, Some(ann.id), Some(bob.id), Some(boss.id), Some(UserId(i64::MAX))];
        let asked: Vec<_> = readers.into_iter().flat_map(|r| [None, Some(ann.id), Some(bob.id)].map(move |a| (r, a))).collect();
        let together = PostRepository::read_heads(&mut conn, &asked).unwrap();
        assert_eq!(together.len(), asked.len());
        for (&(reader, author), head) in asked.iter().zip(&together) {
            let alone = PostRepository::read_head(&mut conn, reader, author).unwrap();
            assert_eq!(head.seq, alone.seq);
            let account = |h: &newspaper_persistence::ReadHead| h.reader.as_ref().map(|r| (r.user.clone(), r.password_hash.clone()));
            assert_eq!(account(head), account(&alone), "{reader:?}");
            let Some(viewer) = viewers.iter().find(|v| v.user_id() == reader) else { continue };
            assert_eq!(head.visibility_of(viewer), alone.visibility_of(viewer), "{reader:?} {author:?}");
            let query = PostQuery { author, limit: 0, ..PostQuery::default() };
            let at_head = PostRepository::list_at(&mut conn, viewer, head, &query).unwrap().count;
            let fresh = PostRepository::list_visible_to(&mut conn, viewer, &query).unwrap().count;
            assert_eq!(at_head, fresh, "{viewer:?} {author:?}");
        }
        assert!(PostRepository::read_heads(&mut conn, &[]).unwrap().is_empty());
    }

    fn every_list_variant_reads_its_page_from_an_index_in_order(test_db) {
        let db = test_db.migrated();
        let mut conn = db.get().unwrap();
        let ann = user(&mut conn, "ann@example.com", false);
        let bob = user(&mut conn, "bob@example.com", false);
        let boss = user(&mut conn, "boss@example.com", true);
        let carol = user(&mut conn, "carol@example.com", false);
        for i in 0..300 {
            let status = if i % 10 == 0 { PostStatus::Draft } else { PostStatus::Published };
            let who = if i % 7 == 0 { &bob } else { &ann };
            PostRepository::create(&mut conn, &who.as_author(), new_post(&format!("Post {}", (i * 37) % 300), status), at(i)).unwrap();
        }
        if let DbConnection::Postgres(_) = &*conn {
            diesel::sql_query("VACUUM ANALYZE posts").execute(&mut *conn).unwrap();
        }
        // Carol has no drafts: she sees what the public sees, read from the status indexes.
        let viewers = [Viewer::Anonymous, Viewer::User { id: ann.id, is_staff: false }, Viewer::User { id: bob.id, is_staff: false }, Viewer::User { id: boss.id, is_staff: true }, Viewer::User { id: carol.id, is_staff: false }];
        let orderings = [("created", PostOrderingField::CreatedAt), ("updated", PostOrderingField::UpdatedAt), ("title", PostOrderingField::Title)];
        for viewer in &viewers {
            for (name, field) in orderings {
                for descending in [false, true] {
                    for (status, author) in [(None, None), (Some(PostStatus::Draft), None), (Some(PostStatus::Published), None), (None, Some(ann.id)), (Some(PostStatus::Published), Some(ann.id))] {
                        for (offset, keyset) in [(0, None), (150, None), (0, Some(Keyset { position: None, backwards: true }))] {
                            let query = PostQuery { status, author, ordering: vec![PostOrdering { field, descending }], offset, limit: 10, keyset, ..PostQuery::default() };
                            let (page, access) = newspaper_persistence::testing::access_of(&mut conn, |conn| PostRepository::list_visible_to(conn, viewer, &query).unwrap());
                            let what = format!("{viewer:?} {query:?}: {access:#?}");
                            assert!(page.items.len() <= 10, "{what}");
                            assert!(!access.full_scans.contains("posts"), "{what}");
                            assert_eq!(access.sorts, 0, "{what}");
                            // Rows are read for the page only: the rows a page skips and the
                            // filters' tests are answered from the index.
                            let fetched = access.rows_fetched.get("posts").copied().unwrap_or(0);
                            assert!(fetched <= page.items.len() as i64, "{fetched} rows fetched; {what}");
                            // (PostgreSQL reads nothing at all for a contradiction such as an
                            // anonymous reader's drafts.)
                            if !page.items.is_empty() {
                                assert!(access.indexes.iter().any(|i| i.starts_with("posts_") && i.contains(name)), "{what}");
                            }
                        }
                    }
                }
            }
        }
        // A page deep in the list and its neighbours by cursor agree with the numbered pages.
        let viewer = Viewer::User { id: ann.id, is_staff: false };
        let by_title = vec![PostOrdering { field: PostOrderingField::Title, descending: true }];
        let numbered = PostRepository::list_visible_to(&mut conn, &viewer, &PostQuery { ordering: by_title.clone(), offset: 100, limit: 20, ..PostQuery::default() }).unwrap().items;
        let position = |post: &Post| Some((SortKey::of(post, PostOrderingField::Title), post.id));
        let (after, access) = newspaper_persistence::testing::access_of(&mut conn, |conn| PostRepository::list_visible_to(conn, &viewer, &PostQuery { ordering: by_title.clone(), limit: 10, keyset: Some(Keyset { position: position(&numbered[9]), backwards: false }), ..PostQuery::default() }).unwrap());
        assert!(access.indexes.contains("posts_title_idx") && access.sorts == 0 && !access.full_scans.contains("posts"), "{access:#?}");
        assert_eq!(after.items.iter().map(|p| p.id).collect::<Vec<_>>(), numbered[10..].iter().map(|p| p.id).collect::<Vec<_>>());
        let before = PostRepository::list_visible_to(&mut conn, &viewer, &PostQuery { ordering: by_title, limit: 10, keyset: Some(Keyset { position: position(&numbered[10]), backwards: true }), ..PostQuery::default() }).unwrap();
        assert_eq!(before.items.iter().map(|p| p.id).collect::<Vec<_>>(), numbered[..10].iter().map(|p| p.id).collect::<Vec<_>>());
    }

    fn the_publishing_lease_has_one_holder_until_it_expires(test_db) {
        let db = test_db.migrated();
        let mut conn = db.get().unwrap();
        let t0 = now();
        assert!(OutboxRepository::acquire_lease(&mut conn, "a", t0 + Duration::seconds(10), t0).unwrap());
        assert!(OutboxRepository::acquire_lease(&mut conn, "a", t0 + Duration::seconds(20), t0).unwrap(), "renewal");
        assert!(!OutboxRepository::acquire_lease(&mut conn, "b", t0 + Duration::seconds(10), t0).unwrap());
        assert!(!OutboxRepository::mark_published(&mut conn, Seq(5), Some("b")).unwrap());
        assert!(OutboxRepository::mark_published(&mut conn, Seq(5), Some("a")).unwrap());
        assert_eq!(OutboxRepository::state(&mut conn).unwrap().published, Seq(5));
        assert!(OutboxRepository::mark_published(&mut conn, Seq(5), Some("a")).unwrap(), "still the leader when nothing moved");
        assert!(OutboxRepository::mark_published(&mut conn, Seq(3), Some("a")).unwrap());
        assert_eq!(OutboxRepository::state(&mut conn).unwrap().published, Seq(5), "never moves back");
        let later = t0 + Duration::seconds(30);
        assert!(OutboxRepository::acquire_lease(&mut conn, "b", later + Duration::seconds(10), later).unwrap(), "expired lease is taken over");
        OutboxRepository::release_lease(&mut conn, "a").unwrap();
        assert_eq!(OutboxRepository::state(&mut conn).unwrap().leader.as_deref(), Some("b"));
        OutboxRepository::release_lease(&mut conn, "b").unwrap();
        assert_eq!(OutboxRepository::state(&mut conn).unwrap().leader, None);
        assert!(OutboxRepository::acquire_lease(&mut conn, "a", t0 + Duration::seconds(10), t0).unwrap());
    }

    fn pruning_keeps_unpublished_recent_and_newest_events(test_db) {
        let db = test_db.migrated();
        let mut conn = db.get().unwrap();
        let ann = user(&mut conn, "ann@example.com", false);
        let old = now() - Duration::days(3);
        let mut seqs = Vec::new();
        for i in 0..6 {
            let when = if i < 4 { old } else { now() };
            seqs.push(PostRepository::create(&mut conn, &ann.as_author(), new_post(&format!("p{i}"), PostStatus::Published), when).unwrap().1);
        }
        let cutoff = now() - Duration::days(1);
        // Nothing published yet: nothing may go.
        assert_eq!(OutboxRepository::prune(&mut conn, cutoff, 1).unwrap(), 0);
        OutboxRepository::mark_published(&mut conn, seqs[2], None).unwrap();
        // Old and published: seqs[0..=2]; seqs[3] is old but unpublished.
        assert_eq!(OutboxRepository::prune(&mut conn, cutoff, 1).unwrap(), 3);
        let state = OutboxRepository::state(&mut conn).unwrap();
        assert_eq!(state.pruned, seqs[2]);
        OutboxRepository::mark_published(&mut conn, seqs[5], None).unwrap();
        // keep_last = 3 protects seqs[3..]; the recent ones are protected by age anyway.
        assert_eq!(OutboxRepository::prune(&mut conn, cutoff, 3).unwrap(), 0);
        assert_eq!(OutboxRepository::prune(&mut conn, cutoff, 0).unwrap(), 1);
        let left: BTreeSet<Seq> = OutboxRepository::list_after(&mut conn, Seq(0), 100).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(left, BTreeSet::from([seqs[4], seqs[5]]));
        assert_eq!(OutboxRepository::latest_seq(&mut conn).unwrap(), seqs[5]);
    }

    fn refresh_tokens_are_blacklisted_once(test_db) {
        let db = test_db.migrated();
        let mut conn = db.get().unwrap();
        let ann = user(&mut conn, "ann@example.com", false);
        assert!(!RefreshTokenRepository::is_blacklisted(&mut conn, "j1").unwrap());
        assert!(RefreshTokenRepository::blacklist(&mut conn, "j1", ann.id, at(60), now()).unwrap());
        assert!(!RefreshTokenRepository::blacklist(&mut conn, "j1", ann.id, at(60), now()).unwrap());
        assert!(RefreshTokenRepository::is_blacklisted(&mut conn, "j1").unwrap());
        RefreshTokenRepository::blacklist(&mut conn, "j2", ann.id, at(-60), now()).unwrap();
        assert_eq!(RefreshTokenRepository::prune_expired(&mut conn, now()).unwrap(), 1);
        assert!(RefreshTokenRepository::is_blacklisted(&mut conn, "j1").unwrap());
    }

    fn concurrent_writers_neither_fail_nor_reorder_the_outbox(test_db) {
        // Eight writers and one reader that follows the outbox like the dispatcher does. The
        // reader must never see a seq appear below one it has already passed.
        let db = test_db.migrated();
        let ann = db.write_blocking(|conn| Ok::<_, PersistenceError>(user(conn, "ann@example.com", false))).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (db, stop) = (db.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut last = Seq(0);
                loop {
                    let done = stop.load(std::sync::atomic::Ordering::SeqCst);
                    let mut conn = db.get().unwrap();
                    for event in OutboxRepository::list_after(&mut conn, last, 1000).unwrap() {
                        last = event.seq;
                        seen.push(event.seq);
                    }
                    let everything: Vec<Seq> = OutboxRepository::list_after(&mut conn, Seq(0), 100_000).unwrap().into_iter().map(|e| e.seq).filter(|s| *s <= last).collect();
                    assert_eq!(everything, seen, "an event committed behind the reader's position");
                    if done { return seen.len(); }
                }
            })
        };
        let writers: Vec<_> = (0..8).map(|w| {
            let (db, author) = (db.clone(), ann.as_author());
            std::thread::spawn(move || {
                for i in 0..40 {
                    let author = author.clone();
                    db.write_blocking(move |conn| PostRepository::create(conn, &author, new_post(&format!("w{w}-{i}"), PostStatus::Published), now())).unwrap();
                }
            })
        }).collect();
        for w in writers { w.join().unwrap(); }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(reader.join().unwrap(), 320);
    }
}

newspaper_persistence::backend_tests! {
    fn logging_in_finds_the_user_through_the_email_index(test_db) {
        let db = test_db.migrated();
        let mut conn = db.get().unwrap();
        for i in 0..50 {
            user(&mut conn, &format!("user{i}@example.com"), false);
        }
        let email = Email::parse("User7@Example.com").unwrap();
        let (found, access) = newspaper_persistence::testing::access_of(&mut conn, |conn| {
            UserRepository::find_by_email(conn, &email).unwrap()
        });
        assert_eq!(found.unwrap().user.email, "user7@example.com");
        assert!(access.indexes.contains(UserRepository::EMAIL_CONSTRAINT), "{access:#?}");
        assert!(!access.full_scans.contains("users"), "{access:#?}");
    }
}

/// While the database cannot take writes, they queue up to the limit and the rest fail at once;
/// a write nobody waits for any more never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_write_queue_refuses_at_once_and_abandoned_writes_never_run() {
    use diesel::connection::SimpleConnection;
    let test_db = newspaper_persistence::testing::TestDatabase::sqlite();
    test_db.migrated();
    let options = PoolOptions {
        write_queue: 1,
        connection_timeout: std::time::Duration::from_millis(300),
        ..PoolOptions::for_backend(test_db.url().backend())
    };
    let db = Database::connect(test_db.url(), options).unwrap();
    let mut other =
        diesel::SqliteConnection::establish(test_db.url().as_connection_string()).unwrap();
    other.batch_execute("BEGIN IMMEDIATE").unwrap();
    let write = |email: &'static str| {
        let db = db.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let outcome =
                db.write(move |conn| Ok::<_, PersistenceError>(user(conn, email, false))).await;
            (outcome.map(|_| ()), started.elapsed())
        })
    };
    let attempts = [write("a@example.com"), write("b@example.com"), write("c@example.com")];
    let mut full = 0;
    for attempt in attempts {
        let (outcome, took) = attempt.await.unwrap();
        match outcome {
            Err(PersistenceError::Unavailable { reason: why, .. })
                if why.contains("queue is full") =>
            {
                full += 1;
                assert!(
                    took < std::time::Duration::from_millis(250),
                    "refused at once, not after {took:?}"
                );
            }
            Err(PersistenceError::Unavailable { reason: why, .. }) => {
                assert!(why.contains("did not take the write in time"), "{why}")
            }
            other => panic!("expected unavailable, got {other:?}"),
        }
    }
    assert!(full >= 1, "with room for one, three writes cannot all queue");
    other.batch_execute("ROLLBACK").unwrap();
    // The writer drains the abandoned jobs (without running them), then writes again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while let Err(err) =
        db.write(|conn| Ok::<_, PersistenceError>(user(conn, "d@example.com", false))).await
    {
        assert!(std::time::Instant::now() < deadline, "never wrote again: {err}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut conn = db.get().unwrap();
    for email in ["a@example.com", "b@example.com", "c@example.com"] {
        let email = Email::parse(email).unwrap();
        assert!(
            UserRepository::find_by_email(&mut conn, &email).unwrap().is_none(),
            "{email} was written after all"
        );
    }
}

/// Connections the server dropped while they sat in the pool (a restart, an idle timeout, an
/// administrator) fail no read: tested before use after a quiet spell, and found dead and
/// replaced, the read run again, when the server answered a moment ago.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_outlive_connections_the_server_dropped() {
    use newspaper_persistence::testing::TestDatabase;
    let Some(test_db) = TestDatabase::postgres_from_env() else { return };
    test_db.migrated();
    let name = test_db.url().as_connection_string().rsplit('/').next().unwrap().to_owned();
    let server = TestDatabase::postgres_server_url().unwrap();
    let mut admin = diesel::PgConnection::establish(&server).unwrap();
    #[derive(QueryableByName)]
    struct Terminated {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    // Both ways of trusting pooled connections: never without a test, and always (within the
    // hour) once the server has answered.
    for test_idle_after in [std::time::Duration::ZERO, std::time::Duration::from_secs(3600)] {
        // One connection, so that the reads after the kill certainly meet a dropped one.
        let options = PoolOptions {
            max_size: 1,
            test_idle_after,
            ..PoolOptions::for_backend(test_db.url().backend())
        };
        let db = Database::connect(test_db.url(), options).unwrap();
        db.read(OutboxRepository::latest_seq).await.unwrap();
        let killed: Terminated = diesel::sql_query(format!(
            "SELECT count(pg_terminate_backend(pid, 5000)) AS n FROM pg_stat_activity \
             WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        ))
        .get_result(&mut admin)
        .unwrap();
        assert!(killed.n >= 1, "no connection to drop");
        for _ in 0..8 {
            let seq = db.read(OutboxRepository::latest_seq).await;
            assert!(seq.is_ok(), "trusted for {test_idle_after:?}: {seq:?}");
        }
        let page = db
            .read_snapshot(|conn| {
                PostRepository::list_visible_to(conn, &Viewer::Anonymous, &PostQuery::default())
            })
            .await;
        assert!(page.is_ok(), "{page:?}");
    }
}

/// Queues creates by `authors` behind a write that holds the writer, so that they all meet
/// in its next batch, in this order; returns their outcomes.
async fn create_in_one_batch(
    db: &Database,
    authors: Vec<newspaper_domain::AuthorRef>,
) -> Vec<Result<(Post, Seq), PersistenceError>> {
    let (started, writer_busy) = std::sync::mpsc::channel::<()>();
    let (release, held) = std::sync::mpsc::channel::<()>();
    let holder = {
        let db = db.clone();
        tokio::spawn(async move {
            db.write(move |_| {
                started.send(()).unwrap();
                held.recv().unwrap();
                Ok::<_, PersistenceError>(())
            })
            .await
        })
    };
    tokio::task::spawn_blocking(move || writer_busy.recv().unwrap()).await.unwrap();
    let mut creates = Vec::new();
    for (i, author) in authors.into_iter().enumerate() {
        let db2 = db.clone();
        let title = format!("{}-{i}", author.username);
        creates.push(tokio::spawn(async move {
            db2.create_post(author, new_post(&title, PostStatus::Published), now()).await
        }));
        // Queued in this order: wait until this one is in the queue before the next. A job is
        // counted only once sent, and the holder's count is 0 or -1 by now, so i + 1 counted
        // means creates 0..=i are all in the queue.
        while db.stats().write_queue < i + 1 {
            tokio::task::yield_now().await;
        }
    }
    release.send(()).unwrap();
    holder.await.unwrap().unwrap();
    let mut outcomes = Vec::new();
    for create in creates {
        outcomes.push(create.await.unwrap());
    }
    outcomes
}

/// The creates that meet in one batch of the writer are written together (one statement on
/// PostgreSQL), in the order they were queued; one that fails (an author who does not exist)
/// fails alone, and the others are created with their events as if each had run by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_creates_keeps_their_order_and_a_failing_one_fails_alone() {
    use newspaper_domain::AuthorRef;
    use newspaper_persistence::testing::TestDatabase;
    let databases = [Some(TestDatabase::sqlite()), TestDatabase::postgres_from_env()];
    for test_db in databases.into_iter().flatten() {
        let db = test_db.migrated();
        let ann = db
            .write(|conn| Ok::<_, PersistenceError>(user(conn, "ann@example.com", false)))
            .await
            .unwrap();
        let nobody = AuthorRef { id: UserId(i64::MAX), username: "nobody".into() };
        let rounds = [
            vec![ann.as_author(); 3],
            vec![ann.as_author(), ann.as_author(), nobody, ann.as_author(), ann.as_author()],
        ];
        for authors in rounds {
            let before = OutboxRepository::latest_seq(&mut db.get().unwrap()).unwrap();
            let published_before =
                PostRepository::count_by_status(&mut db.get().unwrap()).unwrap().published;
            let expected: Vec<String> = authors
                .iter()
                .enumerate()
                .filter(|(_, a)| a.id == ann.id)
                .map(|(i, a)| format!("{}-{i}", a.username))
                .collect();
            let outcomes = create_in_one_batch(&db, authors.clone()).await;
            for (author, outcome) in authors.iter().zip(&outcomes) {
                assert_eq!(outcome.is_ok(), author.id == ann.id, "{outcome:?}");
            }
            let created: Vec<(Post, Seq)> = outcomes.into_iter().filter_map(Result::ok).collect();
            assert_eq!(created.iter().map(|(p, _)| p.title.clone()).collect::<Vec<_>>(), expected);
            let seqs: Vec<Seq> = created.iter().map(|(_, seq)| *seq).collect();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]) && seqs[0] > before, "{seqs:?}");
            let mut conn = db.get().unwrap();
            let events = OutboxRepository::list_after(&mut conn, before, 100).unwrap();
            let told: Vec<(Seq, PostId)> =
                events.iter().map(|e| (e.seq, e.change.post().unwrap().post_id)).collect();
            assert_eq!(told, created.iter().map(|(p, seq)| (*seq, p.id)).collect::<Vec<_>>());
            for (post, _) in &created {
                assert_eq!(PostRepository::find(&mut conn, post.id).unwrap().as_ref(), Some(post));
            }
            let published = PostRepository::count_by_status(&mut conn).unwrap().published;
            assert_eq!(published, published_before + created.len() as i64);
        }
    }
}

/// Head reads that arrive together share a trip to the database (one statement on
/// PostgreSQL), yet each caller is answered for its own account, at a head no older than
/// what was committed before it asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_reads_made_together_each_answer_their_own_reader() {
    use newspaper_persistence::testing::TestDatabase;
    let backends = [Some(TestDatabase::sqlite()), TestDatabase::postgres_from_env()];
    for test_db in backends.into_iter().flatten() {
        let db = test_db.migrated();
        let users: Vec<User> = {
            let mut conn = db.get().unwrap();
            (0..24).map(|i| user(&mut conn, &format!("u{i}@example.com"), i == 0)).collect()
        };
        for round in 0..6 {
            let draft = new_post(&format!("draft {round}"), PostStatus::Draft);
            let (_, written) =
                db.create_post(users[round].as_author(), draft, now()).await.unwrap();
            let readers = users.iter().map(|u| Some(u.id)).chain([None, Some(UserId(i64::MAX))]);
            let reads: Vec<_> = readers
                .map(|reader| {
                    let db = db.clone();
                    tokio::spawn(async move { (reader, db.read_head(reader, None).await) })
                })
                .collect();
            for read in reads {
                let (reader, head) = read.await.unwrap();
                let head = head.unwrap();
                assert!(head.seq >= written, "{reader:?} read {:?}, before {written:?}", head.seq);
                let Some(at) = users.iter().position(|u| Some(u.id) == reader) else {
                    assert!(head.reader.is_none(), "{reader:?} has no account");
                    continue;
                };
                assert_eq!(head.reader.as_ref().map(|r| r.user.id), reader);
                let viewer = Viewer::User { id: users[at].id, is_staff: users[at].is_staff };
                let expected = match at {
                    0 => Visibility::Everything,
                    at if at <= round => Visibility::PublishedAndDraftsOf(users[at].id),
                    _ => Visibility::Published,
                };
                assert_eq!(head.visibility_of(&viewer), expected, "user {at}, round {round}");
            }
        }
    }
}
