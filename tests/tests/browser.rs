//! The demo page at /ws-demo/, driven in Debian's Chromium (headless) the way a person uses it:
//! two independent browser sessions, one writing, both watching. Skips (and says why) where
//! Chromium is not installed, unless NEWSPAPER_REQUIRE_SERVICES is set, as in CI.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::page::CaptureScreenshotFormat;
use chromiumoxide::cdp::browser_protocol::target::{
    CreateBrowserContextParams, CreateTargetParams,
};
use chromiumoxide::page::{Page, ScreenshotParams};
use futures_util::StreamExt;
use newspaper_domain::{AuthorRef, PostStatus, PostTitle, UserId, now};
use newspaper_persistence::{NewPost, PostRepository};
use newspaper_tests::{
    ExampleProcess, PASSWORD, TestApp, TestDatabase, artifacts_dir, browser_available, log_has_js,
    post_item_js,
};

const CHROMIUM: &str = "/usr/bin/chromium";
const WAIT: Duration = Duration::from_secs(20);

async fn screenshot(page: &Page, name: &str) -> PathBuf {
    let png = page
        .screenshot(
            ScreenshotParams::builder()
                .format(CaptureScreenshotFormat::Png)
                .full_page(true)
                .build(),
        )
        .await
        .unwrap();
    let path = artifacts_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    path
}

async fn eval<T: serde::de::DeserializeOwned>(page: &Page, js: &str) -> T {
    page.evaluate(js)
        .await
        .unwrap_or_else(|e| panic!("{js}: {e}"))
        .into_value()
        .unwrap_or_else(|e| panic!("{js}: {e}"))
}

