//! The catalog's writes: each one PostgreSQL transaction ([`WithTransaction`]) that ends with
//! its outbox event, so that a write is either wholly there with its event or not at all.
//!
//! # Order inside a transaction
//! Every write on an existing recording first locks the recording's row (the version bump
//! `UPDATE`, or `SELECT ... FOR NO KEY UPDATE` where the write may turn out to change nothing),
//! and only then touches children and inserts the event. Concurrent writes to one recording so
//! run one after another, and since an outbox id is drawn while the lock is held, the events of
//! one recording have ids in the order of their versions (the projector applies each
//! recording's oldest event first). A delete locks by deleting.
//!
//! # Errors
//! A closure error rolls the transaction back. A unique violation is recognised by its
//! constraint's name (not its message text, which the server may translate) on the way out of
//! the closure, and becomes [`CatalogError::Conflict`]. A child that is not there ends the
//! transaction with nothing changed (only a row lock was taken) and becomes `NotFound`.

use std::sync::{Arc, Mutex};

use sqlx::{types::Json, PgConnection};
use uuid::Uuid;

use super::{
    model::{NewRecording, RecordingPatch, Snapshot, TracklistInput},
    CatalogError,
};
use crate::{PostgresHandle, WardenError, WithTransaction};

/// How a write's transaction ended, when it did not fail.
pub(crate) enum Outcome<T> {
    /// Committed; the value (the recording's snapshot at its new version, for upserts).
    Done(T),
    /// The recording or child is not there: nothing was changed.
    Missing(&'static str),
}

type Tx<T> = Result<Outcome<T>, sqlx::Error>;

/// Takes the recording's row lock, or says it is not there.
const LOCK: &str = "SELECT version FROM recordings WHERE id = $1 FOR NO KEY UPDATE";

/// Takes the row lock and bumps the version, in one statement (for writes that always change).
const BUMP: &str = "UPDATE recordings SET version = version + 1, updated_at = now() \
                    WHERE id = $1 RETURNING version";

/// The event of every write but a delete: the complete snapshot, returned to the caller too.
const UPSERT_EVENT: &str = "INSERT INTO graph_outbox (recording_id, version, op, payload) \
     SELECT id, version, 'upsert', recording_snapshot(id) FROM recordings WHERE id = $1 \
     RETURNING payload";

const INSERT_RECORDING: &str =
    "INSERT INTO recordings (file_path, file_name, sha256_hash, xxh128_hash) \
     VALUES ($1, $2, $3, $4) RETURNING id";

const INSERT_METADATA: &str = "INSERT INTO metadata (recording_id, key, value) \
     SELECT $1, e.key, e.value FROM unnest($2::text[], $3::text[]) AS e(key, value)";

const PUT_METADATA: &str = "INSERT INTO metadata (recording_id, key, value) VALUES ($1, $2, $3) \
     ON CONFLICT (recording_id, key) DO UPDATE SET value = EXCLUDED.value";

const DELETE_METADATA: &str = "DELETE FROM metadata WHERE recording_id = $1 AND key = $2";

/// Inserts or replaces (keeping the tracklist's id) the one tracklist of a recording.
const PUT_TRACKLIST: &str = "INSERT INTO tracklists (recording_id, source, tracks, cue_file_path) \
     VALUES ($1, $2, $3, $4) \
     ON CONFLICT (recording_id) DO UPDATE SET source = EXCLUDED.source, \
     tracks = EXCLUDED.tracks, cue_file_path = EXCLUDED.cue_file_path";

const DELETE_TRACKLIST: &str = "DELETE FROM tracklists WHERE recording_id = $1";

/// The patch and the version bump in one statement: it is the row lock too. `$4`/`$6` say
/// whether the hash is being set (to `$5`/`$7`, possibly NULL) or left.
const PATCH: &str = "UPDATE recordings SET \
     file_path = COALESCE($2, file_path), \
     file_name = COALESCE($3, file_name), \
     sha256_hash = CASE WHEN $4 THEN $5 ELSE sha256_hash END, \
     xxh128_hash = CASE WHEN $6 THEN $7 ELSE xxh128_hash END, \
     version = version + 1, updated_at = now() \
     WHERE id = $1 RETURNING version";

const DELETE_RECORDING: &str = "DELETE FROM recordings WHERE id = $1 RETURNING version";

/// The event of a delete: one version past the recording's last.
const DELETE_EVENT: &str = "INSERT INTO graph_outbox (recording_id, version, op, payload) \
     VALUES ($1, $2, 'delete', '{}')";

pub(crate) async fn create(conn: &mut PgConnection, new: &NewRecording) -> Tx<Snapshot> {
    let id: Uuid = sqlx::query_scalar(INSERT_RECORDING)
        .bind(&new.file_path)
        .bind(&new.file_name)
        .bind(&new.sha256_hash)
        .bind(&new.xxh128_hash)
        .fetch_one(&mut *conn)
        .await?;
    if !new.metadata.is_empty() {
        let (keys, values): (Vec<&str>, Vec<&str>) = new
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .unzip();
        sqlx::query(INSERT_METADATA)
            .bind(id)
            .bind(keys)
            .bind(values)
            .execute(&mut *conn)
            .await?;
    }
    if let Some(tl) = &new.tracklist {
        put_tracklist_row(conn, id, tl).await?;
    }
    upsert_event(conn, id).await
}

pub(crate) async fn update(conn: &mut PgConnection, id: Uuid, p: &RecordingPatch) -> Tx<Snapshot> {
    let set = |h: &Option<Option<String>>| (h.is_some(), h.clone().flatten());
    let (sha_set, sha) = set(&p.sha256_hash);
    let (xxh_set, xxh) = set(&p.xxh128_hash);
    let bumped: Option<i64> = sqlx::query_scalar(PATCH)
        .bind(id)
        .bind(&p.file_path)
        .bind(&p.file_name)
        .bind(sha_set)
        .bind(sha)
        .bind(xxh_set)
        .bind(xxh)
        .fetch_optional(&mut *conn)
        .await?;
    if bumped.is_none() {
        return Ok(Outcome::Missing("recording"));
    }
    upsert_event(conn, id).await
}

pub(crate) async fn delete(conn: &mut PgConnection, id: Uuid) -> Tx<()> {
    let Some(version): Option<i64> = sqlx::query_scalar(DELETE_RECORDING)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(Outcome::Missing("recording"));
    };
    sqlx::query(DELETE_EVENT)
        .bind(id)
        .bind(version + 1)
        .execute(&mut *conn)
        .await?;
    Ok(Outcome::Done(()))
}

