//! Substring search over titles and contents, as DRF's `icontains`: case-insensitive for all of
//! Unicode, wildcards in the term taken literally, and answered from a trigram index on both
//! backends (SQLite FTS5 `posts_search`, PostgreSQL `pg_trgm` indexes; see the migrations).
//!
//! A trigram index cannot answer a term shorter than three characters; such terms are matched
//! by a scan with the same semantics (on SQLite through [`CASEFOLD_FUNCTION`], since SQLite's
//! own `lower()` and `LIKE` fold ASCII only), which the statement deadline bounds.

use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel::{QueryResult, SqliteConnection};

use crate::schema::posts;
use crate::sql_functions::{FixedSql, cached_by_type, sql_text};
use crate::{DbConnection, PersistenceError};

sql_text! {
    /// Posts whose title or content contains an FTS5 trigram phrase (bound).
    pub(crate) TrigramMatch = [
        "posts.id IN (SELECT rowid FROM posts_search WHERE posts_search MATCH ",
        ")",
    ];
    /// Posts whose case-folded title or content is `LIKE` a pattern that the statement folds by
    /// the same function (bound twice, between the parts): [`CASEFOLD_FUNCTION`], a function of
    /// the server's on SQLite ([`casefold`]) and an SQL function on PostgreSQL (the migration
    /// `search_casefold`), whose expressions its trigram indexes hold, so they answer it.
    pub(crate) CasefoldedLike = [
        "(newspaper_casefold(posts.title) LIKE newspaper_casefold(",
        ") ESCAPE '\\' OR newspaper_casefold(posts.content) LIKE newspaper_casefold(",
        ") ESCAPE '\\')",
    ];
}

/// The SQL function that folds the case of all of Unicode, letter by letter: [`casefold`] on
/// SQLite, its equal in SQL on PostgreSQL.
pub(crate) const CASEFOLD_FUNCTION: &str = "newspaper_casefold";

/// How a search term is matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SearchMatch {
    /// An FTS5 query for the term as one trigram phrase: "contains this substring".
    Trigrams(String),
    /// The posts the trigram index found, when they are few: what a list's filters test of
    /// each, so that its counts need no query, and their ids as one bound value (SQLite: a
    /// JSON array; PostgreSQL: an array literal), so that its page looks these rows up
    /// instead of searching the index and testing the texts again, with a statement whose
    /// text does not depend on how many there are (`IN (SELECT value FROM json_each(?))`,
    /// `= ANY(CAST(? AS int8[]))`), prepared once.
    Ids {
        /// The found posts' ids, as one bound value.
        among: String,
        /// The found posts.
        found: Vec<FoundPost>,
    },
    /// A `LIKE` pattern of the term as given (the statement folds the case of it and of the
    /// texts), with the term's own wildcards escaped by `\`.
    Scan(String),
}

impl SearchMatch {
    /// How SQLite matches `term`: by the trigram index when it has a trigram (FTS5 folds
    /// case as [`casefold`] does), else by [`CasefoldedLike`].
    pub(crate) fn for_sqlite(term: &str) -> Self {
        if term.chars().count() >= 3 {
            Self::Trigrams(fts_phrase(term))
        } else {
            Self::Scan(like_pattern(term))
        }
    }

    /// How PostgreSQL matches `term`: always by [`CasefoldedLike`], which its trigram indexes
    /// answer when the term has a trigram.
    pub(crate) fn for_postgres(term: &str) -> Self {
        Self::Scan(like_pattern(term))
    }
}

/// A post a search found: the columns a list's filters test.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub(crate) struct FoundPost {
    pub(crate) id: i64,
    pub(crate) status: String,
    pub(crate) author_id: i64,
}

/// Up to this many ids found by the trigram index are carried into a list's queries as a
/// list; more are matched by querying the index in each of them.
const MAX_IDS: i64 = 1000;

