//! Real transactions on PostgreSQL: [`Transaction`] (statements with their parameters, run
//! all-or-nothing on one connection, rows per statement) and [`WithTransaction`] (a closure,
//! for code that branches between statements).
//!
//! warden begins and commits; the caller's statements never see transaction control (it is
//! refused, see `statement/`). So a failure is placed exactly:
//! - before `COMMIT` was sent, the transaction is rolled back (explicitly, or by the server when
//!   the connection dies): nothing happened;
//! - `COMMIT` answered with an error: the server rolled back;
//! - `COMMIT` sent and no answer (the connection broke, or the call's deadline ran out): it may
//!   have committed, and the caller gets [`WardenError::CommitOutcomeUnknown`].
//!
//! A transaction is retried as a whole only when PostgreSQL says it rolled it back and asks for
//! a retry (40001 serialization failure, 40P01 deadlock): never after a commit may have
//! happened. A connection whose transaction did not end cleanly (a deadline ran out mid-way, a
//! rollback failed) is closed, never pooled.

use actix::Message;
use futures_util::future::BoxFuture;
use sqlx::{pool::PoolConnection, PgConnection, Postgres};

use crate::{
    connection::{Committing, Failed},
    error::{Database, WardenError},
    postgres::{
        session,
        statement::{self, Context, Effect},
        PgClient, Sql,
    },
    rows::Rows,
};

/// The isolation level a transaction runs at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Isolation {
    /// PostgreSQL's default.
    #[default]
    ReadCommitted,
    /// A snapshot for the whole transaction; concurrent updates fail with 40001 (retried).
    RepeatableRead,
    /// As if transactions ran one after another; conflicts fail with 40001 (retried).
    Serializable,
}

impl Isolation {
    fn begin(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "BEGIN ISOLATION LEVEL READ COMMITTED",
            Isolation::RepeatableRead => "BEGIN ISOLATION LEVEL REPEATABLE READ",
            Isolation::Serializable => "BEGIN ISOLATION LEVEL SERIALIZABLE",
        }
    }
}

/// Statements run all-or-nothing on one connection, in order: the rows of each, or an error
/// and nothing committed (or [`WardenError::CommitOutcomeUnknown`]). Parameters bind as in
/// [`Sql`]. `SET LOCAL` is allowed (it ends with the transaction); transaction control and
/// session-level statements are refused.
#[derive(Debug, Clone, Default, Message)]
#[rtype(result = "Result<Vec<Rows>, WardenError>")]
pub struct Transaction {
    /// The statements, in order.
    pub statements: Vec<Sql>,
    /// The isolation level.
    pub isolation: Isolation,
}

impl Transaction {
    /// An empty read-committed transaction; add statements with [`Transaction::push`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a statement.
    pub fn push(mut self, statement: Sql) -> Self {
        self.statements.push(statement);
        self
    }

    /// Sets the isolation level.
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = isolation;
        self
    }
}

/// The boxed closure of a [`WithTransaction`].
type TxFn<T> =
    Box<dyn for<'c> FnMut(&'c mut PgConnection) -> BoxFuture<'c, Result<T, sqlx::Error>> + Send>;

/// A closure run inside a transaction warden begins and commits (rolls back when it returns an
/// error). The closure may run more than once: again only when PostgreSQL rolled the
/// transaction back and asked for a retry (40001, 40P01). It must not end the transaction
/// itself. The session is reset after it, so nothing it set outlives the call.
#[derive(Message)]
#[rtype(result = "Result<T, WardenError>")]
pub struct WithTransaction<T: Send + 'static> {
    pub(crate) run: TxFn<T>,
    pub(crate) isolation: Isolation,
    /// Whether the session is reset after the closure commits: always for a caller's closure,
    /// which can run anything; not for warden's own closures that run only plain statements
    /// (see [`WithTransaction::plain`]), where the reset would be the costliest round trip of
    /// the call.
    pub(crate) reset: bool,
}

impl<T: Send + 'static> WithTransaction<T> {
    /// Wraps a closure that gets the transaction's connection per attempt:
    /// `WithTransaction::new(|tx| Box::pin(async move { ... }))`.
    pub fn new<F>(run: F) -> Self
    where
        F: for<'c> FnMut(&'c mut PgConnection) -> BoxFuture<'c, Result<T, sqlx::Error>>
            + Send
            + 'static,
    {
        Self {
            run: Box::new(run),
            isolation: Isolation::default(),
            reset: true,
        }
    }

    /// For warden's own closures that run only plain DML and queries through sqlx (no `SET`,
    /// no `LISTEN`, no temporary tables, no advisory locks): their session needs no reset
    /// after the commit. In pgbench runs of the catalog's create statements (4 clients,
    /// alternating 4 s rounds, median of 5 per-round ratios, a loaded 2-core machine), adding
    /// the reset cost 16 % and 38 % of the throughput in two runs; warden's `SELECT 1; COMMIT`
    /// framing without it cost 2 %.
    pub(crate) fn plain(mut self) -> Self {
        self.reset = false;
        self
    }

    /// Sets the isolation level.
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = isolation;
        self
    }
}

/// A checked-out connection that is closed, not pooled, unless its transaction ended cleanly:
/// an attempt dropped by its deadline mid-transaction leaves no open transaction in the pool.
struct Unfinished(Option<PoolConnection<Postgres>>);

