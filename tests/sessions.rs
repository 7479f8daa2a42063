//! Pooled sessions stay clean, and transactions are real: against a throwaway PostgreSQL.
//!
//! A pooled connection is shared by every caller: what one call leaves on its session (an open
//! transaction above all) must never reach the next. These tests leave such state behind on
//! purpose, through `Sql` (refused) and through `WithPool` closures (which can run anything,
//! and whose connections are reset on release), then check what the next callers see from
//! another connection.

mod support;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use serde_json::json;
use support::{actix_test, eventually, fast_settings, no_graph, pg::PgServer, pg_started};
use warden_actors::{Isolation, Sql, Transaction, Warden, WardenError, WithPool, WithTransaction};

/// A warden with a pool of 3 (plus the probe's connection), once PostgreSQL is connected.
async fn connected(pg: &PgServer) -> Warden {
    let mut settings = fast_settings(&no_graph(), &pg.url());
    settings.retry.max_attempts = 5;
    pg_started(settings).await
}

async fn sql(warden: &Warden, query: &str) -> Result<warden_actors::Rows, WardenError> {
    warden.postgres_handle().send(Sql::new(query)).await
}

fn assert_usage(result: Result<warden_actors::Rows, WardenError>, names: &[&str]) {
    match result {
        Err(WardenError::Usage { message, .. }) => {
            for name in names {
                assert!(message.contains(name), "`{name}` not in: {message}");
            }
        }
        other => panic!("expected a Usage error naming {names:?}, got {other:?}"),
    }
}

/// Runs `statements` on every pooled connection at once (all three are checked out together),
/// then releases them: what a careless `WithPool` closure can leave behind.
async fn leave_on_every_connection(warden: &Warden, statements: &'static [&'static str]) {
    warden
        .postgres_handle()
        .send(WithPool::new(move |pool| {
            Box::pin(async move {
                let mut held = Vec::new();
                for _ in 0..3 {
                    let mut conn = pool.acquire().await?;
                    for s in statements {
                        sqlx::raw_sql(*s).execute(&mut *conn).await?;
                    }
                    held.push(conn);
                }
                Ok(())
            })
        }))
        .await
        .expect("leave state behind");
}

/// `query` run on all three pooled connections at once (each call holds one for 200 ms).
async fn on_every_connection(warden: &Warden, query: &str) -> Vec<serde_json::Value> {
    let calls = (0..3).map(|_| {
        warden.postgres_handle().send(Sql::new(format!(
            "SELECT ({query}) AS v, pg_backend_pid() AS pid FROM pg_sleep(0.2)"
        )))
    });
    let rows = futures_util::future::join_all(calls).await;
    let mut pids = std::collections::BTreeSet::new();
    let values = rows
        .into_iter()
        .map(|r| {
            let row = r.expect("query").remove(0);
            pids.insert(row["pid"].to_string());
            row["v"].clone()
        })
        .collect();
    assert_eq!(pids.len(), 3, "three different connections answered");
    values
}

async fn count(admin: &sqlx::PgPool, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM warden.{table}"
    )))
    .fetch_one(admin)
    .await
    .expect("count")
}

#[test]
fn a_begin_left_behind_never_swallows_a_later_write() {
    let pg = PgServer::start();
    actix_test(async {
        let warden = connected(&pg).await;
        sql(
            &warden,
            "CREATE TABLE ledger (id serial PRIMARY KEY, n int)",
        )
        .await
        .unwrap();
        // Through Sql: refused, naming the statement and the API to use instead.
        assert_usage(sql(&warden, "BEGIN").await, &["BEGIN", "Transaction"]);
        assert_usage(
            sql(&warden, "start transaction").await,
            &["START", "Transaction"],
        );
        // Through a closure: every pooled connection released inside a transaction.
        leave_on_every_connection(&warden, &["BEGIN"]).await;

        let admin = pg.admin().await;
        for n in 0..6 {
            sql(&warden, &format!("INSERT INTO ledger (n) VALUES ({n})"))
                .await
                .unwrap();
            assert_eq!(
                count(&admin, "ledger").await,
                n + 1,
                "an acknowledged INSERT is visible from another connection at once"
            );
        }
        let idle_in_tx: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = 'warden' AND state LIKE 'idle in transaction%'",
        )
        .fetch_one(&admin)
        .await
        .unwrap();
        assert_eq!(
            idle_in_tx, 0,
            "no pooled connection sits inside a transaction"
        );
        warden.shutdown(Duration::from_secs(2)).await;
        assert_eq!(
            count(&admin, "ledger").await,
            6,
            "and still there after shutdown"
        );
    });
}

