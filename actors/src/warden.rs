//! [`Warden`]: starts the four actors in the current actix `System`, on one dedicated arbiter,
//! and shuts them down in order.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use actix::prelude::*;
use tokio::sync::watch;

use crate::{
    backoff::Backoff,
    breaker::CircuitBoard,
    builder::WardenBuilder,
    call_runtime::CallRuntime,
    guard::DeathGuard,
    metrics::{Metrics, StateCollector},
    neo4j, postgres,
    projection::{self, ProjectorActor, StopProjector},
    runtime::{RuntimeSettings, RuntimeSettingsHandle, TableSettings, Tunables},
    BreakerActor, CallHandle, Circuit, Database, HealthActor, HealthHandle, Neo4jActor,
    Neo4jHandle, PostgresActor, PostgresHandle, SettingsError, Shutdown, WardenSettings,
};

/// The four running actors. Both database actors and the breaker share one dedicated arbiter
/// (sockets belong to the runtime that opened them, and a busy caller thread must not delay
/// probes); health runs there too, and HTTP workers read its published snapshot instead.
/// Each database's calls run on its pool's own I/O threads (`postgres.io_threads`,
/// `neo4j.io_threads`), which own the pool's sockets, so that queries can use more than the
/// arbiter's one thread; or, when the application hosts them
/// ([`WardenBuilder::call_runtime`]), on the application's runtime.
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
    /// The graph projector, on an arbiter of its own, when `projection.enabled`.
    projector: Option<(Addr<ProjectorActor>, Arbiter)>,
    health_handle: HealthHandle,
    postgres_handle: PostgresHandle,
    neo4j_handle: Neo4jHandle,
    runtime: RuntimeSettingsHandle,
    /// Stops the `config` table's loader, and tells when it has stopped.
    loader: std::sync::Mutex<Option<Loader>>,
    fatal: watch::Receiver<Option<String>>,
    /// Set before an orderly stop, so that the breaker's and health's guards stay quiet.
    stopping: Arc<AtomicBool>,
    /// `shutdown` ran (or `drop` started it): nothing left to stop.
    stopped: AtomicBool,
    arbiter: Arbiter,
    metrics: Arc<Metrics>,
}

/// The `config` table's loader: how to stop it, and when it has.
struct Loader {
    stop: watch::Sender<bool>,
    done: tokio::sync::oneshot::Receiver<()>,
}

/// How long calls still in flight get when a `Warden` is dropped without `shutdown`.
pub const DROP_DRAIN: Duration = Duration::from_secs(1);

impl Warden {
    /// Validates the settings, reads secret files, and starts the four actors in the current
    /// actix `System`. Connecting happens in the background: this returns at once, even when
    /// both databases are down.
    pub fn start(settings: WardenSettings) -> Result<Warden, SettingsError> {
        Self::builder(settings).start()
    }

    /// A builder for a warden with more than settings: see
    /// [`WardenBuilder::call_runtime`] to host the databases' calls on the application's own
    /// tokio runtime.
    pub fn builder(settings: WardenSettings) -> WardenBuilder {
        WardenBuilder::new(settings)
    }

