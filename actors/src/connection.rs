//! The supervised connection actor that both database actors are made of.
//!
//! [`ConnectionActor`] keeps one database alive through a [`Driver`] (sqlx or neo4rs). It holds
//! two things: the pool that callers share, created on the first successful connect and kept
//! for the actor's whole life (both drivers validate a pooled connection before handing it out,
//! PostgreSQL unless it was released and checked moments ago, so the pool survives outages by
//! itself), and, per generation, one connection of its own for
//! probes. The lifecycle:
//!
//! ```text
//!   started() ──► Connecting ──ok──► Connected ──probe fails──► Backoff ──delay──► stop()
//!       ▲              │                                          ▲                 │
//!       │              └────────────────fails─────────────────────┘                 │
//!       └──────────── Supervisor restarts the same struct (restarting()) ◄──────────┘
//! ```
//!
//! Only a failed connect or a failed probe takes the connection down. A call that fails with a
//! connection-class error makes the actor probe at once, so a real outage is seen in one round
//! trip, while a misclassified error from one statement never costs everyone a reconnect.
//!
//! Calls never run inside the actor's context, nor on its thread: a handler admits a call
//! (`Link::admit_call`) and hands it, as a future that runs by itself (`Admitted::call`), to
//! the database's own I/O threads (see `call.rs` and `io.rs`). A
//! [`CallHandle`](crate::CallHandle) reads the same lock-free link on the caller's thread, to
//! refuse without the actor, and to admit and start calls itself. So callers never queue
//! behind one another or behind a connect, and a restart (which drops the actor's own futures)
//! cannot leave a caller without an answer: every call ends with a result or a typed error
//! within `query_timeout`.
//!
//! An outage is backed off for ever. A bug is not: if the actor is dropped without an orderly
//! [`Shutdown`] (a panic in a handler kills an actix actor and its supervisor for good), it marks
//! itself `stopped` in health and fires the fatal signal the daemon exits on.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, OnceLock,
    },
    time::{Duration, Instant},
};

use actix::{prelude::*, WeakRecipient};
use arc_swap::ArcSwap;
use chrono::Utc;
use futures_util::future::{BoxFuture, LocalBoxFuture};
use tokio::sync::{watch, Notify};

use crate::{
    backoff::Backoff,
    breaker::{BreakerActor, CircuitBoard, ProbeSucceeded, Reconnected, Trip},
    circuit::CircuitStatus,
    error::{Database, TimeoutPhase, WardenError},
    health::{ComponentReport, ComponentUpdate, ConnState, HealthActor},
    settings::{BackoffSettings, RetrySettings},
};

/// Mailbox size of each database actor. Handlers only hand out futures, so the mailbox drains
/// fast; the size only bounds a burst of callers using `send` before the first is handled.
pub const MAILBOX_CAPACITY: usize = 1024;

/// The time bounds a driver runs under.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// Bound on one connect, the first round trip (and any one-time setup) included.
    pub connect_timeout: Duration,
    /// Bound on one call, retries included.
    pub query_timeout: Duration,
    /// Time between probes (and between heartbeats to health while not connected).
    pub probe_interval: Duration,
    /// Bound on one probe.
    pub probe_timeout: Duration,
    /// Calls that may hold a pooled connection at once: the pool's size.
    pub call_slots: usize,
}

/// A connect in progress: the shared client and this generation's probe connection.
pub type ConnectFuture<C, P> = LocalBoxFuture<'static, Result<(C, P), WardenError>>;

