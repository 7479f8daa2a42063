//! warden under systemd, with systemd's own side played by the test: the daemon runs as a
//! process with `NOTIFY_SOCKET` pointing at a Unix datagram socket the test reads (what
//! systemd reads), and journald's socket is a datagram socket the test binds and mounts where
//! journald's would be, in a private mount namespace. The unit file is checked by
//! `systemd-analyze`.
//!
//! What a stand-in cannot show: systemd acting on the messages (killing warden when the pings
//! stop, extending its stop timeout, showing `STATUS=` in `systemctl status`), and journald
//! storing and indexing the fields. `scripts/systemd-e2e` boots real systemd in a container for
//! that (not part of the suite).

mod support;

use std::{
    collections::BTreeMap,
    os::unix::{fs::MetadataExt, net::UnixDatagram},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    time::{Duration, Instant},
};

use support::{
    daemon::{run_once, Daemon},
    pg::PgServer,
};

/// A datagram socket playing systemd's notify socket (or journald's), with every datagram
/// received kept with the time it arrived.
struct Listener {
    path: PathBuf,
    rx: mpsc::Receiver<(Instant, Vec<u8>)>,
    /// Each datagram as text (the notify protocol is text).
    seen: Vec<(Instant, String)>,
    /// Each datagram as sent (journald's values may be binary).
    raw: Vec<Vec<u8>>,
    stop: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

impl Listener {
    /// Binds `<temp dir>/<name>`.
    fn bind(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(name);
        let socket = UnixDatagram::bind(&path).expect("bind the datagram socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            while !stopped.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        });
        Self {
            path,
            rx,
            seen: Vec::new(),
            raw: Vec::new(),
            stop,
            _dir: dir,
        }
    }

    fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// `NOTIFY_SOCKET=<path>`.
    fn notify_env(&self) -> (&'static str, String) {
        ("NOTIFY_SOCKET", self.path.display().to_string())
    }

    fn drain(&mut self, wait: Duration) -> bool {
        match self.rx.recv_timeout(wait) {
            Ok(first) => {
                for (at, bytes) in std::iter::once(first).chain(self.rx.try_iter()) {
                    self.seen
                        .push((at, String::from_utf8_lossy(&bytes).into_owned()));
                    self.raw.push(bytes);
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Waits until a datagram received from now on has a line for which `pred` holds;
    /// returns that line and when it arrived. Panics with `what` and everything seen.
    fn expect(
        &mut self,
        within: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> (Instant, String) {
        self.expect_since(self.seen.len(), within, what, pred)
    }

    /// [`expect`](Self::expect), looking at datagrams from the `from`th on.
    fn expect_since(
        &mut self,
        from: usize,
        within: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> (Instant, String) {
        let deadline = Instant::now() + within;
        loop {
            let found = self.seen[from..]
                .iter()
                .find_map(|(at, d)| d.lines().find(|l| pred(l)).map(|l| (*at, l.to_owned())));
            if let Some(found) = found {
                return found;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{what}: not seen within {within:?}; seen: {:#?}",
                self.lines()
            );
            self.drain(left.min(Duration::from_millis(100)));
        }
    }

    /// Collects for `period`.
    fn collect(&mut self, period: Duration) {
        let until = Instant::now() + period;
        while Instant::now() < until {
            self.drain(until.saturating_duration_since(Instant::now()));
        }
    }

    /// Every line received so far.
    fn lines(&self) -> Vec<String> {
        self.seen
            .iter()
            .flat_map(|(_, d)| d.lines().map(str::to_owned).collect::<Vec<_>>())
            .collect()
    }

    /// When each line equal to `line` arrived.
    fn times_of(&self, line: &str) -> Vec<Instant> {
        self.seen
            .iter()
            .filter(|(_, d)| d.lines().any(|l| l == line))
            .map(|(at, _)| *at)
            .collect()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A `bolt://` URI where nothing listens.
fn nowhere() -> String {
    format!("bolt://127.0.0.1:{}", support::free_port())
}

/// Quick timings, as environment variables; probe intervals above their timeouts.
fn fast_env(neo4j_uri: &str, pg_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("NEO4J_URI", neo4j_uri.to_owned()),
        ("NEO4J_PASSWORD", "systemd-test-secret".to_owned()),
        ("DATABASE_URL", pg_url.to_owned()),
        ("WARDEN__NEO4J__CONNECT_TIMEOUT", "1s".to_owned()),
        ("WARDEN__NEO4J__PROBE_INTERVAL", "500ms".to_owned()),
        ("WARDEN__NEO4J__PROBE_TIMEOUT", "300ms".to_owned()),
        ("WARDEN__POSTGRES__CONNECT_TIMEOUT", "1s".to_owned()),
        ("WARDEN__POSTGRES__PROBE_INTERVAL", "500ms".to_owned()),
        ("WARDEN__POSTGRES__PROBE_TIMEOUT", "300ms".to_owned()),
        ("WARDEN__BACKOFF__INITIAL", "100ms".to_owned()),
        ("WARDEN__BACKOFF__MAX", "2s".to_owned()),
        ("WARDEN__SHUTDOWN_TIMEOUT", "3s".to_owned()),
    ]
}

/// Both databases down: READY all the same, and once it came the HTTP port answers. The
/// status line says what is down. `WATCHDOG_USEC` meant for another process (its
/// `WATCHDOG_PID`): no pings. SIGTERM: `STOPPING=1`, then `EXTEND_TIMEOUT_USEC`, exit 0.
#[test]
fn ready_with_both_databases_down_and_stopping_on_sigterm() {
    let mut notify = Listener::bind("notify");
    let mut env = fast_env(
        &nowhere(),
        &format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            support::free_port()
        ),
    );
    env.push(notify.notify_env());
    env.push(("WATCHDOG_USEC", "2000000".into()));
    env.push(("WATCHDOG_PID", "1".into()));
    let mut d = Daemon::spawn(&["run"], &env);
    let (ready_at, _) = notify.expect(Duration::from_secs(15), "READY=1", |l| l == "READY=1");
    runtime().block_on(async {
        let first = d.get("/health").await;
        assert_eq!(
            first.map(|(status, _)| status),
            Some(200),
            "READY was sent before the HTTP port answered"
        );
    });
    // READY's own datagram carries the first status line.
    let first_status = notify
        .seen
        .iter()
        .find(|(at, _)| *at == ready_at)
        .map(|(_, d)| d.clone())
        .unwrap_or_default();
    assert!(first_status.contains("STATUS=postgres: "), "{first_status}");
    let (_, down) = notify.expect_since(0, Duration::from_secs(10), "both down", |l| {
        l.starts_with("STATUS=")
            && l.contains("postgres: backoff, retry in")
            && l.contains("neo4j: backoff, retry in")
    });
    assert!(down.contains(" · "), "{down}");

    notify.collect(Duration::from_millis(2500));
    assert!(
        notify.times_of("WATCHDOG=1").is_empty(),
        "WATCHDOG_PID names another process: no pings, yet: {:?}",
        notify.lines()
    );

    let mark = notify.seen.len();
    d.signal("TERM");
    let (stopping_at, _) = notify.expect_since(mark, Duration::from_secs(5), "STOPPING=1", |l| {
        l == "STOPPING=1"
    });
    let (extend_at, _) =
        notify.expect_since(mark, Duration::from_secs(5), "EXTEND_TIMEOUT_USEC", |l| {
            l == "EXTEND_TIMEOUT_USEC=5000000"
        });
    assert!(extend_at >= stopping_at);
    assert!(
        d.wait_exit(Duration::from_secs(10)).success(),
        "{}",
        d.logs()
    );
}

/// The status line follows PostgreSQL: connected, then (killed) no longer, then connected
/// again; never more than one `STATUS=` a second, however fast the states change (a killed
/// server refuses reconnects every 100 ms to 2 s).
#[test]
fn status_follows_postgres_and_is_rate_limited() {
    let pg = PgServer::start();
    let mut notify = Listener::bind("notify");
    let mut env = fast_env(&nowhere(), &pg.url());
    env.push(notify.notify_env());
    let mut d = Daemon::spawn(&["run"], &env);
    notify.expect(Duration::from_secs(15), "READY=1", |l| l == "READY=1");
    notify.expect_since(0, Duration::from_secs(10), "postgres connected", |l| {
        l.starts_with("STATUS=postgres: connected · neo4j: ")
    });
    let mark = notify.seen.len();
    pg.kill9();
    let (_, down) = notify.expect_since(
        mark,
        Duration::from_secs(10),
        "postgres no longer connected",
        |l| l.starts_with("STATUS=postgres: ") && !l.starts_with("STATUS=postgres: connected"),
    );
    assert!(
        down.starts_with("STATUS=postgres: backoff, retry in")
            || down.starts_with("STATUS=postgres: connecting"),
        "{down}"
    );
    notify.collect(Duration::from_secs(3));
    let mark = notify.seen.len();
    pg.restart();
    notify.expect_since(mark, Duration::from_secs(15), "connected again", |l| {
        l.starts_with("STATUS=postgres: connected")
    });

    let statuses: Vec<Instant> = notify
        .seen
        .iter()
        .filter(|(_, d)| d.lines().any(|l| l.starts_with("STATUS=")))
        .map(|(at, _)| *at)
        .collect();
    assert!(statuses.len() >= 3, "{:?}", notify.lines());
    for pair in statuses.windows(2) {
        // 1 s apart when sent; the receiving thread may be late by a few hundred ms once.
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(600),
            "two STATUS= {:?} apart: {:#?}",
            pair[1] - pair[0],
            notify.lines()
        );
    }
    assert!(
        notify.times_of("WATCHDOG=1").is_empty(),
        "no WATCHDOG_USEC, no pings"
    );
    d.signal("TERM");
    assert!(d.wait_exit(Duration::from_secs(10)).success());
}

/// Pings, with both databases down, from the check of every actor's mailbox and the HTTP
/// server: every `WATCHDOG_USEC / 2` = 1 s; then `actor`'s mailbox is wedged for 4 s by the
/// fault-injection feature, and the pings stop until it drains again.
fn watchdog_pings_stop_while(actor: &str) {
    let mut notify = Listener::bind("notify");
    let mut env = fast_env(
        &nowhere(),
        &format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            support::free_port()
        ),
    );
    env.push(notify.notify_env());
    env.push(("WATCHDOG_USEC", "2000000".into()));
    env.push(("WARDEN_FAULT_STALL", format!("{actor}:6s:4s")));
    let mut d = Daemon::spawn(&["run"], &env);
    let (ready, _) = notify.expect(Duration::from_secs(15), "READY=1", |l| l == "READY=1");
    notify.collect(Duration::from_secs(14));
    let pings = notify.times_of("WATCHDOG=1");
    let at: Vec<f64> = pings
        .iter()
        .map(|p| (p.saturating_duration_since(ready)).as_secs_f64())
        .collect();
    let gaps: Vec<f64> = at.windows(2).map(|w| w[1] - w[0]).collect();
    let (longest, after) = gaps
        .iter()
        .enumerate()
        .map(|(i, g)| (*g, i + 1))
        .fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a });
    let logs = d.logs();
    let report = format!("pings at {at:.2?} s after READY\n{logs}");

    // Before the stall: the cadence, with both databases down.
    let before: Vec<f64> = gaps[..after.saturating_sub(1)].to_vec();
    assert!(
        before.len() >= 2,
        "too few pings before the stall: {report}"
    );
    for g in &before {
        assert!((0.5..=2.0).contains(g), "a gap of {g:.2} s: {report}");
    }
    let mut sorted = before.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    assert!(
        (0.8..=1.4).contains(&median),
        "median gap {median:.2} s: {report}"
    );

    // The stall (4 s): no ping for at least 3 s of it, and pings again afterwards.
    assert!(
        longest >= 3.0,
        "no gap while the {actor} mailbox stalled: {report}"
    );
    assert!(after < at.len(), "no ping after the stall ended: {report}");
    assert!(
        logs.contains("watchdog ping withheld"),
        "the withheld ping is logged: {report}"
    );
    if actor != "arbiter" {
        assert!(
            logs.contains(&format!("no heartbeat from the {actor} actor")),
            "the stalled actor is named: {report}"
        );
    }
    println!("{actor} stalled 6 s to 10 s after start: pings at {at:.2?} s after READY");
    d.signal("TERM");
    assert!(d.wait_exit(Duration::from_secs(15)).success(), "{report}");
}

#[test]
fn watchdog_pings_stop_while_the_breaker_mailbox_is_stalled() {
    watchdog_pings_stop_while("breaker");
}

#[test]
fn watchdog_pings_stop_while_the_actors_thread_is_held() {
    watchdog_pings_stop_while("arbiter");
}

/// What the watchdog waits for, in the library: every actor answers a heartbeat with both
/// databases down; a stalled mailbox is named, alone; once it drains, all answer again; after
/// a shutdown, the actors are reported stopped.
#[test]
fn a_heartbeat_names_the_stalled_actor_and_ignores_outages() {
    use warden_actors::{faults::StallMailbox, heartbeat::HeartbeatError, Warden};
    let dead_pg = format!(
        "postgres://postgres@127.0.0.1:{}/postgres",
        support::free_port()
    );
    support::actix_test(async {
        let warden = Warden::start(support::fast_settings(&nowhere(), &dead_pg)).expect("start");
        let within = Duration::from_millis(300);
        // Both databases refuse connections all along, and the actors back off meanwhile.
        for _ in 0..5 {
            assert_eq!(warden.heartbeat(within).await, Ok(()));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let stall = StallMailbox {
            duration: Some(Duration::from_millis(1500)),
        };
        for actor in ["neo4j", "postgres", "breaker", "health"] {
            match actor {
                "neo4j" => warden.neo4j.do_send(stall),
                "postgres" => warden.postgres.do_send(stall),
                "breaker" => warden.breaker.do_send(stall),
                _ => warden.health.do_send(stall),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(
                warden.heartbeat(within).await,
                Err(HeartbeatError::Unanswered {
                    actors: vec![actor],
                    within
                }),
                "{actor} stalled"
            );
            support::eventually(Duration::from_secs(5), "all answer again", || async {
                warden.heartbeat(within).await.ok()
            })
            .await;
        }
        warden.shutdown(Duration::from_secs(2)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            matches!(
                warden.heartbeat(within).await,
                Err(HeartbeatError::Stopped { .. })
            ),
            "after shutdown"
        );
    });
}

/// A drain that takes its whole `shutdown_timeout` (the actors' thread is held, so they cannot
/// answer their shutdown) keeps extending systemd's stop timeout, once a second, and still
/// ends within its bound with exit 0.
#[test]
fn a_long_drain_keeps_extending_the_stop_timeout() {
    let mut notify = Listener::bind("notify");
    let mut env = fast_env(
        &nowhere(),
        &format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            support::free_port()
        ),
    );
    env.retain(|(k, _)| *k != "WARDEN__SHUTDOWN_TIMEOUT");
    env.push(("WARDEN__SHUTDOWN_TIMEOUT", "4s".into()));
    env.push(("WARDEN_FAULT_STALL", "arbiter:500ms".into()));
    env.push(notify.notify_env());
    let mut d = Daemon::spawn(&["run"], &env);
    notify.expect(Duration::from_secs(15), "READY=1", |l| l == "READY=1");
    std::thread::sleep(Duration::from_secs(1));
    let mark = notify.seen.len();
    let term = Instant::now();
    d.signal("TERM");
    notify.expect_since(mark, Duration::from_secs(5), "STOPPING=1", |l| {
        l == "STOPPING=1"
    });
    let status = d.wait_exit(Duration::from_secs(15));
    let took = term.elapsed();
    notify.collect(Duration::from_millis(200));
    let extends: Vec<f64> = notify.seen[mark..]
        .iter()
        .filter(|(_, d)| d.lines().any(|l| l == "EXTEND_TIMEOUT_USEC=5000000"))
        .map(|(at, _)| at.saturating_duration_since(term).as_secs_f64())
        .collect();
    println!("drain took {took:?}; EXTEND_TIMEOUT_USEC at {extends:.2?} s after SIGTERM");
    assert!(status.success(), "{}", d.logs());
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(8),
        "the drain took {took:?}"
    );
    assert!(extends.len() >= 3, "{extends:?}");
    for pair in extends.windows(2) {
        let gap = pair[1] - pair[0];
        assert!((0.5..=2.0).contains(&gap), "{extends:?}");
    }
}

/// `warden migrate` (which may build indexes for hours) keeps extending systemd's start
/// timeout while it runs, and says what it does.
#[test]
fn migrate_extends_the_timeout_and_says_so() {
    let pg = PgServer::start();
    let mut notify = Listener::bind("notify");
    let (code, _, stderr) = run_once(
        &["migrate"],
        &[("DATABASE_URL", pg.url()), notify.notify_env()],
    );
    assert_eq!(code, 0, "{stderr}");
    notify.collect(Duration::from_millis(200));
    let lines = notify.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("STATUS=applying migrations to schema ")),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"EXTEND_TIMEOUT_USEC=5000000".to_owned()),
        "{lines:?}"
    );
    assert!(!lines.contains(&"READY=1".to_owned()), "{lines:?}");
}

/// One journal datagram (the native protocol: `KEY=value` lines, or `KEY`, a 64-bit
/// little-endian length and the value for values with a newline) as fields.
fn journal_fields(datagram: &[u8]) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
        let line = &rest[..end];
        if let Some(eq) = line.iter().position(|b| *b == b'=') {
            fields.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            rest = rest.get(end + 1..).unwrap_or_default();
        } else {
            let name = String::from_utf8_lossy(line).into_owned();
            let after = &rest[end + 1..];
            let len = u64::from_le_bytes(after[..8].try_into().expect("length")) as usize;
            fields.insert(
                name,
                String::from_utf8_lossy(&after[8..8 + len]).into_owned(),
            );
            rest = after.get(8 + len + 1..).unwrap_or_default();
        }
    }
    fields
}

