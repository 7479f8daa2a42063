//! The running values, published for lock-free reads, and the handle that replaces them.
//!
//! Every decision point reads [`Tunables`] when it decides, not when it was built: a call's
//! admission (its deadline), its retries, the actor's next probe and its timeout, its next
//! backoff delay. A new snapshot is one pointer swap, so no reader ever sees half of one;
//! what was already decided (a deadline running, a backoff delay being waited out, an open
//! circuit's cooldown) runs its course, which keeps every change predictable. The circuits'
//! thresholds and cooldowns live in the breaker's own state and reach it in one message.

use std::sync::{Arc, Mutex};

use actix::Addr;
use arc_swap::{ArcSwap, Guard};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use super::snapshot::{diff, overlay, RuntimeSettings, RuntimeSettingsError};
use crate::{
    breaker::{BreakerActor, Retune},
    error::Database,
    health::{HealthActor, StaleAfter},
    settings::WardenSettings,
};

/// The runtime values in force, for any thread.
#[derive(Debug, Clone)]
pub struct Tunables(Arc<ArcSwap<RuntimeSettings>>);

impl Tunables {
    /// Values that stay as given until something stores others.
    pub fn new(settings: RuntimeSettings) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(settings)))
    }

    /// The values in force now (one atomic load, no lock).
    pub fn load(&self) -> Guard<Arc<RuntimeSettings>> {
        self.0.load()
    }

    fn store(&self, settings: RuntimeSettings) {
        self.0.store(Arc::new(settings));
    }
}

/// What became of the `config` table, for health and the settings API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableStatus {
    /// Snapshots applied since start (0: the file's values are in force).
    pub version: u64,
    /// When the last snapshot was applied.
    #[serde(serialize_with = "crate::timestamp::millis_opt")]
    pub applied_at: Option<DateTime<Utc>>,
    /// When the table was last read.
    #[serde(serialize_with = "crate::timestamp::millis_opt")]
    pub checked_at: Option<DateTime<Utc>>,
    /// Why the table as last read was refused (the previous snapshot stays in force); null
    /// once a table is accepted again.
    pub last_error: Option<String>,
    /// The key `last_error` is about.
    pub error_key: Option<String>,
    /// Why the table could not be read (PostgreSQL down, the table not migrated yet); null
    /// after the next successful read.
    pub load_error: Option<String>,
    /// Whether the change notifications' connection is up.
    pub listening: bool,
    /// The keys whose values come from the table now.
    pub table_keys: Vec<String>,
    /// The rows as last read, accepted or not.
    #[serde(skip)]
    pub rows: Arc<Vec<(String, Value)>>,
}

struct Shared {
    base: WardenSettings,
    tunables: Tunables,
    status: ArcSwap<TableStatus>,
    breaker: Addr<BreakerActor>,
    health: Addr<HealthActor>,
    /// Bumped whenever the status changes, for whoever waits for a write to land.
    changed: watch::Sender<u64>,
    /// One apply at a time, so that the log of changes and the status follow the same order.
    applying: Mutex<()>,
}

/// The runtime settings of a running warden: what is in force, where it came from, and the
/// way to replace it with a table's snapshot. Cheap to clone, for any thread.
#[derive(Clone)]
pub struct RuntimeSettingsHandle(Arc<Shared>);

impl std::fmt::Debug for RuntimeSettingsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeSettingsHandle")
            .field("current", &**self.0.tunables.load())
            .finish_non_exhaustive()
    }
}

impl RuntimeSettingsHandle {
    pub(crate) fn new(
        base: WardenSettings,
        tunables: Tunables,
        breaker: Addr<BreakerActor>,
        health: Addr<HealthActor>,
    ) -> Self {
        Self(Arc::new(Shared {
            base,
            tunables,
            status: ArcSwap::from_pointee(TableStatus::default()),
            breaker,
            health,
            changed: watch::channel(0).0,
            applying: Mutex::new(()),
        }))
    }

