//! Graph writes that need several statements: [`CypherTransaction`] runs [`Cypher`]
//! statements in one explicit Bolt transaction (`BEGIN`, `RUN`..., `COMMIT`) on one pooled
//! connection, and answers the rows of each, or an error and nothing committed.
//!
//! warden begins and commits, so a failure is placed exactly, as for PostgreSQL's
//! [`Transaction`](crate::Transaction):
//! - before `BEGIN` was answered (no connection could be had, `BEGIN` refused): nothing was
//!   written, and a transient failure is retried like one before anything was sent;
//! - a statement failed, or its rows could not be converted: `ROLLBACK` is sent and nothing is
//!   committed. After a server `FAILURE`, Neo4j has already rolled the transaction back and
//!   answers that `ROLLBACK` with `IGNORED`; the pool `RESET`s the connection before handing
//!   it out again, as it does for every connection;
//! - `COMMIT` answered with a `FAILURE`: the server rolled the transaction back;
//! - `COMMIT` sent and no answer (the connection broke, or the call's deadline ran out): it may
//!   have committed, and the caller gets [`WardenError::CommitOutcomeUnknown`].
//!
//! A transaction is retried as a whole only when Neo4j says it rolled it back for a retry (the
//! `Neo.TransientError.Transaction.*` deadlock and lock codes, see
//! [`WardenError::rolled_back_for_retry`]): never after a `COMMIT` may have happened. neo4rs
//! never retries an explicit transaction itself.
//!
//! An attempt dropped unfinished (the call's deadline ran out mid-way) leaves its connection to
//! the pool, which reads whatever answers are still due and `RESET`s it (ending the
//! transaction on the server) before handing it out, or discards it if that fails.

use actix::Message;

use crate::{
    connection::{Committing, Failed},
    error::{Database, WardenError},
    neo4j::{row_to_json, to_query, Cypher, GraphClient},
    rows::Rows,
};

/// Cypher statements run all-or-nothing in one explicit transaction, in order: the rows of
/// each, or an error and nothing committed (or [`WardenError::CommitOutcomeUnknown`]).
/// Parameters convert as in [`Cypher`]. Statements that Neo4j runs only in auto-commit
/// transactions (`CALL { ... } IN TRANSACTIONS`) are refused by the server.
#[derive(Debug, Clone, Default, Message)]
#[rtype(result = "Result<Vec<Rows>, WardenError>")]
pub struct CypherTransaction {
    /// The statements, in order.
    pub statements: Vec<Cypher>,
}

impl CypherTransaction {
    /// An empty transaction; add statements with [`CypherTransaction::push`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a statement.
    pub fn push(mut self, statement: Cypher) -> Self {
        self.statements.push(statement);
        self
    }
}

/// One attempt of a [`CypherTransaction`].
pub(crate) async fn run_statements(
    client: GraphClient,
    tx: &CypherTransaction,
    committing: &Committing,
) -> Result<Vec<Rows>, Failed> {
    let queries = tx
        .statements
        .iter()
        .enumerate()
        .map(|(i, cypher)| to_query(cypher).map_err(|e| Failed::before_send(numbered(i, e))))
        .collect::<Result<Vec<_>, _>>()?;
    // Taking a connection and BEGIN write nothing.
    let mut txn = client
        .graph()
        .start_txn()
        .await
        .map_err(|e| Failed::before_send(client.error(&e)))?;
    let mut out = Vec::with_capacity(queries.len());
    for query in queries {
        match fetch(&client, &mut txn, query).await {
            Ok(rows) => out.push(rows),
            Err(e) => {
                // After a FAILURE the server has rolled back already and ignores this; after a
                // failure of warden's own (a row it cannot convert) this ends the transaction.
                // Its answer changes nothing for the caller.
                let _ = txn.rollback().await;
                return Err(Failed::in_transaction(e));
            }
        }
    }
    committing.set(true);
    let committed = txn.commit().await;
    committing.set(false);
    match committed {
        Ok(()) => Ok(out),
        // The server answered COMMIT with a FAILURE: it rolled the transaction back.
        Err(e @ neo4rs::Error::Neo4j(_)) => Err(Failed::in_transaction(client.error(&e))),
        // Sent, and no answer: it may have committed.
        Err(e) => Err(Failed::opaque(WardenError::CommitOutcomeUnknown {
            database: Database::Neo4j,
            message: client.error(&e).to_string(),
        })),
    }
}

/// Runs one statement in the transaction and converts its rows. The result is read to its
/// end before any row is converted, so that a row warden cannot convert leaves the connection
/// between requests, where a `ROLLBACK` can follow.
async fn fetch(
    client: &GraphClient,
    txn: &mut neo4rs::Txn,
    query: neo4rs::Query,
) -> Result<Rows, WardenError> {
    let mut stream = txn.execute(query).await.map_err(|e| client.error(&e))?;
    let mut rows = Vec::new();
    while let Some(row) = stream
        .next(txn.handle())
        .await
        .map_err(|e| client.error(&e))?
    {
        rows.push(row);
    }
    rows.iter().map(row_to_json).collect()
}

/// An error about one statement's parameters (out of bounds ones were refused when the call
/// started), with its place in the transaction.
fn numbered(i: usize, e: WardenError) -> WardenError {
    let place = |message: String| format!("statement {} of the transaction: {message}", i + 1);
    match e {
        WardenError::Conversion { database, message } => WardenError::Conversion {
            database,
            message: place(message),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_keep_their_order_and_a_bad_parameter_is_named_by_place() {
        let tx = CypherTransaction::new()
            .push(Cypher::new("CREATE (:A {id: $id})").param("id", 1))
            .push(Cypher::new("CREATE (:B)"));
        assert_eq!(tx.statements[0].params["id"], 1);
        assert_eq!(tx.statements[1].query, "CREATE (:B)");
        let e = numbered(
            1,
            WardenError::Conversion {
                database: Database::Neo4j,
                message: "parameter `x` has no Bolt equivalent".into(),
            },
        );
        assert!(
            e.to_string()
                .contains("statement 2 of the transaction: parameter `x`"),
            "{e}"
        );
    }

    #[test]
    fn a_deadline_that_runs_out_during_commit_is_an_unknown_outcome_for_the_graph() {
        let committing = Committing::default();
        let timeout = || WardenError::Timeout {
            database: Database::Neo4j,
            phase: crate::TimeoutPhase::Query,
            after: std::time::Duration::from_secs(3),
        };
        assert_eq!(committing.explain(timeout()), timeout());
        committing.set(true);
        let e = committing.explain(timeout());
        assert!(
            matches!(
                e,
                WardenError::CommitOutcomeUnknown {
                    database: Database::Neo4j,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(!e.is_transient());
    }
}
