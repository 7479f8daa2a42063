//! warden's benchmarks, against real local servers, printing one table.
//!
//! Run them with `scripts/bench` (release build; it installs wrk and the test tools first):
//!
//! ```text
//! scripts/bench                       # everything, footprint load for 10 minutes
//! scripts/bench health messages       # only some sections
//! scripts/bench --footprint-minutes 1 # a shorter footprint soak
//! ```
//!
//! Every figure that has a ceiling is a ratio against that ceiling measured in the same run,
//! because these machines are shared and noisy. Every load is bounded in time and goes to
//! 127.0.0.1 only. Sections:
//! - `health`: wrk, one thread, 64 connections, `/health` (the trivial liveness handler: the
//!   ceiling) then `/health/detailed`, in alternating rounds (`--health-rounds`, 5; medians),
//!   both again while the graph database hangs (a proxy that accepts and never answers).
//! - `messages`: `SELECT 1` through a sqlx pool used directly (the ceiling, sqlx's default
//!   options) against `Sql` messages to PostgresActor (through its handle, as application code
//!   sends them) with the same pool size, at 1, 8, 32 and
//!   128 concurrent callers, in alternating rounds (`--message-rounds`, 5) whose medians are
//!   reported; plus, for reference, a direct pool set up like warden's own (no liveness ping
//!   for a connection used in the last 500 ms), so that the message path's own cost shows too.
//!   Then neo4rs against `Cypher` through the local graph server, in rounds as well, each run
//!   against a graph server of its own.
//! - `fastfail`: the latency of a `Sql` call refused by an open circuit, over 100k calls:
//!   through a handle (refused on the caller's thread: the target), then as a message to the
//!   actor's address, next to the floor under any message: an empty actix message to an actor
//!   on another arbiter and back.
//! - `detection`: kill -9 of PostgreSQL to `healthy: false`; restart to `healthy: true`.
//! - `footprint`: the daemon's RSS idle, and after the health load plus 5 database flaps.
//! - `catalog`: catalog create and get through the HTTP API against the same SQL through
//!   sqlx (see `sections/catalog_api.rs`).
//! - `metrics`: `Sql` at 32 callers with call recording on against off, in alternating rounds,
//!   and `/metrics` scrapes under that load (`warden/metrics.rs`).
//! - `console`: `/health/detailed` under wrk with no console tab open, and with 20 tabs
//!   polling as the page does (see `console/tabs.rs`), in alternating rounds.
//! - `projection`: events/s the graph projector applies, against direct `UNWIND` writes of
//!   the same rows (see `sections/projection.rs`).

#[path = "console/tabs.rs"]
mod console_tabs;

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "../tests/projection/catalog.rs"]
#[allow(dead_code)]
mod catalog;
#[path = "sections/catalog_api.rs"]
mod catalog_api;
#[path = "warden/metrics.rs"]
mod metrics;
#[path = "sections/projection.rs"]
mod projection;
#[path = "warden/sql.rs"]
mod sql;

use std::{
    future::Future,
    process::Command,
    time::{Duration, Instant},
};

use support::{daemon::Daemon, graph::GraphServer, pg::PgServer, proxy::Proxy};
use warden_actors::{
    health::ComponentStatus, Cypher, Database, Sql, Warden, WardenError, WardenSettings,
};

/// Pool size of both paths in the message benchmark (warden's max_connections is one more:
/// its probe connection).
const POOL: u32 = 16;

/// Pool size of both Cypher paths. FalkorDB runs queries on 2 threads, so 4 connections keep
/// it busy; with 16 it segfaulted in most runs (see README).
const GRAPH_POOL: u32 = 4;

struct Args {
    sections: Vec<String>,
    health_seconds: u64,
    health_rounds: usize,
    message_seconds: u64,
    message_rounds: usize,
    footprint_minutes: u64,
    detection_runs: usize,
    /// Concurrency levels of the message benchmark.
    levels: Vec<usize>,
    /// `Sql` paths to measure (`defaults`, `baseline`, `default`, `hosted`, `control`); all
    /// when empty. Each is compared with the baseline, so name it too unless one path runs
    /// alone.
    /// One path alone is for profiling (`perf record` on this process), not for ratios.
    sql_paths: Vec<String>,
}

