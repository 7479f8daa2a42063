//! A scripted [`Driver`] and the lifecycle tests it makes possible: the real
//! [`ConnectionActor`] under its real `Supervisor`, on tokio's paused clock, so that every
//! connect, probe, backoff delay and restart is counted and timed exactly, with no server and
//! no waiting.

use std::{cell::RefCell, collections::VecDeque, rc::Rc, time::Duration};

// The paused clock is tokio's: std's `Instant` goes on at its own pace.
use tokio::time::Instant;

use futures_util::future::LocalBoxFuture;

use crate::{
    connection::{ConnectFuture, Driver, Timings},
    error::{Database, WardenError},
};

/// What the fake server does, shared between the test and the driver.
#[derive(Default)]
pub(crate) struct Script {
    /// Results of the next connects, in order; `Ok` once exhausted.
    pub connects: VecDeque<Result<(), WardenError>>,
    /// Results of the next probes, in order; `Ok` once exhausted.
    pub probes: VecDeque<Result<(), WardenError>>,
    /// When each connect started (on the paused clock).
    pub connected_at: Vec<Instant>,
    /// Probes run so far.
    pub probes_run: u32,
    /// Times the pool was closed.
    pub closed: u32,
}

/// A driver that answers from a [`Script`].
pub(crate) struct FakeDriver {
    pub script: Rc<RefCell<Script>>,
    pub timings: Timings,
}

pub(crate) fn refused() -> WardenError {
    WardenError::Connection {
        database: Database::Postgres,
        message: "connection refused".into(),
    }
}

impl Driver for FakeDriver {
    type Client = ();
    type Probe = ();
    const DATABASE: Database = Database::Postgres;

    fn timings(&self) -> Timings {
        self.timings
    }

    fn connect(&self) -> ConnectFuture<(), ()> {
        let mut script = self.script.borrow_mut();
        script.connected_at.push(Instant::now());
        let result = script.connects.pop_front().unwrap_or(Ok(()));
        Box::pin(async move { result.map(|()| ((), ())) })
    }

