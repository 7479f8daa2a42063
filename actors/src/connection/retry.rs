//! Which failures may run again, and the attempts of one call inside its deadline.
//!
//! A statement that may have reached the server is not run again (a retried INSERT would run
//! twice) unless the server says it rolled it back and asks for a retry; a transaction warden
//! began and did not commit may run again when PostgreSQL rolled it back for a retry.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Instant,
};

use actix::WeakRecipient;

use super::link::{Admitted, ConnectionLost};
use crate::{
    backoff::Backoff,
    error::{TimeoutPhase, WardenError},
    metrics::Outcome,
};

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

impl<C: Clone + 'static> Admitted<C> {
    /// Runs the call: up to `retry.max_attempts` attempts with jittered backoff between them,
    /// all inside `query_timeout`, the first on this admission, retries admitted again.
    /// `attempt` gets the current client each time. Only retry-safe failures are retried (see
    /// [`Failed`]). The breaker hears one outcome per call, not one per attempt.
    ///
    /// One `async fn` with no inner async blocks, on purpose: a future is moved whole, however
    /// little of it has run, so every layer of nesting costs a copy of everything under it on
    /// each call (see `PgShared::acquire`).
    pub(crate) async fn call<T, F, Fut>(self, mut attempt: F) -> Result<T, WardenError>
    where
        F: FnMut(C) -> Fut,
        Fut: Future<Output = Result<T, Failed>>,
    {
        let Admitted {
            client,
            generation,
            deadline,
            budget,
            max_attempts,
            in_flight,
        } = self;
        let link = &*in_flight.0;
        let timeout = |phase| WardenError::Timeout {
            database: link.database,
            phase,
            after: budget,
        };
        // Built at the first retry: most calls never need it.
        let mut schedule: Option<Backoff> = None;
        let mut tries = 0;
        let mut last_error: Option<WardenError> = None;
        let mut first = Some((client, generation));
        let result = loop {
            tries += 1;
            // The first attempt uses the handler's admission; retries ask again.
            let admission = match first.take() {
                Some(admitted) => Ok(admitted),
                None => link.admit(Instant::now()),
            };
            let (client, generation) = match (admission, last_error.take()) {
                (Ok(admitted), _) => admitted,
                // A retry refused because the failure took the connection down: the failure
                // itself says more than "unavailable".
                (Err(_), Some(previous)) => break Err(previous),
                (Err(refused), None) => break Err(refused),
            };
            // The acquire phase: a slot of the pool. A free one is taken without a timer or a
            // waiting future (the common case); waiting means every slot is busy, and running
            // out of time then is a busy pool, not a sick database.
            let held = match link.slots.try_hold() {
                Some(held) => held,
                None => match tokio::time::timeout_at(deadline.into(), link.slots.hold()).await {
                    Ok(held) => held,
                    Err(_) => break Err(timeout(TimeoutPhase::Acquire)),
                },
            };
            // The attempt, under the deadline the slot's watcher keeps (see `slots/`).
            let outcome = held.within(deadline, attempt(client)).await;
            drop(held);
            let failed = match outcome {
                Some(Ok(value)) => break Ok(value),
                Some(Err(failed)) => failed,
                // The whole budget is spent: no retry can fit any more.
                None => break Err(timeout(TimeoutPhase::Query)),
            };
            if failed.error.is_connection_loss() {
                if let Some(owner) = link.owner.get().and_then(WeakRecipient::upgrade) {
                    owner.do_send(ConnectionLost { generation });
                }
            }
            if !failed.retry_safe() || tries >= max_attempts {
                break Err(failed.error);
            }
            let delay = schedule
                .get_or_insert_with(|| {
                    let t = link.tunables.load();
                    Backoff::retry(&t.retry, t.backoff.jitter)
                })
                .next_delay(&mut rand::rng());
            if Instant::now() + delay >= deadline {
                break Err(failed.error);
            }
            tracing::info!(
                database = %link.database,
                attempt = tries,
                delay_ms = delay.as_millis() as u64,
                error = %failed.error,
                "retrying call"
            );
            tokio::time::sleep(delay).await;
            last_error = Some(failed.error);
        };
        match &result {
            Ok(_) => link.report(None),
            Err(e) if e.counts_against_circuit() => link.report(Some(e)),
            Err(_) => {}
        }
        // Admitted at `deadline - budget`: no clock read at admission just for this.
        let admitted_at = deadline.checked_sub(budget);
        link.metrics
            .call_ended(Outcome::of(&result), admitted_at.map(|at| at.elapsed()));
        result
    }
}

/// Set while a `COMMIT` is on the wire, so that a deadline running out then is reported as
/// [`WardenError::CommitOutcomeUnknown`] rather than a timeout a caller might retry. Shared by
/// PostgreSQL's transactions and the graph's.
#[derive(Clone, Default)]
pub(crate) struct Committing(Arc<AtomicBool>);

impl Committing {
    /// The call's error, with a timeout during `COMMIT` made into an unknown outcome.
    pub(crate) fn explain(&self, err: WardenError) -> WardenError {
        match err {
            WardenError::Timeout {
                database,
                phase: TimeoutPhase::Query,
                after,
            } if self.0.load(Ordering::Acquire) => WardenError::CommitOutcomeUnknown {
                database,
                message: format!(
                    "no answer to COMMIT within the call's {}ms",
                    after.as_millis()
                ),
            },
            other => other,
        }
    }

    /// Marks `COMMIT` as sent (`true`) or answered (`false`).
    pub(crate) fn set(&self, on: bool) {
        self.0.store(on, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Database;

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
}
