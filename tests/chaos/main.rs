//! The chaos suite: real load through warden while faults are injected into real servers, each
//! scenario ending with one row of figures and these promises checked:
//!
//! - every write acknowledged Ok is in the database exactly once, counted from a connection of
//!   the test's own (each write has a client-side id, and the table has no unique constraint on
//!   it, so a doubled write would show); a write that returned an error is there at most once,
//!   and a transaction is there whole or not at all;
//! - every call returns within query_timeout + 100 ms;
//! - warden never holds more than `max_connections` (the proxy's exact peak, and
//!   `pg_stat_activity` sampled from another thread);
//! - once the peer is back, calls succeed within the pending backoff (health's
//!   `next_attempt_at`) + one probe interval + 200 ms;
//! - no panic, RSS of the process hosting warden grows by less than 5 MB after the warm-up,
//!   and `/health/detailed`, polled from another thread, answers in under 100 ms throughout.
//!
//! By default each scenario is the short version the test suite runs (about 3 minutes in
//! all); `WARDEN_CHAOS=full` (what `scripts/chaos` sets) runs the long one: 5 kills of
//! PostgreSQL, 100 flaps of each database, 10 s per proxy fault. PostgreSQL runs with
//! `synchronous_commit=on`, so that it loses no write it acknowledged when killed; the graph
//! stand-in keeps nothing across a kill (see `graph_kill9_under_cypher_writes`).

#[path = "../support/mod.rs"]
mod support;

mod harness;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use harness::{rss_kib, Calls, Ledger, Load, Recovery, Report, Size, Watcher};
use support::{actix_test, eventually, graph::GraphServer, pg::PgServer, proxy::Proxy};
use warden_actors::{
    health::ComponentStatus, Cypher, Database, Sql, Transaction, Warden, WardenSettings,
};

/// Client-side ids fit in this many writes; the load stops when they run out.
const LEDGER: usize = 1 << 20;

/// One row per write; ids are not unique on purpose (a doubled write must show).
const WRITE: &str = "INSERT INTO public.chaos_writes (id, part) VALUES ($1, $2)";

/// Timings short enough for many cycles a minute, and the breaker as shipped: once warden has
/// reconnected, calls must flow, whatever the cooldown.
fn chaos_settings(neo4j_uri: &str, pg_url: &str) -> WardenSettings {
    let mut s = support::fast_settings(neo4j_uri, pg_url);
    s.postgres.max_connections = 8;
    s.postgres.query_timeout = Duration::from_secs(1);
    s.postgres.connect_timeout = Duration::from_secs(1);
    // FalkorDB runs queries on 2 threads and has crashed under 16 connections (README).
    s.neo4j.max_connections = 4;
    s.neo4j.query_timeout = Duration::from_secs(2);
    s.neo4j.connect_timeout = Duration::from_secs(1);
    s.backoff.max = Duration::from_secs(1);
    s.breaker = WardenSettings::default().breaker;
    s
}

/// An address where nothing listens, for the database a scenario is not about.
fn nowhere(scheme: &str) -> String {
    format!(
        "{scheme}://postgres@127.0.0.1:{}/postgres",
        support::free_port()
    )
}

/// One scenario at a time in this process: they time calls to 100 ms, and `cargo test` would
/// run them side by side (nextest runs each alone, see `.config/nextest.toml`). Held for a
/// whole test, servers included.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running scenario: warden under load, watched.
struct Rig<'a> {
    db: Database,
    warden: Warden,
    settings: WardenSettings,
    proxy: &'a Proxy,
    ledger: Arc<Ledger>,
    calls: Arc<Calls>,
    load: Load,
    watcher: Watcher,
    rss_before: i64,
    recoveries: Vec<Recovery>,
    started: Instant,
}

