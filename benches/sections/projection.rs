//! `projection`: events per second the projector applies, against the same data written with
//! direct `UNWIND` statements (neo4rs, no outbox, no claim, no version gate) in the same run.
//!
//! Each round: the graph path is hung at the proxy, the graph and the catalog emptied, the
//! recordings written to PostgreSQL with their events (the catalog contract's SQL); then the
//! proxy resumes and the clock runs until the outbox is empty. The direct path then writes the
//! same recordings' rows (the projector's own statements for a cleared graph, through the same
//! proxy, with the same statement budget and batch size) into an emptied graph. Ratio =
//! direct time ÷ projection time; medians of the rounds. The projection's time includes its
//! reconnect after the hang (backoff capped at 100 ms) and the outbox's claims and deletes.

use std::{collections::HashSet, time::Duration};

use warden_actors::{
    projection::{
        cypher::{self, Projected},
        outbox::{Event, Op},
    },
    Database, Warden,
};

use super::{catalog, row, support, wait_connected, GraphServer, PgServer, Proxy, Row};

const RECORDINGS: usize = 500;
const ROUNDS: usize = 3;
const BATCH: u32 = 100;
/// The stand-in crashes on parameters past about 4 KB (README).
const STATEMENT_BYTES: usize = 3500;

fn graph_config(port: u16) -> neo4rs::Config {
    neo4rs::ConfigBuilder::default()
        .uri(format!("127.0.0.1:{port}"))
        .user("neo4j")
        .password("bench")
        .db("neo4j")
        .max_connections(2)
        .build()
        .expect("config")
}

async fn run(graph: &neo4rs::Graph, q: &str) {
    graph.run(neo4rs::query(q)).await.expect(q);
}

pub fn projection(rows: &mut Vec<Row>) {
    eprintln!("projection: {RECORDINGS} recordings (5 metadata, 20 tracks) x {ROUNDS} rounds");
    let pg = PgServer::start();
    let graph = GraphServer::start();
    let proxy = Proxy::start(graph.port);
    let (mut projected, mut direct) = (Vec::new(), Vec::new());
    actix::System::new().block_on(async {
        let mut s = support::fast_settings(&format!("bolt://127.0.0.1:{}", proxy.port), &pg.url());
        s.projection.enabled = true;
        s.projection.batch_size = BATCH;
        s.projection.statement_bytes = STATEMENT_BYTES;
        s.neo4j.max_connections = 3;
        s.backoff.max = Duration::from_millis(100);
        let warden = Warden::start(s).expect("settings");
        wait_connected(&warden, Database::Postgres).await;
        wait_connected(&warden, Database::Neo4j).await;
        let db = catalog::pool(&pg.url(), 4).await;
        let around = neo4rs::Graph::connect(graph_config(graph.port)).expect("graph");
        for round in 0..ROUNDS {
            proxy.hang();
            let h = warden.health_handle();
            while h.view().components[&Database::Neo4j].healthy {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            run(&around, "MATCH (n) DETACH DELETE n").await;
            sqlx::query("TRUNCATE recordings CASCADE").execute(&db).await.expect("truncate");
            sqlx::query("TRUNCATE graph_outbox").execute(&db).await.expect("truncate");
            for i in 0..RECORDINGS {
                catalog::create(&db, &format!("b{round}-{i}"), 5, 20).await;
            }
            proxy.resume();
            let t = std::time::Instant::now();
            loop {
                let (pending, dead, _) = catalog::outbox(&db).await;
                assert_eq!(dead, 0, "no event may die in the benchmark");
                if pending == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let p = t.elapsed();

            // The same rows, written directly.
            let snapshots: Vec<serde_json::Value> =
                sqlx::query_scalar("SELECT recording_snapshot(id) FROM recordings ORDER BY id")
                    .fetch_all(&db)
                    .await
                    .expect("snapshots");
            let batches: Vec<Vec<Projected>> = snapshots
                .chunks(BATCH as usize)
                .map(|chunk| {
                    chunk
                        .iter()
                        .map(|s| {
                            cypher::project(&Event {
                                id: 0,
                                recording: s["id"].as_str().unwrap_or_default().to_owned(),
                                version: s["version"].as_i64().unwrap_or(0),
                                op: Op::Upsert,
                                payload: s.clone(),
                                attempts: 0,
                            })
                            .expect("snapshot")
                        })
                        .collect()
                })
                .collect();
            run(&around, "MATCH (n) DETACH DELETE n").await;
            let through = neo4rs::Graph::connect(graph_config(proxy.port)).expect("graph");
            let t = std::time::Instant::now();
            for batch in &batches {
                let fresh: HashSet<String> = batch.iter().map(|p| p.uuid.clone()).collect();
                let mut txn = through.start_txn().await.expect("begin");
                // A cleared graph: the recordings are created, then their children.
                let create = batch
                    .iter()
                    .map(|p| serde_json::json!({"uuid": p.uuid}))
                    .collect();
                for st in cypher::chunk("UNWIND $rows AS row CREATE (:Recording {uuid: row.uuid})", create, STATEMENT_BYTES) {
                    txn.run(neo4rs::query(st.query).param("rows", neo4rs::BoltType::try_from(serde_json::Value::Array(st.rows)).expect("bolt")))
                        .await
                        .expect("create");
                }
                for st in cypher::writes(batch, &fresh, STATEMENT_BYTES)
                    .into_iter()
                    .filter(|st| st.query != cypher::CLEAR_CHILDREN && st.query != cypher::DELETE_RECORDINGS)
                {
                    txn.run(neo4rs::query(st.query).param("rows", neo4rs::BoltType::try_from(serde_json::Value::Array(st.rows)).expect("bolt")))
                        .await
                        .expect("write");
                }
                txn.commit().await.expect("commit");
            }
            let d = t.elapsed();
            eprintln!(
                "  round {round}: projection {:.0} events/s ({p:?}), direct {:.0} recordings/s ({d:?})",
                RECORDINGS as f64 / p.as_secs_f64(),
                RECORDINGS as f64 / d.as_secs_f64()
            );
            projected.push(p);
            direct.push(d);
        }
        warden.shutdown(Duration::from_secs(5)).await;
    });
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let ratios: Vec<f64> = direct
        .iter()
        .zip(&projected)
        .map(|(d, p)| d.as_secs_f64() / p.as_secs_f64())
        .collect();
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    let ratio = sorted[sorted.len() / 2];
    let p = median(&mut projected);
    let d = median(&mut direct);
    row(
        rows,
        format!("projection, {RECORDINGS} recordings of 26 nodes (events/s)"),
        format!("{:.0}", RECORDINGS as f64 / p.as_secs_f64()),
        "",
        None,
    );
    row(
        rows,
        "direct UNWIND, same rows (recordings/s)",
        format!("{:.0}", RECORDINGS as f64 / d.as_secs_f64()),
        "",
        None,
    );
    row(
        rows,
        format!("projection ÷ direct (median of {ROUNDS} rounds: {ratios:.2?})"),
        format!("{:.0} %", ratio * 100.0),
        ">= 80 %",
        Some(ratio >= 0.8),
    );
}
