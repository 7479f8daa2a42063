//! BreakerActor: one circuit per database (see [`crate::circuit`] for the rules), published
//! on a [`CircuitBoard`] that calls read and write without a message.
//!
//! Calls check the board before they start (a lock-free load) and record their outcome in its
//! window (a compare-and-swap), so neither a refusal nor a failure ever waits on this actor.
//! Only what changes a circuit's state becomes a message: the one call whose failure fills the
//! window to the threshold sends [`Trip`] (at most one is in flight per database), and the
//! database actors send [`ProbeSucceeded`] (at most one per probe interval, and only while
//! half-open) and [`Reconnected`] (once per connect). A storm of failing calls therefore costs
//! the actor nothing: its mailbox holds a handful of messages at most, whatever the load.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use actix::prelude::*;
use arc_swap::ArcSwap;

use crate::{
    circuit::{Circuit, CircuitStatus, Window},
    error::Database,
    guard::DeathGuard,
    health::{CircuitUpdate, HealthActor},
    metrics::DatabaseMetrics,
};

/// One database's published circuit and the window of its recent call outcomes.
#[derive(Debug)]
struct Slot {
    circuit: ArcSwap<Circuit>,
    window: AtomicU64,
    /// A [`Trip`] is on its way: later failures need not send another.
    trip_sent: AtomicBool,
}

impl Slot {
    fn new(circuit: Circuit) -> Self {
        Self {
            circuit: ArcSwap::from_pointee(circuit),
            window: AtomicU64::new(0),
            trip_sent: AtomicBool::new(false),
        }
    }

    /// A fresh window, for a circuit that just changed state.
    fn clear_window(&self) {
        self.window.store(0, Ordering::Release);
        self.trip_sent.store(false, Ordering::Release);
    }
}

/// The published circuits, one per database: written by [`BreakerActor`], read by every call.
#[derive(Debug)]
pub struct CircuitBoard {
    neo4j: Slot,
    postgres: Slot,
}

impl CircuitBoard {
    /// A board with the given (closed) circuits.
    pub fn new(neo4j: Circuit, postgres: Circuit) -> Self {
        Self {
            neo4j: Slot::new(neo4j),
            postgres: Slot::new(postgres),
        }
    }

    fn slot(&self, database: Database) -> &Slot {
        match database {
            Database::Neo4j => &self.neo4j,
            Database::Postgres => &self.postgres,
        }
    }

    /// The latest circuit of `database`.
    pub fn get(&self, database: Database) -> Circuit {
        **self.slot(database).circuit.load()
    }

    /// Whether `database`'s circuit lets a call through at `now` (see [`Circuit::check`]),
    /// read in place rather than copied out as [`CircuitBoard::get`] does.
    pub(crate) fn check(&self, database: Database, now: Instant) -> Result<(), Duration> {
        self.slot(database).circuit.load().check(now)
    }

    /// The recent call outcomes of `database`.
    pub fn window(&self, database: Database) -> Window {
        Window::from_bits(self.slot(database).window.load(Ordering::Acquire))
    }

    /// Records one call's outcome. Returns `true` for the one failure that fills the window to
    /// the threshold: its caller must send [`Trip`]. A success with no failure in the window
    /// (the common case) costs one load; outcomes while the circuit is not closed (calls that
    /// were already running) are not recorded.
    pub(crate) fn record_call(&self, database: Database, failed: bool) -> bool {
        let slot = self.slot(database);
        if !failed && self.window(database).failures() == 0 {
            return false;
        }
        let circuit = self.get(database);
        if !circuit.is_closed() {
            return false;
        }
        let size = circuit.window_size();
        let mut window = Window::default();
        let _ = slot
            .window
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |raw| {
                window = Window::from_bits(raw).record(failed, size);
                Some(window.to_bits())
            });
        failed && circuit.trips(window) && !slot.trip_sent.swap(true, Ordering::AcqRel)
    }
}

/// The window of `database` is full of failures: open its circuit. `cause` is the failure
/// that filled it, sanitized, for health and the log.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Trip {
    /// Which database.
    pub database: Database,
    /// The failure that filled the window.
    pub cause: String,
}

