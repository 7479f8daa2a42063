//! warden under systemd, with systemd's side played by the test: the daemon runs as a process
//! with `NOTIFY_SOCKET` pointing at a Unix datagram socket the test reads, as systemd would.
//! The unit file is checked by `systemd-analyze`. (journald: `tests/journald.rs`.)
//!
//! What a stand-in cannot show: systemd acting on the messages (killing warden when the pings
//! stop, extending its stop timeout, showing `STATUS=` in `systemctl status`).
//! `scripts/systemd-e2e` boots real systemd in a container for that (not part of the suite).

mod support;

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use support::{
    daemon::{run_once, Daemon},
    datagram::Listener,
    pg::PgServer,
};

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

/// A PostgreSQL URL where nothing listens.
fn nowhere_pg() -> String {
    format!(
        "postgres://postgres@127.0.0.1:{}/postgres",
        support::free_port()
    )
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
    let mut env = fast_env(&nowhere(), &nowhere_pg());
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
    let mut env = fast_env(&nowhere(), &nowhere_pg());
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
    let dead_pg = nowhere_pg();
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
    let mut env = fast_env(&nowhere(), &nowhere_pg());
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
