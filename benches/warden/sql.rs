//! The `sql` part of the `messages` section: `SELECT 1` through four paths, interleaved in
//! quarter-second phases so that each comparison is between neighbours in time.
//!
//! The paths: a sqlx pool used directly with its defaults (the reference), a direct pool with
//! `test_before_acquire(false)` (the baseline), and `Sql` through a `PostgresHandle` to a warden
//! on its own I/O threads (default) and to one hosted on the callers' runtime. All four pools
//! stay open for the whole level, and the same `n` caller tasks, on one 2-worker tokio runtime,
//! call whichever path the current phase names.
//!
//! Why phases rather than rounds of seconds: on the shared 2-core VMs this runs on, whole
//! rounds a few seconds apart differed by up to ±30 % for the same path. A phase lasts 250 ms;
//! its first [`SETTLE`] is not counted (the calls still running on the path before drain, and
//! a pool idle since its last phase warms up). Phases come in pairs, the baseline and one other
//! path, in alternating order (baseline first, then the other first), so that a drift in the
//! machine's load falls on both sides of a pair alike; each pair gives one ratio, and the
//! table reports their median and quartiles. A control, the baseline against itself, shows
//! what the method reads when nothing differs.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use super::{
    bench_settings, load_row, median_load, process_cpu, row, support, wait_connected, Args, Load,
    Row, POOL,
};
use support::pg::PgServer;
use warden_actors::{Database, PostgresHandle, Sql, Warden};

/// How long one phase runs one path.
const PHASE: Duration = Duration::from_millis(250);
/// The start of a phase that is not counted.
const SETTLE: Duration = Duration::from_millis(25);
/// Unmeasured load on each path before the first phase, so that every pool has its
/// connections open and the server's backends have run the statement.
const WARMUP: Duration = Duration::from_millis(300);

/// The paths, in the order of `--sql-paths` names; `control` is the baseline's pool again.
const NAMES: [&str; 5] = ["defaults", "baseline", "default", "hosted", "control"];
const BASELINE: usize = 1;

type CallFn = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// `SELECT 1` on a pool of its own, used directly, created on the current runtime (so that
/// its sockets belong to it).
fn direct(url: &str, tuned: bool) -> (sqlx::PgPool, CallFn) {
    let options = sqlx::postgres::PgPoolOptions::new().test_before_acquire(!tuned);
    let pool = options
        .max_connections(POOL)
        .connect_lazy(url)
        .expect("pool");
    let call_pool = pool.clone();
    let call: CallFn = Arc::new(move || {
        let pool = call_pool.clone();
        Box::pin(async move { sqlx::query("SELECT 1").fetch_all(&pool).await.is_ok() })
    });
    (pool, call)
}

/// `Sql("SELECT 1")` through a warden's handle, boxed like the direct paths' calls.
fn through(handle: PostgresHandle) -> CallFn {
    Arc::new(move || {
        let call = handle.send(Sql::new("SELECT 1"));
        Box::pin(async move { call.await.is_ok() })
    })
}

/// What the callers read before each call: the path of the current phase, and the phase's
/// number once its settling time is over (0 while it settles, so the call is not counted).
/// [`STOP`] ends the callers.
struct Schedule(AtomicU64);

const STOP: u64 = u64::MAX;

impl Schedule {
    fn set(&self, path: usize, counting: u64) {
        self.0.store(counting << 8 | path as u64, Ordering::Release);
    }

    fn get(&self) -> Option<(usize, u64)> {
        let v = self.0.load(Ordering::Acquire);
        (v != STOP).then_some(((v & 0xff) as usize, v >> 8))
    }
}

/// One caller: calls the current phase's path until told to stop; each counted call's phase
/// and latency (ns, capped at 4.29 s), and the failed counted calls' phases.
async fn caller(calls: Arc<[CallFn; 5]>, schedule: Arc<Schedule>) -> (Vec<(u64, u32)>, Vec<u64>) {
    let (mut done, mut failed) = (Vec::with_capacity(1 << 14), Vec::new());
    while let Some((path, phase)) = schedule.get() {
        let t = Instant::now();
        let ok = calls[path]().await;
        if phase == 0 {
            continue;
        }
        if ok {
            done.push((
                phase,
                t.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32,
            ));
        } else {
            failed.push(phase);
        }
    }
    (done, failed)
}

