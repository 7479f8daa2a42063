//! HealthActor: the latest state of every database and circuit, pushed to it by the others.
//!
//! Nothing on the health path touches a database. The database actors push a full
//! [`ComponentReport`] on every transition and probe, the breaker pushes every circuit change,
//! and the actor publishes an immutable snapshot through a [`HealthHandle`] (an `ArcSwap`), so
//! HTTP workers read it without a mailbox round trip and without a lock, even while a database
//! hangs. Staleness (no report for 3 × the probe interval) is judged when the snapshot is read.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use actix::prelude::*;
use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{
    breaker::CircuitBoard,
    circuit::{Circuit, CircuitStatus, Window},
    error::Database,
    graph_sync::{GraphSyncEntry, GraphSyncHealth, GraphSyncReport},
    guard::DeathGuard,
};

/// A database connection's lifecycle state, as reported by its actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnState {
    /// A connect attempt is under way.
    Connecting,
    /// Connected, and the last probe succeeded.
    Connected,
    /// Waiting for the next connect attempt.
    Backoff,
    /// The actor is gone: shut down, or died from a bug.
    Stopped,
}

impl ConnState {
    /// The name used in health output and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnState::Connecting => "connecting",
            ConnState::Connected => "connected",
            ConnState::Backoff => "backoff",
            ConnState::Stopped => "stopped",
        }
    }
}

/// The status shown in health: the connection state, or `stale` when the actor stopped
/// reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentStatus {
    /// See [`ConnState::Connecting`].
    Connecting,
    /// See [`ConnState::Connected`].
    Connected,
    /// See [`ConnState::Backoff`].
    Backoff,
    /// No report for 3 × the probe interval: the actor is stuck or its arbiter is blocked.
    Stale,
    /// See [`ConnState::Stopped`].
    Stopped,
}

/// What a database actor knows about its connection; pushed whole on every change.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentReport {
    /// Lifecycle state.
    pub state: ConnState,
    /// Round trip of the last successful probe or connect.
    pub latency: Option<Duration>,
    /// When a probe or connect last succeeded.
    pub last_ok_at: Option<DateTime<Utc>>,
    /// The last failure, sanitized; cleared by a successful connect.
    pub last_error: Option<String>,
    /// Failed connects and probes since the last success.
    pub consecutive_failures: u32,
    /// Times the actor was restarted by its supervisor.
    pub restarts: u32,
    /// When the next connect attempt starts (in backoff only).
    pub next_attempt_at: Option<DateTime<Utc>>,
}

impl Default for ComponentReport {
    fn default() -> Self {
        Self {
            state: ConnState::Connecting,
            latency: None,
            last_ok_at: None,
            last_error: None,
            consecutive_failures: 0,
            restarts: 0,
            next_attempt_at: None,
        }
    }
}

/// One database's entry in the published snapshot.
#[derive(Debug, Clone)]
struct Entry {
    report: ComponentReport,
    reported_at: Instant,
    circuit: Circuit,
    /// The failure that opened the circuit, while it is not closed.
    cause: Option<String>,
    stale_after: Duration,
}

/// The published state: replaced whole on every update. Call outcomes are read from the
/// circuit board when the view is taken: they change with every call, which no message could
/// keep up with.
#[derive(Debug, Clone, Default)]
pub struct HealthSnapshot {
    entries: BTreeMap<Database, Entry>,
    board: Option<Arc<CircuitBoard>>,
    /// The graph projection, once its projector has reported (see `graph_sync.rs`).
    graph_sync: Option<GraphSyncEntry>,
}

/// The circuit part of a component's health.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CircuitHealth {
    /// `closed`, `open` or `half_open`.
    pub state: CircuitStatus,
    /// Failed calls among the last `window` (while closed; the circuit opens at `threshold`).
    pub recent_failures: u32,
    /// How many of the last calls are weighed.
    pub window: u32,
    /// Failures in the window that open the circuit.
    pub threshold: u32,
    /// When the circuit opened (null while closed).
    #[serde(serialize_with = "crate::timestamp::millis_opt")]
    pub opened_at: Option<DateTime<Utc>>,
    /// How long callers are told to wait (null while closed).
    pub retry_after_ms: Option<u64>,
}

