//! What a scrape reads when it happens: the published health snapshot (the same one `/health`
//! serves) and the pool's own atomic counts. Nothing here touches a database, sends a message
//! or waits: a scrape answers while a database hangs.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
};

use super::{circuit_state_str, CIRCUIT_STATES};
use crate::{
    error::Database,
    health::{ComponentStatus, HealthHandle},
};

/// A pool's counts at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolStats {
    /// Open connections, idle and in use (sqlx `Pool::size`).
    pub size: u32,
    /// Idle ones (sqlx `Pool::num_idle`).
    pub idle: u32,
    /// The most the pool opens (`max_connections` less the probe's own connection).
    pub max: u32,
}

/// Reads a pool's counts (two atomic loads in sqlx); `None` before the pool exists.
pub(crate) type PoolReader = Box<dyn Fn() -> Option<PoolStats> + Send + Sync>;

/// Connection states in label order: health's component statuses.
const CONNECTION_STATES: [ComponentStatus; 5] = [
    ComponentStatus::Connecting,
    ComponentStatus::Connected,
    ComponentStatus::Backoff,
    ComponentStatus::Stale,
    ComponentStatus::Stopped,
];

fn connection_state_str(s: ComponentStatus) -> &'static str {
    match s {
        ComponentStatus::Connecting => "connecting",
        ComponentStatus::Connected => "connected",
        ComponentStatus::Backoff => "backoff",
        ComponentStatus::Stale => "stale",
        ComponentStatus::Stopped => "stopped",
    }
}

/// The scrape-time part of the registry.
pub(crate) struct StateCollector {
    health: HealthHandle,
    /// Databases whose pool can be read (PostgreSQL; neo4rs does not expose its pool).
    pools: Vec<(Database, PoolReader)>,
}

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateCollector")
            .field("health", &self.health)
            .field("pools", &self.pools.iter().map(|p| p.0).collect::<Vec<_>>())
            .finish()
    }
}

impl StateCollector {
    pub(crate) fn new(health: HealthHandle, pools: Vec<(Database, PoolReader)>) -> Self {
        Self { health, pools }
    }
}

/// Writes one gauge family: `samples` as `(labels, value)`.
fn gauge<'a, const N: usize>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = ([(&'static str, &'a str); N], i64)>,
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let view = self.health.view();
        let dbs = || view.components.iter().map(|(db, c)| (db.as_str(), c));
        gauge(
            &mut encoder,
            "warden_database_up",
            "1 when the database is healthy (connected, its actor reporting, its circuit closed), \
             else 0.",
            dbs().map(|(db, c)| ([("database", db)], i64::from(c.healthy))),
        )?;
        gauge(
            &mut encoder,
            "warden_connection_state",
            "1 for the connection's current state (connecting, connected, backoff, stale, \
             stopped), 0 for the others.",
            dbs().flat_map(|(db, c)| {
                CONNECTION_STATES.map(|s| {
                    (
                        [("database", db), ("state", connection_state_str(s))],
                        i64::from(c.status == s),
                    )
                })
            }),
        )?;
        gauge(
            &mut encoder,
            "warden_circuit_state",
            "1 for the circuit's current state (closed, open, half_open), 0 for the others.",
            dbs().flat_map(|(db, c)| {
                CIRCUIT_STATES.map(|s| {
                    (
                        [("database", db), ("state", circuit_state_str(s))],
                        i64::from(c.circuit.state == s),
                    )
                })
            }),
        )?;
        let mut restarts = encoder.encode_descriptor(
            "warden_connection_restarts",
            "Times the database actor was restarted by its supervisor to connect again, after a \
             failed connect or probe and its backoff.",
            None,
            MetricType::Counter,
        )?;
        for (db, c) in dbs() {
            ConstCounter::new(u64::from(c.restarts))
                .encode(restarts.encode_family(&[("database", db)])?)?;
        }

        let pools: Vec<(&str, PoolStats)> = self
            .pools
            .iter()
            .filter_map(|(db, read)| read().map(|s| (db.as_str(), s)))
            .collect();
        gauge(
            &mut encoder,
            "warden_pool_connections",
            "Open pooled connections by state (idle, in_use); their sum is the pool's size.",
            pools.iter().flat_map(|(db, s)| {
                let idle = s.idle.min(s.size);
                [
                    ([("database", *db), ("state", "idle")], i64::from(idle)),
                    (
                        [("database", *db), ("state", "in_use")],
                        i64::from(s.size - idle),
                    ),
                ]
            }),
        )?;
        gauge(
            &mut encoder,
            "warden_pool_max_connections",
            "The most connections the pool opens (max_connections less the probe's own).",
            pools
                .iter()
                .map(|(db, s)| ([("database", *db)], i64::from(s.max))),
        )?;
        Ok(())
    }
}