    pub(crate) fn start_validated(
        settings: WardenSettings,
        hosted: Option<CallRuntime>,
    ) -> Result<Warden, SettingsError> {
        // Before anything starts, so that a refusal leaves nothing running.
        let mut pg_driver = postgres::PgDriver::new(settings.postgres.clone())?;
        let mut graph_driver = neo4j::Neo4jDriver::new(settings.neo4j.clone());
        if let Some(runtime) = hosted {
            pg_driver = pg_driver.hosted_on(runtime.clone());
            graph_driver = graph_driver.hosted_on(runtime);
        }
        // The projector's listener connects on its own, with the pool's options.
        let listen_options = pg_driver.connect_options().ok();
        let arbiter = Arbiter::new();
        let handle = arbiter.handle();
        let tunables = Tunables::new(RuntimeSettings::of(&settings));
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
        let (fatal_tx, fatal) = watch::channel(None);
        let fatal_tx = Arc::new(fatal_tx);
        let stopping = Arc::new(AtomicBool::new(false));
        let guard = |actor| DeathGuard::new(actor, fatal_tx.clone(), stopping.clone());

        let health_handle = health_actor.handle();
        let mut metrics = Metrics::new();
        metrics.collect(StateCollector::new(
            health_handle.clone(),
            vec![(Database::Postgres, pg_driver.pool_reader())],
        ));
        let (pg_metrics, graph_metrics) = (
            metrics.database(Database::Postgres),
            metrics.database(Database::Neo4j),
        );
        let health_actor = health_actor.guarded(guard("health"));
        let health = HealthActor::start_in_arbiter(&handle, move |_| health_actor);

        let breaker_actor = BreakerActor::new(board.clone(), health.clone())
            .counted(vec![
                (Database::Postgres, pg_metrics.clone()),
                (Database::Neo4j, graph_metrics.clone()),
            ])
            .guarded(guard("breaker"));
        let breaker = BreakerActor::start_in_arbiter(&handle, move |_| breaker_actor);
        // Only a projector that runs may fire the fatal signal: an unused guard would fire as
        // it is dropped.
        let projector_guard = settings.projection.enabled.then(|| guard("projector"));

        let runtime = RuntimeSettingsHandle::new(
            settings.clone(),
            tunables.clone(),
            breaker.clone(),
            health.clone(),
        );

        let pg = PostgresActor::new(
            pg_driver,
            tunables.clone(),
            board.clone(),
            breaker.clone(),
            health.clone(),
            fatal_tx.clone(),
            pg_metrics,
        );
        let pg_link = pg.link();
        let postgres = Supervisor::start_in_arbiter(&handle, move |_| pg);

        let graph = Neo4jActor::new(
            graph_driver,
            tunables,
            board,
            breaker.clone(),
            health.clone(),
            fatal_tx,
            graph_metrics,
        );
        let graph_link = graph.link();
        let neo4j = Supervisor::start_in_arbiter(&handle, move |_| graph);

        let postgres_handle = CallHandle::new(postgres.clone(), pg_link);
        let neo4j_handle = CallHandle::new(neo4j.clone(), graph_link);
        let projector = projector_guard.map(|projector_guard| {
            let arbiter = Arbiter::new();
            let signals = projection::Signals::default();
            let actor = ProjectorActor::new(
                postgres_handle.clone(),
                neo4j_handle.clone(),
                health_handle.clone(),
                health.clone(),
                settings.projection,
                signals.clone(),
                projector_guard,
            );
            let addr = ProjectorActor::start_in_arbiter(&arbiter.handle(), move |_| actor);
            if let Some(options) = listen_options {
                let channel = format!("{}.graph_outbox", settings.postgres.schema);
                let app: String = format!("{} projector", settings.postgres.application_name)
                    .chars()
                    .take(63)
                    .collect();
                let listen = projection::listen(
                    options.application_name(&app),
                    settings.postgres.connect_timeout,
                    channel,
                    signals.wake,
                    stopping.clone(),
                    signals.listener_stop,
                    Backoff::reconnect(&settings.backoff),
                );
                arbiter.spawn(listen);
            }
            (addr, arbiter)
        });

        Ok(Warden {
            postgres_handle,
            neo4j_handle,
            projector,
            neo4j,
            postgres,
            breaker,
            health,
            health_handle,
            runtime,
            loader: std::sync::Mutex::new(None),
            fatal,
            stopping,
            stopped: AtomicBool::new(false),
            arbiter,
            metrics: Arc::new(metrics),
        })
    }

    /// The graph projector, when `projection.enabled`.
    pub fn projector(&self) -> Option<&Addr<ProjectorActor>> {
        self.projector.as_ref().map(|(addr, _)| addr)
    }

    /// warden's Prometheus metrics (see [`Metrics`]): encode its registry to expose them.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
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

    /// The catalog (recordings, metadata, tracklists) on this warden's PostgreSQL; cheap to
    /// clone.
    pub fn catalog(&self) -> crate::catalog::Catalog {
        crate::catalog::Catalog::new(self.postgres_handle())
    }