/// One database's health, as served by `/health/detailed`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentHealth {
    /// Connection state, or `stale`.
    pub status: ComponentStatus,
    /// Connected, reporting, and the circuit is closed.
    pub healthy: bool,
    /// Round trip of the last successful probe, in milliseconds.
    pub latency_ms: Option<f64>,
    /// When a probe or connect last succeeded.
    #[serde(serialize_with = "crate::timestamp::millis_opt")]
    pub last_ok_at: Option<DateTime<Utc>>,
    /// The last failure, sanitized.
    pub last_error: Option<String>,
    /// Failed connects and probes since the last success.
    pub consecutive_failures: u32,
    /// Supervisor restarts so far.
    pub restarts: u32,
    /// When the next connect attempt starts (in backoff only).
    #[serde(serialize_with = "crate::timestamp::millis_opt")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The database's circuit.
    pub circuit: CircuitHealth,
    /// Why the component is unhealthy (`null` when healthy): the connection state, the
    /// backoff and its error, or the circuit and the failure that opened it.
    pub reason: Option<String>,
}

/// The whole health picture at one instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthView {
    /// One entry per database, keyed `neo4j` and `postgres`.
    pub components: BTreeMap<Database, ComponentHealth>,
    /// The graph projection, when a projector runs in this process.
    pub graph_sync: Option<GraphSyncHealth>,
}

impl HealthView {
    /// Every database is healthy (connected, reporting, circuit closed) and so is the graph
    /// projection, if any.
    pub fn all_healthy(&self) -> bool {
        self.components.values().all(|c| c.healthy)
            && self.graph_sync.as_ref().is_none_or(|g| g.healthy)
    }

    /// Ready to serve: every database connected and no circuit open or half-open. Can flip back
    /// to not ready at any time, when a probe fails or a circuit opens. The graph projection's
    /// lag never makes warden unready: the catalog keeps taking writes.
    pub fn ready(&self) -> bool {
        self.components.values().all(|c| {
            c.status == ComponentStatus::Connected && c.circuit.state == CircuitStatus::Closed
        })
    }

    /// Whether any actor has stopped for good.
    pub fn any_stopped(&self) -> bool {
        self.components
            .values()
            .any(|c| c.status == ComponentStatus::Stopped)
    }
}

impl HealthSnapshot {
    /// The view as of now: staleness and circuit timers are judged against the clock here.
    pub fn view(&self) -> HealthView {
        let now = Instant::now();
        let wall = Utc::now();
        let components = self
            .entries
            .iter()
            .map(|(db, e)| {
                let window = self
                    .board
                    .as_ref()
                    .map(|b| b.window(*db))
                    .unwrap_or_default();
                (*db, e.view(now, wall, window))
            })
            .collect();
        HealthView {
            components,
            graph_sync: self.graph_sync.as_ref().map(|g| g.view(now, wall)),
        }
    }
}

impl Entry {
    fn view(&self, now: Instant, wall: DateTime<Utc>, window: Window) -> ComponentHealth {
        let r = &self.report;
        let stale = r.state != ConnState::Stopped
            && now.duration_since(self.reported_at) > self.stale_after;
        let status = if stale {
            ComponentStatus::Stale
        } else {
            match r.state {
                ConnState::Connecting => ComponentStatus::Connecting,
                ConnState::Connected => ComponentStatus::Connected,
                ConnState::Backoff => ComponentStatus::Backoff,
                ConnState::Stopped => ComponentStatus::Stopped,
            }
        };
        let circuit_status = self.circuit.status(now);
        let to_wall = |at: Instant| {
            wall - chrono::Duration::from_std(now.saturating_duration_since(at)).unwrap_or_default()
        };
        let circuit = CircuitHealth {
            state: circuit_status,
            recent_failures: window.failures(),
            window: self.circuit.window_size(),
            threshold: self.circuit.threshold(),
            opened_at: self.circuit.opened_at().map(to_wall),
            retry_after_ms: self
                .circuit
                .check(now)
                .err()
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        };
        let healthy =
            status == ComponentStatus::Connected && circuit_status == CircuitStatus::Closed;
        let reason = (!healthy).then(|| self.reason(status, &circuit, now));
        ComponentHealth {
            status,
            healthy,
            latency_ms: r.latency.map(|d| (d.as_secs_f64() * 1e6).round() / 1e3),
            last_ok_at: r.last_ok_at,
            last_error: r.last_error.clone(),
            consecutive_failures: r.consecutive_failures,
            restarts: r.restarts,
            next_attempt_at: r.next_attempt_at,
            circuit,
            reason,
        }
    }