impl<'a> Rig<'a> {
    /// Starts warden with `settings` (the database under test reached through `proxy`), waits
    /// for it to connect, serves health and starts watching; `load` starts the callers. RSS is
    /// taken after 2 s of load, once allocator arenas and pools have settled.
    async fn start(
        db: Database,
        settings: WardenSettings,
        proxy: &'a Proxy,
        pg_url: Option<String>,
        load: impl FnOnce(&Warden, &Arc<Ledger>, &Arc<Calls>, &mut Load),
    ) -> Rig<'a> {
        let started = Instant::now();
        let warden = Warden::start(settings.clone()).expect("valid settings");
        let h = warden.health_handle();
        eventually(Duration::from_secs(20), "connected", || {
            let v = h.view();
            async move { (v.components[&db].status == ComponentStatus::Connected).then_some(()) }
        })
        .await;
        let http = support::serve_health(&warden);
        let max = match db {
            Database::Postgres => settings.postgres.max_connections,
            Database::Neo4j => settings.neo4j.max_connections,
        };
        let watcher = Watcher::start(format!("{http}/health/detailed"), pg_url, i64::from(max));
        let timeout = match db {
            Database::Postgres => settings.postgres.query_timeout,
            Database::Neo4j => settings.neo4j.query_timeout,
        };
        let ledger = Ledger::new(LEDGER);
        let calls = Calls::new(timeout);
        let mut callers = Load::new();
        load(&warden, &ledger, &calls, &mut callers);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_before = rss_kib();
        Rig {
            db,
            warden,
            settings,
            proxy,
            ledger,
            calls,
            load: callers,
            watcher,
            rss_before,
            recoveries: Vec::new(),
            started,
        }
    }

    fn probe_interval(&self) -> Duration {
        match self.db {
            Database::Postgres => self.settings.postgres.probe_interval,
            Database::Neo4j => self.settings.neo4j.probe_interval,
        }
    }

    /// The peer is back: times how long until a call succeeds.
    async fn recovered(&mut self) {
        let (pg, graph) = (self.warden.postgres_handle(), self.warden.neo4j_handle());
        let db = self.db;
        let r = harness::recovery(&self.warden, db, self.probe_interval(), || {
            let (pg, graph) = (pg.clone(), graph.clone());
            async move {
                match db {
                    Database::Postgres => pg.send(Sql::new("SELECT 1")).await.is_ok(),
                    Database::Neo4j => graph.send(Cypher::new("RETURN 1")).await.is_ok(),
                }
            }
        })
        .await;
        self.recoveries.push(r);
    }

    /// Stops the load and the watcher; the report, once `stored` (id, part) rows are known.
    async fn stop(self, scenario: &'static str, faults: String) -> Stopped {
        self.load.stop().await;
        // Let the pool settle after the last calls, then judge the footprint.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_growth_kib = rss_kib() - self.rss_before;
        let watched = self.watcher.stop();
        let max = match self.db {
            Database::Postgres => self.settings.postgres.max_connections,
            Database::Neo4j => self.settings.neo4j.max_connections,
        };
        let ledger = self.ledger;
        self.warden.shutdown(Duration::from_secs(5)).await;
        Stopped {
            ledger,
            report: Report {
                scenario,
                faults,
                calls: self.calls,
                writes: Default::default(),
                connections: (self.proxy.peak_open(), watched.pg_peak, max as usize),
                recoveries: self.recoveries,
                watched,
                rss_growth_kib,
                started: self.started,
                unreadable: None,
            },
        }
    }
}

/// A stopped scenario waiting for its write check.
struct Stopped {
    ledger: Arc<Ledger>,
    report: Report,
}

