//! `GET /metrics` as Prometheus and an operator see it, against a real throwaway PostgreSQL:
//! the exposition parsed by real parsers (`promtool check metrics` for Prometheus' text format,
//! the Python `prometheus_client` OpenMetrics parser), values that move when PostgreSQL dies
//! and comes back, calls counted by outcome, and the alert rules and dashboard in `packaging/`
//! checked by `promtool` and against a real scrape.
//!
//! The daemon runs as a process for everything an operator can make it do. It makes no calls
//! of its own (no HTTP call API), so the call counters are checked on a warden in this test
//! process, scraped through the same HTTP layer and endpoint the daemon serves.
//!
//! What the stand-ins cannot show: the graph database is absent here (its series are checked
//! for shape, in backoff), and no real Prometheus server scrapes: `promtool test rules` runs
//! the alert rules on series written in the test file.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use support::{daemon::Daemon, eventually, pg::PgServer};
use warden_actors::{Sql, Warden, WardenError};

/// One scrape in Prometheus' text format: `(name, labels sorted as "k=v,...")` to value.
type Samples = BTreeMap<(String, String), f64>;

/// Parses the sample lines of Prometheus' text format (the subset warden emits: label values
/// without escaped quotes or commas). The format's own validity is promtool's to judge.
fn parse(text: &str) -> Samples {
    let mut out = Samples::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let mut labels: Vec<String> = rest
                    .trim_end_matches('}')
                    .split("\",")
                    .map(|kv| kv.replace('"', ""))
                    .filter(|kv| !kv.is_empty())
                    .collect();
                labels.sort();
                (name.to_owned(), labels.join(","))
            }
            None => (series.to_owned(), String::new()),
        };
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().expect("a number"),
        };
        out.insert((name, labels), value);
    }
    out
}

fn value(samples: &Samples, name: &str, labels: &str) -> Option<f64> {
    samples.get(&(name.to_owned(), labels.to_owned())).copied()
}

/// GET /metrics with `accept`; `(content type, body)`.
async fn scrape(base: &str, accept: &str) -> Option<(String, String)> {
    let resp = reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .header("accept", accept)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    assert_eq!(resp.status().as_u16(), 200);
    let ct = resp.headers()["content-type"].to_str().ok()?.to_owned();
    Some((ct, resp.text().await.ok()?))
}

async fn samples(base: &str) -> Option<Samples> {
    scrape(base, "text/plain")
        .await
        .map(|(_, body)| parse(&body))
}

fn promtool() -> PathBuf {
    let path = PathBuf::from("/usr/bin/promtool");
    assert!(
        path.exists(),
        "promtool is missing: run scripts/setup-test-tools (Debian package prometheus)"
    );
    path
}

/// Runs promtool with `args`, `stdin` on its standard input; panics with its output unless it
/// exits 0.
fn promtool_ok(args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(promtool())
        .args(args)
        .current_dir(support::repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed: {text}");
    text
}

/// Parses an OpenMetrics body with the Python `prometheus_client` parser; returns the family
/// names it found, or the parser's error.
fn openmetrics_families(body: &str) -> Result<BTreeSet<String>, String> {
    let python = support::venv().join("bin/python3");
    let script = "import sys\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families as p\n\
        for f in p(sys.stdin.read()):\n    print(f.name, f.type, len(f.samples))\n";
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("write to python");
    let out = child.wait_with_output().expect("python output");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect())
}

/// Millisecond timings for the daemon, as environment variables.
fn fast_env(pg_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("NEO4J_URI", support::no_graph()),
        ("NEO4J_PASSWORD", "warden-test".to_owned()),
        ("DATABASE_URL", pg_url.to_owned()),
        ("WARDEN__NEO4J__CONNECT_TIMEOUT", "1s".to_owned()),
        ("WARDEN__NEO4J__PROBE_INTERVAL", "200ms".to_owned()),
        ("WARDEN__NEO4J__PROBE_TIMEOUT", "150ms".to_owned()),
        ("WARDEN__POSTGRES__CONNECT_TIMEOUT", "1s".to_owned()),
        ("WARDEN__POSTGRES__PROBE_INTERVAL", "200ms".to_owned()),
        ("WARDEN__POSTGRES__PROBE_TIMEOUT", "150ms".to_owned()),
        ("WARDEN__BACKOFF__INITIAL", "100ms".to_owned()),
        ("WARDEN__BACKOFF__MAX", "500ms".to_owned()),
        ("WARDEN__SHUTDOWN_TIMEOUT", "3s".to_owned()),
    ]
}

