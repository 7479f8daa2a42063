//! The `graph_sync` component of health: how far the graph projection is behind PostgreSQL.
//!
//! The projector counts its outbox (one cheap query per poll) and pushes a [`GraphSyncReport`]
//! to the health actor; the view is judged against the clock when it is read, like every other
//! component, so the age of the oldest event keeps growing on a dashboard even while the
//! projector waits for the graph. Lag never makes `/health/ready` fail (the catalog keeps
//! taking writes while the graph is down); dead events and lag past `projection.lag_bound`
//! make the component, and so the top-level status, `degraded`.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// What the projector last counted, pushed whole after every count.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphSyncReport {
    /// Events waiting to be applied (leased ones included).
    pub pending: u64,
    /// When the oldest pending event was written.
    pub oldest_pending_at: Option<DateTime<Utc>>,
    /// Events the graph rejected `projection.max_attempts` times; each blocks its recording.
    pub dead: u64,
    /// When this process last applied a batch to the graph.
    pub last_applied_at: Option<DateTime<Utc>>,
    /// Why the projector is not applying right now (waiting for the graph, the last failure),
    /// sanitized; `None` while it applies.
    pub waiting: Option<String>,
    /// `projection.lag_bound`.
    pub lag_bound: Duration,
    /// How often the projector counts (`projection.poll_interval`): three without a count and
    /// the figures are shown as stale.
    pub poll_interval: Duration,
}

/// A report and when it arrived.
#[derive(Debug, Clone)]
pub(crate) struct GraphSyncEntry {
    pub(crate) report: GraphSyncReport,
    pub(crate) at: Instant,
}

/// `graph_sync` as served by `/health/detailed`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GraphSyncHealth {
    /// `ok`, `lagging` (oldest pending event past the bound), `dead_events` or `stale` (no
    /// count for three poll intervals: PostgreSQL may be unreachable).
    pub status: &'static str,
    /// No dead event, lag within the bound, counts fresh.
    pub healthy: bool,
    /// Events waiting to be applied.
    pub pending: u64,
    /// Age of the oldest pending event, in milliseconds (null when none is pending).
    pub oldest_pending_age_ms: Option<u64>,
    /// Dead events (see `warden outbox retry`).
    pub dead: u64,
    /// When this process last applied a batch.
    pub last_applied_at: Option<DateTime<Utc>>,
    /// The bound on lag, in milliseconds.
    pub lag_bound_ms: u64,
    /// What the projector is waiting for, if it is not applying.
    pub waiting: Option<String>,
    /// Why the component is unhealthy (`null` when healthy).
    pub reason: Option<String>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl GraphSyncEntry {
    /// The view at `now` (monotonic) and `wall` (the same instant on the wall clock).
    pub(crate) fn view(&self, now: Instant, wall: DateTime<Utc>) -> GraphSyncHealth {
        let r = &self.report;
        let age = r
            .oldest_pending_at
            .map(|at| (wall - at).to_std().unwrap_or_default());
        let silent = now.saturating_duration_since(self.at);
        let (status, reason) = if silent > r.poll_interval * 3 {
            (
                "stale",
                Some(format!(
                    "the outbox was last counted {}s ago: PostgreSQL may be unreachable",
                    silent.as_secs()
                )),
            )
        } else if r.dead > 0 {
            (
                "dead_events",
                Some(format!(
                    "{} dead event(s) block their recordings: see `warden outbox retry`",
                    r.dead
                )),
            )
        } else if let Some(age) = age.filter(|age| *age > r.lag_bound) {
            (
                "lagging",
                Some(format!(
                    "the oldest of {} pending event(s) is {}s old (bound {}s){}",
                    r.pending,
                    age.as_secs(),
                    r.lag_bound.as_secs(),
                    r.waiting
                        .as_deref()
                        .map_or(String::new(), |w| format!("; {w}"))
                )),
            )
        } else {
            ("ok", None)
        };
        GraphSyncHealth {
            status,
            healthy: reason.is_none(),
            pending: r.pending,
            oldest_pending_age_ms: age.map(millis),
            dead: r.dead,
            last_applied_at: r.last_applied_at,
            lag_bound_ms: millis(r.lag_bound),
            waiting: r.waiting.clone(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pending: u64, oldest_secs_ago: Option<i64>, dead: u64) -> GraphSyncEntry {
        GraphSyncEntry {
            report: GraphSyncReport {
                pending,
                oldest_pending_at: oldest_secs_ago
                    .map(|s| Utc::now() - chrono::Duration::seconds(s)),
                dead,
                last_applied_at: None,
                waiting: Some("neo4j is unavailable".into()),
                lag_bound: Duration::from_secs(60),
                poll_interval: Duration::from_secs(5),
            },
            at: Instant::now(),
        }
    }

    #[test]
    fn lag_within_the_bound_is_healthy_past_it_degraded() {
        let v = entry(10, Some(5), 0).view(Instant::now(), Utc::now());
        assert!(v.healthy && v.status == "ok", "{v:?}");
        assert!(v.oldest_pending_age_ms.unwrap() >= 5000);
        let v = entry(10, Some(61), 0).view(Instant::now(), Utc::now());
        assert_eq!(v.status, "lagging");
        assert!(!v.healthy);
        assert!(v.reason.unwrap().contains("neo4j is unavailable"));
    }

    #[test]
    fn dead_events_and_silence_say_why() {
        let v = entry(0, None, 2).view(Instant::now(), Utc::now());
        assert_eq!(v.status, "dead_events");
        assert!(v.reason.unwrap().contains("warden outbox retry"));
        let mut e = entry(0, None, 0);
        e.at = Instant::now() - Duration::from_secs(16);
        assert_eq!(e.view(Instant::now(), Utc::now()).status, "stale");
    }
}