/// The database actor's probe succeeded while the circuit was half-open: the trial passed.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct ProbeSucceeded(pub Database);

/// The database actor connected anew after losing its connection.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Reconnected(pub Database);

/// New circuit settings from the runtime settings (see [`Circuit::retune`]): applied to both
/// circuits in one handler, so no call sees one database's new threshold beside the other's
/// old one for longer than a message.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Retune {
    /// Failures in the window that open a circuit.
    pub threshold: u32,
    /// How long the next opening refuses calls.
    pub cooldown: Duration,
    /// Each database's probe interval: what a half-open circuit tells callers to wait.
    pub half_open_retry: [(Database, Duration); 2],
}

/// Asks for a database's circuit as of now.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Circuit")]
pub struct GetCircuit(pub Database);

/// Owns the circuits' transitions.
pub struct BreakerActor {
    board: Arc<CircuitBoard>,
    health: Addr<HealthActor>,
    /// Where each database's circuit transitions are counted, when set.
    metrics: Vec<(Database, DatabaseMetrics)>,
    /// Fires warden's fatal signal if this actor dies (see `guard.rs`).
    _guard: Option<DeathGuard>,
}

impl BreakerActor {
    /// A breaker over `board` (whose circuits start closed), reporting to `health`.
    pub fn new(board: Arc<CircuitBoard>, health: Addr<HealthActor>) -> Self {
        Self {
            board,
            health,
            metrics: Vec::new(),
            _guard: None,
        }
    }

    /// Counts each database's circuit transitions in its metrics.
    pub(crate) fn counted(mut self, metrics: Vec<(Database, DatabaseMetrics)>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Fires `guard` if the actor dies.
    pub(crate) fn guarded(mut self, guard: DeathGuard) -> Self {
        self._guard = Some(guard);
        self
    }

    /// The board calls read and record on.
    pub fn board(&self) -> Arc<CircuitBoard> {
        self.board.clone()
    }

    /// Publishes a changed circuit, with a fresh window, and tells health why.
    fn store(&self, database: Database, circuit: Circuit, cause: Option<String>) {
        let slot = self.board.slot(database);
        let now = Instant::now();
        let before = slot.circuit.swap(Arc::new(circuit));
        slot.clear_window();
        if let Some((_, m)) = self.metrics.iter().find(|(db, _)| *db == database) {
            // An open circuit whose cooldown ended before its timer ticked it (a probe or a
            // reconnect got there first) went through half-open all the same.
            let (recorded, as_of_now) = (before.recorded_status(), before.status(now));
            m.circuit_changed(recorded, as_of_now);
            m.circuit_changed(as_of_now, circuit.recorded_status());
        }
        Self::log_change(database, &circuit, cause.as_deref(), now);
        self.health.do_send(CircuitUpdate {
            database,
            circuit,
            cause,
        });
    }

    fn log_change(database: Database, circuit: &Circuit, cause: Option<&str>, now: Instant) {
        match circuit.status(now) {
            CircuitStatus::Open => tracing::warn!(
                database = %database,
                window = circuit.window_size(),
                failures = circuit.threshold(),
                cause,
                retry_after_ms = circuit.check(now).err().map(|d| d.as_millis() as u64),
                "circuit opened"
            ),
            CircuitStatus::HalfOpen => {
                tracing::info!(database = %database, "circuit half-open; the next probe decides")
            }
            CircuitStatus::Closed => tracing::info!(database = %database, "circuit closed"),
        }
    }
}

impl Actor for BreakerActor {
    type Context = Context<Self>;
}

impl Handler<Trip> for BreakerActor {
    type Result = ();