fn base(d: &Daemon) -> String {
    format!("http://127.0.0.1:{}", d.http_port)
}

/// Both formats parse with real parsers, with the content type each announces, and every
/// series that dashboards and alerts rely on is there with lowercase label values.
#[test]
fn both_formats_parse_with_real_parsers() {
    let pg = PgServer::start();
    let d = Daemon::spawn(&["run"], &fast_env(&pg.url()));
    let url = base(&d);
    support::actix_test(async move {
        let s = eventually(
            Duration::from_secs(15),
            "postgres up in /metrics",
            || async {
                let s = samples(&url).await?;
                (value(&s, "warden_database_up", "database=postgres") == Some(1.0)).then_some(s)
            },
        )
        .await;

        let (ct, text) = scrape(&url, "text/plain").await.expect("a scrape");
        assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
        let lint = promtool_ok(&["check", "metrics"], &text);
        assert!(lint.trim().is_empty(), "promtool lint: {lint}");
        // curl's default, and no Accept at all, get the text format too.
        let (ct, _) = scrape(&url, "*/*").await.expect("a scrape");
        assert!(ct.starts_with("text/plain"), "{ct}");

        let prometheus_accept = "application/openmetrics-text;version=1.0.0,\
            application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let (ct, om) = scrape(&url, prometheus_accept).await.expect("a scrape");
        assert_eq!(
            ct,
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        assert!(om.ends_with("# EOF\n"), "{om}");
        let families = openmetrics_families(&om)
            .unwrap_or_else(|e| panic!("the OpenMetrics parser refused the body: {e}\n{om}"));
        for family in [
            "warden_calls",
            "warden_call_duration_seconds",
            "warden_probe_duration_seconds",
            "warden_circuit_transitions",
            "warden_connection_restarts",
            "warden_database_up",
            "warden_connection_state",
            "warden_circuit_state",
            "warden_pool_connections",
            "warden_pool_max_connections",
            "warden_build",
            "process_cpu_seconds",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert!(families.contains(family), "{family} not in {families:?}");
        }
        // The parser is strict: a body cut before `# EOF` is refused.
        let cut = om.trim_end_matches("# EOF\n");
        let refused = openmetrics_families(cut).expect_err("a body without # EOF was accepted");
        assert!(refused.contains("EOF"), "{refused}");

        // One-hot states: exactly one state is 1, for each database.
        for (metric, states) in [
            (
                "warden_connection_state",
                &["connecting", "connected", "backoff", "stale", "stopped"][..],
            ),
            ("warden_circuit_state", &["closed", "open", "half_open"][..]),
        ] {
            for db in ["neo4j", "postgres"] {
                let sum: f64 = states
                    .iter()
                    .map(|st| {
                        value(&s, metric, &format!("database={db},state={st}"))
                            .unwrap_or_else(|| panic!("{metric} {db} {st} missing"))
                    })
                    .sum();
                assert_eq!(sum, 1.0, "{metric} for {db}");
            }
        }
        assert_eq!(
            value(
                &s,
                "warden_connection_state",
                "database=postgres,state=connected"
            ),
            Some(1.0)
        );
        assert_eq!(value(&s, "warden_database_up", "database=neo4j"), Some(0.0));
        // The pool's figures: at least the pool exists once connected, never over its max.
        let max = value(&s, "warden_pool_max_connections", "database=postgres").expect("max");
        let open = value(
            &s,
            "warden_pool_connections",
            "database=postgres,state=idle",
        )
        .expect("idle")
            + value(
                &s,
                "warden_pool_connections",
                "database=postgres,state=in_use",
            )
            .expect("in use");
        assert!(max >= 1.0 && open <= max, "open {open}, max {max}");
        assert_eq!(
            value(
                &s,
                "warden_build_info",
                &format!("version={}", env!("CARGO_PKG_VERSION"))
            ),
            Some(1.0)
        );
        let rss = value(&s, "process_resident_memory_bytes", "").expect("rss");
        assert!(rss > 1e6, "rss {rss}");
        let fds = value(&s, "process_open_fds", "").expect("fds");
        assert!(fds >= 3.0, "fds {fds}");
        // Every label value is lowercase, from a closed set: no query, no error text (`le`
        // aside: `+Inf` is the format's).
        for (name, labels) in s.keys() {
            for label in labels.split(',').filter(|l| !l.starts_with("le=")) {
                assert_eq!(label, label.to_lowercase(), "{name}{{{labels}}}");
            }
        }
    });
}

/// Kill PostgreSQL: its up gauge goes to 0 and its connection state to backoff (the one-hot
/// sum still 1), restarts count; bring it back: up again. Scrapes keep answering fast all
/// along, since they never touch the database.
#[test]
fn values_move_when_postgres_dies_and_returns() {
    let pg = PgServer::start();
    let d = Daemon::spawn(&["run"], &fast_env(&pg.url()));
    let url = base(&d);
    support::actix_test(async move {
        let before = eventually(Duration::from_secs(15), "postgres up", || async {
            let s = samples(&url).await?;
            (value(&s, "warden_database_up", "database=postgres") == Some(1.0)).then_some(s)
        })
        .await;
        let restarts = |s: &Samples| {
            value(s, "warden_connection_restarts_total", "database=postgres").expect("restarts")
        };
        let probes = |s: &Samples| {
            value(
                s,
                "warden_probe_duration_seconds_count",
                "database=postgres",
            )
            .expect("probes")
        };
        // Probes are timed while connected.
        let probed = eventually(Duration::from_secs(5), "probes counted", || async {
            let s = samples(&url).await?;
            (probes(&s) > probes(&before)).then_some(s)
        })
        .await;
        assert!(probes(&probed) > 0.0);

        pg.kill9();
        let down = eventually(
            Duration::from_secs(5),
            "postgres down in /metrics",
            || async {
                let s = samples(&url).await?;
                (value(&s, "warden_database_up", "database=postgres") == Some(0.0)
                    && restarts(&s) > restarts(&before))
                .then_some(s)
            },
        )
        .await;
        let states = ["connecting", "connected", "backoff", "stale", "stopped"];
        let one_hot: f64 = states
            .iter()
            .map(|st| {
                value(
                    &down,
                    "warden_connection_state",
                    &format!("database=postgres,state={st}"),
                )
                .expect("state")
            })
            .sum();
        assert_eq!(one_hot, 1.0);
        assert_eq!(
            value(
                &down,
                "warden_connection_state",
                "database=postgres,state=connected"
            ),
            Some(0.0)
        );
        // Scrapes answer at once while the database is gone.
        let t = Instant::now();
        for _ in 0..20 {
            samples(&url)
                .await
                .expect("a scrape while postgres is down");
        }
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "20 scrapes took {:?}",
            t.elapsed()
        );

        pg.restart();
        eventually(Duration::from_secs(10), "postgres up again", || async {
            let s = samples(&url).await?;
            (value(&s, "warden_database_up", "database=postgres") == Some(1.0)).then_some(())
        })
        .await;
    });
}

