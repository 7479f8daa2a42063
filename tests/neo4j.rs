//! The graph database over Bolt: exact protocol scenarios against Neo4j's own `boltstub`, and
//! a live Cypher engine (FalkorDB behind the Bolt 4-to-5 bridge) that can be killed -9.

mod support;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures_util::FutureExt;
use serde_json::json;
use support::{actix_test, eventually, fast_settings, graph::BoltStub, graph::GraphServer};
use warden_actors::{
    health::ComponentStatus, Cypher, CypherTransaction, Database, GetHealth, Warden, WardenError,
    WithGraph,
};

/// A PostgreSQL URL where nothing listens: these tests are about the graph only.
fn no_pg() -> String {
    format!(
        "postgres://postgres@127.0.0.1:{}/postgres",
        support::free_port()
    )
}

/// Settings for a scripted stub: probes only when the script expects them.
fn stub_settings(uri: &str) -> warden_actors::WardenSettings {
    let mut s = fast_settings(uri, &no_pg());
    s.neo4j.probe_interval = Duration::from_secs(60);
    s
}

async fn neo4j_status(warden: &Warden, want: ComponentStatus, within: Duration) {
    let h = warden.health_handle();
    eventually(within, &format!("neo4j {want:?}"), || {
        let v = h.view();
        async move { (v.components[&Database::Neo4j].status == want).then_some(()) }
    })
    .await;
}

/// The connect is proven by `RETURN 1 AS ping`, probes repeat it on the pooled connection,
/// and a server that goes away after the script is noticed by the next probe. The stub exits
/// 0 only if every message matched exactly.
#[test]
fn ping_and_probes_over_bolt() {
    let mut stub = BoltStub::start("ping.script");
    actix_test(async {
        let mut settings = fast_settings(&stub.uri(), &no_pg());
        // A probe that timed out would drop the connection mid-script: a timeout with room on
        // a loaded machine (100 ms failed once in a CI run), and the interval above it.
        settings.neo4j.probe_interval = Duration::from_millis(400);
        settings.neo4j.probe_timeout = Duration::from_millis(300);
        let warden = Warden::start(settings).unwrap();
        neo4j_status(&warden, ComponentStatus::Connected, Duration::from_secs(5)).await;
        let c = warden.health_handle().view().components[&Database::Neo4j].clone();
        assert!(
            c.healthy && c.latency_ms.is_some() && c.last_ok_at.is_some(),
            "{c:?}"
        );
        // Two probes later the script ends and the stub closes the connection.
        neo4j_status(&warden, ComponentStatus::Backoff, Duration::from_secs(5)).await;
        let c = warden.health_handle().view().components[&Database::Neo4j].clone();
        assert!(
            !c.healthy && c.last_error.is_some() && c.next_attempt_at.is_some(),
            "{c:?}"
        );
        warden.shutdown(Duration::from_secs(1)).await;
    });
    eventually_exit(&mut stub);
    assert_eq!(
        stub.exit_code(),
        Some(0),
        "script mismatch:\n{}",
        stub.log()
    );
}

fn eventually_exit(stub: &mut BoltStub) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while stub.exit_code().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `Neo.TransientError` is retried and the call succeeds with the row; the caller never
/// sees the transient failure.
#[test]
fn transient_errors_are_retried() {
    let mut stub = BoltStub::start("transient.script");
    actix_test(async {
        let warden = Warden::start(stub_settings(&stub.uri())).unwrap();
        neo4j_status(&warden, ComponentStatus::Connected, Duration::from_secs(5)).await;
        let rows = warden
            .neo4j
            .send(
                Cypher::new("MATCH (w:Wallet {address: $address}) RETURN w.balance AS balance")
                    .param("address", "0xabc"),
            )
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}\n{}", stub.log()));
        assert_eq!(
            rows,
            vec![json!({"balance": 42}).as_object().unwrap().clone()]
        );
        warden.shutdown(Duration::from_secs(1)).await;
    });
    eventually_exit(&mut stub);
    assert_eq!(
        stub.exit_code(),
        Some(0),
        "script mismatch:\n{}",
        stub.log()
    );
}

/// Asserts that the stub has run its whole script: exit 0 once the connections close.
fn assert_script_done(stub: &mut BoltStub) {
    eventually_exit(stub);
    assert_eq!(
        stub.exit_code(),
        Some(0),
        "script mismatch:\n{}",
        stub.log()
    );
}