impl Args {
    fn parse() -> Self {
        let mut args = Args {
            sections: Vec::new(),
            health_seconds: 10,
            health_rounds: 5,
            message_seconds: 5,
            message_rounds: 5,
            footprint_minutes: 10,
            detection_runs: 5,
            levels: vec![1, 8, 32, 128],
            sql_paths: Vec::new(),
        };
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            let mut num = |what: &str| -> u64 {
                it.next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{what} needs a number"))
            };
            match a.as_str() {
                "--health-seconds" => args.health_seconds = num("--health-seconds"),
                "--health-rounds" => args.health_rounds = num("--health-rounds").max(1) as usize,
                "--message-seconds" => args.message_seconds = num("--message-seconds"),
                "--message-rounds" => args.message_rounds = num("--message-rounds").max(1) as usize,
                "--footprint-minutes" => args.footprint_minutes = num("--footprint-minutes"),
                "--detection-runs" => args.detection_runs = num("--detection-runs") as usize,
                "--concurrency" => args.levels = vec![num("--concurrency") as usize],
                "--sql-paths" => {
                    let paths = it.next().expect("--sql-paths needs a list");
                    args.sql_paths = paths.split(',').map(str::to_owned).collect();
                }
                // cargo bench passes --bench to every bench target.
                "--bench" => {}
                s if !s.starts_with('-') => args.sections.push(s.to_owned()),
                other => panic!("unknown flag {other}"),
            }
        }
        args
    }

    fn wants(&self, section: &str) -> bool {
        self.sections.is_empty() || self.sections.iter().any(|s| s == section)
    }
}

/// One line of the final table.
struct Row {
    bench: String,
    value: String,
    target: String,
    ok: Option<bool>,
}

fn row(
    rows: &mut Vec<Row>,
    bench: impl Into<String>,
    value: impl Into<String>,
    target: &str,
    ok: Option<bool>,
) {
    let r = Row {
        bench: bench.into(),
        value: value.into(),
        target: target.into(),
        ok,
    };
    eprintln!("  {:<58} {:>22}  {}", r.bench, r.value, r.target);
    rows.push(r);
}

