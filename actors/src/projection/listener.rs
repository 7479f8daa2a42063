//! The wake-up: `LISTEN "<schema>.graph_outbox"` on a connection of its own (never one of
//! warden's pool, which must stay free of session state), through sqlx's `PgListener`.
//!
//! A notification is only a hint: those sent while the connection is down are lost (sqlx's
//! `PgListener` says so), and a connection can die silently. So every (re)connect wakes the
//! projector for a poll, and the projector polls on a timer anyway.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::Notify;

use crate::backoff::Backoff;

/// Listens until `stop`, waking the projector on every notification and reconnect.
pub(crate) async fn listen(
    options: PgConnectOptions,
    connect_timeout: Duration,
    channel: String,
    wake: Arc<Notify>,
    stop: Arc<AtomicBool>,
    stopped: Arc<Notify>,
    mut backoff: Backoff,
) {
    while !stop.load(Ordering::Acquire) {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(connect_timeout)
            .connect_lazy_with(options.clone());
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener.listen(&channel).await {
                Ok(()) => {
                    tracing::debug!(%channel, "listening for outbox notifications");
                    backoff.reset();
                    // Whatever was notified while nobody listened: poll now.
                    wake.notify_one();
                    loop {
                        let received = tokio::select! {
                            r = listener.try_recv() => r,
                            // Dropped here, inside the runtime: sqlx's drop spawns its UNLISTEN.
                            () = stopped.notified() => return,
                        };
                        match received {
                            Ok(Some(_)) => wake.notify_one(),
                            // The connection was lost and made again: notifications in between
                            // are gone, so poll.
                            Ok(None) => {
                                tracing::debug!("the outbox listener reconnected");
                                wake.notify_one();
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "the outbox listener lost its connection");
                                break;
                            }
                        }
                        if stop.load(Ordering::Acquire) {
                            return;
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot LISTEN for outbox notifications"),
            },
            Err(e) => tracing::debug!(error = %e, "cannot connect the outbox listener"),
        }
        pool.close().await;
        let delay = backoff.next_delay(&mut rand::rng());
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stopped.notified() => return,
        }
    }
}
