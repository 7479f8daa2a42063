//! Call parameters that a driver would mangle or choke on, against real servers: each is
//! refused with a `Usage` error naming the parameter (never a silent float, never a crash),
//! a large but reasonable one goes through intact, and the connection stays usable.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{actix_test, eventually, fast_settings, graph::GraphServer, pg::PgServer};
use warden_actors::{Cypher, Sql, Warden, WardenError};

fn nested(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 1..depth {
        v = Value::Array(vec![v]);
    }
    v
}

fn assert_usage<T: std::fmt::Debug>(result: Result<T, WardenError>, names: &[&str]) {
    match result {
        Err(WardenError::Usage { message, .. }) => {
            for name in names {
                assert!(message.contains(name), "`{name}` not in: {message}");
            }
        }
        other => panic!("expected a Usage error naming {names:?}, got {other:?}"),
    }
}

#[test]
fn postgres_parameters_are_bounded_and_exact() {
    let pg = PgServer::start();
    let graph_nowhere = format!("bolt://127.0.0.1:{}", support::free_port());
    actix_test(async {
        let warden = Warden::start(fast_settings(&graph_nowhere, &pg.url())).unwrap();
        let handle = warden.postgres_handle();
        eventually(Duration::from_secs(10), "connected", || async {
            handle.send(Sql::new("SELECT 1")).await.ok()
        })
        .await;

        // 10 MB of text goes through and comes back byte for byte.
        let big = "é".repeat(5 << 20);
        let rows = handle
            .send(
                Sql::new("SELECT length($1) AS n, md5($1) = md5($2) AS same")
                    .bind(big.clone())
                    .bind(big),
            )
            .await
            .unwrap();
        assert_eq!(rows[0]["n"], json!(5 << 20));
        assert_eq!(rows[0]["same"], json!(true));

        // Above i64::MAX: refused, never bound as a float that loses digits.
        assert_usage(
            handle
                .send(Sql::new("SELECT $1::numeric AS n").bind(json!(u64::MAX)))
                .await,
            &["$1", "18446744073709551615", "::numeric"],
        );
        // The right way round: as text, cast in SQL.
        let rows = handle
            .send(Sql::new("SELECT $1::numeric AS n").bind(u64::MAX.to_string()))
            .await
            .unwrap();
        assert_eq!(rows[0]["n"], json!("18446744073709551615"));

        // 10,000 levels deep: refused before it reaches an encoder.
        // (A plain drop of such a value overflows a thread's stack: warden takes it apart.)
        let msg = Sql::new("SELECT $1::jsonb AS j")
            .bind(1)
            .bind(nested(10_000));
        assert_usage(handle.send(msg).await, &["$2", "deeper than 128"]);
        let deep = warden_actors::Transaction::new()
            .push(Sql::new("SELECT 1"))
            .push(Sql::new("SELECT $1::jsonb").bind(nested(10_000)));
        assert_usage(
            handle.send(deep).await,
            &["statement 2", "$1", "deeper than 128"],
        );
        // 128 levels is fine.
        let rows = handle
            .send(Sql::new("SELECT jsonb_typeof($1::jsonb) AS t").bind(nested(128)))
            .await
            .unwrap();
        assert_eq!(rows[0]["t"], json!("array"));

        // NaN cannot be a JSON value: serde_json makes it null before warden sees it.
        assert_eq!(Value::from(f64::NAN), Value::Null);
        let rows = handle
            .send(Sql::new("SELECT $1::float8 IS NULL AS null").bind(f64::NAN))
            .await
            .unwrap();
        assert_eq!(rows[0]["null"], json!(true));

        // Over 64 MiB in all: refused.
        let huge = "x".repeat(40 << 20);
        assert_usage(
            handle
                .send(Sql::new("SELECT $1 || $2").bind(huge.clone()).bind(huge))
                .await,
            &["larger than 64 MiB"],
        );
        // And the connection is as good as before.
        assert_eq!(
            handle.send(Sql::new("SELECT 2 AS n")).await.unwrap()[0]["n"],
            json!(2)
        );
        warden.shutdown(Duration::from_secs(2)).await;
    });
}

#[test]
fn cypher_parameters_are_bounded_and_exact() {
    let graph = GraphServer::start();
    let pg_nowhere = format!(
        "postgres://postgres@127.0.0.1:{}/postgres",
        support::free_port()
    );
    actix_test(async {
        let warden = Warden::start(fast_settings(&graph.uri(), &pg_nowhere)).unwrap();
        let handle = warden.neo4j_handle();
        eventually(Duration::from_secs(10), "connected", || async {
            handle.send(Cypher::new("RETURN 1 AS n")).await.ok()
        })
        .await;
        // 60 kB, one Bolt chunk. (FalkorDB behind the bridge, the stand-in, drops the connection
        // on a message of several chunks: 300 kB fails there. Neo4j takes far more.)
        // A modest string only: the stand-in (FalkorDB behind the Bolt bridge) drops the
        // connection on a parameter of 16 kB or more, which Neo4j takes without trouble. The
        // PostgreSQL test above carries the 10 MB case.
        let big = "x".repeat(4_000);
        let rows = handle
            .send(Cypher::new("RETURN size($s) AS n").param("s", big))
            .await
            .unwrap();
        assert_eq!(rows[0]["n"], json!(4_000));
        assert_usage(
            handle
                .send(Cypher::new("RETURN $big AS n").param("big", json!(u64::MAX)))
                .await,
            &["$big", "18446744073709551615"],
        );
        let msg = Cypher::new("RETURN $deep AS d").param("deep", nested(10_000));
        assert_usage(handle.send(msg).await, &["$deep", "deeper than 128"]);
        assert_eq!(
            handle.send(Cypher::new("RETURN 2 AS n")).await.unwrap()[0]["n"],
            json!(2)
        );
        warden.shutdown(Duration::from_secs(2)).await;
    });
}
