//! What every chaos scenario shares: the load (writers with client-side ids, on a runtime of
//! their own so that a scenario's blocking steps never stretch a call's measured time), the
//! ledger of acknowledged writes and its check against the database, the watcher that polls
//! `/health/detailed` and `pg_stat_activity` from another thread, recovery timing, RSS, and the
//! one table row each scenario reports.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use warden_actors::{health::ComponentStatus, Database, Warden, WardenError};

/// How long and how hard a scenario runs: `WARDEN_CHAOS=full` for `scripts/chaos`, else the
/// bounded subset the test suite runs.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    /// kill -9 and restart cycles of PostgreSQL.
    pub pg_kills: usize,
    /// kill -9 and restart cycles of the graph server.
    pub graph_kills: usize,
    /// Flaps of each database.
    pub flaps: usize,
    /// Fast restarts and `pg_terminate_backend` rounds, each.
    pub restarts: usize,
    /// How long each proxy fault stays on.
    pub fault: Duration,
}

impl Size {
    pub fn from_env() -> Self {
        let full = std::env::var("WARDEN_CHAOS").is_ok_and(|v| v == "full");
        if full {
            Self {
                pg_kills: 5,
                graph_kills: 3,
                flaps: 100,
                restarts: 3,
                fault: Duration::from_secs(10),
            }
        } else {
            Self {
                pg_kills: 2,
                graph_kills: 1,
                flaps: 10,
                restarts: 1,
                fault: Duration::from_secs(3),
            }
        }
    }
}

pub use crate::support::rss_kib;

// ---------------------------------------------------------------------------------------------
// Writes and their ledger

const UNUSED: u8 = 0;
const PENDING: u8 = 1;
const ACKED: u8 = 2;
const FAILED: u8 = 3;

/// The outcome of every write by its client-side id. Allocated and touched whole before the
/// load starts, so that it never grows during the run (RSS is judged).
pub struct Ledger {
    outcomes: Vec<AtomicU8>,
    next: AtomicU64,
}

impl Ledger {
    pub fn new(capacity: usize) -> Arc<Self> {
        let outcomes = (0..capacity).map(|_| AtomicU8::new(UNUSED)).collect();
        Arc::new(Self {
            outcomes,
            next: AtomicU64::new(0),
        })
    }

    /// A fresh id, or None when the ledger is full (the load then stops: bounded by count).
    pub fn issue(&self) -> Option<u64> {
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let slot = self.outcomes.get(id as usize)?;
        slot.store(PENDING, Ordering::SeqCst);
        Some(id)
    }

    pub fn record(&self, id: u64, acked: bool) {
        let outcome = if acked { ACKED } else { FAILED };
        self.outcomes[id as usize].store(outcome, Ordering::SeqCst);
    }

    fn outcome(&self, id: u64) -> u8 {
        self.outcomes
            .get(id as usize)
            .map_or(UNUSED, |o| o.load(Ordering::SeqCst))
    }

    fn issued(&self) -> u64 {
        self.next
            .load(Ordering::SeqCst)
            .min(self.outcomes.len() as u64)
    }

    /// The id the next write will get: a check `from` it leaves out the writes before.
    pub fn mark(&self) -> u64 {
        self.next.load(Ordering::SeqCst)
    }

    /// Checks what the database holds against the ledger, for the ids from `from` on. `found`
    /// has one entry per stored row: (id, part). Each id is expected in the parts `parts(id)`
    /// (a transaction writes two rows, all or nothing).
    pub fn check(
        &self,
        found: &[(u64, u8)],
        from: u64,
        parts: impl Fn(u64) -> &'static [u8],
    ) -> WriteCheck {
        let mut counts: HashMap<u64, BTreeMap<u8, usize>> = HashMap::new();
        for &(id, part) in found.iter().filter(|(id, _)| *id >= from) {
            *counts.entry(id).or_default().entry(part).or_default() += 1;
        }
        let mut check = WriteCheck::default();
        for id in from..self.issued() {
            let seen = counts.remove(&id).unwrap_or_default();
            let expected = parts(id);
            let per_part: Vec<usize> = expected
                .iter()
                .map(|p| seen.get(p).copied().unwrap_or(0))
                .collect();
            let stray = seen.keys().any(|p| !expected.contains(p));
            let doubled = per_part.iter().any(|&n| n > 1);
            let torn = per_part.iter().any(|&n| n != per_part[0]);
            match self.outcome(id) {
                ACKED => {
                    check.acked += 1;
                    if per_part.contains(&0) {
                        check.missing.push(id);
                    }
                }
                FAILED => {
                    check.failed += 1;
                    if per_part[0] > 0 {
                        check.failed_present += 1;
                    }
                }
                // An issued write whose call never returned: the deadline check reports it.
                _ => check.unanswered += 1,
            }
            if doubled || stray {
                check.doubled.push(id);
            }
            if torn {
                check.torn.push(id);
            }
        }
        check.unknown = counts.len();
        check
    }
}

