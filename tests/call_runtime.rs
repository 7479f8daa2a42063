//! Calls hosted on the application's own tokio runtime (`WardenBuilder::call_runtime`), against
//! real throwaway PostgreSQL clusters (and FalkorDB behind the Bolt bridge for the graph): a
//! hosted call runs inside the caller's task; an application that keeps every worker of its
//! runtime busy cannot delay the detection of a kill -9 nor health; a runtime dropped before
//! warden gives a typed error. The guarantees both modes share (deadline, no doubled write,
//! circuit, drain, connection cap) are the tests in `postgres.rs` run in both modes.
//!
//! What a stand-in cannot show: the saturation here is two busy loops on a 2-core machine
//! shared with other builds, so "saturated" means every worker of the application's runtime is
//! held, not that the machine has no CPU left for warden's arbiter (the OS still schedules it,
//! as it would on a real server).

mod support;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use serde_json::json;
use support::{
    actix_test, eventually, fast_settings,
    mode::{app_runtime, Host, Mode},
    no_graph,
    pg::PgServer,
    pg_connected,
};
use warden_actors::{Cypher, Database, Sql, Warden, WardenError, WithPool};

/// The name of the thread a `WithPool` closure runs on.
async fn pool_thread(postgres: &warden_actors::PostgresHandle) -> String {
    postgres
        .send(WithPool::new(|pool| {
            Box::pin(async move {
                sqlx::query("SELECT 1").execute(&pool).await?;
                Ok(std::thread::current().name().unwrap_or("").to_owned())
            })
        }))
        .await
        .expect("a pool handle")
}

/// A hosted call awaited on the application's runtime runs on its threads (inside the
/// caller's task); awaited elsewhere, or sent to the actor's address, it is spawned there.
/// Warden starts no I/O threads of its own for a hosted pool.
#[test]
fn hosted_calls_run_on_the_applications_runtime() {
    let pg = PgServer::start();
    let host = Host::new(Mode::Hosted);
    actix_test(async {
        let warden = host.pg_started(fast_settings(&no_graph(), &pg.url())).await;
        let postgres = warden.postgres_handle();

        let here = postgres.clone();
        let (caller, pooled) = host
            .spawn(async move {
                let caller = std::thread::current().name().unwrap_or("").to_owned();
                (caller, pool_thread(&here).await)
            })
            .await
            .unwrap();
        assert!(caller.starts_with("app-"), "{caller}");
        assert!(pooled.starts_with("app-"), "{pooled}");
        // Inside the caller's own task, not a task spawned for it: no hand-off at all.
        let here = postgres.clone();
        let (caller_task, call_task) = host
            .spawn(async move {
                let caller_task = tokio::task::id();
                let call_task = here
                    .send(WithPool::new(|_pool| {
                        Box::pin(async move { Ok(tokio::task::try_id()) })
                    }))
                    .await
                    .unwrap();
                (caller_task, call_task)
            })
            .await
            .unwrap();
        assert_eq!(
            Some(caller_task),
            call_task,
            "the call ran in a task of its own"
        );
        // From the test's own thread (another runtime): spawned on the application's.
        assert!(pool_thread(&postgres).await.starts_with("app-"));
        let rows = warden
            .postgres
            .send(Sql::new("SELECT $1::int AS n").bind(5))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rows[0]["n"], json!(5));
        let io_threads = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|name| name.starts_with("warden-pg-io"))
            .count();
        assert_eq!(
            io_threads, 0,
            "a hosted pool needs no I/O threads of warden's"
        );

        // A caller that stops waiting does not stop the call: the insert still lands.
        let _ = warden
            .postgres
            .send(Sql::new("CREATE TABLE dropped_waits (n int)"))
            .await
            .unwrap();
        let here = postgres.clone();
        host.spawn(async move {
            let call = here.send(Sql::new(
                "INSERT INTO dropped_waits SELECT 1 FROM pg_sleep(0.2)",
            ));
            // Polled inline once, then dropped mid-statement.
            let _ = tokio::time::timeout(Duration::from_millis(50), call).await;
        })
        .await
        .unwrap();
        let admin = pg.admin().await;
        eventually(Duration::from_secs(3), "the abandoned insert lands", || {
            let admin = admin.clone();
            async move {
                let n: i64 = sqlx::query_scalar("SELECT count(*) FROM warden.dropped_waits")
                    .fetch_one(&admin)
                    .await
                    .unwrap();
                (n == 1).then_some(())
            }
        })
        .await;
        warden.shutdown(Duration::from_secs(2)).await;
    });
}

