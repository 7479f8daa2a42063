//! The graph side: an event's payload as rows, the `UNWIND` statements that write them, and
//! one batch applied in one graph transaction.
//!
//! The graph shape (see the catalog contract): `(:Recording {uuid, file_name, file_path,
//! version})`, `-[:HAS_METADATA]->(:Metadata {uuid, key, value})`,
//! `-[:HAS_TRACKLIST]->(:Tracklist {uuid, source, cue_file_path})`,
//! `(:Tracklist)-[:CONTAINS_TRACK {start_time, position}]->(:Track {uuid, title, artist})`,
//! a track's uuid being `<tracklist uuid>:<position>`.
//!
//! A batch holds at most one event per recording (the claim takes heads only). It is applied
//! as: (1) the gate: `MERGE` each recording (a placeholder at version 0 if new) and set its
//! version to itself, which takes the node's write lock in Neo4j until commit, and read the
//! stored versions: an event whose version is not above the stored one is a duplicate or stale
//! and changes nothing; (2) the fresh recordings' children are deleted (and, for a delete, the
//! recording); (3) metadata, tracklists, tracks are created; (4) the recordings' properties and
//! versions are set, last. All in one transaction. On a graph without transactions (the
//! FalkorDB stand-in runs each statement at once) a crash part-way leaves the old version on
//! the node, so the replay redoes the whole event: nothing half-applied survives a replay.
//!
//! Every statement's parameters are bounded (`projection.statement_bytes`): a batch takes as
//! many statements as its rows need.

use std::collections::HashSet;

use neo4rs::{BoltType, Graph};
use serde_json::{json, Map, Value};

use super::outbox::{Event, Op};

/// Why the projector cannot read an event's payload: not transient, it counts an attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {event}: malformed payload: {reason}")]
pub struct PayloadError {
    /// The outbox row.
    pub event: i64,
    /// What is wrong.
    pub reason: String,
}

/// One recording as the graph should show it at `version`.
#[derive(Debug, Clone, PartialEq)]
pub struct Projected {
    /// Recording uuid.
    pub uuid: String,
    /// Its version.
    pub version: i64,
    /// `None` for a delete.
    pub snapshot: Option<Snapshot>,
}

/// The rows an upsert writes. Property values are passed as the payload has them: the graph
/// judges them (a value it cannot store is its rejection, and counts an attempt).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// `{uuid, file_name, file_path, version}`.
    pub recording: Value,
    /// `{recording, uuid, key, value}` each.
    pub metadata: Vec<Value>,
    /// `{recording, uuid, source, cue_file_path}`, if the recording has a tracklist.
    pub tracklist: Option<Value>,
    /// `{tracklist, uuid, title, artist, start_time, position}` each.
    pub tracks: Vec<Value>,
}

fn field<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    event: i64,
) -> Result<&'a Value, PayloadError> {
    obj.get(key).ok_or_else(|| PayloadError {
        event,
        reason: format!("`{key}` is missing"),
    })
}

fn string(obj: &Map<String, Value>, key: &str, event: i64) -> Result<String, PayloadError> {
    field(obj, key, event)?
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| PayloadError {
            event,
            reason: format!("`{key}` is not a string"),
        })
}

fn object<'a>(
    v: &'a Value,
    what: &str,
    event: i64,
) -> Result<&'a Map<String, Value>, PayloadError> {
    v.as_object().ok_or_else(|| PayloadError {
        event,
        reason: format!("{what} is not an object"),
    })
}

fn array<'a>(v: &'a Value, what: &str, event: i64) -> Result<&'a Vec<Value>, PayloadError> {
    v.as_array().ok_or_else(|| PayloadError {
        event,
        reason: format!("{what} is not an array"),
    })
}

