//! The dispatcher against a real database and a real channel layer: pending events survive a
//! crash, are published in order exactly once, and only the lease holder publishes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use newspaper_api::RealtimeSettings;
use newspaper_api::realtime::{
    BLOG_FEED_GROUP, DispatchMode, Dispatcher, FeedEnvelope, LayerMessage, Realtime, user_group,
};
use newspaper_domain::{
    AuthorRef, Email, PostStatus, PostTitle, RevocationReason, Seq, UserId, Username, now,
};
use newspaper_events::{ChannelLayer, ChannelReceiver, GroupName, InMemoryChannelLayer};
use newspaper_persistence::testing::TestDatabase;
use newspaper_persistence::{
    Database, NewPost, NewUser, OutboxRepository, PostRepository, UserRepository,
};

fn settings() -> RealtimeSettings {
    RealtimeSettings {
        dispatch_poll_interval: Duration::from_millis(50),
        dispatch_lease: Duration::from_millis(600),
        ..RealtimeSettings::default()
    }
}

async fn author(db: &Database) -> AuthorRef {
    db.write(|conn| {
        let email = Email::parse("ann@example.com").unwrap();
        UserRepository::create(
            conn,
            &NewUser {
                email: &email,
                username: &Username::from_email(&email),
                password_hash: "x",
                is_staff: false,
                date_joined: now(),
            },
        )
    })
    .await
    .unwrap()
    .as_author()
}

async fn commit(db: &Database, author: &AuthorRef, title: &str) -> Seq {
    let (title, author) = (title.to_owned(), author.clone());
    db.write(move |conn| {
        let new = NewPost {
            title: PostTitle::parse(&title).unwrap(),
            content: String::new(),
            status: PostStatus::Published,
        };
        PostRepository::create(conn, &author, new, now()).map(|(_, seq)| seq)
    })
    .await
    .unwrap()
}

/// A dispatcher with exclusive publishing, running until its `Realtime` shuts down.
fn start_dispatcher(
    db: &Database,
    layer: &InMemoryChannelLayer,
    settings: RealtimeSettings,
) -> (Realtime, tokio::task::JoinHandle<()>) {
    let realtime = Realtime::new("test".into(), false);
    let dispatcher = Dispatcher::new(
        db.clone(),
        Arc::new(layer.clone()),
        realtime.clone(),
        DispatchMode::Exclusive,
        settings,
    );
    (realtime, tokio::spawn(dispatcher.run()))
}

async fn member_of(layer: &InMemoryChannelLayer, group: &str) -> ChannelReceiver {
    let rx = layer.new_channel().await.unwrap();
    layer.group_add(&GroupName::new(group).unwrap(), rx.name()).await.unwrap();
    rx
}

async fn member(layer: &InMemoryChannelLayer) -> ChannelReceiver {
    member_of(layer, BLOG_FEED_GROUP).await
}

async fn next_message(rx: &mut ChannelReceiver) -> LayerMessage {
    let bytes = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("nothing published")
        .unwrap();
    LayerMessage::decode(&bytes).unwrap().into_owned()
}

async fn next(rx: &mut ChannelReceiver) -> FeedEnvelope {
    match next_message(rx).await {
        LayerMessage::Feed(envelope) => envelope,
        other => panic!("not a post event: {other:?}"),
    }
}

