//! warden served in-process with its console and settings API, wired as the daemon wires
//! them, for tests that also make calls through the same warden.

use std::time::{Duration, Instant};

use warden::config::DaemonConfig;
use warden_actors::Warden;

/// Starts warden from `cfg`, waits for PostgreSQL and for the `config` table to be read, and
/// serves the daemon's HTTP app (health, console, `/api/v1`) on a free port of 127.0.0.1.
/// Returns warden and the server's base URL (`http://127.0.0.1:PORT`).
pub async fn serve(cfg: &DaemonConfig) -> (Warden, String) {
    let warden = Warden::start(cfg.warden_settings()).expect("settings");
    super::pg_connected(&warden).await;
    warden.follow_config_table(cfg.runtime_settings);
    let runtime = warden.runtime_settings();
    super::eventually(Duration::from_secs(10), "the table read", || {
        let s = runtime.status();
        async move { (s.listening && s.checked_at.is_some()).then_some(()) }
    })
    .await;
    let state = warden::console::app_state(&warden, cfg, Instant::now());
    let base = super::serve_state(state, 1);
    (warden, base)
}