/// Every worker of the application's runtime held in a CPU loop: a kill -9 of PostgreSQL is
/// still seen within probe_interval + probe_timeout, health (the handle and HTTP) answers in
/// under 100 ms throughout, and once the application lets go, its calls run again after the
/// server is back.
#[test]
fn a_saturated_application_cannot_delay_detection_or_health() {
    let pg = PgServer::start();
    let host = Host::new(Mode::Hosted);
    actix_test(async {
        let settings = fast_settings(&no_graph(), &pg.url());
        let detect_bound = settings.postgres.probe_interval + settings.postgres.probe_timeout;
        let warden = host.pg_started(settings).await;
        let health = warden.health_handle();
        let http = support::serve_health(&warden);
        let postgres = warden.postgres_handle();
        let p = postgres.clone();
        let rows = host
            .spawn(async move { p.send(Sql::new("SELECT 1 AS one")).await })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rows[0]["one"], json!(1));

        // Saturate: more busy loops than workers, none of which ever yields.
        let spin = Arc::new(AtomicBool::new(true));
        for _ in 0..4 {
            let spin = spin.clone();
            drop(host.spawn(async move {
                while spin.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            }));
        }
        // The saturation is real: a no-op task on the application's runtime does not run.
        let noop = host.spawn(async {});
        assert!(
            tokio::time::timeout(Duration::from_millis(300), noop)
                .await
                .is_err(),
            "the application's runtime still ran a task"
        );

        let killed = Instant::now();
        pg.kill9();
        let mut slowest = Duration::ZERO;
        loop {
            let asked = Instant::now();
            let view = health.view();
            let status = support::http_status(&format!("{http}/health/detailed")).await;
            slowest = slowest.max(asked.elapsed());
            assert_eq!(status, 200);
            if !view.components[&Database::Postgres].healthy {
                break;
            }
            assert!(
                killed.elapsed() < detect_bound + Duration::from_secs(2),
                "postgres still healthy"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let detected = killed.elapsed();
        assert!(
            detected <= detect_bound + Duration::from_millis(150),
            "detection took {detected:?} with the application saturated, bound {detect_bound:?}"
        );
        for _ in 0..20 {
            let asked = Instant::now();
            let _ = health.view();
            let status = support::http_status(&format!("{http}/health")).await;
            slowest = slowest.max(asked.elapsed());
            assert_eq!(status, 200);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            slowest < Duration::from_millis(100),
            "health took {slowest:?} while the application was saturated"
        );
        // Refusals are answered on the caller's thread, not on the busy runtime.
        let started = Instant::now();
        let err = postgres.send(Sql::new("SELECT 1")).await.unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        assert!(started.elapsed() < Duration::from_millis(100));

        spin.store(false, Ordering::Relaxed);
        pg.restart();
        pg_connected(&warden).await;
        let rows = eventually(Duration::from_secs(5), "hosted calls run again", || {
            let p = postgres.clone();
            let call = host.spawn(async move { p.send(Sql::new("SELECT 1 AS one")).await });
            async move { call.await.unwrap().ok() }
        })
        .await;
        assert_eq!(rows[0]["one"], json!(1));
        warden.shutdown(Duration::from_secs(2)).await;
    });
}

/// The application drops its runtime before warden: calls in flight there and every call after
/// end at once with `CallRuntimeGone` (through a handle and through the address), health
/// still answers, and the shutdown afterwards keeps to its timeout. No hang, no panic.
#[test]
fn a_call_runtime_dropped_before_warden_gives_a_typed_error() {
    let pg = PgServer::start();
    let app = app_runtime();
    actix_test(async {
        let warden = Warden::builder(fast_settings(&no_graph(), &pg.url()))
            .call_runtime(app.handle().clone())
            .start()
            .unwrap();
        pg_connected(&warden).await;
        let postgres = warden.postgres_handle();
        let rows = postgres.send(Sql::new("SELECT 1 AS one")).await.unwrap();
        assert_eq!(rows[0]["one"], json!(1));

        // One call in flight on the application's runtime, awaited from here.
        let in_flight = postgres.send(Sql::new("SELECT pg_sleep(5)"));
        let in_flight = tokio::spawn(in_flight);
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The application ends: its runtime goes, from its own thread, as `main` would.
        std::thread::spawn(move || drop(app)).join().unwrap();

        let started = Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(2), in_flight)
            .await
            .expect("the call in flight ended")
            .unwrap()
            .unwrap_err();
        assert_eq!(
            err,
            WardenError::CallRuntimeGone {
                database: Database::Postgres
            }
        );
        let err = tokio::time::timeout(Duration::from_secs(2), postgres.send(Sql::new("SELECT 1")))
            .await
            .expect("answered")
            .unwrap_err();
        assert!(
            matches!(err, WardenError::CallRuntimeGone { .. }),
            "{err:?}"
        );
        assert!(!err.is_transient() && !err.counts_against_circuit());
        assert!(
            err.to_string().contains("call runtime has shut down"),
            "{err}"
        );
        let by_address = tokio::time::timeout(
            Duration::from_secs(2),
            warden.postgres.send(Sql::new("SELECT 1")),
        )
        .await
        .expect("answered")
        .expect("an answer, not a closed mailbox");
        assert!(
            matches!(by_address, Err(WardenError::CallRuntimeGone { .. })),
            "{by_address:?}"
        );
        // The graph's calls were hosted there too; it is not connected, so it refuses first.
        let refused = warden
            .neo4j_handle()
            .send(Cypher::new("RETURN 1"))
            .await
            .unwrap_err();
        assert!(
            matches!(refused, WardenError::Unavailable { .. }),
            "{refused:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
        // Health is warden's own: still there, still probing.
        let view = warden.health_handle().view();
        assert!(view.components[&Database::Postgres].healthy, "{view:?}");

        let stopping = Instant::now();
        warden.shutdown(Duration::from_secs(2)).await;
        assert!(stopping.elapsed() < Duration::from_secs(3));
    });
}

/// A current-thread runtime is refused when warden starts: it runs nothing unless its owner
/// blocks on it, so calls spawned there could outlive their deadline.
#[test]
fn a_current_thread_call_runtime_is_refused() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    actix_test(async {
        let err = Warden::builder(fast_settings(&no_graph(), &no_graph()))
            .call_runtime(rt.handle().clone())
            .start()
            .err()
            .expect("refused");
        assert_eq!(err.key, "call_runtime");
        assert!(err.reason.contains("multi-threaded"), "{err}");
    });
}

