//! Runtime settings from the `config` table, against a throwaway PostgreSQL: a change made with
//! `psql` is in force within a second (the circuit opens at the new threshold); one made while
//! warden's listening connection is down arrives with the next read (after the reconnect, at
//! the latest one poll later); a bad table changes nothing and says why.
//!
//! The changes go through `psql`, as an operator would make them. What this cannot show: a
//! notification lost on a real network partition rather than an administrator's
//! `pg_terminate_backend` (both leave the listener with a dead connection; the reconnect and
//! the poll that catch up are the same).

mod support;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use support::{actix_test, eventually, fast_settings, no_graph, pg::PgServer, pg_started};
use warden_actors::{
    circuit::CircuitStatus, runtime::TableSettings, Database, Sql, Warden, WardenSettings,
};

/// Runs `sql` with psql as the cluster's superuser, the way an operator changes a setting.
fn psql(pg: &PgServer, sql: &str) {
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &pg.url(),
            "-c",
            sql,
        ])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn settings(pg: &PgServer) -> WardenSettings {
    let mut s = fast_settings(&no_graph(), &pg.url());
    s.retry.max_attempts = 1;
    s.postgres.max_connections = 8;
    s.postgres.query_timeout = Duration::from_millis(300);
    s.breaker.cooldown = Duration::from_secs(60);
    s
}

/// The poll interval of these tests: short, so that "within one poll" is quick to check.
const POLL: Duration = Duration::from_secs(2);

/// A warden following the table, once it has read it (the migrations have run).
async fn following(pg: &PgServer) -> Warden {
    let warden = pg_started(settings(pg)).await;
    warden.follow_config_table(TableSettings {
        enabled: true,
        poll_interval: POLL,
    });
    let runtime = warden.runtime_settings();
    eventually(Duration::from_secs(10), "the table read once", || {
        let s = runtime.status();
        async move { (s.listening && s.checked_at.is_some()).then_some(()) }
    })
    .await;
    warden
}

fn threshold(warden: &Warden) -> u32 {
    warden
        .runtime_settings()
        .current()
        .breaker
        .failure_threshold
}

#[test]
fn a_psql_update_is_in_force_within_a_second_and_opens_the_circuit_at_the_new_threshold() {
    let pg = PgServer::start();
    actix_test(async {
        let warden = following(&pg).await;
        assert_eq!(threshold(&warden), 5, "the file's value before any row");
        psql(
            &pg,
            "INSERT INTO warden.config (key, value) VALUES ('breaker.failure_threshold', '4')",
        );
        eventually(Duration::from_secs(1), "threshold 4", || async {
            (threshold(&warden) == 4).then_some(())
        })
        .await;

        let changed = Instant::now();
        psql(
            &pg,
            "UPDATE warden.config SET value = '2' WHERE key = 'breaker.failure_threshold'",
        );
        eventually(Duration::from_secs(1), "threshold 2 within 1 s", || async {
            (threshold(&warden) == 2).then_some(())
        })
        .await;
        let took = changed.elapsed();
        // Health shows the circuit's new threshold (the breaker got it too).
        let health = warden.health_handle();
        eventually(Duration::from_secs(1), "health shows threshold 2", || {
            let c = health.view().components[&Database::Postgres]
                .circuit
                .clone();
            async move { (c.threshold == 2 && c.window == 4).then_some(()) }
        })
        .await;
        let status = warden.runtime_settings().status();
        assert_eq!(status.version, 2, "{status:?}");
        assert_eq!(
            status.table_keys,
            vec!["breaker.failure_threshold".to_owned()]
        );

        // Two calls that run past the 300 ms deadline: the file's threshold (5) would keep the
        // circuit closed; the table's (2) opens it.
        let handle = warden.postgres_handle();
        for _ in 0..2 {
            let err = handle
                .send(Sql::new("SELECT pg_sleep(1)"))
                .await
                .unwrap_err();
            assert!(err.counts_against_circuit(), "{err:?}");
        }
        eventually(
            Duration::from_secs(1),
            "circuit open after 2 failures",
            || {
                let c = health.view().components[&Database::Postgres]
                    .circuit
                    .clone();
                async move { (c.state == CircuitStatus::Open).then_some(()) }
            },
        )
        .await;
        eprintln!("update to in force: {took:?}");
        warden.shutdown(Duration::from_secs(2)).await;
    });
}

