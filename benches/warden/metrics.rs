//! The `metrics` section: what recording calls costs, and how fast a scrape answers under load.
//!
//! One warden against a throwaway PostgreSQL, `SELECT 1` through its handle from 32 callers (or
//! `--concurrency N`) without a pause, in rounds of `--message-seconds`. Within each round, a
//! thread turns call recording (`Metrics::set_call_recording`) on and off every 250 ms, in
//! pairs of phases whose order alternates (on-off, off-on, ...), and counts the calls each
//! phase completed: each pair's ratio compares two quarter-seconds side by side, so the load
//! other programs put on a shared machine falls on both alike, and the median over all pairs
//! is reported. Meanwhile another thread GETs `/metrics` and, as the ceiling, `/health` (the
//! trivial liveness handler) over HTTP, each every 100 ms on a fresh connection, timed from
//! connect to the last byte; the time to render the metrics alone is measured too.

use std::{
    io::{Read, Write},
    net::TcpStream,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use super::{
    actor_load, bench_settings, load_row, median_load, row, support, us, wait_connected, Args, Row,
};
use support::pg::PgServer;
use warden_actors::{Database, Sql, Warden};

/// One GET of `path` over a fresh connection, as Prometheus makes them; its duration.
fn get_once(port: u16, path: &str) -> Duration {
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut body = Vec::with_capacity(16 * 1024);
    s.read_to_end(&mut body).expect("read");
    let took = t.elapsed();
    assert!(
        body.starts_with(b"HTTP/1.1 200"),
        "a bad answer to {path}: {}",
        String::from_utf8_lossy(&body[..body.len().min(200)])
    );
    took
}

/// Until `stop`: GETs `/metrics` then `/health` every 100 ms; both lists of durations.
fn scraper(
    port: u16,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Vec<Duration>, Vec<Duration>)> {
    std::thread::spawn(move || {
        let (mut metrics, mut health) = (Vec::new(), Vec::new());
        while !stop.load(Ordering::Relaxed) {
            metrics.push(get_once(port, "/metrics"));
            health.push(get_once(port, "/health"));
            std::thread::sleep(Duration::from_millis(100));
        }
        (metrics, health)
    })
}

/// Turns recording on and off every `PHASE` until `stop`, counting the calls each phase
/// completed. Pairs of phases cycle through on-off, off-on, and a control pair (on-on) that
/// shows what this method reads when nothing differs; returns the ratios (calls/s of the first
/// recording phase ÷ the other) of the real pairs and of the control pairs.
fn toggler(
    metrics: Arc<warden_actors::Metrics>,
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Vec<f64>, Vec<f64>)> {
    const PHASE: Duration = Duration::from_millis(250);
    std::thread::spawn(move || {
        let (mut ratios, mut control) = (Vec::new(), Vec::new());
        let mut pair = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let order = match pair % 3 {
                0 => [true, false],
                1 => [false, true],
                _ => [true, true],
            };
            let mut rate = [0.0f64; 2];
            for (i, recording) in order.into_iter().enumerate() {
                metrics.set_call_recording(recording);
                let (t, before) = (Instant::now(), done.load(Ordering::Relaxed));
                std::thread::sleep(PHASE);
                let calls = done.load(Ordering::Relaxed) - before;
                let slot = if order[0] == order[1] {
                    i
                } else {
                    usize::from(!recording)
                };
                rate[slot] = calls as f64 / t.elapsed().as_secs_f64();
            }
            if !stop.load(Ordering::Relaxed) && rate[1] > 0.0 {
                let into = if order[0] == order[1] {
                    &mut control
                } else {
                    &mut ratios
                };
                into.push(rate[0] / rate[1]);
            }
            pair += 1;
        }
        metrics.set_call_recording(true);
        (ratios, control)
    })
}

fn percentiles(mut d: Vec<Duration>) -> (Duration, Duration, usize) {
    d.sort_unstable();
    let pct = |p: f64| d[((d.len() - 1) as f64 * p).round() as usize];
    (pct(0.5), pct(0.99), d.len())
}

