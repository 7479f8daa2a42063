//! `[projection]`: the graph projection's settings, validated like every other section.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::settings::{bounded, Neo4jSettings, SettingsError, MAX_SUPERVISION_DELAY};

/// Upper bound on `projection.batch_size`: a batch is one graph transaction, and past a
/// thousand recordings (each with its children) it holds Neo4j's locks for too long.
pub const MAX_BATCH_SIZE: u32 = 1000;

/// Upper bound on `projection.max_attempts`.
pub const MAX_ATTEMPTS: u32 = 1000;

/// Bounds on `projection.statement_bytes`.
pub const STATEMENT_BYTES: std::ops::RangeInclusive<usize> = 1024..=(64 << 20);

/// `[projection]`: how the outbox is drained into the graph.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProjectionSettings {
    /// Run the projector in this process. Several wardens on one database may all run it:
    /// claims never hand one event to two of them.
    pub enabled: bool,
    /// Events claimed (and applied in one graph transaction) at a time; 1 to
    /// [`MAX_BATCH_SIZE`].
    pub batch_size: u32,
    /// Time between two polls of the outbox when no notification came (notifications are
    /// only a hint: those sent while the listener is disconnected are lost).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How long a claimed batch is this projector's alone. It must outlast a graph call
    /// (`neo4j.query_timeout`): a lease that runs out while the projector still works lets
    /// another projector take the same events.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Rejections (not outages) an event gets before it turns `dead`; 1 to [`MAX_ATTEMPTS`].
    pub max_attempts: u32,
    /// Cap on the wait before a rejected event is tried again (1 s, doubling).
    #[serde(with = "humantime_serde")]
    pub retry_backoff_cap: Duration,
    /// Health shows `graph_sync` degraded when the oldest pending event is older than this.
    /// Lag never makes `/health/ready` fail: the catalog keeps taking writes.
    #[serde(with = "humantime_serde")]
    pub lag_bound: Duration,
    /// Upper bound on the parameters of one graph statement, in bytes of JSON. A batch is
    /// split into as many `UNWIND` statements as it takes (all in one transaction). Neo4j
    /// takes megabytes; the FalkorDB stand-in crashes past about 4 KB (see README).
    pub statement_bytes: usize,
}

impl Default for ProjectionSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            batch_size: 100,
            poll_interval: Duration::from_secs(5),
            lease: Duration::from_secs(120),
            max_attempts: 12,
            retry_backoff_cap: Duration::from_secs(600),
            lag_bound: Duration::from_secs(60),
            statement_bytes: 1 << 20,
        }
    }
}

impl ProjectionSettings {
    /// Checks the ranges, and that a lease outlasts a graph call.
    pub fn validate(&self, neo4j: &Neo4jSettings) -> Result<(), SettingsError> {
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            return Err(SettingsError::new(
                "projection.batch_size",
                self.batch_size,
                format!("must be between 1 and {MAX_BATCH_SIZE}"),
            ));
        }
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(SettingsError::new(
                "projection.max_attempts",
                self.max_attempts,
                format!("must be between 1 and {MAX_ATTEMPTS}"),
            ));
        }
        bounded(
            "projection.poll_interval",
            self.poll_interval,
            MAX_SUPERVISION_DELAY,
        )?;
        bounded("projection.lease", self.lease, MAX_SUPERVISION_DELAY)?;
        // Only a running projector takes leases (a one-shot command or a warden without one
        // may keep a query_timeout longer than any lease).
        if self.enabled && self.lease <= neo4j.query_timeout {
            return Err(SettingsError::new(
                "projection.lease",
                humantime::format_duration(self.lease),
                format!(
                    "must be longer than neo4j.query_timeout ({}): a lease that runs out while \
                     its batch is still being applied lets another projector take it",
                    humantime::format_duration(neo4j.query_timeout)
                ),
            ));
        }
        bounded(
            "projection.retry_backoff_cap",
            self.retry_backoff_cap,
            MAX_SUPERVISION_DELAY,
        )?;
        bounded(
            "projection.lag_bound",
            self.lag_bound,
            MAX_SUPERVISION_DELAY * 24,
        )?;
        if !STATEMENT_BYTES.contains(&self.statement_bytes) {
            return Err(SettingsError::new(
                "projection.statement_bytes",
                self.statement_bytes,
                format!(
                    "must be between {} and {}",
                    STATEMENT_BYTES.start(),
                    STATEMENT_BYTES.end()
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        ProjectionSettings::default()
            .validate(&Neo4jSettings::default())
            .unwrap();
    }

    #[test]
    fn every_bound_names_its_key() {
        let neo4j = Neo4jSettings::default();
        type Set = fn(&mut ProjectionSettings);
        let cases: [(&str, Set); 8] = [
            ("projection.batch_size", |s| s.batch_size = 0),
            ("projection.batch_size", |s| {
                s.batch_size = MAX_BATCH_SIZE + 1
            }),
            ("projection.max_attempts", |s| s.max_attempts = 0),
            ("projection.poll_interval", |s| {
                s.poll_interval = Duration::ZERO
            }),
            // The default query_timeout is 30 s.
            ("projection.lease", |s| s.lease = Duration::from_secs(30)),
            ("projection.retry_backoff_cap", |s| {
                s.retry_backoff_cap = Duration::from_secs(7200)
            }),
            ("projection.lag_bound", |s| s.lag_bound = Duration::ZERO),
            ("projection.statement_bytes", |s| s.statement_bytes = 10),
        ];
        for (key, set) in cases {
            let mut s = ProjectionSettings::default();
            set(&mut s);
            assert_eq!(s.validate(&neo4j).unwrap_err().key, key);
        }
    }
}
