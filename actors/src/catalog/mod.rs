//! The catalog: recordings, their metadata and their tracklists, in PostgreSQL (warden's
//! schema, see `migrations/20261201000001_catalog.sql`), through warden's supervised
//! connection.
//!
//! Every write is one transaction that also inserts its event into `graph_outbox`, which the
//! graph projection applies to Neo4j later: the catalog takes writes while the graph is down,
//! and a write is either wholly there with its event or not at all. Inputs are validated
//! before any SQL runs; errors say what the caller can do ([`CatalogError`]).
//!
//! # Files
//! - `model.rs`: the types callers read and send.
//! - `validate.rs`: the input rules (pure).
//! - `write.rs`: the transactions, their lock order and their events; `read.rs`: `get` and
//!   `list`; `cursor.rs`: the opaque keyset cursor.
//! - `error.rs`: [`CatalogError`].
//!
//! # Use
//! ```no_run
//! # async fn demo(warden: &warden_actors::Warden) -> Result<(), warden_actors::catalog::CatalogError> {
//! use warden_actors::catalog::{ListQuery, NewRecording};
//! let catalog = warden.catalog();
//! let rec = catalog
//!     .create(NewRecording {
//!         file_path: "/sets/2026-11-28.flac".into(),
//!         file_name: "2026-11-28.flac".into(),
//!         metadata: [("bpm".to_owned(), "128".to_owned())].into(),
//!         ..Default::default()
//!     })
//!     .await?;
//! assert_eq!(rec.version, 1);
//! let rec = catalog.put_metadata(rec.id, "genre".into(), "techno".into()).await?;
//! assert_eq!(rec.version, 2);
//! let page = catalog
//!     .list(ListQuery { key: Some("bpm".into()), ..Default::default() })
//!     .await?;
//! # let _ = page;
//! # Ok(()) }
//! ```

mod cursor;
mod error;
mod model;
mod read;
mod validate;
mod write;

use std::sync::Arc;

pub use error::CatalogError;
pub use model::{
    ListQuery, NewRecording, Page, Recording, RecordingPatch, Track, Tracklist, TracklistInput,
    DEFAULT_LIMIT, MAX_LIMIT,
};
/// The id type of every catalog row, re-exported so that callers (the HTTP API parsing a path)
/// need no `uuid` dependency of their own.
pub use uuid::Uuid;
pub use validate::{
    MAX_KEY_BYTES, MAX_METADATA_ENTRIES, MAX_PATH_BYTES, MAX_SOURCE_BYTES, MAX_TRACKS,
    MAX_TRACK_TEXT_BYTES, MAX_VALUE_BYTES,
};

use crate::PostgresHandle;

/// The catalog's operations. Cheap to clone (a handle); every call runs on warden's
/// PostgreSQL pool within its `query_timeout`, and is refused at once while PostgreSQL is
/// down or its circuit open ([`CatalogError::Unavailable`], with a retry time).
#[derive(Clone)]
pub struct Catalog {
    pg: PostgresHandle,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").finish_non_exhaustive()
    }
}

impl Catalog {
    /// A catalog on warden's PostgreSQL connection (usually through
    /// [`Warden::catalog`](crate::Warden::catalog)).
    pub fn new(pg: PostgresHandle) -> Catalog {
        Catalog { pg }
    }

    /// Creates a recording, with its metadata and tracklist if given, at version 1.
    /// `Conflict` when another recording has one of its hashes.
    pub async fn create(&self, new: NewRecording) -> Result<Recording, CatalogError> {
        validate::new_recording(&new)?;
        let new = Arc::new(new);
        write::run(&self.pg, move |conn| {
            let new = new.clone();
            Box::pin(async move { write::create(conn, &new).await })
        })
        .await
        .map(Recording::from)
    }

    /// The recording with its metadata and tracklist; `NotFound` when absent.
    pub async fn get(&self, id: Uuid) -> Result<Recording, CatalogError> {
        read::get(&self.pg, id).await
    }

    /// A page of recordings in creation order (oldest first), optionally only those with a
    /// metadata entry `key` (with `value`, if given). Pass the page's `next_cursor` back for
    /// the next one. A recording committed after a page was read with an older `created_at`
    /// than the cursor's (its transaction began earlier) is not seen by that walk: keyset
    /// pages are stable, not a snapshot.
    pub async fn list(&self, q: ListQuery) -> Result<Page, CatalogError> {
        validate::list_query(&q)?;
        read::list(&self.pg, &q).await
    }

    /// Changes the recording's own fields and bumps its version. An empty patch writes
    /// nothing (no version bump, no event) and returns the recording as it is.
    pub async fn update(&self, id: Uuid, patch: RecordingPatch) -> Result<Recording, CatalogError> {
        validate::patch(&patch)?;
        if patch.is_empty() {
            return self.get(id).await;
        }
        let patch = Arc::new(patch);
        write::run(&self.pg, move |conn| {
            let patch = patch.clone();
            Box::pin(async move { write::update(conn, id, &patch).await })
        })
        .await
        .map(Recording::from)
    }

    /// Deletes the recording with its metadata and tracklist (and writes a `delete` event).
    pub async fn delete(&self, id: Uuid) -> Result<(), CatalogError> {
        write::run(&self.pg, move |conn| {
            Box::pin(async move { write::delete(conn, id).await })
        })
        .await
    }

    /// Sets one metadata entry (creating or replacing it) and bumps the version.
    pub async fn put_metadata(
        &self,
        id: Uuid,
        key: String,
        value: String,
    ) -> Result<Recording, CatalogError> {
        validate::metadata_entry(&key, &value)?;
        let entry = Arc::new((key, value));
        write::run(&self.pg, move |conn| {
            let entry = entry.clone();
            Box::pin(async move { write::put_metadata(conn, id, &entry.0, &entry.1).await })
        })
        .await
        .map(Recording::from)
    }

    /// Deletes one metadata entry and bumps the version; `NotFound { what: "metadata" }` when
    /// the recording has no such key (then nothing changes).
    pub async fn delete_metadata(&self, id: Uuid, key: String) -> Result<(), CatalogError> {
        validate::key("key", &key)?;
        let key = Arc::new(key);
        write::run(&self.pg, move |conn| {
            let key = key.clone();
            Box::pin(async move { write::delete_metadata(conn, id, &key).await })
        })
        .await
    }

    /// Sets the recording's tracklist (creating or replacing it; a replaced tracklist keeps
    /// its id) and bumps the version.
    pub async fn put_tracklist(
        &self,
        id: Uuid,
        tl: TracklistInput,
    ) -> Result<Recording, CatalogError> {
        validate::tracklist("", &tl)?;
        let tl = Arc::new(tl);
        write::run(&self.pg, move |conn| {
            let tl = tl.clone();
            Box::pin(async move { write::put_tracklist(conn, id, &tl).await })
        })
        .await
        .map(Recording::from)
    }

    /// Deletes the recording's tracklist and bumps the version; `NotFound { what:
    /// "tracklist" }` when it has none (then nothing changes).
    pub async fn delete_tracklist(&self, id: Uuid) -> Result<(), CatalogError> {
        write::run(&self.pg, move |conn| {
            Box::pin(async move { write::delete_tracklist(conn, id).await })
        })
        .await
    }
}