/// A transfer between two accounts: two statements that must both happen or neither.
fn transfer() -> CypherTransaction {
    CypherTransaction::new()
        .push(
            Cypher::new(
                "MATCH (a:Account {id: $from}) SET a.balance = a.balance - $amount \
                 RETURN a.balance AS balance",
            )
            .param("from", "a")
            .param("amount", 5),
        )
        .push(
            Cypher::new(
                "MATCH (b:Account {id: $to}) SET b.balance = b.balance + $amount \
                 RETURN b.balance AS balance",
            )
            .param("to", "b")
            .param("amount", 5),
        )
}

fn balance(n: i64) -> serde_json::Map<String, serde_json::Value> {
    json!({ "balance": n })
        .as_object()
        .expect("an object")
        .clone()
}

/// A transaction runs as BEGIN, its statements, COMMIT on one connection, with the rows of
/// each statement; a deadlock in the second statement makes warden send ROLLBACK and run the
/// whole transaction again. The stub checks every message, in order. (Scripted, because the
/// live graph engine cannot show it: FalkorDB answers BEGIN and ROLLBACK but keeps what a
/// rolled-back transaction wrote.)
#[test]
fn a_transaction_rolled_back_for_a_deadlock_runs_again_whole() {
    let mut stub = BoltStub::start("tx_deadlock_retry.script");
    actix_test(async {
        let warden = Warden::start(stub_settings(&stub.uri())).unwrap();
        neo4j_status(&warden, ComponentStatus::Connected, Duration::from_secs(5)).await;
        let rows = warden
            .neo4j_handle()
            .send(transfer())
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", stub.log()));
        assert_eq!(rows, vec![vec![balance(95)], vec![balance(15)]]);
        warden.shutdown(Duration::from_secs(1)).await;
    });
    assert_script_done(&mut stub);
}

/// A statement that fails inside a transaction for a reason that is not a retry (a constraint
/// violation): warden sends ROLLBACK, answers the server's error, and sends nothing more for
/// that call: the next message the stub sees is the caller's next call.
#[test]
fn a_failed_statement_rolls_the_transaction_back_and_is_not_retried() {
    let mut stub = BoltStub::start("tx_rollback.script");
    actix_test(async {
        let warden = Warden::start(stub_settings(&stub.uri())).unwrap();
        neo4j_status(&warden, ComponentStatus::Connected, Duration::from_secs(5)).await;
        let graph = warden.neo4j_handle();
        let err = graph.send(transfer()).await.unwrap_err();
        assert!(
            matches!(
                &err,
                WardenError::Query { code, transient: false, .. }
                    if code == "Neo.ClientError.Schema.ConstraintValidationFailed"
            ),
            "{err:?}\n{}",
            stub.log()
        );
        let rows = graph
            .send(Cypher::new("RETURN $n AS n").param("n", 7))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", stub.log()));
        assert_eq!(rows[0]["n"], json!(7));
        warden.shutdown(Duration::from_secs(1)).await;
    });
    assert_script_done(&mut stub);
}

/// A COMMIT that gets no answer (the server goes away with it on the wire) may have
/// committed: the caller gets `CommitOutcomeUnknown`, once, and the transaction is not run
/// again; the lost connection makes the actor probe and back off.
#[test]
fn a_commit_without_an_answer_is_an_unknown_outcome_never_retried() {
    let mut stub = BoltStub::start("tx_commit_unknown.script");
    actix_test(async {
        let warden = Warden::start(stub_settings(&stub.uri())).unwrap();
        neo4j_status(&warden, ComponentStatus::Connected, Duration::from_secs(5)).await;
        let err = warden.neo4j.send(transfer()).await.unwrap().unwrap_err();
        assert!(
            matches!(
                err,
                WardenError::CommitOutcomeUnknown {
                    database: Database::Neo4j,
                    ..
                }
            ),
            "{err:?}\n{}",
            stub.log()
        );
        assert!(!err.is_transient(), "{err:?}");
        neo4j_status(&warden, ComponentStatus::Backoff, Duration::from_secs(2)).await;
        warden.shutdown(Duration::from_secs(1)).await;
    });
    assert_script_done(&mut stub);
}

