//! The link between callers and the actor: its state, published for lock-free reads, the
//! admission of calls (by the actor's handlers or by a handle on the caller's thread), the
//! drain at shutdown, and the report of each call's outcome to the circuit board.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, OnceLock,
    },
    time::{Duration, Instant},
};

use actix::{prelude::*, WeakRecipient};
use arc_swap::ArcSwap;

use super::{driver::Timings, in_flight::InFlightCount, slots::Slots};
use crate::{
    breaker::{BreakerActor, CircuitBoard, Trip},
    error::{Database, WardenError},
    metrics::{DatabaseMetrics, Outcome},
    runtime::Tunables,
};

/// The link between callers and the actor: its state, published for lock-free reads.
pub(super) enum LinkState<C> {
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
///
/// Aligned to its own cache lines, like `PgShared`: every call clones and drops the `Arc` it
/// lives in, and the reference counts must not share a line with the state every admission
/// reads.
#[repr(align(128))]
pub(crate) struct Link<C> {
    pub(super) database: Database,
    pub(super) state: ArcSwap<LinkState<C>>,
    /// Set with the state `Stopped` by [`Link::publish`], never cleared: what an admission reads
    /// after counting itself in, instead of loading the state a second time.
    stopped: AtomicBool,
    pub(super) board: Arc<CircuitBoard>,
    pub(super) breaker: Addr<BreakerActor>,
    /// The retry policy and the call deadline in force, read at each call's admission.
    pub(super) tunables: Tunables,
    /// Weak: a call must not keep the actor's mailbox open (the actor's own timers keep the
    /// actor alive until an orderly [`Shutdown`]).
    pub(super) owner: OnceLock<WeakRecipient<ConnectionLost>>,
    /// One slot per pooled connection, with the deadline of the call in it. Waiting for one
    /// is the acquire phase: bounded by the call's deadline, reported as `Timeout { phase:
    /// Acquire }`, which a busy pool earns without counting against the database's circuit.
    pub(super) slots: Arc<Slots>,
    in_flight: InFlightCount,
    /// Where each call's outcome and duration are counted (atomic adds, no lock).
    pub(super) metrics: DatabaseMetrics,
}

/// A call's admission: the client to use, the generation it belongs to, its deadline and its
/// place in the in-flight count. A call counts as in flight, and its `query_timeout` runs,
/// from the moment it is admitted, not from when its future first runs on an I/O thread: a
/// shutdown drain must not close the pool under a call that is still queued.
pub(crate) struct Admitted<C> {
    pub(super) client: C,
    pub(super) generation: u64,
    pub(super) deadline: Instant,
    /// The `query_timeout` the deadline was set from, for the error that reports it.
    pub(super) budget: Duration,
    /// Attempts allowed in all (`retry.max_attempts` at admission).
    pub(super) max_attempts: u32,
    pub(super) in_flight: InFlight<C>,
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

    /// Ends an admitted call that cannot start (its parameters are out of bounds) with
    /// `refused`, counted as the call's outcome.
    pub(crate) fn refuse(self, refused: WardenError) -> WardenError {
        self.in_flight
            .0
            .metrics
            .call_ended(Outcome::of_error(&refused), None);
        refused
    }
}

/// Counts a call in flight for the shutdown drain, until dropped (also when the call's future
/// is dropped before it ever ran); the number is the stripe it was counted on.
pub(super) struct InFlight<C>(pub(super) Arc<Link<C>>, usize);

impl<C> Drop for InFlight<C> {
    fn drop(&mut self) {
        self.0.in_flight.leave(self.1);
    }
}

impl<C: Clone + 'static> Link<C> {
    pub(super) fn new(
        database: Database,
        board: Arc<CircuitBoard>,
        breaker: Addr<BreakerActor>,
        tunables: Tunables,
        timings: Timings,
        metrics: DatabaseMetrics,
    ) -> Self {
        Self {
            database,
            state: ArcSwap::from_pointee(LinkState::Connecting {
                until: Instant::now(),
            }),
            stopped: AtomicBool::new(false),
            board,
            breaker,
            tunables,
            owner: OnceLock::new(),
            slots: Arc::new(Slots::new(timings.call_slots)),
            in_flight: InFlightCount::default(),
            metrics,
        }
    }
    /// Admits a call, or refuses it at once (an open circuit, no connection), so that a
    /// handler can answer a refusal without starting anything. The admission is the first
    /// attempt's, so the common path checks the circuit and the link once.
    ///
    /// A handle admits calls on its caller's thread, while the actor may be shutting down on
    /// the arbiter. So an admitted call is counted, then reads whether the link has stopped,
    /// and [`Shutdown`] stops it before it reads the count, each with a full fence in between:
    /// either this admission sees the link stopped, or the drain sees the call and waits for
    /// it. Refusals are never counted.
    pub(crate) fn admit_call(self: &Arc<Self>) -> Result<Admitted<C>, WardenError> {
        // One clock read for the circuit's check and the deadline.
        let now = Instant::now();
        let (client, generation) = self.admit(now).inspect_err(|e| self.refused(e))?;
        let in_flight = InFlight(Arc::clone(self), self.in_flight.enter());
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.stopped.load(Ordering::Relaxed) {
            // The guard drops: the call is uncounted again.
            let stopped = WardenError::Stopped {
                database: self.database,
            };
            self.refused(&stopped);
            return Err(stopped);
        }
        // One read of the tunables on the common path: the deadline and the attempts allowed.
        // A retry's delays are read when the first retry comes (see `retry.rs`).
        let (budget, max_attempts) = {
            let t = self.tunables.load();
            (
                t.database(self.database).query_timeout,
                t.retry.max_attempts,
            )
        };
        Ok(Admitted {
            client,
            generation,
            deadline: now + budget,
            budget,
            max_attempts,
            in_flight,
        })
    }