fn main() {
    let args = Args::parse();
    let mut rows = Vec::new();
    if args.wants("health") {
        health(&args, &mut rows);
    }
    if args.wants("console") {
        console(&args, &mut rows);
    }
    if args.wants("messages") || args.wants("sql") || args.wants("cypher") {
        messages(&args, &mut rows);
    }
    if args.wants("fastfail") {
        fast_fail(&mut rows);
    }
    if args.wants("detection") {
        detection(&args, &mut rows);
    }
    if args.wants("footprint") {
        footprint(&args, &mut rows);
    }
    if args.wants("catalog") {
        catalog_api::catalog(&args, &mut rows);
    }
    if args.wants("metrics") {
        metrics::metrics_cost(&args, &mut rows);
    }
    if args.wants("projection") {
        projection::projection(&mut rows);
    }
    println!();
    println!("| benchmark | measured | target | met |");
    println!("| --- | --- | --- | --- |");
    for r in &rows {
        let met = match r.ok {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        println!("| {} | {} | {} | {} |", r.bench, r.value, r.target, met);
    }
}

// ---------------------------------------------------------------------------------------------
// Health under load

/// What wrk measured.
struct Wrk {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

fn wrk(port: u16, path: &str, seconds: u64) -> Wrk {
    // One wrk thread: with the daemon's one HTTP worker that is one core each. Two wrk threads
    // fight the server for the second core, which triples p99 for the ceiling too (measured:
    // /health p99 4.3 ms with -t2, 0.9-1.3 ms with -t1, same daemon).
    let out = Command::new("wrk")
        .args([
            "-t1",
            "-c64",
            &format!("-d{seconds}s"),
            "--latency",
            "--timeout",
            "2s",
        ])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("wrk (scripts/bench installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let pct = |p: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(p))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(parse_wrk_duration)
            .unwrap_or_else(|| panic!("no {p} in wrk output:\n{text}"))
    };
    let rps = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk output:\n{text}"));
    assert!(
        !text.contains("Non-2xx"),
        "wrk saw errors on {path}:\n{text}"
    );
    Wrk {
        rps,
        p50: pct("50%"),
        p99: pct("99%"),
    }
}

fn parse_wrk_duration(s: &str) -> Duration {
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().unwrap_or(f64::NAN);
    let secs = match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        _ => f64::NAN,
    };
    Duration::from_secs_f64(secs.max(0.0))
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

async fn wait_component(d: &Daemon, db: &str, healthy: bool) {
    support::eventually(
        Duration::from_secs(30),
        &format!("{db} healthy={healthy}"),
        || async {
            let (_, body) = d.get("/health/detailed").await?;
            (body["components"][db]["healthy"] == healthy).then_some(())
        },
    )
    .await;
}

fn health(args: &Args, rows: &mut Vec<Row>) {
    eprintln!(
        "health: wrk -t1 -c64 -d{}s against the release daemon",
        args.health_seconds
    );
    let pg = PgServer::start();
    let graph = GraphServer::start();
    let graph_proxy = Proxy::start(graph.port);
    let d = Daemon::spawn(
        &["run"],
        &[
            (
                "NEO4J_URI",
                format!("bolt://127.0.0.1:{}", graph_proxy.port),
            ),
            ("NEO4J_PASSWORD", "bench".into()),
            ("DATABASE_URL", pg.url()),
            ("WARDEN__LOG__LEVEL", "warn".into()),
        ],
    );
    let rt = runtime();
    rt.block_on(async {
        wait_component(&d, "neo4j", true).await;
        wait_component(&d, "postgres", true).await;
    });
    // Alternating rounds, medians: the machine is shared and noisy, and a ratio of two runs
    // minutes apart would measure the neighbours as much as warden.
    let measure = |label: &str, rows: &mut Vec<Row>| {
        let mut live = Vec::new();
        let mut detailed = Vec::new();
        for _ in 0..args.health_rounds {
            live.push(wrk(d.http_port, "/health", args.health_seconds));
            detailed.push(wrk(d.http_port, "/health/detailed", args.health_seconds));
        }
        let med = |v: &[Wrk], f: &dyn Fn(&Wrk) -> f64| {
            let mut x: Vec<f64> = v.iter().map(f).collect();
            x.sort_by(f64::total_cmp);
            x[x.len() / 2]
        };
        let rps = |w: &Wrk| w.rps;
        let p50 = |w: &Wrk| w.p50.as_secs_f64();
        let p99 = |w: &Wrk| w.p99.as_secs_f64();
        let ratios: Vec<Wrk> = live
            .iter()
            .zip(&detailed)
            .map(|(l, d)| Wrk {
                rps: d.rps / l.rps,
                p50: Duration::ZERO,
                p99: Duration::ZERO,
            })
            .collect();
        let ratio = med(&ratios, &rps);
        let secs = Duration::from_secs_f64;
        row(
            rows,
            format!("{label}: /health (ceiling) req/s"),
            format!("{:.0}", med(&live, &rps)),
            "",
            None,
        );
        row(
            rows,
            format!("{label}: /health p50 / p99"),
            format!(
                "{} / {}",
                us(secs(med(&live, &p50))),
                us(secs(med(&live, &p99)))
            ),
            "",
            None,
        );
        row(
            rows,
            format!("{label}: /health/detailed req/s"),
            format!("{:.0}", med(&detailed, &rps)),
            "",
            None,
        );
        row(
            rows,
            format!(
                "{label}: /health/detailed ÷ /health (median of {} rounds)",
                args.health_rounds
            ),
            format!("{:.1} %", ratio * 100.0),
            "≥ 90 %",
            Some(ratio >= 0.9),
        );
        let d99 = secs(med(&detailed, &p99));
        row(
            rows,
            format!("{label}: /health/detailed p50 / p99"),
            format!("{} / {}", us(secs(med(&detailed, &p50))), us(d99)),
            "p99 < 2 ms",
            Some(d99 < Duration::from_millis(2)),
        );
    };
    measure("health, both up", rows);
    graph_proxy.hang();
    rt.block_on(wait_component(&d, "neo4j", false));
    measure("health, graph hung", rows);
}

/// What 20 polling console tabs cost `/health/detailed` (see `console/tabs.rs`).
fn console(args: &Args, rows: &mut Vec<Row>) {
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    };
    eprintln!(
        "console: wrk -t1 -c64 -d{}s on /health/detailed, without and with {} polling tabs",
        args.health_seconds,
        console_tabs::TABS
    );
    let (_pg, _graph, d) = console_tabs::stack();
    let rt = runtime();
    rt.block_on(async {
        wait_component(&d, "neo4j", true).await;
        wait_component(&d, "postgres", true).await;
    });
    let stats = Arc::new(console_tabs::TabStats::default());
    let (mut quiet, mut polled) = (Vec::new(), Vec::new());
    for _ in 0..args.health_rounds {
        quiet.push(wrk(d.http_port, "/health/detailed", args.health_seconds));
        let stop = Arc::new(AtomicBool::new(false));
        let tabs = console_tabs::open_tabs(d.http_port, stop.clone(), stats.clone());
        std::thread::sleep(Duration::from_millis(500));
        polled.push(wrk(d.http_port, "/health/detailed", args.health_seconds));
        stop.store(true, Ordering::Relaxed);
        let _ = tabs.join();
    }
    let med = |mut x: Vec<f64>| {
        x.sort_by(f64::total_cmp);
        x[x.len() / 2]
    };
    let ratio = med(quiet
        .iter()
        .zip(&polled)
        .map(|(q, p)| p.rps / q.rps)
        .collect());
    let q99 = Duration::from_secs_f64(med(quiet.iter().map(|w| w.p99.as_secs_f64()).collect()));
    let p99 = Duration::from_secs_f64(med(polled.iter().map(|w| w.p99.as_secs_f64()).collect()));
    let requests = stats.requests.load(Ordering::Relaxed);
    let failures = stats.failures.load(Ordering::Relaxed);
    row(
        rows,
        "console: /health/detailed req/s, no tab",
        format!("{:.0}", med(quiet.iter().map(|w| w.rps).collect())),
        "",
        None,
    );
    row(
        rows,
        format!(
            "console: /health/detailed req/s, {} tabs polling",
            console_tabs::TABS
        ),
        format!("{:.0}", med(polled.iter().map(|w| w.rps).collect())),
        "",
        None,
    );
    row(
        rows,
        format!(
            "console: with tabs ÷ without (median of {} rounds)",
            args.health_rounds
        ),
        format!("{:.1} %", ratio * 100.0),
        "≥ 95 %",
        Some(ratio >= 0.95),
    );
    row(
        rows,
        "console: /health/detailed p99 without / with tabs",
        format!("{} / {}", us(q99), us(p99)),
        "p99 < 2 ms",
        Some(p99 < Duration::from_millis(2)),
    );
    row(
        rows,
        "console: tab requests answered",
        format!("{} of {requests}", requests - failures),
        "all",
        Some(failures == 0 && requests > 0),
    );
}

// ---------------------------------------------------------------------------------------------
// Message path

/// Calls per second and latency percentiles of one load run.
#[derive(Clone)]
struct Load {
    /// Successful calls per second.
    rate: f64,
    errors: usize,
    p50: Duration,
    p99: Duration,
    /// CPU time of this whole process (every thread, kernel time included) per successful
    /// call, where measured (`Sql` rounds), else zero. The PostgreSQL server is another
    /// process and is not counted: this is what a call costs its caller.
    cpu: Duration,
}

/// CPU time used so far by every thread of this process, from `/proc/self/task/*/schedstat`
/// (nanoseconds, unlike `/proc/self/stat`'s clock ticks). Threads that ended are not counted,
/// so only differences over a span in which no thread ends are meaningful.
fn process_cpu() -> Duration {
    let mut ns = 0u64;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) {
                ns += text
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Duration::from_nanos(ns)
}

fn percentile(sorted: &[u32], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Duration::from_nanos(u64::from(sorted[i]))
}

/// One caller: calls `call` until the deadline, recording each latency (in ns, capped at 4.29 s).
async fn caller<F, Fut>(call: F, deadline: Instant) -> (Vec<u32>, usize)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let mut lat = Vec::with_capacity(1 << 14);
    let mut errors = 0;
    while Instant::now() < deadline {
        let t = Instant::now();
        if call().await {
            lat.push(t.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32);
        } else {
            errors += 1;
        }
    }
    (lat, errors)
}

