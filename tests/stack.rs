//! Both databases up, warden embedded in-process with its HTTP layer: what an application and
//! a dashboard see on a good day.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{actix_test, eventually, fast_settings, graph::GraphServer, pg::PgServer};
use warden_actors::{Cypher, GetHealth, Sql, Warden};

/// Both up: `/health/ready` is 200 with both connected, and `Sql` and `Cypher` return rows,
/// parameterised ones included, while the health actor's snapshot agrees with HTTP.
#[test]
fn both_up_ready_and_queries_return_rows() {
    let pg = PgServer::start();
    let graph = GraphServer::start();
    actix_test(async {
        let warden = Warden::start(fast_settings(&graph.uri(), &pg.url())).unwrap();
        let port = support::free_listen_port();
        let state = warden::web::AppState::new(warden.health_handle(), Instant::now());
        let server = warden::web::server(
            ([127, 0, 0, 1], port).into(),
            2,
            state,
            Duration::from_secs(1),
        )
        .unwrap();
        let handle = server.handle();
        actix::spawn(server);
        let url = format!("http://127.0.0.1:{port}/health/ready");
        let body: Value = eventually(Duration::from_secs(10), "ready", || {
            let url = url.clone();
            async move {
                let resp = reqwest::get(url).await.ok()?;
                (resp.status() == 200).then_some(())?;
                resp.json().await.ok()
            }
        })
        .await;
        assert_eq!(body["status"], "ok");
        for db in ["neo4j", "postgres"] {
            let c = &body["components"][db];
            assert_eq!(c["status"], "connected", "{body}");
            assert_eq!(c["healthy"], true);
            assert!(c["latency_ms"].as_f64().unwrap() > 0.0);
            assert_eq!(c["circuit"]["state"], "closed");
        }
        let view = warden.health.send(GetHealth).await.unwrap();
        assert!(view.ready() && view.all_healthy());

        let rows = warden
            .postgres
            .send(
                Sql::new("SELECT $1::text || '-' || $2::int AS tag")
                    .bind("wallet")
                    .bind(7),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rows[0]["tag"], json!("wallet-7"));
        let rows = warden
            .neo4j
            .send(
                Cypher::new("RETURN $name AS name, $n + 1 AS next")
                    .param("name", "w")
                    .param("n", 41),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rows[0]["name"], json!("w"));
        assert_eq!(rows[0]["next"], json!(42));

        // Callers run side by side: 20 concurrent 200 ms statements take far less than 20 × 200 ms.
        // Meanwhile every pooled connection is busy for longer than probe_timeout: probes run
        // on their own connection, so a busy pool is not taken for a dead database.
        let started = Instant::now();
        let calls: Vec<_> = (0..20)
            .map(|_| warden.postgres.send(Sql::new("SELECT pg_sleep(0.2)")))
            .collect();
        for call in futures_util::future::join_all(calls).await {
            call.unwrap().unwrap();
        }
        // The pool holds 3 of the 4 connections: 7 rounds of 200 ms, not 20.
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "{:?}",
            started.elapsed()
        );
        let view = warden.health_handle().view();
        assert!(
            view.all_healthy(),
            "a busy pool must not fail probes: {view:?}"
        );
        assert_eq!(
            view.components[&warden_actors::Database::Postgres].restarts,
            0
        );

        // The typed escape hatches: the pool and the graph themselves, inside the same
        // circuit check, retry budget and deadline.
        let n = warden
            .postgres
            .send(warden_actors::WithPool::new(|pool| {
                Box::pin(async move {
                    sqlx::query_scalar::<_, i64>("SELECT (41 + 1)::int8")
                        .fetch_one(&pool)
                        .await
                })
            }))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 42);
        let n = warden
            .neo4j
            .send(warden_actors::WithGraph::new(|graph| {
                Box::pin(async move {
                    let mut rows = graph.execute(neo4rs::query("RETURN 6 * 7 AS n")).await?;
                    let row = rows.next().await?.ok_or(neo4rs::Error::NoMoreRows)?;
                    row.get::<i64>("n").map_err(neo4rs::Error::from)
                })
            }))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 42);
        let err = warden
            .postgres
            .send(warden_actors::WithPool::new(|pool| {
                Box::pin(async move {
                    sqlx::query_scalar::<_, i64>("SELECT nope")
                        .fetch_one(&pool)
                        .await
                })
            }))
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(err, warden_actors::WardenError::Query { ref code, .. } if code == "42703"),
            "{err:?}"
        );

        handle.stop(true).await;
        warden.shutdown(Duration::from_secs(2)).await;
    });
}
