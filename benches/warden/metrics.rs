//! The `metrics` section: what recording calls costs, and how fast a scrape answers under load.
//!
//! One warden against a throwaway PostgreSQL, `SELECT 1` through its handle from 32 callers (or
//! `--concurrency N`): rounds with call recording on and off (`Metrics::set_call_recording`),
//! alternating which goes first, in the same run, on the same pool. Meanwhile another thread
//! scrapes `/metrics` over HTTP (the daemon's HTTP layer, served in this process) every
//! 100 ms, in both kinds of round so that both carry the same extra load; each scrape is
//! timed from connect to the last byte.

use std::{
    io::{Read, Write},
    net::TcpStream,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use super::{
    actor_load, bench_settings, load_row, median_load, median_ratio, ratio_text, row, support, us,
    wait_connected, Args, Row,
};
use support::pg::PgServer;
use warden_actors::{Database, Sql, Warden};

/// One scrape over a fresh connection, as Prometheus makes them; its duration.
fn scrape_once(port: u16) -> Duration {
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut body = Vec::with_capacity(16 * 1024);
    s.read_to_end(&mut body).expect("read");
    let took = t.elapsed();
    assert!(
        body.starts_with(b"HTTP/1.1 200") && body.ends_with(b"\n"),
        "a bad scrape: {}",
        String::from_utf8_lossy(&body[..body.len().min(200)])
    );
    took
}

/// Scrapes every 100 ms until `stop`; the durations.
fn scraper(port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Duration>> {
    std::thread::spawn(move || {
        let mut times = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            times.push(scrape_once(port));
            std::thread::sleep(Duration::from_millis(100));
        }
        times
    })
}

pub(crate) fn metrics_cost(args: &Args, rows: &mut Vec<Row>) {
    let n = match args.levels.as_slice() {
        [one] => *one,
        _ => 32,
    };
    let (secs, rounds) = (args.message_seconds, args.message_rounds);
    eprintln!(
        "metrics: Sql ×{n}, call recording on and off in {rounds} alternating rounds of {secs} s, \
         /metrics scraped every 100 ms"
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
    let metrics = warden.metrics();
    let (mut on, mut off, mut scrapes) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for recording in order {
            metrics.set_call_recording(recording);
            let stop = Arc::new(AtomicBool::new(false));
            let scraping = scraper(port, stop.clone());
            let postgres = warden.postgres_handle();
            let load = system.block_on(actor_load(n, secs, move || {
                let call = postgres.send(Sql::new("SELECT 1"));
                async move { call.await.is_ok() }
            }));
            stop.store(true, Ordering::Relaxed);
            scrapes.extend(scraping.join().expect("scraper"));
            if recording {
                on.push(load);
            } else {
                off.push(load);
            }
        }
    }
    metrics.set_call_recording(true);
    system.block_on(warden.shutdown(Duration::from_secs(5)));

    load_row(
        rows,
        format!("Sql ×{n}: metrics off, calls/s, p50 / p99"),
        &median_load(&off),
    );
    load_row(
        rows,
        format!("Sql ×{n}: metrics on, calls/s, p50 / p99"),
        &median_load(&on),
    );
    let ratio = median_ratio(&on, &off);
    row(
        rows,
        format!("Sql ×{n}: metrics on ÷ off (median of {rounds} rounds)"),
        ratio_text(&on, &off),
        "≥ 97 %",
        Some(ratio >= 0.97),
    );
    scrapes.sort_unstable();
    let pct = |p: f64| scrapes[((scrapes.len() - 1) as f64 * p).round() as usize];
    let (p50, p99) = (pct(0.5), pct(0.99));
    row(
        rows,
        format!(
            "/metrics under that load: p50 / p99 of {} scrapes",
            scrapes.len()
        ),
        format!("{} / {}", us(p50), us(p99)),
        "both < 5 ms",
        Some(p99 < Duration::from_millis(5)),
    );
}
