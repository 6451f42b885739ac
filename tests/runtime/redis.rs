//! A real Redis server (Debian's `redis-server`, installed by `tests/run.sh`) started per
//! test on a free 127.0.0.1 port, with an append-only file so a restart keeps its data,
//! and read back through `redis-cli` (an independent client, not the sink's own code).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Start a server on a free port; fails loudly when Redis is not installed.
    pub fn start() -> Self {
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").expect("bind a probe port");
            probe.local_addr().expect("addr").port()
        };
        let mut server = Self {
            port,
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
        };
        server.restart();
        server
    }

    /// The `host:port` to grant and configure.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stop the server (SIGKILL): clients get refused connections until `restart`.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start (again) on the same port and data directory, and wait until it answers.
    pub fn restart(&mut self) {
        self.stop();
        let log = std::fs::File::create(self.dir.path().join("redis.log")).expect("log file");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): `bash tests/run.sh` installs it (Debian package redis-server)"
                )
            });
        self.child = Some(child);
        let started = Instant::now();
        while self.cli(&["PING"]).as_deref() != Some("PONG") {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "redis-server did not answer PING on {} within 20 s; log:\n{}",
                self.address(),
                std::fs::read_to_string(self.log_path()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Run one command through `redis-cli`; `None` if it could not reach the server.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-cli ({e}): `bash tests/run.sh` installs it (Debian package redis-tools)")
            });
        let text = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
        (out.status.success() && !text.starts_with("Could not connect")).then_some(text)
    }

    /// The elements of a list.
    pub fn list(&self, key: &str) -> Vec<String> {
        match self.cli(&["LRANGE", key, "0", "-1"]) {
            Some(text) if !text.is_empty() => text.lines().map(str::to_string).collect(),
            _ => Vec::new(),
        }
    }

    /// A string value.
    pub fn get(&self, key: &str) -> Option<String> {
        self.cli(&["GET", key]).filter(|v| !v.is_empty())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
