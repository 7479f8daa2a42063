//! Prometheus metrics: a [`Metrics`] registry that each [`Warden`](crate::Warden) owns and an
//! application (or warden's daemon, on `GET /metrics`) exposes.
//!
//! Two kinds of metric, kept apart on purpose:
//! - **Recorded** where things happen, on the call path among others, so they must cost no
//!   lock and no allocation: calls by outcome, call and probe durations, circuit transitions.
//!   Every label set is created once, here, and each database keeps the handles
//!   (`DatabaseMetrics`); recording is an atomic add on a counter the registry already
//!   holds, never a `Family` lookup. The counts every call adds to are kept in per-thread
//!   stripes (`striped.rs`), durations in a histogram of atomics of our own (`histogram.rs`:
//!   prometheus-client's locks a mutex per observation).
//! - **Read at scrape time** (`scrape.rs`): the connection and circuit states, `up`, restarts,
//!   the pool, build info. They come from the health snapshot that `/health` serves (one
//!   source of truth, no second copy to drift) and from the pool's own atomic counts. A scrape
//!   touches no database and sends no message, so it answers while a database hangs.
//!
//! Names follow Prometheus' rules: a `warden_` prefix, base units in the name (`_seconds`),
//! `_total` on counters (the encoder adds it), a `database` label (`neo4j`, `postgres`) and
//! other label values from closed sets, lowercase; never a query or an error text.

mod histogram;
mod scrape;
pub(crate) mod striped;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use prometheus_client::{
    metrics::{counter::Counter, family::Family, info::Info},
    registry::{Registry, Unit},
};

pub use histogram::{DurationHistogram, DURATION_BUCKETS};
pub(crate) use scrape::{PoolReader, PoolStats, StateCollector};
pub(crate) use striped::StripedCounter;

use crate::{circuit::CircuitStatus, error::Database, WardenError};

/// What a call ended with, as `warden_calls_total{outcome}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Rows (or the closure's value).
    Ok,
    /// Refused without touching the database: an open circuit, no connection (`Unavailable`),
    /// the actor stopped, the application's call runtime gone.
    Refused,
    /// A phase ran out of time (`Timeout`: acquire or query).
    Timeout,
    /// The database rejected the statement (`Query`), or the call could not run as given
    /// (`Usage`, `Conversion`).
    QueryError,
    /// The connection failed or broke (`Connection`, `Authentication`,
    /// `CommitOutcomeUnknown`).
    ConnectionError,
}

