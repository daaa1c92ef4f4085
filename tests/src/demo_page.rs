//! What the browser tests (Chromium and Firefox) share about /ws-demo/: which browsers they
//! need, how to find a post and a log line on the page, and where screenshots go.

use std::path::{Path, PathBuf};

use crate::skip_unless_required;

/// Whether the browser at `path` is installed; without it a test skips and says why, unless
/// NEWSPAPER_REQUIRE_SERVICES is set (as in CI), where a missing browser fails the test.
pub fn browser_available(path: &str, debian_package: &str) -> bool {
    if Path::new(path).exists() {
        return true;
    }
    skip_unless_required(&format!(
        "{path} is not installed (Debian's {debian_package} package), so the browser test does not run"
    ));
    false
}

/// Where screenshots are saved: target/test-artifacts/, created on first use.
pub fn artifacts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// JavaScript for the list item of post `id`, or null when the page does not show it.
pub fn post_item_js(id: i64) -> String {
    format!("document.querySelector('#posts li[data-post-id=\"{id}\"]')")
}

/// JavaScript that is true once the live log shows `event` for post `id`.
pub fn log_has_js(event: &str, id: i64) -> String {
    format!(
        "[...document.querySelectorAll('#log .log-event')].some(e => e.dataset.event === '{event}' && JSON.parse(e.textContent).id === {id})"
    )
}
