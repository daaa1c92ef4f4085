//! Which web pages may open a WebSocket: the Origin allow-list, checked before the upgrade.

use url::Url;

/// Whether a handshake with this `Origin` may proceed.
///
/// No `Origin` header (non-browser clients) is allowed. Otherwise the origin must be the
/// server's own host (as the request's `Host` names it), be listed in `allowed` (or `allowed`
/// holds `*`), or, in debug mode, be a `localhost` / `127.0.0.1` / `[::1]` origin.
pub fn origin_allowed(
    origin: Option<&str>,
    host: Option<&str>,
    allowed: &[String],
    debug: bool,
) -> bool {
    let Some(origin) = origin else { return true };
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    if allowed
        .iter()
        .any(|a| a == "*" || a.trim().trim_end_matches('/').eq_ignore_ascii_case(&origin))
    {
        return true;
    }
    let Ok(parsed) = Url::parse(&origin) else { return false };
    let Some(origin_host) = parsed.host_str() else { return false };
    let authority = match parsed.port() {
        Some(port) => format!("{origin_host}:{port}"),
        None => origin_host.to_owned(),
    };
    if host.is_some_and(|h| h.eq_ignore_ascii_case(&authority)) {
        return true;
    }
    debug && matches!(origin_host, "localhost" | "127.0.0.1" | "[::1]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_host_listed_and_absent_origins_pass() {
        assert!(origin_allowed(None, Some("news.example"), &[], false));
        assert!(origin_allowed(Some("https://news.example"), Some("news.example"), &[], false));
        assert!(origin_allowed(Some("http://127.0.0.1:8000"), Some("127.0.0.1:8000"), &[], false));
        let allowed = vec!["https://app.example".to_owned()];
        assert!(origin_allowed(Some("https://app.example/"), Some("api.example"), &allowed, false));
        assert!(origin_allowed(
            Some("https://evil.example"),
            Some("api.example"),
            &["*".to_owned()],
            false
        ));
    }

    #[test]
    fn foreign_origins_are_refused_and_localhost_only_in_debug() {
        assert!(!origin_allowed(Some("https://evil.example"), Some("news.example"), &[], false));
        assert!(!origin_allowed(Some("http://127.0.0.1:8000"), Some("127.0.0.1:9000"), &[], false));
        assert!(!origin_allowed(Some("null"), Some("news.example"), &[], true));
        assert!(!origin_allowed(Some("http://localhost:3000"), Some("news.example"), &[], false));
        assert!(origin_allowed(Some("http://localhost:3000"), Some("news.example"), &[], true));
    }
}
