//! Real processes tests own: `newspaper` servers, a Redis of the test's own (so that it can be
//! killed and restarted without disturbing anything else), and a Prometheus that scrapes.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (free when asked; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// A `redis-server` owned by one test.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    /// With TLS: the certificate and key files; the server then listens with TLS only.
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl RedisServer {
    /// Whether `redis-server` can be run here.
    pub fn available() -> bool {
        Command::new("redis-server").arg("--version").output().is_ok_and(|o| o.status.success())
    }

    /// Starts one on a free port, keeping nothing on disk.
    pub fn start() -> RedisServer {
        let mut server = RedisServer { port: free_port(), child: None, tls: None };
        server.restart();
        server
    }

    /// Starts one that speaks only TLS, with this certificate and key (PEM files).
    pub fn start_tls(cert: &Path, key: &Path) -> RedisServer {
        let tls = Some((cert.to_owned(), key.to_owned()));
        let mut server = RedisServer { port: free_port(), child: None, tls };
        server.restart();
        server
    }

    /// `redis://127.0.0.1:PORT`, or `rediss://` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Kills it without warning, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        let port = self.port.to_string();
        let mut args: Vec<String> =
            ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"].map(String::from).to_vec();
        match &self.tls {
            None => args.extend(["--port".into(), port]),
            Some((cert, key)) => args.extend([
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port,
                "--tls-cert-file".into(),
                cert.display().to_string(),
                "--tls-key-file".into(),
                key.display().to_string(),
                "--tls-auth-clients".into(),
                "no".into(),
            ]),
        }
        let child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The lines a child process writes to `pipe`, as they come (echoed to the test's stderr with
/// `echo` as a prefix when TEST_LOG is set).
fn lines_of(
    pipe: impl std::io::Read + Send + 'static,
    echo: Option<&'static str>,
) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if let Some(prefix) = echo.filter(|_| std::env::var_os("TEST_LOG").is_some()) {
                eprintln!("{prefix} {line}");
            }
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The first value `pick` finds in the lines, waiting up to 30 s for it (startup takes time).
fn first_line<T>(
    lines: &mpsc::Receiver<String>,
    what: &str,
    pick: impl Fn(&str) -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("never saw {what}"));
        if let Some(value) = pick(&line) {
            return value;
        }
    }
}

/// The port in the server's "listening" line, in the text or the JSON log format.
fn listening_port(line: &str) -> Option<u16> {
    if let Ok(serde_json::Value::Object(entry)) = serde_json::from_str(line) {
        let fields = entry.get("fields")?;
        return (fields["message"] == "listening")
            .then(|| fields["port"].as_u64().and_then(|p| u16::try_from(p).ok()))
            .flatten();
    }
    if !line.contains(" listening ") {
        return None;
    }
    line.split(" port=").nth(1)?.split_whitespace().next()?.parse().ok()
}

/// The executable of the workspace example `name`, as `cargo test --workspace` (or
/// `cargo build --examples`) built it next to this test's own executable.
pub fn example_binary(name: &str) -> std::path::PathBuf {
    let test = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    // target/<profile>/deps/<this test> -> target/<profile>/examples/<name>
    let profile = test.parent().and_then(Path::parent).unwrap_or_else(|| panic!("{test:?}"));
    let binary = profile.join("examples").join(name);
    assert!(
        binary.exists(),
        "{} is missing: run `cargo test --workspace` (which builds every example) or \
         `cargo build --workspace --examples` first",
        binary.display()
    );
    binary
}

/// A running example that serves: it prints `... listening on ADDR` on stdout when ready.
pub struct ExampleProcess {
    /// Where it listens.
    pub address: std::net::SocketAddr,
    child: Child,
}

impl ExampleProcess {
    /// Runs example `name` with `args` and waits until it says where it listens.
    pub fn start(name: &str, args: &[&str]) -> ExampleProcess {
        let mut child = Command::new(example_binary(name))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap_or_else(|e| panic!("example {name}: {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let lines = lines_of(stdout, None);
        let address = first_line(&lines, &format!("example {name}'s address"), |line| {
            let address = line.split("listening on ").nth(1)?;
            Some(address.trim().parse().unwrap_or_else(|e| panic!("{line}: {e}")))
        });
        ExampleProcess { address, child }
    }
}

impl Drop for ExampleProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `newspaper` server process.
pub struct ServerProcess {
    /// The bound port.
    pub port: u16,
    child: Child,
    log: mpsc::Receiver<String>,
}

impl ServerProcess {
    /// Runs `binary` with `env` (plus a bind to port 0) and waits until it listens.
    pub fn start(binary: &Path, env: &[(&str, String)]) -> ServerProcess {
        let mut command = Command::new(binary);
        command.env_clear().env("NEWSPAPER_BIND", "127.0.0.1:0").env("RUST_LOG", "info");
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
        let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
        let log = lines_of(stderr, Some("[server]"));
        let port = first_line(&log, "the server's port", listening_port);
        ServerProcess { port, child, log }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Log lines printed so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }

    /// Waits (up to [`crate::PATIENCE`]) for a log line `wanted` accepts, skipping others.
    pub fn wait_for_log(&self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + crate::PATIENCE;
        loop {
            match self.log.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if wanted(&line) => return line,
                Ok(_) => {}
                Err(_) => panic!("the server never logged {what}"),
            }
        }
    }

    /// Kills it without warning (SIGKILL).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `prometheus` server owned by one test, with its data in a temporary directory.
pub struct PrometheusServer {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl PrometheusServer {
    /// Where Debian's `prometheus` package installs it.
    pub const BINARY: &'static str = "/usr/bin/prometheus";

    /// Whether Prometheus is installed; without it a test skips and says why, unless
    /// NEWSPAPER_REQUIRE_SERVICES is set (as in CI), where a missing one fails the test.
    pub fn available() -> bool {
        if Path::new(Self::BINARY).exists() {
            return true;
        }
        crate::skip_unless_required(&format!(
            "{} is not installed (Debian's prometheus package), so the scrape test does not run",
            Self::BINARY
        ));
        false
    }

    /// Starts one with this configuration (YAML) and waits until it is ready.
    pub fn start(config: &str) -> PrometheusServer {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap_or_else(|e| panic!("{e}"));
        let port = free_port();
        let child = Command::new(Self::BINARY)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", Self::BINARY));
        PrometheusServer { port, child, _dir: dir }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until its `/-/ready` answers 200.
    pub async fn wait_until_ready(&self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = client.get(format!("{}/-/ready", self.url())).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(Instant::now() < deadline, "Prometheus never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs an instant PromQL query; the `data.result` array.
    pub async fn query(&self, client: &reqwest::Client, promql: &str) -> Vec<serde_json::Value> {
        let res = client
            .get(format!("{}/api/v1/query", self.url()))
            .query(&[("query", promql)])
            .send()
            .await
            .unwrap_or_else(|e| panic!("query {promql}: {e}"));
        let body: serde_json::Value = res.json().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(body["status"], "success", "{promql}: {body}");
        body["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Queries until the single result's value is `expected`, or panics with the last answer.
    pub async fn wait_for_value(&self, client: &reqwest::Client, promql: &str, expected: f64) {
        let deadline = Instant::now() + crate::PATIENCE * 3;
        loop {
            let result = self.query(client, promql).await;
            let value = match result.as_slice() {
                [one] => one["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()),
                _ => None,
            };
            if value == Some(expected) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{promql} never became {expected}; last answer: {result:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
