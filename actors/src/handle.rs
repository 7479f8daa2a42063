//! [`CallHandle`]: calls to a database actor without a round trip through its mailbox.
//!
//! A message to an actor's `Addr` is a round trip through its mailbox: the caller's thread
//! wakes the dedicated arbiter, the arbiter wakes the caller back. Each of those wake-ups has
//! cost from 8 to 48 µs on the 2-core VMs warden is measured on (the benchmark's "fast fail
//! floor" row measures the pair). While a database is down, every call would be such a round
//! trip for nothing but a refusal, and callers retrying in a loop would crowd the mailbox the
//! actor's probes and restarts go through.
//!
//! The actor admits or refuses a call from state it publishes for lock-free reads (its circuit
//! on the breaker's board, its connection state on the link). A handle reads the same state on
//! the caller's own thread, with the same code: a refusal (stopped, open circuit, no
//! connection) is answered there, ready on first poll; an admitted call is spawned onto the
//! database's I/O threads (see `call.rs`), which answer the caller directly, or, when the
//! application hosts the pools on its own runtime, runs inside the caller's task (see
//! `call_runtime.rs`). The arbiter never hears of either.

use std::{future::Future, sync::Arc};

use actix::prelude::*;
use futures_util::future::Either;

use crate::{
    call::{sealed::Start, Call, IoClient},
    connection::{ConnectionActor, Driver, Link},
    neo4j::Neo4jDriver,
    postgres::PgDriver,
    WardenError,
};

/// A cheap, cloneable way to call one database actor from any thread. `send` takes the same
/// call messages as the actor's `Addr`, answers the refusals the actor would answer at once
/// without a mailbox round trip, starts admitted calls without the actor, and answers
/// [`WardenError::Stopped`] once the actor is gone.
pub struct CallHandle<D: Driver> {
    addr: Addr<ConnectionActor<D>>,
    link: Arc<Link<D::Client>>,
}

/// Calls to PostgreSQL: send it [`Sql`](crate::Sql), [`WithPool`](crate::WithPool),
/// [`Transaction`](crate::Transaction) or [`WithTransaction`](crate::WithTransaction).
pub type PostgresHandle = CallHandle<PgDriver>;

/// Calls to the graph database: send it [`Cypher`](crate::Cypher),
/// [`WithGraph`](crate::WithGraph) or [`CypherTransaction`](crate::CypherTransaction).
pub type Neo4jHandle = CallHandle<Neo4jDriver>;

impl<D: Driver> Clone for CallHandle<D> {
    fn clone(&self) -> Self {
        Self {
            addr: self.addr.clone(),
            link: Arc::clone(&self.link),
        }
    }
}

impl<D: Driver> CallHandle<D> {
    pub(crate) fn new(addr: Addr<ConnectionActor<D>>, link: Arc<Link<D::Client>>) -> Self {
        Self { addr, link }
    }

    /// The actor's address, for messages that are not calls (such as `Shutdown`).
    pub fn addr(&self) -> &Addr<ConnectionActor<D>> {
        &self.addr
    }

    /// Admits the call here and runs it on the database's call runtime, exactly as the actor
    /// would, or refuses it at once (`Stopped`, `CircuitOpen`, `Unavailable`, with the
    /// `retry_after` the actor would give): then the future is ready on its first poll.
    ///
    /// On warden's own I/O threads (the default), the call starts when this is called, like
    /// `Addr::send`. On a runtime the application hosts the pools on
    /// ([`WardenBuilder::call_runtime`](crate::WardenBuilder::call_runtime)), a future awaited
    /// there runs the call inside the awaiting task (no thread hand-off), from its first poll;
    /// awaited anywhere else, the call is spawned there. Either way its deadline runs from
    /// admission (here), dropping the future stops waiting, not the call, and a call whose
    /// runtime has shut down ends with [`WardenError::CallRuntimeGone`] (or `Stopped`).
    /// A panic inside a [`WithPool`](crate::WithPool) or [`WithGraph`](crate::WithGraph)
    /// closure resumes in the awaiting task (through the address, the caller gets a
    /// `MailboxError` instead).
    pub fn send<M: Call<D>>(
        &self,
        msg: M,
    ) -> impl Future<Output = Result<M::Output, WardenError>> + 'static
    where
        D::Client: IoClient,
    {
        // `Either`, not an `async` block around `started?.await`: that would be one more
        // state machine for the call to be moved into and polled through, on every call.
        match self.link.admit_call() {
            Ok(admitted) => {
                let runtime = admitted.client().io().clone();
                Either::Right(runtime.run(Start::start(msg, admitted), D::DATABASE))
            }
            Err(refused) => Either::Left(std::future::ready(Err(refused))),
        }
    }
}