async fn nothing(rx: &mut ChannelReceiver) {
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv()).await.is_err(),
        "published twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_committed_before_a_crash_are_published_in_order_at_startup() {
    let test_db = TestDatabase::sqlite();
    let db = test_db.migrated();
    let ann = author(&db).await;
    // Committed while no dispatcher ran (it crashed after the commits, before publishing).
    let mut seqs = Vec::new();
    for i in 0..5 {
        seqs.push(commit(&db, &ann, &format!("p{i}")).await);
    }
    assert_eq!(db.read(OutboxRepository::state).await.unwrap().published, Seq(0));

    let layer = InMemoryChannelLayer::default();
    let mut rx = member(&layer).await;
    let (realtime, task) = start_dispatcher(&db, &layer, settings());
    let mut prev = Seq(0);
    for seq in &seqs {
        let envelope = next(&mut rx).await;
        assert_eq!((envelope.seq, envelope.prev_seq), (*seq, prev));
        prev = *seq;
    }
    // Live commits follow, woken by `committed`.
    let live = commit(&db, &ann, "live").await;
    realtime.committed();
    let envelope = next(&mut rx).await;
    assert_eq!((envelope.seq, envelope.prev_seq), (live, prev));
    nothing(&mut rx).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while db.read(OutboxRepository::state).await.unwrap().published != live {
        assert!(tokio::time::Instant::now() < deadline, "cursor never persisted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    realtime.shutdown();
    task.await.unwrap();

    // A restarted dispatcher starts from the persisted cursor: nothing is published twice.
    let (realtime, task) = start_dispatcher(&db, &layer, settings());
    nothing(&mut rx).await;
    realtime.shutdown();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_backlog_is_published_in_pieces_members_can_absorb() {
    let test_db = TestDatabase::sqlite();
    let db = test_db.migrated();
    let ann = author(&db).await;
    for i in 0..300 {
        commit(&db, &ann, &format!("p{i}")).await;
    }
    let layer = InMemoryChannelLayer::new(newspaper_events::LayerConfig {
        capacity: 20,
        ..Default::default()
    });
    let mut rx = member(&layer).await;
    let (realtime, task) =
        start_dispatcher(&db, &layer, RealtimeSettings { channel_capacity: 20, ..settings() });
    let mut last = Seq(0);
    for _ in 0..300 {
        let envelope = next(&mut rx).await;
        assert_eq!(envelope.prev_seq, last);
        last = envelope.seq;
    }
    assert!(!rx.is_lagging());
    realtime.shutdown();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_lease_only_one_instance_publishes_and_another_takes_over() {
    let test_db = TestDatabase::sqlite();
    let db = test_db.migrated();
    let ann = author(&db).await;
    let layer = InMemoryChannelLayer::default();
    let mut rx = member(&layer).await;
    let spawn = |name: &str| {
        let realtime = Realtime::new(name.into(), true);
        let dispatcher = Dispatcher::new(
            db.clone(),
            Arc::new(layer.clone()),
            realtime.clone(),
            DispatchMode::Leased { instance: name.into() },
            settings(),
        );
        (realtime, tokio::spawn(dispatcher.run()))
    };
    let (a, a_task) = spawn("a");
    let (b, b_task) = spawn("b");
    for i in 0..10 {
        let seq = commit(&db, &ann, &format!("p{i}")).await;
        a.committed();
        b.committed();
        assert_eq!(next(&mut rx).await.seq, seq);
    }
    nothing(&mut rx).await;
    let leader = db.read(OutboxRepository::state).await.unwrap().leader.unwrap();
    let (stopping, stopping_task, surviving) =
        if leader == "a" { (a, a_task, b) } else { (b, b_task, a) };
    stopping.shutdown();
    stopping_task.await.unwrap();
    let seq = commit(&db, &ann, "after failover").await;
    surviving.committed();
    let envelope = next(&mut rx).await;
    assert_eq!(envelope.seq, seq);
    assert_ne!(db.read(OutboxRepository::state).await.unwrap().leader.unwrap(), leader);
    surviving.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_go_to_the_users_group_and_stay_out_of_the_feeds_chain() {
    let test_db = TestDatabase::sqlite();
    let db = test_db.migrated();
    let ann = author(&db).await;
    let layer = InMemoryChannelLayer::default();
    let mut feed = member(&layer).await;
    let mut anns = member_of(&layer, &user_group(ann.id)).await;
    let mut others = member_of(&layer, &user_group(UserId(ann.id.0 + 1))).await;
    let (realtime, task) = start_dispatcher(&db, &layer, settings());
    let before = commit(&db, &ann, "before").await;
    let id = ann.id;
    db.write(move |conn| {
        newspaper_persistence::UserRepository::set_password_hash(
            conn,
            id,
            "new hash",
            RevocationReason::PasswordChanged,
            now(),
        )
    })
    .await
    .unwrap();
    let after = commit(&db, &ann, "after").await;
    realtime.committed();
    assert_eq!(next(&mut feed).await.seq, before);
    let envelope = next(&mut feed).await;
    assert_eq!((envelope.seq, envelope.prev_seq), (after, before), "the revocation is not a gap");
    match next_message(&mut anns).await {
        LayerMessage::Revocation { seq, user } => {
            assert_eq!(user, ann.id);
            assert!(before < seq && seq < after);
        }
        other => panic!("expected a revocation, got {other:?}"),
    }
    nothing(&mut others).await;
    realtime.shutdown();
    task.await.unwrap();
}