    /// One line that says why an unhealthy component is unhealthy.
    fn reason(&self, status: ComponentStatus, circuit: &CircuitHealth, now: Instant) -> String {
        let r = &self.report;
        let error = r.last_error.as_deref();
        match status {
            ComponentStatus::Stale => format!(
                "no report from the actor for {}s: its thread may be blocked",
                now.saturating_duration_since(self.reported_at).as_secs()
            ),
            ComponentStatus::Stopped => error.unwrap_or("stopped").to_owned(),
            ComponentStatus::Backoff => {
                let next = r.next_attempt_at.map_or(String::new(), |at| {
                    let ms = (at - Utc::now()).num_milliseconds().max(0);
                    format!("; next attempt in {ms}ms")
                });
                format!("backing off after: {}{next}", error.unwrap_or("a failure"))
            }
            ComponentStatus::Connecting => match error {
                Some(e) => format!("connecting; the last attempt failed: {e}"),
                None => "connecting".to_owned(),
            },
            ComponentStatus::Connected => {
                let cause = self
                    .cause
                    .as_deref()
                    .map_or(String::new(), |c| format!(" (the last: {c})"));
                match circuit.state {
                    CircuitStatus::HalfOpen => format!(
                        "circuit half-open: the next successful probe closes it; {} of the last \
                         {} calls had failed{cause}",
                        circuit.threshold, circuit.window
                    ),
                    _ => format!(
                        "circuit open: {} of the last {} calls failed{cause}; calls are refused \
                         for {}ms",
                        circuit.threshold,
                        circuit.window,
                        circuit.retry_after_ms.unwrap_or(0)
                    ),
                }
            }
        }
    }
}

/// A cheap, cloneable reader of the latest published snapshot, for HTTP workers on any thread.
#[derive(Debug, Clone)]
pub struct HealthHandle(Arc<ArcSwap<HealthSnapshot>>);

impl HealthHandle {
    /// The current snapshot (no copy, no lock).
    pub fn snapshot(&self) -> Arc<HealthSnapshot> {
        self.0.load_full()
    }

    /// The current snapshot without touching its reference count, for the hottest readers.
    pub fn load(&self) -> arc_swap::Guard<Arc<HealthSnapshot>> {
        self.0.load()
    }

    /// The current view, judged against the clock now.
    pub fn view(&self) -> HealthView {
        self.0.load().view()
    }
}

/// A database actor's full report.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ComponentUpdate {
    /// Whose report.
    pub database: Database,
    /// The report.
    pub report: ComponentReport,
}

/// The breaker's latest circuit for one database.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct CircuitUpdate {
    /// Whose circuit.
    pub database: Database,
    /// Its state.
    pub circuit: Circuit,
    /// The failure that opened it (when it opened).
    pub cause: Option<String>,
}

/// A database's probe interval changed: health calls it stale after this long without a
/// report.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct StaleAfter {
    /// Whose.
    pub database: Database,
    /// Three probe intervals.
    pub stale_after: Duration,
}

/// Asks for the current view.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "HealthView")]
pub struct GetHealth;

/// Keeps and publishes the health snapshot.
pub struct HealthActor {
    snapshot: HealthSnapshot,
    published: Arc<ArcSwap<HealthSnapshot>>,
    /// Fires warden's fatal signal if this actor dies (see `guard.rs`).
    _guard: Option<DeathGuard>,
}

impl HealthActor {
    /// A health actor expecting both databases, each with its probe interval (a database is
    /// `stale` after 3 of them without a report) and an initial closed circuit, reading recent
    /// call outcomes from `board`.
    pub fn new(databases: &[(Database, Duration, Circuit)], board: Arc<CircuitBoard>) -> Self {
        let now = Instant::now();
        let entries = databases
            .iter()
            .map(|(db, probe_interval, circuit)| {
                (
                    *db,
                    Entry {
                        report: ComponentReport::default(),
                        reported_at: now,
                        circuit: *circuit,
                        cause: None,
                        stale_after: *probe_interval * 3,
                    },
                )
            })
            .collect();
        let snapshot = HealthSnapshot {
            entries,
            board: Some(board),
            graph_sync: None,
        };
        let published = Arc::new(ArcSwap::from_pointee(snapshot.clone()));
        Self {
            snapshot,
            published,
            _guard: None,
        }
    }

    /// Fires `guard` if the actor dies.
    pub(crate) fn guarded(mut self, guard: DeathGuard) -> Self {
        self._guard = Some(guard);
        self
    }

    /// The reader for HTTP workers; valid for the actor's whole life.
    pub fn handle(&self) -> HealthHandle {
        HealthHandle(self.published.clone())
    }

    fn publish(&self) {
        self.published.store(Arc::new(self.snapshot.clone()));
    }
}

