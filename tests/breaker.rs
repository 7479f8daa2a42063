//! What opens the circuit and what closes it, against a throwaway PostgreSQL: an outage is the
//! actor's business and ends with the reconnect; overload opens the circuit even while probes
//! succeed; contention never opens it; and a storm of failing calls costs the breaker nothing.

mod support;

use std::time::{Duration, Instant};

use support::{
    actix_test, eventually, fast_settings, no_graph, pg::PgServer, pg_started as connected,
};
use warden_actors::{
    circuit::CircuitStatus, health::ComponentStatus, Database, Sql, Transaction, Warden,
    WardenError, WardenSettings,
};

fn settings(pg: &PgServer) -> WardenSettings {
    let mut s = fast_settings(&no_graph(), &pg.url());
    s.retry.max_attempts = 1;
    s.postgres.max_connections = 12;
    s
}

fn postgres(warden: &Warden) -> warden_actors::health::ComponentHealth {
    warden.health_handle().view().components[&Database::Postgres].clone()
}

#[test]
fn calls_flow_as_soon_as_the_database_is_back_whatever_the_cooldown() {
    let pg = PgServer::start();
    actix_test(async {
        let mut s = settings(&pg);
        s.breaker.failure_threshold = 3;
        s.breaker.cooldown = Duration::from_secs(60);
        let warden = connected(s).await;
        let handle = warden.postgres_handle();

        // Ten calls in flight when the server dies: their connection errors open the circuit.
        let in_flight: Vec<_> = (0..10)
            .map(|_| handle.send(Sql::new("SELECT pg_sleep(2)")))
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        pg.kill9();
        for result in futures_util::future::join_all(in_flight).await {
            assert!(result.is_err());
        }
        eventually(Duration::from_secs(5), "circuit open", || async {
            (postgres(&warden).circuit.state == CircuitStatus::Open).then_some(())
        })
        .await;
        // While down, health says why, and calls are refused with the actor's retry time.
        let c = postgres(&warden);
        assert!(!c.healthy && c.reason.is_some(), "{c:?}");
        match handle.send(Sql::new("SELECT 1")).await {
            Err(WardenError::Unavailable { retry_after, .. }) => {
                assert!(retry_after <= Duration::from_millis(600), "{retry_after:?}")
            }
            other => panic!("expected Unavailable while down, got {other:?}"),
        }

        pg.restart();
        eventually(Duration::from_secs(10), "reconnected", || async {
            (postgres(&warden).status == ComponentStatus::Connected).then_some(())
        })
        .await;
        let reconnected = Instant::now();
        eventually(Duration::from_secs(2), "a call succeeds", || async {
            handle.send(Sql::new("SELECT 1")).await.ok()
        })
        .await;
        let waited = reconnected.elapsed();
        assert!(
            waited <= Duration::from_millis(200 + 200),
            "calls flowed {waited:?} after the reconnect (probe interval 200 ms)"
        );
        let c = postgres(&warden);
        assert!(c.healthy && c.reason.is_none(), "{c:?}");
        assert_eq!(c.circuit.state, CircuitStatus::Closed);
        warden.shutdown(Duration::from_secs(2)).await;
    });
}

