//! PostgreSQL against real throwaway clusters: rows and types, kill -9 and recovery, the
//! breaker, connection bounds across flaps, the backoff schedule, migrations.

mod support;

use std::time::{Duration, Instant};

use futures_util::FutureExt;
use serde_json::{json, Value};
use support::{
    actix_test, eventually, fast_settings, hold_arbiter,
    mode::{Host, Mode},
    no_graph,
    pg::PgServer,
    pg_connected, pg_started as connected,
    proxy::Proxy,
};
use warden_actors::{health::ComponentStatus, Cypher, Database, Sql, Warden, WardenError};

/// Fast settings for a warden that reaches PostgreSQL through `proxy`.
fn through(proxy: &Proxy) -> warden_actors::WardenSettings {
    fast_settings(
        &no_graph(),
        &format!("postgres://postgres@127.0.0.1:{}/postgres", proxy.port),
    )
}

/// Pooled connections idle right now (released, and checked by sqlx's release ping).
async fn idle_connections(warden: &Warden) -> usize {
    warden
        .postgres
        .send(warden_actors::WithPool::new(|pool| {
            Box::pin(async move { Ok(pool.num_idle()) })
        }))
        .await
        .expect("mailbox")
        .expect("a pool handle")
}

/// Waits until `n` pooled connections are idle.
async fn until_idle(warden: &Warden, n: usize) {
    eventually(Duration::from_secs(2), "connections idle", || async {
        (idle_connections(warden).await == n).then_some(())
    })
    .await;
}

async fn warden_connections(admin: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'warden'")
        .fetch_one(admin)
        .await
        .expect("count connections")
}

/// Warden's connections as pg_stat_activity lists them at a steady moment. A backend whose
/// client has gone lingers there until the server notices (tens of milliseconds on a busy
/// machine); a second look after a pause tells such a backend from a connection still held.
async fn settled_warden_connections(admin: &sqlx::PgPool, max: i64) -> i64 {
    let first = warden_connections(admin).await;
    if first <= max {
        return first;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    warden_connections(admin).await
}

/// How many migrations the repository holds: each applied once, whatever was added since.
fn migration_files() -> i64 {
    let files = std::fs::read_dir(support::repo().join("migrations"))
        .expect("migrations/")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
        })
        .count();
    i64::try_from(files).expect("a few files")
}

