//! Real processes for multi-instance tests: `newspaper` servers and a Redis of the test's own
//! (so that it can be killed and restarted without disturbing anything else).

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
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("TEST_LOG").is_some() {
                    eprintln!("[server] {line}");
                }
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            let line = log
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("the server never said which port it listens on"));
            if let Some(rest) = line.split("port=").nth(1) {
                if let Some(port) = rest.split_whitespace().next().and_then(|p| p.parse().ok()) {
                    break port;
                }
            }
        };
        ServerProcess { port, child, log }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Log lines printed so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.try_iter().collect()
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
