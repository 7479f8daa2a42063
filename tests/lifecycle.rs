//! An embedded warden's life: every actor's death is fatal, a dropped `Warden` stops what it
//! started, and `shutdown` keeps to its timeout even when an actor is stuck.

mod support;

use std::time::{Duration, Instant};

use support::{
    actix_test, eventually, fast_settings, hold_arbiter, no_graph, pg::PgServer, pg_started,
};
use warden_actors::Warden;

async fn connected(pg: &PgServer) -> Warden {
    pg_started(fast_settings(&no_graph(), &pg.url())).await
}

/// Threads of this process whose name starts with `prefix` (names are cut at 15 bytes).
fn threads(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

async fn warden_backends(admin: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'warden'")
        .fetch_one(admin)
        .await
        .expect("count")
}

#[test]
fn a_dead_breaker_or_health_actor_is_fatal() {
    let pg = PgServer::start();
    for actor in ["breaker", "health"] {
        actix_test(async {
            let warden = connected(&pg).await;
            match actor {
                "breaker" => warden.breaker.do_send(warden_actors::faults::Crash),
                _ => warden.health.do_send(warden_actors::faults::Crash),
            }
            let reason = tokio::time::timeout(Duration::from_secs(5), warden.fatal())
                .await
                .unwrap_or_else(|_| panic!("a dead {actor} actor fires the fatal signal"));
            assert_eq!(reason, format!("{actor} actor panicked"));
            warden.shutdown(Duration::from_secs(2)).await;
        });
    }
}

#[test]
fn an_orderly_shutdown_is_not_fatal() {
    let pg = PgServer::start();
    actix_test(async {
        let warden = connected(&pg).await;
        warden.shutdown(Duration::from_secs(2)).await;
        // The actors' thread has stopped and dropped all four actors by now.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let fired = tokio::time::timeout(Duration::from_millis(200), warden.fatal()).await;
        assert!(
            fired.is_err(),
            "fatal fired after an orderly stop: {fired:?}"
        );
    });
}

#[test]
fn a_dropped_warden_stops_its_actors_threads_and_connections() {
    let pg = PgServer::start();
    actix_test(async {
        let admin = pg.admin().await;
        let arbiters_before = threads("actix-rt|system");
        let warden = connected(&pg).await;
        // The pool's I/O threads and its connections, beside the probe's.
        warden
            .postgres_handle()
            .send(warden_actors::Sql::new("SELECT 1"))
            .await
            .unwrap();
        assert!(threads("warden-pg-io") > 0);
        assert!(threads("actix-rt|system") > arbiters_before);
        assert!(warden_backends(&admin).await >= 2);

        drop(warden);
        eventually(
            Duration::from_secs(5),
            "everything warden started has stopped",
            || async {
                let left = (
                    threads("warden-pg-io"),
                    threads("actix-rt|system") - arbiters_before,
                    warden_backends(&admin).await,
                );
                (left == (0, 0, 0)).then_some(())
            },
        )
        .await;
    });
}

#[test]
fn shutdown_keeps_to_its_timeout_when_an_actor_is_stuck() {
    let pg = PgServer::start();
    actix_test(async {
        let warden = connected(&pg).await;
        let release = hold_arbiter(&warden);
        let started = Instant::now();
        warden.shutdown(Duration::from_millis(500)).await;
        let took = started.elapsed();
        drop(release);
        assert!(
            took < Duration::from_millis(700),
            "shutdown(500ms) took {took:?} with a stuck actor"
        );
    });
}
