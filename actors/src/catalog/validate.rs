//! The catalog's input rules, checked before any SQL runs, so that every caller (the HTTP API,
//! an embedding application) gets the same answer and PostgreSQL never sees a value it would
//! refuse with a less helpful error (a NUL byte, which `text` and `jsonb` cannot hold; a string
//! past a `varchar` bound) or that the graph projection could not represent.
//!
//! Pure functions: each returns the first broken rule as [`CatalogError::Invalid`] with the
//! field's path (`tracklist.tracks[3].start_time`) and the rule. Reasons never quote a value,
//! only a short excerpt of a metadata key where that is what is wrong.

use super::{
    error::{excerpt, CatalogError},
    model::{ListQuery, NewRecording, RecordingPatch, Track, TracklistInput, MAX_LIMIT},
};

/// The longest `file_path`, `file_name` and `cue_file_path`, in bytes (PATH_MAX on Linux).
pub const MAX_PATH_BYTES: usize = 4096;
/// The longest metadata key, in bytes (the column is `varchar(255)`, which counts characters;
/// bytes are the stricter bound).
pub const MAX_KEY_BYTES: usize = 255;
/// The longest metadata value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// The most metadata entries a recording is created with.
pub const MAX_METADATA_ENTRIES: usize = 256;
/// The longest tracklist `source`, in bytes (`varchar(255)`).
pub const MAX_SOURCE_BYTES: usize = 255;
/// The most tracks in a tracklist.
pub const MAX_TRACKS: usize = 2000;
/// The longest track `title` and `artist`, in bytes.
pub const MAX_TRACK_TEXT_BYTES: usize = 1024;

type Checked = Result<(), CatalogError>;

/// A recording to create, with its metadata and tracklist.
pub(crate) fn new_recording(new: &NewRecording) -> Checked {
    path("file_path", &new.file_path)?;
    path("file_name", &new.file_name)?;
    if let Some(h) = &new.sha256_hash {
        hash("sha256_hash", h, 64)?;
    }
    if let Some(h) = &new.xxh128_hash {
        hash("xxh128_hash", h, 32)?;
    }
    if new.metadata.len() > MAX_METADATA_ENTRIES {
        return Err(CatalogError::invalid(
            "metadata",
            format!(
                "{} entries, above the limit of {MAX_METADATA_ENTRIES}",
                new.metadata.len()
            ),
        ));
    }
    for (key, value) in &new.metadata {
        metadata_key("metadata", key)?;
        metadata_value(&format!("metadata.{}", excerpt(key, 64)), value)?;
    }
    if let Some(tl) = &new.tracklist {
        tracklist("tracklist.", tl)?;
    }
    Ok(())
}

/// Changes to a recording's own fields.
pub(crate) fn patch(p: &RecordingPatch) -> Checked {
    if let Some(v) = &p.file_path {
        path("file_path", v)?;
    }
    if let Some(v) = &p.file_name {
        path("file_name", v)?;
    }
    if let Some(Some(h)) = &p.sha256_hash {
        hash("sha256_hash", h, 64)?;
    }
    if let Some(Some(h)) = &p.xxh128_hash {
        hash("xxh128_hash", h, 32)?;
    }
    Ok(())
}

/// One metadata entry put on its own (its key comes from the caller's path, so the fields are
/// named `key` and `value`).
pub(crate) fn metadata_entry(key: &str, value: &str) -> Checked {
    metadata_key("key", key)?;
    metadata_value("value", value)
}

/// A key named on its own (to delete it, or to filter by it).
pub(crate) fn key(field: &str, key: &str) -> Checked {
    metadata_key(field, key)
}

