//! warden-actors: supervised Neo4j and PostgreSQL connections, a circuit breaker per database,
//! and a health aggregate, as actix actors an application can embed without the daemon.
//!
//! # Layout
//! - [`connection`]: the supervised connection actor both database actors are made of
//!   (connect, probe, back off, restart; calls that never queue behind each other).
//! - [`postgres`] / [`neo4j`]: each driver with its messages ([`Sql`], [`Transaction`];
//!   [`Cypher`], [`CypherTransaction`]), its error classification and its row conversion;
//!   [`rows`]: the result shape both share.
//! - [`call`]: [`Call`], the messages that run on a database's own I/O threads once admitted.
//! - [`call_runtime`]: where calls run (warden's I/O threads, or the application's runtime)
//!   and the future a caller awaits; [`builder`]: [`WardenBuilder`], to host calls on the
//!   application's own tokio runtime.
//! - [`breaker`]: [`BreakerActor`], over the pure state machine in [`circuit`].
//! - [`health`]: [`HealthActor`] and the snapshot HTTP workers read without a mailbox;
//!   [`graph_sync`]: its component for the graph projection.
//! - [`projection`]: [`ProjectorActor`], which applies the catalog's outbox to the graph.
//! - [`heartbeat`]: [`Warden::heartbeat`], proof that every actor's mailbox drains (for a
//!   service manager's watchdog).
//! - [`backoff`]: the pure exponential backoff schedule.
//! - [`metrics`]: [`Metrics`], the Prometheus registry a [`Warden`] owns: calls, probes and
//!   circuit transitions recorded without a lock, states read from health at scrape time.
//! - [`handle`]: [`CallHandle`], which answers a database actor's refusals (open circuit, no
//!   connection) on the caller's thread, without a mailbox, and starts calls on the database's
//!   I/O threads without the actor.
//! - [`runtime`]: the settings that change while warden runs, from PostgreSQL's `config`
//!   table.
//! - [`warden`]: [`Warden`], which starts the four actors and shuts them down.
//! - [`catalog`]: recordings, metadata and tracklists in PostgreSQL, each write with its
//!   graph outbox event ([`catalog::Catalog`], from [`Warden::catalog`]).
//! - [`settings`], [`error`], [`secret`], [`params`]: configuration, the error callers see,
//!   redaction, parameter bounds.
//!
//! # Use
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use warden_actors::{Sql, Warden, WardenSettings};
//! let warden = Warden::start(WardenSettings::default())?;
//! let rows = warden.postgres.send(Sql::new("SELECT $1::int AS n").bind(7)).await??;
//! assert_eq!(rows[0]["n"], 7);
//! // The same message through a handle: refused without a mailbox round trip while the
//! // database is down or its circuit open, and one `?` for every error.
//! let postgres = warden.postgres_handle();
//! let rows = postgres.send(Sql::new("SELECT 2 AS n")).await?;
//! assert_eq!(rows[0]["n"], 2);
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod backoff;
pub mod breaker;
pub mod builder;
pub mod call;
pub mod call_runtime;
pub mod catalog;
pub mod circuit;
pub mod connection;
pub mod error;
pub mod faults;
pub mod graph_sync;
pub(crate) mod guard;
pub mod handle;
pub mod health;
pub mod heartbeat;
pub(crate) mod io;
pub mod metrics;
pub mod neo4j;
pub mod params;
pub mod postgres;
pub mod projection;
pub mod rows;
pub mod runtime;
pub mod secret;
pub mod settings;
pub mod timestamp;
pub mod warden;

pub use crate::{
    breaker::BreakerActor,
    builder::WardenBuilder,
    call::Call,
    call_runtime::CallRuntime,
    circuit::Circuit,
    connection::Shutdown,
    error::{Database, TimeoutPhase, WardenError},
    handle::{CallHandle, Neo4jHandle, PostgresHandle},
    health::{GetHealth, HealthActor, HealthHandle, HealthView},
    metrics::Metrics,
    neo4j::transaction::CypherTransaction,
    neo4j::{Cypher, Neo4jActor, WithGraph},
    postgres::transaction::{Isolation, Transaction, WithTransaction},
    postgres::{PostgresActor, Sql, WithPool},
    projection::{ProjectionSettings, ProjectorActor},
    rows::Rows,
    secret::Secret,
    settings::{SettingsError, WardenSettings},
    warden::Warden,
};