/// `Sql` returns one JSON object per row with common types mapped, binds parameters
/// positionally, and the migrations created `warden.config`.
#[test]
fn sql_returns_typed_rows_and_binds_params() {
    let pg = PgServer::start();
    actix_test(async {
        let warden = connected(fast_settings(&no_graph(), &pg.url())).await;
        let rows = warden
            .postgres
            .send(
                Sql::new(
                    "SELECT $1::int4 AS n, $2 AS s, $3::uuid AS u, \
                     '2026-01-02T03:04:05Z'::timestamptz AS t, 12345678901234567890.50::numeric AS d, \
                     '{\"a\": [1, 2]}'::jsonb AS j, NULL::text AS z, true AS b, 2.5::float8 AS f, \
                     $4::bigint IS NULL AS null_param, ARRAY['x','y'] AS arr",
                )
                .bind(7)
                .bind("wallet")
                .bind("6f1c1c1e-8a0e-4e59-9d2a-2b8e6b0c1a11")
                .bind(Value::Null),
            )
            .await
            .expect("mailbox")
            .expect("query");
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(r["n"], json!(7));
        assert_eq!(r["s"], json!("wallet"));
        assert_eq!(r["u"], json!("6f1c1c1e-8a0e-4e59-9d2a-2b8e6b0c1a11"));
        assert_eq!(r["t"], json!("2026-01-02T03:04:05Z"));
        assert_eq!(r["d"], json!("12345678901234567890.50"));
        assert_eq!(r["j"], json!({"a": [1, 2]}));
        assert_eq!(r["z"], Value::Null);
        assert_eq!(r["b"], json!(true));
        assert_eq!(r["f"], json!(2.5));
        assert_eq!(r["null_param"], json!(true));
        assert_eq!(r["arr"], json!(["x", "y"]));

        // The migrated table, through search_path, with a jsonb parameter and an untyped NULL.
        let rows = warden
            .postgres
            .send(
                Sql::new("INSERT INTO config (key, value) VALUES ($1, $2) RETURNING key, value, updated_at")
                    .bind("thresholds")
                    .bind(json!({"min": 1})),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rows[0]["value"], json!({"min": 1}));
        assert!(rows[0]["updated_at"].as_str().unwrap().ends_with('Z'));
        let rows = warden
            .postgres
            .send(Sql::new(
                "SELECT count(*) AS n FROM warden._sqlx_migrations",
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rows[0]["n"], json!(migration_files()));

        // The caller's mistake comes back typed, with the SQLSTATE, and is not transient.
        let err = warden
            .postgres
            .send(Sql::new("SELEC 1"))
            .await
            .unwrap()
            .unwrap_err();
        match &err {
            WardenError::Query {
                code, transient, ..
            } => {
                assert_eq!(code, "42601");
                assert!(!transient);
            }
            other => panic!("expected a query error, got {other:?}"),
        }
        warden.shutdown(Duration::from_secs(2)).await;
    });
}

/// A row with a column that has no JSON mapping fails the call with `Conversion`, naming the
/// column, after the whole statement ran and every row was read: the one pooled connection
/// serves the next call at once, and an `INSERT ... RETURNING` wrote all its rows.
#[test]
fn a_row_that_cannot_be_converted_fails_the_call_and_the_connection_stays_usable() {
    let pg = PgServer::start();
    actix_test(async {
        let mut settings = fast_settings(&no_graph(), &pg.url());
        // One pooled connection (and the probe's): every call below runs on the same one.
        settings.postgres.max_connections = 2;
        let warden = connected(settings).await;
        let err = warden
            .postgres
            .send(Sql::new(
                "INSERT INTO config (key, value) SELECT 'conv-' || x, '{}'::jsonb \
                 FROM generate_series(1, 3) x \
                 RETURNING key, CASE WHEN key = 'conv-2' THEN point(1, 1) END AS p",
            ))
            .await
            .unwrap()
            .unwrap_err();
        match &err {
            WardenError::Conversion { message, .. } => {
                assert!(message.contains("column `p`"), "{message}");
                assert!(message.contains("no JSON mapping"), "{message}");
            }
            other => panic!("expected a conversion error, got {other:?}"),
        }
        assert!(!err.is_transient());
        let rows = warden
            .postgres
            .send(Sql::new(
                "SELECT count(*) AS n FROM config WHERE key LIKE 'conv-%'",
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rows[0]["n"], json!(3));
        let rows = warden
            .postgres
            .send(Sql::new("SELECT 41 + 1 AS n"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rows, vec![json!({"n": 42}).as_object().unwrap().clone()]);
        warden.shutdown(Duration::from_secs(2)).await;
    });
}

/// kill -9 of PostgreSQL (with the graph up, so readiness hinges on it): health turns
/// unhealthy within probe_interval + probe_timeout and `/health/ready` 503, calls in flight and
/// new ones end with errors within query_timeout, and after a restart warden is connected
/// again within the pending backoff delay + 1 s, and ready again.
#[test]
fn postgres_kill9_is_detected_and_recovered() {
    kill9_detected_and_recovered(Mode::Own);
}

/// The same, with the calls hosted on the application's runtime.
#[test]
fn postgres_kill9_is_detected_and_recovered_hosted() {
    kill9_detected_and_recovered(Mode::Hosted);
}

// The body of the two tests above: a panic is how it fails, as in any test.
#[allow(clippy::unwrap_used)]
fn kill9_detected_and_recovered(mode: Mode) {
    let pg = PgServer::start();
    let graph = support::graph::GraphServer::start();
    let host = Host::new(mode);
    actix_test(async {
        let settings = fast_settings(&graph.uri(), &pg.url());
        let query_timeout = settings.postgres.query_timeout;
        let detect_bound = settings.postgres.probe_interval + settings.postgres.probe_timeout;
        let warden = host.start(settings);
        let health = warden.health_handle();
        let http = support::serve_health(&warden);
        pg_connected(&warden).await;
        support::until_status(&format!("{http}/health/ready"), 200, Duration::from_secs(5)).await;

        // Calls in flight when the server dies: sent to the address, and through a handle by
        // callers on the application's side (inside their own tasks when hosted).
        let mut in_flight: Vec<_> = (0..2)
            .map(|_| {
                let addr = warden.postgres.clone();
                actix::spawn(async move {
                    let started = Instant::now();
                    let result = addr
                        .send(Sql::new("SELECT pg_sleep(10)"))
                        .await
                        .expect("mailbox");
                    (result, started.elapsed())
                })
            })
            .collect();
        for _ in 0..2 {
            let postgres = warden.postgres_handle();
            in_flight.push(host.spawn(async move {
                let started = Instant::now();
                let result = postgres.send(Sql::new("SELECT pg_sleep(10)")).await;
                (result, started.elapsed())
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;

        let killed = Instant::now();
        pg.kill9();
        let h = health.clone();
        eventually(
            detect_bound + Duration::from_secs(1),
            "postgres unhealthy",
            || {
                let v = h.view();
                async move { (!v.components[&Database::Postgres].healthy).then_some(()) }
            },
        )
        .await;
        let detected = killed.elapsed();
        assert!(
            detected <= detect_bound + Duration::from_millis(150),
            "detection took {detected:?}, bound {detect_bound:?}"
        );
        assert!(!health.view().ready());
        assert_eq!(
            support::http_status(&format!("{http}/health/ready")).await,
            503
        );

        for call in in_flight {
            let (result, took) = call.await.expect("task");
            assert!(
                result.is_err(),
                "a call in flight must fail, got {result:?}"
            );
            assert!(
                took <= query_timeout + Duration::from_millis(200),
                "call took {took:?}"
            );
        }
        let started = Instant::now();
        let err = warden
            .postgres
            .send(Sql::new("SELECT 1"))
            .await
            .unwrap()
            .unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "refusal took {:?}",
            started.elapsed()
        );

        // Let it back off a few times, then bring the server back.
        tokio::time::sleep(Duration::from_millis(800)).await;
        let pending = health.view().components[&Database::Postgres]
            .next_attempt_at
            .map(|at| (at - chrono::Utc::now()).to_std().unwrap_or_default())
            .unwrap_or_default();
        pg.restart();
        let restarted = Instant::now();
        pg_connected(&warden).await;
        let recovered = restarted.elapsed();
        assert!(
            recovered <= pending + Duration::from_secs(1),
            "recovery took {recovered:?}, pending backoff {pending:?}"
        );
        // Failed connects count against the circuit too: calls pass again once a probe has
        // closed it after its cooldown.
        let rows = eventually(Duration::from_secs(3), "calls succeed again", || {
            let addr = warden.postgres.clone();
            async move { addr.send(Sql::new("SELECT 1 AS one")).await.unwrap().ok() }
        })
        .await;
        assert_eq!(rows[0]["one"], json!(1));
        let restarts = health.view().components[&Database::Postgres].restarts;
        assert!(restarts >= 1, "the actor restarted under its supervisor");
        support::until_status(&format!("{http}/health/ready"), 200, Duration::from_secs(3)).await;
        warden.shutdown(Duration::from_secs(2)).await;
    });
}

/// Five consecutive transient failures open the circuit; calls then fail fast with
/// `CircuitOpen` and a `retry_after`; after the cooldown a probe closes it. The caller's own
/// mistakes never count.
#[test]
fn breaker_opens_on_transient_failures_and_a_probe_closes_it() {
    breaker_opens_and_a_probe_closes_it(Mode::Own);
}

/// The same, with the calls hosted on the application's runtime.
#[test]
fn breaker_opens_on_transient_failures_and_a_probe_closes_it_hosted() {
    breaker_opens_and_a_probe_closes_it(Mode::Hosted);
}

// The body of the two tests above: a panic is how it fails, as in any test.
#[allow(clippy::unwrap_used)]
fn breaker_opens_and_a_probe_closes_it(mode: Mode) {
    let pg = PgServer::start();
    let host = Host::new(mode);
    actix_test(async {
        let mut settings = fast_settings(&no_graph(), &pg.url());
        settings.retry.max_attempts = 1;
        settings.breaker.failure_threshold = 5;
        settings.breaker.cooldown = Duration::from_millis(1500);
        let warden = host.start(settings);
        let health = warden.health_handle();
        pg_connected(&warden).await;

        for _ in 0..10 {
            let err = warden
                .postgres
                .send(Sql::new("SELECT * FROM no_such_table"))
                .await
                .unwrap()
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    WardenError::Query {
                        transient: false,
                        ..
                    }
                ),
                "{err:?}"
            );
        }
        let circuit = health.view().components[&Database::Postgres]
            .circuit
            .clone();
        assert_eq!(
            circuit.recent_failures, 0,
            "caller mistakes must not count: {circuit:?}"
        );

        // 53200 out_of_memory: the server is overloaded; transient, counts against the circuit
        // (contention such as 40001 is retried but never counts; see tests/breaker.rs).
        let fail = "DO $$ BEGIN RAISE EXCEPTION 'overloaded' USING ERRCODE = '53200'; END $$";
        for i in 0..5 {
            // Through a handle on the application's side, so that a hosted call's outcome
            // (run inside the caller's task) is what reaches the breaker.
            let postgres = warden.postgres_handle();
            let err = host
                .spawn(async move { postgres.send(Sql::new(fail)).await })
                .await
                .unwrap()
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    WardenError::Query {
                        transient: true,
                        ..
                    }
                ),
                "call {i}: {err:?}"
            );
        }
        // The breaker hears outcomes asynchronously; poll for the refusal.
        let (retry_after, opened) = eventually(Duration::from_secs(2), "circuit open", || {
            let addr = warden.postgres.clone();
            async move {
                match addr.send(Sql::new("SELECT 1")).await.unwrap() {
                    Err(WardenError::CircuitOpen { retry_after, .. }) => {
                        Some((retry_after, Instant::now()))
                    }
                    _ => None,
                }
            }
        })
        .await;
        assert!(
            retry_after > Duration::ZERO && retry_after <= Duration::from_millis(1500),
            "{retry_after:?}"
        );
        let started = Instant::now();
        let err = warden
            .postgres
            .send(Sql::new("SELECT 1"))
            .await
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, WardenError::CircuitOpen { .. }));
        assert!(started.elapsed() < Duration::from_millis(50));
        let view = health.view();
        let c = &view.components[&Database::Postgres];
        assert_eq!(c.circuit.state, warden_actors::circuit::CircuitStatus::Open);
        assert!(!c.healthy && !view.ready());

        // After the cooldown the next probe (every 200 ms) closes it.
        let rows = eventually(Duration::from_secs(4), "circuit closed by a probe", || {
            let addr = warden.postgres.clone();
            async move { addr.send(Sql::new("SELECT 1 AS one")).await.unwrap().ok() }
        })
        .await;
        assert_eq!(rows[0]["one"], json!(1));
        assert!(
            opened.elapsed() >= Duration::from_millis(1300),
            "closed before the cooldown ended"
        );
        warden.shutdown(Duration::from_secs(2)).await;
    });
}

