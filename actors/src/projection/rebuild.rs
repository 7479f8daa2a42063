//! `warden project --rebuild`: the whole graph again, from PostgreSQL.
//!
//! 1. Clear: every node of the projected labels goes, in bounded batches.
//! 2. Replay: every recording's `recording_snapshot()` at its current version, in pages of
//!    `batch_size` recordings (keyset on the id), each page applied like a batch of outbox
//!    events: version-guarded, so a projector running beside the rebuild that has already
//!    written a later version keeps it, and an older one is overwritten.
//! 3. Sweep: a recording deleted in PostgreSQL while the rebuild ran may have been replayed
//!    from a snapshot read before its delete, after the projector had applied the delete;
//!    every graph recording that PostgreSQL no longer has is removed.
//!
//! What it guarantees when it returns: every recording PostgreSQL had when its page was read
//! is in the graph at that version or a later one, with exactly that version's children; none
//! that was deleted before the sweep read it is left. Events committed meanwhile stay in the
//! outbox and the projector applies them as usual (a no-op for versions already written). On
//! real Neo4j the gate's write lock serialises a page against the projector's batch for the
//! same recording; the FalkorDB stand-in has no such isolation between statements, so there a
//! rebuild beside a running projector is only as safe as their statements' interleaving.

use std::sync::Arc;

use serde_json::Value;

use super::{
    cypher,
    outbox::{Event, Op},
};
use crate::{Cypher, Database, Neo4jHandle, PostgresHandle, Sql, WardenError, WithGraph};

/// What a rebuild did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebuildReport {
    /// Nodes removed by the clear.
    pub cleared: u64,
    /// Recordings replayed.
    pub replayed: u64,
    /// Recordings a projector running beside had already written at a later version.
    pub skipped: u64,
    /// Recordings removed by the sweep (deleted in PostgreSQL during the rebuild).
    pub swept: u64,
}

const LABELS: [&str; 4] = ["Track", "Tracklist", "Metadata", "Recording"];

/// Rebuilds the graph; see the module docs. `batch_size` bounds every step.
pub async fn rebuild(
    pg: &PostgresHandle,
    graph: &Neo4jHandle,
    batch_size: u32,
    statement_bytes: usize,
) -> Result<RebuildReport, WardenError> {
    let mut report = RebuildReport::default();
    for label in LABELS {
        loop {
            let rows = graph
                .send(
                    Cypher::new(format!(
                        "MATCH (n:{label}) WITH n LIMIT $limit DETACH DELETE n RETURN count(n) AS n"
                    ))
                    .param("limit", batch_size),
                )
                .await?;
            let n = rows.first().and_then(|r| r["n"].as_u64()).unwrap_or(0);
            report.cleared += n;
            if n == 0 {
                break;
            }
        }
    }
    let mut after = "00000000-0000-0000-0000-000000000000".to_owned();
    loop {
        let rows = pg
            .send(
                Sql::new(
                    "SELECT id::text AS id, recording_snapshot(id) AS snapshot FROM recordings \
                     WHERE id > $1::uuid ORDER BY id LIMIT $2",
                )
                .bind(after.clone())
                .bind(i64::from(batch_size)),
            )
            .await?;
        let Some(last) = rows.last() else { break };
        after = last["id"].as_str().unwrap_or_default().to_owned();
        let mut batch = Vec::with_capacity(rows.len());
        for row in &rows {
            let snapshot = row["snapshot"].clone();
            // Deleted between the page's read and its snapshot: nothing to replay.
            if snapshot.is_null() {
                continue;
            }
            let event = Event {
                id: 0,
                recording: row["id"].as_str().unwrap_or_default().to_owned(),
                version: snapshot["version"].as_i64().unwrap_or(0),
                op: Op::Upsert,
                payload: snapshot,
                attempts: 0,
            };
            batch.push(
                cypher::project(&event).map_err(|e| WardenError::Conversion {
                    database: Database::Postgres,
                    message: e.to_string(),
                })?,
            );
        }
        let n = batch.len() as u64;
        let batch = Arc::new(batch);
        let applied = graph
            .send(WithGraph::new(move |g| {
                Box::pin(cypher::apply(g, batch.clone(), statement_bytes))
            }))
            .await?;
        report.replayed += applied.fresh.len() as u64;
        report.skipped += n - applied.fresh.len() as u64;
    }
    report.swept = sweep(pg, graph, batch_size, statement_bytes).await?;
    Ok(report)
}

/// Removes graph recordings that PostgreSQL no longer has.
async fn sweep(
    pg: &PostgresHandle,
    graph: &Neo4jHandle,
    batch_size: u32,
    statement_bytes: usize,
) -> Result<u64, WardenError> {
    let mut after = String::new();
    let mut swept = 0;
    loop {
        let rows = graph
            .send(
                Cypher::new(
                    "MATCH (r:Recording) WHERE r.uuid > $after \
                     RETURN r.uuid AS uuid ORDER BY uuid LIMIT $limit",
                )
                .param("after", after.clone())
                .param("limit", batch_size),
            )
            .await?;
        let Some(last) = rows.last() else { break };
        after = last["uuid"].as_str().unwrap_or_default().to_owned();
        let ids: Vec<Value> = rows.iter().map(|r| r["uuid"].clone()).collect();
        let present = pg
            .send(
                Sql::new(
                    "SELECT id::text AS id FROM recordings \
                     WHERE id::text IN (SELECT jsonb_array_elements_text($1))",
                )
                .bind(Value::from(ids.clone())),
            )
            .await?;
        let present: std::collections::HashSet<&str> =
            present.iter().filter_map(|r| r["id"].as_str()).collect();
        let gone: Vec<Value> = ids
            .into_iter()
            .filter(|id| !present.contains(id.as_str().unwrap_or_default()))
            .collect();
        if gone.is_empty() {
            continue;
        }
        swept += gone.len() as u64;
        let mut tx = crate::CypherTransaction::new();
        for query in [cypher::CLEAR_CHILDREN, cypher::DELETE_RECORDINGS] {
            for statement in cypher::chunk(query, gone.clone(), statement_bytes) {
                tx = tx.push(Cypher::new(statement.query).param("rows", statement.rows));
            }
        }
        graph.send(tx).await?;
    }
    Ok(swept)
}