impl Stopped {
    /// Checks the writes with ids from `from` on against what is `stored`, and reports.
    fn finish(mut self, stored: &[(u64, u8)], from: u64, parts: impl Fn(u64) -> &'static [u8]) {
        self.report.writes = self.ledger.check(stored, from, parts);
        self.report.finish();
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// Even ids are one `Sql` insert (part 0), odd ids a `Transaction` of two (parts 1 and 2).
fn pg_parts(id: u64) -> &'static [u8] {
    if id.is_multiple_of(2) {
        &[0]
    } else {
        &[1, 2]
    }
}

/// Starts `n` writers through the PostgreSQL handle.
fn pg_writers(n: usize) -> impl FnOnce(&Warden, &Arc<Ledger>, &Arc<Calls>, &mut Load) {
    move |warden, ledger, calls, load| {
        let (h, ledger, calls) = (warden.postgres_handle(), ledger.clone(), calls.clone());
        load.callers(n, move |_| {
            let (h, ledger, calls) = (h.clone(), ledger.clone(), calls.clone());
            async move {
                let id = ledger.issue()?;
                let key = id as i64;
                let started = Instant::now();
                let result = if id % 2 == 0 {
                    h.send(Sql::new(WRITE).bind(key).bind(0)).await.map(drop)
                } else {
                    let tx = Transaction::new()
                        .push(Sql::new(WRITE).bind(key).bind(1))
                        .push(Sql::new(WRITE).bind(key).bind(2));
                    h.send(tx).await.map(drop)
                };
                calls.record(started.elapsed(), &result);
                ledger.record(id, result.is_ok());
                Some(result.is_ok())
            }
        });
    }
}

/// Starts `n` readers of a result of `rows` rows of 1 KB each, checking each full result.
fn pg_readers(warden: &Warden, calls: &Arc<Calls>, load: &mut Load, n: usize, rows: usize) {
    let (h, calls) = (warden.postgres_handle(), calls.clone());
    load.callers(n, move |_| {
        let (h, calls) = (h.clone(), calls.clone());
        async move {
            let started = Instant::now();
            let result = h
                .send(
                    Sql::new("SELECT repeat('x', 1000) AS pad FROM generate_series(1, $1::int)")
                        .bind(rows as i64),
                )
                .await;
            calls.record(started.elapsed(), &result);
            if let Ok(got) = &result {
                assert_eq!(got.len(), rows, "a result came back short");
                assert!(got
                    .iter()
                    .all(|r| r["pad"].as_str().map(str::len) == Some(1000)));
            }
            Some(result.is_ok())
        }
    });
}

/// A durable cluster, a proxy in front, and the writes table.
async fn pg_setup(pg: &PgServer) {
    let admin = pg.admin().await;
    sqlx::query("CREATE TABLE public.chaos_writes (id bigint NOT NULL, part smallint NOT NULL)")
        .execute(&admin)
        .await
        .expect("create the writes table");
    admin.close().await;
}

/// A PostgreSQL scenario's rig: the table, then warden through `proxy` under `load`.
async fn pg_rig<'a>(
    pg: &PgServer,
    proxy: &'a Proxy,
    load: impl FnOnce(&Warden, &Arc<Ledger>, &Arc<Calls>, &mut Load),
) -> Rig<'a> {
    pg_setup(pg).await;
    Rig::start(
        Database::Postgres,
        pg_settings(proxy),
        proxy,
        Some(pg.url()),
        load,
    )
    .await
}

fn pg_settings(proxy: &Proxy) -> WardenSettings {
    chaos_settings(
        &nowhere("bolt"),
        &format!("postgres://postgres@127.0.0.1:{}/postgres", proxy.port),
    )
}

/// Every (id, part) row, counted from a connection of the test's own (straight to the server).
async fn pg_stored(pg: &PgServer) -> Vec<(u64, u8)> {
    let admin = pg.admin().await;
    let rows: Vec<(i64, i16)> = sqlx::query_as("SELECT id, part FROM public.chaos_writes")
        .fetch_all(&admin)
        .await
        .expect("read the writes back");
    admin.close().await;
    rows.into_iter()
        .map(|(id, p)| (id as u64, p as u8))
        .collect()
}

async fn pg_finish(rig: Rig<'_>, pg: &PgServer, scenario: &'static str, faults: String) {
    pg_check(rig.stop(scenario, faults).await, pg).await;
}

/// Reads the writes back and checks every promise.
async fn pg_check(stopped: Stopped, pg: &PgServer) {
    let stored = pg_stored(pg).await;
    stopped.finish(&stored, 0, pg_parts);
}

/// PostgreSQL killed -9 under 64 writers and restarted 2 s later, again and again.
#[test]
fn postgres_kill9_under_64_writers() {
    let _serial = serial();
    let size = Size::from_env();
    let pg = PgServer::start_durable();
    let proxy = Proxy::start(pg.port);
    actix_test(async {
        let mut rig = pg_rig(&pg, &proxy, pg_writers(64)).await;
        for _ in 0..size.pg_kills {
            tokio::time::sleep(Duration::from_secs(1)).await;
            pg.kill9();
            tokio::time::sleep(Duration::from_secs(2)).await;
            pg.restart();
            rig.recovered().await;
        }
        let faults = format!(
            "kill -9, restart 2 s later, ×{}; 64 writers (Sql, Transaction)",
            size.pg_kills
        );
        pg_finish(rig, &pg, "postgres-kill9", faults).await;
    });
}

