//! The catalog's writes as plain SQL, exactly as the catalog contract says (each write one
//! transaction ending with its outbox event), and the comparison of the graph with PostgreSQL.
//! (The catalog library lives on another branch; these tests write what it writes.)

use std::{collections::BTreeMap, str::FromStr, time::Duration};

use serde_json::{json, Value};
use sqlx::{postgres::PgConnectOptions, PgPool, Row};
use warden_actors::{Cypher, Neo4jHandle};

/// A pool of the test's own with warden's schema on its search_path (`recording_snapshot()`
/// reads unqualified tables).
pub async fn pool(url: &str, size: u32) -> PgPool {
    let options = PgConnectOptions::from_str(url)
        .expect("url")
        .options([("search_path", "warden,public")]);
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .expect("test pool")
}

/// Tracks of a tracklist: `n` entries. Text stays free of `'`: the FalkorDB stand-in pastes
/// parameters into its query text unescaped (see README).
pub fn tracks(n: usize, tag: &str) -> Value {
    Value::Array(
        (0..n)
            .map(|i| {
                json!({"title": format!("Track {i} of {tag}"), "artist": format!("Artist {}", i % 7),
                       "start_time": format!("{:02}:{:02}", i * 3 / 60, (i * 3) % 60)})
            })
            .collect(),
    )
}

const EVENT: &str = "INSERT INTO graph_outbox (recording_id, version, op, payload) \
    SELECT id, version, 'upsert', recording_snapshot(id) FROM recordings WHERE id = $1::uuid";

/// Creates a recording with `metadata` entries and a tracklist of `n_tracks` (none if 0).
pub async fn create(pg: &PgPool, name: &str, metadata: usize, n_tracks: usize) -> String {
    let mut tx = pg.begin().await.expect("begin");
    let id: String = sqlx::query(
        "INSERT INTO recordings (file_path, file_name) VALUES ($1, $2) RETURNING id::text",
    )
    .bind(format!("/music/{name}.flac"))
    .bind(format!("{name}.flac"))
    .fetch_one(&mut *tx)
    .await
    .expect("insert recording")
    .get(0);
    for k in 0..metadata {
        sqlx::query("INSERT INTO metadata (recording_id, key, value) VALUES ($1::uuid, $2, $3)")
            .bind(&id)
            .bind(format!("key{k}"))
            .bind(format!("value {k} of {name}"))
            .execute(&mut *tx)
            .await
            .expect("insert metadata");
    }
    if n_tracks > 0 {
        sqlx::query(
            "INSERT INTO tracklists (recording_id, source, tracks) VALUES ($1::uuid, 'cue', $2)",
        )
        .bind(&id)
        .bind(tracks(n_tracks, name))
        .execute(&mut *tx)
        .await
        .expect("insert tracklist");
    }
    sqlx::query(EVENT)
        .bind(&id)
        .execute(&mut *tx)
        .await
        .expect("insert event");
    tx.commit().await.expect("commit");
    id
}

/// Renames a recording and changes one metadata value: version + 1, one event.
pub async fn update(pg: &PgPool, id: &str, name: &str) {
    let mut tx = pg.begin().await.expect("begin");
    sqlx::query(
        "UPDATE recordings SET file_name = $2, version = version + 1, updated_at = now() \
         WHERE id = $1::uuid",
    )
    .bind(id)
    .bind(format!("{name}.flac"))
    .execute(&mut *tx)
    .await
    .expect("update");
    sqlx::query("UPDATE metadata SET value = $2 WHERE recording_id = $1::uuid AND key = 'key0'")
        .bind(id)
        .bind(format!("changed for {name}"))
        .execute(&mut *tx)
        .await
        .expect("update metadata");
    sqlx::query(EVENT)
        .bind(id)
        .execute(&mut *tx)
        .await
        .expect("insert event");
    tx.commit().await.expect("commit");
}

/// Deletes a recording: its event carries one past its last version.
pub async fn delete(pg: &PgPool, id: &str) {
    let mut tx = pg.begin().await.expect("begin");
    let version: i64 = sqlx::query("DELETE FROM recordings WHERE id = $1::uuid RETURNING version")
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .expect("delete")
        .get(0);
    sqlx::query(
        "INSERT INTO graph_outbox (recording_id, version, op, payload) \
         VALUES ($1::uuid, $2, 'delete', '{}')",
    )
    .bind(id)
    .bind(version + 1)
    .execute(&mut *tx)
    .await
    .expect("insert event");
    tx.commit().await.expect("commit");
}

/// `(pending, dead, max attempts)` in the outbox.
pub async fn outbox(pg: &PgPool) -> (i64, i64, i32) {
    let row = sqlx::query(
        "SELECT count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'dead'), \
         coalesce(max(attempts), 0) FROM graph_outbox",
    )
    .fetch_one(pg)
    .await
    .expect("count outbox");
    (row.get(0), row.get(1), row.get(2))
}

async fn cypher(graph: &Neo4jHandle, q: &str) -> Vec<serde_json::Map<String, Value>> {
    graph
        .send(Cypher::new(q))
        .await
        .unwrap_or_else(|e| panic!("{q}: {e}"))
}