/// `Ids` if the trigram index finds at most [`MAX_IDS`] posts for `search` (an FTS5 phrase on
/// SQLite; on PostgreSQL a pattern of at least one trigram), else `search` as it was.
pub(crate) fn resolve_few(
    conn: &mut DbConnection,
    search: SearchMatch,
) -> Result<SearchMatch, PersistenceError> {
    // Built with the DSL and fixed SQL, so the statements are prepared once per connection
    // and found again by their type; run on the backend's own connection, so their SQL is not
    // written out at every run either.
    let columns = (posts::id, posts::status, posts::author_id);
    let (found, open, close): (Vec<FoundPost>, _, _) = match (&search, conn) {
        (SearchMatch::Trigrams(phrase), DbConnection::Sqlite(lite)) => (
            cached_by_type(
                posts::table
                    .select(columns)
                    .filter(FixedSql::<TrigramMatch, Text, _>::new(phrase.as_str()))
                    .limit(MAX_IDS + 1),
            )
            .load(lite)?,
            '[',
            ']',
        ),
        (SearchMatch::Scan(pattern), DbConnection::Postgres(pg)) if has_trigram(pattern) => (
            cached_by_type(
                posts::table
                    .select(columns)
                    .filter(FixedSql::<CasefoldedLike, Text, _>::new(pattern.as_str()))
                    .limit(MAX_IDS + 1),
            )
            .load(pg)?,
            '{',
            '}',
        ),
        _ => return Ok(search),
    };
    if found.len() > MAX_IDS as usize {
        return Ok(search);
    }
    let ids: Vec<String> = found.iter().map(|post| post.id.to_string()).collect();
    Ok(SearchMatch::Ids { among: format!("{open}{}{close}", ids.join(",")), found })
}

/// Whether the term of a `%term%` pattern (as [`like_pattern`] writes it) has at least three
/// characters, the least a trigram index can look up.
fn has_trigram(pattern: &str) -> bool {
    let body = pattern.strip_prefix('%').and_then(|p| p.strip_suffix('%')).unwrap_or(pattern);
    let mut chars = body.chars();
    let mut count = 0;
    while let Some(c) = chars.next() {
        // An escape and the character it escapes are one character of the term.
        if c == '\\' {
            chars.next();
        }
        count += 1;
    }
    count >= 3
}

/// `term` as one FTS5 phrase (quotes doubled), so that no character of it is query syntax.
fn fts_phrase(term: &str) -> String {
    format!("\"{}\"", term.replace('"', "\"\""))
}