#[test]
fn a_change_made_while_the_listener_is_down_arrives_within_one_poll() {
    let pg = PgServer::start();
    actix_test(async {
        let warden = following(&pg).await;
        let runtime = warden.runtime_settings();
        // Refuse new connections to the database (from another one: a database cannot
        // refuse itself), end the listener's session, and change the table through a session
        // opened before, while the listener cannot come back: the notification goes nowhere.
        let admin = pg.admin().await;
        sqlx::query("SELECT 1").execute(&admin).await.unwrap();
        let url = pg.url();
        let template1 = format!("{}/template1", &url[..url.rfind('/').unwrap()]);
        let psql_other = |sql: &str| {
            let out = Command::new("psql")
                .args([
                    "-X",
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-d",
                    &template1,
                    "-c",
                    sql,
                ])
                .output()
                .expect("psql");
            assert!(
                out.status.success(),
                "{sql}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        psql_other("ALTER DATABASE postgres ALLOW_CONNECTIONS false");
        psql_other(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'warden-settings'",
        );
        eventually(Duration::from_secs(3), "the listener noticed", || {
            let s = runtime.status();
            async move { (!s.listening).then_some(()) }
        })
        .await;
        sqlx::query(
            "INSERT INTO warden.config (key, value) VALUES ('breaker.cooldown', '\"45s\"')",
        )
        .execute(&admin)
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            runtime.current().breaker.cooldown,
            Duration::from_secs(60),
            "nothing can have told warden yet"
        );
        psql_other("ALTER DATABASE postgres ALLOW_CONNECTIONS true");
        let changed = Instant::now();
        eventually(
            POLL + Duration::from_secs(1),
            "cooldown 45s within one poll",
            || async {
                (runtime.current().breaker.cooldown == Duration::from_secs(45)).then_some(())
            },
        )
        .await;
        eprintln!(
            "change while disconnected in force after {:?}",
            changed.elapsed()
        );
        assert!(runtime.status().listening);
        warden.shutdown(Duration::from_secs(2)).await;
    });
}

#[test]
fn an_invalid_table_changes_nothing_and_says_why() {
    let pg = PgServer::start();
    actix_test(async {
        let warden = following(&pg).await;
        let runtime = warden.runtime_settings();
        psql(
            &pg,
            "INSERT INTO warden.config VALUES ('breaker.failure_threshold', '3')",
        );
        eventually(Duration::from_secs(1), "threshold 3", || async {
            (threshold(&warden) == 3).then_some(())
        })
        .await;
        let before = runtime.status();

        for (sql, key, says) in [
            (
                "UPDATE warden.config SET value = '\"abc\"' WHERE key = 'breaker.failure_threshold'",
                "breaker.failure_threshold",
                "\"abc\"",
            ),
            (
                "UPDATE warden.config SET value = '-1' WHERE key = 'breaker.failure_threshold'",
                "breaker.failure_threshold",
                "-1",
            ),
            (
                "UPDATE warden.config SET value = '3' WHERE key = 'breaker.failure_threshold'; \
                 INSERT INTO warden.config VALUES ('postgres.max_connections', '50')",
                "postgres.max_connections",
                "restart",
            ),
        ] {
            psql(&pg, sql);
            let status = eventually(Duration::from_secs(1), "the table refused", || {
                let s = runtime.status();
                let refused = s.error_key.as_deref() == Some(key)
                    && s.last_error.as_deref().is_some_and(|e| e.contains(says));
                async move { refused.then_some(s) }
            })
            .await;
            assert_eq!(status.version, before.version, "nothing applied: {status:?}");
            assert_eq!(threshold(&warden), 3);
            psql(&pg, "DELETE FROM warden.config WHERE key = 'postgres.max_connections'");
        }
        // Fixed: accepted again, the error gone.
        psql(
            &pg,
            "UPDATE warden.config SET value = '7' WHERE key = 'breaker.failure_threshold'",
        );
        eventually(Duration::from_secs(1), "threshold 7, no error", || async {
            let s = runtime.status();
            (threshold(&warden) == 7 && s.last_error.is_none()).then_some(())
        })
        .await;
        warden.shutdown(Duration::from_secs(2)).await;
    });
}