/// The graph's calls are hosted too (FalkorDB behind the Bolt bridge): `Cypher` answers, and a
/// `WithGraph` closure awaited on the application's runtime runs inside the caller's task.
/// What FalkorDB cannot show: Neo4j's own server behaviour under such calls; the client side
/// (neo4rs, its pool, its sockets) is the same.
#[test]
fn hosted_graph_calls_run_inside_the_callers_task() {
    let graph = support::graph::GraphServer::start();
    let host = Host::new(Mode::Hosted);
    actix_test(async {
        let pg = format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            support::free_port()
        );
        let warden = host.start(fast_settings(&graph.uri(), &pg));
        let h = warden.health_handle();
        eventually(Duration::from_secs(10), "neo4j connected", || {
            let v = h.view();
            async move {
                (v.components[&Database::Neo4j].status
                    == warden_actors::health::ComponentStatus::Connected)
                    .then_some(())
            }
        })
        .await;
        let neo4j = warden.neo4j_handle();
        let rows = neo4j.send(Cypher::new("RETURN 3 AS n")).await.unwrap();
        assert_eq!(rows[0]["n"], json!(3));
        let here = neo4j.clone();
        let (caller_task, thread, call_task) = host
            .spawn(async move {
                let caller_task = tokio::task::id();
                let (thread, call_task) = here
                    .send(warden_actors::WithGraph::new(|graph| {
                        Box::pin(async move {
                            graph.run(neo4rs::query("RETURN 1")).await?;
                            Ok((
                                std::thread::current().name().unwrap_or("").to_owned(),
                                tokio::task::try_id(),
                            ))
                        })
                    }))
                    .await
                    .unwrap();
                (caller_task, thread, call_task)
            })
            .await
            .unwrap();
        assert!(thread.starts_with("app-"), "{thread}");
        assert_eq!(
            Some(caller_task),
            call_task,
            "the call ran in a task of its own"
        );
        warden.shutdown(Duration::from_secs(2)).await;
    });
}