/// Whether this machine lets the test make a private mount namespace (root, util-linux).
fn can_unshare_mounts() -> Result<(), String> {
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .output()
        .map_err(|e| format!("unshare: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// With stderr being what `JOURNAL_STREAM` names, warden logs to journald by itself, each
/// event's fields as journal fields (database, attempt, delay, state); nothing on stderr, and
/// no password in any datagram. journald's socket is ours: a private mount namespace mounts
/// the test's directory at /run/systemd/journal for the daemon only.
#[test]
fn journald_gets_structured_fields_when_stderr_is_the_journal() {
    if let Err(why) = can_unshare_mounts() {
        println!("SKIPPED: no private mount namespace for the journald socket here: {why}");
        return;
    }
    let mut journal = Listener::bind("socket");
    let stderr_path = journal.dir().join("stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let meta = stderr.metadata().expect("stat");
    let http_port = support::free_listen_port();
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(
            "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal \
             && mount --bind \"$0\" /run/systemd/journal && exec \"$1\" run",
        )
        .arg(journal.dir())
        .arg(env!("CARGO_BIN_EXE_warden"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env("WARDEN__HTTP__BIND", format!("127.0.0.1:{http_port}"))
        .env("WARDEN__LOG__LEVEL", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    for (k, v) in fast_env(
        &nowhere(),
        &format!(
            "postgres://postgres:pg-journal-secret@127.0.0.1:{}/postgres",
            support::free_port()
        ),
    ) {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn unshare");

    journal.collect(Duration::from_secs(4));
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    let datagrams: Vec<BTreeMap<String, String>> =
        journal.raw.iter().map(|d| journal_fields(d)).collect();
    let shown = format!("{datagrams:#?}");
    let find = |message: &str, database: &str| {
        datagrams
            .iter()
            .find(|f| {
                f.get("MESSAGE").map(String::as_str) == Some(message)
                    && f.get("DATABASE").map(String::as_str) == Some(database)
            })
            .unwrap_or_else(|| panic!("no {message:?} for {database}: {shown}"))
    };
    let backoff = find("connection failed; backing off", "neo4j");
    assert_eq!(backoff["PRIORITY"], "4", "{backoff:?}");
    assert_eq!(backoff["SYSLOG_IDENTIFIER"], "warden", "{backoff:?}");
    assert!(backoff["ATTEMPT"].parse::<u32>().is_ok(), "{backoff:?}");
    assert!(backoff["DELAY_MS"].parse::<u64>().is_ok(), "{backoff:?}");
    assert!(backoff["ERROR"].contains("neo4j"), "{backoff:?}");
    let state = find("connection state changed", "postgres");
    assert!(
        ["connecting", "backoff"].contains(&state["STATE"].as_str()),
        "{state:?}"
    );
    assert!(
        datagrams
            .iter()
            .any(|f| f.get("MESSAGE").map(String::as_str) == Some("warden started")),
        "{shown}"
    );
    for secret in ["pg-journal-secret", "systemd-test-secret"] {
        assert!(!shown.contains(secret), "{secret} reached the journal");
    }
    let on_stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(
        !on_stderr.contains("\"level\""),
        "JSON logs on stderr as well: {on_stderr}"
    );
}

/// `log.format = "journald"` where journald cannot be reached (no socket): logs go on, as JSON
/// lines on stderr, and warden says why.
#[test]
fn journald_format_without_journald_falls_back_to_json() {
    if Path::new("/run/systemd/journal/socket").exists() {
        println!("SKIPPED: this machine runs journald; the fallback needs its absence");
        return;
    }
    let (code, _, stderr) = run_once(
        &["migrate"],
        &[
            (
                "DATABASE_URL",
                format!(
                    "postgres://postgres@127.0.0.1:{}/postgres",
                    support::free_port()
                ),
            ),
            ("WARDEN__LOG__FORMAT", "journald".into()),
            ("WARDEN__POSTGRES__CONNECT_TIMEOUT", "1s".into()),
        ],
    );
    assert_eq!(code, 69, "{stderr}");
    assert!(
        stderr.contains("cannot reach journald") && stderr.contains("logging JSON lines"),
        "{stderr}"
    );
    assert!(stderr.contains("\"level\":\"ERROR\""), "{stderr}");
}

/// The systemd-analyze binary, or why the unit checks are skipped.
fn systemd_analyze() -> Option<&'static str> {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        println!("SKIPPED: systemd-analyze is not installed (scripts/setup-test-tools installs Debian's systemd)");
    }
    found.then_some("systemd-analyze")
}

/// packaging/warden.service with its binary pointed at the one under test (`verify` wants an
/// executable `ExecStart=`).
fn unit_under_test() -> (tempfile::TempDir, PathBuf) {
    let text = std::fs::read_to_string(support::repo().join("packaging/warden.service"))
        .expect("packaging/warden.service");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("warden.service");
    std::fs::write(
        &path,
        text.replace("/usr/local/bin/warden", env!("CARGO_BIN_EXE_warden")),
    )
    .expect("write the unit");
    (dir, path)
}

/// `systemd-analyze verify` with empty stderr (it exits 0 on settings it ignores, such as a
/// misspelt `Type=`), and the settings this release depends on.
#[test]
fn the_unit_file_verifies_clean_and_is_type_notify() {
    let text = std::fs::read_to_string(support::repo().join("packaging/warden.service")).unwrap();
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30s",
        "Restart=on-failure",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing");
    }
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let (_dir, unit) = unit_under_test();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");

    // The check would catch a slip.
    let broken = unit.with_file_name("broken.service");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&unit)
            .unwrap()
            .replace("Type=notify", "Type=notfy"),
    )
    .unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).trim().is_empty());
}

/// The hardening is kept: exposure at most 2.0 (`--threshold` is on the 0-100 scale).
#[test]
fn the_unit_file_keeps_its_hardening() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let (_dir, unit) = unit_under_test();
    let out = Command::new(analyze)
        .args(["security", "--offline=true", "--threshold=20"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze security");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