/// What the database holds against what callers were told.
#[derive(Debug, Default)]
pub struct WriteCheck {
    /// Writes acknowledged Ok.
    pub acked: usize,
    /// Writes that returned an error.
    pub failed: usize,
    /// Of those, present (the statement reached the server and committed; allowed once).
    pub failed_present: usize,
    /// Issued writes whose call never returned.
    pub unanswered: usize,
    /// Acknowledged writes not found.
    pub missing: Vec<u64>,
    /// Writes found more than once (or in a part they do not write).
    pub doubled: Vec<u64>,
    /// Transactions found in part only.
    pub torn: Vec<u64>,
    /// Ids found that were never issued.
    pub unknown: usize,
}

impl WriteCheck {
    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let few = |ids: &[u64]| format!("{:?}", &ids[..ids.len().min(10)]);
        if !self.missing.is_empty() {
            p.push(format!(
                "{} acknowledged writes missing, e.g. ids {}",
                self.missing.len(),
                few(&self.missing)
            ));
        }
        if !self.doubled.is_empty() {
            p.push(format!(
                "{} writes doubled, e.g. ids {}",
                self.doubled.len(),
                few(&self.doubled)
            ));
        }
        if !self.torn.is_empty() {
            p.push(format!(
                "{} transactions torn, e.g. ids {}",
                self.torn.len(),
                few(&self.torn)
            ));
        }
        if self.unknown > 0 {
            p.push(format!("{} rows with ids never issued", self.unknown));
        }
        if self.acked == 0 {
            p.push("no write was acknowledged: the load did not run".into());
        }
        p
    }
}

// ---------------------------------------------------------------------------------------------
// Calls: outcomes and deadlines

/// Every call's outcome and time, folded as it happens (no per-call storage).
pub struct Calls {
    /// query_timeout + 100 ms.
    bound: Duration,
    ok: AtomicUsize,
    failed: AtomicUsize,
    over_bound: AtomicUsize,
    worst_us: AtomicU64,
    /// Failures by kind, with the first message of each kind.
    kinds: Mutex<BTreeMap<&'static str, (usize, String)>>,
}

