//! The daemon as an operator runs it: a process with a clean environment, configured by
//! environment variables, stopped by signals, watched over HTTP.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    daemon::{run_once, Daemon},
    eventually,
    graph::BoltStub,
    pg::PgServer,
    proxy::Proxy,
};

/// Millisecond timings for the daemon, as environment variables.
fn fast_env(neo4j_uri: &str, pg_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("NEO4J_URI", neo4j_uri.to_owned()),
        ("NEO4J_PASSWORD", "warden-test".to_owned()),
        ("DATABASE_URL", pg_url.to_owned()),
        ("WARDEN__NEO4J__CONNECT_TIMEOUT", "1s".to_owned()),
        ("WARDEN__NEO4J__PROBE_INTERVAL", "400ms".to_owned()),
        ("WARDEN__NEO4J__PROBE_TIMEOUT", "300ms".to_owned()),
        ("WARDEN__POSTGRES__CONNECT_TIMEOUT", "1s".to_owned()),
        ("WARDEN__POSTGRES__PROBE_INTERVAL", "400ms".to_owned()),
        ("WARDEN__POSTGRES__PROBE_TIMEOUT", "300ms".to_owned()),
        ("WARDEN__BACKOFF__INITIAL", "100ms".to_owned()),
        ("WARDEN__BACKOFF__MAX", "500ms".to_owned()),
        ("WARDEN__BREAKER__COOLDOWN", "1s".to_owned()),
        ("WARDEN__SHUTDOWN_TIMEOUT", "3s".to_owned()),
    ]
}

fn nowhere() -> String {
    format!("127.0.0.1:{}", support::free_port())
}

async fn component(d: &Daemon, db: &str) -> Option<Value> {
    let (_, body) = d.get("/health/detailed").await?;
    Some(body["components"][db].clone())
}