    /// Calls to the graph database, refused on the caller's thread like
    /// [`postgres_handle`](Self::postgres_handle)'s.
    pub fn neo4j_handle(&self) -> Neo4jHandle {
        self.neo4j_handle.clone()
    }

    /// The runtime settings: the values in force, where they came from, and what became of
    /// the `config` table (see [`crate::runtime`]).
    pub fn runtime_settings(&self) -> RuntimeSettingsHandle {
        self.runtime.clone()
    }

    /// Follows PostgreSQL's `config` table (in the settings' schema): its rows are laid over
    /// the settings this warden started with and applied while it runs, within a second of a
    /// change (`LISTEN`/`NOTIFY`) and at every `poll_interval`. Uses one connection of its own
    /// beside `postgres.max_connections`. Does nothing when `options.enabled` is false.
    /// A second call changes nothing.
    pub fn follow_config_table(&self, options: TableSettings) {
        let mut loader = self
            .loader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !options.enabled || loader.is_some() {
            return;
        }
        let (stop, stopped) = watch::channel(false);
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let run = crate::runtime::run_loader(self.runtime.clone(), options, stopped);
        self.arbiter.spawn(async move {
            run.await;
            let _ = done_tx.send(());
        });
        *loader = Some(Loader { stop, done });
    }

    /// Stops the loader, within `timeout`, before the arbiter it runs on goes.
    fn stop_loader(&self) -> impl std::future::Future<Output = ()> {
        let loader = self
            .loader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        async move {
            if let Some(Loader { stop, done }) = loader {
                let _ = stop.send(true);
                let _ = tokio::time::timeout(Duration::from_secs(1), done).await;
            }
        }
    }

    /// Resolves when an actor (either database actor, the breaker or health) has stopped for
    /// good without an orderly shutdown (it died from a bug), with the reason. An embedding
    /// application should treat it as fatal.
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

    /// Stops taking calls, lets calls in flight finish within `timeout`, closes both clients
    /// and stops the actors' thread. Health shows both databases `stopped` afterwards. Returns
    /// within `timeout` even when an actor does not answer (its thread is blocked): the thread
    /// is told to stop all the same.
    pub async fn shutdown(&self, timeout: Duration) {
        // The projector first: it finishes the step under way while both databases still serve.
        if let Some((projector, arbiter)) = &self.projector {
            self.stopping.store(true, Ordering::Release);
            if tokio::time::timeout(timeout / 2, projector.send(StopProjector))
                .await
                .is_err()
            {
                tracing::warn!("the graph projector did not stop in time");
            }
            arbiter.stop();
        }
        let neo4j = self.neo4j.send(Shutdown { timeout });
        let postgres = self.postgres.send(Shutdown { timeout });
        // A mailbox error means the actor is already gone, which is what we want.
        let both = futures_util::future::join(neo4j, postgres);
        if tokio::time::timeout(timeout, both).await.is_err() {
            tracing::warn!(?timeout, "an actor did not finish shutting down in time");
        }
        self.stop_loader().await;
        self.stopped.store(true, Ordering::Release);
        self.stopping.store(true, Ordering::Release);
        self.arbiter.stop();
    }
}

/// A `Warden` dropped without [`Warden::shutdown`] stops all the same, in the background:
/// calls in flight get [`DROP_DRAIN`], the pools close, the actors' thread and the I/O threads
/// end. Dropping never blocks.
impl Drop for Warden {
    fn drop(&mut self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        self.stopping.store(true, Ordering::Release);
        if let Some((_, arbiter)) = &self.projector {
            arbiter.stop();
        }
        let neo4j = self.neo4j.clone();
        let postgres = self.postgres.clone();
        let timeout = DROP_DRAIN;
        let loader = self.stop_loader();
        // Runs on the actors' own thread, which it stops when done; if that thread is gone
        // already, there is nothing left to stop.
        self.arbiter.spawn(async move {
            let neo4j = neo4j.send(Shutdown { timeout });
            let postgres = postgres.send(Shutdown { timeout });
            let both = futures_util::future::join(neo4j, postgres);
            let _ = tokio::time::timeout(timeout, both).await;
            loader.await;
            actix::Arbiter::current().stop();
        });
    }
}