    fn probe(&self, _: &()) -> LocalBoxFuture<'static, Result<(), WardenError>> {
        let mut script = self.script.borrow_mut();
        script.probes_run += 1;
        let result = script.probes.pop_front().unwrap_or(Ok(()));
        Box::pin(async move { result })
    }

    fn close(&self) -> LocalBoxFuture<'static, ()> {
        self.script.borrow_mut().closed += 1;
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use actix::prelude::*;

    use super::*;
    use crate::{
        breaker::CircuitBoard,
        connection::{ConnectionActor, Shutdown},
        health::{ComponentStatus, HealthActor, HealthHandle},
        settings::{BackoffSettings, RetrySettings},
        BreakerActor, Circuit,
    };

    const PROBE_INTERVAL: Duration = Duration::from_secs(2);

    struct Harness {
        script: Rc<RefCell<Script>>,
        actor: Addr<ConnectionActor<FakeDriver>>,
        health: HealthHandle,
        fatal: tokio::sync::watch::Receiver<Option<String>>,
    }

    /// The actor under its supervisor, with backoff 1 s doubling to 8 s and no jitter.
    fn start(script: Script) -> Harness {
        tokio::time::pause();
        let script = Rc::new(RefCell::new(script));
        let circuit = Circuit::new(5, Duration::from_secs(30), PROBE_INTERVAL);
        let board = Arc::new(CircuitBoard::new(circuit, circuit));
        let health = HealthActor::new(
            &[(Database::Postgres, PROBE_INTERVAL, circuit)],
            board.clone(),
        );
        let health_handle = health.handle();
        let health = health.start();
        let breaker = BreakerActor::new(board.clone(), health.clone()).start();
        let (fatal_tx, fatal) = tokio::sync::watch::channel(None);
        let backoff = BackoffSettings {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(8),
            multiplier: 2.0,
            jitter: 0.0,
        };
        let driver = FakeDriver {
            script: script.clone(),
            timings: Timings {
                connect_timeout: Duration::from_secs(1),
                query_timeout: Duration::from_secs(1),
                probe_interval: PROBE_INTERVAL,
                probe_timeout: Duration::from_secs(1),
                call_slots: 1,
            },
        };
        let actor = ConnectionActor::new(
            driver,
            &backoff,
            &RetrySettings::default(),
            board,
            breaker,
            health,
            Arc::new(fatal_tx),
            crate::metrics::DatabaseMetrics::detached(),
        );
        let actor = Supervisor::start(move |_| actor);
        Harness {
            script,
            actor,
            health: health_handle,
            fatal,
        }
    }

    /// Lets the paused clock run `d` (timers fire in order, as they would in real time).
    async fn run_for(d: Duration) {
        tokio::time::sleep(d).await;
    }

    fn gaps(times: &[Instant]) -> Vec<Duration> {
        times.windows(2).map(|w| w[1] - w[0]).collect()
    }

    #[actix::test]
    async fn failed_connects_back_off_exactly_and_restart_once_each() {
        let h = start(Script {
            connects: VecDeque::from([Err(refused()), Err(refused()), Err(refused())]),
            ..Script::default()
        });
        run_for(Duration::from_secs(20)).await;
        let view = h.health.view().components[&Database::Postgres].clone();
        assert_eq!(view.status, ComponentStatus::Connected, "{view:?}");
        assert_eq!(view.restarts, 3, "one restart per failed connect");
        let script = h.script.borrow();
        assert_eq!(script.connected_at.len(), 4);
        // 1 s, 2 s, 4 s: the schedule to the millisecond (the paused clock does not drift).
        let gaps = gaps(&script.connected_at);
        let want = [1, 2, 4].map(Duration::from_secs);
        for (gap, want) in gaps.iter().zip(want) {
            assert!(
                *gap >= want && *gap - want < Duration::from_millis(5),
                "{gaps:?}"
            );
        }
        assert!(h.fatal.borrow().is_none());
    }

    #[actix::test]
    async fn a_failed_probe_reconnects_after_the_first_delay_and_probing_resumes() {
        let h = start(Script {
            probes: VecDeque::from([Ok(()), Err(refused())]),
            ..Script::default()
        });
        // Probes at 2 s (ok) and 4 s (fails), reconnect at 5 s, probes again from 7 s.
        run_for(Duration::from_millis(4_500)).await;
        assert_eq!(
            h.health.view().components[&Database::Postgres].status,
            ComponentStatus::Backoff
        );
        run_for(Duration::from_millis(4_000)).await;
        let view = h.health.view().components[&Database::Postgres].clone();
        assert_eq!(view.status, ComponentStatus::Connected);
        assert_eq!(view.restarts, 1);
        let script = h.script.borrow();
        assert_eq!(script.connected_at.len(), 2);
        let gap = gaps(&script.connected_at)[0];
        assert!(
            gap >= Duration::from_secs(5) && gap < Duration::from_millis(5_010),
            "{gap:?}"
        );
        assert!(
            script.probes_run >= 3,
            "probing resumed: {}",
            script.probes_run
        );
    }

    #[actix::test]
    async fn a_shutdown_during_backoff_cancels_the_restart_and_is_not_fatal() {
        let h = start(Script {
            connects: VecDeque::from([Err(refused())]),
            ..Script::default()
        });
        run_for(Duration::from_millis(300)).await;
        h.actor
            .send(Shutdown {
                timeout: Duration::from_secs(1),
            })
            .await
            .unwrap();
        run_for(Duration::from_secs(60)).await;
        let script = h.script.borrow();
        assert_eq!(
            script.connected_at.len(),
            1,
            "no connect after the shutdown"
        );
        assert_eq!(script.closed, 1);
        let view = h.health.view().components[&Database::Postgres].clone();
        assert_eq!((view.status, view.restarts), (ComponentStatus::Stopped, 0));
        assert!(h.fatal.borrow().is_none());
    }
}
