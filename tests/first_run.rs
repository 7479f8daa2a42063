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

/// Config errors a new user can act on, from the environment and from a file, for
/// `check-config` and `run`: an unknown `log.format` names every accepted value, a bad
/// `http.bind` is quoted back, and a `probe_timeout` not shorter than its `probe_interval`
/// names both keys and both values. Exit 78 each time.
#[test]
fn config_errors_say_what_is_accepted() {
    /// Variables set, and what the error must say.
    type Case = (Vec<(&'static str, String)>, Vec<&'static str>);
    let cases: Vec<Case> = vec![
        (
            vec![("WARDEN__LOG__FORMAT", "xml".into())],
            vec!["log.format", "\"xml\"", "`pretty`, `json`, `journald`"],
        ),
        (
            vec![("WARDEN__HTTP__BIND", "localhost:8080".into())],
            vec!["http.bind", "\"localhost:8080\"", "127.0.0.1:8080"],
        ),
        (
            vec![
                ("WARDEN__POSTGRES__PROBE_INTERVAL", "2s".into()),
                ("WARDEN__POSTGRES__PROBE_TIMEOUT", "2s".into()),
            ],
            vec![
                "`postgres.probe_timeout` (2s)",
                "shorter than `postgres.probe_interval` (2s)",
            ],
        ),
        (
            vec![
                ("WARDEN__NEO4J__PROBE_INTERVAL", "500ms".into()),
                ("WARDEN__NEO4J__PROBE_TIMEOUT", "3s".into()),
            ],
            vec![
                "`neo4j.probe_timeout` (3s)",
                "shorter than `neo4j.probe_interval` (500ms)",
            ],
        ),
    ];
    for (env, needles) in &cases {
        for cmd in ["check-config", "run"] {
            let (code, _, stderr) = run_once(&[cmd], env);
            assert_eq!(code, 78, "{cmd} {env:?}: {stderr}");
            for needle in needles {
                assert!(
                    stderr.contains(needle),
                    "{cmd} {env:?}: {needle:?} not in: {stderr}"
                );
            }
        }
    }
    // The same from a file; and the default format name is accepted back.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("warden.toml");
    // run_once sets WARDEN__LOG__FORMAT, which would win over the file.
    let check_file = || {
        let out = Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["--config", file.to_str().unwrap(), "check-config"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .output()
            .expect("run warden");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    std::fs::write(&file, "[log]\nformat = \"Journal\"\n").unwrap();
    let (code, _, stderr) = check_file();
    assert_eq!(code, Some(78), "{stderr}");
    for needle in ["log.format", "\"Journal\"", "`pretty`, `json`, `journald`"] {
        assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
    }
    std::fs::write(
        &file,
        "[http]\nbind = \"8080\"\n[log]\nformat = \"journald\"\n",
    )
    .unwrap();
    let (code, _, stderr) = check_file();
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.contains("http.bind") && stderr.contains("\"8080\""),
        "{stderr}"
    );
    std::fs::write(&file, "[log]\nformat = \"journald\"\n").unwrap();
    let (code, stdout, stderr) = check_file();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("format = \"journald\""), "{stdout}");
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
        // PostgreSQL connected (a last_ok_at), the graph backing off (a next_attempt_at), the
        // `config` table read (a checked_at).
        let body = eventually(
            Duration::from_secs(15),
            "both timestamps present",
            || async {
                let (_, v) = d.get("/health/detailed").await?;
                let pg_ok = v["components"]["postgres"]["last_ok_at"].is_string();
                let graph_next = v["components"]["neo4j"]["next_attempt_at"].is_string();
                // The `config` table read too: its times are health timestamps as well.
                let config_read = v["config"]["checked_at"].is_string();
                (pg_ok && graph_next && config_read).then_some(v)
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

/// `warden --help` lists the environment variables warden reads and every exit code it
/// returns: the codes the code defines (`warden::help::EXIT_CODES`, built from the constants
/// `main` and `daemon` return), and no fewer than the six known today. Exit 2 for a wrong
/// command line is clap's; it is checked by giving one.
#[test]
fn help_lists_the_environment_and_the_exit_codes() {
    use warden::{
        config::EX_CONFIG,
        daemon::{EX_FAILURE, EX_SOFTWARE, EX_UNAVAILABLE},
        help::{EXIT_CODES, EX_USAGE_CLAP},
    };
    let (code, help, stderr) = run_once(&["--help"], &[]);
    assert_eq!(code, 0, "{stderr}");
    for var in [
        "WARDEN__<SECTION>__<KEY>",
        "WARDEN__HTTP__BIND",
        "DATABASE_URL",
        "NEO4J_URI",
        "NEO4J_PASSWORD_FILE",
        "WARDEN__POSTGRES__PASSWORD_FILE",
        "POSTGRES_SCHEMA",
        "RUST_LOG",
        "JOURNAL_STREAM",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WARDEN_PORT is read by scripts/dev-stack only",
    ] {
        assert!(help.contains(var), "{var} not in: {help}");
    }
    let exit_codes = &help[help.find("Exit codes:").expect("an exit code section")..];
    let mut listed: Vec<u8> = exit_codes
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    listed.sort_unstable();
    let mut defined: Vec<u8> = EXIT_CODES.iter().map(|(c, _)| *c).collect();
    defined.sort_unstable();
    assert_eq!(listed, defined, "{exit_codes}");
    let mut known = vec![
        0,
        EX_FAILURE,
        EX_USAGE_CLAP,
        EX_UNAVAILABLE,
        EX_SOFTWARE,
        EX_CONFIG,
    ];
    known.sort_unstable();
    assert_eq!(listed, known);
    assert_eq!(known, vec![0, 1, 2, 69, 70, 78]);

    let (code, short, _) = run_once(&["-h"], &[]);
    assert_eq!(code, 0);
    assert!(short.contains("warden --help"), "{short}");
    let (code, _, stderr) = run_once(&["--no-such-option"], &[]);
    assert_eq!(i32::from(EX_USAGE_CLAP), code, "{stderr}");
}

/// At startup, before any migration runs, warden logs at info level where PostgreSQL calls go
/// (host, port, database, user) and the schema its migrations write, and never the password;
/// with no `postgres.url` it says the target is the built-in default. Against a real
/// PostgreSQL 15 with a password, the migrations then create that schema. It does not show
/// the journald rendering of the line (tests/journald.rs covers the format).
#[test]
fn startup_names_the_postgres_target_and_schema_before_migrating() {
    let password = "first-run-pg-pass-7q";
    let pg = PgServer::start_with_password(password);
    let graph = format!("bolt://127.0.0.1:{}", support::free_port());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let d = Daemon::spawn(
            &["run"],
            &[
                ("DATABASE_URL", pg.url()),
                ("POSTGRES_SCHEMA", "first_run_app".into()),
                ("NEO4J_URI", graph.clone()),
            ],
        );
        let logs = eventually(Duration::from_secs(20), "migrations applied", || async {
            let logs = d.logs();
            logs.contains("migrations applied").then_some(logs)
        })
        .await;
        let line = |needle: &str| -> (usize, Value) {
            let at = logs
                .find(needle)
                .unwrap_or_else(|| panic!("{needle:?} not logged: {logs}"));
            let start = logs[..at].rfind('\n').map_or(0, |i| i + 1);
            let end = at + logs[at..].find('\n').unwrap_or(logs.len() - at);
            (
                at,
                serde_json::from_str(&logs[start..end]).expect("a JSON log line"),
            )
        };
        let (target_at, target) = line("postgres target:");
        let (migrated_at, _) = line("migrations applied");
        assert!(target_at < migrated_at, "{logs}");
        assert_eq!(target["level"], "INFO", "{target}");
        assert_eq!(target["host"], "127.0.0.1", "{target}");
        assert_eq!(target["port"], pg.port, "{target}");
        assert_eq!(target["dbname"], "postgres", "{target}");
        assert_eq!(target["user"], "postgres", "{target}");
        assert_eq!(target["schema"], "first_run_app", "{target}");
        assert_eq!(target["default_url"], false, "{target}");
        let message = target["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("postgres@127.0.0.1:{}/postgres", pg.port))
                && message.contains("schema `first_run_app`"),
            "{message}"
        );
        assert!(!logs.contains(password), "the password was logged: {logs}");
    });
    let created = std::process::Command::new("psql")
        .args([
            "-At",
            "-c",
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'first_run_app'",
        ])
        .arg(pg.url())
        .output();
    if let Ok(out) = created {
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
        }
    }

    // No postgres.url: the line says so. Migrations off, so that this test never writes into
    // whatever may listen on this machine's port 5432.
    let d = Daemon::spawn(
        &["run"],
        &[
            ("WARDEN__POSTGRES__RUN_MIGRATIONS", "false".into()),
            ("NEO4J_URI", graph),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.logs().contains("postgres target:") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let logs = d.logs();
    assert!(
        logs.contains("postgres target: postgres@127.0.0.1:5432/postgres (the built-in default")
            && logs.contains("schema `warden`"),
        "{logs}"
    );
}