/// Reads an event's payload.
pub fn project(event: &Event) -> Result<Projected, PayloadError> {
    let id = event.id;
    if event.op == Op::Delete {
        return Ok(Projected {
            uuid: event.recording.clone(),
            version: event.version,
            snapshot: None,
        });
    }
    let p = object(&event.payload, "the payload", id)?;
    let uuid = string(p, "id", id)?;
    if uuid != event.recording {
        return Err(PayloadError {
            event: id,
            reason: format!(
                "its id {uuid} is not the event's recording {}",
                event.recording
            ),
        });
    }
    let version = field(p, "version", id)?.as_i64();
    if version != Some(event.version) {
        return Err(PayloadError {
            event: id,
            reason: format!(
                "its version {version:?} is not the event's {}",
                event.version
            ),
        });
    }
    let recording = json!({
        "uuid": uuid,
        "file_name": field(p, "file_name", id)?,
        "file_path": field(p, "file_path", id)?,
        "version": event.version,
    });
    let mut metadata = Vec::new();
    for (i, m) in array(field(p, "metadata", id)?, "`metadata`", id)?
        .iter()
        .enumerate()
    {
        let m = object(m, &format!("metadata[{i}]"), id)?;
        metadata.push(json!({
            "recording": uuid,
            "uuid": string(m, "id", id)?,
            "key": field(m, "key", id)?,
            "value": field(m, "value", id)?,
        }));
    }
    let (tracklist, tracks) = match field(p, "tracklist", id)? {
        Value::Null => (None, Vec::new()),
        t => {
            let t = object(t, "`tracklist`", id)?;
            let tl = string(t, "id", id)?;
            let mut tracks = Vec::new();
            for (i, k) in array(field(t, "tracks", id)?, "`tracklist.tracks`", id)?
                .iter()
                .enumerate()
            {
                let k = object(k, &format!("tracklist.tracks[{i}]"), id)?;
                tracks.push(json!({
                    "tracklist": tl,
                    "uuid": format!("{tl}:{i}"),
                    "title": field(k, "title", id)?,
                    "artist": k.get("artist").cloned().unwrap_or(Value::Null),
                    "start_time": field(k, "start_time", id)?,
                    "position": i,
                }));
            }
            let row = json!({
                "recording": uuid,
                "uuid": tl,
                "source": field(t, "source", id)?,
                "cue_file_path": t.get("cue_file_path").cloned().unwrap_or(Value::Null),
            });
            (Some(row), tracks)
        }
    };
    Ok(Projected {
        uuid,
        version: event.version,
        snapshot: Some(Snapshot {
            recording,
            metadata,
            tracklist,
            tracks,
        }),
    })
}

/// (1) The gate: creates missing recordings at version 0, locks each, reads stored versions.
pub const GATE: &str = "UNWIND $rows AS row \
    MERGE (r:Recording {uuid: row.uuid}) ON CREATE SET r.version = 0 \
    SET r.version = r.version \
    RETURN r.uuid AS uuid, r.version AS stored";
/// (2) The children of recordings about to be replaced.
pub const CLEAR_CHILDREN: &str = "UNWIND $rows AS id \
    MATCH (r:Recording {uuid: id}) \
    OPTIONAL MATCH (r)-[:HAS_METADATA|HAS_TRACKLIST]->(c) \
    OPTIONAL MATCH (c)-[:CONTAINS_TRACK]->(k) \
    DETACH DELETE k, c";
/// (2) Deleted recordings, once their children are gone.
pub const DELETE_RECORDINGS: &str = "UNWIND $rows AS id \
    MATCH (r:Recording {uuid: id}) DETACH DELETE r";
/// (3) Metadata.
pub const CREATE_METADATA: &str = "UNWIND $rows AS m \
    MATCH (r:Recording {uuid: m.recording}) \
    CREATE (r)-[:HAS_METADATA]->(:Metadata {uuid: m.uuid, key: m.key, value: m.value})";
/// (3) Tracklists.
pub const CREATE_TRACKLISTS: &str = "UNWIND $rows AS t \
    MATCH (r:Recording {uuid: t.recording}) \
    CREATE (r)-[:HAS_TRACKLIST]->(:Tracklist {uuid: t.uuid, source: t.source, cue_file_path: t.cue_file_path})";
/// (3) Tracks.
pub const CREATE_TRACKS: &str = "UNWIND $rows AS k \
    MATCH (t:Tracklist {uuid: k.tracklist}) \
    CREATE (t)-[:CONTAINS_TRACK {start_time: k.start_time, position: k.position}]->\
    (:Track {uuid: k.uuid, title: k.title, artist: k.artist})";