/// What a database needs to plug into [`ConnectionActor`].
pub trait Driver: Unpin + 'static {
    /// What calls get: a cheap handle to the shared pool.
    type Client: Clone + Unpin + 'static;
    /// One generation's own probe connection; dropped when the generation ends.
    type Probe: Unpin + 'static;
    /// Which database this driver talks to.
    const DATABASE: Database;

    /// The driver's time bounds. `connect_timeout` may be longer while one-time setup (such as
    /// migrations) is still pending.
    fn timings(&self) -> Timings;

    /// Opens a probe connection with one TCP attempt and proves it with one round trip
    /// (drivers connect lazily, so creating a client alone proves nothing); creates the shared
    /// pool the first time. The caller bounds it by `connect_timeout`.
    fn connect(&self) -> ConnectFuture<Self::Client, Self::Probe>;

    /// One liveness round trip on the probe connection. The caller bounds it by
    /// `probe_timeout`.
    fn probe(&self, probe: &Self::Probe) -> LocalBoxFuture<'static, Result<(), WardenError>>;

    /// Closes the shared pool, at shutdown.
    fn close(&self) -> LocalBoxFuture<'static, ()>;
}

/// How far an attempt got before it failed, which decides whether running it again is safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    /// Nothing reached the server (no connection could be had).
    Nothing,
    /// One statement may have reached the server. If the server says it rolled it back and
    /// asks for a retry (a transient `Query` error), running it again is safe.
    OneStatement,
    /// A caller's closure ran: it may have committed earlier statements, whatever the last
    /// error says.
    Anything,
    /// A transaction warden began and had not committed: it was rolled back, and running it
    /// again is safe when PostgreSQL rolled it back for a retry (40001, 40P01).
    Transaction,
}

/// How an attempt failed: the error, and how far it got. A statement that may have run is not
/// retried (a retried INSERT would run twice), unless the server rolled it back.
#[derive(Debug, Clone)]
pub struct Failed {
    /// What went wrong.
    pub error: WardenError,
    /// How far the attempt got.
    pub reached: Reached,
}

impl Failed {
    /// A failure before anything was sent (acquiring a connection).
    pub fn before_send(error: WardenError) -> Self {
        Self {
            error,
            reached: Reached::Nothing,
        }
    }

    /// A failure once a single statement may have been sent.
    pub fn after_send(error: WardenError) -> Self {
        Self {
            error,
            reached: Reached::OneStatement,
        }
    }

    /// A failure of a caller's closure, which may have done anything.
    pub fn opaque(error: WardenError) -> Self {
        Self {
            error,
            reached: Reached::Anything,
        }
    }

    /// A failure inside a transaction that was not committed (see [`Reached::Transaction`]).
    pub fn in_transaction(error: WardenError) -> Self {
        Self {
            error,
            reached: Reached::Transaction,
        }
    }

    /// Whether running the same attempt again cannot do anything twice.
    fn retry_safe(&self) -> bool {
        match (self.reached, &self.error) {
            (Reached::Nothing, e) => e.is_transient(),
            (Reached::Transaction, e) => e.rolled_back_for_retry(),
            // The server rolled the statement back and asks for a retry.
            (Reached::OneStatement, WardenError::Query { transient, .. }) => *transient,
            (Reached::OneStatement, _) | (Reached::Anything, _) => false,
        }
    }
}

/// A shared pool that is created on the first successful connect and closed once, at
/// shutdown. Connect and close go through one lock, so a connect that finishes after shutdown
/// cannot open a pool that nobody would close.
pub(crate) struct PoolSlot<T>(std::sync::Mutex<Slot<T>>);

enum Slot<T> {
    Empty,
    Open(T),
    Closed,
}

impl<T: Clone> PoolSlot<T> {
    pub(crate) fn new() -> Self {
        Self(std::sync::Mutex::new(Slot::Empty))
    }

    /// The pool, opened by `open` the first time; `None` once closed.
    pub(crate) fn get_or_open(&self, open: impl FnOnce() -> T) -> Option<T> {
        let mut slot = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*slot {
            Slot::Open(pool) => Some(pool.clone()),
            Slot::Closed => None,
            Slot::Empty => {
                let pool = open();
                *slot = Slot::Open(pool.clone());
                Some(pool)
            }
        }
    }

