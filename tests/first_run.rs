//! A new user's first run, as they meet it: a port already taken, `check-config` to see what
//! warden will use, the timestamps of `/health/detailed`.

mod support;

use std::{
    net::TcpListener,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{
    daemon::{run_once, Daemon},
    eventually,
    pg::PgServer,
};

/// A port another process listens on: exit 1 at once, naming the address and the key to
/// change, in the log and in the status systemd would show.
#[test]
fn a_taken_port_names_the_key_to_change() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().unwrap().port();
    let started = Instant::now();
    let (code, _, stderr) = run_once(
        &["run"],
        &[
            ("WARDEN__HTTP__BIND", format!("127.0.0.1:{port}")),
            (
                "NEO4J_URI",
                format!("bolt://127.0.0.1:{}", support::free_port()),
            ),
            (
                "DATABASE_URL",
                format!(
                    "postgres://postgres@127.0.0.1:{}/postgres",
                    support::free_port()
                ),
            ),
        ],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
    for needle in [
        format!("cannot listen on 127.0.0.1:{port}"),
        "another process listens there".to_owned(),
        "http.bind".to_owned(),
        "WARDEN__HTTP__BIND".to_owned(),
        "WARDEN_PORT".to_owned(),
    ] {
        assert!(stderr.contains(&needle), "{needle:?} not in: {stderr}");
    }
    drop(taken);
}

/// scripts/dev-stack checks `WARDEN_PORT` before installing or building anything.
#[test]
fn dev_stack_names_warden_port_when_it_is_taken() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().unwrap().port();
    let started = Instant::now();
    let out = Command::new(support::repo().join("scripts/dev-stack"))
        .arg("--check")
        .env("WARDEN_PORT", port.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/dev-stack");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("port {port} is taken")) && stderr.contains("WARDEN_PORT="),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it installed or built first: {stderr}"
    );

    let out = Command::new(support::repo().join("scripts/dev-stack"))
        .env("WARDEN_PORT", "80a")
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/dev-stack");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("WARDEN_PORT=80a is not a port"));
    drop(taken);
}

/// An unset password shows as unset, a set one as `***`; the output is still TOML.
#[test]
fn check_config_tells_unset_secrets_from_set_ones() {
    let (code, stdout, stderr) = run_once(
        &["check-config"],
        &[("NEO4J_PASSWORD", "first-run-graph-pass".into())],
    );
    assert_eq!(code, 0, "{stderr}");
    let section = |name: &str| {
        let start = stdout
            .find(&format!("[{name}]\n"))
            .unwrap_or_else(|| panic!("no [{name}] in {stdout}"));
        let rest = &stdout[start + name.len() + 3..];
        rest[..rest.find("\n[").unwrap_or(rest.len())].to_owned()
    };
    assert!(
        section("neo4j").contains("password = \"***\"\n"),
        "{stdout}"
    );
    assert!(
        section("postgres").contains("password = \"\"  # unset\n"),
        "{stdout}"
    );
    assert!(!stdout.contains("first-run-graph-pass"));
    assert!(stdout.parse::<toml::Table>().is_ok(), "{stdout}");
}

/// Every timestamp in `/health/detailed` has milliseconds, exactly three digits, in UTC:
/// `timestamp`, `last_ok_at`, `next_attempt_at`, `opened_at`.
#[test]
fn health_timestamps_have_one_precision() {
    let pg = PgServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let d = Daemon::spawn(
            &["run"],
            &[
                ("DATABASE_URL", pg.url()),
                (
                    "NEO4J_URI",
                    format!("bolt://127.0.0.1:{}", support::free_port()),
                ),
                ("WARDEN__NEO4J__PROBE_INTERVAL", "500ms".into()),
                ("WARDEN__NEO4J__PROBE_TIMEOUT", "300ms".into()),
                ("WARDEN__POSTGRES__PROBE_INTERVAL", "500ms".into()),
                ("WARDEN__POSTGRES__PROBE_TIMEOUT", "300ms".into()),
                ("WARDEN__BACKOFF__INITIAL", "5s".into()),
                ("WARDEN__BACKOFF__MAX", "10s".into()),
            ],
        );
        // PostgreSQL connected (a last_ok_at), the graph backing off (a next_attempt_at).
        let body = eventually(
            Duration::from_secs(15),
            "both timestamps present",
            || async {
                let (_, v) = d.get("/health/detailed").await?;
                let pg_ok = v["components"]["postgres"]["last_ok_at"].is_string();
                let graph_next = v["components"]["neo4j"]["next_attempt_at"].is_string();
                (pg_ok && graph_next).then_some(v)
            },
        )
        .await;
        let mut stamps = Vec::new();
        collect_timestamps(&body, "", &mut stamps);
        assert!(stamps.len() >= 3, "{stamps:?}");
        for (key, value) in &stamps {
            assert!(is_millis_utc(value), "{key} = {value}");
        }
    });
}

/// Every string under a key named `timestamp` or ending in `_at`.
fn collect_timestamps(v: &Value, key: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                collect_timestamps(v, &format!("{key}.{k}"), out);
            }
        }
        Value::String(s) if key.ends_with(".timestamp") || key.ends_with("_at") => {
            out.push((key.to_owned(), s.clone()))
        }
        _ => {}
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn is_millis_utc(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}
