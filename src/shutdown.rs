//! The one future that says "stop": SIGTERM or SIGINT.
//!
//! systemd (and `docker stop`) sends SIGTERM; an operator at a terminal sends SIGINT with
//! Ctrl-C. Both mean the same orderly drain. A second signal during the drain is not needed:
//! the drain is bounded by `shutdown_timeout`, and systemd's SIGKILL follows `TimeoutStopSec`.

use tokio::signal::unix::{self as unix, SignalKind};

/// Resolves with the signal's name when SIGTERM or SIGINT arrives.
pub async fn signal() -> &'static str {
    let (Ok(mut term), Ok(mut int)) = (
        unix::signal(SignalKind::terminate()),
        unix::signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process can only be killed; never return "stop".
        tracing::error!("cannot install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