    /// Takes the pool out for closing; later connects get `None`.
    pub(crate) fn close(&self) -> Option<T> {
        let mut slot = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match std::mem::replace(&mut *slot, Slot::Closed) {
            Slot::Open(pool) => Some(pool),
            Slot::Empty | Slot::Closed => None,
        }
    }
}

/// The link between callers and the actor: its state, published for lock-free reads.
enum LinkState<C> {
    /// A connect attempt is running; it ends by `until` at the latest.
    Connecting { until: Instant },
    /// Usable. `generation` tells a stale loss report from a current one.
    Connected { client: C, generation: u64 },
    /// Waiting; the next attempt starts at `until`.
    Backoff { until: Instant },
    /// Shut down or dead.
    Stopped,
}

/// Everything a call needs, shared between the actor and the futures it hands out.
pub(crate) struct Link<C> {
    database: Database,
    state: ArcSwap<LinkState<C>>,
    board: Arc<CircuitBoard>,
    breaker: Addr<BreakerActor>,
    retry: RetrySettings,
    jitter: f64,
    query_timeout: Duration,
    /// Weak: a call must not keep the actor's mailbox open (the actor's own timers keep the
    /// actor alive until an orderly [`Shutdown`]).
    owner: OnceLock<WeakRecipient<ConnectionLost>>,
    /// One permit per pooled connection. Waiting for one is the acquire phase: bounded by the
    /// call's deadline, reported as `Timeout { phase: Acquire }`, which a busy pool earns
    /// without counting against the database's circuit.
    permits: tokio::sync::Semaphore,
    in_flight: AtomicUsize,
    idle: Notify,
}

/// A call's admission: the client to use, the generation it belongs to, its deadline and its
/// place in the in-flight count. A call counts as in flight, and its `query_timeout` runs,
/// from the moment it is admitted, not from when its future first runs on an I/O thread: a
/// shutdown drain must not close the pool under a call that is still queued.
pub(crate) struct Admitted<C> {
    client: C,
    generation: u64,
    deadline: Instant,
    in_flight: InFlight<C>,
}

impl<C: Clone + 'static> Admitted<C> {
    /// The client the first attempt will use.
    pub(crate) fn client(&self) -> &C {
        &self.client
    }

    /// When the call's `query_timeout` runs out.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Runs the call: up to `retry.max_attempts` attempts with jittered backoff between them,
    /// all inside `query_timeout`, the first on this admission, retries admitted again.
    /// `attempt` gets the current client each time. Only retry-safe failures are retried (see
    /// [`Failed`]). The breaker hears one outcome per call, not one per attempt.
    pub(crate) async fn call<T, F, Fut>(self, mut attempt: F) -> Result<T, WardenError>
    where
        F: FnMut(C) -> Fut,
        Fut: Future<Output = Result<T, Failed>>,
    {
        let Admitted {
            client,
            generation,
            deadline,
            in_flight,
        } = self;
        let link = &in_flight.0;
        let result = link
            .attempts((client, generation), deadline, &mut attempt)
            .await;
        match &result {
            Ok(_) => link.report(None),
            Err(e) if e.counts_against_circuit() => link.report(Some(e)),
            Err(_) => {}
        }
        result
    }
}

/// Counts a call in flight for the shutdown drain, until dropped (also when the call's future
/// is dropped before it ever ran).
struct InFlight<C>(Arc<Link<C>>);