fn summarize(parts: Vec<(Vec<u32>, usize)>, elapsed: Duration) -> Load {
    let errors = parts.iter().map(|p| p.1).sum();
    let mut all: Vec<u32> = parts.into_iter().flat_map(|p| p.0).collect();
    all.sort_unstable();
    Load {
        rate: all.len() as f64 / elapsed.as_secs_f64(),
        errors,
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
        cpu: Duration::ZERO,
    }
}

/// The median of each figure over several rounds (errors are summed).
fn median_load(rounds: &[Load]) -> Load {
    let med = |f: &dyn Fn(&Load) -> f64| {
        let mut x: Vec<f64> = rounds.iter().map(f).collect();
        x.sort_by(f64::total_cmp);
        x[x.len() / 2]
    };
    Load {
        rate: med(&|l| l.rate),
        errors: rounds.iter().map(|l| l.errors).sum(),
        p50: Duration::from_secs_f64(med(&|l| l.p50.as_secs_f64())),
        p99: Duration::from_secs_f64(med(&|l| l.p99.as_secs_f64())),
        cpu: Duration::from_secs_f64(med(&|l| l.cpu.as_secs_f64())),
    }
}

/// The median of the per-round ratios `a ÷ b` (rounds ran side by side, so each ratio compares
/// two runs that shared the same neighbours).
fn median_ratio(a: &[Load], b: &[Load]) -> f64 {
    let r = round_ratios(a, b);
    r[r.len() / 2]
}

