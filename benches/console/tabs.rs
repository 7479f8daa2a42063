//! `console`: what 20 open console tabs cost the health endpoint. Each simulated tab makes the
//! page's own requests, over its own keep-alive connection: `/`, `/health/history` and
//! `/health/settings` when it opens, then `/health/detailed` every second (the page's poll).
//! wrk measures `/health/detailed` (one thread, 64 connections) with no tab open and with the
//! 20 tabs polling, in alternating rounds; the ratio of the medians is the figure. A real
//! browser is not used for the load: 20 Chromium tabs would compete with wrk and the daemon for
//! the machine's two cores and measure the machine, not warden (the page's behaviour itself is
//! tested in tests/console.rs).

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use crate::support::{daemon::Daemon, graph::GraphServer, pg::PgServer};

/// Simulated tabs.
pub const TABS: usize = 20;

/// Requests made by the tabs, and failures among them.
#[derive(Default)]
pub struct TabStats {
    pub requests: AtomicU64,
    pub failures: AtomicU64,
}

/// Starts the tabs on a thread of their own; they poll until `stop` is set.
pub fn open_tabs(
    port: u16,
    stop: Arc<AtomicBool>,
    stats: Arc<TabStats>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let tabs = (0..TABS).map(|_| {
                let stop = stop.clone();
                let stats = stats.clone();
                tokio::spawn(async move {
                    let client = reqwest::Client::builder()
                        .timeout(Duration::from_millis(900))
                        .build()
                        .expect("client");
                    let get = |path: &'static str| {
                        let client = client.clone();
                        let stats = stats.clone();
                        async move {
                            stats.requests.fetch_add(1, Ordering::Relaxed);
                            let ok = match client
                                .get(format!("http://127.0.0.1:{port}{path}"))
                                .send()
                                .await
                            {
                                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                                Err(_) => false,
                            };
                            if !ok {
                                stats.failures.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    };
                    for path in ["/", "/health/history", "/health/settings"] {
                        get(path).await;
                    }
                    let mut tick = tokio::time::interval(Duration::from_secs(1));
                    while !stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        get("/health/detailed").await;
                    }
                })
            });
            for t in tabs.collect::<Vec<_>>() {
                let _ = t.await;
            }
        });
    })
}

/// Starts the servers and the daemon the section measures.
pub fn stack() -> (PgServer, GraphServer, Daemon) {
    let pg = PgServer::start();
    let graph = GraphServer::start();
    let d = Daemon::spawn(
        &["run"],
        &[
            ("NEO4J_URI", graph.uri()),
            ("NEO4J_PASSWORD", "bench".into()),
            ("DATABASE_URL", pg.url()),
            ("WARDEN__LOG__LEVEL", "warn".into()),
        ],
    );
    (pg, graph, d)
}