pub(crate) fn metrics_cost(args: &Args, rows: &mut Vec<Row>) {
    let n = match args.levels.as_slice() {
        [one] => *one,
        _ => 32,
    };
    let (secs, rounds) = (args.message_seconds, args.message_rounds);
    eprintln!(
        "metrics: Sql ×{n} for {rounds} rounds of {secs} s, call recording on and off every \
         250 ms; /metrics and /health over HTTP every 100 ms"
    );
    let pg = PgServer::start();
    let graph_uri = format!("bolt://127.0.0.1:{}", support::free_port());
    let system = actix::System::new();
    let port = support::free_listen_port();
    let warden = system.block_on(async {
        let warden = Warden::start(bench_settings(&pg, &graph_uri)).expect("settings");
        wait_connected(&warden, Database::Postgres).await;
        let state = warden::web::AppState::new(warden.health_handle(), Instant::now())
            .with_metrics(warden::metrics::Endpoint::new(warden.metrics()));
        let server = warden::web::server(
            ([127, 0, 0, 1], port).into(),
            1,
            state,
            Duration::from_secs(1),
        )
        .expect("bind");
        actix::spawn(server);
        warden
    });
    let endpoint = warden::metrics::Endpoint::new(warden.metrics());
    let (mut ratios, mut control, mut scrapes, mut healths, mut renders) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut loads = Vec::new();
    for _ in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let scraping = scraper(port, stop.clone());
        let toggling = toggler(warden.metrics(), done.clone(), stop.clone());
        let postgres = warden.postgres_handle();
        loads.push(system.block_on(actor_load(n, secs, move || {
            let call = postgres.send(Sql::new("SELECT 1"));
            let done = done.clone();
            async move {
                let ok = call.await.is_ok();
                done.fetch_add(u64::from(ok), Ordering::Relaxed);
                ok
            }
        })));
        stop.store(true, Ordering::Relaxed);
        let (m, h) = scraping.join().expect("scraper");
        scrapes.extend(m);
        healths.extend(h);
        let (r, c) = toggling.join().expect("toggler");
        ratios.extend(r);
        control.extend(c);
        // The render alone, as the handler does it, right after the load.
        for _ in 0..100 {
            let t = Instant::now();
            let body = endpoint.render(false).expect("render");
            renders.push(t.elapsed());
            assert!(body.contains("warden_calls_total"));
        }
    }
    system.block_on(warden.shutdown(Duration::from_secs(5)));

    load_row(
        rows,
        format!("Sql ×{n}: calls/s, p50 / p99 (recording on half the time)"),
        &median_load(&loads),
    );
    let quartiles = |mut r: Vec<f64>| {
        r.sort_by(f64::total_cmp);
        let at = |q: usize| r[(r.len() - 1) * q / 4] * 100.0;
        (
            at(2),
            format!("{:.1} % (quartiles {:.0}–{:.0})", at(2), at(1), at(3)),
            r.len(),
        )
    };
    let (median, text, pairs) = quartiles(ratios);
    row(
        rows,
        format!("Sql ×{n}: metrics on ÷ off (median of {pairs} pairs of 250 ms phases)"),
        text,
        "≥ 97 %",
        Some(median >= 97.0),
    );
    let (_, text, pairs) = quartiles(control);
    row(
        rows,
        format!("Sql ×{n}: control, on ÷ on (median of {pairs} pairs)"),
        text,
        "",
        None,
    );
    // What recording does per call, alone on one thread: the clock read, a counter add and a
    // histogram observation (the same types the call path uses), 10 million times.
    let (counter, histogram) = (
        prometheus_client::metrics::counter::Counter::<u64>::default(),
        warden_actors::metrics::DurationHistogram::default(),
    );
    let started = Instant::now();
    const TIMES: u32 = 10_000_000;
    let t = Instant::now();
    for _ in 0..TIMES {
        counter.inc();
        histogram.observe(std::hint::black_box(started).elapsed());
    }
    let per_call = t.elapsed() / TIMES;
    assert_eq!(counter.get(), u64::from(TIMES));
    let rate = median_load(&loads).rate;
    row(
        rows,
        "recording work per call, one thread (CPU share at that call rate)",
        format!(
            "{} ns ({:.2} % of a core)",
            per_call.as_nanos(),
            per_call.as_secs_f64() * rate * 100.0
        ),
        "",
        None,
    );
    let (p50, p99, count) = percentiles(scrapes);
    row(
        rows,
        format!("/metrics over HTTP under that load: p50 / p99 of {count}"),
        format!("{} / {}", us(p50), us(p99)),
        "both < 5 ms",
        Some(p50 < Duration::from_millis(5) && p99 < Duration::from_millis(5)),
    );
    let (h50, h99, count) = percentiles(healths);
    row(
        rows,
        format!("/health over HTTP alongside (ceiling): p50 / p99 of {count}"),
        format!("{} / {}", us(h50), us(h99)),
        "",
        None,
    );
    let (r50, r99, count) = percentiles(renders);
    row(
        rows,
        format!("/metrics render alone: p50 / p99 of {count}"),
        format!("{} / {}", us(r50), us(r99)),
        "",
        None,
    );
}