/// One measured phase: how long it was counted, and the CPU this process spent meanwhile.
struct Window {
    took: Duration,
    cpu: Duration,
}

/// Runs `phases` (the path of each, in order) with `n` callers on `rt`; each phase's load.
fn run_phases(
    rt: &tokio::runtime::Runtime,
    calls: &Arc<[CallFn; 5]>,
    n: usize,
    phases: &[usize],
) -> Vec<Load> {
    let schedule = Arc::new(Schedule(AtomicU64::new(0)));
    schedule.set(phases[0], 0);
    let callers: Vec<_> = (0..n)
        .map(|_| rt.spawn(caller(calls.clone(), schedule.clone())))
        .collect();
    let mut windows = Vec::with_capacity(phases.len());
    for (i, &path) in phases.iter().enumerate() {
        schedule.set(path, 0);
        std::thread::sleep(SETTLE);
        let (start, cpu) = (Instant::now(), process_cpu());
        schedule.set(path, i as u64 + 1);
        std::thread::sleep(PHASE - SETTLE);
        windows.push(Window {
            took: start.elapsed(),
            cpu: process_cpu().saturating_sub(cpu),
        });
    }
    schedule.0.store(STOP, Ordering::Release);
    let mut latencies: Vec<Vec<u32>> = vec![Vec::new(); phases.len()];
    let mut errors = vec![0usize; phases.len()];
    for c in callers {
        let (done, failed) = rt.block_on(c).expect("caller");
        for (phase, ns) in done {
            latencies[phase as usize - 1].push(ns);
        }
        for phase in failed {
            errors[phase as usize - 1] += 1;
        }
    }
    windows
        .iter()
        .zip(latencies)
        .zip(errors)
        .map(|((w, mut lat), errors)| {
            lat.sort_unstable();
            let calls = lat.len().max(1) as f64;
            Load {
                rate: lat.len() as f64 / w.took.as_secs_f64(),
                errors,
                p50: super::percentile(&lat, 0.5),
                p99: super::percentile(&lat, 0.99),
                cpu: w.cpu.div_f64(calls),
            }
        })
        .collect()
}

/// `count` phases in pairs of the baseline and one other path, the baseline first in one pair
/// and second in the next. The target's comparison (hosted) gets every other two pairs, the
/// other paths share the rest in turn, so that the figure the target is checked on has half
/// the pairs.
fn plan(others: &[usize], count: usize) -> Vec<usize> {
    let hosted = others.iter().position(|&p| NAMES[p] == "hosted");
    let rest: Vec<usize> = others
        .iter()
        .copied()
        .filter(|&p| NAMES[p] != "hosted")
        .collect();
    (0..count / 2)
        .flat_map(|pair| {
            let block = pair / 2;
            let other = match hosted {
                Some(h) if rest.is_empty() || block % 2 == 0 => others[h],
                Some(_) => rest[(block / 2) % rest.len()],
                None => rest[block % rest.len()],
            };
            if pair % 2 == 0 {
                [BASELINE, other]
            } else {
                [other, BASELINE]
            }
        })
        .collect()
}

/// The median and quartiles of `x`: `[q1, median, q3]`.
fn quartiles(mut x: Vec<f64>) -> [f64; 3] {
    x.sort_by(f64::total_cmp);
    [0.25, 0.5, 0.75].map(|p| x[((x.len() - 1) as f64 * p).round() as usize])
}