/// What PostgreSQL says the graph must be, in the same shape as [`graph_state`].
pub async fn pg_state(pg: &PgPool) -> State {
    let one = |q: &'static str| async move {
        sqlx::query(q)
            .fetch_one(pg)
            .await
            .expect(q)
            .get::<i64, _>(0)
    };
    let mut counts = BTreeMap::new();
    counts.insert(
        "Recording".to_owned(),
        one("SELECT count(*) FROM recordings").await,
    );
    counts.insert(
        "Metadata".to_owned(),
        one("SELECT count(*) FROM metadata").await,
    );
    counts.insert(
        "Tracklist".to_owned(),
        one("SELECT count(*) FROM tracklists").await,
    );
    counts.insert(
        "Track".to_owned(),
        one("SELECT coalesce(sum(jsonb_array_length(tracks)), 0)::bigint FROM tracklists").await,
    );
    counts.insert("HAS_METADATA".to_owned(), counts["Metadata"]);
    counts.insert("HAS_TRACKLIST".to_owned(), counts["Tracklist"]);
    counts.insert("CONTAINS_TRACK".to_owned(), counts["Track"]);
    let mut recordings = BTreeMap::new();
    for row in sqlx::query(
        "SELECT r.id::text, r.file_name, r.file_path, r.version, \
         (SELECT coalesce(string_agg(m.key || '=' || m.value, ';' ORDER BY m.key), '') FROM metadata m WHERE m.recording_id = r.id), \
         (SELECT coalesce(string_agg(t->>'title' || '@' || (t->>'start_time'), ';' ORDER BY n), '') \
            FROM tracklists tl, jsonb_array_elements(tl.tracks) WITH ORDINALITY AS x(t, n) WHERE tl.recording_id = r.id) \
         FROM recordings r",
    )
    .fetch_all(pg)
    .await
    .expect("recordings")
    {
        recordings.insert(
            row.get::<String, _>(0),
            (
                row.get::<String, _>(1),
                row.get::<String, _>(2),
                row.get::<i64, _>(3),
                row.get::<String, _>(4),
                row.get::<String, _>(5),
            ),
        );
    }
    State { counts, recordings }
}

/// Node counts per label, relationship counts per type, and every recording's properties,
/// metadata and tracks, as the graph has them.
pub async fn graph_state(graph: &Neo4jHandle) -> State {
    let mut counts = BTreeMap::new();
    for label in ["Recording", "Metadata", "Tracklist", "Track"] {
        let rows = cypher(graph, &format!("MATCH (n:{label}) RETURN count(n) AS n")).await;
        counts.insert(label.to_owned(), rows[0]["n"].as_i64().unwrap_or(-1));
    }
    for rel in ["HAS_METADATA", "HAS_TRACKLIST", "CONTAINS_TRACK"] {
        let rows = cypher(
            graph,
            &format!("MATCH ()-[e:{rel}]->() RETURN count(e) AS n"),
        )
        .await;
        counts.insert(rel.to_owned(), rows[0]["n"].as_i64().unwrap_or(-1));
    }
    let mut metadata: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for row in cypher(
        graph,
        "MATCH (r:Recording)-[:HAS_METADATA]->(m:Metadata) RETURN r.uuid AS r, m.key AS k, m.value AS v",
    )
    .await
    {
        metadata.entry(s(&row["r"])).or_default().push((s(&row["k"]), s(&row["v"])));
    }
    let mut tracks: BTreeMap<String, Vec<(i64, String, String)>> = BTreeMap::new();
    for row in cypher(
        graph,
        "MATCH (r:Recording)-[:HAS_TRACKLIST]->(:Tracklist)-[c:CONTAINS_TRACK]->(k:Track) \
         RETURN r.uuid AS r, c.position AS p, k.title AS t, c.start_time AS s",
    )
    .await
    {
        tracks.entry(s(&row["r"])).or_default().push((
            row["p"].as_i64().unwrap_or(-1),
            s(&row["t"]),
            s(&row["s"]),
        ));
    }
    let mut recordings = BTreeMap::new();
    for row in cypher(
        graph,
        "MATCH (r:Recording) RETURN r.uuid AS id, r.file_name AS name, r.file_path AS path, r.version AS v",
    )
    .await
    {
        let id = s(&row["id"]);
        let mut m = metadata.remove(&id).unwrap_or_default();
        m.sort();
        let m: Vec<String> = m.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut t = tracks.remove(&id).unwrap_or_default();
        t.sort();
        let t: Vec<String> = t.into_iter().map(|(_, t, s)| format!("{t}@{s}")).collect();
        recordings.insert(
            id,
            (s(&row["name"]), s(&row["path"]), row["v"].as_i64().unwrap_or(-1), m.join(";"), t.join(";")),
        );
    }
    State { counts, recordings }
}

fn s(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

/// Counts, and per recording `(file_name, file_path, version, metadata, tracks)`.
#[derive(Debug, PartialEq)]
pub struct State {
    pub counts: BTreeMap<String, i64>,
    pub recordings: BTreeMap<String, (String, String, i64, String, String)>,
}

/// Asserts the graph equals PostgreSQL, naming the first difference.
pub fn assert_same(graph: &State, pg: &State) {
    assert_eq!(
        graph.counts, pg.counts,
        "node/relationship counts: graph vs postgres"
    );
    assert_eq!(graph.recordings.len(), pg.recordings.len());
    for (id, want) in &pg.recordings {
        assert_eq!(graph.recordings.get(id), Some(want), "recording {id}");
    }
}
