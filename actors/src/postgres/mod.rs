//! PostgresActor: a supervised sqlx pool, and the `Sql` message applications send it.
//!
//! A connect opens one connection, proves it with `SELECT 1`, runs the migrations on it, and
//! keeps it for the probes; the pool callers share is created lazily (`connect_lazy_with`).
//! Connect options are built field by field from the URL: `PgConnectOptions`'s own parser
//! reads `~/.pgpass`, and its `Debug` prints the password, so neither is used.
//! Every connection gets `statement_timeout` (a little below `query_timeout`, so the server
//! cancels a slow statement before warden gives up on the call) and `search_path` (warden's
//! schema first) as startup options, since sqlx has no read timeout of its own.
//!
//! Calls run on the pool's own I/O threads, not on the actors' arbiter (see `io.rs` for the
//! measurements behind that): whoever admits a call spawns it onto those threads, and the call
//! answers its caller directly. The handler admits calls sent to the actor's address; a
//! [`PostgresHandle`](crate::PostgresHandle) admits them on the caller's thread, which saves
//! the caller two thread wake-ups per call (see [`Call`](crate::Call)).

//!
//! # Files
//! - `messages.rs`: [`Sql`] and [`WithPool`], how a call starts once admitted, and the handlers.
//! - `transaction.rs`: [`Transaction`](crate::Transaction) and
//!   [`WithTransaction`](crate::WithTransaction).
//! - `statement/`: what a statement would leave on a pooled session (its lexing in
//!   `lexer.rs`); `session.rs`: the reset.
//! - `driver.rs`: connect, probe and close; the pool and its trust rules. `client.rs`: what
//!   calls get from it.
//! - `migrate.rs`: the embedded migrations.
//! - `rows.rs`: parameters to PostgreSQL types and rows to JSON.
//! - `errors.rs`: sqlx errors and SQLSTATEs to [`WardenError`](crate::WardenError).

mod client;
mod driver;
pub(crate) mod errors;
pub(crate) mod messages;
mod migrate;
mod rows;
pub(crate) mod session;
pub(crate) mod statement;
pub mod transaction;

pub use crate::rows::Rows;
pub use client::PgClient;
pub use driver::{PgDriver, PgProbe, ALIVE_BYPASS};
pub use messages::{Sql, WithPool};
pub use migrate::run_migrations;

use crate::connection::ConnectionActor;

/// The supervised PostgreSQL actor.
pub type PostgresActor = ConnectionActor<PgDriver>;