    /// Counts a call refused at admission (not timed: it never started).
    fn refused(&self, e: &WardenError) {
        self.metrics.call_ended(Outcome::of_error(e), None);
    }

    /// The client and generation for an attempt at `now`, or one of the refusals that cost
    /// nothing: stopped for good, no connection, an open circuit. A lost connection is the
    /// actor's to report (`Unavailable`, with the time of its next attempt), so it comes
    /// before the circuit: the circuit may have opened from the calls that failed as the
    /// connection went, and says nothing about when calls can flow again (the reconnect
    /// closes it).
    pub(super) fn admit(&self, now: Instant) -> Result<(C, u64), WardenError> {
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
        if let Err(retry_after) = self.board.check(self.database, now) {
            return Err(WardenError::CircuitOpen {
                database: self.database,
                retry_after,
            });
        }
        Ok((client.clone(), generation))
    }

    /// Records a call's outcome on the board (`failure`: what it failed with). Only the call
    /// whose failure fills the window sends the breaker a message, so a storm of failing calls
    /// never grows a mailbox; a success with a clean window costs one atomic load.
    pub(super) fn report(&self, failure: Option<&WardenError>) {
        if self.board.record_call(self.database, failure.is_some()) {
            self.breaker.do_send(Trip {
                database: self.database,
                cause: failure.map(ToString::to_string).unwrap_or_default(),
            });
        }
    }

    /// Calls in flight right now.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.get()
    }

    /// Waits until no call is in flight, for at most `timeout`; whether none is.
    pub(super) async fn drained(&self, timeout: Duration) -> bool {
        self.in_flight.drained(timeout).await
    }

    /// Publishes `state`; `Stopped` is for good, and admissions see it through `stopped`.
    pub(super) fn publish(&self, state: LinkState<C>) {
        if matches!(state, LinkState::Stopped) {
            self.stopped.store(true, Ordering::Relaxed);
        }
        self.state.store(Arc::new(state));
    }
}

impl<C> Drop for Link<C> {
    /// The slots' watcher ends with the link.
    fn drop(&mut self) {
        self.slots.close();
    }
}

/// Told by a call that the connection may be broken; the actor probes at once.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct ConnectionLost {
    pub(super) generation: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::Failed;
    use crate::{error::TimeoutPhase, health::HealthActor};

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
            call_slots: 1,
        };
        let mut settings = crate::WardenSettings::default();
        settings.postgres.query_timeout = Duration::from_millis(200);
        settings.backoff.jitter = 0.0;
        let tunables = Tunables::new(crate::runtime::RuntimeSettings::of(&settings));
        let link = Arc::new(Link::new(
            Database::Postgres,
            board,
            breaker.start(),
            tunables,
            timings,
            crate::metrics::DatabaseMetrics::detached(),
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
        let held = link.slots.hold().await;
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
        assert_eq!(link.slots.available(), 1);
        assert_eq!(link.in_flight(), 0);

        // An admitted call counts as in flight before it runs, and stops counting when it is
        // dropped without ever running (a runtime that shut down drops it unpolled).
        let admitted = link.admit_call().unwrap();
        assert_eq!(link.in_flight(), 1);
        drop(admitted);
        assert_eq!(link.in_flight(), 0);
    }
}
