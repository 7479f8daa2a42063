//! The supervised lifecycle of one database connection: connect, probe, back off, restart,
//! shut down. See the module docs of [`crate::connection`].

use std::{
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use actix::prelude::*;
use chrono::Utc;
use tokio::sync::watch;

use super::{
    driver::Driver,
    link::{Admitted, ConnectionLost, Link, LinkState},
};
use crate::{
    backoff::Backoff,
    breaker::{BreakerActor, CircuitBoard, ProbeSucceeded, Reconnected},
    circuit::CircuitStatus,
    error::{TimeoutPhase, WardenError},
    health::{ComponentReport, ComponentUpdate, ConnState, HealthActor},
    metrics::DatabaseMetrics,
    runtime::Tunables,
};

/// Mailbox size of each database actor. Handlers only hand out futures, so the mailbox drains
/// fast; the size only bounds a burst of callers using `send` before the first is handled.
pub const MAILBOX_CAPACITY: usize = 1024;

/// Stops taking calls, waits up to `timeout` for calls in flight, then closes the pool.
/// The actor stays `stopped` afterwards; this is the orderly end, not a failure.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Shutdown {
    /// The whole budget: the drain, then closing.
    pub timeout: Duration,
}

/// Fired with a reason when an actor stops for good without an orderly [`Shutdown`].
pub type FatalSender = Arc<watch::Sender<Option<String>>>;

/// Where the actor is in its lifecycle: the one source of truth. The link callers read
/// ([`LinkState`]) and the state health shows ([`ConnState`]) are derived from it, in
/// [`ConnectionActor::enter`], the only place the phase changes.
enum Phase<C, P> {
    /// A connect attempt is running; it ends by `until` at the latest.
    Connecting { until: Instant },
    /// Connected: `client` is what calls get, `probe` this generation's own connection.
    Connected { client: C, probe: P },
    /// Waiting out a backoff delay until `until`; `restart` is the timer that stops the actor
    /// then, so that its supervisor restarts it.
    Backoff {
        until: Instant,
        restart: SpawnHandle,
    },
    /// Shut down in order, or dead: nothing runs any more.
    Stopped,
}

impl<C: Clone, P> Phase<C, P> {
    /// What callers see of this phase.
    fn link_state(&self, generation: u64) -> LinkState<C> {
        match self {
            Phase::Connecting { until } => LinkState::Connecting { until: *until },
            Phase::Connected { client, .. } => LinkState::Connected {
                client: client.clone(),
                generation,
            },
            Phase::Backoff { until, .. } => LinkState::Backoff { until: *until },
            Phase::Stopped => LinkState::Stopped,
        }
    }

    /// What health shows of this phase.
    fn conn_state(&self) -> ConnState {
        match self {
            Phase::Connecting { .. } => ConnState::Connecting,
            Phase::Connected { .. } => ConnState::Connected,
            Phase::Backoff { .. } => ConnState::Backoff,
            Phase::Stopped => ConnState::Stopped,
        }
    }
}

/// A supervised actor that keeps one database alive. See the module docs.
pub struct ConnectionActor<D: Driver> {
    driver: D,
    link: Arc<Link<D::Client>>,
    phase: Phase<D::Client, D::Probe>,
    health: Addr<HealthActor>,
    breaker: Addr<BreakerActor>,
    backoff: Backoff,
    /// The runtime settings in force: the backoff schedule, the probes' interval and timeout.
    tunables: Tunables,
    report: ComponentReport,
    generation: u64,
    probe_in_flight: bool,
    fatal: FatalSender,
}