/// Bad configuration exits with 78 and names the key: a typo in the file, an invalid
/// duration, number or URL, a missing `--config` file; for `run` and for `check-config`.
#[test]
fn bad_configuration_exits_78_and_names_the_key() {
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (
            vec![("WARDEN__BREAKER__COOLDOWN", "soon".into())],
            "breaker.cooldown",
        ),
        (
            vec![("WARDEN__POSTGRES__MAX_CONNECTIONS", "lots".into())],
            "postgres.max_connections",
        ),
        (
            vec![("DATABASE_URL", "mysql://u:hunter22@db/x".into())],
            "postgres.url",
        ),
        (vec![("NEO4J_URI", "not a uri".into())], "neo4j.uri"),
        (
            vec![("WARDEN__BACKOFF__JITTER", "2".into())],
            "backoff.jitter",
        ),
        (
            vec![("WARDEN__HTTP__BIND", "everywhere".into())],
            "http.bind",
        ),
    ];
    for (env, key) in cases {
        for cmd in ["check-config", "run"] {
            let (code, _, stderr) = run_once(&[cmd], &env);
            assert_eq!(code, 78, "{cmd} {env:?}: {stderr}");
            assert!(
                stderr.contains(key),
                "{cmd}: `{key}` not named in: {stderr}"
            );
            assert!(!stderr.contains("hunter22"), "a secret leaked: {stderr}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("warden.toml");
    std::fs::write(&file, "[breaker]\ncooldwn = \"10s\"\n").unwrap();
    let (code, _, stderr) = run_once(&["--config", file.to_str().unwrap(), "check-config"], &[]);
    assert_eq!(code, 78);
    assert!(stderr.contains("cooldwn"), "{stderr}");
    let (code, _, stderr) = run_once(&["--config", "/nonexistent/warden.toml", "run"], &[]);
    assert_eq!(code, 78);
    assert!(stderr.contains("/nonexistent/warden.toml"), "{stderr}");

    // A good file: the effective configuration, secrets as ***.
    std::fs::write(
        &file,
        "shutdown_timeout = \"5s\"\n[neo4j]\npassword = \"graph-s3cret\"\n",
    )
    .unwrap();
    let (code, stdout, _) = run_once(
        &["--config", file.to_str().unwrap(), "check-config"],
        &[(
            "DATABASE_URL",
            "postgres://app:pg-s3cret@db:5432/app".into(),
        )],
    );
    assert_eq!(code, 0);
    assert!(stdout.contains("shutdown_timeout = \"5s\""), "{stdout}");
    assert!(
        stdout.contains("postgres://app:***@db:5432/app"),
        "{stdout}"
    );
    assert!(!stdout.contains("s3cret"), "{stdout}");
}

/// Durations and a multiplier that no operator means (a cooldown of 100000 years, a backoff
/// of 114 million years) exit 78 and name the key and its bound; values at the bound pass.
/// It does not show that the daemon runs well with them (see the unit and property tests).
#[test]
fn absurd_durations_exit_78_and_name_the_bound() {
    let cases = [
        (
            "WARDEN__BREAKER__COOLDOWN",
            "100000 years",
            "breaker.cooldown",
            "1h",
        ),
        ("WARDEN__BACKOFF__MAX", "999999999999h", "backoff.max", "1h"),
        ("WARDEN__BACKOFF__INITIAL", "2h", "backoff.initial", "1h"),
        (
            "WARDEN__BACKOFF__MULTIPLIER",
            "1e300",
            "backoff.multiplier",
            "10",
        ),
        ("WARDEN__RETRY__MAX", "10m", "retry.max", "1m"),
        (
            "WARDEN__NEO4J__PROBE_INTERVAL",
            "1h 1s",
            "neo4j.probe_interval",
            "1h",
        ),
        (
            "WARDEN__POSTGRES__CONNECT_TIMEOUT",
            "3h",
            "postgres.connect_timeout",
            "1h",
        ),
        (
            "WARDEN__POSTGRES__QUERY_TIMEOUT",
            "400days",
            "postgres.query_timeout",
            "1day",
        ),
        (
            "WARDEN__SHUTDOWN_TIMEOUT",
            "10years",
            "shutdown_timeout",
            "1h",
        ),
    ];
    for (var, value, key, bound) in cases {
        let (code, stdout, stderr) = run_once(&["check-config"], &[(var, value.into())]);
        assert_eq!(code, 78, "{var}={value}: {stdout}{stderr}");
        assert!(
            stderr.contains(&format!("`{key}`")) && stderr.contains(&format!("at most {bound}"))
                || key == "backoff.multiplier" && stderr.contains("between 1 and 10"),
            "{var}={value}: key or bound not named: {stderr}"
        );
    }
    let at_the_bounds = [
        ("WARDEN__BREAKER__COOLDOWN", "1h"),
        ("WARDEN__BACKOFF__MAX", "1h"),
        ("WARDEN__BACKOFF__MULTIPLIER", "10"),
        ("WARDEN__RETRY__MAX", "1m"),
        ("WARDEN__POSTGRES__QUERY_TIMEOUT", "24h"),
        ("WARDEN__SHUTDOWN_TIMEOUT", "1h"),
    ]
    .map(|(k, v)| (k, v.to_owned()));
    let (code, _, stderr) = run_once(&["check-config"], &at_the_bounds);
    assert_eq!(code, 0, "{stderr}");
}

/// A secret in a URL's query (libpq's `password=`, a token in a Neo4j routing context) never
/// reaches stdout or stderr: not in the error that rejects it, not in `check-config`'s output.
/// It does not show that drivers' own messages are scrubbed (see `secret::sanitize`).
#[test]
fn url_query_secrets_never_reach_the_output() {
    let env = vec![(
        "DATABASE_URL",
        "postgres://u@127.0.0.1/db?sslmode=disable&password=qpw-4e1".to_owned(),
    )];
    for cmd in ["check-config", "run"] {
        let (code, stdout, stderr) = run_once(&[cmd], &env);
        assert_eq!(code, 78, "{cmd}: {stderr}");
        assert!(
            stderr.contains("postgres.url") && stderr.contains("`password`"),
            "{cmd}: the key and the parameter are not named: {stderr}"
        );
        for out in [&stdout, &stderr] {
            assert!(!out.contains("qpw-4e1"), "{cmd}: a secret leaked: {out}");
        }
    }

    let (code, stdout, stderr) = run_once(
        &["check-config"],
        &[("NEO4J_URI", "neo4j://graph:7687?token=tpw-9b3".into())],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("neo4j://graph:7687?token=***"), "{stdout}");
    for out in [&stdout, &stderr] {
        assert!(!out.contains("tpw-9b3"), "a secret leaked: {out}");
    }
}

/// SIGTERM: the daemon drains, closes its pool and exits 0, leaving no connection with
/// application_name 'warden' in pg_stat_activity.
#[test]
fn sigterm_exits_0_and_closes_every_connection() {
    let pg = PgServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut env = fast_env(&format!("bolt://{}", nowhere()), &pg.url());
        env.push(("WARDEN__POSTGRES__MIN_CONNECTIONS", "2".into()));
        let mut d = Daemon::spawn(&[], &env);
        eventually(Duration::from_secs(10), "postgres connected", || async {
            let c = component(&d, "postgres").await?;
            (c["status"] == "connected").then_some(())
        })
        .await;
        let admin = pg.admin().await;
        let count = || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'warden'",
            )
            .fetch_one(&admin)
            .await
            .unwrap()
        };
        eventually(
            Duration::from_secs(5),
            "warden holds connections",
            || async { (count().await >= 1).then_some(()) },
        )
        .await;
        let stopping = Instant::now();
        d.signal("TERM");
        let status = d.wait_exit(Duration::from_secs(6));
        assert_eq!(status.code(), Some(0), "{}", d.logs());
        assert!(
            stopping.elapsed() < Duration::from_secs(4),
            "took {:?}",
            stopping.elapsed()
        );
        eventually(
            Duration::from_secs(2),
            "no warden connection left",
            || async { (count().await == 0).then_some(()) },
        )
        .await;
        let logs = d.logs();
        assert!(logs.contains("\"signal\":\"SIGTERM\""), "{logs}");
    });
}