pub(crate) async fn put_metadata(
    conn: &mut PgConnection,
    id: Uuid,
    key: &str,
    value: &str,
) -> Tx<Snapshot> {
    if !bump(conn, id).await? {
        return Ok(Outcome::Missing("recording"));
    }
    sqlx::query(PUT_METADATA)
        .bind(id)
        .bind(key)
        .bind(value)
        .execute(&mut *conn)
        .await?;
    upsert_event(conn, id).await
}

pub(crate) async fn delete_metadata(conn: &mut PgConnection, id: Uuid, key: &str) -> Tx<()> {
    if !lock(conn, id).await? {
        return Ok(Outcome::Missing("recording"));
    }
    let deleted = sqlx::query(DELETE_METADATA)
        .bind(id)
        .bind(key)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if deleted == 0 {
        return Ok(Outcome::Missing("metadata"));
    }
    bump(conn, id).await?;
    upsert_event(conn, id).await.map(|o| o.map(|_| ()))
}

pub(crate) async fn put_tracklist(
    conn: &mut PgConnection,
    id: Uuid,
    tl: &TracklistInput,
) -> Tx<Snapshot> {
    if !bump(conn, id).await? {
        return Ok(Outcome::Missing("recording"));
    }
    put_tracklist_row(conn, id, tl).await?;
    upsert_event(conn, id).await
}

