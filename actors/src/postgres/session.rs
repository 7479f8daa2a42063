//! Putting a pooled PostgreSQL session back the way it was opened.
//!
//! [`reset`] ends any transaction and undoes every session-level change a statement can make
//! (what `DISCARD ALL` undoes, except deallocating prepared statements, which would pull the
//! rug from under sqlx's statement cache). It costs one round trip, two when a transaction was
//! left open, so it runs only where it is needed: after a statement that may have changed the
//! session (see `statement/`), after a `WithTransaction` closure, and for connections
//! released while a [`WithPool`](crate::WithPool) closure may hold them ([`Untrusted`]), since
//! such a closure can run anything on the pool.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use sqlx::{PgConnection, Row};

/// Undoes session state. `RESET ALL` goes back to the values the session started with, which
/// include warden's own startup options (`search_path`, `statement_timeout`). The last
/// statement tells whether all of it ran outside an explicit transaction: in the implicit block
/// of one simple query, `now()` (the transaction's start) equals `statement_timestamp()` (this
/// message's); inside a transaction left open by a `BEGIN` it is earlier, and these statements
/// ran inside it, to be rolled back with it.
const RESET: &str = "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; UNLISTEN *; \
     SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES; \
     SELECT now() = statement_timestamp() AS outside_transaction";

/// Resets the session of `conn`: rolls back a transaction left open (also one in the failed
/// state), then undoes every session-level change. A connection on which this fails must be
/// closed, not pooled.
pub(crate) async fn reset(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    if reset_outside_transaction(conn).await? {
        return Ok(());
    }
    // A transaction was open: the reset ran inside it (or was refused by its failed state).
    // Rolling back is the only safe end for work nobody committed; then reset for real.
    sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await?;
    if reset_outside_transaction(conn).await? {
        Ok(())
    } else {
        Err(sqlx::Error::Protocol(
            "the session is still inside a transaction after ROLLBACK".into(),
        ))
    }
}

/// Runs the reset; `Ok(false)` when the session was inside a transaction.
async fn reset_outside_transaction(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    match sqlx::raw_sql(RESET).fetch_all(&mut *conn).await {
        Ok(rows) => Ok(rows
            .last()
            .and_then(|row| row.try_get::<bool, _>("outside_transaction").ok())
            .unwrap_or(false)),
        // 25P02 in_failed_sql_transaction: a failed transaction refuses everything but its end.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("25P02") => Ok(false),
        Err(e) => Err(e),
    }
}

/// Resets `conn` before it goes back to the pool, or closes it when that fails; called with
/// the connection still checked out.
pub(crate) async fn reset_or_close(mut conn: sqlx::pool::PoolConnection<sqlx::Postgres>) {
    if let Err(error) = reset(&mut conn).await {
        tracing::warn!(%error, "could not reset a pooled session; closing the connection");
        conn.close_on_drop();
    }
}

/// Until when connections released to the pool are not trusted to be clean: while a
/// [`WithPool`](crate::WithPool) closure may be running (its deadline, plus a margin for a
/// connection it dropped to reach the pool), every release is reset. Read by the pool's
/// `after_release` hook on every release, so it is one atomic load.
pub(crate) struct Untrusted {
    base: Instant,
    /// Nanoseconds after `base`.
    until: AtomicU64,
}

/// How long after a `WithPool` call's deadline its connections may still be on their way back
/// to the pool (a dropped `PoolConnection` returns through a spawned task).
const RELEASE_MARGIN: Duration = Duration::from_secs(1);

impl Untrusted {
    pub(crate) fn new() -> Self {
        Self {
            base: Instant::now(),
            until: AtomicU64::new(0),
        }
    }

    /// A `WithPool` call that ends by `deadline` has started.
    pub(crate) fn until(&self, deadline: Instant) {
        let at = deadline.saturating_duration_since(self.base) + RELEASE_MARGIN;
        let nanos = u64::try_from(at.as_nanos()).unwrap_or(u64::MAX);
        self.until.fetch_max(nanos, Ordering::AcqRel);
    }

    /// Whether a connection released now must be reset.
    pub(crate) fn now(&self) -> bool {
        let until = self.until.load(Ordering::Acquire);
        // Never marked (no `WithPool` yet): no clock read on every release.
        until != 0 && u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX) < until
    }
}
