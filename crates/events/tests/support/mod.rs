//! What the Redis-backed tests share: where Redis is, or why they skip.

/// The Redis URL from NEWSPAPER_TEST_REDIS_URL, or `None` after saying `what` does not run;
/// with NEWSPAPER_REQUIRE_SERVICES set (as in CI), a missing URL fails instead. (The same rule
/// as `newspaper_persistence::testing::service_url`, which this crate does not depend on.)
pub fn redis_url(what: &str) -> Option<String> {
    let url = std::env::var("NEWSPAPER_TEST_REDIS_URL").ok().filter(|u| !u.trim().is_empty());
    if url.is_none() {
        let why = format!("NEWSPAPER_TEST_REDIS_URL is not set, so {what} does not run");
        assert!(
            std::env::var_os("NEWSPAPER_REQUIRE_SERVICES").is_none(),
            "NEWSPAPER_REQUIRE_SERVICES is set, but {why}"
        );
        eprintln!("skipped: {why}");
    }
    url
}
