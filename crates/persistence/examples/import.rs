//! A batch job on `newspaper-persistence` alone: imports posts from a JSON file into the
//! newspaper's database in one transaction — all of them or none — with no HTTP involved.
//! Every post gets its `post_created` event in the same transaction, so servers running on that
//! database publish them to their live clients (within their poll interval), as if the posts
//! had been written through the API.
//!
//! ```text
//! cargo run -p newspaper-persistence --example import -- --database-url newspaper.db posts.json
//! ```
//!
//! `posts.json` is a list of posts by existing users:
//!
//! ```json
//! [{"author": "ann@example.com", "title": "Hello", "content": "…", "status": "published"}]
//! ```
//!
//! `content` defaults to empty and `status` to `draft`. Every post is checked with the same
//! rules as the API before anything is written; any problem is reported (with the post's
//! position) and nothing is imported.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use newspaper_domain::{AuthorRef, Email, PostStatus, PostTitle, now, parse_content};
use newspaper_persistence::{
    Database, DatabaseUrl, NewPost, PersistenceError, PoolOptions, PostRepository, UserRepository,
};
use serde::Deserialize;

/// Import posts from a JSON file, in one transaction.
#[derive(Parser)]
struct Args {
    /// The newspaper's database: an SQLite path or a postgres:// URL.
    #[arg(long, env = "NEWSPAPER_DATABASE_URL", default_value = "newspaper.db")]
    database_url: String,
    /// The JSON file: a list of `{author, title, content?, status?}`.
    file: PathBuf,
}

/// One post as the file gives it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    author: String,
    title: String,
    #[serde(default)]
    content: String,
    #[serde(default)]
    status: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let entries: Vec<Entry> = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a list of posts", args.file.display()))?;

    let url = DatabaseUrl::parse(&args.database_url)?;
    let db = Database::connect(&url, PoolOptions::for_backend(url.backend()))?;
    db.run_migrations()?;

    // Check everything first: the import is all or nothing.
    let mut authors: HashMap<String, AuthorRef> = HashMap::new();
    let mut posts = Vec::with_capacity(entries.len());
    let mut problems = Vec::new();
    let mut conn = db.get()?;
    for (n, entry) in entries.into_iter().enumerate() {
        let position = n + 1;
        let author = match Email::parse(&entry.author) {
            Ok(email) => match authors.get(email.as_str()) {
                Some(author) => Some(author.clone()),
                None => match UserRepository::find_by_email(&mut conn, &email)? {
                    Some(record) => {
                        let author = record.user.as_author();
                        authors.insert(email.as_str().to_owned(), author.clone());
                        Some(author)
                    }
                    None => {
                        problems.push(format!("post {position}: no user has the email {email}"));
                        None
                    }
                },
            },
            Err(e) => {
                problems.push(format!("post {position}: author: {e}"));
                None
            }
        };
        let title = PostTitle::parse(&entry.title)
            .map_err(|e| problems.push(format!("post {position}: title: {e}")))
            .ok();
        let content = parse_content(&entry.content)
            .map_err(|e| problems.push(format!("post {position}: content: {e}")))
            .ok();
        let status = match entry.status.as_deref() {
            None => Some(PostStatus::Draft),
            Some(raw) => raw
                .parse::<PostStatus>()
                .map_err(|e| problems.push(format!("post {position}: status: {e}")))
                .ok(),
        };
        if let (Some(author), Some(title), Some(content), Some(status)) =
            (author, title, content, status)
        {
            posts.push((author, NewPost { title, content, status }));
        }
    }
    drop(conn);
    if !problems.is_empty() {
        bail!("nothing imported:\n  {}", problems.join("\n  "));
    }

    // One closure, one transaction: each post and its event, or nothing at all.
    let count = posts.len();
    let seqs = db.write_blocking(move |conn| {
        let at = now();
        posts
            .into_iter()
            .map(|(author, post)| PostRepository::create(conn, &author, post, at).map(|(_, s)| s))
            .collect::<Result<Vec<_>, PersistenceError>>()
    })?;
    match (seqs.first(), seqs.last()) {
        (Some(first), Some(last)) => {
            println!("imported {count} posts (feed events {} to {})", first.0, last.0)
        }
        _ => println!("imported 0 posts"),
    }
    Ok(())
}
