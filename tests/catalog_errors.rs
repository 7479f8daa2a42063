//! The catalog's typed errors against a real throwaway PostgreSQL 15: `NotFound` for every
//! operation on an absent recording or child, `Conflict` for each hash on create and update,
//! `Invalid` naming the field, and none of them writes anything.

mod support;

use std::collections::BTreeMap;

use support::{actix_test, catalog::*, pg::PgServer};
use uuid::Uuid;
use warden_actors::catalog::{ListQuery, NewRecording, RecordingPatch, TracklistInput};

/// Absent recordings and children are `NotFound` and write nothing; a duplicate hash is a
/// `Conflict` naming the hash, on create and on update, and writes nothing; bad input is
/// `Invalid` naming the field.
#[test]
fn every_error_is_typed_and_writes_nothing() {
    let pg = PgServer::start();
    actix_test(async {
        let warden = connected(&pg).await;
        let admin = pg.admin().await;
        let catalog = warden.catalog();
        let absent = Uuid::from_u128(42);
        assert_eq!(not_found(catalog.get(absent).await), "recording");
        assert_eq!(
            not_found(
                catalog
                    .update(
                        absent,
                        RecordingPatch {
                            file_name: Some("x".into()),
                            ..Default::default()
                        }
                    )
                    .await
            ),
            "recording"
        );
        assert_eq!(
            not_found(catalog.update(absent, RecordingPatch::default()).await),
            "recording"
        );
        assert_eq!(not_found(catalog.delete(absent).await), "recording");
        assert_eq!(
            not_found(catalog.put_metadata(absent, "k".into(), "v".into()).await),
            "recording"
        );
        assert_eq!(
            not_found(catalog.delete_metadata(absent, "k".into()).await),
            "recording"
        );
        assert_eq!(
            not_found(
                catalog
                    .put_tracklist(
                        absent,
                        TracklistInput {
                            source: "s".into(),
                            ..Default::default()
                        }
                    )
                    .await
            ),
            "recording"
        );
        assert_eq!(
            not_found(catalog.delete_tracklist(absent).await),
            "recording"
        );
        assert_eq!(counts(&admin).await, [0, 0, 0, 0]);

        let a = catalog
            .create(NewRecording {
                sha256_hash: Some(hex(1, 64)),
                xxh128_hash: Some(hex(2, 32)),
                ..new_recording("a")
            })
            .await
            .unwrap();
        let b = catalog.create(new_recording("b")).await.unwrap();
        let before = counts(&admin).await;
        assert_eq!(before, [2, 0, 0, 2]);
        // Children that are not there: NotFound naming them, the version untouched.
        assert_eq!(
            not_found(catalog.delete_metadata(a.id, "nope".into()).await),
            "metadata"
        );
        assert_eq!(not_found(catalog.delete_tracklist(a.id).await), "tracklist");
        assert_eq!(row_version(&admin, a.id).await, Some(1));

        // Duplicate hashes, each named, on create (with children that must not stay behind)
        // and on update.
        let dup = |sha: Option<String>, xxh: Option<String>| NewRecording {
            sha256_hash: sha,
            xxh128_hash: xxh,
            metadata: BTreeMap::from([("k".into(), "v".into())]),
            tracklist: Some(TracklistInput {
                source: "s".into(),
                tracks: vec![track("t", "a", "00:01")],
                cue_file_path: None,
            }),
            ..new_recording("dup")
        };
        assert_eq!(
            conflict(catalog.create(dup(Some(hex(1, 64)), None)).await),
            "sha256_hash"
        );
        assert_eq!(
            conflict(catalog.create(dup(None, Some(hex(2, 32)))).await),
            "xxh128_hash"
        );
        assert_eq!(
            conflict(
                catalog
                    .create(dup(Some(hex(9, 64)), Some(hex(2, 32))))
                    .await
            ),
            "xxh128_hash"
        );
        let patch = |sha: Option<Option<String>>, xxh: Option<Option<String>>| RecordingPatch {
            sha256_hash: sha,
            xxh128_hash: xxh,
            file_name: Some("changed".into()),
            ..Default::default()
        };
        assert_eq!(
            conflict(
                catalog
                    .update(b.id, patch(Some(Some(hex(1, 64))), None))
                    .await
            ),
            "sha256_hash"
        );
        assert_eq!(
            conflict(
                catalog
                    .update(b.id, patch(None, Some(Some(hex(2, 32)))))
                    .await
            ),
            "xxh128_hash"
        );
        assert_eq!(
            counts(&admin).await,
            before,
            "nothing written by a conflict"
        );
        let b_now = catalog.get(b.id).await.unwrap();
        assert_eq!(b_now, b, "the refused update left b as it was");
        // The same hash on the recording that has it is no conflict; a freed hash is free.
        catalog
            .update(a.id, patch(Some(Some(hex(1, 64))), None))
            .await
            .expect("own hash");
        catalog
            .update(a.id, patch(Some(None), None))
            .await
            .expect("clear");
        catalog
            .update(b.id, patch(Some(Some(hex(1, 64))), None))
            .await
            .expect("now free");

        // Invalid input: the field, and nothing written.
        let before = counts(&admin).await;
        assert_eq!(
            invalid(
                catalog
                    .create(NewRecording {
                        file_path: String::new(),
                        ..new_recording("x")
                    })
                    .await
            ),
            "file_path"
        );
        assert_eq!(
            invalid(
                catalog
                    .create(NewRecording {
                        sha256_hash: Some("ABC".into()),
                        ..new_recording("x")
                    })
                    .await
            ),
            "sha256_hash"
        );
        assert_eq!(
            invalid(
                catalog
                    .create(NewRecording {
                        tracklist: Some(TracklistInput {
                            source: "s".into(),
                            tracks: vec![
                                track("ok", "", "00:00"),
                                track("ok", "", "00:00"),
                                track("ok", "", "00:00"),
                                track("late", "", "00:61")
                            ],
                            cue_file_path: None,
                        }),
                        ..new_recording("x")
                    })
                    .await
            ),
            "tracklist.tracks[3].start_time"
        );
        assert_eq!(
            invalid(
                catalog
                    .create(NewRecording {
                        tracklist: Some(TracklistInput {
                            source: "s".into(),
                            tracks: vec![track("", "a", "00:00")],
                            cue_file_path: None
                        }),
                        ..new_recording("x")
                    })
                    .await
            ),
            "tracklist.tracks[0].title"
        );
        assert_eq!(
            invalid(
                catalog
                    .update(
                        a.id,
                        RecordingPatch {
                            xxh128_hash: Some(Some("0".into())),
                            ..Default::default()
                        }
                    )
                    .await
            ),
            "xxh128_hash"
        );
        assert_eq!(
            invalid(catalog.put_metadata(a.id, String::new(), "v".into()).await),
            "key"
        );
        assert_eq!(
            invalid(
                catalog
                    .put_metadata(a.id, "k".into(), "v".repeat(64 * 1024 + 1))
                    .await
            ),
            "value"
        );
        assert_eq!(
            invalid(catalog.delete_metadata(a.id, "\0".into()).await),
            "key"
        );
        assert_eq!(
            invalid(
                catalog
                    .put_tracklist(
                        a.id,
                        TracklistInput {
                            source: String::new(),
                            ..Default::default()
                        }
                    )
                    .await
            ),
            "source"
        );
        assert_eq!(
            invalid(
                catalog
                    .put_tracklist(
                        a.id,
                        TracklistInput {
                            source: "s".into(),
                            tracks: vec![track("t", "", "1:00")],
                            cue_file_path: None
                        }
                    )
                    .await
            ),
            "tracks[0].start_time"
        );
        for (query, field) in [
            (
                ListQuery {
                    limit: 0,
                    ..Default::default()
                },
                "limit",
            ),
            (
                ListQuery {
                    limit: 501,
                    ..Default::default()
                },
                "limit",
            ),
            (
                ListQuery {
                    value: Some("128".into()),
                    ..Default::default()
                },
                "value",
            ),
            (
                ListQuery {
                    cursor: Some("not-a-cursor".into()),
                    ..Default::default()
                },
                "cursor",
            ),
        ] {
            assert_eq!(invalid(catalog.list(query).await), field);
        }
        assert_eq!(
            counts(&admin).await,
            before,
            "nothing written by invalid input"
        );
        warden.shutdown(SHUTDOWN).await;
    });
}