impl Actor for HealthActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Every probe of both databases lands here; never make a reporter wait.
        ctx.set_mailbox_capacity(1024);
    }
}

impl Handler<ComponentUpdate> for HealthActor {
    type Result = ();

    fn handle(&mut self, msg: ComponentUpdate, _: &mut Self::Context) {
        if let Some(entry) = self.snapshot.entries.get_mut(&msg.database) {
            entry.report = msg.report;
            entry.reported_at = Instant::now();
            self.publish();
        }
    }
}

impl Handler<CircuitUpdate> for HealthActor {
    type Result = ();

    fn handle(&mut self, msg: CircuitUpdate, _: &mut Self::Context) {
        if let Some(entry) = self.snapshot.entries.get_mut(&msg.database) {
            entry.circuit = msg.circuit;
            if msg.cause.is_some() || msg.circuit.is_closed() {
                entry.cause = msg.cause;
            }
            self.publish();
        }
    }
}

impl Handler<StaleAfter> for HealthActor {
    type Result = ();

    fn handle(&mut self, msg: StaleAfter, _: &mut Self::Context) {
        if let Some(entry) = self.snapshot.entries.get_mut(&msg.database) {
            entry.stale_after = msg.stale_after;
            self.publish();
        }
    }
}

/// The projector's latest count of its outbox.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct GraphSyncUpdate(pub GraphSyncReport);

impl Handler<GraphSyncUpdate> for HealthActor {
    type Result = ();

    fn handle(&mut self, msg: GraphSyncUpdate, _: &mut Self::Context) {
        self.snapshot.graph_sync = Some(GraphSyncEntry {
            report: msg.0,
            at: Instant::now(),
        });
        self.publish();
    }
}

impl Handler<GetHealth> for HealthActor {
    type Result = MessageResult<GetHealth>;

    fn handle(&mut self, _: GetHealth, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.snapshot.view())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(state: ConnState, reported_ago: Duration) -> Entry {
        Entry {
            report: ComponentReport {
                state,
                ..Default::default()
            },
            reported_at: Instant::now() - reported_ago,
            circuit: Circuit::new(2, Duration::from_secs(30), Duration::from_secs(1)),
            cause: None,
            stale_after: Duration::from_secs(6),
        }
    }

    fn view(e: &Entry) -> ComponentHealth {
        e.view(Instant::now(), Utc::now(), Window::default())
    }

    #[test]
    fn a_silent_component_is_stale_and_unhealthy() {
        let fresh = view(&entry(ConnState::Connected, Duration::from_secs(1)));
        assert_eq!(fresh.status, ComponentStatus::Connected);
        assert!(fresh.healthy);
        assert_eq!(fresh.reason, None);
        let old = view(&entry(ConnState::Connected, Duration::from_secs(7)));
        assert_eq!(old.status, ComponentStatus::Stale);
        assert!(!old.healthy);
        assert!(old.reason.unwrap().contains("no report"));
        // A stopped actor stays `stopped`, however long ago it said so.
        let stopped = view(&entry(ConnState::Stopped, Duration::from_secs(70)));
        assert_eq!(stopped.status, ComponentStatus::Stopped);
    }

    #[test]
    fn an_open_circuit_makes_a_connected_component_unhealthy_and_says_why() {
        let mut e = entry(ConnState::Connected, Duration::ZERO);
        e.circuit.open(Instant::now());
        e.cause = Some("postgres query timed out after 300ms".into());
        let v = view(&e);
        assert_eq!(v.circuit.state, CircuitStatus::Open);
        assert!(!v.healthy);
        assert!(v.circuit.retry_after_ms.unwrap() > 29_000);
        assert!(v.circuit.opened_at.is_some());
        let reason = v.reason.unwrap();
        assert!(
            reason.contains("circuit open") && reason.contains("timed out"),
            "{reason}"
        );
    }

    #[test]
    fn every_unhealthy_state_says_why() {
        let mut backoff = entry(ConnState::Backoff, Duration::ZERO);
        backoff.report.last_error = Some("connection refused".into());
        backoff.report.next_attempt_at = Some(Utc::now() + chrono::Duration::seconds(4));
        let reason = view(&backoff).reason.unwrap();
        assert!(
            reason.contains("connection refused") && reason.contains("next attempt in"),
            "{reason}"
        );
        assert_eq!(
            view(&entry(ConnState::Connecting, Duration::ZERO))
                .reason
                .as_deref(),
            Some("connecting")
        );
    }
}