impl Calls {
    pub fn new(query_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            bound: query_timeout + Duration::from_millis(100),
            ok: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            over_bound: AtomicUsize::new(0),
            worst_us: AtomicU64::new(0),
            kinds: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn record<T>(&self, took: Duration, result: &Result<T, WardenError>) {
        self.worst_us
            .fetch_max(took.as_micros() as u64, Ordering::SeqCst);
        if took > self.bound {
            self.over_bound.fetch_add(1, Ordering::SeqCst);
        }
        match result {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::SeqCst);
                let mut kinds = self.kinds.lock().expect("lock");
                let entry = kinds.entry(kind(e)).or_insert_with(|| (0, e.to_string()));
                entry.0 += 1;
            }
        }
    }

    pub fn ok(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    fn worst(&self) -> Duration {
        Duration::from_micros(self.worst_us.load(Ordering::SeqCst))
    }

    /// `Connection 12, Unavailable 40` (the first message of each kind goes to stderr).
    fn kinds_text(&self) -> String {
        let kinds = self.kinds.lock().expect("lock");
        kinds
            .iter()
            .map(|(k, (n, _))| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn kind(e: &WardenError) -> &'static str {
    match e {
        WardenError::CircuitOpen { .. } => "CircuitOpen",
        WardenError::Unavailable { .. } => "Unavailable",
        WardenError::Timeout { .. } => "Timeout",
        WardenError::Query { .. } => "Query",
        WardenError::Connection { .. } => "Connection",
        WardenError::Authentication { .. } => "Authentication",
        WardenError::Conversion { .. } => "Conversion",
        WardenError::Usage { .. } => "Usage",
        WardenError::CommitOutcomeUnknown { .. } => "CommitOutcomeUnknown",
        WardenError::Stopped { .. } => "Stopped",
        WardenError::CallRuntimeGone { .. } => "CallRuntimeGone",
    }
}

// ---------------------------------------------------------------------------------------------
// The load

/// Callers running on a runtime of their own until stopped or out of ids.
pub struct Load {
    runtime: tokio::runtime::Runtime,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("chaos-load")
            .enable_all()
            .build()
            .expect("load runtime");
        Self {
            runtime,
            stop: Arc::new(AtomicBool::new(false)),
            tasks: Vec::new(),
        }
    }

    /// Starts `n` callers, each running `call(i)` until the load stops or `call` returns false;
    /// a caller whose call failed waits 20 ms before the next (an application would back off
    /// too; without it a refused caller spins).
    pub fn callers<F, Fut>(&mut self, n: usize, call: F)
    where
        F: Fn(usize) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Option<bool>> + Send + 'static,
    {
        let call = Arc::new(call);
        for i in 0..n {
            let stop = self.stop.clone();
            let call = call.clone();
            self.tasks.push(self.runtime.spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    match call(i).await {
                        None => return,
                        Some(true) => {}
                        Some(false) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            }));
        }
    }

    /// Stops every caller and waits until each has its last answer (a caller's panic, such
    /// as a wrong result, resumes here).
    pub async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            if let Err(e) = t.await {
                std::panic::resume_unwind(e.into_panic());
            }
        }
        self.runtime.shutdown_background();
    }
}

// ---------------------------------------------------------------------------------------------
// The watcher: health and pg_stat_activity from another thread

/// What the watcher saw.
#[derive(Debug, Default, Clone)]
pub struct Watched {
    pub health_polls: usize,
    pub health_worst: Duration,
    pub health_failures: usize,
    pub health_first_failure: Option<String>,
    /// The most warden connections `pg_stat_activity` listed at a settled moment.
    pub pg_peak: Option<i64>,
}

pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Watched>,
}

impl Watcher {
    /// Polls `health_url` every 50 ms and, with `pg_url`, counts warden's connections in
    /// `pg_stat_activity` every 100 ms (over `max`, it looks again after 300 ms: a backend
    /// whose client has gone lingers until the server notices).
    pub fn start(health_url: String, pg_url: Option<String>, max: i64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("watcher runtime");
            rt.block_on(async move {
                let health = watch_health(&health_url, &flag);
                let pg = async {
                    match pg_url {
                        Some(url) => Some(watch_pg(&url, max, &flag).await),
                        None => None,
                    }
                };
                let (mut watched, pg_peak) = futures_util::future::join(health, pg).await;
                watched.pg_peak = pg_peak;
                watched
            })
        });
        Self { stop, thread }
    }

    pub fn stop(self) -> Watched {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("watcher")
    }
}