impl<C> Drop for InFlight<C> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl<C: Clone + 'static> Link<C> {
    fn new(
        database: Database,
        board: Arc<CircuitBoard>,
        breaker: Addr<BreakerActor>,
        retry: RetrySettings,
        jitter: f64,
        timings: Timings,
    ) -> Self {
        Self {
            database,
            state: ArcSwap::from_pointee(LinkState::Connecting {
                until: Instant::now(),
            }),
            board,
            breaker,
            retry,
            jitter,
            query_timeout: timings.query_timeout,
            owner: OnceLock::new(),
            permits: tokio::sync::Semaphore::new(timings.call_slots.max(1)),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
        }
    }

    async fn attempts<T, F, Fut>(
        &self,
        first: (C, u64),
        deadline: Instant,
        attempt: &mut F,
    ) -> Result<T, WardenError>
    where
        F: FnMut(C) -> Fut,
        Fut: Future<Output = Result<T, Failed>>,
    {
        let mut schedule = Backoff::retry(&self.retry, self.jitter);
        let mut tries = 0;
        let mut last_error: Option<WardenError> = None;
        let mut first = Some(first);
        loop {
            tries += 1;
            // The first attempt uses the handler's admission; retries ask again.
            let admission = match first.take() {
                Some(admitted) => Ok(admitted),
                None => self.admit(),
            };
            let (client, generation) = match (admission, last_error) {
                (Ok(admitted), _) => admitted,
                // A retry refused because the failure took the connection down: the failure
                // itself says more than "unavailable".
                (Err(_), Some(previous)) => return Err(previous),
                (Err(refused), None) => return Err(refused),
            };
            // One timer for both phases of the attempt; `phase` says which one it ran out in.
            let remaining = deadline.saturating_duration_since(Instant::now());
            let mut phase = TimeoutPhase::Acquire;
            let outcome = tokio::time::timeout(remaining, async {
                // The semaphore is never closed; waiting here means every slot is busy.
                let _permit = self.permits.acquire().await;
                phase = TimeoutPhase::Query;
                attempt(client).await
            })
            .await;
            let failed = match outcome {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(failed)) => failed,
                // The whole budget is spent: no retry can fit any more.
                Err(_) => {
                    return Err(WardenError::Timeout {
                        database: self.database,
                        phase,
                        after: self.query_timeout,
                    })
                }
            };
            if failed.error.is_connection_loss() {
                if let Some(owner) = self.owner.get().and_then(WeakRecipient::upgrade) {
                    owner.do_send(ConnectionLost { generation });
                }
            }
            if !failed.retry_safe() || tries >= self.retry.max_attempts {
                return Err(failed.error);
            }
            let delay = schedule.next_delay(&mut rand::rng());
            if Instant::now() + delay >= deadline {
                return Err(failed.error);
            }
            tracing::info!(
                database = %self.database,
                attempt = tries,
                delay_ms = delay.as_millis() as u64,
                error = %failed.error,
                "retrying call"
            );
            tokio::time::sleep(delay).await;
            last_error = Some(failed.error);
        }
    }

    /// Admits a call, or refuses it at once (an open circuit, no connection), so that a
    /// handler can answer a refusal without starting anything. The admission is the first
    /// attempt's, so the common path checks the circuit and the link once.
    ///
    /// A handle admits calls on its caller's thread, while the actor may be shutting down on
    /// the arbiter. So an admitted call is counted, then the state is read again, and
    /// [`Shutdown`] stores `Stopped` before it reads the count, each with a full fence in
    /// between: either this admission sees `Stopped`, or the drain sees the call and waits for
    /// it. Refusals are never counted.
    pub(crate) fn admit_call(self: &Arc<Self>) -> Result<Admitted<C>, WardenError> {
        let (client, generation) = self.admit()?;
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let in_flight = InFlight(Arc::clone(self));
        std::sync::atomic::fence(Ordering::SeqCst);
        if matches!(**self.state.load(), LinkState::Stopped) {
            // The guard drops: the call is uncounted again.
            return Err(WardenError::Stopped {
                database: self.database,
            });
        }
        Ok(Admitted {
            client,
            generation,
            deadline: Instant::now() + self.query_timeout,
            in_flight,
        })
    }

    /// The client and generation for an attempt, or one of the refusals that cost nothing.
    fn admit(&self) -> Result<(C, u64), WardenError> {
        self.admit_with(|client, generation| (client.clone(), generation))
    }

    /// The refusals that cost nothing: stopped for good, no connection, an open circuit. A
    /// lost connection is the actor's to report (`Unavailable`, with the time of its next
    /// attempt), so it comes before the circuit: the circuit may have opened from the calls
    /// that failed as the connection went, and says nothing about when calls can flow again
    /// (the reconnect closes it).
    fn admit_with<R>(&self, admitted: impl FnOnce(&C, u64) -> R) -> Result<R, WardenError> {
        let now = Instant::now();
        let state = self.state.load();
        let (client, generation) = match &**state {
            LinkState::Connected { client, generation } => (client, *generation),
            LinkState::Connecting { until } | LinkState::Backoff { until } => {
                return Err(WardenError::Unavailable {
                    database: self.database,
                    retry_after: until.saturating_duration_since(now),
                })
            }
            LinkState::Stopped => {
                return Err(WardenError::Stopped {
                    database: self.database,
                })
            }
        };
        if let Err(retry_after) = self.board.get(self.database).check(now) {
            return Err(WardenError::CircuitOpen {
                database: self.database,
                retry_after,
            });
        }
        Ok(admitted(client, generation))
    }

    /// Records a call's outcome on the board (`failure`: what it failed with). Only the call
    /// whose failure fills the window sends the breaker a message, so a storm of failing calls
    /// never grows a mailbox; a success with a clean window costs one atomic load.
    fn report(&self, failure: Option<&WardenError>) {
        if self.board.record_call(self.database, failure.is_some()) {
            self.breaker.do_send(Trip {
                database: self.database,
                cause: failure.map(ToString::to_string).unwrap_or_default(),
            });
        }
    }

    /// Calls in flight right now.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    async fn drained(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.idle.notified();
                if self.in_flight() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

