//! A large archive written straight into the database through the persistence layer: what a
//! newsroom accumulates over years, in minutes, for benchmarks of lists at scale.

use std::time::Instant;

use chrono::{Duration, DurationRound, TimeDelta};
use newspaper_domain::{AuthorRef, Email, PostStatus, PostTitle, now};
use newspaper_persistence::{
    Backend, Database, DatabaseUrl, NewPost, OutboxRepository, PersistenceError, PoolOptions,
    PostRepository, Seq, UserRepository,
};

use crate::ArchiveArgs;
use crate::http::seed_content;

/// The existing user with this email, as an author.
fn author(db: &Database, email: &str) -> Result<AuthorRef, String> {
    let email = Email::parse(email).map_err(|e| format!("{email}: {e}"))?;
    let mut conn = db.get().map_err(|e| e.to_string())?;
    match UserRepository::find_by_email(&mut conn, &email).map_err(|e| e.to_string())? {
        Some(record) => Ok(record.user.as_author()),
        None => Err(format!("no user has the email {email}")),
    }
}

pub(crate) fn write(args: &ArchiveArgs) -> Result<(), String> {
    let url = DatabaseUrl::parse(&args.database_url).map_err(|e| e.to_string())?;
    let db = Database::connect(&url, PoolOptions::for_backend(url.backend()))
        .map_err(|e| e.to_string())?;
    db.run_migrations().map_err(|e| e.to_string())?;
    let (main, other) = (author(&db, &args.author)?, author(&db, &args.other)?);
    let batch = args.batch.unwrap_or(match url.backend() {
        Backend::Sqlite => 10_000,
        Backend::Postgres => 1_000,
    });
    // One post a second up to now, on whole seconds: the API's millisecond times are exact.
    let newest = now().duration_trunc(TimeDelta::seconds(1)).map_err(|e| e.to_string())?;
    let first = newest - Duration::seconds(i64::try_from(args.posts).unwrap_or(i64::MAX));
    let started = Instant::now();
    let mut last = Seq(0);
    let mut written = 0;
    while written < args.posts {
        let batch: Vec<(AuthorRef, NewPost, _)> = (written..args.posts.min(written + batch.max(1)))
            .map(|i| {
                let who =
                    if args.other_every > 0 && i % args.other_every == 0 { &other } else { &main };
                let status = if args.drafts_every > 0 && i % args.drafts_every == 1 {
                    PostStatus::Draft
                } else {
                    PostStatus::Published
                };
                // Titles in no particular order, so that ordering by title is its own walk.
                let words = seed_content(i.wrapping_mul(7919), 24, 0);
                let title = PostTitle::parse(&format!("{} {i}", words.trim()))
                    .map_err(|e| format!("post {i}: {e}"))?;
                let content = seed_content(i, args.content_bytes, args.rare_every);
                let at = first + Duration::seconds(i64::try_from(i).unwrap_or(i64::MAX));
                Ok((who.clone(), NewPost { title, content, status }, at))
            })
            .collect::<Result<_, String>>()?;
        let n = batch.len();
        last = db
            .write_blocking(move |conn| {
                let created = PostRepository::create_many(conn, batch)?;
                Ok::<_, PersistenceError>(created.last().map_or(Seq(0), |(_, seq)| *seq))
            })
            .map_err(|e| e.to_string())?;
        written += n;
        eprintln!(
            "archive: {written} posts, {:.0} posts/s",
            written as f64 / started.elapsed().as_secs_f64()
        );
    }
    // Servers started on this database begin at its end of the feed, not by broadcasting the
    // whole archive to nobody.
    let mut conn = db.get().map_err(|e| e.to_string())?;
    OutboxRepository::mark_published(&mut conn, last, None).map_err(|e| e.to_string())?;
    println!(
        "archive: {written} posts in {:.1} s (feed events up to {})",
        started.elapsed().as_secs_f64(),
        last.0
    );
    Ok(())
}