async fn watch_health(url: &str, stop: &AtomicBool) -> Watched {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    let mut w = Watched::default();
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let answer = client.get(url).send().await;
        let took = started.elapsed();
        w.health_polls += 1;
        w.health_worst = w.health_worst.max(took);
        let failure = match answer {
            Ok(r) if r.status() == 200 => r.bytes().await.err().map(|e| e.to_string()),
            Ok(r) => Some(format!("status {}", r.status())),
            Err(e) => Some(e.to_string()),
        };
        if let Some(f) = failure {
            w.health_failures += 1;
            w.health_first_failure.get_or_insert(f);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w
}

async fn watch_pg(url: &str, max: i64, stop: &AtomicBool) -> i64 {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy(url)
        .expect("watcher pool");
    let count = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'warden'",
        )
        .fetch_one(&pool)
        .await
        .ok()
    };
    let mut peak = 0;
    while !stop.load(Ordering::SeqCst) {
        if let Some(mut n) = count().await {
            if n > max {
                tokio::time::sleep(Duration::from_millis(300)).await;
                n = count().await.unwrap_or(0);
            }
            peak = peak.max(n);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pool.close().await;
    peak
}

// ---------------------------------------------------------------------------------------------
// Recovery

/// One recovery: how long calls took to succeed after the peer returned, against the bound.
#[derive(Debug, Clone)]
pub struct Recovery {
    pub took: Duration,
    pub bound: Duration,
    /// The component's status and circuit when the peer returned, to tell a slow reconnect
    /// from a circuit left open.
    pub at_return: String,
}

/// From now (the peer is back), polls `call` every 10 ms until it succeeds, and judges the
/// time against the pending backoff + one probe interval + 200 ms. The pending backoff is the
/// wait warden has announced to its callers: the next connect attempt (health's
/// `next_attempt_at`) or, when calls failing on a connection warden kept opened the circuit (a
/// slow link that times calls out), what is left of its cooldown (`retry_after_ms`): such a
/// circuit keeps its cooldown by design, since no reconnect tells that the database is well
/// again. A circuit opened as the connection went is closed by the reconnect: not counted. When
/// a connect attempt is under way at the peer's return, the backoff is the one it announces
/// when it ends, counted from then.
/// Gives up after a minute (the figure then shows it).
pub async fn recovery<F, Fut>(
    warden: &Warden,
    db: Database,
    probe_interval: Duration,
    call: F,
) -> Recovery
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    let component = warden.health_handle().view().components[&db].clone();
    let reconnect = component
        .next_attempt_at
        .and_then(|at| (at - chrono::Utc::now()).to_std().ok())
        .unwrap_or_default();
    // Only a circuit that opened while warden stayed connected keeps its cooldown: after a
    // lost connection the reconnect closes it, and the bound must say so.
    let cooldown = match component.status {
        ComponentStatus::Connected => {
            Duration::from_millis(component.circuit.retry_after_ms.unwrap_or(0))
        }
        _ => Duration::ZERO,
    };
    let pending = reconnect.max(cooldown);
    let at_return = format!(
        "status {:?}, circuit {:?} (retry after {:?} ms)",
        component.status, component.circuit.state, component.circuit.retry_after_ms
    );
    let margin = probe_interval + Duration::from_millis(200);
    // A connect attempt that was already under way when the peer returned (it may have met the
    // peer still down) has no backoff announced yet: the bound is taken when it ends, from the
    // backoff it then announces.
    let mut bound = (component.status != ComponentStatus::Connecting).then_some(pending + margin);
    let give_up = started + Duration::from_secs(60);
    while !call().await && Instant::now() < give_up {
        if bound.is_none() {
            let c = warden.health_handle().view().components[&db].clone();
            let announced = c
                .next_attempt_at
                .and_then(|at| (at - chrono::Utc::now()).to_std().ok())
                .unwrap_or_default();
            if c.status != ComponentStatus::Connecting {
                bound = Some(started.elapsed() + announced + margin);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = started.elapsed();
    Recovery {
        took,
        // Still connecting when the call succeeded: that attempt was the one that worked.
        bound: bound.unwrap_or(took.max(margin)),
        at_return,
    }
}

// ---------------------------------------------------------------------------------------------
// The report

/// One scenario's figures; `finish` prints its table row (and writes it under
/// `$WARDEN_CHAOS_OUT` for `scripts/chaos`), then asserts every promise.
pub struct Report {
    pub scenario: &'static str,
    pub faults: String,
    pub calls: Arc<Calls>,
    pub writes: WriteCheck,
    /// (peak at the proxy, pg_stat_activity peak, max_connections).
    pub connections: (usize, Option<i64>, usize),
    pub recoveries: Vec<Recovery>,
    pub watched: Watched,
    pub rss_growth_kib: i64,
    pub started: Instant,
    /// Why the writes could not be read back, if they could not.
    pub unreadable: Option<String>,
}

impl Report {
    fn problems(&self) -> Vec<String> {
        let mut p = match &self.unreadable {
            Some(why) => vec![why.clone()],
            None => self.writes.problems(),
        };
        let over = self.calls.over_bound.load(Ordering::SeqCst);
        if over > 0 || self.writes.unanswered > 0 {
            p.push(format!(
                "{over} calls over query_timeout + 100 ms ({:?}), the worst {:?}; {} never answered",
                self.calls.bound,
                self.calls.worst(),
                self.writes.unanswered
            ));
        }
        let (proxy, pg, max) = self.connections;
        if proxy > max || pg.is_some_and(|n| n > max as i64) {
            p.push(format!(
                "more than max_connections ({max}) open: {proxy} at the proxy, {pg:?} in pg_stat_activity"
            ));
        }
        for (i, r) in self.recoveries.iter().enumerate() {
            if r.took > r.bound {
                p.push(format!(
                    "recovery {i}: calls succeeded after {:?}, bound {:?}; when the peer returned: {}",
                    r.took, r.bound, r.at_return
                ));
            }
        }
        if self.recoveries.is_empty() {
            p.push("no recovery was measured".into());
        }
        let w = &self.watched;
        if w.health_worst >= Duration::from_millis(100) || w.health_failures > 0 {
            p.push(format!(
                "/health/detailed: worst {:?} over {} polls, {} failures (first: {:?})",
                w.health_worst, w.health_polls, w.health_failures, w.health_first_failure
            ));
        }
        if w.health_polls < 10 {
            p.push(format!(
                "/health/detailed polled only {} times",
                w.health_polls
            ));
        }
        if self.rss_growth_kib >= 5 * 1024 {
            p.push(format!("RSS grew by {} KiB", self.rss_growth_kib));
        }
        p
    }

    /// The table row.
    fn row(&self, problems: &[String]) -> String {
        let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
        let worst_recovery = self
            .recoveries
            .iter()
            .max_by_key(|r| r.took.as_micros() as i128 - r.bound.as_micros() as i128)
            .map_or("-".into(), |r| {
                format!("{} (≤ {})", ms(r.took), ms(r.bound))
            });
        let (proxy, pg, max) = self.connections;
        let failed = self.calls.failed.load(Ordering::SeqCst);
        let w = &self.writes;
        let writes = match self.unreadable {
            Some(_) => format!("{} acked: could not be read back", w.acked),
            None => format!(
                "{} acked: {} missing, {} doubled; {} of {} failed present",
                w.acked,
                w.missing.len(),
                w.doubled.len() + w.torn.len(),
                w.failed_present,
                w.failed
            ),
        };
        format!(
            "| {} | {} | {} ok / {} failed | {} | {} (≤ {}) | {} / {} (≤ {}) | {} | {} | {:+.1} MB | {:.0} s | {} |",
            self.scenario,
            self.faults,
            self.calls.ok(),
            failed,
            writes,
            ms(self.calls.worst()),
            ms(self.calls.bound),
            proxy,
            pg.map_or("-".into(), |n| n.to_string()),
            max,
            worst_recovery,
            ms(self.watched.health_worst),
            self.rss_growth_kib as f64 / 1024.0,
            self.started.elapsed().as_secs_f64(),
            if problems.is_empty() { "pass" } else { "FAIL" },
        )
    }

    pub fn finish(self) {
        let problems = self.problems();
        let row = self.row(&problems);
        eprintln!(
            "chaos {}: errors by kind: {}",
            self.scenario,
            self.calls.kinds_text()
        );
        for (k, (_, first)) in self.calls.kinds.lock().expect("lock").iter() {
            eprintln!("  first {k}: {first}");
        }
        eprintln!("{row}");
        if let Some(dir) = std::env::var_os("WARDEN_CHAOS_OUT") {
            let dir = std::path::PathBuf::from(dir);
            std::fs::create_dir_all(&dir).expect("chaos output dir");
            let mut text = format!(
                "{row}\n- {}: errors by kind: {}",
                self.scenario,
                self.calls.kinds_text()
            );
            for p in &problems {
                text.push_str(&format!("\n- {}: {p}", self.scenario));
            }
            std::fs::write(dir.join(format!("{}.md", self.scenario)), text + "\n")
                .expect("write the row");
        }
        assert!(
            problems.is_empty(),
            "{}:\n{}",
            self.scenario,
            problems.join("\n")
        );
    }
}
