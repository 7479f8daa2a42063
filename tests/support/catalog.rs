//! Helpers for the catalog's tests (tests/catalog*.rs): a warden on
//! a throwaway PostgreSQL, and the rows the catalog leaves there, read with a separate admin
//! connection exactly as the graph projector would see them after commit.

use std::{collections::BTreeMap, time::Duration};

use serde_json::Value;
use uuid::Uuid;
use warden_actors::{
    catalog::{CatalogError, NewRecording, Recording, Track},
    Warden,
};

use super::{fast_settings, no_graph, pg::PgServer, pg_started};

/// How long a test's warden gets to shut down.
pub const SHUTDOWN: Duration = Duration::from_secs(2);

/// A warden on `pg` with the tests' fast timings, once PostgreSQL is connected; calls get
/// 10 s rather than 3 (a machine shared by several builds can be slow, and no test here
/// waits for a call to time out).
pub async fn connected(pg: &PgServer) -> Warden {
    let mut settings = fast_settings(&no_graph(), &pg.url());
    settings.postgres.query_timeout = Duration::from_secs(10);
    pg_started(settings).await
}

/// One outbox row as the projector reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: i64,
    pub version: i64,
    pub op: String,
    pub payload: Value,
}

/// The outbox events of one recording, oldest first.
pub async fn events(admin: &sqlx::PgPool, recording: Uuid) -> Vec<Event> {
    let rows: Vec<(i64, i64, String, sqlx::types::Json<Value>)> = sqlx::query_as(
        "SELECT id, version, op, payload FROM warden.graph_outbox \
         WHERE recording_id = $1 ORDER BY id",
    )
    .bind(recording)
    .fetch_all(admin)
    .await
    .expect("read the outbox");
    rows.into_iter()
        .map(|(id, version, op, payload)| Event {
            id,
            version,
            op,
            payload: payload.0,
        })
        .collect()
}

/// Rows in each catalog table: recordings, metadata, tracklists, outbox.
pub async fn counts(admin: &sqlx::PgPool) -> [i64; 4] {
    let mut out = [0; 4];
    for (i, table) in ["recordings", "metadata", "tracklists", "graph_outbox"]
        .iter()
        .enumerate()
    {
        out[i] = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM warden.{table}"
        )))
        .fetch_one(admin)
        .await
        .expect("count");
    }
    out
}

/// The recording's row version as PostgreSQL has it.
pub async fn row_version(admin: &sqlx::PgPool, id: Uuid) -> Option<i64> {
    sqlx::query_scalar("SELECT version FROM warden.recordings WHERE id = $1")
        .bind(id)
        .fetch_optional(admin)
        .await
        .expect("read the version")
}

pub fn track(title: &str, artist: &str, start_time: &str) -> Track {
    Track {
        title: title.into(),
        artist: artist.into(),
        start_time: start_time.into(),
    }
}

pub fn new_recording(name: &str) -> NewRecording {
    NewRecording {
        file_path: format!("/sets/{name}.flac"),
        file_name: format!("{name}.flac"),
        ..Default::default()
    }
}

pub fn hex(n: u8, len: usize) -> String {
    format!("{n:02x}").repeat(len / 2)
}

/// What an upsert event's payload says of a recording, in the API's shape, so that it can be
/// compared with what the call returned.
pub fn as_recording(payload: &Value) -> Recording {
    let mut p = payload.clone();
    let metadata: BTreeMap<String, String> = p["metadata"]
        .as_array()
        .expect("metadata is an array")
        .iter()
        .map(|e| {
            assert!(e["id"].is_string(), "each metadata entry carries its id");
            (
                e["key"].as_str().expect("a key").to_owned(),
                e["value"].as_str().expect("a value").to_owned(),
            )
        })
        .collect();
    p["metadata"] = serde_json::to_value(metadata).expect("a map");
    serde_json::from_value(p).expect("the payload reads as a recording")
}

pub fn not_found<T: std::fmt::Debug>(r: Result<T, CatalogError>) -> &'static str {
    match r {
        Err(CatalogError::NotFound { what }) => what,
        other => panic!("expected NotFound, got {other:?}"),
    }
}

pub fn conflict<T: std::fmt::Debug>(r: Result<T, CatalogError>) -> &'static str {
    match r {
        Err(e @ CatalogError::Conflict { .. }) => {
            assert!(!e.is_transient());
            let CatalogError::Conflict { field, .. } = e else {
                unreachable!()
            };
            field
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
}

pub fn invalid<T: std::fmt::Debug>(r: Result<T, CatalogError>) -> String {
    match r {
        Err(CatalogError::Invalid { field, .. }) => field,
        other => panic!("expected Invalid, got {other:?}"),
    }
}