/// (4) The recordings' properties and versions, last.
pub const SET_RECORDINGS: &str = "UNWIND $rows AS row \
    MATCH (r:Recording {uuid: row.uuid}) \
    SET r.file_name = row.file_name, r.file_path = row.file_path, r.version = row.version";

/// One statement: its text and its `$rows`.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// The Cypher.
    pub query: &'static str,
    /// Bound as `$rows`.
    pub rows: Vec<Value>,
}

/// Splits `rows` into statements whose `$rows` take at most `budget` bytes of JSON each (a
/// row larger than the budget goes alone).
pub fn chunk(query: &'static str, rows: Vec<Value>, budget: usize) -> Vec<Statement> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut size = 2;
    for row in rows {
        let len = serde_json::to_string(&row).map_or(0, |s| s.len()) + 1;
        if !current.is_empty() && size + len > budget {
            out.push(Statement {
                query,
                rows: std::mem::take(&mut current),
            });
            size = 2;
        }
        size += len;
        current.push(row);
    }
    if !current.is_empty() {
        out.push(Statement {
            query,
            rows: current,
        });
    }
    out
}

/// The gate's statements for a batch.
pub fn gate(batch: &[Projected], budget: usize) -> Vec<Statement> {
    let rows = batch
        .iter()
        .map(|p| json!({"uuid": p.uuid, "version": p.version}))
        .collect();
    chunk(GATE, rows, budget)
}

/// The writes for the recordings the gate found fresh, in order.
pub fn writes(batch: &[Projected], fresh: &HashSet<String>, budget: usize) -> Vec<Statement> {
    let fresh: Vec<&Projected> = batch.iter().filter(|p| fresh.contains(&p.uuid)).collect();
    let ids = |deleted: bool| -> Vec<Value> {
        fresh
            .iter()
            .filter(|p| p.snapshot.is_none() == deleted)
            .map(|p| Value::from(p.uuid.clone()))
            .collect()
    };
    let snapshots = || fresh.iter().filter_map(|p| p.snapshot.as_ref());
    let mut out = Vec::new();
    let all: Vec<Value> = fresh.iter().map(|p| Value::from(p.uuid.clone())).collect();
    out.extend(chunk(CLEAR_CHILDREN, all, budget));
    out.extend(chunk(DELETE_RECORDINGS, ids(true), budget));
    out.extend(chunk(
        CREATE_METADATA,
        snapshots()
            .flat_map(|s| s.metadata.iter().cloned())
            .collect(),
        budget,
    ));
    out.extend(chunk(
        CREATE_TRACKLISTS,
        snapshots().filter_map(|s| s.tracklist.clone()).collect(),
        budget,
    ));
    out.extend(chunk(
        CREATE_TRACKS,
        snapshots().flat_map(|s| s.tracks.iter().cloned()).collect(),
        budget,
    ));
    out.extend(chunk(
        SET_RECORDINGS,
        snapshots().map(|s| s.recording.clone()).collect(),
        budget,
    ));
    out
}

fn query(statement: &Statement) -> Result<neo4rs::Query, neo4rs::Error> {
    let rows = BoltType::try_from(Value::Array(statement.rows.clone()))?;
    Ok(neo4rs::query(statement.query).param("rows", rows))
}

/// What a batch did: how many events changed the graph (the rest were duplicates or stale).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The recordings written; the batch's others were skipped by the version guard.
    pub fresh: HashSet<String>,
}