/// `pg_ctl restart -m fast` (sessions end with 57P01) and `pg_terminate_backend` of every
/// warden connection, under 32 writers.
#[test]
fn postgres_fast_restart_and_terminated_sessions() {
    let _serial = serial();
    let size = Size::from_env();
    let pg = PgServer::start_durable();
    let proxy = Proxy::start(pg.port);
    actix_test(async {
        let admin = pg.admin().await;
        let mut rig = pg_rig(&pg, &proxy, pg_writers(32)).await;
        for _ in 0..size.restarts {
            tokio::time::sleep(Duration::from_secs(1)).await;
            pg.fast_restart();
            rig.recovered().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            // The admin pool's connections died in the restart: it reconnects on acquire.
            let ended: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = 'warden'",
            )
            .fetch_all(&admin)
            .await
            .expect("terminate warden's sessions");
            assert!(ended.iter().any(|e| *e), "no warden session to terminate");
            rig.recovered().await;
        }
        admin.close().await;
        let faults = format!(
            "pg_ctl restart -m fast, then pg_terminate_backend of all warden sessions, ×{}; 32 writers",
            size.restarts
        );
        pg_finish(rig, &pg, "postgres-restart-terminate", faults).await;
    });
}

/// A slow link: 50 ms added each way, then a 128 KB/s cap, under writers and readers of 100 KB
/// results. Calls succeed or time out typed, inside their deadline.
#[test]
fn postgres_slow_link() {
    let _serial = serial();
    let size = Size::from_env();
    let pg = PgServer::start_durable();
    let proxy = Proxy::start(pg.port);
    actix_test(async {
        let mut rig = pg_rig(&pg, &proxy, |warden, ledger, calls, load| {
            pg_writers(16)(warden, ledger, calls, load);
            pg_readers(warden, calls, load, 2, 100);
        })
        .await;
        proxy.latency(Duration::from_millis(50));
        tokio::time::sleep(size.fault).await;
        proxy.heal();
        rig.recovered().await;
        proxy.bandwidth(Some(128 * 1024));
        tokio::time::sleep(size.fault).await;
        proxy.heal();
        rig.recovered().await;
        let faults = format!(
            "+50 ms each way for {0:?}, then 128 KB/s for {0:?}; 16 writers, 2 readers of 100 KB",
            size.fault
        );
        pg_finish(rig, &pg, "postgres-slow-link", faults).await;
    });
}

/// A peer that accepts and never answers (existing connections reset, new ones silent), then
/// one that vanishes without closing (nothing moves either way, sockets stay open).
#[test]
fn postgres_silent_peer() {
    let _serial = serial();
    let size = Size::from_env();
    let pg = PgServer::start_durable();
    let proxy = Proxy::start(pg.port);
    actix_test(async {
        let mut rig = pg_rig(&pg, &proxy, pg_writers(16)).await;
        proxy.hang_new(true);
        proxy.reset();
        tokio::time::sleep(size.fault).await;
        proxy.heal();
        rig.recovered().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        proxy.hang();
        tokio::time::sleep(size.fault).await;
        proxy.heal();
        rig.recovered().await;
        let faults = format!(
            "accepts and never answers for {0:?}, then vanishes without closing for {0:?}; 16 writers",
            size.fault
        );
        pg_finish(rig, &pg, "postgres-silent-peer", faults).await;
    });
}

/// Packets to and from a port on loopback dropped by the kernel (nftables), for as long as
/// the value lives: a peer that vanishes for real, connects hang on their SYN and open
/// connections on their retransmits, with nothing a proxy could do differently. The rules live
/// in a table of their own, removed on drop. `None` where `nft` is missing or refused.
struct PacketDrop {
    table: String,
}

impl PacketDrop {
    fn start(port: u16) -> Option<Self> {
        let table = format!("warden_chaos_{}_{port}", std::process::id());
        let script = format!(
            "add table inet {table}\n\
             add chain inet {table} out {{ type filter hook output priority 0 ; }}\n\
             add rule inet {table} out ip daddr 127.0.0.1 tcp dport {port} drop\n\
             add rule inet {table} out ip saddr 127.0.0.1 tcp sport {port} drop\n"
        );
        let mut nft = std::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .ok()?;
        use std::io::Write;
        nft.stdin.take()?.write_all(script.as_bytes()).ok()?;
        nft.wait().ok()?.success().then_some(Self { table })
    }
}

