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
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn ok_new() -> NewRecording {
        NewRecording {
            file_path: "/sets/a.flac".into(),
            file_name: "a.flac".into(),
            sha256_hash: Some("a".repeat(64)),
            xxh128_hash: Some("0123456789abcdef0123456789abcdef".into()),
            metadata: BTreeMap::from([("bpm".into(), "128".into())]),
            tracklist: Some(ok_tracklist()),
        }
    }

    fn ok_tracklist() -> TracklistInput {
        TracklistInput {
            source: "1001tracklists".into(),
            tracks: vec![
                track("00:00"),
                Track {
                    title: "B".into(),
                    artist: String::new(),
                    start_time: "01:02:03".into(),
                },
            ],
            cue_file_path: Some("/sets/a.cue".into()),
        }
    }

    fn track(start: &str) -> Track {
        Track {
            title: "A".into(),
            artist: "X".into(),
            start_time: start.into(),
        }
    }

    /// The field a check refused, or a panic if it passed.
    fn field(r: Checked) -> String {
        match r {
            Err(CatalogError::Invalid { field, .. }) => field,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn new_field(edit: impl FnOnce(&mut NewRecording)) -> String {
        let mut n = ok_new();
        edit(&mut n);
        field(new_recording(&n))
    }

    #[test]
    fn a_good_recording_passes() {
        assert!(new_recording(&ok_new()).is_ok());
        let bare = NewRecording {
            file_path: "p".into(),
            file_name: "n".into(),
            ..Default::default()
        };
        assert!(new_recording(&bare).is_ok());
    }

    #[test]
    fn paths_are_non_empty_bounded_and_nul_free() {
        assert_eq!(new_field(|n| n.file_path.clear()), "file_path");
        assert_eq!(new_field(|n| n.file_name.clear()), "file_name");
        assert_eq!(
            new_field(|n| n.file_path = "x".repeat(MAX_PATH_BYTES + 1)),
            "file_path"
        );
        assert_eq!(new_field(|n| n.file_name = "a\0b".into()), "file_name");
        let mut n = ok_new();
        n.file_path = "é".repeat(MAX_PATH_BYTES / 2);
        assert!(new_recording(&n).is_ok(), "exactly 4096 bytes");
    }

    #[test]
    fn hashes_are_lowercase_hex_of_their_length() {
        assert_eq!(
            new_field(|n| n.sha256_hash = Some("A".repeat(64))),
            "sha256_hash"
        );
        assert_eq!(
            new_field(|n| n.sha256_hash = Some("a".repeat(63))),
            "sha256_hash"
        );
        assert_eq!(
            new_field(|n| n.sha256_hash = Some("g".repeat(64))),
            "sha256_hash"
        );
        assert_eq!(
            new_field(|n| n.xxh128_hash = Some("a".repeat(64))),
            "xxh128_hash"
        );
        assert_eq!(
            new_field(|n| n.xxh128_hash = Some(String::new())),
            "xxh128_hash"
        );
    }

    #[test]
    fn metadata_keys_values_and_count_are_bounded() {
        assert_eq!(
            new_field(|n| {
                n.metadata.insert(String::new(), "v".into());
            }),
            "metadata"
        );
        assert_eq!(
            new_field(|n| {
                n.metadata.insert("k".repeat(256), "v".into());
            }),
            "metadata"
        );
        assert_eq!(
            new_field(|n| {
                n.metadata.insert("a\0".into(), "v".into());
            }),
            "metadata"
        );
        assert_eq!(
            new_field(|n| {
                n.metadata
                    .insert("big".into(), "v".repeat(MAX_VALUE_BYTES + 1));
            }),
            "metadata.big"
        );
        assert_eq!(
            new_field(|n| {
                n.metadata.insert("nul".into(), "\0".into());
            }),
            "metadata.nul"
        );
        assert_eq!(
            new_field(|n| {
                n.metadata = (0..=MAX_METADATA_ENTRIES)
                    .map(|i| (i.to_string(), String::new()))
                    .collect();
            }),
            "metadata"
        );
        let mut n = ok_new();
        n.metadata = (0..MAX_METADATA_ENTRIES)
            .map(|i| (i.to_string(), "v".repeat(MAX_VALUE_BYTES)))
            .collect();
        n.metadata.insert("k".repeat(255), String::new());
        n.metadata.remove("0");
        assert!(
            new_recording(&n).is_ok(),
            "every bound reached, none passed"
        );
    }

    #[test]
    fn a_refused_value_is_never_quoted() {
        let mut n = ok_new();
        let secret = "s3cr3t-value-".repeat(6000);
        n.metadata.insert("token".into(), secret.clone());
        let e = new_recording(&n).unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    #[test]
    fn tracklists_name_the_track_and_field() {
        let tl = |edit: &dyn Fn(&mut TracklistInput)| {
            new_field(|n| {
                let mut t = ok_tracklist();
                edit(&mut t);
                n.tracklist = Some(t);
            })
        };
        assert_eq!(tl(&|t| t.source.clear()), "tracklist.source");
        assert_eq!(tl(&|t| t.source = "s".repeat(256)), "tracklist.source");
        assert_eq!(
            tl(&|t| t.cue_file_path = Some("c".repeat(MAX_PATH_BYTES + 1))),
            "tracklist.cue_file_path"
        );
        assert_eq!(
            tl(&|t| t.tracks = vec![track("00:00"); MAX_TRACKS + 1]),
            "tracklist.tracks"
        );
        assert_eq!(
            tl(&|t| t.tracks[1].title.clear()),
            "tracklist.tracks[1].title"
        );
        assert_eq!(
            tl(&|t| t.tracks[0].artist = "a".repeat(MAX_TRACK_TEXT_BYTES + 1)),
            "tracklist.tracks[0].artist"
        );
        assert_eq!(
            tl(&|t| t.tracks[1].title = "\0".into()),
            "tracklist.tracks[1].title"
        );
        assert_eq!(
            tl(&|t| t.tracks[1].start_time = "1:00".into()),
            "tracklist.tracks[1].start_time"
        );
        // The same tracklist on its own: paths without the prefix.
        let mut t = ok_tracklist();
        t.tracks[0].start_time = "00:60".into();
        assert_eq!(field(tracklist("", &t)), "tracks[0].start_time");
        t.tracks = vec![track("00:00"); MAX_TRACKS];
        assert!(tracklist("", &t).is_ok());
    }

    #[test]
    fn start_times_are_mm_ss_or_hh_mm_ss() {
        for ok in ["00:00", "59:59", "00:00:00", "99:59:59", "01:30:00"] {
            assert!(is_start_time(ok), "{ok}");
        }
        for bad in [
            "",
            "0:00",
            "00:0",
            "60:00",
            "00:60",
            "1:00:00",
            "00:60:00",
            "00:00:60",
            "000:00",
            "00:00:00:00",
            "aa:bb",
            "00-00",
            "+1:00",
            " 0:00",
            "00:00 ",
            "١٢:٣٤",
        ] {
            assert!(!is_start_time(bad), "{bad:?}");
        }
    }

    #[test]
    fn patches_check_only_what_they_set() {
        assert!(patch(&RecordingPatch::default()).is_ok());
        let clear = RecordingPatch {
            sha256_hash: Some(None),
            xxh128_hash: Some(None),
            ..Default::default()
        };
        assert!(patch(&clear).is_ok());
        let bad = |p: RecordingPatch| field(patch(&p));
        assert_eq!(
            bad(RecordingPatch {
                file_path: Some(String::new()),
                ..Default::default()
            }),
            "file_path"
        );
        assert_eq!(
            bad(RecordingPatch {
                file_name: Some("\0".into()),
                ..Default::default()
            }),
            "file_name"
        );
        assert_eq!(
            bad(RecordingPatch {
                sha256_hash: Some(Some("xyz".into())),
                ..Default::default()
            }),
            "sha256_hash"
        );
        assert_eq!(
            bad(RecordingPatch {
                xxh128_hash: Some(Some("F".repeat(32))),
                ..Default::default()
            }),
            "xxh128_hash"
        );
    }

    #[test]
    fn single_entries_and_list_queries() {
        assert!(metadata_entry("bpm", "").is_ok());
        assert_eq!(field(metadata_entry("", "v")), "key");
        assert_eq!(
            field(metadata_entry("k", &"v".repeat(MAX_VALUE_BYTES + 1))),
            "value"
        );
        assert_eq!(field(key("key", &"k".repeat(300))), "key");
        let q = |limit, key: Option<&str>, value: Option<&str>| ListQuery {
            limit,
            cursor: None,
            key: key.map(Into::into),
            value: value.map(Into::into),
        };
        assert!(list_query(&q(1, None, None)).is_ok());
        assert!(list_query(&q(500, Some("bpm"), Some("128"))).is_ok());
        assert_eq!(field(list_query(&q(0, None, None))), "limit");
        assert_eq!(field(list_query(&q(501, None, None))), "limit");
        assert_eq!(field(list_query(&q(5, None, Some("128")))), "value");
        assert_eq!(field(list_query(&q(5, Some(""), None))), "key");
    }
}