#[test]
fn session_state_left_behind_never_reaches_the_next_call() {
    let pg = PgServer::start();
    actix_test(async {
        let warden = connected(&pg).await;
        let configured = on_every_connection(&warden, "current_setting('search_path')").await;
        assert_eq!(configured[0], json!("warden,public"));

        assert_usage(
            sql(&warden, "SET search_path = pg_catalog").await,
            &["SET", "SET LOCAL"],
        );
        assert_usage(sql(&warden, "LISTEN jobs").await, &["LISTEN"]);
        assert_usage(
            sql(&warden, "CREATE TEMP TABLE t (a int)").await,
            &["TEMPORARY"],
        );
        assert_usage(
            sql(&warden, "SELECT pg_advisory_lock(7)").await,
            &["pg_advisory_lock", "pg_advisory_xact_lock"],
        );

        // What a closure can leave on a session, and what Sql may change where the text alone
        // cannot tell: every one is reset before the connection is pooled again.
        leave_on_every_connection(
            &warden,
            &[
                "SET search_path = pg_catalog",
                "LISTEN jobs",
                "SELECT pg_advisory_lock(pg_backend_pid())",
                "CREATE TEMP TABLE scratch (a int)",
                "SELECT set_config('statement_timeout', '5s', false)",
            ],
        )
        .await;
        sql(
            &warden,
            "SELECT set_config('search_path', 'pg_catalog', false)",
        )
        .await
        .unwrap();
        sql(&warden, "DO $$ BEGIN PERFORM pg_advisory_lock(8); END $$")
            .await
            .unwrap();

        for value in on_every_connection(
            &warden,
            "current_setting('search_path') || ' ' || current_setting('statement_timeout') \
             || ' ' || (SELECT count(*) FROM pg_listening_channels()) \
             || ' ' || (SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema())",
        )
        .await
        {
            assert_eq!(value, json!("warden,public 2700ms 0 0"));
        }
        let admin = pg.admin().await;
        let locks: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
                .fetch_one(&admin)
                .await
                .unwrap();
        assert_eq!(locks, 0, "no session advisory lock outlives its call");
        warden.shutdown(Duration::from_secs(2)).await;
    });
}

#[test]
fn a_transaction_is_all_or_nothing_and_returns_rows_per_statement() {
    let pg = PgServer::start();
    actix_test(async {
        let warden = connected(&pg).await;
        let pg_handle = warden.postgres_handle();
        sql(
            &warden,
            "CREATE TABLE account (id int PRIMARY KEY, balance int NOT NULL)",
        )
        .await
        .unwrap();
        let rows = pg_handle
            .send(
                Transaction::new()
                    .push(Sql::new("SET LOCAL lock_timeout = '2s'"))
                    .push(
                        Sql::new("INSERT INTO account VALUES ($1, $2), ($3, $4)")
                            .bind(1)
                            .bind(100)
                            .bind(2)
                            .bind(0),
                    )
                    .push(Sql::new(
                        "UPDATE account SET balance = balance - 30 WHERE id = 1 RETURNING balance",
                    ))
                    .push(Sql::new(
                        "UPDATE account SET balance = balance + 30 WHERE id = 2 RETURNING balance",
                    )),
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[2][0]["balance"], json!(70));
        assert_eq!(rows[3][0]["balance"], json!(30));

        // A failing statement undoes the ones before it.
        let err = pg_handle
            .send(
                Transaction::new()
                    .push(Sql::new(
                        "UPDATE account SET balance = balance - 30 WHERE id = 1",
                    ))
                    .push(Sql::new("INSERT INTO account VALUES (2, 0)")),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, WardenError::Query { code, .. } if code == "23505"),
            "{err:?}"
        );
        let admin = pg.admin().await;
        let balance = |id: i32| {
            let admin = admin.clone();
            async move {
                sqlx::query_scalar::<_, i32>("SELECT balance FROM warden.account WHERE id = $1")
                    .bind(id)
                    .fetch_one(&admin)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(balance(1).await, 70, "the first update was rolled back");

        // Transaction control inside is refused, naming the statement's place.
        let err = pg_handle
            .send(
                Transaction::new()
                    .push(Sql::new("SELECT 1"))
                    .push(Sql::new("COMMIT")),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, WardenError::Usage { message, .. } if message.contains("statement 2")),
            "{err:?}"
        );

        // A closure that branches between statements, and one that fails half-way.
        let moved = pg_handle
            .send(WithTransaction::new(|tx| {
                Box::pin(async move {
                    let balance: i32 =
                        sqlx::query_scalar("SELECT balance FROM account WHERE id = 1 FOR UPDATE")
                            .fetch_one(&mut *tx)
                            .await?;
                    if balance < 50 {
                        return Ok(false);
                    }
                    sqlx::query("UPDATE account SET balance = balance - 50 WHERE id = 1")
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("UPDATE account SET balance = balance + 50 WHERE id = 2")
                        .execute(&mut *tx)
                        .await?;
                    Ok(true)
                })
            }))
            .await
            .unwrap();
        assert!(moved);
        assert_eq!((balance(1).await, balance(2).await), (20, 80));
        let err = pg_handle
            .send(WithTransaction::new(|tx| {
                Box::pin(async move {
                    sqlx::query("UPDATE account SET balance = 0")
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("SELECT 1/0").execute(&mut *tx).await?;
                    Ok(())
                })
            }))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, WardenError::Query { code, .. } if code == "22012"),
            "{err:?}"
        );
        // A closure that swallows an error inside: PostgreSQL would answer COMMIT with a silent
        // rollback; warden says so instead of Ok.
        let err = pg_handle
            .send(WithTransaction::new(|tx| {
                Box::pin(async move {
                    sqlx::query("UPDATE account SET balance = 0")
                        .execute(&mut *tx)
                        .await?;
                    let _ = sqlx::query("SELECT 1/0").execute(&mut *tx).await;
                    Ok(())
                })
            }))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, WardenError::Usage { message, .. } if message.contains("rolled back")),
            "{err:?}"
        );
        assert_eq!(
            (balance(1).await, balance(2).await),
            (20, 80),
            "nothing committed"
        );
        warden.shutdown(Duration::from_secs(2)).await;
    });
}