/// Waits until `condition` (a JavaScript expression) is true on the page; on timeout, saves a
/// screenshot and fails with `what`.
async fn wait_until(page: &Page, name: &str, condition: &str, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let holds: bool = match page.evaluate(format!("Boolean({condition})")).await {
            Ok(result) => result.into_value().unwrap_or(false),
            Err(_) => false,
        };
        if holds {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            let shot = screenshot(page, &format!("failed-{name}")).await;
            panic!(
                "page {name}: {what} (condition `{condition}`); screenshot at {}",
                shot.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn type_into(page: &Page, selector: &str, text: &str) {
    let element = page.find_element(selector).await.unwrap_or_else(|e| panic!("{selector}: {e}"));
    element.click().await.unwrap();
    element.type_str(text).await.unwrap();
}

async fn click(page: &Page, selector: &str) {
    page.find_element(selector)
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
        .click()
        .await
        .unwrap();
}

/// Starts headless Chromium with a throwaway profile and no background traffic.
async fn launch() -> (Browser, tokio::task::JoinHandle<()>, tempfile::TempDir) {
    let profile = tempfile::tempdir().unwrap();
    let config = BrowserConfig::builder()
        .chrome_executable(CHROMIUM)
        .no_sandbox()
        .user_data_dir(profile.path())
        .window_size(1280, 1100)
        .viewport(None)
        .args([
            "disable-gpu",
            "disable-component-update",
            "disable-background-networking",
            "disable-sync",
            "no-first-run",
        ])
        .launch_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let (browser, mut handler) = Browser::launch(config).await.expect("chromium starts");
    let events = tokio::spawn(async move { while handler.next().await.is_some() {} });
    (browser, events, profile)
}

/// A page in its own browser context (its own cookies and storage).
async fn open(browser: &Browser, url: &str) -> Page {
    let context =
        browser.create_browser_context(CreateBrowserContextParams::default()).await.unwrap();
    let target =
        CreateTargetParams::builder().url(url).browser_context_id(context).build().unwrap();
    browser.new_page(target).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_shows_every_change_live_in_two_browsers() {
    if !browser_available(CHROMIUM, "chromium") {
        return;
    }
    let database = Arc::new(TestDatabase::sqlite());
    let app = TestApp::spawn_with(database.clone(), |s| s.debug = true).await;
    let (port, db) = (app.port, app.db.clone());
    let url = format!("{}/ws-demo/", app.address);

    let (mut browser, events, _profile) = launch().await;

    // Two independent sessions, as two people on two machines.
    let pages = [open(&browser, &url).await, open(&browser, &url).await];
    let (a, b) = (&pages[0], &pages[1]);
    for (page, name) in [(a, "a"), (b, "b")] {
        wait_until(
            page,
            name,
            "document.getElementById('status').dataset.state === 'live'",
            "shows live",
        )
        .await;
        wait_until(
            page,
            name,
            "document.getElementById('presence').textContent === '2'",
            "counts 2 clients",
        )
        .await;
    }

    // A registers (and is logged in by it).
    click(a, "#tab-register").await;
    type_into(a, "#register-email", "ann@example.com").await;
    type_into(a, "#register-password", PASSWORD).await;
    click(a, "#register-submit").await;
    wait_until(
        a,
        "a",
        "document.getElementById('whoami').textContent === 'ann'",
        "is logged in as ann",
    )
    .await;
    wait_until(
        a,
        "a",
        "document.getElementById('access-token').textContent.includes('…')",
        "shows the masked access token",
    )
    .await;
    // A validation error shows next to its field.
    click(a, "#create-submit").await;
    wait_until(a, "a", "document.getElementById('create-title-error').textContent === 'This field may not be blank.'", "explains the blank title").await;

    // A creates a published post: B sees it without reloading.
    type_into(a, "#create-title", "Hello from A").await;
    type_into(a, "#create-content", "Written in one browser, seen in the other.").await;
    a.evaluate("document.getElementById('create-status').value = 'published'").await.unwrap();
    click(a, "#create-submit").await;
    wait_until(
        a,
        "a",
        "document.querySelector('#posts .post-title')?.textContent === 'Hello from A'",
        "lists the new post",
    )
    .await;
    let id: i64 = eval(a, "Number(document.querySelector('#posts li').dataset.postId)").await;
    wait_until(
        b,
        "b",
        &format!(
            "{}?.querySelector('.post-title').textContent === 'Hello from A'",
            post_item_js(id)
        ),
        "shows A's post live",
    )
    .await;
    wait_until(b, "b", &log_has_js("post_created", id), "logs post_created").await;
    wait_until(
        b,
        "b",
        &format!("{}?.textContent.includes('by ann')", post_item_js(id)),
        "shows the author",
    )
    .await;
    assert_eq!(
        eval::<usize>(
            b,
            "document.querySelectorAll('#posts .post-delete, #posts .post-edit').length"
        )
        .await,
        0,
        "anonymous B may not edit or delete"
    );
    wait_until(
        a,
        "a",
        &format!("{}?.querySelector('.post-delete') !== null", post_item_js(id)),
        "offers its author Delete",
    )
    .await;

    // A edits the title: B shows the new one.
    click(a, &format!("#posts li[data-post-id=\"{id}\"] .post-edit")).await;
    a.evaluate(format!("document.getElementById('edit-title-{id}').value = ''")).await.unwrap();
    type_into(a, &format!("#edit-title-{id}"), "Hello again from A").await;
    click(a, &format!("#posts li[data-post-id=\"{id}\"] .edit-save")).await;
    wait_until(
        b,
        "b",
        &format!(
            "{}?.querySelector('.post-title').textContent === 'Hello again from A'",
            post_item_js(id)
        ),
        "shows the edit",
    )
    .await;
    wait_until(b, "b", &log_has_js("post_updated", id), "logs post_updated").await;

    // A deletes it: gone from both lists, logged in both.
    click(a, &format!("#posts li[data-post-id=\"{id}\"] .post-delete")).await;
    for (page, name) in [(a, "a"), (b, "b")] {
        wait_until(
            page,
            name,
            &format!("{} === null", post_item_js(id)),
            "removes the deleted post",
        )
        .await;
        wait_until(page, name, &log_has_js("post_deleted", id), "logs post_deleted").await;
    }
    screenshot(a, "demo-a-author").await;
    screenshot(b, "demo-b-anonymous").await;

    // The server goes away; a post is committed meanwhile; the pages reconnect and catch up.
    app.stop().await;
    for (page, name) in [(a, "a"), (b, "b")] {
        wait_until(
            page,
            name,
            "document.getElementById('status').dataset.state === 'reconnecting'",
            "notices the outage",
        )
        .await;
    }
    let ann = AuthorRef { id: UserId(1), username: "ann".into() };
    db.write(move |conn| {
        let new = NewPost {
            title: PostTitle::parse("Written during the outage").unwrap(),
            content: String::new(),
            status: PostStatus::Published,
        };
        PostRepository::create(conn, &ann, new, now())
    })
    .await
    .unwrap();
    let restarted = TestApp::spawn_with(database, |s| {
        s.debug = true;
        s.bind = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    })
    .await;
    for (page, name) in [(a, "a"), (b, "b")] {
        wait_until(
            page,
            name,
            "document.getElementById('status').dataset.state === 'live'",
            "reconnects",
        )
        .await;
        wait_until(page, name, "[...document.querySelectorAll('#posts .post-title')].some(t => t.textContent === 'Written during the outage')", "shows what it missed").await;
    }
    for (page, name) in [(a, "a"), (b, "b")] {
        wait_until(
            page,
            name,
            "document.getElementById('presence').textContent === '2'",
            "counts both clients again",
        )
        .await;
    }
    let shot_a = screenshot(a, "demo-a-after-restart").await;
    screenshot(b, "demo-b-after-restart").await;
    if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
        std::fs::copy(&shot_a, Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/ws-demo.png"))
            .unwrap();
    }
    eprintln!("screenshots in {}", artifacts_dir().display());

    browser.close().await.unwrap();
    let _ = browser.wait().await;
    events.abort();
    restarted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_flows_work_from_the_page_and_it_loads_nothing_from_elsewhere() {
    if !browser_available(CHROMIUM, "chromium") {
        return;
    }
    // Access tokens short enough that the page must refresh one during the test.
    let app = TestApp::spawn_with(Arc::new(TestDatabase::sqlite()), |s| {
        s.debug = true;
        s.access_token_lifetime = Duration::from_secs(33);
    })
    .await;
    app.user("ann@example.com").await;
    let url = format!("{}/ws-demo/", app.address);
    let (mut browser, events, _profile) = launch().await;
    let page = open(&browser, &url).await;
    let p = &page;
    wait_until(p, "p", "document.getElementById('status').dataset.state === 'live'", "goes live")
        .await;

    // Every control has a label a screen reader can announce.
    let unlabelled: Vec<String> = eval(p, "[...document.querySelectorAll('input, select, textarea')].filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.id)").await;
    assert!(unlabelled.is_empty(), "controls without a label: {unlabelled:?}");

    // Wrong password: the error shows; the right one logs in.
    type_into(p, "#login-email", "ann@example.com").await;
    type_into(p, "#login-password", "not the password").await;
    click(p, "#login-submit").await;
    wait_until(
        p,
        "p",
        "document.getElementById('login-error').textContent.includes('No active account')",
        "shows the login error",
    )
    .await;
    p.evaluate("document.getElementById('login-password').value = ''").await.unwrap();
    type_into(p, "#login-password", PASSWORD).await;
    click(p, "#login-submit").await;
    wait_until(p, "p", "document.getElementById('whoami').textContent === 'ann'", "logs in").await;

    // The access token is refreshed before it expires, without a reload.
    let first: String =
        eval(p, "JSON.parse(sessionStorage.getItem('newspaper.tokens')).access").await;
    wait_until(
        p,
        "p",
        &format!("JSON.parse(sessionStorage.getItem('newspaper.tokens')).access !== '{first}'"),
        "refreshes the access token",
    )
    .await;
    let (status, _) = app
        .get(
            "/api/auth/me/",
            Some(
                &eval::<String>(p, "JSON.parse(sessionStorage.getItem('newspaper.tokens')).access")
                    .await,
            ),
        )
        .await;
    assert_eq!(status, 200, "the refreshed token works");

    // Log out, then reset the password from the page (debug mode fills in uid and token).
    click(p, "#logout").await;
    wait_until(p, "p", "document.getElementById('whoami').textContent === 'anonymous'", "logs out")
        .await;
    click(p, "#tab-reset").await;
    type_into(p, "#reset-email", "ann@example.com").await;
    click(p, "#reset-request-submit").await;
    wait_until(p, "p", "document.getElementById('reset-token').value.length > 20 && document.getElementById('reset-uid').value !== ''", "pre-fills uid and token").await;
    type_into(p, "#reset-new-password", "a brand new password").await;
    click(p, "#reset-confirm-submit").await;
    wait_until(p, "p", "document.getElementById('reset-confirm-ok').textContent.includes('Password has been reset')", "confirms the reset").await;
    assert_eq!(app.log_in("ann@example.com", "a brand new password").await.0, 200);

    // Nothing was fetched from anywhere but this server.
    let origins: Vec<String> = eval(
        p,
        "[...new Set(performance.getEntriesByType('resource').map(e => new URL(e.name).origin))]",
    )
    .await;
    assert!(origins.iter().all(|o| *o == app.address), "requests to {origins:?}");

    // Narrow screens get one column; keep a picture of it.
    let phone = open(&browser, &url).await;
    phone.execute(
        chromiumoxide::cdp::browser_protocol::emulation::SetDeviceMetricsOverrideParams::builder()
            .width(390).height(844).device_scale_factor(2.0).mobile(true).build().unwrap(),
    ).await.unwrap();
    wait_until(
        &phone,
        "phone",
        "document.getElementById('status').dataset.state === 'live'",
        "goes live",
    )
    .await;
    let columns: String =
        eval(&phone, "getComputedStyle(document.querySelector('main')).gridTemplateColumns").await;
    assert_eq!(columns.split_whitespace().count(), 1, "one column on a phone: {columns}");
    screenshot(&phone, "demo-phone").await;

    // Saved to disk and opened from there, the page says what to do instead of failing.
    let html = app.client.get(&url).send().await.unwrap().text().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ws-demo.html");
    std::fs::write(&file, html).unwrap();
    let offline = open(&browser, &format!("file://{}", file.display())).await;
    wait_until(
        &offline,
        "offline",
        "!document.getElementById('wrong-origin').hidden && document.getElementById('app').hidden",
        "explains it must be opened from the server",
    )
    .await;

    browser.close().await.unwrap();
    let _ = browser.wait().await;
    events.abort();
}

/// Access tokens that live five seconds: the page renews its token on the open socket before
/// each expiry, so its stream keeps the user's drafts without ever reconnecting; when the
/// password changes elsewhere the stream is revoked, and the page says the session ended and
/// goes on anonymously.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_keeps_its_stream_across_token_expiries_and_ends_it_on_revocation() {
    if !browser_available(CHROMIUM, "chromium") {
        return;
    }
    // The page renews half-way through a token's life, and claims count whole seconds: 5 s
    // leaves at least 1.5 s for a renewal to land, on a machine busy with the rest of the suite.
    let app = TestApp::spawn_with(Arc::new(TestDatabase::sqlite()), |s| {
        s.debug = true;
        s.access_token_lifetime = Duration::from_secs(5);
    })
    .await;
    let ann = app.user("ann@example.com").await;
    let bob = app.user("bob@example.com").await;
    let url = format!("{}/ws-demo/", app.address);
    let (mut browser, events, _profile) = launch().await;
    let page = open(&browser, &url).await;
    let name = "expiry";
    wait_until(
        &page,
        name,
        "document.getElementById('status').dataset.state === 'live'",
        "goes live",
    )
    .await;
    // Signing in replaces the anonymous socket; the old one still reads "live" until the page
    // has reloaded the list, so wait for the new socket by its count, not by the status alone.
    let anonymous: String = eval(&page, "document.body.dataset.socketsOpened").await;
    let opened = (anonymous.parse::<u32>().unwrap() + 1).to_string();
    type_into(&page, "#login-email", "ann@example.com").await;
    type_into(&page, "#login-password", PASSWORD).await;
    click(&page, "#login-submit").await;
    wait_until(&page, name, "document.getElementById('whoami').textContent === 'ann'", "logs in")
        .await;
    wait_until(
        &page,
        name,
        &format!(
            "document.body.dataset.socketsOpened === '{opened}' && \
             document.getElementById('status').dataset.state === 'live'"
        ),
        "is live as ann on a new socket",
    )
    .await;

    // Three renewals on the socket: past several expiries of the token it logged in with.
    let renewals = "[...document.querySelectorAll('#log .log-event')].filter(e => e.dataset.event === 'authenticated').length";
    wait_until(&page, name, &format!("{renewals} >= 3"), "renews its token on the socket").await;
    let author = app.fresh_tokens(&ann).await;
    let draft = app.create_post(&author, "Ann's draft, live", "draft").await;
    let draft_id = draft["id"].as_i64().unwrap();
    wait_until(
        &page,
        name,
        &format!("{} !== null", post_item_js(draft_id)),
        "shows ann's new draft live",
    )
    .await;
    let still: String = eval(&page, "document.body.dataset.socketsOpened").await;
    assert_eq!(still, opened, "no reconnect across the expiries");

    // The password changes elsewhere: the stream is revoked, the page signs out and goes on.
    let (status, _) = app
        .post(
            "/api/auth/password/change/",
            Some(&author.access),
            serde_json::json!({"old_password": PASSWORD, "new_password": "a brand new secret"}),
        )
        .await;
    assert_eq!(status, 200);
    wait_until(
        &page,
        name,
        "!document.getElementById('session-ended').hidden",
        "says the session ended",
    )
    .await;
    wait_until(
        &page,
        name,
        "document.getElementById('whoami').textContent === 'anonymous'",
        "is anonymous",
    )
    .await;
    wait_until(
        &page,
        name,
        "document.getElementById('status').dataset.state === 'live'",
        "is live again",
    )
    .await;
    wait_until(
        &page,
        name,
        &format!("{} === null", post_item_js(draft_id)),
        "no longer lists the draft",
    )
    .await;
    let bob = app.fresh_tokens(&bob).await;
    let public = app.create_post(&bob, "Bob's news", "published").await;
    let public_id = public["id"].as_i64().unwrap();
    wait_until(
        &page,
        name,
        &format!("{} !== null", post_item_js(public_id)),
        "still shows the feed",
    )
    .await;
    screenshot(&page, "demo-session-ended").await;

    browser.close().await.unwrap();
    let _ = browser.wait().await;
    events.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_works_mounted_under_a_prefix() {
    if !browser_available(CHROMIUM, "chromium") {
        return;
    }
    // The embed example: the newspaper under /news inside another application.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db").display().to_string();
    let shop = ExampleProcess::start("embed", &["--listen", "127.0.0.1:0", "--database-url", &db]);
    let base = format!("http://{}", shop.address);
    let (mut browser, events, _profile) = launch().await;
    let p = &open(&browser, &format!("{base}/news/ws-demo/")).await;
    wait_until(
        p,
        "prefixed",
        "document.getElementById('status').dataset.state === 'live'",
        "goes live on /news/ws/blog/",
    )
    .await;
    click(p, "#tab-register").await;
    type_into(p, "#register-email", "ann@example.com").await;
    type_into(p, "#register-password", PASSWORD).await;
    click(p, "#register-submit").await;
    wait_until(
        p,
        "prefixed",
        "document.getElementById('whoami').textContent === 'ann'",
        "registers through /news/api/",
    )
    .await;
    type_into(p, "#create-title", "Under a prefix").await;
    p.evaluate("document.getElementById('create-status').value = 'published'").await.unwrap();
    click(p, "#create-submit").await;
    wait_until(
        p,
        "prefixed",
        "document.querySelector('#posts .post-title')?.textContent === 'Under a prefix'",
        "lists the new post",
    )
    .await;
    let id: i64 = eval(p, "Number(document.querySelector('#posts li').dataset.postId)").await;
    wait_until(p, "prefixed", &log_has_js("post_created", id), "hears of it on the live feed")
        .await;
    let page: serde_json::Value =
        reqwest::get(format!("{base}/news/api/posts/")).await.unwrap().json().await.unwrap();
    assert_eq!(page["results"][0]["title"], "Under a prefix");
    browser.close().await.unwrap();
    let _ = browser.wait().await;
    events.abort();
}