/// Wrong passwords: health names an authentication failure for both databases, and neither
/// password appears in the logs or the HTTP output.
#[test]
fn wrong_passwords_show_in_health_and_never_leak() {
    let pg = PgServer::start_with_password("right-pass-8c1");
    let stub = BoltStub::start("unauthorized.script");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut env = fast_env(
            &stub.uri(),
            &format!(
                "postgres://postgres:wrong-pass-5d2@127.0.0.1:{}/postgres",
                pg.port
            ),
        );
        env.retain(|(k, _)| *k != "NEO4J_PASSWORD" && !k.starts_with("WARDEN__BACKOFF__"));
        env.push(("NEO4J_PASSWORD", "wrong-graph-pass".into()));
        // The stub serves one connection; a slow backoff keeps its refusal on show instead of
        // the "connection refused" of the attempts after it.
        env.push(("WARDEN__BACKOFF__INITIAL", "3s".into()));
        env.push(("WARDEN__BACKOFF__MAX", "5s".into()));
        let d = Daemon::spawn(&[], &env);
        let body = eventually(
            Duration::from_secs(10),
            "both show authentication failures",
            || async {
                let text = d.get_text("/health/detailed").await?;
                let v: Value = serde_json::from_str(&text).ok()?;
                let pg_err = v["components"]["postgres"]["last_error"]
                    .as_str()?
                    .to_owned();
                let neo_err = v["components"]["neo4j"]["last_error"].as_str()?.to_owned();
                (pg_err.contains("authentication failed")
                    && neo_err.contains("authentication failed"))
                .then_some(text)
            },
        )
        .await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "degraded");
        assert_eq!(v["components"]["postgres"]["healthy"], false);
        // Not retried hot: the actor waits out its backoff between attempts.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let failures = component(&d, "postgres").await.unwrap()["consecutive_failures"]
            .as_u64()
            .unwrap();
        assert!(failures <= 6, "{failures} attempts in about a second");
        let logs = d.logs();
        for secret in ["wrong-pass-5d2", "wrong-graph-pass"] {
            assert!(!body.contains(secret), "{secret} in HTTP output: {body}");
            assert!(!logs.contains(secret), "{secret} in logs");
        }
        assert!(
            logs.contains("authentication failed"),
            "the failure is logged"
        );
    });
}

