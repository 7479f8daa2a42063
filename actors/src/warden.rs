//! [`Warden`]: starts the four actors in the current actix `System`, on one dedicated arbiter,
//! and shuts them down in order.

use std::{sync::Arc, time::Duration};

use actix::prelude::*;
use tokio::sync::watch;

use crate::{
    breaker::CircuitBoard, neo4j, postgres, BreakerActor, CallHandle, Circuit, Database,
    HealthActor, HealthHandle, Neo4jActor, Neo4jHandle, PostgresActor, PostgresHandle,
    SettingsError, Shutdown, WardenSettings,
};

/// The four running actors. Both database actors and the breaker share one dedicated arbiter
/// (sockets belong to the runtime that opened them, and a busy caller thread must not delay
/// probes); health runs there too, and HTTP workers read its published snapshot instead.
/// PostgreSQL's calls run on its pool's own I/O threads (`postgres.io_threads`), which own the
/// pool's sockets, so that queries can use more than the arbiter's one thread.
pub struct Warden {
    /// The graph database actor: send it [`Cypher`](crate::Cypher), or call it through
    /// [`Warden::neo4j_handle`], which answers refusals without its mailbox.
    pub neo4j: Addr<Neo4jActor>,
    /// The PostgreSQL actor: send it [`Sql`](crate::Sql), or call it through
    /// [`Warden::postgres_handle`], which answers refusals without its mailbox.
    pub postgres: Addr<PostgresActor>,
    /// The breaker, fed by both database actors.
    pub breaker: Addr<BreakerActor>,
    /// The health aggregate: send it [`GetHealth`](crate::GetHealth), or read [`Warden::health_handle`].
    pub health: Addr<HealthActor>,
    health_handle: HealthHandle,
    postgres_handle: PostgresHandle,
    neo4j_handle: Neo4jHandle,
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
        Self::start_validated(settings)
    }

    fn start_validated(settings: WardenSettings) -> Result<Warden, SettingsError> {
        // Before anything starts, so that a refusal leaves nothing running.
        let pg_driver = postgres::PgDriver::new(settings.postgres.clone())?;
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

        let board = Arc::new(CircuitBoard::new(neo4j_circuit, pg_circuit));
        let health_actor = HealthActor::new(
            &[
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
            ],
            board.clone(),
        );
        let health_handle = health_actor.handle();
        let health = HealthActor::start_in_arbiter(&handle, move |_| health_actor);

        let breaker_actor = BreakerActor::new(board.clone(), health.clone());
        let breaker = BreakerActor::start_in_arbiter(&handle, move |_| breaker_actor);

        let (fatal_tx, fatal) = watch::channel(None);
        let fatal_tx = Arc::new(fatal_tx);

        let pg = PostgresActor::new(
            pg_driver,
            &settings.backoff,
            &settings.retry,
            board.clone(),
            breaker.clone(),
            health.clone(),
            fatal_tx.clone(),
        );
        let pg_link = pg.link();
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
        let graph_link = graph.link();
        let neo4j = Supervisor::start_in_arbiter(&handle, move |_| graph);

        Ok(Warden {
            postgres_handle: CallHandle::new(postgres.clone(), pg_link),
            neo4j_handle: CallHandle::new(neo4j.clone(), graph_link),
            neo4j,
            postgres,
            breaker,
            health,
            health_handle,
            fatal,
            arbiter,
        })
    }

    /// A reader of the latest health snapshot, for any thread, without a mailbox round trip.
    pub fn health_handle(&self) -> HealthHandle {
        self.health_handle.clone()
    }

    /// Calls to PostgreSQL that are refused on the caller's thread when the actor would refuse
    /// them at once (see [`CallHandle`]); for any thread, cheap to clone.
    pub fn postgres_handle(&self) -> PostgresHandle {
        self.postgres_handle.clone()
    }

    /// Calls to the graph database, refused on the caller's thread like
    /// [`postgres_handle`](Self::postgres_handle)'s.
    pub fn neo4j_handle(&self) -> Neo4jHandle {
        self.neo4j_handle.clone()
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
