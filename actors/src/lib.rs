//! warden-actors: supervised Neo4j and PostgreSQL connections, a circuit breaker per database,
//! and a health aggregate, as actix actors an application can embed without the daemon.
//!
//! # Layout
//! - [`connection`]: the supervised connection actor both database actors are made of
//!   (connect, probe, back off, restart; calls that never queue behind each other).
//! - [`postgres`] / [`neo4j`]: the drivers, and the public messages [`Sql`] and [`Cypher`].
//! - [`breaker`]: [`BreakerActor`], over the pure state machine in [`circuit`].
//! - [`health`]: [`HealthActor`] and the snapshot HTTP workers read without a mailbox.
//! - [`backoff`]: the pure exponential backoff schedule.
//! - [`settings`], [`error`], [`secret`]: configuration, the error callers see, redaction.
//!
//! # Use
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use warden_actors::{Sql, Warden, WardenSettings};
//! let warden = Warden::start(WardenSettings::default())?;
//! let rows = warden.postgres.send(Sql::new("SELECT $1::int AS n").bind(7)).await??;
//! assert_eq!(rows[0]["n"], 7);
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod backoff;
pub mod breaker;
pub mod circuit;
pub mod connection;
pub mod error;
pub mod faults;
pub mod health;
pub mod neo4j;
pub mod postgres;
pub mod secret;
pub mod settings;

use std::{sync::Arc, time::Duration};

use actix::prelude::*;
use tokio::sync::watch;

pub use crate::{
    breaker::BreakerActor,
    circuit::Circuit,
    connection::Shutdown,
    error::{Database, TimeoutPhase, WardenError},
    health::{GetHealth, HealthActor, HealthHandle, HealthView},
    neo4j::{Cypher, Neo4jActor, WithGraph},
    postgres::{PostgresActor, Rows, Sql, WithPool},
    secret::Secret,
    settings::{SettingsError, WardenSettings},
};

/// The four running actors. Both database actors and the breaker share one dedicated arbiter
/// (sockets belong to the runtime that opened them, and a busy caller thread must not delay
/// probes); health runs there too, and HTTP workers read its published snapshot instead.
pub struct Warden {
    /// The graph database actor: send it [`Cypher`].
    pub neo4j: Addr<Neo4jActor>,
    /// The PostgreSQL actor: send it [`Sql`].
    pub postgres: Addr<PostgresActor>,
    /// The breaker, fed by both database actors.
    pub breaker: Addr<BreakerActor>,
    /// The health aggregate: send it [`GetHealth`], or read [`Warden::health_handle`].
    pub health: Addr<HealthActor>,
    health_handle: HealthHandle,
    fatal: watch::Receiver<Option<String>>,
    arbiter: Arbiter,
}

impl Warden {
    /// Validates the settings, reads secret files, and starts the four actors in the current
    /// actix `System`. Connecting happens in the background: this returns at once, even when
    /// both databases are down.
    pub fn start(mut settings: WardenSettings) -> Result<Warden, SettingsError> {
        settings.load_secret_files()?;
        settings.validate()?;
        Ok(Self::start_validated(settings))
    }

    fn start_validated(settings: WardenSettings) -> Warden {
        let arbiter = Arbiter::new();
        let handle = arbiter.handle();
        let circuit = |probe_interval: Duration| {
            Circuit::new(
                settings.breaker.failure_threshold,
                settings.breaker.cooldown,
                probe_interval,
            )
        };
        let neo4j_circuit = circuit(settings.neo4j.probe_interval);
        let pg_circuit = circuit(settings.postgres.probe_interval);

        let health_actor = HealthActor::new(&[
            (
                Database::Neo4j,
                settings.neo4j.probe_interval,
                neo4j_circuit,
            ),
            (
                Database::Postgres,
                settings.postgres.probe_interval,
                pg_circuit,
            ),
        ]);
        let health_handle = health_actor.handle();
        let health = HealthActor::start_in_arbiter(&handle, move |_| health_actor);

        let breaker_actor = BreakerActor::new(neo4j_circuit, pg_circuit, health.clone());
        let board = breaker_actor.board();
        let breaker = BreakerActor::start_in_arbiter(&handle, move |_| breaker_actor);

        let (fatal_tx, fatal) = watch::channel(None);
        let fatal_tx = Arc::new(fatal_tx);

        let pg = PostgresActor::new(
            postgres::PgDriver::new(settings.postgres.clone()),
            &settings.backoff,
            &settings.retry,
            board.clone(),
            breaker.clone(),
            health.clone(),
            fatal_tx.clone(),
        );
        let postgres = Supervisor::start_in_arbiter(&handle, move |_| pg);

        let graph = Neo4jActor::new(
            neo4j::Neo4jDriver::new(settings.neo4j.clone()),
            &settings.backoff,
            &settings.retry,
            board,
            breaker.clone(),
            health.clone(),
            fatal_tx,
        );
        let neo4j = Supervisor::start_in_arbiter(&handle, move |_| graph);

        Warden {
            neo4j,
            postgres,
            breaker,
            health,
            health_handle,
            fatal,
            arbiter,
        }
    }

    /// A reader of the latest health snapshot, for any thread, without a mailbox round trip.
    pub fn health_handle(&self) -> HealthHandle {
        self.health_handle.clone()
    }

    /// Resolves when a database actor has stopped for good without an orderly shutdown (it
    /// died from a bug), with the reason. An embedding application should treat it as fatal.
    pub async fn fatal(&self) -> String {
        let mut rx = self.fatal.clone();
        loop {
            if let Some(reason) = rx.borrow_and_update().clone() {
                return reason;
            }
            if rx.changed().await.is_err() {
                // Every sender is gone, so no actor can report any more; wait for ever.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Stops taking calls, lets calls in flight finish within `timeout`, and closes both
    /// clients. Health shows both databases `stopped` afterwards.
    pub async fn shutdown(&self, timeout: Duration) {
        let neo4j = self.neo4j.send(Shutdown { timeout });
        let postgres = self.postgres.send(Shutdown { timeout });
        // A mailbox error means the actor is already gone, which is what we want.
        let _ = futures_util::future::join(neo4j, postgres).await;
        self.arbiter.stop();
    }
}