#[test]
fn a_database_that_answers_probes_but_times_out_every_query_opens_the_circuit() {
    let pg = PgServer::start();
    actix_test(async {
        let mut s = settings(&pg);
        s.breaker.failure_threshold = 3;
        s.breaker.cooldown = Duration::from_secs(1);
        s.postgres.query_timeout = Duration::from_millis(400);
        s.postgres.probe_interval = Duration::from_millis(100);
        s.postgres.probe_timeout = Duration::from_millis(90);
        let warden = connected(s).await;
        let handle = warden.postgres_handle();
        // Every real query is too slow; the probe's `SELECT 1` keeps succeeding all along,
        // several times between two calls.
        // The third timeout opens it; the breaker hears of it a moment after the caller, so the
        // quick call right after may still pass.
        let mut timeouts = 0;
        for _ in 0..10 {
            match handle.send(Sql::new("SELECT pg_sleep(1)")).await {
                Err(WardenError::Timeout { .. }) => timeouts += 1,
                Err(WardenError::CircuitOpen { .. }) => break,
                other => panic!("slow call {timeouts}: {other:?}"),
            }
            // A success in between does not wipe the failures out either.
            match handle.send(Sql::new("SELECT 1")).await {
                Ok(_) => {}
                Err(WardenError::CircuitOpen { .. }) => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(timeouts, 3, "the circuit opened at the third timeout");
        // Health hears of it from the breaker a moment later.
        let c = eventually(
            Duration::from_secs(1),
            "health shows the open circuit",
            || async {
                let c = postgres(&warden);
                (c.circuit.state == CircuitStatus::Open).then_some(c)
            },
        )
        .await;
        assert_eq!(c.status, ComponentStatus::Connected);
        let reason = c.reason.expect("an unhealthy component says why");
        assert!(
            reason.contains("circuit open") && reason.contains("timed out"),
            "{reason}"
        );
        // Opened on a live connection, it keeps its cooldown, then a probe closes it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(postgres(&warden).circuit.state, CircuitStatus::Open);
        eventually(Duration::from_secs(2), "circuit closed", || async {
            handle.send(Sql::new("SELECT 1")).await.ok()
        })
        .await;
        warden.shutdown(Duration::from_secs(2)).await;
    });
}

#[test]
fn contention_is_retried_but_never_opens_the_circuit() {
    let pg = PgServer::start();
    actix_test(async {
        let mut s = settings(&pg);
        s.breaker.failure_threshold = 2;
        s.retry.max_attempts = 2;
        let warden = connected(s).await;
        let handle = warden.postgres_handle();
        handle
            .send(Sql::new("CREATE TABLE wallet (id int PRIMARY KEY, n int)"))
            .await
            .unwrap();
        handle
            .send(Sql::new("INSERT INTO wallet VALUES (1, 0)"))
            .await
            .unwrap();
        // Another client holds the row.
        let admin = pg.admin().await;
        let mut holder = admin.begin().await.unwrap();
        sqlx::query("SELECT * FROM warden.wallet WHERE id = 1 FOR UPDATE")
            .execute(&mut *holder)
            .await
            .unwrap();
        for round in 0..3 {
            let calls = (0..8).map(|_| {
                handle.send(
                    Transaction::new()
                        .push(Sql::new("SET LOCAL lock_timeout = '100ms'"))
                        .push(Sql::new("UPDATE wallet SET n = n + 1 WHERE id = 1")),
                )
            });
            for result in futures_util::future::join_all(calls).await {
                match result {
                    Err(WardenError::Query { code, .. }) if code == "55P03" => {}
                    other => panic!("round {round}: expected a lock timeout, got {other:?}"),
                }
            }
        }
        let c = postgres(&warden);
        assert_eq!(c.circuit.state, CircuitStatus::Closed, "{c:?}");
        assert_eq!(c.circuit.recent_failures, 0);
        holder.rollback().await.unwrap();
        let rows = handle
            .send(Sql::new(
                "UPDATE wallet SET n = n + 1 WHERE id = 1 RETURNING n",
            ))
            .await
            .unwrap();
        assert_eq!(rows[0]["n"], serde_json::json!(1));
        warden.shutdown(Duration::from_secs(2)).await;
    });
}

/// Failing calls at full speed from 32 callers, the circuit cycling open and closed: the
/// breaker hears only of transitions, so its mailbox stays empty and memory flat. Runs for
/// `WARDEN_STORM_SECS` (10 by default; `scripts/chaos` runs 60).
#[test]
fn a_storm_of_failing_calls_keeps_the_breaker_idle_and_memory_flat() {
    let pg = PgServer::start();
    let secs: u64 = std::env::var("WARDEN_STORM_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    actix_test(async {
        let mut s = settings(&pg);
        s.breaker.failure_threshold = 5;
        s.breaker.cooldown = Duration::from_millis(200);
        s.postgres.probe_interval = Duration::from_millis(50);
        s.postgres.probe_timeout = Duration::from_millis(45);
        let warden = connected(s).await;
        let handle = warden.postgres_handle();
        let fail = "DO $$ BEGIN RAISE EXCEPTION 'overloaded' USING ERRCODE = '53200'; END $$";
        let storm = |until: Instant| {
            let callers = (0..32).map(|_| {
                let handle = handle.clone();
                async move {
                    let (mut failed, mut refused) = (0u64, 0u64);
                    while Instant::now() < until {
                        match handle.send(Sql::new(fail)).await {
                            Err(WardenError::Query { .. }) => failed += 1,
                            Err(WardenError::CircuitOpen { .. }) => {
                                refused += 1;
                                // A refusal is ready at once; let the other callers run.
                                tokio::task::yield_now().await;
                            }
                            other => panic!("{other:?}"),
                        }
                    }
                    (failed, refused)
                }
            });
            futures_util::future::join_all(callers)
        };
        // Warm up allocators and pools before the baseline.
        storm(Instant::now() + Duration::from_secs(1)).await;
        let before = support::rss_kib();
        let totals = storm(Instant::now() + Duration::from_secs(secs)).await;
        let after = support::rss_kib();
        let (failed, refused) = totals.iter().fold((0, 0), |(f, r), (a, b)| (f + a, r + b));
        eprintln!(
            "storm: {failed} failed, {refused} refused in {secs}s; RSS {before} -> {after} kB"
        );
        assert!(failed > 100, "the storm reached the database: {failed}");
        assert!(
            after.saturating_sub(before) < 5 * 1024,
            "RSS grew from {before} to {after} kB"
        );
        // The breaker answers at once: nothing queued behind this question.
        let asked = Instant::now();
        warden
            .breaker
            .send(warden_actors::breaker::GetCircuit(Database::Postgres))
            .await
            .unwrap();
        assert!(
            asked.elapsed() < Duration::from_millis(100),
            "{:?}",
            asked.elapsed()
        );
        warden.shutdown(Duration::from_secs(2)).await;
    });
}