/// The refusal a handle's call is ready with on its first poll (a call that would wait or run
/// fails the test).
fn refused_at_once<T: std::fmt::Debug>(
    call: impl std::future::Future<Output = Result<T, WardenError>>,
) -> WardenError {
    match call.now_or_never() {
        Some(Err(refused)) => refused,
        other => panic!("not refused on the first poll: {other:?}"),
    }
}

/// Asserts that a handle's call is refused with `Stopped` on its first poll.
fn assert_stopped_at_once<T: std::fmt::Debug>(
    call: impl std::future::Future<Output = Result<T, WardenError>>,
) {
    let refused = refused_at_once(call);
    assert!(
        matches!(refused, WardenError::Stopped { .. }),
        "{refused:?}"
    );
}

/// A handle runs PostgreSQL calls on the pool's I/O threads without the actor, and answers
/// the refusals an actor would answer at once (open circuit, no connection, stopped) on the
/// caller's thread: both work while the actors' arbiter is held, when a message to the
/// address cannot be answered at all.
#[test]
fn a_handle_calls_and_refuses_without_the_actor() {
    let pg = PgServer::start();
    actix_test(async {
        let mut settings = fast_settings(&no_graph(), &pg.url());
        settings.retry.max_attempts = 1;
        settings.breaker.failure_threshold = 3;
        settings.breaker.cooldown = Duration::from_secs(60);
        let warden = connected(settings).await;
        let postgres = warden.postgres_handle();

        let held = hold_arbiter(&warden);
        let rows = tokio::time::timeout(
            Duration::from_secs(5),
            postgres.send(Sql::new("SELECT $1::int AS n").bind(7)),
        )
        .await
        .expect("answered while the arbiter is held")
        .unwrap();
        assert_eq!(rows[0]["n"], json!(7));
        let err = postgres
            .send(Sql::new("SELECT * FROM no_such_table"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                WardenError::Query {
                    transient: false,
                    ..
                }
            ),
            "{err:?}"
        );
        let thread = postgres
            .send(warden_actors::WithPool::new(|pool| {
                Box::pin(async move {
                    sqlx::query("SELECT 1").execute(&pool).await?;
                    Ok(std::thread::current().name().unwrap_or("").to_owned())
                })
            }))
            .await
            .unwrap();
        assert!(thread.starts_with("warden-pg-io"), "{thread}");
        // The graph database is not there: refused as unavailable, on the first poll.
        let refused = refused_at_once(warden.neo4j_handle().send(Cypher::new("RETURN 1")));
        assert!(
            matches!(
                refused,
                WardenError::Unavailable {
                    database: Database::Neo4j,
                    ..
                }
            ),
            "{refused:?}"
        );
        let by_address = tokio::time::timeout(
            Duration::from_millis(300),
            warden.postgres.send(Sql::new("SELECT 1")),
        )
        .await;
        assert!(
            by_address.is_err(),
            "the held actor answered: {by_address:?}"
        );
        drop(held);

        // Open the circuit with transient failures. A probe that succeeds between them resets
        // the count (the arbiter was just released, so one is due): fail until it opens.
        let fail = "DO $$ BEGIN RAISE EXCEPTION 'overloaded' USING ERRCODE = '53200'; END $$";
        eventually(Duration::from_secs(5), "circuit open", || {
            let call = postgres.send(Sql::new(fail));
            async move {
                match call.await {
                    Err(WardenError::CircuitOpen { .. }) => Some(()),
                    Err(WardenError::Query {
                        transient: true, ..
                    }) => None,
                    other => panic!("{other:?}"),
                }
            }
        })
        .await;

        let held = hold_arbiter(&warden);
        for _ in 0..1000 {
            match refused_at_once(postgres.send(Sql::new("SELECT 1"))) {
                WardenError::CircuitOpen {
                    database: Database::Postgres,
                    retry_after,
                } => assert!(retry_after > Duration::from_secs(50), "{retry_after:?}"),
                other => panic!("{other:?}"),
            }
        }
        drop(held);
        // The address gets the same refusal from the actor itself.
        let refused = warden.postgres.send(Sql::new("SELECT 1")).await.unwrap();
        assert!(
            matches!(refused, Err(WardenError::CircuitOpen { .. })),
            "{refused:?}"
        );

        warden.shutdown(Duration::from_secs(2)).await;
        assert_stopped_at_once(postgres.send(Sql::new("SELECT 1")));
    });
}