/// A database actor's answer to a call: known at once (a refusal by the circuit or the link
/// state), sent back without spawning anything, or a future that runs by itself, detached
/// from the actor's context (so a restart cannot drop it), on the runtime its driver runs
/// calls on. Refusals are the path that must stay cheap while a database is down. The future
/// sends the answer itself: it goes straight back to the caller, not through the actor again.
pub enum Reply<T> {
    /// The answer, now.
    Now(T),
    /// The answer, later, from a future on the database's own I/O threads.
    Spawned(tokio::runtime::Handle, BoxFuture<'static, T>),
}

impl<A, M, T> actix::dev::MessageResponse<A, M> for Reply<T>
where
    A: Actor,
    M: Message<Result = T>,
    T: Send + 'static,
{
    fn handle(self, _: &mut A::Context, tx: Option<actix::dev::OneshotSender<T>>) {
        // A caller that stopped waiting has dropped its receiver: nobody to tell.
        let answer = |value| {
            if let Some(tx) = tx {
                let _ = tx.send(value);
            }
        };
        match self {
            Reply::Now(value) => answer(value),
            Reply::Spawned(runtime, fut) => {
                runtime.spawn(async move { answer(fut.await) });
            }
        }
    }
}

/// Told by a call that the connection may be broken; the actor probes at once.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct ConnectionLost {
    generation: u64,
}

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

/// Where the actor is in its lifecycle.
enum Phase<P> {
    /// A connect attempt is running.
    Connecting,
    /// Connected; `probe` is this generation's own connection.
    Connected { probe: P },
    /// Waiting out a backoff delay; `restart` is the timer that stops the actor so that its
    /// supervisor restarts it.
    Backoff { restart: SpawnHandle },
    /// Shut down in order: nothing runs any more.
    Stopped,
}

/// A supervised actor that keeps one database alive. See the module docs.
pub struct ConnectionActor<D: Driver> {
    driver: D,
    link: Arc<Link<D::Client>>,
    phase: Phase<D::Probe>,
    health: Addr<HealthActor>,
    breaker: Addr<BreakerActor>,
    backoff: Backoff,
    report: ComponentReport,
    generation: u64,
    probe_in_flight: bool,
    fatal: FatalSender,
}

