//! One-shot commands for the graph projection: `warden project --rebuild` and
//! `warden outbox retry <id>|--all-dead`. Each starts warden's actors without a projector of
//! its own (daemons may be running beside it), waits for the databases it needs, does its work
//! through them and exits: 0 done, 69 (EX_UNAVAILABLE) a database could not be reached, 1 the
//! work failed (the reason on stderr), 78 bad configuration.

use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use warden_actors::{
    health::ComponentStatus,
    projection::{outbox, rebuild, Retry},
    Database, Warden, WardenError,
};

use crate::{config::DaemonConfig, daemon::EX_UNAVAILABLE};

fn runtime<F: std::future::Future<Output = u8>>(body: impl FnOnce() -> F) -> ExitCode {
    let system = actix::System::new();
    ExitCode::from(system.block_on(body()))
}

/// Starts warden without a projector and waits until `needed` are connected.
async fn started(cfg: &DaemonConfig, needed: &[Database]) -> Result<Warden, u8> {
    let mut settings = cfg.warden_settings();
    settings.projection.enabled = false;
    let warden = Warden::start(settings).map_err(|e| {
        eprintln!("warden: {e}");
        crate::config::EX_CONFIG
    })?;
    let bound =
        cfg.postgres.connect_timeout.max(cfg.neo4j.connect_timeout) * 2 + Duration::from_secs(2);
    let deadline = Instant::now() + bound;
    let health = warden.health_handle();
    loop {
        let view = health.view();
        let down: Vec<&Database> = needed
            .iter()
            .filter(|db| view.components[db].status != ComponentStatus::Connected)
            .collect();
        if down.is_empty() {
            return Ok(warden);
        }
        if Instant::now() > deadline {
            for db in down {
                let why = view.components[db].reason.clone().unwrap_or_default();
                eprintln!("warden: {db} is unreachable: {why}");
            }
            warden.shutdown(Duration::from_secs(2)).await;
            return Err(EX_UNAVAILABLE);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn failed(e: &WardenError) -> u8 {
    eprintln!("warden: {e}");
    if e.is_transient() {
        EX_UNAVAILABLE
    } else {
        1
    }
}

/// `warden project --rebuild`.
pub fn rebuild(cfg: DaemonConfig) -> ExitCode {
    runtime(|| async move {
        let warden = match started(&cfg, &[Database::Postgres, Database::Neo4j]).await {
            Ok(w) => w,
            Err(code) => return code,
        };
        let result = rebuild::rebuild(
            &warden.postgres_handle(),
            &warden.neo4j_handle(),
            cfg.projection.batch_size,
            cfg.projection.statement_bytes,
        )
        .await;
        warden.shutdown(Duration::from_secs(5)).await;
        match result {
            Ok(r) => {
                println!(
                    "rebuilt the graph: {} nodes cleared, {} recordings replayed, {} already newer, {} swept",
                    r.cleared, r.replayed, r.skipped, r.swept
                );
                0
            }
            Err(e) => failed(&e),
        }
    })
}

/// `warden outbox retry <id>` (`Some`) or `--all-dead` (`None`).
pub fn retry(cfg: DaemonConfig, id: Option<i64>) -> ExitCode {
    runtime(|| async move {
        let warden = match started(&cfg, &[Database::Postgres]).await {
            Ok(w) => w,
            Err(code) => return code,
        };
        let which = id.map_or(Retry::AllDead, Retry::One);
        let result = outbox::retry(&warden.postgres_handle(), which).await;
        warden.shutdown(Duration::from_secs(5)).await;
        match result {
            Ok(ids) if ids.is_empty() && id.is_some() => {
                eprintln!(
                    "warden: event {} is not dead (or does not exist); nothing re-driven",
                    id.unwrap_or_default()
                );
                1
            }
            Ok(ids) => {
                println!("re-driven {} dead event(s): {ids:?}", ids.len());
                0
            }
            Err(e) => failed(&e),
        }
    })
}
