//! The messages applications send PostgreSQL, and how a call starts once admitted.

use std::sync::Arc;

use actix::prelude::*;
use futures_util::future::BoxFuture;
use futures_util::TryStreamExt;
use serde_json::Value;
use sqlx::PgPool;

use super::PostgresActor;
use super::{
    client::PgClient,
    driver::PgDriver,
    rows::{bind, row_to_json},
};
use crate::rows::Rows;
use crate::{
    call::{self, sealed::Start, Call},
    connection::{Admitted, Committing, Failed, Reply},
    error::{Database, WardenError},
    postgres::session::{self},
    postgres::statement::{self, Context, Effect},
    postgres::transaction::{self, Transaction, WithTransaction},
};

/// Runs a statement on PostgreSQL. Parameters bind positionally (`$1`, `$2`, ...):
/// JSON `null` binds as an untyped NULL (the server infers its type), booleans as `bool`,
/// integers as `int8`, other numbers as `float8`, strings as `text` (cast in SQL for other
/// types: `$1::uuid`, `$2::timestamptz`), arrays and objects as `jsonb`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Rows, WardenError>")]
pub struct Sql {
    /// The statement.
    pub query: String,
    /// Positional parameters.
    pub params: Vec<Value>,
}

impl Sql {
    /// A statement without parameters; add them with [`Sql::bind`].
    pub fn new(query: impl Into<String>) -> Self {
        Self {
            query: query.into(),
            params: Vec::new(),
        }
    }

    /// Appends the next positional parameter.
    pub fn bind(mut self, value: impl Into<Value>) -> Self {
        self.params.push(value.into());
        self
    }
}

/// Hands the caller the pool itself, inside the same circuit check, retry budget and deadline
/// as [`Sql`]: the typed escape hatch for what JSON rows cannot express (`query_as`, COPY,
/// transactions). The closure may run more than once (once per attempt). Its future runs on
/// the pool's I/O threads, so it must be `Send` (sqlx's futures are).
#[derive(Message)]
#[rtype(result = "Result<T, WardenError>")]
pub struct WithPool<T: Send + 'static> {
    run: Box<dyn FnMut(PgPool) -> BoxFuture<'static, Result<T, sqlx::Error>> + Send>,
}

impl<T: Send + 'static> WithPool<T> {
    /// Wraps a closure that gets a pool handle per attempt.
    pub fn new<F>(run: F) -> Self
    where
        F: FnMut(PgPool) -> BoxFuture<'static, Result<T, sqlx::Error>> + Send + 'static,
    {
        Self { run: Box::new(run) }
    }
}

#[allow(private_interfaces)]
mod starts {
    use super::*;

    impl Start<PgDriver> for Sql {
        fn start(mut self, admitted: Admitted<PgClient>) -> BoxFuture<'static, Self::Result> {
            if let Some(refused) = refuse_params(&mut self.params, "") {
                return Box::pin(std::future::ready(Err(admitted.refuse(refused))));
            }
            Box::pin(async move { admitted.call(|client| execute(client, &self)).await })
        }
    }

    impl<T: Send + 'static> Start<PgDriver> for WithPool<T> {
        fn start(mut self, admitted: Admitted<PgClient>) -> BoxFuture<'static, Self::Result> {
            admitted.client().untrusted.until(admitted.deadline());
            Box::pin(admitted.call(move |client| {
                let fut = (self.run)(client.pool.clone());
                // The closure may have committed anything before it failed: never retried.
                async move { fut.await.map_err(|e| Failed::opaque(client.error(&e))) }
            }))
        }
    }

    impl Start<PgDriver> for Transaction {
        fn start(mut self, admitted: Admitted<PgClient>) -> BoxFuture<'static, Self::Result> {
            for (i, sql) in self.statements.iter_mut().enumerate() {
                let place = format!("statement {} of the transaction: ", i + 1);
                if let Some(refused) = refuse_params(&mut sql.params, &place) {
                    return Box::pin(std::future::ready(Err(admitted.refuse(refused))));
                }
            }
            let committing = Committing::default();
            Box::pin(async move {
                admitted
                    .call(|client| transaction::run_statements(client, &self, &committing))
                    .await
                    .map_err(|e| committing.explain(e))
            })
        }
    }

    impl<T: Send + 'static> Start<PgDriver> for WithTransaction<T> {
        fn start(self, admitted: Admitted<PgClient>) -> BoxFuture<'static, Self::Result> {
            let committing = Committing::default();
            // Each attempt borrows the closure mutably; attempts run one after another, so
            // the lock is never contended.
            let msg = Arc::new(tokio::sync::Mutex::new(self));
            Box::pin(async move {
                admitted
                    .call(|client| {
                        let msg = msg.clone();
                        let committing = &committing;
                        async move {
                            let mut msg = msg.lock().await;
                            transaction::run_closure(client, &mut msg, committing).await
                        }
                    })
                    .await
                    .map_err(|e| committing.explain(e))
            })
        }
    }
}