/// The per-round ratios `a ÷ b`, sorted.
fn round_ratios(a: &[Load], b: &[Load]) -> Vec<f64> {
    let mut r: Vec<f64> = a.iter().zip(b).map(|(a, b)| a.rate / b.rate).collect();
    r.sort_by(f64::total_cmp);
    r
}

/// "median % (lowest–highest round)", so that the table shows how noisy the rounds were.
fn ratio_text(a: &[Load], b: &[Load]) -> String {
    let r = round_ratios(a, b);
    format!(
        "{:.1} % ({:.0}–{:.0})",
        r[r.len() / 2] * 100.0,
        r[0] * 100.0,
        r[r.len() - 1] * 100.0
    )
}

/// Runs `concurrency` callers on a 2-worker tokio runtime: the direct drivers' ceiling.
/// `setup` runs inside the runtime and makes the call (its client, and so its sockets, belong
/// to that runtime).
fn direct_load<S, F, Fut>(concurrency: usize, seconds: u64, setup: S) -> Load
where
    S: FnOnce() -> F + Send + 'static,
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let call = setup();
        // Warm the pool up first, outside the measurement.
        for _ in 0..concurrency.min(POOL as usize) {
            call().await;
        }
        let start = Instant::now();
        let deadline = start + Duration::from_secs(seconds);
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let call = call.clone();
                tokio::spawn(async move { caller(call, deadline).await })
            })
            .collect();
        let mut parts = Vec::new();
        for t in tasks {
            parts.push(t.await.expect("caller"));
        }
        summarize(parts, start.elapsed())
    })
}

/// Runs `concurrency` callers in an actix System sending messages to warden's actors.
async fn actor_load<F, Fut>(concurrency: usize, seconds: u64, call: F) -> Load
where
    F: Fn() -> Fut + Clone + 'static,
    Fut: Future<Output = bool> + 'static,
{
    for _ in 0..concurrency.min(POOL as usize) {
        call().await;
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let call = call.clone();
            actix::spawn(async move { caller(call, deadline).await })
        })
        .collect();
    let mut parts = Vec::new();
    for t in tasks {
        parts.push(t.await.expect("caller"));
    }
    summarize(parts, start.elapsed())
}

fn bench_settings(pg: &PgServer, graph_uri: &str) -> WardenSettings {
    let mut s = WardenSettings::default();
    s.projection.enabled = false;
    s.postgres.url = pg.url();
    s.postgres.max_connections = POOL + 1;
    s.postgres.min_connections = 0;
    s.neo4j.uri = graph_uri.to_owned();
    s.neo4j.password = warden_actors::Secret::new("bench");
    s.neo4j.max_connections = GRAPH_POOL + 1;
    s
}

async fn wait_connected(warden: &Warden, db: Database) {
    let h = warden.health_handle();
    support::eventually(Duration::from_secs(30), "connected", || {
        let v = h.view();
        async move { (v.components[&db].status == ComponentStatus::Connected).then_some(()) }
    })
    .await;
}

fn load_row(rows: &mut Vec<Row>, what: String, l: &Load) {
    row(
        rows,
        what,
        if l.cpu.is_zero() {
            format!("{:.0}, {} / {}", l.rate, us(l.p50), us(l.p99))
        } else {
            format!(
                "{:.0}, {} / {}, {:.1} µs CPU",
                l.rate,
                us(l.p50),
                us(l.p99),
                l.cpu.as_secs_f64() * 1e6
            )
        },
        "",
        (l.errors > 0).then_some(false),
    );
}

/// Prints the first error of each path, so that a failed run says why.
fn first_error(path: &str, error: &dyn std::fmt::Debug) {
    static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !seen.iter().any(|p| p == path) {
        seen.push(path.to_owned());
        eprintln!("  first error of {path}: {error:?}");
    }
}

