//! `GET /health/history`: the last five minutes of every database's state, one sample a
//! second, so that a freshly opened dashboard draws its sparklines at once.
//!
//! A bounded ring buffer ([`CAPACITY`] samples) filled by a sampler that reads the same
//! published health snapshot the other endpoints read, once a second: nothing on this path
//! touches a database or an actor's mailbox. The sampler renders the JSON once per sample
//! and publishes it; a request clones a reference to those bytes, so any number of dashboards
//! opening at once cost one render a second, not one each.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use actix_web::web::Bytes;
use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use serde::Serialize;
use warden_actors::{
    circuit::CircuitStatus,
    health::{ComponentStatus, HealthView},
    Database, HealthHandle,
};

/// One sample a second.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Five minutes of samples.
pub const CAPACITY: usize = 300;

/// One database at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// Connection state, or `stale`.
    pub status: ComponentStatus,
    /// The circuit's state.
    pub circuit: CircuitStatus,
    /// Round trip of the last successful probe, in milliseconds.
    pub latency_ms: Option<f64>,
    /// Connected, reporting, circuit closed.
    pub healthy: bool,
}

/// Every database at one instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// When it was taken (RFC 3339, milliseconds).
    pub at: String,
    /// By database.
    pub components: std::collections::BTreeMap<Database, Point>,
}

impl Sample {
    /// A sample of `view` taken at `at`.
    pub fn of(view: &HealthView, at: DateTime<Utc>) -> Self {
        Self {
            at: warden_actors::timestamp::format(&at),
            components: view
                .components
                .iter()
                .map(|(db, c)| {
                    (
                        *db,
                        Point {
                            status: c.status,
                            circuit: c.circuit.state,
                            latency_ms: c.latency_ms,
                            healthy: c.healthy,
                        },
                    )
                })
                .collect(),
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    interval_ms: u64,
    capacity: usize,
    samples: &'a VecDeque<Sample>,
}

/// The ring buffer and its rendered body.
pub struct History {
    samples: std::sync::Mutex<VecDeque<Sample>>,
    rendered: ArcSwap<Bytes>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History").finish_non_exhaustive()
    }
}

impl Default for History {
    fn default() -> Self {
        let history = Self {
            samples: std::sync::Mutex::new(VecDeque::with_capacity(CAPACITY)),
            rendered: ArcSwap::from_pointee(Bytes::new()),
        };
        history.render(&VecDeque::new());
        history
    }
}

impl History {
    /// Adds a sample, dropping the oldest beyond [`CAPACITY`], and renders the body again.
    pub fn push(&self, sample: Sample) {
        let mut samples = self
            .samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if samples.len() == CAPACITY {
            samples.pop_front();
        }
        samples.push_back(sample);
        self.render(&samples);
    }

    fn render(&self, samples: &VecDeque<Sample>) {
        let body = Body {
            interval_ms: INTERVAL.as_millis() as u64,
            capacity: CAPACITY,
            samples,
        };
        // Plain data always serializes.
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        self.rendered.store(Arc::new(Bytes::from(bytes)));
    }

    /// The body of `GET /health/history`: `{"interval_ms", "capacity", "samples": [{"at",
    /// "components": {"postgres": {"status", "circuit", "latency_ms", "healthy"}}}]}`,
    /// oldest first.
    pub fn body(&self) -> Bytes {
        Bytes::clone(&self.rendered.load())
    }

    /// Samples held now.
    pub fn len(&self) -> usize {
        self.samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Whether it holds no sample yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Samples `health` every [`INTERVAL`] until the current actix system stops.
    pub fn start_sampling(self: &Arc<Self>, health: HealthHandle) {
        let history = Arc::clone(self);
        actix::spawn(async move {
            let mut tick = tokio::time::interval(INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                history.push(Sample::of(&health.view(), Utc::now()));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(i: usize) -> Sample {
        Sample {
            at: format!("t{i}"),
            components: Default::default(),
        }
    }

    #[test]
    fn the_ring_keeps_the_last_five_minutes_oldest_first() {
        let h = History::default();
        let empty: serde_json::Value = serde_json::from_slice(&h.body()).unwrap();
        assert_eq!(empty["samples"].as_array().unwrap().len(), 0);
        for i in 0..CAPACITY + 7 {
            h.push(sample(i));
        }
        assert_eq!(h.len(), CAPACITY);
        let body: serde_json::Value = serde_json::from_slice(&h.body()).unwrap();
        let samples = body["samples"].as_array().unwrap();
        assert_eq!(samples.len(), CAPACITY);
        assert_eq!(samples[0]["at"], "t7");
        assert_eq!(samples[CAPACITY - 1]["at"], format!("t{}", CAPACITY + 6));
        assert_eq!(body["interval_ms"], 1000);
    }
}