pub(crate) async fn delete_tracklist(conn: &mut PgConnection, id: Uuid) -> Tx<()> {
    if !lock(conn, id).await? {
        return Ok(Outcome::Missing("recording"));
    }
    let deleted = sqlx::query(DELETE_TRACKLIST)
        .bind(id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if deleted == 0 {
        return Ok(Outcome::Missing("tracklist"));
    }
    bump(conn, id).await?;
    upsert_event(conn, id).await.map(|o| o.map(|_| ()))
}

impl<T> Outcome<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U> {
        match self {
            Outcome::Done(v) => Outcome::Done(f(v)),
            Outcome::Missing(what) => Outcome::Missing(what),
        }
    }
}

async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    let found: Option<i64> = sqlx::query_scalar(LOCK)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(found.is_some())
}

async fn bump(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    let found: Option<i64> = sqlx::query_scalar(BUMP)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(found.is_some())
}

async fn put_tracklist_row(
    conn: &mut PgConnection,
    id: Uuid,
    tl: &TracklistInput,
) -> Result<(), sqlx::Error> {
    sqlx::query(PUT_TRACKLIST)
        .bind(id)
        .bind(&tl.source)
        .bind(Json(&tl.tracks))
        .bind(&tl.cue_file_path)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Inserts the upsert event and returns its payload, read back as the caller's answer: a
/// snapshot that does not read back fails the write (and rolls it back) instead of being
/// committed for the projector to choke on.
async fn upsert_event(conn: &mut PgConnection, id: Uuid) -> Tx<Snapshot> {
    let payload: Json<Snapshot> = sqlx::query_scalar(UPSERT_EVENT)
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(Outcome::Done(payload.0))
}

/// Runs one write's transaction on `pg`; `run` is called once per attempt (again only when
/// PostgreSQL rolled the transaction back and asked for a retry).
pub(crate) async fn run<T, F>(pg: &PostgresHandle, mut run: F) -> Result<T, CatalogError>
where
    T: Send + 'static,
    F: for<'c> FnMut(&'c mut PgConnection) -> futures_util::future::BoxFuture<'c, Tx<T>>
        + Send
        + 'static,
{
    let conflict: Arc<Mutex<Option<&'static str>>> = Arc::default();
    let seen = conflict.clone();
    // The closures are this module's own plain statements: no session reset needed.
    let call = WithTransaction::new(move |conn| {
        let seen = seen.clone();
        set(&seen, None);
        let attempt = run(conn);
        Box::pin(async move {
            attempt.await.inspect_err(|e| {
                if let Some(field) = conflict_field(e) {
                    set(&seen, Some(field));
                }
            })
        })
    })
    .plain();
    match pg.send(call).await {
        Ok(Outcome::Done(value)) => Ok(value),
        Ok(Outcome::Missing(what)) => Err(CatalogError::NotFound { what }),
        Err(e) => {
            let field = conflict.lock().map(|f| *f).unwrap_or(None);
            match (field, &e) {
                (Some(field), WardenError::Query { code, .. }) if code == "23505" => {
                    Err(CatalogError::Conflict {
                        field,
                        message: format!("another recording already has this {field}"),
                    })
                }
                _ => Err(CatalogError::Unavailable(e)),
            }
        }
    }
}

fn set(slot: &Mutex<Option<&'static str>>, value: Option<&'static str>) {
    if let Ok(mut slot) = slot.lock() {
        *slot = value;
    }
}

/// The field behind a unique violation, by the constraint's name (PostgreSQL's default names
/// for the columns' `UNIQUE`, see the catalog migration).
fn conflict_field(e: &sqlx::Error) -> Option<&'static str> {
    let db = e.as_database_error()?;
    if db.code().as_deref() != Some("23505") {
        return None;
    }
    match db.constraint()? {
        "recordings_sha256_hash_key" => Some("sha256_hash"),
        "recordings_xxh128_hash_key" => Some("xxh128_hash"),
        _ => None,
    }
}
