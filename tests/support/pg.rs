//! Throwaway PostgreSQL 15 clusters: initdb into a temp dir, a free port, `runuser -u postgres`
//! when running as root (initdb refuses root). They can be stopped, killed with -9 and
//! restarted on the same port and data. A durable cluster (`start_durable`) keeps every commit
//! it acknowledged across a kill -9, for tests that count acknowledged writes afterwards.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

const BIN: &str = "/usr/lib/postgresql/15/bin";

/// One cluster; stopped (immediately) when dropped.
pub struct PgServer {
    dir: tempfile::TempDir,
    pub port: u16,
    password: Option<String>,
    /// Commits wait for their WAL to be written (`synchronous_commit=on`): a kill -9 of the
    /// server then loses no acknowledged commit. fsync stays off: the machine does not crash.
    durable: bool,
}

fn is_root() -> bool {
    // The uid of this process, without libc: /proc/self is owned by it.
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

impl PgServer {
    /// A cluster with trust authentication.
    pub fn start() -> Self {
        Self::init(None, false)
    }

    /// A cluster with trust authentication that keeps every acknowledged commit across a kill
    /// -9 (the default clusters trade that for speed: `synchronous_commit=off`).
    pub fn start_durable() -> Self {
        Self::init(None, true)
    }

    /// A cluster whose TCP connections need `password` (scram-sha-256) for user postgres.
    pub fn start_with_password(password: &str) -> Self {
        Self::init(Some(password.to_owned()), false)
    }

    fn init(password: Option<String>, durable: bool) -> Self {
        assert!(
            Path::new(BIN).join("initdb").exists(),
            "PostgreSQL 15 is missing: run scripts/setup-test-tools"
        );
        let dir = tempfile::Builder::new()
            .prefix("warden-pg-")
            .tempdir()
            .expect("temp dir");
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success());
        }
        let mut server = Self {
            dir,
            port: super::free_listen_port(),
            password,
            durable,
        };
        let mut initdb = server.command("initdb");
        initdb.arg("-D").arg(server.data()).args([
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "--auth-local=trust",
        ]);
        match &server.password {
            Some(pw) => {
                let pwfile = server.dir.path().join("pwfile");
                std::fs::write(&pwfile, pw).expect("pwfile");
                if is_root() {
                    Command::new("chown")
                        .arg("postgres")
                        .arg(&pwfile)
                        .status()
                        .expect("chown");
                }
                initdb
                    .arg("--auth-host=scram-sha-256")
                    .arg(format!("--pwfile={}", pwfile.display()));
            }
            None => {
                initdb.arg("--auth-host=trust");
            }
        }
        run(initdb, "initdb");
        // A port that was free when picked can be taken before the server binds it (by a
        // parallel test): pick another.
        for attempt in 1.. {
            match server.try_pg_ctl_start() {
                Ok(()) => break,
                Err(e) if attempt < 3 && e.contains("Address already in use") => {
                    server.port = super::free_listen_port();
                }
                Err(e) => panic!("{e}"),
            }
        }
        server
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let path = Path::new(BIN).join(program);
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn pg_ctl_start(&self) {
        if let Err(e) = self.try_pg_ctl_start() {
            panic!("{e}");
        }
    }

    /// Starts the server; on failure, the error carries the end of its log.
    fn try_pg_ctl_start(&self) -> Result<(), String> {
        let mut c = self.command("pg_ctl");
        c.arg("start")
            .arg("-w")
            .args(["-t", "30"])
            .arg("-D")
            .arg(self.data());
        c.arg("-l").arg(self.dir.path().join("server.log"));
        c.arg("-o").arg(format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off \
             -c full_page_writes=off -c max_connections=100 \
             -c shared_buffers=16MB -c synchronous_commit={}",
            self.port,
            self.dir.path().display(),
            if self.durable { "on" } else { "off" }
        ));
        let out = c.output().map_err(|e| format!("pg_ctl: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        Err(format!(
            "pg_ctl start failed on port {}: {}{}\nserver.log ends:\n{}",
            self.port,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ))
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres` (with the password if there is one).
    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("postgres://postgres:{pw}@127.0.0.1:{}/postgres", self.port),
            None => format!("postgres://postgres@127.0.0.1:{}/postgres", self.port),
        }
    }

    /// The URL without any password.
    pub fn url_without_password(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the cluster cleanly.
    pub fn stop(&self) {
        let mut c = self.command("pg_ctl");
        c.arg("stop")
            .args(["-m", "fast", "-w"])
            .arg("-D")
            .arg(self.data());
        run(c, "pg_ctl stop");
    }

    /// Kills the postmaster and every backend with SIGKILL, as a crash would.
    pub fn kill9(&self) {
        let pid_file = self.data().join("postmaster.pid");
        let pid = std::fs::read_to_string(&pid_file).expect("postmaster.pid");
        let pid = pid.lines().next().expect("pid line").trim().to_owned();
        // Its children first-hand: orphaned ones would keep the shared memory busy, and a
        // restart would fail. The postmaster is stopped before they are killed: running, it
        // answers a child's death by starting crash recovery, with children of its own that
        // the kill of their parent would leave orphaned.
        let _ = Command::new("kill").args(["-STOP", &pid]).status();
        let _ = Command::new("pkill").args(["-9", "-P", &pid]).status();
        let _ = Command::new("kill").args(["-9", &pid]).status();
        for _ in 0..200 {
            if !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(&pid) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `pg_ctl restart -m fast`: the server ends every session with 57P01 (admin_shutdown),
    /// stops cleanly and starts again on the same port; returns once it accepts connections.
    pub fn fast_restart(&self) {
        let mut c = self.command("pg_ctl");
        c.arg("restart")
            .args(["-m", "fast", "-w", "-t", "30"])
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"));
        run(c, "pg_ctl restart");
    }

    /// Starts the cluster again after `stop` or `kill9`, on the same port and data.
    pub fn restart(&self) {
        let _ = std::fs::remove_file(self.data().join("postmaster.pid"));
        let _ = std::fs::remove_file(self.dir.path().join(format!(".s.PGSQL.{}.lock", self.port)));
        self.pg_ctl_start();
    }

    /// The server log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// A small pool for the test's own assertions (as postgres, over TCP).
    pub async fn admin(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&self.url())
            .await
            .expect("admin connection")
    }
}

fn is_zombie(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split_whitespace().nth(2) == Some("Z"))
        .unwrap_or(true)
}

fn run(mut c: Command, what: &str) {
    let out = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect(what);
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let mut c = self.command("pg_ctl");
        c.arg("stop")
            .args(["-m", "immediate"])
            .arg("-D")
            .arg(self.data());
        let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}