/// A database that accepts TCP and never answers: health still answers in well under 100 ms,
/// the probe (or the connect) times out, and the component is unhealthy.
#[test]
fn a_hung_database_never_slows_health() {
    let pg = PgServer::start();
    let pg_proxy = Proxy::start(pg.port);
    let graph_hole = Proxy::start(support::free_port());
    graph_hole.hang();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let env = fast_env(
            &format!("bolt://127.0.0.1:{}", graph_hole.port),
            &format!("postgres://postgres@127.0.0.1:{}/postgres", pg_proxy.port),
        );
        let d = Daemon::spawn(&[], &env);
        eventually(Duration::from_secs(10), "postgres connected", || async {
            let c = component(&d, "postgres").await?;
            (c["status"] == "connected").then_some(())
        })
        .await;
        pg_proxy.hang();
        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{}/health/detailed", d.http_port);
        let mut worst = Duration::ZERO;
        let mut pg_error = None;
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            let started = Instant::now();
            let v: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
            worst = worst.max(started.elapsed());
            if v["components"]["postgres"]["healthy"] == false && pg_error.is_none() {
                pg_error = v["components"]["postgres"]["last_error"]
                    .as_str()
                    .map(str::to_owned);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            worst < Duration::from_millis(100),
            "slowest health answer {worst:?}"
        );
        // The first failure is the probe's; reconnects then time out in their connect.
        let pg_error = pg_error.expect("postgres became unhealthy while hung");
        assert!(pg_error.contains("probe timed out"), "{pg_error}");
        let neo = component(&d, "neo4j").await.unwrap();
        assert_eq!(neo["healthy"], false);
        assert!(
            neo["last_error"].as_str().unwrap().contains("timed out"),
            "{neo}"
        );
        let (status, _) = d.get("/health/ready").await.unwrap();
        assert_eq!(status, 503);
    });
}

/// Both databases down at start: health is served (degraded), and warden connects when they
/// appear, without a restart of the process.
#[test]
fn starts_with_databases_down_and_connects_when_they_appear() {
    let pg = PgServer::start();
    pg.stop();
    let graph_port = support::free_low_port();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let d = Daemon::spawn(
            &[],
            &fast_env(&format!("bolt://127.0.0.1:{graph_port}"), &pg.url()),
        );
        let (status, live) = eventually(Duration::from_secs(10), "health served", || {
            d.get("/health")
        })
        .await;
        assert_eq!((status, live), (200, serde_json::json!({"status": "ok"})));
        let (status, body) = d.get("/health/detailed").await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body["status"], "degraded");
        assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
        assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
        for db in ["neo4j", "postgres"] {
            assert_eq!(body["components"][db]["healthy"], false, "{body}");
        }
        let (status, _) = d.get("/health/ready").await.unwrap();
        assert_eq!(status, 503);

        pg.restart();
        let _graph = support::graph::GraphServer::start_on(Some(graph_port));
        let (_, body) = eventually(Duration::from_secs(10), "ready", || async {
            let (status, body) = d.get("/health/ready").await?;
            (status == 200).then_some((status, body))
        })
        .await;
        assert_eq!(body["status"], "ok");
        for db in ["neo4j", "postgres"] {
            let c = &body["components"][db];
            assert_eq!(c["status"], "connected");
            assert!(c["restarts"].as_u64().unwrap() >= 1, "{c}");
            assert_eq!(c["circuit"]["state"], "closed");
        }
        let (_, api) = d.get("/api/health").await.unwrap();
        assert_eq!(api["status"], "ok");
    });
}

/// Unknown paths get a JSON 404, wrong methods a JSON 405, in the same shape.
#[test]
fn http_errors_are_json() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let d = Daemon::spawn(
            &[],
            &fast_env(
                &format!("bolt://{}", nowhere()),
                &format!("postgres://postgres@{}/postgres", nowhere()),
            ),
        );
        let (status, body) = eventually(Duration::from_secs(10), "404", || d.get("/nope")).await;
        assert_eq!(status, 404);
        assert_eq!(body["error"]["code"], "NOT_FOUND");
        assert!(body["error"]["message"].as_str().unwrap().contains("/nope"));
        let resp = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/health/detailed", d.http_port))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 405);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "METHOD_NOT_ALLOWED");
    });
}