pub(crate) fn sql(args: &Args, rows: &mut Vec<Row>, pg: &PgServer, graph_uri: &str) {
    let wanted: Vec<usize> = (0..NAMES.len())
        .filter(|&i| args.sql_paths.is_empty() || args.sql_paths.iter().any(|p| p == NAMES[i]))
        .collect();
    assert!(!wanted.is_empty(), "--sql-paths names none of {NAMES:?}");
    let others: Vec<usize> = wanted.iter().copied().filter(|&i| i != BASELINE).collect();
    let alone = wanted.len() == 1;
    assert!(
        alone || wanted.contains(&BASELINE),
        "--sql-paths: every path is compared with the baseline, so name it too (or one path alone)"
    );
    let total = Duration::from_secs(args.message_seconds * args.message_rounds as u64);
    let count = ((total.as_millis() / PHASE.as_millis()) as usize).max(2) & !1;
    eprintln!(
        "sql: {} phases of {} ms per level (first {} ms of each not counted), pools of {POOL}, \
         paths {}",
        count,
        PHASE.as_millis(),
        SETTLE.as_millis(),
        wanted
            .iter()
            .map(|&i| NAMES[i])
            .collect::<Vec<_>>()
            .join(", ")
    );
    for &n in &args.levels {
        // One caller runtime per level, shaped like a small application's: every path's
        // callers run on it, and the hosted warden's pool lives on it.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let system = actix::System::new();
        let (default, hosted) = system.block_on(async {
            let default = Warden::start(bench_settings(pg, graph_uri)).expect("settings");
            let hosted = Warden::builder(bench_settings(pg, graph_uri))
                .call_runtime(rt.handle().clone())
                .start()
                .expect("settings");
            wait_connected(&default, Database::Postgres).await;
            wait_connected(&hosted, Database::Postgres).await;
            (default, hosted)
        });
        let (defaults_pool, defaults_call) = rt.block_on(async { direct(&pg.url(), false) });
        let (baseline_pool, baseline_call) = rt.block_on(async { direct(&pg.url(), true) });
        let calls: Arc<[CallFn; 5]> = Arc::new([
            defaults_call,
            baseline_call.clone(),
            through(default.postgres_handle()),
            through(hosted.postgres_handle()),
            baseline_call,
        ]);
        let warmup = (WARMUP.as_millis() / PHASE.as_millis()).max(1) as usize;
        let warm: Vec<usize> = wanted
            .iter()
            .flat_map(|&p| std::iter::repeat_n(p, warmup))
            .collect();
        run_phases(&rt, &calls, n, &warm);
        let phases = if alone {
            vec![wanted[0]; count]
        } else {
            plan(&others, count)
        };
        let loads = run_phases(&rt, &calls, n, &phases);
        for &p in wanted.iter().filter(|&&p| NAMES[p] != "control") {
            let mine: Vec<Load> = phases
                .iter()
                .zip(&loads)
                .filter(|(&q, _)| q == p)
                .map(|(_, l)| l.clone())
                .collect();
            load_row(
                rows,
                format!(
                    "Sql ×{n}: {}, calls/s, p50 / p99 (median of phases)",
                    NAMES[p]
                ),
                &median_load(&mine),
            );
        }
        for &p in others.iter().filter(|_| !alone) {
            let (mut ratios, mut gaps) = (Vec::new(), Vec::new());
            for (pair, l) in phases.chunks(2).zip(loads.chunks(2)) {
                let (b, o) = if pair[0] == BASELINE {
                    (&l[0], &l[1])
                } else {
                    (&l[1], &l[0])
                };
                if pair.contains(&p) && b.rate > 0.0 {
                    ratios.push(o.rate / b.rate);
                    gaps.push((o.cpu.as_secs_f64() - b.cpu.as_secs_f64()) * 1e6);
                }
            }
            let pairs = ratios.len();
            let [lo, ratio, hi] = quartiles(ratios);
            let text = format!(
                "{:.1} % ({:.0}–{:.0}, {pairs} pairs)",
                ratio * 100.0,
                lo * 100.0,
                hi * 100.0
            );
            let hosted = NAMES[p] == "hosted";
            let name = match NAMES[p] {
                "control" => "control: baseline",
                name => name,
            };
            row(
                rows,
                format!("Sql ×{n}: {name} ÷ baseline (median of pairs; quartiles)"),
                text,
                if hosted { "≥ 95 %" } else { "" },
                hosted.then_some(ratio >= 0.95),
            );
            row(
                rows,
                format!("Sql ×{n}: {name} − baseline, CPU per call"),
                {
                    let [lo, gap, hi] = quartiles(gaps);
                    format!("{gap:+.1} µs ({lo:+.1}–{hi:+.1})")
                },
                "",
                None,
            );
        }
        rt.block_on(async {
            defaults_pool.close().await;
            baseline_pool.close().await;
        });
        system.block_on(async {
            default.shutdown(Duration::from_secs(5)).await;
            hosted.shutdown(Duration::from_secs(5)).await;
        });
        drop(rt);
    }
}