impl<D: Driver> ConnectionActor<D> {
    /// An actor for `driver`; start it with `Supervisor::start_in_arbiter`. Its calls and
    /// probes are counted in `metrics`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        driver: D,
        tunables: Tunables,
        board: Arc<CircuitBoard>,
        breaker: Addr<BreakerActor>,
        health: Addr<HealthActor>,
        fatal: FatalSender,
        metrics: DatabaseMetrics,
    ) -> Self {
        let timings = driver.timings();
        let backoff = Backoff::reconnect(&tunables.load().backoff);
        let link = Arc::new(Link::new(
            D::DATABASE,
            board,
            breaker.clone(),
            tunables.clone(),
            timings,
            metrics,
        ));
        Self {
            driver,
            link,
            phase: Phase::Connecting {
                until: Instant::now(),
            },
            health,
            breaker,
            backoff,
            tunables,
            report: ComponentReport::default(),
            generation: 0,
            probe_in_flight: false,
            fatal,
        }
    }

    /// The link calls run through, for a handler that admits its call later.
    pub(crate) fn link(&self) -> Arc<Link<D::Client>> {
        self.link.clone()
    }

    /// Admits a call now, or refuses it at once (see [`Link::admit_call`]).
    pub(crate) fn admit_call(&self) -> Result<Admitted<D::Client>, WardenError> {
        self.link.admit_call()
    }

    fn push_health(&self) {
        self.health.do_send(ComponentUpdate {
            database: D::DATABASE,
            report: self.report.clone(),
        });
    }

    /// Moves to `phase`, publishing what callers and health see of it.
    fn enter(&mut self, phase: Phase<D::Client, D::Probe>) {
        let state = phase.conn_state();
        self.link.publish(phase.link_state(self.generation));
        self.phase = phase;
        let changed = self.report.state != state;
        self.report.state = state;
        if state != ConnState::Backoff {
            self.report.next_attempt_at = None;
        }
        self.push_health();
        if changed {
            tracing::info!(database = %D::DATABASE, state = state.as_str(), "connection state changed");
        }
    }

    /// A successful probe is the trial a half-open circuit waits for; told only then, so the
    /// breaker hears from a probe at most once per probe interval.
    fn probe_succeeded(&self) {
        let circuit = self.link.board.get(D::DATABASE);
        if circuit.status(Instant::now()) == CircuitStatus::HalfOpen {
            self.breaker.do_send(ProbeSucceeded(D::DATABASE));
        }
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        let timings = self.driver.timings();
        self.generation += 1;
        self.enter(Phase::Connecting {
            until: Instant::now() + timings.connect_timeout,
        });
        let started = Instant::now();
        let connect = self.driver.connect();
        let fut = async move {
            match tokio::time::timeout(timings.connect_timeout, connect).await {
                Ok(result) => result,
                Err(_) => Err(WardenError::Timeout {
                    database: D::DATABASE,
                    phase: TimeoutPhase::Connect,
                    after: timings.connect_timeout,
                }),
            }
        };
        ctx.spawn(
            fut.into_actor(self)
                .map(move |result, act, ctx| match result {
                    Ok((client, probe)) => act.on_connected(client, probe, started.elapsed()),
                    Err(err) => act.on_failure(err, ctx),
                }),
        );
    }

    fn on_connected(&mut self, client: D::Client, probe: D::Probe, latency: Duration) {
        if !matches!(self.phase, Phase::Connecting { .. }) {
            return;
        }
        self.backoff.reset();
        self.report.latency = Some(latency);
        self.report.last_ok_at = Some(Utc::now());
        self.report.last_error = None;
        self.report.consecutive_failures = 0;
        // Whatever failed before came from a connection that is gone.
        self.breaker.do_send(Reconnected(D::DATABASE));
        self.enter(Phase::Connected { client, probe });
    }

    /// A connect or a probe failed: drop this generation's probe connection, refuse calls,
    /// and restart after the next backoff delay.
    fn on_failure(&mut self, err: WardenError, ctx: &mut Context<Self>) {
        if !matches!(
            self.phase,
            Phase::Connecting { .. } | Phase::Connected { .. }
        ) {
            return;
        }
        // The schedule in force now, from where the last delay left it.
        self.backoff = self.backoff.retuned(&self.tunables.load().backoff);
        let delay = self.backoff.next_delay(&mut rand::rng());
        let until = Instant::now() + delay;
        self.report.consecutive_failures = self.report.consecutive_failures.saturating_add(1);
        self.report.last_error = Some(err.to_string());
        self.report.next_attempt_at =
            Some(Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default());
        tracing::warn!(
            database = %D::DATABASE,
            attempt = self.backoff.attempt(),
            delay_ms = delay.as_millis() as u64,
            error = %err,
            "connection failed; backing off"
        );
        // The supervisor restarts the actor when it stops; started() connects again. The old
        // probe connection is dropped here, before the next one opens.
        let restart = ctx.run_later(delay, |_, ctx| ctx.stop());
        self.enter(Phase::Backoff { until, restart });
    }

    /// Every probe interval: probe when connected, else tell health we are alive, so that it
    /// does not call us stale while we back off.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        match self.phase {
            Phase::Connected { .. } => self.probe(ctx),
            Phase::Connecting { .. } | Phase::Backoff { .. } => self.push_health(),
            Phase::Stopped => {}
        }
    }

    /// The next tick, one probe interval from now: the interval in force at each tick, so a
    /// change takes effect at the next probe.
    fn schedule_tick(&self, ctx: &mut Context<Self>) {
        let every = self.tunables.load().database(D::DATABASE).probe_interval;
        ctx.run_later(every, |act, ctx| {
            act.tick(ctx);
            act.schedule_tick(ctx);
        });
    }

    fn probe(&mut self, ctx: &mut Context<Self>) {
        let Phase::Connected { probe, .. } = &self.phase else {
            return;
        };
        if self.probe_in_flight {
            return;
        }
        self.probe_in_flight = true;
        let timeout = self.tunables.load().database(D::DATABASE).probe_timeout;
        let generation = self.generation;
        let started = Instant::now();
        let probe = self.driver.probe(probe);
        let fut = async move {
            match tokio::time::timeout(timeout, probe).await {
                Ok(result) => result,
                Err(_) => Err(WardenError::Timeout {
                    database: D::DATABASE,
                    phase: TimeoutPhase::Probe,
                    after: timeout,
                }),
            }
        };
        ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
            act.probe_in_flight = false;
            act.link.metrics.probe_ended(started.elapsed());
            if generation != act.generation {
                return;
            }
            match result {
                Ok(()) => {
                    act.report.latency = Some(started.elapsed());
                    act.report.last_ok_at = Some(Utc::now());
                    act.report.consecutive_failures = 0;
                    act.probe_succeeded();
                    act.push_health();
                }
                Err(err) => act.on_failure(err, ctx),
            }
        }));
    }
}