/// A tracklist; `prefix` is where it sits in the input (`"tracklist."` inside a new
/// recording, `""` when it is the whole input).
pub(crate) fn tracklist(prefix: &str, tl: &TracklistInput) -> Checked {
    let field = |name: &str| format!("{prefix}{name}");
    text(&field("source"), &tl.source, 1, MAX_SOURCE_BYTES)?;
    if let Some(cue) = &tl.cue_file_path {
        text(&field("cue_file_path"), cue, 0, MAX_PATH_BYTES)?;
    }
    if tl.tracks.len() > MAX_TRACKS {
        return Err(CatalogError::invalid(
            field("tracks"),
            format!(
                "{} tracks, above the limit of {MAX_TRACKS}",
                tl.tracks.len()
            ),
        ));
    }
    for (i, t) in tl.tracks.iter().enumerate() {
        track(&field(&format!("tracks[{i}].")), t)?;
    }
    Ok(())
}

/// A page request (the cursor itself is checked when it is decoded).
pub(crate) fn list_query(q: &ListQuery) -> Checked {
    if q.limit == 0 || q.limit > MAX_LIMIT {
        return Err(CatalogError::invalid(
            "limit",
            format!("{} is outside 1..={MAX_LIMIT}", q.limit),
        ));
    }
    match (&q.key, &q.value) {
        (None, Some(_)) => Err(CatalogError::invalid(
            "value",
            "a value filter needs a key filter",
        )),
        (Some(k), value) => {
            metadata_key("key", k)?;
            match value {
                Some(v) => metadata_value("value", v),
                None => Ok(()),
            }
        }
        (None, None) => Ok(()),
    }
}

fn track(prefix: &str, t: &Track) -> Checked {
    text(&format!("{prefix}title"), &t.title, 1, MAX_TRACK_TEXT_BYTES)?;
    text(
        &format!("{prefix}artist"),
        &t.artist,
        0,
        MAX_TRACK_TEXT_BYTES,
    )?;
    if !is_start_time(&t.start_time) {
        return Err(CatalogError::invalid(
            format!("{prefix}start_time"),
            "must be MM:SS or HH:MM:SS (two digits each, minutes and seconds below 60)",
        ));
    }
    Ok(())
}

fn path(field: &str, value: &str) -> Checked {
    text(field, value, 1, MAX_PATH_BYTES)
}

fn metadata_key(field: &str, key: &str) -> Checked {
    let named =
        |reason: &str| CatalogError::invalid(field, format!("key {:?} {reason}", excerpt(key, 32)));
    if key.is_empty() {
        return Err(CatalogError::invalid(field, "a key is empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(named(&format!(
            "is {} bytes, above {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    if key.contains('\0') {
        return Err(named("contains a NUL character"));
    }
    Ok(())
}

fn metadata_value(field: &str, value: &str) -> Checked {
    text(field, value, 0, MAX_VALUE_BYTES)
}

/// `min..=max` bytes and no NUL (which PostgreSQL's `text` and `jsonb` cannot store).
fn text(field: &str, value: &str, min: usize, max: usize) -> Checked {
    if value.len() < min {
        return Err(CatalogError::invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(CatalogError::invalid(
            field,
            format!("is {} bytes, above the limit of {max}", value.len()),
        ));
    }
    if value.contains('\0') {
        return Err(CatalogError::invalid(field, "contains a NUL character"));
    }
    Ok(())
}

fn hash(field: &str, value: &str, digits: usize) -> Checked {
    let hex = value
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if value.len() != digits || !hex {
        return Err(CatalogError::invalid(
            field,
            format!("must be exactly {digits} lowercase hex digits"),
        ));
    }
    Ok(())
}

/// `MM:SS` or `HH:MM:SS`: two digits each, minutes and seconds below 60.
fn is_start_time(s: &str) -> bool {
    let two = |p: &str| -> Option<u8> {
        if p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()) {
            p.parse().ok()
        } else {
            None
        }
    };
    let sixty = |p: &str| two(p).is_some_and(|n| n < 60);
    let parts: Vec<&str> = s.split(':').collect();
    match parts.as_slice() {
        [m, s] => sixty(m) && sixty(s),
        [h, m, s] => two(h).is_some() && sixty(m) && sixty(s),
        _ => false,
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