/// Serves the daemon's HTTP layer, `/metrics` included, for a warden in this process.
fn serve(warden: &Warden) -> String {
    let state = warden::web::AppState::new(warden.health_handle(), Instant::now())
        .with_metrics(warden::metrics::Endpoint::new(warden.metrics()));
    support::serve_state(state, 1)
}

fn calls(s: &Samples, outcome: &str) -> f64 {
    value(
        s,
        "warden_calls_total",
        &format!("database=postgres,outcome={outcome}"),
    )
    .unwrap_or_else(|| panic!("warden_calls_total{{outcome={outcome}}} missing"))
}

/// Calls are counted by outcome and timed: ok, query_error (a syntax error, a parameter out of
/// bounds), timeout (past `query_timeout`), connection_error (a call running when PostgreSQL
/// is killed), refused (while it is down, and by an open circuit); the circuit's transitions
/// are counted and its state shown.
#[test]
fn calls_are_counted_by_outcome() {
    let pg = PgServer::start();
    support::actix_test(async move {
        let mut settings = support::fast_settings(&support::no_graph(), &pg.url());
        settings.postgres.query_timeout = Duration::from_millis(400);
        settings.breaker.failure_threshold = 3;
        settings.breaker.cooldown = Duration::from_millis(500);
        let warden = support::pg_started(settings).await;
        let url = serve(&warden);
        let h = warden.postgres_handle();
        let zero = samples(&url).await.expect("a scrape");
        for outcome in [
            "ok",
            "refused",
            "timeout",
            "query_error",
            "connection_error",
        ] {
            assert_eq!(calls(&zero, outcome), 0.0, "{outcome}");
        }

        for _ in 0..3 {
            h.send(Sql::new("SELECT 1")).await.expect("ok");
        }
        let err = h.send(Sql::new("SELEC 1")).await.unwrap_err();
        assert!(matches!(err, WardenError::Query { .. }), "{err:?}");
        let err = h
            .send(Sql::new("SELECT $1::text").bind(u64::MAX))
            .await
            .unwrap_err();
        assert!(matches!(err, WardenError::Usage { .. }), "{err:?}");
        let s = samples(&url).await.expect("a scrape");
        assert_eq!(calls(&s, "ok"), 3.0);
        assert_eq!(calls(&s, "query_error"), 2.0);
        // Timed: the admitted calls that ran (the parameter refusal never started).
        assert_eq!(
            value(
                &s,
                "warden_call_duration_seconds_count",
                "database=postgres"
            ),
            Some(4.0)
        );
        assert_eq!(
            value(
                &s,
                "warden_call_duration_seconds_bucket",
                "database=postgres,le=+Inf"
            ),
            Some(4.0)
        );

        // Three statements past query_timeout: timeouts, which open the circuit (threshold 3).
        let slow: Vec<_> = (0..3)
            .map(|_| h.send(Sql::new("SELECT pg_sleep(2)")))
            .collect();
        for r in futures_util::future::join_all(slow).await {
            assert!(matches!(r, Err(WardenError::Timeout { .. })), "{r:?}");
        }
        let open = eventually(Duration::from_secs(2), "circuit open", || async {
            let s = samples(&url).await?;
            (value(&s, "warden_circuit_state", "database=postgres,state=open") == Some(1.0))
                .then_some(s)
        })
        .await;
        assert_eq!(calls(&open, "timeout"), 3.0);
        assert_eq!(
            value(
                &open,
                "warden_circuit_transitions_total",
                "database=postgres,from=closed,to=open"
            ),
            Some(1.0)
        );
        let err = h.send(Sql::new("SELECT 1")).await.unwrap_err();
        assert!(matches!(err, WardenError::CircuitOpen { .. }), "{err:?}");
        // The cooldown ends, the next probe closes it: both transitions counted.
        let closed = eventually(Duration::from_secs(3), "circuit closed again", || async {
            let s = samples(&url).await?;
            (value(
                &s,
                "warden_circuit_transitions_total",
                "database=postgres,from=half_open,to=closed",
            ) == Some(1.0))
            .then_some(s)
        })
        .await;
        assert_eq!(
            value(
                &closed,
                "warden_circuit_transitions_total",
                "database=postgres,from=open,to=half_open"
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &closed,
                "warden_circuit_state",
                "database=postgres,state=closed"
            ),
            Some(1.0)
        );

        // A call running when PostgreSQL is killed: connection_error. Then, while it is
        // down, calls are refused.
        let running = h.send(Sql::new("SELECT pg_sleep(0.3)"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        pg.kill9();
        let r = running.await;
        assert!(matches!(r, Err(WardenError::Connection { .. })), "{r:?}");
        let refused_before = calls(&samples(&url).await.expect("a scrape"), "refused");
        eventually(
            Duration::from_secs(3),
            "calls refused while down",
            || async {
                matches!(
                    h.send(Sql::new("SELECT 1")).await,
                    Err(WardenError::Unavailable { .. })
                )
                .then_some(())
            },
        )
        .await;
        let s = samples(&url).await.expect("a scrape");
        assert!(calls(&s, "connection_error") >= 1.0, "{s:?}");
        assert!(calls(&s, "refused") > refused_before);
        assert_eq!(
            value(&s, "warden_database_up", "database=postgres"),
            Some(0.0)
        );
        warden.shutdown(Duration::from_secs(2)).await;
    });
}

/// Every metric name in `expr`: identifiers that start with `warden_` or `process_`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == '_');
        if starts_word {
            let rest: String = bytes[i..].iter().collect();
            if rest.starts_with("warden_") || rest.starts_with("process_") {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                i += name.len();
                names.insert(name);
                continue;
            }
        }
        i += 1;
    }
    names
}

