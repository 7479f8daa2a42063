//! BreakerActor: one circuit per database, fed with every query and probe outcome.
//!
//! The actor owns the transitions (see [`crate::circuit`] for the rules) and publishes each
//! circuit on a [`CircuitBoard`], which the database actors read before every call. The check
//! is a lock-free load on the caller's path rather than a round trip to this actor, so a call
//! refused by an open circuit costs microseconds and callers never queue behind the breaker.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use actix::prelude::*;
use arc_swap::ArcSwap;

use crate::{
    circuit::{Circuit, CircuitStatus, Source},
    error::Database,
    health::{CircuitUpdate, HealthActor},
};

/// The published circuits, one per database; written only by [`BreakerActor`].
#[derive(Debug)]
pub struct CircuitBoard {
    neo4j: ArcSwap<Circuit>,
    postgres: ArcSwap<Circuit>,
}

impl CircuitBoard {
    fn new(neo4j: Circuit, postgres: Circuit) -> Self {
        Self {
            neo4j: ArcSwap::from_pointee(neo4j),
            postgres: ArcSwap::from_pointee(postgres),
        }
    }

    fn slot(&self, database: Database) -> &ArcSwap<Circuit> {
        match database {
            Database::Neo4j => &self.neo4j,
            Database::Postgres => &self.postgres,
        }
    }

    /// The latest circuit of `database`.
    pub fn get(&self, database: Database) -> Circuit {
        **self.slot(database).load()
    }
}

/// One outcome of a call (one per call, whatever its retries) or of a probe. Sent with
/// `do_send`: reporting never waits.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Outcome {
    /// Which database.
    pub database: Database,
    /// Whether it succeeded. Callers' own mistakes are not reported at all.
    pub success: bool,
    /// A probe (which may close a half-open circuit) or a query.
    pub source: Source,
}

/// Asks for a database's circuit as of now.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Circuit")]
pub struct GetCircuit(pub Database);

/// Owns the circuits.
pub struct BreakerActor {
    board: Arc<CircuitBoard>,
    health: Addr<HealthActor>,
}

impl BreakerActor {
    /// A breaker whose circuits start as the given ones (closed), reporting to `health`.
    pub fn new(neo4j: Circuit, postgres: Circuit, health: Addr<HealthActor>) -> Self {
        Self {
            board: Arc::new(CircuitBoard::new(neo4j, postgres)),
            health,
        }
    }

    /// The board the database actors read.
    pub fn board(&self) -> Arc<CircuitBoard> {
        self.board.clone()
    }

    fn store(&self, database: Database, circuit: Circuit) {
        self.board.slot(database).store(Arc::new(circuit));
        self.health.do_send(CircuitUpdate { database, circuit });
    }

    fn log_change(database: Database, circuit: &Circuit, now: Instant) {
        match circuit.status(now) {
            CircuitStatus::Open => tracing::warn!(
                database = %database,
                consecutive_failures = circuit.failures(),
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

    fn started(&mut self, ctx: &mut Self::Context) {
        // Every query outcome that changes a count lands here.
        ctx.set_mailbox_capacity(4096);
    }
}

impl Handler<Outcome> for BreakerActor {
    type Result = ();

    fn handle(&mut self, msg: Outcome, ctx: &mut Self::Context) {
        let now = Instant::now();
        let mut circuit = self.board.get(msg.database);
        let before = circuit;
        let changed = circuit.record(msg.success, msg.source, now);
        if circuit == before {
            return;
        }
        if changed {
            Self::log_change(msg.database, &circuit, now);
            if let Err(wait) = circuit.check(now) {
                if circuit.status(now) == CircuitStatus::Open {
                    // Show `half_open` in health when the cooldown ends, without waiting for
                    // another outcome to arrive.
                    let database = msg.database;
                    ctx.run_later(wait + Duration::from_millis(1), move |act, _| {
                        let now = Instant::now();
                        let mut c = act.board.get(database);
                        if c.tick(now) {
                            Self::log_change(database, &c, now);
                            act.store(database, c);
                        }
                    });
                }
            }
        }
        self.store(msg.database, circuit);
    }
}

impl Handler<GetCircuit> for BreakerActor {
    type Result = MessageResult<GetCircuit>;

    fn handle(&mut self, msg: GetCircuit, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.board.get(msg.0))
    }
}