impl<D: Driver> ConnectionActor<D> {
    /// An actor for `driver`; start it with `Supervisor::start_in_arbiter`.
    pub(crate) fn new(
        driver: D,
        backoff: &BackoffSettings,
        retry: &RetrySettings,
        board: Arc<CircuitBoard>,
        breaker: Addr<BreakerActor>,
        health: Addr<HealthActor>,
        fatal: FatalSender,
    ) -> Self {
        let timings = driver.timings();
        let link = Arc::new(Link::new(
            D::DATABASE,
            board,
            breaker.clone(),
            *retry,
            backoff.jitter,
            timings,
        ));
        Self {
            driver,
            link,
            phase: Phase::Connecting,
            health,
            breaker,
            backoff: Backoff::reconnect(backoff),
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

    fn set_state(&mut self, state: ConnState) {
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
        self.phase = Phase::Connecting;
        self.link.state.store(Arc::new(LinkState::Connecting {
            until: Instant::now() + timings.connect_timeout,
        }));
        self.set_state(ConnState::Connecting);
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
        if !matches!(self.phase, Phase::Connecting) {
            return;
        }
        self.backoff.reset();
        self.phase = Phase::Connected { probe };
        self.link.state.store(Arc::new(LinkState::Connected {
            client,
            generation: self.generation,
        }));
        self.report.latency = Some(latency);
        self.report.last_ok_at = Some(Utc::now());
        self.report.last_error = None;
        self.report.consecutive_failures = 0;
        // Whatever failed before came from a connection that is gone.
        self.breaker.do_send(Reconnected(D::DATABASE));
        self.set_state(ConnState::Connected);
    }

    /// A connect or a probe failed: drop this generation's probe connection, refuse calls,
    /// and restart after the next backoff delay.
    fn on_failure(&mut self, err: WardenError, ctx: &mut Context<Self>) {
        if !matches!(self.phase, Phase::Connecting | Phase::Connected { .. }) {
            return;
        }
        let delay = self.backoff.next_delay(&mut rand::rng());
        let until = Instant::now() + delay;
        self.link
            .state
            .store(Arc::new(LinkState::Backoff { until }));
        // The supervisor restarts the actor when it stops; started() connects again. The old
        // probe connection is dropped here, before the next one opens.
        self.phase = Phase::Backoff {
            restart: ctx.run_later(delay, |_, ctx| ctx.stop()),
        };
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
        self.set_state(ConnState::Backoff);
    }

    /// Every probe interval: probe when connected, else tell health we are alive, so that it
    /// does not call us stale while we back off.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        match self.phase {
            Phase::Connected { .. } => self.probe(ctx),
            Phase::Connecting | Phase::Backoff { .. } => self.push_health(),
            Phase::Stopped => {}
        }
    }