    fn handle(&mut self, msg: Trip, ctx: &mut Self::Context) {
        let now = Instant::now();
        let database = msg.database;
        let mut circuit = self.board.get(database);
        // A reconnect may have cleared the window since the trip was sent.
        if !circuit.trips(self.board.window(database)) || !circuit.open(now) {
            self.board
                .slot(database)
                .trip_sent
                .store(false, Ordering::Release);
            return;
        }
        self.store(database, circuit, Some(msg.cause));
        // Show `half_open` in health when the cooldown ends, without waiting for a message.
        if let Err(wait) = circuit.check(now) {
            ctx.run_later(wait + Duration::from_millis(1), move |act, _| {
                let mut c = act.board.get(database);
                if c.tick(Instant::now()) {
                    act.store(database, c, None);
                }
            });
        }
    }
}

impl Handler<ProbeSucceeded> for BreakerActor {
    type Result = ();

    fn handle(&mut self, msg: ProbeSucceeded, _: &mut Self::Context) {
        let mut circuit = self.board.get(msg.0);
        if circuit.probe_succeeded(Instant::now()) {
            self.store(msg.0, circuit, None);
        }
    }
}

impl Handler<Reconnected> for BreakerActor {
    type Result = ();

    fn handle(&mut self, msg: Reconnected, _: &mut Self::Context) {
        let mut circuit = self.board.get(msg.0);
        if circuit.reconnected() {
            self.store(msg.0, circuit, None);
        } else {
            // Failures recorded against the old connection say nothing about the new one.
            self.board.slot(msg.0).clear_window();
        }
    }
}

impl Handler<Retune> for BreakerActor {
    type Result = ();

    fn handle(&mut self, msg: Retune, _: &mut Self::Context) {
        for (database, half_open_retry) in msg.half_open_retry {
            let slot = self.board.slot(database);
            let mut circuit = self.board.get(database);
            circuit.retune(msg.threshold, msg.cooldown, half_open_retry);
            // The window stays: recorded outcomes are weighed against the new threshold, and
            // its size follows at the next record.
            slot.circuit.store(Arc::new(circuit));
            self.health.do_send(CircuitUpdate {
                database,
                circuit,
                cause: None,
            });
        }
    }
}

impl Handler<GetCircuit> for BreakerActor {
    type Result = MessageResult<GetCircuit>;

    fn handle(&mut self, msg: GetCircuit, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.board.get(msg.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn transitions(m: &Metrics, from: &str, to: &str) -> bool {
        let mut out = String::new();
        m.encode_prometheus_text(&mut out).unwrap();
        let line = format!(
            "warden_circuit_transitions_total{{database=\"postgres\",from=\"{from}\",to=\"{to}\"}} 1\n"
        );
        out.contains(&line)
    }

    #[actix::test]
    async fn every_transition_is_counted_even_a_half_open_nobody_ticked() {
        let cooldown = Duration::from_millis(30);
        let circuit = Circuit::new(1, cooldown, Duration::from_millis(10));
        let board = Arc::new(CircuitBoard::new(circuit, circuit));
        let health = HealthActor::new(
            &[(Database::Postgres, Duration::from_secs(1), circuit)],
            board.clone(),
        )
        .start();
        let metrics = Metrics::new();
        let breaker = BreakerActor::new(board.clone(), health).counted(vec![(
            Database::Postgres,
            metrics.database(Database::Postgres),
        )]);
        let db = Database::Postgres;

        let mut c = board.get(db);
        assert!(c.open(Instant::now()));
        breaker.store(db, c, Some("a failure".into()));
        assert!(transitions(&metrics, "closed", "open"));
        // The cooldown ends and, before the timer that would store `half_open` runs, the
        // actor reconnects: the circuit went through half-open all the same.
        std::thread::sleep(cooldown + Duration::from_millis(5));
        let mut c = board.get(db);
        assert!(c.reconnected());
        breaker.store(db, c, None);
        assert!(transitions(&metrics, "open", "half_open"));
        assert!(transitions(&metrics, "half_open", "closed"));
        assert!(!transitions(&metrics, "open", "closed"));
        // Open, and a reconnect within the cooldown: straight from open to closed.
        let mut c = board.get(db);
        assert!(c.open(Instant::now()));
        breaker.store(db, c, Some("a failure".into()));
        let mut c = board.get(db);
        assert!(c.reconnected());
        breaker.store(db, c, None);
        assert!(transitions(&metrics, "open", "closed"));
    }
}