/// `%term%` for LIKE, with the wildcards of the term itself escaped.
fn like_pattern(term: &str) -> String {
    let mut pattern = String::with_capacity(term.len() + 2);
    pattern.push('%');
    for c in term.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// `text` with its case folded letter by letter: each letter lower-cased as it would be alone,
/// and a final sigma mapped to σ, as Unicode's case folding (and SQLite's FTS5) maps it:
/// "σοφός" and "ΣΟΦΌΣ" both fold to "σοφόσ". Not `str::to_lowercase`, which lower-cases a
/// capital sigma by its place in the text (ς at a word's end, σ elsewhere): a term cut from a
/// text would no longer be found in it. PostgreSQL's `newspaper_casefold` (see its migration)
/// folds the same way, with `lower()` for the first step.
pub(crate) fn casefold(text: &str) -> String {
    text.chars().flat_map(char::to_lowercase).map(|c| if c == 'ς' { 'σ' } else { c }).collect()
}

/// Makes [`CASEFOLD_FUNCTION`] available on an SQLite connection.
pub(crate) fn register_casefold_function(conn: &mut SqliteConnection) -> QueryResult<()> {
    conn.register_sql_function::<Text, Text, String, String, _>(
        CASEFOLD_FUNCTION,
        true,
        |text: String| casefold(&text),
    )
}

/// Segments of SQLite's full-text index from which an idle writer merges them all into one. A
/// search looks each of its trigrams up in every segment, and every commit that writes posts
/// adds one (FTS5's own merging keeps about log4 of the commits, 14 at 100,000 posts, where one
/// segment cut an uncached search's CPU by a third); a full merge rewrites the whole index, so
/// it waits until enough have gathered.
pub(crate) const MERGE_FROM_SEGMENTS: i64 = 8;
/// Index pages one merge step writes: a few milliseconds, the longest a write waits for it.
const MERGE_STEP_PAGES: i64 = 64;
/// How long the writer must have been idle before it looks at the index.
const IDLE_BEFORE_UPKEEP: Duration = Duration::from_millis(200);
/// Idle time between steps, as a multiple of the last step's duration: merging takes at most a
/// fifth of an idle writer's time.
const PAUSE_PER_STEP: u32 = 4;

/// The upkeep of SQLite's full-text index, done by the writer while no write is waiting: once
/// commits have added [`MERGE_FROM_SEGMENTS`] segments, they are merged into one, a few pages at
/// a time, each step its own short transaction (FTS5's incremental `merge`).
#[derive(Debug, Default)]
pub(crate) struct IndexUpkeep {
    due: Option<Upkeep>,
}

#[derive(Debug, Clone, Copy)]
enum Upkeep {
    /// Count the segments.
    Look,
    /// Merge the next pages, the last step having taken this long.
    Merge(Duration),
}

impl IndexUpkeep {
    /// The writer committed a batch: if it wrote posts, the index gained a segment.
    pub(crate) fn wrote(&mut self) {
        if self.due.is_none() {
            self.due = Some(Upkeep::Look);
        }
    }

    /// How long the writer should wait for a job before [`IndexUpkeep::step`]; `None` when
    /// nothing is due.
    pub(crate) fn idle_before_step(&self) -> Option<Duration> {
        match self.due? {
            Upkeep::Look => Some(IDLE_BEFORE_UPKEEP),
            Upkeep::Merge(last) => Some(last * PAUSE_PER_STEP),
        }
    }

    /// Does what is due. Errors end this round of upkeep (the next commit starts another):
    /// the index stays correct whatever its segments, only searches cost more.
    pub(crate) fn step(&mut self, conn: &mut SqliteConnection) {
        let Some(due) = self.due else { return };
        let outcome = match due {
            Upkeep::Look => index_segments(conn)
                .map(|n| (n >= MERGE_FROM_SEGMENTS).then_some(Upkeep::Merge(Duration::ZERO))),
            Upkeep::Merge(_) => {
                let started = Instant::now();
                merge_index_step(conn).map(|more| more.then(|| Upkeep::Merge(started.elapsed())))
            }
        };
        self.due = outcome.unwrap_or_else(|err| {
            tracing::warn!(error = &err as &dyn std::error::Error, "search index upkeep failed");
            None
        });
    }
}

/// Segments of the full-text index now.
pub(crate) fn index_segments(conn: &mut SqliteConnection) -> QueryResult<i64> {
    diesel::select(diesel::dsl::sql::<BigInt>(
        "(SELECT count(DISTINCT segid) FROM posts_search_idx)",
    ))
    .get_result(conn)
}

/// One step of merging every segment into one, in its own transaction; whether work remains.
fn merge_index_step(conn: &mut SqliteConnection) -> QueryResult<bool> {
    let total_changes = |conn: &mut SqliteConnection| {
        diesel::select(diesel::dsl::sql::<BigInt>("total_changes()")).get_result::<i64>(conn)
    };
    conn.immediate_transaction(|conn| {
        let before = total_changes(conn)?;
        // A negative count merges segments of every level together, as `optimize` does, but
        // stops after that many pages.
        conn.batch_execute(&format!(
            "INSERT INTO posts_search (posts_search, rank) VALUES ('merge', -{MERGE_STEP_PAGES})"
        ))?;
        // FTS5's documented test: a step that did any work changed at least two rows.
        Ok(total_changes(conn)? - before >= 2)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_pattern_escapes_wildcards_and_keeps_case() {
        assert_eq!(like_pattern("Hello"), "%Hello%");
        assert_eq!(like_pattern("100%_a\\b"), "%100\\%\\_a\\\\b%");
        assert_eq!(like_pattern("ÉCOLE"), "%ÉCOLE%");
    }

    #[test]
    fn casefold_lowers_each_letter_as_it_would_be_alone() {
        assert_eq!(casefold("ÉCOLE"), "école");
        assert_eq!(casefold("ΣΟΦΌΣ ΟΣ σοφός"), "σοφόσ οσ σοφόσ");
        assert_eq!(casefold("İ"), "i\u{307}");
    }

    #[test]
    fn terms_with_a_trigram_use_the_index_on_sqlite() {
        assert_eq!(SearchMatch::for_sqlite("abc"), SearchMatch::Trigrams("\"abc\"".into()));
        assert_eq!(SearchMatch::for_sqlite("ÉÉÉ"), SearchMatch::Trigrams("\"ÉÉÉ\"".into()));
        assert_eq!(SearchMatch::for_sqlite("Éé"), SearchMatch::Scan("%Éé%".into()));
        assert_eq!(
            SearchMatch::for_sqlite("say \"hi\" OR x*"),
            SearchMatch::Trigrams("\"say \"\"hi\"\" OR x*\"".into())
        );
        assert_eq!(SearchMatch::for_postgres("abc"), SearchMatch::Scan("%abc%".into()));
    }

    #[test]
    fn a_pattern_has_a_trigram_when_its_term_has_three_characters() {
        for (term, expected) in [
            ("abc", true),
            ("ab", false),
            ("é€x", true),
            ("a%", false),
            ("%_\\", true),
            ("", false),
        ] {
            assert_eq!(has_trigram(&like_pattern(term)), expected, "{term:?}");
        }
    }
}