    fn probe(&mut self, ctx: &mut Context<Self>) {
        let Phase::Connected { probe } = &self.phase else {
            return;
        };
        if self.probe_in_flight {
            return;
        }
        self.probe_in_flight = true;
        let timeout = self.driver.timings().probe_timeout;
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
        ctx.run_interval(self.driver.timings().probe_interval, |act, ctx| {
            act.tick(ctx)
        });
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
        self.link.state.store(Arc::new(LinkState::Stopped));
        self.report.state = ConnState::Stopped;
        self.report.last_error = Some(reason.clone());
        self.push_health();
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
        if let Phase::Backoff { restart } = self.phase {
            ctx.cancel_future(restart);
        }
        self.phase = Phase::Stopped;
        self.link.state.store(Arc::new(LinkState::Stopped));
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
        Box::pin(fut.into_actor(self).map(|_, act, _| {
            act.report.state = ConnState::Stopped;
            act.report.next_attempt_at = None;
            act.push_health();
            tracing::info!(database = %D::DATABASE, "connection closed");
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn_error() -> WardenError {
        WardenError::Connection {
            database: Database::Postgres,
            message: "reset".into(),
        }
    }

    fn deadlock() -> WardenError {
        WardenError::Query {
            database: Database::Postgres,
            code: "40P01".into(),
            message: "deadlock".into(),
            transient: true,
        }
    }

    #[test]
    fn only_attempts_that_cannot_run_twice_are_retried() {
        // Nothing reached the server: any transient failure may be retried.
        assert!(Failed::before_send(conn_error()).retry_safe());
        // A statement that may have run is retried only if the server rolled it back.
        assert!(!Failed::after_send(conn_error()).retry_safe());
        assert!(Failed::after_send(deadlock()).retry_safe());
        // A caller's closure may have committed earlier statements: never retried.
        assert!(!Failed::opaque(deadlock()).retry_safe());
        assert!(!Failed::opaque(conn_error()).retry_safe());
        // Not transient: never retried.
        let syntax = WardenError::Query {
            database: Database::Postgres,
            code: "42601".into(),
            message: "syntax".into(),
            transient: false,
        };
        assert!(!Failed::before_send(syntax).retry_safe());
    }

    /// A link with one call slot and a 200 ms call deadline, fed to a real breaker.
    fn one_slot_link() -> Arc<Link<()>> {
        let circuit = crate::Circuit::new(5, Duration::from_secs(30), Duration::from_secs(1));
        let board = Arc::new(CircuitBoard::new(circuit, circuit));
        let health = HealthActor::new(
            &[(Database::Postgres, Duration::from_secs(1), circuit)],
            board.clone(),
        );
        let breaker = BreakerActor::new(board, health.start());
        let board = breaker.board();
        let timings = Timings {
            connect_timeout: Duration::from_secs(1),
            query_timeout: Duration::from_millis(200),
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(1),
            call_slots: 1,
        };
        let link = Arc::new(Link::new(
            Database::Postgres,
            board,
            breaker.start(),
            RetrySettings::default(),
            0.0,
            timings,
        ));
        link.state.store(Arc::new(LinkState::Connected {
            client: (),
            generation: 1,
        }));
        link
    }

    /// The phase a `Timeout` ran out in; `None` for any other error.
    fn timeout_phase(err: &WardenError) -> Option<TimeoutPhase> {
        match err {
            WardenError::Timeout { phase, .. } => Some(*phase),
            _ => None,
        }
    }

    #[actix::test]
    async fn a_timeout_says_whether_the_slot_or_the_statement_ran_out() {
        let link = one_slot_link();
        // Every slot busy for longer than the deadline: the acquire phase ran out.
        let held = link.permits.acquire().await.unwrap();
        let started = Instant::now();
        let err = link
            .admit_call()
            .unwrap()
            .call(|()| async { Ok::<_, Failed>(()) })
            .await
            .unwrap_err();
        assert_eq!(timeout_phase(&err), Some(TimeoutPhase::Acquire), "{err:?}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        drop(held);

        // A slot at once, then a statement slower than the deadline: the query phase.
        let err = link
            .admit_call()
            .unwrap()
            .call(|()| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok::<_, Failed>(())
            })
            .await
            .unwrap_err();
        assert_eq!(timeout_phase(&err), Some(TimeoutPhase::Query), "{err:?}");
        // The slot is free again once the call has ended, and nothing counts as in flight.
        assert_eq!(link.permits.available_permits(), 1);
        assert_eq!(link.in_flight(), 0);

        // An admitted call counts as in flight before it runs, and stops counting when it is
        // dropped without ever running (a runtime that shut down drops it unpolled).
        let admitted = link.admit_call().unwrap();
        assert_eq!(link.in_flight(), 1);
        drop(admitted);
        assert_eq!(link.in_flight(), 0);
    }

    #[test]
    fn a_pool_slot_opens_once_and_stays_closed() {
        let slot = PoolSlot::new();
        assert_eq!(slot.get_or_open(|| 1), Some(1));
        assert_eq!(slot.get_or_open(|| 2), Some(1));
        assert_eq!(slot.close(), Some(1));
        assert_eq!(slot.get_or_open(|| 3), None);
        assert_eq!(slot.close(), None);
    }
}
