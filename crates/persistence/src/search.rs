//! Substring search over titles and contents, as DRF's `icontains`: case-insensitive for all of
//! Unicode, wildcards in the term taken literally, and answered from a trigram index on both
//! backends (SQLite FTS5 `posts_search`, PostgreSQL `pg_trgm` indexes; see the migrations).
//!
//! A trigram index cannot answer a term shorter than three characters; such terms are matched
//! by a scan with the same semantics (on SQLite through [`CASEFOLD_FUNCTION`], since SQLite's
//! own `lower()` and `LIKE` fold ASCII only), which the statement deadline bounds.

use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel::{QueryResult, SqliteConnection};

use crate::schema::posts;
use crate::sql_functions::FixedSql;
use crate::{DbConnection, PersistenceError};

/// Posts whose title or content contains an FTS5 trigram phrase (bound after it, then `)`).
pub(crate) const TRIGRAM_MATCH: &str =
    "posts.id IN (SELECT rowid FROM posts_search WHERE posts_search MATCH ";

/// The SQL function that lower-cases all of Unicode on SQLite.
pub(crate) const CASEFOLD_FUNCTION: &str = "newspaper_casefold";

/// How a search term is matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SearchMatch {
    /// An FTS5 query for the term as one trigram phrase: "contains this substring".
    Trigrams(String),
    /// The ids of the posts an FTS5 query found, when they are few, as a JSON array: the
    /// list's queries (the counts and the page) then look these rows up instead of querying
    /// the index again, with statements whose text does not depend on how many there are
    /// (`IN (SELECT value FROM json_each(?))`), so they are prepared once.
    Ids(String),
    /// A `LIKE` pattern over lower-cased text, with the term's own wildcards escaped by `\`.
    Scan(String),
}

impl SearchMatch {
    /// How SQLite matches `term`: by the trigram index when it has a trigram.
    pub(crate) fn for_sqlite(term: &str) -> Self {
        if term.chars().count() >= 3 {
            Self::Trigrams(fts_phrase(term))
        } else {
            Self::Scan(like_pattern(term))
        }
    }

    /// How PostgreSQL matches `term`: always `LIKE`, which its trigram indexes answer when the
    /// term has a trigram.
    pub(crate) fn for_postgres(term: &str) -> Self {
        Self::Scan(like_pattern(term))
    }
}

/// Up to this many ids found by the trigram index are carried into a list's queries as a
/// list; more are matched by querying the index in each of them.
const MAX_IDS: i64 = 1000;

/// `Ids` if the FTS5 `phrase` matches at most [`MAX_IDS`] posts, else `Trigrams` as it was.
pub(crate) fn resolve_few(
    conn: &mut DbConnection,
    phrase: String,
) -> Result<SearchMatch, PersistenceError> {
    // Built with the DSL and fixed SQL, so the statement is prepared once per connection.
    let found: Vec<i64> = posts::table
        .select(posts::id)
        .filter(FixedSql::<Text, _>::new(&[TRIGRAM_MATCH, ")"], phrase.as_str()))
        .limit(MAX_IDS + 1)
        .load(conn)?;
    if found.len() > MAX_IDS as usize {
        return Ok(SearchMatch::Trigrams(phrase));
    }
    let ids: Vec<String> = found.iter().map(i64::to_string).collect();
    Ok(SearchMatch::Ids(format!("[{}]", ids.join(","))))
}

/// `term` as one FTS5 phrase (quotes doubled), so that no character of it is query syntax.
fn fts_phrase(term: &str) -> String {
    format!("\"{}\"", term.replace('"', "\"\""))
}

/// `%term%` for LIKE, lower-cased, with the wildcards of the term itself escaped.
fn like_pattern(term: &str) -> String {
    let mut pattern = String::with_capacity(term.len() + 2);
    pattern.push('%');
    for c in term.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// Makes [`CASEFOLD_FUNCTION`] available on an SQLite connection.
pub(crate) fn register_casefold_function(conn: &mut SqliteConnection) -> QueryResult<()> {
    conn.register_sql_function::<Text, Text, String, String, _>(
        CASEFOLD_FUNCTION,
        true,
        |text: String| text.to_lowercase(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_pattern_escapes_wildcards_and_lowercases() {
        assert_eq!(like_pattern("Hello"), "%hello%");
        assert_eq!(like_pattern("100%_a\\b"), "%100\\%\\_a\\\\b%");
        assert_eq!(like_pattern("ÉCOLE"), "%école%");
    }

    #[test]
    fn terms_with_a_trigram_use_the_index_on_sqlite() {
        assert_eq!(SearchMatch::for_sqlite("abc"), SearchMatch::Trigrams("\"abc\"".into()));
        assert_eq!(SearchMatch::for_sqlite("ÉÉÉ"), SearchMatch::Trigrams("\"ÉÉÉ\"".into()));
        assert_eq!(SearchMatch::for_sqlite("Éé"), SearchMatch::Scan("%éé%".into()));
        assert_eq!(
            SearchMatch::for_sqlite("say \"hi\" OR x*"),
            SearchMatch::Trigrams("\"say \"\"hi\"\" OR x*\"".into())
        );
        assert_eq!(SearchMatch::for_postgres("abc"), SearchMatch::Scan("%abc%".into()));
    }
}