impl Outcome {
    /// Every outcome, in label order.
    pub const ALL: [Outcome; 5] = [
        Outcome::Ok,
        Outcome::Refused,
        Outcome::Timeout,
        Outcome::QueryError,
        Outcome::ConnectionError,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Timeout => "timeout",
            Outcome::QueryError => "query_error",
            Outcome::ConnectionError => "connection_error",
        }
    }

    /// The outcome of a call that ended with `result`.
    pub fn of<T>(result: &Result<T, WardenError>) -> Self {
        match result {
            Ok(_) => Outcome::Ok,
            Err(e) => Self::of_error(e),
        }
    }

    /// The outcome of a call that failed with `e`.
    pub fn of_error(e: &WardenError) -> Self {
        match e {
            WardenError::CircuitOpen { .. }
            | WardenError::Unavailable { .. }
            | WardenError::Stopped { .. }
            | WardenError::CallRuntimeGone { .. } => Outcome::Refused,
            WardenError::Timeout { .. } => Outcome::Timeout,
            WardenError::Query { .. }
            | WardenError::Usage { .. }
            | WardenError::Conversion { .. } => Outcome::QueryError,
            WardenError::Connection { .. }
            | WardenError::Authentication { .. }
            | WardenError::CommitOutcomeUnknown { .. } => Outcome::ConnectionError,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Circuit states in label order.
const CIRCUIT_STATES: [CircuitStatus; 3] = [
    CircuitStatus::Closed,
    CircuitStatus::Open,
    CircuitStatus::HalfOpen,
];

/// The transitions a circuit makes: opened by failures, half-open when the cooldown ends,
/// closed by a successful probe while half-open or by a reconnect while open or half-open.
const TRANSITIONS: [(CircuitStatus, CircuitStatus); 4] = [
    (CircuitStatus::Closed, CircuitStatus::Open),
    (CircuitStatus::Open, CircuitStatus::HalfOpen),
    (CircuitStatus::HalfOpen, CircuitStatus::Closed),
    (CircuitStatus::Open, CircuitStatus::Closed),
];

/// The label value of a circuit state.
pub(crate) fn circuit_state_str(s: CircuitStatus) -> &'static str {
    match s {
        CircuitStatus::Closed => "closed",
        CircuitStatus::Open => "open",
        CircuitStatus::HalfOpen => "half_open",
    }
}

fn circuit_index(s: CircuitStatus) -> usize {
    match s {
        CircuitStatus::Closed => 0,
        CircuitStatus::Open => 1,
        CircuitStatus::HalfOpen => 2,
    }
}

type Labels<const N: usize> = [(&'static str, &'static str); N];

/// One database's recorded metrics: handles into the registry's families, created once.
/// Cheap to clone; every clone records into the same series.
#[derive(Debug, Clone)]
pub(crate) struct DatabaseMetrics(Arc<DbHandles>);

#[derive(Debug)]
struct DbHandles {
    /// Shared with [`Metrics`]: off, calls record nothing (for measuring what recording costs).
    recording: Arc<AtomicBool>,
    calls: [StripedCounter; 5],
    call_duration: DurationHistogram,
    probe_duration: DurationHistogram,
    /// `[from][to]`, in [`CIRCUIT_STATES`] order.
    transitions: [[Counter; 3]; 3],
}

impl DatabaseMetrics {
    /// Handles that belong to no registry, for tests that build actors by hand.
    #[cfg(test)]
    pub(crate) fn detached() -> Self {
        Metrics::new().database(Database::Postgres)
    }

    /// A call ended with `outcome`; `took` is its time since admission (`None` for a call
    /// refused before it started, which is not timed: it would only pile up near zero and
    /// hide the latency of the calls that ran). Two or three relaxed atomic adds, on lines
    /// of this thread's own (see `striped.rs`).
    pub(crate) fn call_ended(&self, outcome: Outcome, took: Option<Duration>) {
        let h = &self.0;
        if !h.recording.load(Ordering::Relaxed) {
            return;
        }
        h.calls[outcome.index()].inc();
        if let Some(took) = took {
            h.call_duration.observe(took);
        }
    }

    /// A probe (or the first round trip of a connect) ended, well or not, after `took`.
    pub(crate) fn probe_ended(&self, took: Duration) {
        self.0.probe_duration.observe(took);
    }

    /// The circuit went from `from` to `to` (no-op when they are equal).
    pub(crate) fn circuit_changed(&self, from: CircuitStatus, to: CircuitStatus) {
        if from != to {
            self.0.transitions[circuit_index(from)][circuit_index(to)].inc();
        }
    }
}

/// warden's metrics registry. [`Warden::metrics`](crate::Warden::metrics) hands it out; encode
/// [`Metrics::registry`] with prometheus-client's encoders (`encoding::prometheus_text` for
/// Prometheus' text format, `encoding::text` for OpenMetrics).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    recording: Arc<AtomicBool>,
    /// In [`Database::ALL`] order.
    databases: [DatabaseMetrics; 2],
}

impl Metrics {
    /// A registry with every recorded series created (at zero) and build info; the
    /// scrape-time collector is added by [`Metrics::collect`].
    pub(crate) fn new() -> Self {
        let mut registry = Registry::default();
        let recording = Arc::new(AtomicBool::new(true));

        let calls = Family::<Labels<2>, StripedCounter>::default();
        registry.register(
            "warden_calls",
            "Calls to a database by outcome: ok, refused (open circuit, no connection, stopped), \
             timeout, query_error (rejected statement, unusable call), connection_error",
            calls.clone(),
        );
        let call_duration = Family::<Labels<1>, DurationHistogram>::default();
        registry.register_with_unit(
            "warden_call_duration",
            "Duration of admitted calls from admission to answer, retries included, whatever \
             their outcome (refusals are not timed)",
            Unit::Seconds,
            call_duration.clone(),
        );
        let probe_duration = Family::<Labels<1>, DurationHistogram>::default();
        registry.register_with_unit(
            "warden_probe_duration",
            "Duration of liveness probes on the actor's own connection, failed ones included",
            Unit::Seconds,
            probe_duration.clone(),
        );
        let transitions = Family::<Labels<3>, Counter>::default();
        registry.register(
            "warden_circuit_transitions",
            "Circuit state changes by from and to state (closed, open, half_open)",
            transitions.clone(),
        );
        registry.register(
            "warden_build",
            "warden's version",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );

        let databases = Database::ALL.map(|db| {
            let database = ("database", db.as_str());
            DatabaseMetrics(Arc::new(DbHandles {
                recording: recording.clone(),
                calls: Outcome::ALL
                    .map(|o| calls.get_or_create_owned(&[database, ("outcome", o.as_str())])),
                call_duration: call_duration.get_or_create_owned(&[database]),
                probe_duration: probe_duration.get_or_create_owned(&[database]),
                transitions: CIRCUIT_STATES.map(|from| {
                    CIRCUIT_STATES.map(|to| {
                        // Series only for the transitions that happen (see `circuit.rs`);
                        // the others record into a counter no registry shows.
                        if !TRANSITIONS.contains(&(from, to)) {
                            return Counter::default();
                        }
                        transitions.get_or_create_owned(&[
                            database,
                            ("from", circuit_state_str(from)),
                            ("to", circuit_state_str(to)),
                        ])
                    })
                }),
            }))
        });
        Self {
            registry,
            recording,
            databases,
        }
    }