impl Drop for PacketDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .status();
    }
}

/// Established TCP connections to `port` on loopback, from this process's side: the sockets
/// warden holds. A socket warden has closed is in FIN_WAIT (its FIN may be the kernel's to
/// drop), so it is not counted, where the proxy would still see the connection open.
fn established_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(2) == Some(&remote.as_str()) && fields.get(3) == Some(&"01")
        })
        .count()
}

/// The most sockets to `port` open at once, sampled every 10 ms until `stop` is set.
fn watch_sockets(
    port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            peak = peak.max(established_to(port));
            std::thread::sleep(Duration::from_millis(10));
        }
        peak
    })
}

/// A real packet drop between warden and PostgreSQL's side of the proxy: every packet to and
/// from the proxy's port dropped by the kernel, then let through again. What warden holds is
/// counted from the kernel's socket table: the proxy, and the server behind it, cannot see the
/// closes the kernel drops, so they count sockets warden has already closed.
#[test]
fn postgres_packet_drop() {
    let _serial = serial();
    let size = Size::from_env();
    let pg = PgServer::start_durable();
    let proxy = Proxy::start(pg.port);
    actix_test(async {
        let mut rig = pg_rig(&pg, &proxy, pg_writers(16)).await;
        let stop_watch = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sockets = watch_sockets(proxy.port, stop_watch.clone());
        let Some(drop_rules) = PacketDrop::start(proxy.port) else {
            panic!("nft could not add a drop rule (scripts/setup-test-tools installs nftables; root is needed)");
        };
        tokio::time::sleep(size.fault).await;
        drop(drop_rules);
        rig.recovered().await;
        let faults = format!(
            "every packet to and from warden's PostgreSQL port dropped by nftables for {:?}; \
             16 writers (peak connections: warden's established sockets, not the proxy's count)",
            size.fault
        );
        let mut stopped = rig.stop("postgres-packet-drop", faults).await;
        stop_watch.store(true, std::sync::atomic::Ordering::SeqCst);
        stopped.report.connections.0 = sockets.join().expect("socket watcher");
        // The server keeps the sessions whose client's close the kernel dropped until the
        // retransmitted close gets through after the heal (seconds, at TCP's backoff), while
        // warden has already opened their replacements: pg_stat_activity counts both, like
        // any server behind a real partition. Reported, not held to max_connections here.
        if let Some(pg_peak) = stopped.report.connections.1.take() {
            stopped.report.faults.push_str(&format!(
                "; pg_stat_activity peaked at {pg_peak} with the sessions whose close was dropped"
            ));
        }
        pg_check(stopped, &pg).await;
    });
}

/// Connections reset in the middle of large results, while writes go on.
#[test]
fn postgres_reset_mid_result() {
    let _serial = serial();
    let size = Size::from_env();
    let pg = PgServer::start_durable();
    let proxy = Proxy::start(pg.port);
    actix_test(async {
        let mut rig = pg_rig(&pg, &proxy, |warden, ledger, calls, load| {
            pg_writers(16)(warden, ledger, calls, load);
            pg_readers(warden, calls, load, 4, 500);
        })
        .await;
        let cut_before = rig.calls.ok();
        proxy.cut_results(Some(16 * 1024));
        tokio::time::sleep(size.fault).await;
        proxy.heal();
        rig.recovered().await;
        assert!(
            rig.calls.ok() > cut_before,
            "no call succeeded during the cuts"
        );
        let faults = format!(
            "results over 16 KB cut by a reset for {:?}; 16 writers, 4 readers of 500 KB",
            size.fault
        );
        pg_finish(rig, &pg, "postgres-reset-mid-result", faults).await;
    });
}