/// Handles work from any thread, and a shutdown under their load is orderly: every call ends
/// with its rows or `Stopped`, never with an error from a pool closed under it (calls admitted
/// on the callers' threads are drained like those sent to the address).
#[test]
fn calls_from_other_threads_racing_a_shutdown_end_in_rows_or_stopped() {
    racing_a_shutdown(Mode::Own);
}

/// The same, with the calls hosted on the application's runtime.
#[test]
fn calls_from_other_threads_racing_a_shutdown_end_in_rows_or_stopped_hosted() {
    racing_a_shutdown(Mode::Hosted);
}

// The body of the two tests above: a panic is how it fails, as in any test.
#[allow(clippy::unwrap_used)]
fn racing_a_shutdown(mode: Mode) {
    let pg = PgServer::start();
    let host = std::sync::Arc::new(Host::new(mode));
    actix_test(async {
        let warden = host.pg_started(fast_settings(&no_graph(), &pg.url())).await;
        let callers: Vec<_> = (0..4)
            .map(|_| {
                let postgres = warden.postgres_handle();
                let host = host.clone();
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    // Hosted: the caller runs on the application's runtime (its calls inside
                    // its own task), awaited from this thread.
                    let caller = async move {
                        let (mut rows, mut other) = (0, Vec::new());
                        let deadline = Instant::now() + Duration::from_secs(10);
                        while Instant::now() < deadline {
                            let call =
                                postgres.send(Sql::new("SELECT 1 AS one FROM pg_sleep(0.002)"));
                            match call.await {
                                Ok(r) if r[0]["one"] == json!(1) => rows += 1,
                                Err(WardenError::Stopped { .. }) => return (rows, other, true),
                                unexpected => other.push(format!("{unexpected:?}")),
                            }
                        }
                        (rows, other, false)
                    };
                    rt.block_on(async move { host.spawn(caller).await })
                        .expect("caller task")
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        warden.shutdown(Duration::from_secs(5)).await;
        for caller in callers {
            let (rows, other, stopped) = caller.join().expect("caller thread");
            assert!(rows > 0, "no call succeeded before the shutdown");
            assert!(other.is_empty(), "{other:?}");
            assert!(stopped, "still answered after the shutdown");
        }
    });
}

/// Across 50 flaps (every connection dropped at once) under concurrent calls, warden never
/// holds more than `max_connections`: counted exactly at the proxy it connects through, and
/// sampled in pg_stat_activity. It ends connected.
#[test]
fn fifty_flaps_never_exceed_max_connections() {
    fifty_flaps(Mode::Own);
}

/// The same, with the calls hosted on the application's runtime.
#[test]
fn fifty_flaps_never_exceed_max_connections_hosted() {
    fifty_flaps(Mode::Hosted);
}

// The body of the two tests above: a panic is how it fails, as in any test.
#[allow(clippy::unwrap_used)]
fn fifty_flaps(mode: Mode) {
    let pg = PgServer::start();
    let proxy = Proxy::start(pg.port);
    let host = Host::new(mode);
    actix_test(async {
        let mut settings = through(&proxy);
        settings.postgres.max_connections = 4;
        // Long enough for the server to reap the backends of the connections a flap cut (they
        // linger in pg_stat_activity until it notices), short enough for 50 flaps.
        settings.backoff.initial = Duration::from_millis(60);
        settings.backoff.max = Duration::from_millis(120);
        settings.postgres.probe_interval = Duration::from_millis(100);
        settings.postgres.probe_timeout = Duration::from_millis(90);
        settings.breaker.failure_threshold = warden_actors::circuit::MAX_THRESHOLD;
        let max = i64::from(settings.postgres.max_connections);
        let warden = host.pg_started(settings).await;
        let admin = pg.admin().await;

        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let callers: Vec<_> = (0..8)
            .map(|_| {
                let postgres = warden.postgres_handle();
                let stop = stop.clone();
                host.spawn(async move {
                    let mut ok = 0u32;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        match postgres.send(Sql::new("SELECT pg_sleep(0.005)")).await {
                            Ok(_) => ok += 1,
                            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                        }
                    }
                    ok
                })
            })
            .collect();
        let mut peak = 0;
        let restarts = || warden.health_handle().view().components[&Database::Postgres].restarts;
        for flap in 0..50 {
            pg_connected(&warden).await;
            tokio::time::sleep(Duration::from_millis(40)).await;
            // Sampled between flaps (the proxy counts exactly, all along).
            peak = peak.max(settled_warden_connections(&admin, max).await);
            let before = restarts();
            proxy.reset();
            // The pool heals by itself; the probe (or a call's failure) must notice the flap.
            eventually(
                Duration::from_secs(3),
                &format!("flap {flap} noticed"),
                || async { (restarts() > before).then_some(()) },
            )
            .await;
        }
        pg_connected(&warden).await;
        for _ in 0..10 {
            peak = peak.max(settled_warden_connections(&admin, max).await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut ok = 0;
        for c in callers {
            ok += c.await.unwrap();
        }
        let exact = proxy.peak_open() as i64;
        assert!(
            exact <= max,
            "warden held {exact} connections at once, max {max}"
        );
        assert!(
            peak <= max,
            "pg_stat_activity showed {peak} connections, max {max}"
        );
        assert!(peak >= 1);
        assert!(ok > 50, "calls kept succeeding between flaps ({ok})");
        let restarts = warden.health_handle().view().components[&Database::Postgres].restarts;
        assert!(
            restarts >= 25,
            "the flaps were seen: {restarts} restarts for 50 resets"
        );
        assert!(warden
            .postgres
            .send(Sql::new("SELECT 1"))
            .await
            .unwrap()
            .is_ok());
        warden.shutdown(Duration::from_secs(2)).await;
    });
}

/// While PostgreSQL is unreachable, connect attempts (counted at a listener that accepts and
/// closes) follow the backoff schedule: never sooner than it allows, and never stuck.
#[test]
fn reconnects_follow_the_backoff_schedule() {
    let proxy = Proxy::start(support::free_port());
    proxy.close_new(true);
    actix_test(async {
        let mut settings = through(&proxy);
        settings.backoff.initial = Duration::from_millis(100);
        settings.backoff.max = Duration::from_millis(400);
        settings.backoff.multiplier = 2.0;
        settings.backoff.jitter = 0.2;
        let schedule = warden_actors::backoff::Backoff::reconnect(&settings.backoff);
        let warden = Warden::start(settings).unwrap();
        tokio::time::sleep(Duration::from_millis(3000)).await;
        let attempts = proxy.accepted();
        // 100, 200, 400, 400, ... ms (±20 %) fit 7 to 10 attempts in 3 s.
        assert!(
            (6..=11).contains(&attempts.len()),
            "{} attempts in 3 s",
            attempts.len()
        );
        support::assert_follows_schedule(&attempts, &schedule);
        let view = warden.health_handle().view();
        assert_eq!(
            view.components[&Database::Postgres].status,
            ComponentStatus::Backoff
        );
        warden.shutdown(Duration::from_secs(1)).await;
    });
}

/// Several `warden migrate` processes at once against a fresh cluster all succeed, and the
/// migration is applied exactly once (sqlx's advisory lock).
#[test]
fn concurrent_migrations_are_safe() {
    let pg = PgServer::start();
    let children: Vec<_> = (0..4)
        .map(|_| {
            std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
                .arg("migrate")
                .env_clear()
                .env("DATABASE_URL", pg.url())
                .env("WARDEN__LOG__FORMAT", "json")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "migrate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let admin = pg.admin().await;
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM warden._sqlx_migrations")
            .fetch_one(&admin)
            .await
            .unwrap();
        assert_eq!(n, migration_files());
        let cols: Vec<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = 'warden' AND table_name = 'config' ORDER BY ordinal_position",
        )
        .fetch_all(&admin)
        .await
        .unwrap();
        assert_eq!(cols, ["key", "value", "updated_at"]);
        let public: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
        )
        .fetch_one(&admin)
        .await
        .unwrap();
        assert_eq!(public, 0, "nothing lands in public");
    });
}

/// `Warden::shutdown(Duration::MAX)` ("as long as it takes") stops both actors in order, as
/// any other budget does: health shows both `stopped` and `fatal` never fires. It does not
/// show a drain that waits for calls in flight (see the shutdown tests above).
#[test]
fn a_shutdown_budget_past_the_clock_stops_in_order() {
    actix_test(async {
        let pg = format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            support::free_port()
        );
        let warden = Warden::start(fast_settings(&no_graph(), &pg)).unwrap();
        tokio::time::timeout(Duration::from_secs(5), warden.shutdown(Duration::MAX))
            .await
            .expect("shutdown returns");
        let h = warden.health_handle();
        eventually(Duration::from_secs(5), "both stopped", || {
            let v = h.view();
            async move {
                (v.components[&Database::Postgres].status == ComponentStatus::Stopped
                    && v.components[&Database::Neo4j].status == ComponentStatus::Stopped)
                    .then_some(())
            }
        })
        .await;
        assert_eq!(warden.fatal().now_or_never(), None);
    });
}