    /// Adds the scrape-time collector.
    pub(crate) fn collect(&mut self, collector: StateCollector) {
        self.registry.register_collector(Box::new(collector));
    }

    /// The handles `database`'s actor and calls record into.
    pub(crate) fn database(&self, database: Database) -> DatabaseMetrics {
        let i = Database::ALL
            .iter()
            .position(|d| *d == database)
            .unwrap_or_default();
        self.databases[i].clone()
    }

    /// The registry, to encode or to read.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Turns the recording of calls (`warden_calls_total`, `warden_call_duration_seconds`) on
    /// or off; on by default. Off, a call costs one relaxed load more than no metrics at all:
    /// the benchmark alternates both to measure what recording costs.
    pub fn set_call_recording(&self, on: bool) {
        self.recording.store(on, Ordering::Relaxed);
    }

    /// The registry in Prometheus' text format (0.0.4).
    pub fn encode_prometheus_text(&self, out: &mut String) -> std::fmt::Result {
        prometheus_client::encoding::prometheus_text::encode(out, &self.registry)
    }

    /// The registry in OpenMetrics text format (1.0.0), without the closing `# EOF` line, so
    /// that an exposition can append other registries before closing it.
    pub fn encode_openmetrics(&self, out: &mut String) -> std::fmt::Result {
        prometheus_client::encoding::text::encode_registry(out, &self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &Metrics) -> String {
        let mut out = String::new();
        m.encode_prometheus_text(&mut out).unwrap();
        out
    }

    #[test]
    fn every_error_has_an_outcome_and_refusals_are_refused() {
        let db = Database::Postgres;
        let refused = WardenError::CircuitOpen {
            database: db,
            retry_after: Duration::ZERO,
        };
        assert_eq!(Outcome::of_error(&refused), Outcome::Refused);
        let timeout = WardenError::Timeout {
            database: db,
            phase: crate::TimeoutPhase::Acquire,
            after: Duration::ZERO,
        };
        assert_eq!(Outcome::of_error(&timeout), Outcome::Timeout);
        let conn = WardenError::CommitOutcomeUnknown {
            database: db,
            message: String::new(),
        };
        assert_eq!(Outcome::of_error(&conn), Outcome::ConnectionError);
        assert_eq!(Outcome::of::<()>(&Ok(())), Outcome::Ok);
    }

    #[test]
    fn recorded_series_exist_at_zero_and_count_when_recording() {
        let m = Metrics::new();
        let out = text(&m);
        // Every series an alert or a dashboard refers to is there before anything happened.
        for line in [
            "warden_calls_total{database=\"postgres\",outcome=\"connection_error\"} 0",
            "warden_calls_total{database=\"neo4j\",outcome=\"ok\"} 0",
            "warden_circuit_transitions_total{database=\"neo4j\",from=\"closed\",to=\"open\"} 0",
            "warden_call_duration_seconds_count{database=\"postgres\"} 0",
            "warden_probe_duration_seconds_count{database=\"neo4j\"} 0",
            "warden_build_info{version=\"",
        ] {
            assert!(out.contains(line), "missing {line} in:\n{out}");
        }
        let pg = m.database(Database::Postgres);
        pg.call_ended(Outcome::Ok, Some(Duration::from_millis(1)));
        pg.call_ended(Outcome::Refused, None);
        pg.circuit_changed(CircuitStatus::Closed, CircuitStatus::Open);
        pg.circuit_changed(CircuitStatus::Open, CircuitStatus::Open);
        m.set_call_recording(false);
        pg.call_ended(Outcome::Ok, Some(Duration::from_millis(1)));
        let out = text(&m);
        for line in [
            "warden_calls_total{database=\"postgres\",outcome=\"ok\"} 1\n",
            "warden_calls_total{database=\"postgres\",outcome=\"refused\"} 1\n",
            // Refusals are counted, not timed.
            "warden_call_duration_seconds_count{database=\"postgres\"} 1\n",
            "warden_circuit_transitions_total{database=\"postgres\",from=\"closed\",to=\"open\"} 1\n",
        ] {
            assert!(out.contains(line), "missing {line} in:\n{out}");
        }
        assert!(!out.contains("from=\"open\",to=\"open\""), "{out}");
        assert!(!out.contains("from=\"closed\",to=\"half_open\""), "{out}");
    }
}