/// A flap: every connection drops and new ones are refused for 300 ms, then the database is
/// back; `n` of them in a row, with the recovery after each one timed. Stops early once three
/// recoveries have been too slow (the rest would only repeat it, up to a minute each); returns
/// how many flaps it made.
async fn flaps(
    rig: &mut Rig<'_>,
    proxy: &Proxy,
    n: usize,
    mut peer_died: impl FnMut() -> bool,
) -> usize {
    for i in 0..n {
        proxy.close_new(true);
        proxy.reset();
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.close_new(false);
        rig.recovered().await;
        // A peer that died on its own recovers from nothing: each further flap would wait out
        // a whole minute of `recovery`.
        if peer_died() || rig.recoveries.iter().filter(|r| r.took > r.bound).count() >= 3 {
            return i + 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    n
}

/// PostgreSQL flapping under 16 writers.
#[test]
fn postgres_flaps() {
    let _serial = serial();
    let size = Size::from_env();
    let pg = PgServer::start_durable();
    let proxy = Proxy::start(pg.port);
    actix_test(async {
        let mut rig = pg_rig(&pg, &proxy, pg_writers(16)).await;
        let made = flaps(&mut rig, &proxy, size.flaps, || false).await;
        let faults =
            format!("{made} flaps (all connections reset, refused for 300 ms); 16 writers");
        pg_finish(rig, &pg, "postgres-flaps", faults).await;
    });
}

// ---------------------------------------------------------------------------------------------
// The graph database

/// Starts `n` Cypher writers through the graph handle.
fn graph_writers(n: usize) -> impl FnOnce(&Warden, &Arc<Ledger>, &Arc<Calls>, &mut Load) {
    move |warden, ledger, calls, load| {
        let (h, ledger, calls) = (warden.neo4j_handle(), ledger.clone(), calls.clone());
        load.callers(n, move |_| {
            let (h, ledger, calls) = (h.clone(), ledger.clone(), calls.clone());
            async move {
                let id = ledger.issue()?;
                let started = Instant::now();
                let result = h
                    .send(Cypher::new("CREATE (:ChaosWrite {id: $id})").param("id", id as i64))
                    .await
                    .map(drop);
                calls.record(started.elapsed(), &result);
                ledger.record(id, result.is_ok());
                Some(result.is_ok())
            }
        });
    }
}

fn graph_settings(proxy: &Proxy) -> WardenSettings {
    chaos_settings(
        &format!("bolt://127.0.0.1:{}", proxy.port),
        &nowhere("postgres"),
    )
}

/// Every written id, read with neo4rs straight from the bridge; the last error if that fails
/// for 20 s (saying so if the graph server has died).
async fn graph_stored(graph: &mut GraphServer) -> Result<Vec<(u64, u8)>, String> {
    let config = neo4rs::ConfigBuilder::default()
        .uri(graph.uri().as_str())
        .user("neo4j")
        .password("chaos")
        .db("neo4j")
        .max_connections(1)
        .build()
        .expect("config");
    let client = neo4rs::Graph::connect(config).expect("graph");
    let give_up = Instant::now() + Duration::from_secs(20);
    loop {
        let read = async {
            let mut rows = client
                .execute(neo4rs::query("MATCH (w:ChaosWrite) RETURN w.id AS id"))
                .await?;
            let mut ids = Vec::new();
            while let Some(row) = rows.next().await? {
                let id: i64 = row.get("id").map_err(neo4rs::Error::DeserializationError)?;
                ids.push((id as u64, 0));
            }
            Ok::<_, neo4rs::Error>(ids)
        };
        let error = match tokio::time::timeout(Duration::from_secs(5), read).await {
            Ok(Ok(ids)) => return Ok(ids),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer in 5 s".to_owned(),
        };
        if let Some(status) = graph.exited() {
            return Err(format!("the graph server died ({status}): {error}"));
        }
        if Instant::now() > give_up {
            return Err(error);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Checks the writes from id `from` on: the graph stand-in keeps nothing across a kill -9
/// (see `graph_kill9_under_cypher_writes`). `Err` when they cannot be read back because the
/// stand-in died on its own (FalkorDB aborts now and then under this load, on no input of
/// warden's): such a run says nothing about warden, so its report is dropped unchecked.
async fn graph_finish(
    rig: Rig<'_>,
    graph: &mut GraphServer,
    from: u64,
    scenario: &'static str,
    faults: String,
) -> Result<(), String> {
    let mut stopped = rig.stop(scenario, faults).await;
    match graph_stored(graph).await {
        Ok(stored) => stopped.finish(&stored, from, |_| &[0]),
        Err(e) if graph.exited().is_some() => return Err(e),
        Err(e) => {
            stopped.report.unreadable = Some(format!("could not read the writes back: {e}"));
            stopped.finish(&[], from, |_| &[0]);
        }
    }
    Ok(())
}

/// A graph scenario: 8 Cypher writers through `proxy` to a fresh stand-in while `faults` breaks
/// things; `faults` returns the first write id to check and what it did. Runs once more, with a
/// fresh stand-in, if the stand-in died on its own (see `graph_finish`); a second death fails
/// the test.
fn graph_scenario(
    scenario: &'static str,
    faults: impl AsyncFn(&mut Rig<'_>, &mut GraphServer, &Proxy) -> (u64, String),
) {
    let run = || {
        let mut graph = GraphServer::start();
        let proxy = Proxy::start(graph.port);
        let mut outcome = Ok(());
        actix_test(async {
            let mut rig = Rig::start(
                Database::Neo4j,
                graph_settings(&proxy),
                &proxy,
                None,
                graph_writers(8),
            )
            .await;
            let (from, what) = faults(&mut rig, &mut graph, &proxy).await;
            outcome = graph_finish(rig, &mut graph, from, scenario, what).await;
        });
        outcome
    };
    if let Err(died) = run() {
        eprintln!(
            "chaos {scenario}: the graph stand-in died on its own ({died}); \
             the run says nothing about warden: once more with a fresh stand-in"
        );
        if let Err(died) = run() {
            panic!("{scenario}: the graph stand-in died on its own in both runs: {died}");
        }
    }
}

/// The graph server killed -9 under Cypher writes and restarted 2 s later. The stand-in keeps
/// no data across a kill (FalkorDB 4.16 with its append-only file on aborts on the first write
/// made over Bolt: `blocked.c:345 'server.also_propagate.numops == 0'`), so exactly-once is
/// checked for the writes issued after the last restart; deadlines, connections, recovery,
/// health and RSS for the whole run.
#[test]
fn graph_kill9_under_cypher_writes() {
    let _serial = serial();
    let size = Size::from_env();
    graph_scenario("graph-kill9", async |rig, graph, _| {
        let mut since_restart = 0;
        for _ in 0..size.graph_kills {
            tokio::time::sleep(Duration::from_secs(1)).await;
            graph.kill9();
            tokio::time::sleep(Duration::from_secs(2)).await;
            graph.restart();
            // No write issued from here on can have reached the killed server.
            since_restart = rig.ledger.mark();
            rig.recovered().await;
        }
        // Writes on the restarted server, to be checked.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let faults = format!(
            "kill -9, restart 2 s later, ×{}; 8 Cypher writers (writes checked: since the last restart)",
            size.graph_kills
        );
        (since_restart, faults)
    });
}

/// Flaps the graph stand-in takes in a row: FalkorDB behind the bridge stops answering
/// anyone (warden, or a fresh neo4rs connection straight to the bridge) after about 50 flaps,
/// while its process runs on. So the 100 flaps of the full run come in blocks of this many,
/// with a fresh stand-in between blocks; Neo4j needs no such thing.
const GRAPH_FLAPS_IN_A_ROW: usize = 25;

/// The graph database flapping under Cypher writes.
#[test]
fn graph_flaps() {
    let _serial = serial();
    let size = Size::from_env();
    graph_scenario("graph-flaps", async |rig, graph, proxy| {
        let (mut made, mut blocks, mut since_restart) = (0, 0, 0);
        while made < size.flaps {
            if blocks > 0 {
                // A fresh stand-in (it keeps no data): writes are checked from here on.
                graph.kill9();
                graph.restart();
                since_restart = rig.ledger.mark();
                rig.recovered().await;
            }
            let block = GRAPH_FLAPS_IN_A_ROW.min(size.flaps - made);
            let done = flaps(rig, proxy, block, || graph.exited().is_some()).await;
            made += done;
            blocks += 1;
            if done < block {
                break;
            }
        }
        let faults = format!(
            "{made} flaps (all connections reset, refused for 300 ms) in blocks of at most \
             {GRAPH_FLAPS_IN_A_ROW}, a fresh stand-in between blocks; 8 Cypher writers \
             (writes checked: since the last fresh stand-in)"
        );
        (since_restart, faults)
    });
}