/// An actor that dies from a bug (a panic in a handler) is shown `stopped`, and the daemon
/// exits with 70 so that systemd restarts it, instead of limping on without that database. The
/// breaker and health are guarded the same way: a dead breaker would leave its circuits as they
/// were for ever (a half-open one refusing every call), a dead health actor a frozen snapshot.
#[test]
fn a_panicking_actor_stops_the_daemon() {
    let pg = PgServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for (actor, said) in [
            ("postgres", "postgres actor panicked"),
            ("breaker", "breaker actor panicked"),
            ("health", "health actor panicked"),
        ] {
            let mut env = fast_env(&format!("bolt://{}", nowhere()), &pg.url());
            env.push(("WARDEN_FAULT_CRASH", format!("{actor}:1500ms")));
            let mut d = Daemon::spawn(&[], &env);
            eventually(Duration::from_secs(10), "postgres connected", || async {
                let c = component(&d, "postgres").await?;
                (c["status"] == "connected").then_some(())
            })
            .await;
            let status = d.wait_exit(Duration::from_secs(10));
            assert_eq!(status.code(), Some(70), "{actor}: {}", d.logs());
            let logs = d.logs();
            assert!(logs.contains(said), "{actor}: {logs}");
            assert!(logs.contains("an actor died"), "{actor}: {logs}");
        }
    });
}

/// `warden migrate` against an unreachable PostgreSQL exits 69 within its connect timeout;
/// `--version` prints the version.
#[test]
fn migrate_without_a_database_exits_69() {
    let started = Instant::now();
    let (code, _, stderr) = run_once(
        &["migrate"],
        &[
            (
                "DATABASE_URL",
                format!("postgres://postgres@{}/postgres", nowhere()),
            ),
            ("WARDEN__POSTGRES__CONNECT_TIMEOUT", "1s".into()),
        ],
    );
    assert_eq!(code, 69, "{stderr}");
    assert!(stderr.contains("migrations failed"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let (code, stdout, _) = run_once(&["--version"], &[]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout.trim(),
        format!("warden {}", env!("CARGO_PKG_VERSION"))
    );
}

/// `warden migrate` scrubs libpq's `PGPASSWORD` from its errors, not only the configured
/// password: sqlx sends it when the URL has none. The server names the user in its refusal,
/// so a password equal to the user name (postgres/postgres, a common development setup) shows
/// up in the message unless scrubbed. It does not show what the server logs on its side.
#[test]
fn migrate_scrubs_pgpassword_from_its_errors() {
    let pg = PgServer::start_with_password("right-pass-3a7");
    let (code, stdout, stderr) = run_once(
        &["migrate"],
        &[
            (
                "DATABASE_URL",
                format!("postgres://pgpw_9d4e@127.0.0.1:{}/postgres", pg.port),
            ),
            ("PGPASSWORD", "pgpw_9d4e".into()),
            ("WARDEN__POSTGRES__CONNECT_TIMEOUT", "2s".into()),
        ],
    );
    // Refused credentials will not fix themselves: not 69 (unavailable).
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("authentication failed"), "{stderr}");
    for out in [&stdout, &stderr] {
        assert!(!out.contains("pgpw_9d4e"), "PGPASSWORD leaked: {out}");
    }
}

/// SIGINT (Ctrl-C at a terminal) stops warden as cleanly as SIGTERM, even with both
/// databases down and the actors backing off.
#[test]
fn sigint_exits_0_with_databases_down() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut d = Daemon::spawn(
            &["run"],
            &fast_env(
                &format!("bolt://{}", nowhere()),
                &format!("postgres://postgres@{}/postgres", nowhere()),
            ),
        );
        eventually(Duration::from_secs(10), "health served", || {
            d.get("/health")
        })
        .await;
        d.signal("INT");
        let status = d.wait_exit(Duration::from_secs(5));
        assert_eq!(status.code(), Some(0), "{}", d.logs());
        assert!(d.logs().contains("\"signal\":\"SIGINT\""));
    });
}