fn messages(args: &Args, rows: &mut Vec<Row>) {
    let secs = args.message_seconds;
    let rounds = args.message_rounds;
    let pg = PgServer::start();
    // The Sql runs do not need a graph server; its actor just backs off.
    let graph_uri = format!("bolt://127.0.0.1:{}", support::free_port());
    let sql = args.wants("messages") || args.wants("sql");
    let cypher = args.wants("messages") || args.wants("cypher");
    if sql {
        sql::sql(args, rows, &pg, &graph_uri);
    }
    if cypher {
        eprintln!(
            "cypher: {rounds} alternating rounds of {secs} s per level, pools of {GRAPH_POOL}"
        );
    }
    for &n in args.levels.iter().filter(|_| cypher) {
        // A round in which the graph server crashed (errors on either path) measures the crash,
        // not warden: it is discarded, counted, and run again, up to twice the rounds asked.
        let (mut direct, mut actor, mut discarded) = (Vec::new(), Vec::new(), 0);
        while direct.len() < rounds && direct.len() + discarded < 2 * rounds {
            let d = direct_cypher(n, secs);
            let a = warden_cypher(&pg, n, secs);
            if d.errors > 0 || a.errors > 0 {
                discarded += 1;
                eprintln!(
                    "  Cypher ×{n}: round discarded, errors: direct {}, warden {}",
                    d.errors, a.errors
                );
            } else {
                direct.push(d);
                actor.push(a);
            }
        }
        if direct.is_empty() {
            row(
                rows,
                format!("Cypher ×{n}: every round crashed the graph server"),
                format!("{discarded} rounds"),
                "≥ 90 %",
                Some(false),
            );
            continue;
        }
        load_row(
            rows,
            format!("Cypher ×{n}: direct (ceiling) calls/s, p50 / p99"),
            &median_load(&direct),
        );
        load_row(
            rows,
            format!("Cypher ×{n}: warden calls/s, p50 / p99"),
            &median_load(&actor),
        );
        let ratio = median_ratio(&actor, &direct);
        row(
            rows,
            format!(
                "Cypher ×{n}: warden ÷ direct (median of {} clean rounds, {discarded} discarded)",
                direct.len()
            ),
            ratio_text(&actor, &direct),
            "≥ 90 %",
            Some(ratio >= 0.9),
        );
    }
}

/// `RETURN 1` through neo4rs used directly, against a graph server of its own: FalkorDB has
/// crashed under load (a segfault in its Bolt handler, see README), and one crash must not
/// spoil the runs after it.
fn direct_cypher(n: usize, secs: u64) -> Load {
    let graph = GraphServer::start();
    let uri = graph.uri();
    direct_load(n, secs, move || {
        let config = neo4rs::ConfigBuilder::default()
            .uri(uri.as_str())
            .user("neo4j")
            .password("bench")
            .db("neo4j")
            .max_connections(GRAPH_POOL as usize)
            .build()
            .expect("config");
        let graph = neo4rs::Graph::connect(config).expect("graph");
        move || {
            let graph = graph.clone();
            async move {
                let mut rows = match graph.execute(neo4rs::query("RETURN 1")).await {
                    Ok(rows) => rows,
                    Err(e) => {
                        first_error("Cypher direct", &e);
                        return false;
                    }
                };
                loop {
                    match rows.next().await {
                        Ok(Some(_)) => {}
                        Ok(None) => return true,
                        Err(e) => {
                            first_error("Cypher direct", &e);
                            return false;
                        }
                    }
                }
            }
        }
    })
}

/// `Cypher` messages to a fresh warden, against a graph server of its own.
fn warden_cypher(pg: &PgServer, n: usize, secs: u64) -> Load {
    let graph = GraphServer::start();
    let uri = graph.uri();
    actix::System::new().block_on(async {
        let warden = Warden::start(bench_settings(pg, &uri)).expect("settings");
        wait_connected(&warden, Database::Neo4j).await;
        let graph = warden.neo4j_handle();
        let load = actor_load(n, secs, move || {
            let call = graph.send(Cypher::new("RETURN 1"));
            async move {
                match call.await {
                    Ok(_) => true,
                    other => {
                        first_error("Cypher through warden", &other);
                        false
                    }
                }
            }
        })
        .await;
        warden.shutdown(Duration::from_secs(5)).await;
        load
    })
}

// ---------------------------------------------------------------------------------------------
// Fast fail