/// A panic inside the actor kills it for good: health shows it `stopped`, calls get a typed
/// `Stopped` error at once, and `Warden::fatal` resolves so the embedding process can exit.
#[test]
fn a_panicking_actor_is_stopped_and_fatal() {
    let pg = PgServer::start();
    actix_test(async {
        let warden = connected(fast_settings(&no_graph(), &pg.url())).await;
        warden.postgres.do_send(warden_actors::faults::Crash);
        let reason = tokio::time::timeout(Duration::from_secs(5), warden.fatal())
            .await
            .expect("fatal fires");
        assert!(reason.contains("postgres actor panicked"), "{reason}");
        let h = warden.health_handle();
        eventually(Duration::from_secs(2), "postgres stopped", || {
            let v = h.view();
            async move {
                (v.components[&Database::Postgres].status == ComponentStatus::Stopped).then_some(())
            }
        })
        .await;
        assert!(h.view().any_stopped());
        // The mailbox is gone with the actor: a caller learns at once, and a handle says so
        // with a typed error.
        assert!(warden.postgres.send(Sql::new("SELECT 1")).await.is_err());
        assert_stopped_at_once(warden.postgres_handle().send(Sql::new("SELECT 1")));
    });
}

/// A write whose connection breaks after the statement was sent is not retried (it may have
/// run: a retried INSERT would insert twice); the caller gets the connection error, and the
/// row is there once. Only the pool's connections break: the probe's stays up, so warden
/// stays connected and a retry would have had every chance to run.
#[test]
fn a_write_is_never_run_twice() {
    write_never_twice(Mode::Own);
}

