//! The list query (`page` or `cursor`, `page_size`, `status`, `author`, `search`, `ordering`)
//! and DRF's page-number and cursor pagination with absolute `next` / `previous` links.

use newspaper_domain::{Post, PostOrdering, PostStatus, UserId, ValidationErrors, check_max_chars};
use newspaper_persistence::{Keyset, PostQuery};
use serde::Serialize;
use url::Url;
use utoipa::ToSchema;

use super::cursor::{self, PostCursorPage};
use crate::ApiError;

/// Rows per page unless `page_size` says otherwise.
pub const DEFAULT_PAGE_SIZE: u64 = 10;
/// The largest `page_size` honoured; larger values are clamped, as DRF does.
pub const MAX_PAGE_SIZE: u64 = 100;
/// The longest `search` term accepted: longer ones cost more and find nothing more.
pub const MAX_SEARCH_CHARS: usize = 100;

/// A page of posts.
#[derive(Debug, Serialize, ToSchema)]
pub struct PostPage {
    /// Posts matching the query, over all pages.
    pub count: u64,
    /// Absolute URL of the next page.
    pub next: Option<String>,
    /// Absolute URL of the previous page.
    pub previous: Option<String>,
    /// This page's posts.
    pub results: Vec<Post>,
}

/// Which page was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PageNumber {
    /// 1-based.
    Number(u64),
    /// The last page, whatever its number.
    Last,
}

/// A parsed list request.
#[derive(Debug, Clone)]
pub(crate) struct ListRequest {
    pub(crate) page: PageNumber,
    pub(crate) page_size: u64,
    pub(crate) query: PostQuery,
    /// Where a cursor page starts, when the request asks for one (`?cursor=`).
    pub(crate) cursor: Option<Keyset>,
    pairs: Vec<(String, String)>,
}

fn invalid_page() -> ApiError {
    ApiError::NotFound("Invalid page.".into())
}