fn fast_fail(rows: &mut Vec<Row>) {
    eprintln!("fastfail: 100k Sql calls refused by an open circuit");
    let pg = PgServer::start();
    actix::System::new().block_on(async {
        let mut s = bench_settings(&pg, &format!("bolt://127.0.0.1:{}", support::free_port()));
        s.retry.max_attempts = 1;
        s.breaker.failure_threshold = 5;
        s.breaker.cooldown = Duration::from_secs(3600);
        let warden = Warden::start(s).expect("settings");
        wait_connected(&warden, Database::Postgres).await;
        let fail = "DO $$ BEGIN RAISE EXCEPTION 'overloaded' USING ERRCODE = '53200'; END $$";
        for _ in 0..5 {
            let _ = warden.postgres.send(Sql::new(fail)).await;
        }
        let postgres = warden.postgres_handle();
        support::eventually(Duration::from_secs(5), "circuit open", || {
            let call = postgres.send(Sql::new("SELECT 1"));
            async move { matches!(call.await, Err(WardenError::CircuitOpen { .. })).then_some(()) }
        })
        .await;
        // Through a handle, as application code calls warden: refused on the caller's thread.
        let lat = refusals(|| async {
            let r = postgres.send(Sql::new("SELECT 1")).await;
            assert!(matches!(r, Err(WardenError::CircuitOpen { .. })), "{r:?}");
        })
        .await;
        let p50 = percentile(&lat, 0.5);
        row(
            rows,
            "fast fail: refused Sql through a handle, median / p99",
            median_p99(&lat),
            "median < 20 µs",
            Some(p50 < Duration::from_micros(20)),
        );
        // The same message to the actor's address: refused by the actor, a mailbox round trip.
        let addr = warden.postgres.clone();
        let lat = refusals(|| async {
            let r = addr.send(Sql::new("SELECT 1")).await;
            assert!(
                matches!(r, Ok(Err(WardenError::CircuitOpen { .. }))),
                "{r:?}"
            );
        })
        .await;
        row(
            rows,
            "fast fail: refused Sql message to the address, median / p99",
            median_p99(&lat),
            "",
            None,
        );
        warden.shutdown(Duration::from_secs(2)).await;

        // The floor under any refusal by message: an empty message to an actor on another
        // arbiter and back (two cross-thread wake-ups), on this machine, now.
        let arbiter = actix::Arbiter::new();
        let echo = actix::Actor::start_in_arbiter(&arbiter.handle(), |_| Echo);
        let lat = refusals(|| async { echo.send(Ping).await.expect("echo") }).await;
        arbiter.stop();
        row(
            rows,
            "fast fail floor: empty actix round trip to another arbiter, median / p99",
            median_p99(&lat),
            "",
            None,
        );
    });
}

/// "median / p99 µs" of sorted latencies in ns.
fn median_p99(lat: &[u32]) -> String {
    format!(
        "{:.2} / {:.2} µs",
        percentile(lat, 0.5).as_secs_f64() * 1e6,
        percentile(lat, 0.99).as_secs_f64() * 1e6
    )
}

/// The latencies of 100k calls in a row, sorted, in ns.
async fn refusals<F, Fut>(call: F) -> Vec<u32>
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut lat = Vec::with_capacity(100_000);
    for _ in 0..100_000 {
        let t = Instant::now();
        call().await;
        lat.push(t.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32);
    }
    lat.sort_unstable();
    lat
}

/// The do-nothing actor of the fast-fail floor.
struct Echo;

impl actix::Actor for Echo {
    type Context = actix::Context<Self>;
}

#[derive(actix::Message)]
#[rtype(result = "()")]
struct Ping;

impl actix::Handler<Ping> for Echo {
    type Result = ();

    fn handle(&mut self, _: Ping, _: &mut Self::Context) {}
}

// ---------------------------------------------------------------------------------------------
// Detection and recovery