/// A server that closes in the middle of a result: the call ends at once with a connection
/// error (no hang, no spin), and the actor drops the connection and backs off.
#[test]
fn a_close_mid_result_fails_the_call_and_the_connection() {
    let stub = BoltStub::start("mid_result.script");
    actix_test(async {
        let warden = Warden::start(stub_settings(&stub.uri())).unwrap();
        neo4j_status(&warden, ComponentStatus::Connected, Duration::from_secs(5)).await;
        let started = Instant::now();
        let err = warden
            .neo4j
            .send(Cypher::new("UNWIND range(1, 1000) AS n RETURN n"))
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "took {:?}",
            started.elapsed()
        );
        assert!(matches!(err, WardenError::Connection { .. }), "{err:?}");
        neo4j_status(&warden, ComponentStatus::Backoff, Duration::from_secs(2)).await;
        warden.shutdown(Duration::from_secs(1)).await;
    });
}

/// Against a live Cypher engine: RETURN, parameters, CREATE and MATCH through `Cypher`.
#[test]
fn cypher_returns_rows_from_a_live_graph() {
    let graph = GraphServer::start();
    actix_test(async {
        let warden = Warden::start(fast_settings(&graph.uri(), &no_pg())).unwrap();
        neo4j_status(&warden, ComponentStatus::Connected, Duration::from_secs(10)).await;
        let rows = warden
            .neo4j
            .send(Cypher::new("UNWIND range(1, $n) AS x RETURN x, x * 2 AS double").param("n", 3))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[2]["x"], json!(3));
        assert_eq!(rows[2]["double"], json!(6));
        let created = warden
            .neo4j
            .send(
                Cypher::new("CREATE (w:Wallet {address: $address, balance: $balance}) RETURN w.address AS address")
                    .param("address", "0xfeed")
                    .param("balance", 12.5),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(created[0]["address"], json!("0xfeed"));
        let rows = warden
            .neo4j
            .send(Cypher::new("MATCH (w:Wallet) WHERE w.address = $a RETURN w.balance AS balance, count(w) AS n").param("a", "0xfeed"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rows[0]["balance"], json!(12.5));
        assert_eq!(rows[0]["n"], json!(1));
        warden.shutdown(Duration::from_secs(1)).await;
    });
}

/// The name of the thread a `WithGraph` closure runs on.
fn graph_thread() -> WithGraph<String> {
    WithGraph::new(|graph| {
        Box::pin(async move {
            graph.run(neo4rs::query("RETURN 1")).await?;
            Ok(std::thread::current().name().unwrap_or_default().to_owned())
        })
    })
}

/// A handle admits graph calls on the caller's thread and runs them on the graph's own I/O
/// threads: they are answered while the actors' arbiter is held, when a message to the
/// address cannot be answered at all.
#[test]
fn a_handle_runs_graph_calls_without_the_actor() {
    let graph = GraphServer::start();
    actix_test(async {
        let warden = Warden::start(fast_settings(&graph.uri(), &no_pg())).unwrap();
        neo4j_status(&warden, ComponentStatus::Connected, Duration::from_secs(10)).await;
        let handle = warden.neo4j_handle();
        let held = support::hold_arbiter(&warden);
        let rows = tokio::time::timeout(
            Duration::from_secs(5),
            handle.send(Cypher::new("RETURN $n AS n").param("n", 7)),
        )
        .await
        .expect("answered while the arbiter is held")
        .unwrap();
        assert_eq!(rows[0]["n"], json!(7));
        let thread = handle.send(graph_thread()).await.unwrap();
        assert!(thread.starts_with("warden-neo4j-io-"), "ran on {thread:?}");
        let by_address = tokio::time::timeout(
            Duration::from_millis(300),
            warden.neo4j.send(Cypher::new("RETURN 1 AS one")),
        )
        .await;
        assert!(
            by_address.is_err(),
            "the held actor answered: {by_address:?}"
        );
        drop(held);
        // A call sent to the address runs on the same threads.
        let thread = warden.neo4j.send(graph_thread()).await.unwrap().unwrap();
        assert!(thread.starts_with("warden-neo4j-io-"), "ran on {thread:?}");
        warden.shutdown(Duration::from_secs(1)).await;
    });
}

/// Slow graph calls never hold the actor: while two calls each keep their thread busy for
/// 4 s after reading their rows from the live server (a closure's heavy work on its rows; a
/// sleep here, so as not to take the machine's two cores from the servers), the actor still
/// probes on schedule, calls and health requests through the actors' mailboxes are answered
/// at once, and a kill -9 of the server is detected within probe_interval + probe_timeout and
/// then refused at once. With calls on the actors' arbiter, none of this happens until the
/// slow calls end. It does not show how fast the calls themselves are.
#[test]
fn slow_graph_calls_never_hold_the_actor() {
    const HOLD: Duration = Duration::from_secs(4);
    let mut graph = GraphServer::start();
    actix_test(async {
        let mut settings = fast_settings(&graph.uri(), &no_pg());
        // Two threads for the slow calls, one for the rest.
        settings.neo4j.io_threads = 3;
        settings.neo4j.query_timeout = Duration::from_secs(10);
        let probe_interval = settings.neo4j.probe_interval;
        let detect_bound = probe_interval + settings.neo4j.probe_timeout;
        let warden = Warden::start(settings).unwrap();
        neo4j_status(&warden, ComponentStatus::Connected, Duration::from_secs(10)).await;
        let handle = warden.neo4j_handle();

        let busy = Arc::new(AtomicUsize::new(0));
        let slow: Vec<_> = (0..2)
            .map(|_| {
                let busy = busy.clone();
                handle.send(WithGraph::new(move |graph| {
                    let busy = busy.clone();
                    Box::pin(async move {
                        let query = neo4rs::query("UNWIND range(1, 100) AS x RETURN x");
                        let mut rows = graph.execute(query).await?;
                        let mut n = 0;
                        while rows.next().await?.is_some() {
                            n += 1;
                        }
                        busy.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(HOLD);
                        Ok((
                            n,
                            std::thread::current().name().unwrap_or_default().to_owned(),
                        ))
                    })
                }))
            })
            .collect();
        let b = busy.clone();
        eventually(
            Duration::from_secs(5),
            "both slow calls hold their thread",
            || {
                let n = b.load(Ordering::SeqCst);
                async move { (n == 2).then_some(()) }
            },
        )
        .await;
        let holding = Instant::now();

        // Probes go on: health snapshots over a second and one more probe interval (so that at
        // least three probes fall inside, whatever their phase) see a success every interval.
        let health = warden.health_handle();
        let mut seen = Vec::new();
        while holding.elapsed() < Duration::from_secs(1) + probe_interval {
            let at = health.view().components[&Database::Neo4j].last_ok_at;
            if seen.last() != Some(&at) {
                seen.push(at);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let times: Vec<_> = seen.into_iter().flatten().collect();
        assert!(times.len() >= 4, "probe successes while held: {times:?}");
        for pair in times.windows(2) {
            let gap = (pair[1] - pair[0]).to_std().unwrap_or_default();
            assert!(
                gap <= probe_interval + Duration::from_millis(150),
                "probes {gap:?} apart: {times:?}"
            );
        }

        // The actors' mailboxes answer at once, and a call through one runs.
        let asked = Instant::now();
        let rows = tokio::time::timeout(
            Duration::from_secs(1),
            warden.neo4j.send(Cypher::new("RETURN 1 AS one")),
        )
        .await
        .expect("a call through the address is answered")
        .unwrap()
        .unwrap();
        assert_eq!(rows[0]["one"], json!(1));
        let view = tokio::time::timeout(Duration::from_secs(1), warden.health.send(GetHealth))
            .await
            .expect("health answers")
            .unwrap();
        assert!(view.components[&Database::Neo4j].healthy, "{view:?}");
        assert!(
            asked.elapsed() < Duration::from_millis(300),
            "mailbox round trips took {:?}",
            asked.elapsed()
        );

        // An outage is seen and refused as fast as ever.
        let killed = Instant::now();
        graph.kill9();
        let h = health.clone();
        eventually(
            detect_bound + Duration::from_secs(1),
            "neo4j unhealthy",
            || {
                let v = h.view();
                async move { (!v.components[&Database::Neo4j].healthy).then_some(()) }
            },
        )
        .await;
        assert!(
            killed.elapsed() <= detect_bound + Duration::from_millis(150),
            "detection took {:?}",
            killed.elapsed()
        );
        let asked = Instant::now();
        let refused = tokio::time::timeout(
            Duration::from_secs(1),
            warden.neo4j.send(Cypher::new("RETURN 1 AS one")),
        )
        .await
        .expect("a refusal through the address")
        .unwrap()
        .unwrap_err();
        assert!(
            matches!(refused, WardenError::Unavailable { .. }),
            "{refused:?}"
        );
        assert!(
            asked.elapsed() < Duration::from_millis(100),
            "refused after {:?}",
            asked.elapsed()
        );
        let refused = handle
            .send(Cypher::new("RETURN 1 AS one"))
            .now_or_never()
            .expect("a handle refuses on the first poll")
            .unwrap_err();
        assert!(
            matches!(refused, WardenError::Unavailable { .. }),
            "{refused:?}"
        );
        // All of the above happened while the slow calls held their threads.
        assert!(
            holding.elapsed() < HOLD,
            "checks ran past the slow calls: {:?}",
            holding.elapsed()
        );

        for call in slow {
            let (n, thread) = call.await.unwrap();
            assert_eq!(n, 100);
            assert!(thread.starts_with("warden-neo4j-io-"), "ran on {thread:?}");
        }
        warden.shutdown(Duration::from_secs(1)).await;
    });
}

/// kill -9 of the graph server (with PostgreSQL up, so readiness hinges on it): unhealthy
/// within probe_interval + probe_timeout and `/health/ready` 503, calls fail fast, and after a
/// restart warden is connected again within the pending backoff + 1 s, and ready again.
#[test]
fn graph_kill9_is_detected_and_recovered() {
    let mut graph = GraphServer::start();
    let pg = support::pg::PgServer::start();
    actix_test(async {
        let settings = fast_settings(&graph.uri(), &pg.url());
        let detect_bound = settings.neo4j.probe_interval + settings.neo4j.probe_timeout;
        let query_timeout = settings.neo4j.query_timeout;
        let warden = Warden::start(settings).unwrap();
        let health = warden.health_handle();
        let http = support::serve_health(&warden);
        neo4j_status(&warden, ComponentStatus::Connected, Duration::from_secs(10)).await;
        support::until_status(&format!("{http}/health/ready"), 200, Duration::from_secs(5)).await;

        let killed = Instant::now();
        graph.kill9();
        let h = health.clone();
        eventually(
            detect_bound + Duration::from_secs(1),
            "neo4j unhealthy",
            || {
                let v = h.view();
                async move { (!v.components[&Database::Neo4j].healthy).then_some(()) }
            },
        )
        .await;
        let detected = killed.elapsed();
        assert!(
            detected <= detect_bound + Duration::from_millis(150),
            "detection took {detected:?}"
        );
        assert!(!health.view().ready());
        assert_eq!(
            support::http_status(&format!("{http}/health/ready")).await,
            503
        );
        let started = Instant::now();
        let result = warden
            .neo4j
            .send(Cypher::new("RETURN 1 AS one"))
            .await
            .unwrap();
        assert!(result.is_err());
        assert!(started.elapsed() < query_timeout);

        tokio::time::sleep(Duration::from_millis(600)).await;
        let pending = health.view().components[&Database::Neo4j]
            .next_attempt_at
            .map(|at| (at - chrono::Utc::now()).to_std().unwrap_or_default())
            .unwrap_or_default();
        graph.restart();
        let restarted = Instant::now();
        neo4j_status(&warden, ComponentStatus::Connected, Duration::from_secs(5)).await;
        let recovered = restarted.elapsed();
        assert!(
            recovered <= pending + Duration::from_secs(1),
            "recovery took {recovered:?}, pending {pending:?}"
        );
        let rows = eventually(Duration::from_secs(3), "calls succeed again", || {
            let addr = warden.neo4j.clone();
            async move {
                addr.send(Cypher::new("RETURN 1 AS one"))
                    .await
                    .unwrap()
                    .ok()
            }
        })
        .await;
        assert_eq!(rows[0]["one"], json!(1));
        support::until_status(&format!("{http}/health/ready"), 200, Duration::from_secs(3)).await;
        warden.shutdown(Duration::from_secs(1)).await;
    });
}

/// While the graph server is unreachable, connect attempts (counted at a listener that
/// accepts and closes) follow the backoff schedule: never sooner than it allows, never stuck.
#[test]
fn reconnects_follow_the_backoff_schedule() {
    let proxy = support::proxy::Proxy::start(support::free_port());
    proxy.close_new(true);
    actix_test(async {
        let mut settings = fast_settings(&format!("bolt://127.0.0.1:{}", proxy.port), &no_pg());
        settings.backoff.initial = Duration::from_millis(100);
        settings.backoff.max = Duration::from_millis(400);
        let schedule = warden_actors::backoff::Backoff::reconnect(&settings.backoff);
        let warden = Warden::start(settings).unwrap();
        tokio::time::sleep(Duration::from_millis(3000)).await;
        let attempts = proxy.accepted();
        assert!(
            (6..=11).contains(&attempts.len()),
            "{} attempts in 3 s",
            attempts.len()
        );
        support::assert_follows_schedule(&attempts, &schedule);
        let c = warden.health_handle().view().components[&Database::Neo4j].clone();
        assert_eq!(c.status, ComponentStatus::Backoff);
        assert!(c.consecutive_failures as usize >= attempts.len() - 1);
        warden.shutdown(Duration::from_secs(1)).await;
    });
}
