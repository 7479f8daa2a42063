//! [`CallHandle`]: calls to a database actor that are refused where the caller is.
//!
//! A message to an actor's `Addr` is a round trip through its mailbox: the caller's thread
//! wakes the dedicated arbiter, the arbiter wakes the caller back. On a busy 2-core VM each of
//! those wake-ups has cost from 8 to 45 µs (the
//! benchmark's "fast fail floor" row measures the pair), and while a database is down every call is such a round
//! trip for nothing but a refusal. Callers that retry in a loop then also crowd the mailbox the
//! actor's probes and restarts go through.
//!
//! The actor refuses a call at once from state it publishes for lock-free reads (its circuit
//! on the breaker's board, its connection state on the link). A handle reads the same state
//! on the caller's own thread, with the same code, and answers those refusals there. Every call
//! that may run goes to the actor as the same message, which checks again (the state may have
//! changed in between) and runs it exactly as if it had been sent to the `Addr`.

use std::{future::Future, sync::Arc};

use actix::{dev::ToEnvelope, prelude::*};

use crate::{
    connection::{ConnectionActor, Driver, Link},
    neo4j::Neo4jDriver,
    postgres::PgDriver,
    WardenError,
};

/// A cheap, cloneable way to call one database actor from any thread: [`send`](Self::send)
/// takes the same messages as the actor's `Addr`, answers an open circuit, a missing
/// connection or a stopped actor without a mailbox round trip, and folds a closed mailbox into
/// [`WardenError::Stopped`].
pub struct CallHandle<D: Driver> {
    addr: Addr<ConnectionActor<D>>,
    link: Arc<Link<D::Client>>,
}

/// Calls to PostgreSQL: send it [`Sql`](crate::Sql) or [`WithPool`](crate::WithPool).
pub type PostgresHandle = CallHandle<PgDriver>;

/// Calls to the graph database: send it [`Cypher`](crate::Cypher) or
/// [`WithGraph`](crate::WithGraph).
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

    /// Sends `msg` to the actor, unless the actor would refuse it at once: then the returned
    /// future is ready with that refusal (`CircuitOpen`, `Unavailable` or `Stopped`, with the
    /// same `retry_after` the actor would give). Like `Addr::send`, the message is queued when
    /// this is called, not when the future is first polled.
    pub fn send<M, T>(&self, msg: M) -> impl Future<Output = Result<T, WardenError>> + 'static
    where
        ConnectionActor<D>: Handler<M>,
        <ConnectionActor<D> as Actor>::Context: ToEnvelope<ConnectionActor<D>, M>,
        M: Message<Result = Result<T, WardenError>> + Send + 'static,
        T: Send + 'static,
    {
        let request = match self.link.refusal() {
            Some(refused) => Err(refused),
            None => Ok(self.addr.send(msg)),
        };
        async move {
            match request {
                Err(refused) => Err(refused),
                Ok(request) => request.await.unwrap_or_else(|_| {
                    Err(WardenError::Stopped {
                        database: D::DATABASE,
                    })
                }),
            }
        }
    }

    /// The actor's address, for messages that are not calls (such as `Shutdown`).
    pub fn addr(&self) -> &Addr<ConnectionActor<D>> {
        &self.addr
    }
}
