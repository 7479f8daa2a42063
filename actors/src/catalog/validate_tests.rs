//! Unit tests of `validate.rs`: every rule, each bound met and passed by one.

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
