//! Keeps the running settings in step with the `config` table: `LISTEN` for the trigger's
//! notification (a change is applied within a second), a poll every `poll_interval`, and a
//! reload after every (re)connect, since notifications sent while the listening connection is
//! down are lost for good. Every read takes the whole table and applies it as one snapshot
//! ([`RuntimeSettingsHandle::apply`]); a notification is only a hint, so spurious or doubled
//! wake-ups cost one read and change nothing.
//!
//! It uses one connection of its own (`application_name` is warden's with `-settings`
//! appended), outside the pool and on top of `postgres.max_connections`: a `LISTEN` session
//! cannot be a pooled one, and the reads go through it too.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::{PgListener, PgPoolOptions};

use super::{snapshot::MAX_ROWS, RuntimeSettingsHandle};
use crate::{
    postgres::{errors::from_sqlx, errors::PgBounds, PgDriver},
    settings::{bounded, SettingsError, MAX_SUPERVISION_DELAY},
};

/// `[runtime_settings]`: whether and how often warden reads the `config` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TableSettings {
    /// Read the table and follow its changes.
    pub enabled: bool,
    /// Time between two reads when no notification arrives; at most an hour.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

impl Default for TableSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            poll_interval: Duration::from_secs(30),
        }
    }
}

impl TableSettings {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), SettingsError> {
        bounded(
            "runtime_settings.poll_interval",
            self.poll_interval,
            MAX_SUPERVISION_DELAY,
        )
    }
}

/// The first wait after a failed connect or read; it doubles up to the poll interval.
const FIRST_RETRY: Duration = Duration::from_millis(500);

/// Runs until `stop` fires (or its sender is dropped), then drops its connection while the
/// runtime is still there (sqlx needs one to close a connection), and returns.
pub(crate) async fn run(
    handle: RuntimeSettingsHandle,
    options: TableSettings,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    tokio::select! {
        () = follow(handle.clone(), options) => {}
        _ = stop.wait_for(|stop| *stop) => {}
    }
    handle.set_listening(false);
}

async fn follow(handle: RuntimeSettingsHandle, options: TableSettings) {
    let pg = handle.base_settings().postgres.clone();
    let schema = pg.schema.clone();
    let channel = format!("{schema}.config");
    let query = format!(
        "SELECT key, value FROM \"{schema}\".config ORDER BY key LIMIT {}",
        MAX_ROWS + 1
    );
    let driver = match PgDriver::new(pg.clone()) {
        Ok(d) => d,
        Err(e) => {
            handle.load_failed(e.to_string());
            return;
        }
    };
    let secrets = driver.secrets.clone();
    let bounds = PgBounds {
        acquire: pg.connect_timeout,
        statement: pg.query_timeout,
    };
    let mut retry = FIRST_RETRY;
    loop {
        let opts = match driver.connect_options() {
            Ok(o) => o.application_name(&settings_application_name(&pg.application_name)),
            Err(e) => {
                handle.load_failed(e.to_string());
                return;
            }
        };
        // A pool of one only to let PgListener reconnect by itself after a lost connection.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(pg.connect_timeout)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with(opts);
        let listener = async {
            let mut l = PgListener::connect_with(&pool).await?;
            l.listen(&channel).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let mut listener = match tokio::time::timeout(pg.connect_timeout, listener).await {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                handle.load_failed(from_sqlx(&e, bounds, &secrets).to_string());
                retry = wait(retry, options.poll_interval).await;
                continue;
            }
            Err(_) => {
                handle.load_failed(format!(
                    "connecting to read the config table timed out after {}",
                    humantime::format_duration(pg.connect_timeout)
                ));
                retry = wait(retry, options.poll_interval).await;
                continue;
            }
        };
        handle.set_listening(true);
        // Notifications sent while disconnected are lost: read the table now.
        let mut healthy = true;
        let mut next_poll = tokio::time::Instant::now();
        while healthy {
            let now = tokio::time::Instant::now();
            if now >= next_poll {
                next_poll = now + options.poll_interval;
                healthy = reload(&handle, &mut listener, &query, bounds, &secrets).await;
                continue;
            }
            // `try_recv` is cancel-safe (sqlx reads messages whole from its buffer).
            match tokio::time::timeout_at(next_poll, listener.try_recv()).await {
                Err(_) => {} // time to poll
                Ok(Ok(Some(_))) => {
                    // A burst of changes is one read.
                    while listener.next_buffered().is_some() {}
                    healthy = reload(&handle, &mut listener, &query, bounds, &secrets).await;
                }
                // The connection was lost and re-established by the listener.
                Ok(Ok(None)) => next_poll = tokio::time::Instant::now(),
                Ok(Err(e)) => {
                    handle.load_failed(from_sqlx(&e, bounds, &secrets).to_string());
                    healthy = false;
                }
            }
        }
        handle.set_listening(false);
        drop(listener);
        pool.close().await;
        retry = wait(retry, options.poll_interval).await;
        if handle.status().load_error.is_none() {
            retry = FIRST_RETRY;
        }
    }
}

/// Reads the whole table and applies it; `false` when the read failed (reconnect).
async fn reload(
    handle: &RuntimeSettingsHandle,
    listener: &mut PgListener,
    query: &str,
    bounds: PgBounds,
    secrets: &[crate::secret::Secret],
) -> bool {
    let timeout = handle.current().postgres.query_timeout;
    let read = sqlx::query_as::<_, (String, Value)>(sqlx::AssertSqlSafe(query.to_owned()))
        .fetch_all(&mut *listener);
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(rows)) => {
            let _ = handle.apply(rows);
            true
        }
        Ok(Err(e)) => {
            handle.load_failed(from_sqlx(&e, bounds, secrets).to_string());
            false
        }
        Err(_) => {
            handle.load_failed(format!(
                "reading the config table timed out after {}",
                humantime::format_duration(timeout)
            ));
            false
        }
    }
}

/// Sleeps `delay` and returns the next one: doubled, at most `cap`.
async fn wait(delay: Duration, cap: Duration) -> Duration {
    tokio::time::sleep(delay.min(cap)).await;
    (delay * 2).min(cap)
}

/// The loader's `application_name`: warden's, marked, within PostgreSQL's 63 bytes.
fn settings_application_name(base: &str) -> String {
    let mut name = base.to_owned();
    while name.len() > 63 - "-settings".len() {
        name.pop();
    }
    name + "-settings"
}