impl<D: Driver> Actor for ConnectionActor<D> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        let _ = self.link.owner.set(ctx.address().recipient().downgrade());
        self.probe_in_flight = false;
        if matches!(self.phase, Phase::Stopped) {
            return;
        }
        self.connect(ctx);
        self.schedule_tick(ctx);
    }
}

impl<D: Driver> Supervised for ConnectionActor<D> {
    fn restarting(&mut self, _: &mut Self::Context) {
        self.report.restarts = self.report.restarts.saturating_add(1);
    }
}

impl<D: Driver> Drop for ConnectionActor<D> {
    fn drop(&mut self) {
        if matches!(self.phase, Phase::Stopped) {
            return;
        }
        let reason = if std::thread::panicking() {
            format!("{} actor panicked", D::DATABASE)
        } else {
            format!("{} actor stopped unexpectedly", D::DATABASE)
        };
        tracing::error!(database = %D::DATABASE, "{reason}");
        self.report.last_error = Some(reason.clone());
        self.enter(Phase::Stopped);
        self.fatal.send_replace(Some(reason));
    }
}

impl<D: Driver> Handler<ConnectionLost> for ConnectionActor<D> {
    type Result = ();

    fn handle(&mut self, msg: ConnectionLost, ctx: &mut Self::Context) {
        if msg.generation == self.generation {
            self.probe(ctx);
        }
    }
}

impl<D: Driver> Handler<Shutdown> for ConnectionActor<D> {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Shutdown, ctx: &mut Self::Context) -> Self::Result {
        // A pending restart would drop this very future with the actor's context.
        if let Phase::Backoff { restart, .. } = self.phase {
            ctx.cancel_future(restart);
        }
        self.enter(Phase::Stopped);
        // Pairs with the fence in `Link::admit_call`: a call admitted elsewhere from an older
        // state is in the count the drain reads.
        std::sync::atomic::fence(Ordering::SeqCst);
        let link = self.link.clone();
        let close = self.driver.close();
        // `None` for a budget past the clock's end (`Duration::MAX`: as long as it takes), which
        // `Instant + Duration` would panic on, after the phase is already `Stopped`.
        let deadline = Instant::now().checked_add(msg.timeout);
        let fut = async move {
            if !link.drained(msg.timeout).await {
                tracing::warn!(
                    database = %D::DATABASE,
                    in_flight = link.in_flight(),
                    "calls still in flight at the end of the shutdown timeout"
                );
            }
            // Whatever is left of the budget, and a moment to say goodbye politely.
            let left = deadline
                .map_or(Duration::MAX, |d| {
                    d.saturating_duration_since(Instant::now())
                })
                .max(Duration::from_millis(200));
            let _ = tokio::time::timeout(left, close).await;
        };
        Box::pin(fut.into_actor(self).map(|_, _, _| {
            tracing::info!(database = %D::DATABASE, "connection closed");
        }))
    }
}