#[test]
fn serialization_failures_rerun_the_whole_transaction() {
    let pg = PgServer::start();
    actix_test(async {
        let warden = connected(&pg).await;
        sql(&warden, "CREATE TABLE shifts (doctor text, on_call bool)")
            .await
            .unwrap();
        sql(
            &warden,
            "INSERT INTO shifts VALUES ('alice', true), ('bob', true)",
        )
        .await
        .unwrap();
        let attempts = Arc::new(AtomicUsize::new(0));
        // Write skew: each takes a doctor off call if another stays on call. Serializable
        // isolation fails one of them with 40001; warden runs it again, and it then sees the
        // other's commit and leaves its doctor on call.
        let off_call = |name: &'static str| {
            let attempts = attempts.clone();
            warden.postgres_handle().send(
                WithTransaction::new(move |tx| {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    Box::pin(async move {
                        let on: i64 =
                            sqlx::query_scalar("SELECT count(*) FROM shifts WHERE on_call")
                                .fetch_one(&mut *tx)
                                .await?;
                        sqlx::query("SELECT pg_sleep(0.3)")
                            .execute(&mut *tx)
                            .await?;
                        if on >= 2 {
                            sqlx::query("UPDATE shifts SET on_call = false WHERE doctor = $1")
                                .bind(name)
                                .execute(&mut *tx)
                                .await?;
                            return Ok(true);
                        }
                        Ok(false)
                    })
                })
                .isolation(Isolation::Serializable),
            )
        };
        let (a, b) = futures_util::future::join(off_call("alice"), off_call("bob")).await;
        let (a, b) = (
            a.expect("alice's transaction"),
            b.expect("bob's transaction"),
        );
        assert!(a ^ b, "exactly one doctor went off call: {a} {b}");
        assert!(
            attempts.load(Ordering::SeqCst) >= 3,
            "one transaction ran again"
        );
        let on_call = sql(&warden, "SELECT count(*) AS n FROM shifts WHERE on_call")
            .await
            .unwrap();
        assert_eq!(on_call[0]["n"], json!(1));
        warden.shutdown(Duration::from_secs(2)).await;
    });
}

#[test]
fn a_transaction_cut_by_its_deadline_leaves_nothing_behind() {
    let pg = PgServer::start();
    actix_test(async {
        let mut settings = fast_settings(&no_graph(), &pg.url());
        settings.postgres.query_timeout = Duration::from_secs(1);
        let warden = Warden::start(settings).unwrap();
        eventually(Duration::from_secs(10), "connected", || async {
            sql(&warden, "SELECT 1").await.ok()
        })
        .await;
        sql(&warden, "CREATE TABLE jobs (id int)").await.unwrap();
        let err = warden
            .postgres_handle()
            .send(
                // The server's statement_timeout would cut the sleep first and roll back in
                // order; lifted here, warden's own deadline drops the attempt mid-transaction.
                Transaction::new()
                    .push(Sql::new("SET LOCAL statement_timeout = '10s'"))
                    .push(Sql::new("INSERT INTO jobs VALUES (1)"))
                    .push(Sql::new("SELECT pg_sleep(5)")),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, WardenError::Timeout { .. }), "{err:?}");
        for n in 0..6 {
            sql(&warden, &format!("INSERT INTO jobs VALUES ({})", n + 10))
                .await
                .unwrap();
        }
        let admin = pg.admin().await;
        let ids: Vec<i32> = sqlx::query_scalar("SELECT id FROM warden.jobs ORDER BY id")
            .fetch_all(&admin)
            .await
            .unwrap();
        assert_eq!(
            ids,
            vec![10, 11, 12, 13, 14, 15],
            "the cut transaction left nothing"
        );
        warden.shutdown(Duration::from_secs(2)).await;
    });
}