/// Applies a batch in one graph transaction (see the module docs).
pub async fn apply(
    graph: Graph,
    batch: std::sync::Arc<Vec<Projected>>,
    budget: usize,
) -> Result<Applied, neo4rs::Error> {
    let mut txn = graph.start_txn().await?;
    let result = async {
        let mut fresh = HashSet::new();
        for statement in gate(&batch, budget) {
            let mut stream = txn.execute(query(&statement)?).await?;
            while let Some(row) = stream.next(txn.handle()).await? {
                let uuid: String = row.get("uuid")?;
                let stored: i64 = row.get("stored")?;
                let wanted = batch.iter().find(|p| p.uuid == uuid).map(|p| p.version);
                if wanted.is_some_and(|v| stored < v) {
                    fresh.insert(uuid);
                }
            }
        }
        for statement in writes(&batch, &fresh, budget) {
            txn.run(query(&statement)?).await?;
        }
        Ok::<_, neo4rs::Error>(Applied { fresh })
    }
    .await;
    match result {
        Ok(applied) => {
            txn.commit().await?;
            Ok(applied)
        }
        Err(e) => {
            let _ = txn.rollback().await;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upsert(payload: Value) -> Event {
        Event {
            id: 7,
            recording: "r1".into(),
            version: 2,
            op: Op::Upsert,
            payload,
            attempts: 0,
        }
    }

    fn snapshot() -> Value {
        json!({
            "id": "r1", "version": 2, "file_name": "a.flac", "file_path": "/m/a.flac",
            "metadata": [{"id": "m1", "key": "bpm", "value": "128"}],
            "tracklist": {"id": "t1", "source": "cue", "cue_file_path": null,
                "tracks": [{"title": "One", "artist": "A", "start_time": "00:00"},
                           {"title": "Two", "artist": "B", "start_time": "03:10"}]}
        })
    }

    #[test]
    fn a_snapshot_becomes_rows_with_derived_track_ids() {
        let p = project(&upsert(snapshot())).unwrap();
        let s = p.snapshot.unwrap();
        assert_eq!(s.recording["version"], 2);
        assert_eq!(s.metadata[0]["key"], "bpm");
        assert_eq!(s.tracklist.unwrap()["uuid"], "t1");
        assert_eq!(s.tracks[1]["uuid"], "t1:1");
        assert_eq!(s.tracks[1]["position"], 1);
    }

    #[test]
    fn a_malformed_payload_says_what_is_wrong() {
        let mut bad = snapshot();
        bad["version"] = json!(3);
        assert!(project(&upsert(bad))
            .unwrap_err()
            .reason
            .contains("version"));
        let mut bad = snapshot();
        bad.as_object_mut().unwrap().remove("metadata");
        assert!(project(&upsert(bad))
            .unwrap_err()
            .reason
            .contains("metadata"));
        assert!(project(&upsert(json!("x"))).is_err());
    }

    #[test]
    fn statements_stay_within_the_byte_budget() {
        let rows: Vec<Value> = (0..100)
            .map(|i| json!({"uuid": format!("u{i:03}")}))
            .collect();
        let one = serde_json::to_string(&rows[0]).unwrap().len() + 1;
        let chunks = chunk(GATE, rows.clone(), 2 + one * 10);
        assert_eq!(chunks.len(), 10);
        assert!(chunks.iter().all(|c| c.rows.len() == 10));
        // A row larger than the budget goes alone, never dropped.
        let chunks = chunk(GATE, rows, 1);
        assert_eq!(chunks.len(), 100);
    }

    #[test]
    fn only_fresh_recordings_are_written_and_versions_are_set_last() {
        let a = project(&upsert(snapshot())).unwrap();
        let d = Projected {
            uuid: "r2".into(),
            version: 5,
            snapshot: None,
        };
        let batch = vec![a, d];
        let fresh: HashSet<String> = ["r1".to_owned(), "r2".to_owned()].into();
        let w = writes(&batch, &fresh, 1 << 20);
        let order: Vec<&str> = w.iter().map(|s| s.query).collect();
        assert_eq!(
            order,
            [
                CLEAR_CHILDREN,
                DELETE_RECORDINGS,
                CREATE_METADATA,
                CREATE_TRACKLISTS,
                CREATE_TRACKS,
                SET_RECORDINGS
            ]
        );
        assert_eq!(w[1].rows, vec![json!("r2")]);
        let only_r2: HashSet<String> = ["r2".to_owned()].into();
        let w = writes(&batch, &only_r2, 1 << 20);
        assert_eq!(w.len(), 2, "{w:?}");
    }
}