impl Unfinished {
    fn conn(&mut self) -> &mut PgConnection {
        // Only `finish` takes it, and it consumes the guard.
        self.0.as_deref_mut().expect("connection present")
    }

    /// The transaction ended: the connection may go back to the pool.
    fn finish(mut self) -> PoolConnection<Postgres> {
        self.0.take().expect("connection present")
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(conn) = &mut self.0 {
            conn.close_on_drop();
        }
    }
}

/// One attempt of a [`Transaction`]; its parameters were checked once, when the call started.
pub(crate) async fn run_statements(
    client: PgClient,
    tx: &Transaction,
    committing: &Committing,
) -> Result<Vec<Rows>, Failed> {
    let mut effect = Effect::Clean;
    for (i, sql) in tx.statements.iter().enumerate() {
        let usage = |message: String| WardenError::Usage {
            database: Database::Postgres,
            message: format!("statement {} of the transaction: {message}", i + 1),
        };
        match statement::classify(&sql.query, Context::InTransaction) {
            Ok(Effect::MayTaint) => effect = Effect::MayTaint,
            Ok(Effect::Clean) => {}
            Err(refused) => return Err(Failed::before_send(usage(refused.0))),
        }
    }
    let mut open = Open::begin(&client, tx.isolation).await?;
    let mut out = Vec::with_capacity(tx.statements.len());
    for sql in &tx.statements {
        match crate::postgres::messages::fetch_rows(&client, open.conn(), sql).await {
            Ok(rows) => out.push(rows),
            Err(e) => return Err(open.rollback(Failed::in_transaction(e)).await),
        }
    }
    let conn = open.commit(committing).await?;
    if effect == Effect::MayTaint {
        session::reset_or_close(conn).await;
    }
    Ok(out)
}

/// One attempt of a [`WithTransaction`]: the closure, then a session reset.
pub(crate) async fn run_closure<T: Send>(
    client: PgClient,
    msg: &mut WithTransaction<T>,
    committing: &Committing,
) -> Result<T, Failed> {
    let mut open = Open::begin(&client, msg.isolation).await?;
    let value = match (msg.run)(open.conn()).await {
        Ok(value) => value,
        Err(e) => {
            let failed = Failed::in_transaction(client.error(&e));
            return Err(open.rollback(failed).await);
        }
    };
    let conn = open.commit(committing).await?;
    // The closure could have run anything on the session, unless it is warden's own.
    if msg.reset {
        session::reset_or_close(conn).await;
    }
    Ok(value)
}

/// A transaction begun on a checked-out connection, ended by [`Open::commit`] or
/// [`Open::rollback`]; dropped unfinished (a deadline ran out), its connection is closed.
struct Open<'a> {
    client: &'a PgClient,
    guard: Unfinished,
}

impl<'a> Open<'a> {
    async fn begin(client: &'a PgClient, isolation: Isolation) -> Result<Open<'a>, Failed> {
        let conn = client
            .acquire()
            .await
            .map_err(|e| Failed::before_send(client.error(&e)))?;
        let mut open = Open {
            client,
            guard: Unfinished(Some(conn)),
        };
        sqlx::raw_sql(isolation.begin())
            .execute(open.conn())
            .await
            .map_err(|e| Failed::in_transaction(client.error(&e)))?;
        Ok(open)
    }

    fn conn(&mut self) -> &mut PgConnection {
        self.guard.conn()
    }

    /// Rolls back after `cause`; a connection that cannot roll back is closed.
    async fn rollback(mut self, cause: Failed) -> Failed {
        if sqlx::raw_sql("ROLLBACK").execute(self.conn()).await.is_ok() {
            drop(self.guard.finish());
        }
        cause
    }

    /// Commits; the connection, for the caller to reset or release. `SELECT 1` goes first in
    /// the same message: PostgreSQL answers `COMMIT` of a failed transaction with a silent
    /// rollback, which would turn an error a closure swallowed into a lost write reported as Ok.
    async fn commit(mut self, committing: &Committing) -> Result<PoolConnection<Postgres>, Failed> {
        committing.set(true);
        let committed = sqlx::raw_sql("SELECT 1; COMMIT").execute(self.conn()).await;
        committing.set(false);
        match committed {
            Ok(_) => Ok(self.guard.finish()),
            // 25P02: a statement inside had failed, so nothing can commit; still open.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("25P02") => {
                let failed = Failed::in_transaction(WardenError::Usage {
                    database: Database::Postgres,
                    message: "a statement inside the transaction failed and its error was not \
                              returned; the transaction was rolled back"
                        .into(),
                });
                Err(self.rollback(failed).await)
            }
            // The server answered COMMIT with an error (a serialization failure, a deferred
            // constraint): it rolled the transaction back, and the session is idle again.
            Err(e @ sqlx::Error::Database(_)) => {
                let failed = Failed::in_transaction(self.client.error(&e));
                drop(self.guard.finish());
                Err(failed)
            }
            // Sent, and no answer: it may have committed. The guard closes the connection.
            Err(e) => Err(Failed::opaque(WardenError::CommitOutcomeUnknown {
                database: Database::Postgres,
                message: self.client.error(&e).to_string(),
            })),
        }
    }
}
