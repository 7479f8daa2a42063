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
//!
//! # Files
//! - `driver.rs`: what a database plugs in (connect, probe, close, timings) and the pool slot
//!   both drivers keep their shared pool in.
//! - `link.rs`: the lock-free link between callers and the actor: admission, the drain at
//!   shutdown, and the report of each call's outcome to the circuit board.
//! - `in_flight.rs`: the count of calls in flight the drain waits on, in per-thread stripes.
//! - `slots/`: the pool's call slots, and the deadlines of the calls in them, kept by one
//!   watcher task instead of a timer per call (`watcher.rs`); how many calls may be in them,
//!   counted without a lock while one is free (`permits.rs`).
//! - `retry.rs`: which failures may run again (how far an attempt got), and the attempts of a
//!   call inside its deadline.
//! - `reply.rs`: a handler's answer, now or from a future on the database's I/O threads.
//! - `actor.rs`: the supervised lifecycle: connect, probe, back off, restart, shut down.

mod actor;
mod driver;
#[cfg(test)]
pub(crate) mod fake;
mod in_flight;
mod link;
mod reply;
mod retry;
mod slots;

pub use actor::{ConnectionActor, FatalSender, Shutdown, MAILBOX_CAPACITY};
pub(crate) use driver::PoolSlot;
pub use driver::{ConnectFuture, Driver, Timings};
pub use link::ConnectionLost;
pub(crate) use link::{Admitted, Link};
pub use reply::Reply;
pub(crate) use retry::Committing;
pub use retry::{Failed, Reached};