fn detection(args: &Args, rows: &mut Vec<Row>) {
    eprintln!(
        "detection: {} kill -9 / restart runs of PostgreSQL",
        args.detection_runs
    );
    let pg = PgServer::start();
    actix::System::new().block_on(async {
        let mut s = bench_settings(&pg, &format!("bolt://127.0.0.1:{}", support::free_port()));
        s.backoff.initial = Duration::from_millis(100);
        s.backoff.max = Duration::from_secs(1);
        // `healthy` also needs a closed circuit; failed connects during the outage would open
        // it for its cooldown. This measures the connection, so the breaker stays out of it.
        s.breaker.failure_threshold = 1_000_000;
        let probe_bound = s.postgres.probe_interval + s.postgres.probe_timeout;
        let warden = Warden::start(s).expect("settings");
        let h = warden.health_handle();
        let healthy = || h.view().components[&Database::Postgres].healthy;
        let mut detections = Vec::new();
        let mut overshoots = Vec::new();
        for run in 0..args.detection_runs {
            wait_until(&healthy, true).await;
            // Kill at a random point of the probe cycle.
            tokio::time::sleep(Duration::from_millis(500 + 397 * run as u64 % 1500)).await;
            let killed = Instant::now();
            pg.kill9();
            wait_until(&healthy, false).await;
            detections.push(killed.elapsed());
            // Let it back off a while, then restart.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            pg.restart();
            let restarted = Instant::now();
            let pending = h.view().components[&Database::Postgres]
                .next_attempt_at
                .and_then(|at| (at - chrono::Utc::now()).to_std().ok())
                .unwrap_or_default();
            wait_until(&healthy, true).await;
            let recovery = restarted.elapsed();
            overshoots.push((recovery, pending));
        }
        let list = |v: &[Duration]| {
            v.iter()
                .map(|d| format!("{}", d.as_millis()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let worst = detections.iter().max().copied().unwrap_or_default();
        row(
            rows,
            format!(
                "detection: kill -9 to healthy=false, ms (runs: {})",
                detections.len()
            ),
            list(&detections),
            &format!(
                "≤ {} ms",
                (probe_bound + Duration::from_millis(100)).as_millis()
            ),
            Some(worst <= probe_bound + Duration::from_millis(100)),
        );
        let excess: Vec<Duration> = overshoots
            .iter()
            .map(|(r, p)| r.saturating_sub(*p))
            .collect();
        row(
            rows,
            "recovery: restart to healthy=true, ms",
            list(&overshoots.iter().map(|o| o.0).collect::<Vec<_>>()),
            "",
            None,
        );
        row(
            rows,
            "recovery beyond the pending backoff delay, ms",
            list(&excess),
            "≤ 200 ms",
            Some(excess.iter().all(|e| *e <= Duration::from_millis(200))),
        );
        warden.shutdown(Duration::from_secs(2)).await;
    });
}

async fn wait_until(f: &impl Fn() -> bool, want: bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while f() != want {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for healthy={want}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Footprint

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn footprint(args: &Args, rows: &mut Vec<Row>) {
    let minutes = args.footprint_minutes;
    eprintln!(
        "footprint: RSS idle, then after {minutes} min of health load and 5 PostgreSQL flaps"
    );
    let pg = PgServer::start();
    let graph = GraphServer::start();
    let d = Daemon::spawn(
        &["run"],
        &[
            ("NEO4J_URI", graph.uri()),
            ("NEO4J_PASSWORD", "bench".into()),
            ("DATABASE_URL", pg.url()),
            ("WARDEN__LOG__LEVEL", "warn".into()),
            ("WARDEN__BACKOFF__INITIAL", "100ms".into()),
            ("WARDEN__BACKOFF__MAX", "1s".into()),
        ],
    );
    let rt = runtime();
    rt.block_on(async {
        wait_component(&d, "neo4j", true).await;
        wait_component(&d, "postgres", true).await;
    });
    std::thread::sleep(Duration::from_secs(3));
    let idle = rss_kib(d.pid());
    row(
        rows,
        "footprint: RSS idle after start",
        format!("{:.1} MB", idle as f64 / 1024.0),
        "< 25 MB",
        Some(idle < 25 * 1024),
    );
    // The first slice of load is the warm-up: allocator arenas and buffers settle in it, and
    // growth is judged from its end.
    let total = Duration::from_secs(minutes * 60);
    let start = Instant::now();
    let slice = total / 10;
    let mut after_warmup = 0;
    let mut flaps = 0;
    for i in 0..10 {
        let path = if i % 2 == 0 {
            "/health/detailed"
        } else {
            "/health"
        };
        let seconds = slice.as_secs().max(1);
        let handle = {
            let port = d.http_port;
            let path = path.to_owned();
            std::thread::spawn(move || wrk(port, &path, seconds))
        };
        // Flaps in slices 1, 3, 5, 7, 9: kill -9 and restart while the load runs.
        if i % 2 == 1 && flaps < 5 {
            std::thread::sleep(slice / 3);
            pg.kill9();
            std::thread::sleep(Duration::from_secs(1));
            pg.restart();
            flaps += 1;
        }
        let _ = handle.join();
        if i == 0 {
            after_warmup = rss_kib(d.pid());
        }
    }
    rt.block_on(wait_component(&d, "postgres", true));
    std::thread::sleep(Duration::from_secs(3));
    let after = rss_kib(d.pid());
    row(
        rows,
        format!(
            "footprint: RSS after {:.0} min of load + {flaps} flaps",
            start.elapsed().as_secs_f64() / 60.0
        ),
        format!("{:.1} MB", after as f64 / 1024.0),
        "",
        None,
    );
    let growth = after as f64 - after_warmup as f64;
    row(
        rows,
        "footprint: RSS growth after the first load slice",
        format!("{:+.1} MB", growth / 1024.0),
        "no growth beyond noise (< 1 MB)",
        Some(growth < 1024.0),
    );
}
