//! The demo page at /ws-demo/ in Debian's Firefox ESR (headless), driven over WebDriver BiDi,
//! the W3C protocol Firefox speaks natively, so no geckodriver is needed. The full two-browser
//! scenario runs in Chromium (browser.rs); this one checks that the same page works in the
//! other engine: its WebSocket goes live, typing and clicking log in and publish, and changes
//! made elsewhere appear without a reload. Skips (and says why) where Firefox is not installed,
//! unless NEWSPAPER_REQUIRE_SERVICES is set, as in CI.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use newspaper_tests::{
    PASSWORD, TestApp, artifacts_dir, browser_available, log_has_js, post_item_js,
};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const FIREFOX: &str = "/usr/bin/firefox-esr";
const WAIT: Duration = Duration::from_secs(20);

/// One headless Firefox with a throwaway profile and one tab, spoken to over WebDriver BiDi.
struct Firefox {
    process: Child,
    bidi: WebSocketStream<MaybeTlsStream<TcpStream>>,
    last_id: u64,
    tab: String,
    _profile: tempfile::TempDir,
}

impl Firefox {
    /// Starts Firefox; its remote agent applies its own "recommended" preferences, which turn
    /// off updates, telemetry and other background traffic.
    async fn launch() -> Firefox {
        let profile = tempfile::tempdir().unwrap();
        let mut process = Command::new(FIREFOX)
            .args(["--headless", "--no-remote", "--remote-debugging-port", "0", "--profile"])
            .arg(profile.path())
            .env("HOME", profile.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("firefox starts");
        let (address_tx, address_rx) = tokio::sync::oneshot::channel();
        let stderr = process.stderr.take().unwrap();
        // Keep reading after the address so Firefox never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut address_tx = Some(address_tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                match line.split_once("WebDriver BiDi listening on ") {
                    Some((_, address)) => {
                        if let Some(tx) = address_tx.take() {
                            let _ = tx.send(address.trim().to_owned());
                        }
                    }
                    None if line.contains("rror") => eprintln!("firefox: {line}"),
                    None => {}
                }
            }
        });
        let address = tokio::time::timeout(Duration::from_secs(60), address_rx)
            .await
            .expect("firefox announces its WebDriver BiDi address within 60 s")
            .expect("firefox exited before announcing its address");
        let (bidi, _) =
            tokio_tungstenite::connect_async(format!("{address}/session")).await.unwrap();
        let mut firefox =
            Firefox { process, bidi, last_id: 0, tab: String::new(), _profile: profile };
        firefox.command("session.new", json!({"capabilities": {}})).await;
        let tree = firefox.command("browsingContext.getTree", json!({})).await;
        firefox.tab = tree["contexts"][0]["context"].as_str().unwrap().to_owned();
        firefox
            .command(
                "browsingContext.setViewport",
                json!({"context": firefox.tab, "viewport": {"width": 1280, "height": 1100}}),
            )
            .await;
        firefox
    }

    /// Sends one command and returns its result; a BiDi error fails the test.
    async fn command(&mut self, method: &str, params: Value) -> Value {
        self.try_command(method, params.clone())
            .await
            .unwrap_or_else(|error| panic!("{method} {params}: {error}"))
    }

    async fn try_command(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.last_id += 1;
        let id = self.last_id;
        let request = json!({"id": id, "method": method, "params": params});
        self.bidi.send(Message::text(request.to_string())).await.unwrap();
        loop {
            let frame = tokio::time::timeout(WAIT, self.bidi.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method} within {WAIT:?}"))
                .expect("the BiDi connection stays open")
                .unwrap();
            let Message::Text(text) = frame else { continue };
            let message: Value = serde_json::from_str(&text).unwrap();
            // Anything without our id is an event; none are subscribed to, so none matter.
            if message["id"] != id {
                continue;
            }
            return match message["type"].as_str() {
                Some("success") => Ok(message["result"].clone()),
                _ => Err(message),
            };
        }
    }

    async fn navigate(&mut self, url: &str) {
        let params = json!({"context": self.tab, "url": url, "wait": "complete"});
        self.command("browsingContext.navigate", params).await;
    }

    /// Evaluates `js` in the page; returns BiDi's remote value, or the error.
    async fn try_eval(&mut self, js: &str) -> Result<Value, Value> {
        let params = json!({
            "expression": js,
            "target": {"context": self.tab},
            "awaitPromise": false,
        });
        let result = self.try_command("script.evaluate", params).await?;
        match result["type"].as_str() {
            Some("success") => Ok(result["result"].clone()),
            _ => Err(result),
        }
    }

    async fn eval_i64(&mut self, js: &str) -> i64 {
        let value = self.try_eval(js).await.unwrap_or_else(|e| panic!("{js}: {e}"));
        value["value"].as_i64().unwrap_or_else(|| panic!("{js} is not a number: {value}"))
    }

    /// Waits until `condition` (a JavaScript expression) is true; on timeout, saves a
    /// screenshot and fails with `what`.
    async fn wait_until(&mut self, condition: &str, what: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let holds = self.try_eval(&format!("Boolean({condition})")).await;
            if holds.is_ok_and(|v| v["value"] == true) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let shot = self.screenshot("firefox-failed").await;
                panic!("{what} (condition `{condition}`); screenshot at {}", shot.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The page's element for `selector`, scrolled into view, as a BiDi reference.
    async fn element(&mut self, selector: &str) -> Value {
        let js = format!(
            "(() => {{ const e = document.querySelector({selector:?}); e?.scrollIntoView({{block: 'center'}}); return e; }})()"
        );
        let node = self.try_eval(&js).await.unwrap_or_else(|e| panic!("{selector}: {e}"));
        assert_eq!(node["type"], "node", "no element matches {selector}");
        json!({"sharedId": node["sharedId"]})
    }

    /// A real mouse click in the middle of the element.
    async fn click(&mut self, selector: &str) {
        let element = self.element(selector).await;
        let actions = json!([{
            "type": "pointer",
            "id": "mouse",
            "parameters": {"pointerType": "mouse"},
            "actions": [
                {"type": "pointerMove", "x": 0, "y": 0, "origin": {"type": "element", "element": element}},
                {"type": "pointerDown", "button": 0},
                {"type": "pointerUp", "button": 0},
            ],
        }]);
        self.command("input.performActions", json!({"context": self.tab, "actions": actions}))
            .await;
    }

    /// Clicks into the field, then types `text` key by key.
    async fn type_into(&mut self, selector: &str, text: &str) {
        self.click(selector).await;
        let keys: Vec<Value> = text
            .chars()
            .flat_map(|c| {
                let key = c.to_string();
                [json!({"type": "keyDown", "value": key}), json!({"type": "keyUp", "value": key})]
            })
            .collect();
        let actions = json!([{"type": "key", "id": "keyboard", "actions": keys}]);
        self.command("input.performActions", json!({"context": self.tab, "actions": actions}))
            .await;
    }

    /// Saves the whole page as target/test-artifacts/`name`.png.
    async fn screenshot(&mut self, name: &str) -> PathBuf {
        let params = json!({"context": self.tab, "origin": "document"});
        let shot = self.command("browsingContext.captureScreenshot", params).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        let path = artifacts_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Firefox {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_works_in_firefox() {
    if !browser_available(FIREFOX, "firefox-esr") {
        return;
    }
    let app =
        TestApp::spawn_with(std::sync::Arc::new(newspaper_tests::TestDatabase::sqlite()), |s| {
            s.debug = true;
        })
        .await;
    let mut firefox = Firefox::launch().await;
    firefox.navigate(&format!("{}/ws-demo/", app.address)).await;
    firefox
        .wait_until("document.getElementById('status').dataset.state === 'live'", "goes live")
        .await;
    firefox
        .wait_until("document.getElementById('presence').textContent === '1'", "counts itself")
        .await;
    let mut other_client = app.ws("").await;
    firefox
        .wait_until(
            "document.getElementById('presence').textContent === '2'",
            "counts a second client",
        )
        .await;

    // Registering through the form logs in.
    firefox.click("#tab-register").await;
    firefox.type_into("#register-email", "ann@example.com").await;
    firefox.type_into("#register-password", PASSWORD).await;
    firefox.click("#register-submit").await;
    firefox
        .wait_until(
            "document.getElementById('whoami').textContent === 'ann'",
            "is logged in as ann",
        )
        .await;

    // Publishing from the page: listed, and the other client hears of it.
    firefox.type_into("#create-title", "Written in Firefox").await;
    firefox.type_into("#create-content", "Typed key by key.").await;
    firefox.try_eval("document.getElementById('create-status').value = 'published'").await.unwrap();
    firefox.click("#create-submit").await;
    firefox
        .wait_until(
            "document.querySelector('#posts .post-title')?.textContent === 'Written in Firefox'",
            "lists its post",
        )
        .await;
    let own = firefox.eval_i64("Number(document.querySelector('#posts li').dataset.postId)").await;
    let heard = other_client.next_event().await;
    assert_eq!((&heard["event"], &heard["id"]), (&json!("post_created"), &json!(own)));

    // Someone else's create, edit and delete show up live.
    let bob = app.user("bob@example.com").await;
    let post = app.create_post(&bob, "Bob's news", "published").await;
    let id = post["id"].as_i64().unwrap();
    firefox
        .wait_until(
            &format!(
                "{}?.querySelector('.post-title').textContent === \"Bob's news\"",
                post_item_js(id)
            ),
            "shows bob's post",
        )
        .await;
    firefox.wait_until(&log_has_js("post_created", id), "logs post_created").await;
    app.call(
        Method::PATCH,
        &format!("/api/posts/{id}/"),
        Some(&bob.access),
        Some(json!({"title": "Bob's news, updated"})),
    )
    .await;
    firefox
        .wait_until(
            &format!(
                "{}?.querySelector('.post-title').textContent === \"Bob's news, updated\"",
                post_item_js(id)
            ),
            "shows the edit",
        )
        .await;
    firefox.wait_until(&log_has_js("post_updated", id), "logs post_updated").await;
    app.call(Method::DELETE, &format!("/api/posts/{id}/"), Some(&bob.access), None).await;
    firefox.wait_until(&format!("{} === null", post_item_js(id)), "removes the deleted post").await;
    firefox.wait_until(&log_has_js("post_deleted", id), "logs post_deleted").await;
    firefox.wait_until(&format!("{} !== null", post_item_js(own)), "keeps its own post").await;

    let shot = firefox.screenshot("firefox-demo").await;
    eprintln!("screenshot at {}", shot.display());
    other_client.close().await;
    drop(firefox);
    app.stop().await;
}