/// The same, with the calls hosted on the application's runtime.
#[test]
fn a_write_is_never_run_twice_hosted() {
    write_never_twice(Mode::Hosted);
}

// The body of the two tests above: a panic is how it fails, as in any test.
#[allow(clippy::unwrap_used)]
fn write_never_twice(mode: Mode) {
    let pg = PgServer::start();
    let proxy = Proxy::start(pg.port);
    let host = Host::new(mode);
    actix_test(async {
        let mut settings = through(&proxy);
        settings.retry.max_attempts = 3;
        let warden = host.pg_started(settings).await;
        warden
            .postgres
            .send(Sql::new(
                "CREATE TABLE ledger (id serial PRIMARY KEY, note text)",
            ))
            .await
            .unwrap()
            .unwrap();
        let postgres = warden.postgres_handle();
        let insert = host.spawn(async move {
            postgres
                .send(Sql::new(
                    "INSERT INTO ledger (note) SELECT 'once' FROM pg_sleep(0.3)",
                ))
                .await
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Connection 0 is the probe's (the connect opens it); the pool's come later.
        proxy.reset_from(1);
        let err = insert.await.unwrap().unwrap_err();
        assert!(matches!(err, WardenError::Connection { .. }), "{err:?}");
        tokio::time::sleep(Duration::from_millis(700)).await;
        let admin = pg.admin().await;
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM warden.ledger")
            .fetch_one(&admin)
            .await
            .unwrap();
        assert_eq!(n, 1, "the insert ran {n} times");
        let c = warden.health_handle().view().components[&Database::Postgres].clone();
        assert_eq!(
            (c.status, c.restarts),
            (ComponentStatus::Connected, 0),
            "the probe confirmed the server is fine"
        );
        warden.shutdown(Duration::from_secs(1)).await;
    });
}

/// A caller's own mistakes (no row where one was expected, a wrong number of parameters)
/// come back typed and never cost a reconnect or a breaker failure.
#[test]
fn caller_mistakes_never_take_the_connection_down() {
    let pg = PgServer::start();
    actix_test(async {
        let warden = connected(fast_settings(&no_graph(), &pg.url())).await;
        for _ in 0..5 {
            let err = warden
                .postgres
                .send(warden_actors::WithPool::new(|pool| {
                    Box::pin(async move {
                        sqlx::query_scalar::<_, i64>("SELECT 1::int8 WHERE false")
                            .fetch_one(&pool)
                            .await
                    })
                }))
                .await
                .unwrap()
                .unwrap_err();
            assert!(matches!(err, WardenError::Usage { .. }), "{err:?}");
            let err = warden
                .postgres
                .send(Sql::new("SELECT $1::int"))
                .await
                .unwrap()
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    WardenError::Query {
                        transient: false,
                        ..
                    }
                ),
                "{err:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let view = warden.health_handle().view();
        let c = &view.components[&Database::Postgres];
        assert_eq!(c.restarts, 0, "{c:?}");
        assert_eq!(c.status, ComponentStatus::Connected);
        assert_eq!(c.circuit.recent_failures, 0);
        warden.shutdown(Duration::from_secs(1)).await;
    });
}

/// Warden skips the liveness ping for a pooled connection released in the last moments (see
/// `ALIVE_BYPASS`), but never for one released before the last reconnect: after every
/// connection is cut, calls right after the reconnect all succeed (each stale connection is
/// pinged, found dead and replaced). Calls run on the pool's own I/O threads, which own its
/// sockets, never on the caller's thread.
#[test]
fn connections_from_before_a_reconnect_are_never_handed_out_unchecked() {
    let pg = PgServer::start();
    let proxy = Proxy::start(pg.port);
    actix_test(async {
        let mut settings = through(&proxy);
        settings.postgres.max_connections = 5;
        // Failed calls while the connections are cut must not open the circuit: this test is
        // about the pool, not the breaker.
        settings.breaker.failure_threshold = warden_actors::circuit::MAX_THRESHOLD;
        let slots = (settings.postgres.max_connections - 1) as usize;
        let warden = Warden::start(settings).unwrap();
        let health = warden.health_handle();
        pg_connected(&warden).await;

        let burst = |n: usize| {
            let calls: Vec<_> = (0..n)
                .map(|_| {
                    warden
                        .postgres
                        .send(Sql::new("SELECT pg_backend_pid() AS pid, pg_sleep(0.02)"))
                })
                .collect();
            futures_util::future::join_all(calls)
        };
        // The scenario only proves something when the calls after the reconnect come within
        // ALIVE_BYPASS of the releases before the cut (else every connection is pinged
        // anyway); on a slow machine, try again.
        let mut within_window = None;
        for _ in 0..5 {
            // Every pooled connection used, released, and checked by sqlx's release ping.
            for result in burst(slots).await {
                result.unwrap().unwrap();
            }
            until_idle(&warden, slots).await;
            let released = Instant::now();
            let before = health.view().components[&Database::Postgres].restarts;

            // Cut every connection, the probe's and the pool's; the server stays up.
            proxy.reset();
            let h = health.clone();
            eventually(Duration::from_secs(5), "reconnected", || {
                let v = h.view();
                async move {
                    let c = &v.components[&Database::Postgres];
                    (c.restarts > before && c.status == ComponentStatus::Connected).then_some(())
                }
            })
            .await;
            let after = released.elapsed();
            let failed: Vec<_> = burst(slots)
                .await
                .into_iter()
                .filter_map(|r| r.unwrap().err())
                .collect();
            assert!(
                failed.is_empty(),
                "calls {after:?} after the releases, right after the reconnect, failed: {failed:?}"
            );
            if after < warden_actors::postgres::ALIVE_BYPASS {
                within_window = Some(after);
                break;
            }
        }
        assert!(
            within_window.is_some(),
            "never reconnected within ALIVE_BYPASS of the releases in 5 tries"
        );

        // Where calls run: the pool's I/O threads.
        let thread = warden
            .postgres
            .send(warden_actors::WithPool::new(|_pool| {
                Box::pin(
                    async move { Ok(std::thread::current().name().unwrap_or_default().to_owned()) },
                )
            }))
            .await
            .unwrap()
            .unwrap();
        assert!(thread.starts_with("warden-pg-io-"), "ran on {thread:?}");
        warden.shutdown(Duration::from_secs(1)).await;
    });
}

/// When pooled connections die but the server and the probe's connection stay up (no
/// reconnect), the first call that gets a dead one fails, and that failure makes the pool ping
/// every other idle connection before handing it out: one failed call, not one per connection.
#[test]
fn pooled_connections_dying_alone_cost_one_call() {
    let pg = PgServer::start();
    let proxy = Proxy::start(pg.port);
    actix_test(async {
        let mut settings = through(&proxy);
        settings.postgres.max_connections = 5;
        let slots = (settings.postgres.max_connections - 1) as usize;
        let warden = connected(settings).await;
        let calls: Vec<_> = (0..slots)
            .map(|_| warden.postgres.send(Sql::new("SELECT pg_sleep(0.02)")))
            .collect();
        for result in futures_util::future::join_all(calls).await {
            result.unwrap().unwrap();
        }
        until_idle(&warden, slots).await;

        // The probe's connection was accepted first; every pooled one breaks.
        proxy.reset_from(1);
        let mut failed = Vec::new();
        for _ in 0..slots {
            if let Err(e) = warden.postgres.send(Sql::new("SELECT 1")).await.unwrap() {
                failed.push(e);
            }
        }
        assert!(failed.len() <= 1, "{failed:?}");
        let c = warden.health_handle().view().components[&Database::Postgres].clone();
        assert_eq!(c.restarts, 0, "the server never went away: {c:?}");
        warden.shutdown(Duration::from_secs(1)).await;
    });
}