/// The `Usage` error for parameters out of bounds (see `params.rs`), which are taken apart
/// here, without recursion, rather than dropped wherever the call ends.
fn refuse_params(params: &mut Vec<Value>, place: &str) -> Option<WardenError> {
    let why = crate::params::check_sql(params).err()?;
    params.drain(..).for_each(crate::params::dismantle);
    Some(WardenError::Usage {
        database: Database::Postgres,
        message: format!("{place}{why}"),
    })
}

impl Call<PgDriver> for Sql {
    type Output = Rows;
}

impl<T: Send + 'static> Call<PgDriver> for WithPool<T> {
    type Output = T;
}

impl Call<PgDriver> for Transaction {
    type Output = Vec<Rows>;
}

impl<T: Send + 'static> Call<PgDriver> for WithTransaction<T> {
    type Output = T;
}

impl actix::Handler<Sql> for PostgresActor {
    type Result = Reply<Result<Rows, WardenError>>;

    fn handle(&mut self, msg: Sql, _: &mut Self::Context) -> Self::Result {
        call::start(self, msg)
    }
}

impl<T: Send + 'static> actix::Handler<WithPool<T>> for PostgresActor {
    type Result = Reply<Result<T, WardenError>>;

    fn handle(&mut self, msg: WithPool<T>, _: &mut Self::Context) -> Self::Result {
        call::start(self, msg)
    }
}

impl actix::Handler<Transaction> for PostgresActor {
    type Result = Reply<Result<Vec<Rows>, WardenError>>;

    fn handle(&mut self, msg: Transaction, _: &mut Self::Context) -> Self::Result {
        call::start(self, msg)
    }
}

impl<T: Send + 'static> actix::Handler<WithTransaction<T>> for PostgresActor {
    type Result = Reply<Result<T, WardenError>>;

    fn handle(&mut self, msg: WithTransaction<T>, _: &mut Self::Context) -> Self::Result {
        call::start(self, msg)
    }
}

/// Runs one attempt of a statement and converts its rows. A statement that would leave its
/// session changed is refused before anything is sent, and one that may have changed it has
/// its session reset before the connection goes back to the pool (see `statement/`). The
/// connection is acquired first, so that a failure to get one (nothing sent yet) can be told
/// from a failure mid-statement.
async fn execute(client: PgClient, sql: &Sql) -> Result<Rows, Failed> {
    let usage = |message: String| {
        Failed::before_send(WardenError::Usage {
            database: Database::Postgres,
            message,
        })
    };
    // Parameters were checked once, when the call started (`refuse_params`).
    let effect = statement::classify(&sql.query, Context::Single).map_err(|r| usage(r.0))?;
    let mut conn = client
        .acquire()
        .await
        .map_err(|e| Failed::before_send(client.error(&e)))?;
    let rows = fetch_rows(&client, &mut conn, sql)
        .await
        .map_err(Failed::after_send);
    if effect == Effect::MayTaint {
        session::reset_or_close(conn).await;
    }
    rows
}

/// Runs one statement on `conn` and converts its rows to JSON as they arrive, with no
/// `Vec` of sqlx's rows in between. A row that cannot be converted fails the call, but the
/// rest are still read, so that the statement ends on the connection as it would have with
/// `fetch_all`.
pub(crate) async fn fetch_rows(
    client: &PgClient,
    conn: &mut sqlx::PgConnection,
    sql: &Sql,
) -> Result<Rows, WardenError> {
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.query.as_str()));
    for param in &sql.params {
        query = bind(query, param);
    }
    let mut stream = query.fetch(&mut *conn);
    let mut rows = Rows::new();
    let mut unconverted = None;
    while let Some(row) = stream.try_next().await.map_err(|e| client.error(&e))? {
        if unconverted.is_none() {
            match row_to_json(&row) {
                Ok(json) => rows.push(json),
                Err(e) => unconverted = Some(e),
            }
        }
    }
    unconverted.map_or(Ok(rows), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_builder_binds_in_order() {
        let q = Sql::new("SELECT $1, $2").bind(1).bind("x");
        assert_eq!(q.params, vec![Value::from(1), Value::from("x")]);
    }
}