impl ListRequest {
    /// Parses a query string. Bad filters are 400s, a bad page is a 404, and a bad page size
    /// or unknown ordering falls back to the default, all as DRF and django-filter do.
    pub(crate) fn parse(query_string: &str) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query_string)
            .map_err(|e| ApiError::BadRequest(format!("Malformed query string: {e}.")))?;
        let get = |key: &str| pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        let page = match get("page") {
            None => PageNumber::Number(1),
            Some("last") => PageNumber::Last,
            Some(raw) => match raw.parse::<u64>() {
                Ok(n) if n >= 1 && !raw.starts_with('+') => PageNumber::Number(n),
                _ => return Err(invalid_page()),
            },
        };
        let mut errors = ValidationErrors::new();
        // Stricter than DRF, which ignores a page size it cannot read: the document says what
        // a page size is, and the server holds to it. Larger than the maximum is clamped.
        let page_size = match get("page_size") {
            None => DEFAULT_PAGE_SIZE,
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if n >= 1 && !raw.starts_with('+') => {
                    u64::try_from(n).unwrap_or(MAX_PAGE_SIZE).min(MAX_PAGE_SIZE)
                }
                Ok(_) => {
                    errors.add("page_size", "Ensure this value is greater than or equal to 1.");
                    DEFAULT_PAGE_SIZE
                }
                Err(_) => {
                    errors.add("page_size", "A valid integer is required.");
                    DEFAULT_PAGE_SIZE
                }
            },
        };
        let status = match get("status") {
            None => None,
            Some(raw) => match raw.parse::<PostStatus>() {
                Ok(status) => Some(status),
                Err(_) => {
                    errors.add(
                        "status",
                        format!(
                            "Select a valid choice. {raw} is not one of the available choices."
                        ),
                    );
                    None
                }
            },
        };
        let author = match get("author") {
            None => None,
            Some(raw) if raw.starts_with('+') => {
                errors.add("author", "Enter a number.");
                None
            }
            Some(raw) => match raw.parse::<i64>() {
                Ok(id) => Some(UserId(id)),
                Err(_) => {
                    errors.add("author", "Enter a number.");
                    None
                }
            },
        };
        let search = get("search").map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
        if let Some(term) = &search {
            errors.check("search", check_max_chars(term, MAX_SEARCH_CHARS));
        }
        errors.into_result(())?;
        let mut ordering = PostOrdering::parse_list(get("ordering").unwrap_or(""));
        // A cursor is a position in one order: the first term's, with the id breaking ties.
        let cursor = match get("cursor") {
            None => None,
            Some(raw) => {
                ordering.truncate(1);
                Some(cursor::decode(
                    raw,
                    ordering.first().copied().unwrap_or(PostOrdering::DEFAULT),
                )?)
            }
        };
        Ok(Self {
            page,
            page_size,
            query: PostQuery {
                status,
                author,
                search,
                ordering,
                offset: 0,
                limit: page_size,
                keyset: None,
            },
            cursor,
            pairs,
        })
    }

    /// The query for the cursor page, when the request asks for one: one row more than the
    /// page, which tells whether there is more beyond it.
    pub(crate) fn query_for_cursor(&self) -> Option<PostQuery> {
        self.cursor.clone().map(|keyset| PostQuery {
            limit: self.page_size + 1,
            keyset: Some(keyset),
            ..self.query.clone()
        })
    }

    /// Wraps the rows a cursor query found (up to one more than a page) as a page with links.
    pub(crate) fn paginate_by_cursor(&self, base: &str, mut rows: Vec<Post>) -> PostCursorPage {
        let ordering = self.query.ordering.first().copied().unwrap_or(PostOrdering::DEFAULT);
        let keyset = self.cursor.as_ref();
        let backwards = keyset.is_some_and(|k| k.backwards);
        let more = rows.len() as u64 > self.page_size;
        if more {
            // The extra row is the one farthest from the position.
            if backwards {
                rows.remove(0);
            } else {
                rows.truncate(usize::try_from(self.page_size).unwrap_or(usize::MAX));
            }
        }
        let started = keyset.is_some_and(|k| k.position.is_some());
        let link = |post: Option<&Post>, back: bool| {
            Some(self.link_with(base, "cursor", Some(&cursor::encode(ordering, post, back))))
        };
        let (next, previous) = if backwards {
            let next = match rows.last() {
                // Read back from the list's end: nothing comes after it.
                _ if !started => None,
                Some(last) => link(Some(last), false),
                // Nothing before the position: the list starts here.
                None => Some(self.link_with(base, "cursor", Some(""))),
            };
            (next, if more { link(rows.first(), true) } else { None })
        } else {
            let next = if more { link(rows.last(), false) } else { None };
            let previous = match rows.first() {
                _ if !started => None,
                Some(first) => link(Some(first), true),
                // Nothing after the position: back to the list's last page.
                None => link(None, true),
            };
            (next, previous)
        };
        PostCursorPage { next, previous, results: rows }
    }

    /// The query for page `number`.
    pub(crate) fn query_for_page(&self, number: u64) -> PostQuery {
        PostQuery { offset: (number - 1).saturating_mul(self.page_size), ..self.query.clone() }
    }

    /// Wraps one page of results, or 404 if the page does not exist (page 1 always does).
    pub(crate) fn paginate(
        &self,
        base: &str,
        number: u64,
        count: u64,
        results: Vec<Post>,
    ) -> Result<PostPage, ApiError> {
        let pages = count.div_ceil(self.page_size).max(1);
        if number > pages {
            return Err(invalid_page());
        }
        let page_link = |page: Option<u64>| {
            self.link_with(base, "page", page.map(|n| n.to_string()).as_deref())
        };
        let next = (number < pages).then(|| page_link(Some(number + 1)));
        let previous = (number > 1).then(|| page_link((number > 2).then_some(number - 1)));
        Ok(PostPage { count, next, previous, results })
    }

    /// `base` with the original parameters and `param` replaced by `value` (removed for
    /// `None`), in its place.
    fn link_with(&self, base: &str, param: &str, value: Option<&str>) -> String {
        let Ok(mut url) = Url::parse(base) else { return base.to_owned() };
        {
            let mut query = url.query_pairs_mut();
            query.clear();
            let mut wrote = false;
            for (key, old) in &self.pairs {
                if key == param {
                    if let (Some(value), false) = (value, wrote) {
                        query.append_pair(param, value);
                        wrote = true;
                    }
                } else {
                    query.append_pair(key, old);
                }
            }
            if let (Some(value), false) = (value, wrote) {
                query.append_pair(param, value);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        url.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posts(n: usize) -> Vec<Post> {
        Vec::with_capacity(n)
    }

    #[test]
    fn parses_filters_and_falls_back_like_drf() {
        let req = ListRequest::parse(
            "page=2&page_size=500&status=draft&author=7&search=+hi+&ordering=-title,bogus",
        )
        .unwrap();
        assert_eq!(req.page, PageNumber::Number(2));
        assert_eq!(req.page_size, 100);
        assert_eq!(req.query.status, Some(PostStatus::Draft));
        assert_eq!(req.query.author, Some(UserId(7)));
        assert_eq!(req.query.search.as_deref(), Some("hi"));
        assert_eq!(req.query.ordering.len(), 1);
        assert_eq!(req.query_for_page(3).offset, 200);
        assert_eq!(ListRequest::parse("page=last").unwrap().page, PageNumber::Last);
        assert_eq!(ListRequest::parse("page_size=9223372036854775807").unwrap().page_size, 100);
        assert_eq!(ListRequest::parse("search=&ordering=").unwrap().query.search, None);
    }

    #[test]
    fn bad_pages_are_404_and_bad_filters_400() {
        for page in ["page=0", "page=x", "page=", "page=+2", "page=%201"] {
            assert!(matches!(ListRequest::parse(page), Err(ApiError::NotFound(_))), "{page}");
        }
        for (query, field) in [
            ("page_size=abc", "page_size"),
            ("page_size=0", "page_size"),
            ("page_size=", "page_size"),
            ("page_size=9223372036854775808", "page_size"),
            ("author=", "author"),
            ("author=+1", "author"),
            ("status=", "status"),
        ] {
            match ListRequest::parse(query) {
                Err(ApiError::Validation(errors)) => {
                    assert!(errors.fields().contains_key(field), "{query}")
                }
                other => panic!("{query}: {other:?}"),
            }
        }
        match ListRequest::parse("status=live&author=me") {
            Err(ApiError::Validation(errors)) => {
                assert_eq!(
                    serde_json::to_value(errors).unwrap(),
                    serde_json::json!({
                        "author": ["Enter a number."],
                        "status": ["Select a valid choice. live is not one of the available choices."]
                    })
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn links_keep_the_query_and_drop_page_one() {
        let base = "http://h:8000/api/posts/";
        let req = ListRequest::parse("search=a+b&page=2&page_size=1").unwrap();
        let page = req.paginate(base, 2, 3, posts(1)).unwrap();
        assert_eq!(
            page.next.as_deref(),
            Some("http://h:8000/api/posts/?search=a+b&page=3&page_size=1")
        );
        assert_eq!(
            page.previous.as_deref(),
            Some("http://h:8000/api/posts/?search=a+b&page_size=1")
        );
        let first = ListRequest::parse("").unwrap().paginate(base, 1, 25, posts(10)).unwrap();
        assert_eq!(first.next.as_deref(), Some("http://h:8000/api/posts/?page=2"));
        assert_eq!(first.previous, None);
        assert!(ListRequest::parse("").unwrap().paginate(base, 1, 0, posts(0)).is_ok());
        assert!(matches!(
            ListRequest::parse("").unwrap().paginate(base, 2, 10, posts(0)),
            Err(ApiError::NotFound(_))
        ));
    }
}