/// Every `expr` in a JSON document (the dashboard's panel targets).
fn json_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => json_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| json_exprs(v, out)),
        _ => {}
    }
}

/// The alert rules pass `promtool check rules` and their unit tests (`promtool test rules`:
/// a circuit open over a minute, a component unhealthy over two, a restart storm, each on
/// input series, and none firing on a healthy or briefly flapping one); the dashboard is valid
/// JSON; and every metric that a rule or a panel names exists in a real scrape.
#[test]
fn alert_rules_and_dashboard_refer_to_real_series() {
    let rules = "packaging/prometheus/warden-alerts.yml";
    let check = promtool_ok(&["check", "rules", rules], "");
    assert!(check.contains("SUCCESS"), "{check}");
    let tested = promtool_ok(
        &[
            "test",
            "rules",
            "packaging/prometheus/warden-alerts.test.yml",
        ],
        "",
    );
    assert!(tested.contains("SUCCESS"), "{tested}");

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(support::repo().join("packaging/grafana/warden.json"))
            .expect("the dashboard"),
    )
    .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    json_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 8, "only {} panel queries", exprs.len());
    // The panels' PromQL parses: promtool checks it as recording rules, Grafana's variables
    // replaced by what Grafana would put there.
    let dir = tempfile::tempdir().expect("temp dir");
    let as_rules = dir.path().join("dashboard-rules.yml");
    let mut yaml = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*");
        yaml.push_str(&format!(
            "      - record: dashboard:panel_{i}\n        expr: {}\n",
            serde_json::Value::String(e)
        ));
    }
    std::fs::write(&as_rules, yaml).expect("write");
    promtool_ok(
        &["check", "rules", as_rules.to_str().expect("utf-8 path")],
        "",
    );

    let rules_text = std::fs::read_to_string(support::repo().join(rules)).expect("rules");
    // The rules file without its comments: every `warden_`/`process_` word left is a metric.
    let rules_code: String = rules_text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let rule_names = metric_names(&rules_code);
    assert!(rule_names.len() >= 5, "{rule_names:?}");
    exprs.push(rule_names.into_iter().collect::<Vec<_>>().join(" "));

    let pg = PgServer::start();
    let d = Daemon::spawn(&["run"], &fast_env(&pg.url()));
    let url = base(&d);
    let scraped: BTreeSet<String> = actix::System::new().block_on(async move {
        eventually(
            Duration::from_secs(15),
            "a scrape with the pool",
            || async {
                let s = samples(&url).await?;
                value(&s, "warden_pool_max_connections", "database=postgres")?;
                Some(s.keys().map(|(n, _)| n.clone()).collect())
            },
        )
        .await
    });
    let mut named = 0;
    for expr in &exprs {
        for name in metric_names(expr) {
            named += 1;
            assert!(
                scraped.contains(&name),
                "`{name}` (in `{expr}`) is not in a real scrape: {scraped:?}"
            );
        }
    }
    assert!(
        named >= exprs.len(),
        "{named} names in {} queries",
        exprs.len()
    );
}