    /// The values in force.
    pub fn current(&self) -> RuntimeSettings {
        **self.0.tunables.load()
    }

    /// The file's (and environment's) values: what an empty table means.
    pub fn base(&self) -> RuntimeSettings {
        RuntimeSettings::of(&self.0.base)
    }

    /// The file and environment settings the table is laid over (secrets included: never
    /// print them).
    pub(crate) fn base_settings(&self) -> &WardenSettings {
        &self.0.base
    }

    /// What became of the table.
    pub fn status(&self) -> Arc<TableStatus> {
        self.0.status.load_full()
    }

    /// Resolves at the next status change (a read of the table, an apply, an error).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.0.changed.subscribe()
    }

    /// The snapshot `rows` would make, without applying it.
    pub fn check(&self, rows: &[(String, Value)]) -> Result<RuntimeSettings, RuntimeSettingsError> {
        overlay(&self.0.base, rows)
    }

    /// Makes `rows` (the whole table) the settings in force, or keeps the current ones and
    /// records why not. Each changed key is logged with its old and new value.
    pub fn apply(
        &self,
        rows: Vec<(String, Value)>,
    ) -> Result<RuntimeSettings, RuntimeSettingsError> {
        let _one = self
            .0
            .applying
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let result = overlay(&self.0.base, &rows);
        let old = self.status();
        let mut status = TableStatus {
            checked_at: Some(Utc::now()),
            load_error: None,
            rows: Arc::new(rows),
            ..(*old).clone()
        };
        match &result {
            Ok(new) => {
                let before = self.current();
                let changes = diff(&before, new);
                if !changes.is_empty() {
                    for (key, old, new) in &changes {
                        tracing::info!(%key, %old, %new, "runtime setting changed");
                    }
                    self.0.tunables.store(*new);
                    self.retune_actors(new);
                    status.version += 1;
                    status.applied_at = Some(Utc::now());
                }
                if old.last_error.is_some() {
                    tracing::info!("the config table is accepted again");
                }
                status.last_error = None;
                status.error_key = None;
                status.table_keys = status.rows.iter().map(|(k, _)| k.clone()).collect();
            }
            Err(e) => {
                let text = e.to_string();
                if old.last_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(error = %text, "config table refused; the settings in force stay");
                }
                status.last_error = Some(text);
                status.error_key = e.key().map(str::to_owned);
            }
        }
        self.publish(status);
        result
    }

    /// The table could not be read; the settings in force stay.
    pub(crate) fn load_failed(&self, why: String) {
        let old = self.status();
        if old.load_error.as_deref() != Some(why.as_str()) {
            tracing::warn!(error = %why, "cannot read the config table; the settings in force stay");
        }
        self.publish(TableStatus {
            load_error: Some(why),
            ..(*old).clone()
        });
    }

    /// Whether the notifications' connection is up.
    pub(crate) fn set_listening(&self, listening: bool) {
        let old = self.status();
        if old.listening != listening {
            self.publish(TableStatus {
                listening,
                ..(*old).clone()
            });
        }
    }

    fn publish(&self, status: TableStatus) {
        self.0.status.store(Arc::new(status));
        self.0.changed.send_modify(|n| *n += 1);
    }

    /// The values the breaker and health keep in their own state.
    fn retune_actors(&self, new: &RuntimeSettings) {
        self.0.breaker.do_send(Retune {
            threshold: new.breaker.failure_threshold,
            cooldown: new.breaker.cooldown,
            half_open_retry: [
                (Database::Neo4j, new.neo4j.probe_interval),
                (Database::Postgres, new.postgres.probe_interval),
            ],
        });
        for db in [Database::Neo4j, Database::Postgres] {
            self.0.health.do_send(StaleAfter {
                database: db,
                stale_after: new.database(db).probe_interval * 3,
            });
        }
    }
}
