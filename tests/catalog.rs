//! The catalog library against a real throwaway PostgreSQL 15: CRUD on every model with one
//! outbox event per write, the JSONB round trip, keyset pages. Errors are in
//! tests/catalog_errors.rs, faults (rollback, races, outages) in tests/catalog_faults.rs.
//!
//! What these cannot show: the graph side (the projector's tests read these events), and
//! HTTP (the API's tests).

mod support;

use std::{collections::BTreeMap, time::Duration};

use serde_json::json;
use support::{actix_test, catalog::*, eventually, pg::PgServer};
use uuid::Uuid;
use warden_actors::catalog::{
    ListQuery, NewRecording, Recording, RecordingPatch, Track, TracklistInput,
};

/// Create, read, change every part and delete one recording; each write returns the recording
/// at its new version and leaves exactly one outbox event whose payload is that recording.
#[test]
fn crud_on_every_model_writes_one_event_per_write() {
    let pg = PgServer::start();
    actix_test(async {
        let warden = connected(&pg).await;
        let admin = pg.admin().await;
        let catalog = warden.catalog();
        let created = catalog
            .create(NewRecording {
                sha256_hash: Some(hex(0xab, 64)),
                xxh128_hash: Some(hex(0xcd, 32)),
                metadata: BTreeMap::from([
                    ("bpm".into(), "128".into()),
                    ("genre".into(), "techno".into()),
                ]),
                tracklist: Some(TracklistInput {
                    source: "1001tracklists".into(),
                    tracks: vec![track("Intro", "A", "00:00"), track("Peak", "B", "01:02:03")],
                    cue_file_path: Some("/sets/a.cue".into()),
                }),
                ..new_recording("a")
            })
            .await
            .expect("create");
        assert_eq!(created.version, 1);
        assert_eq!(created.file_name, "a.flac");
        assert_eq!(created.sha256_hash.as_deref(), Some(hex(0xab, 64).as_str()));
        assert_eq!(created.metadata.len(), 2);
        let tl = created.tracklist.clone().expect("a tracklist");
        assert_eq!(tl.tracks[1], track("Peak", "B", "01:02:03"));
        assert_eq!(created.created_at, created.updated_at);
        assert_eq!(catalog.get(created.id).await.expect("get"), created);

        let id = created.id;
        let mut expected = vec![(1, "upsert", created.clone())];
        let patched = catalog
            .update(
                id,
                RecordingPatch {
                    file_name: Some("renamed.flac".into()),
                    sha256_hash: Some(None),
                    ..Default::default()
                },
            )
            .await
            .expect("update");
        assert_eq!(patched.version, 2);
        assert_eq!(patched.file_name, "renamed.flac");
        assert_eq!(patched.file_path, created.file_path, "absent: unchanged");
        assert_eq!(patched.sha256_hash, None, "null: cleared");
        assert_eq!(patched.xxh128_hash, created.xxh128_hash);
        assert!(patched.updated_at >= created.updated_at);
        assert_eq!(patched.created_at, created.created_at);
        expected.push((2, "upsert", patched.clone()));

        // An empty patch changes nothing and writes nothing.
        let same = catalog
            .update(id, RecordingPatch::default())
            .await
            .expect("empty patch");
        assert_eq!(same, patched);

        let r = catalog
            .put_metadata(id, "key".into(), "C minor".into())
            .await
            .expect("put new metadata");
        assert_eq!((r.version, r.metadata["key"].as_str()), (3, "C minor"));
        expected.push((3, "upsert", r));
        let r = catalog
            .put_metadata(id, "bpm".into(), "130".into())
            .await
            .expect("replace metadata");
        assert_eq!((r.version, r.metadata["bpm"].as_str()), (4, "130"));
        assert_eq!(r.metadata.len(), 3);
        expected.push((4, "upsert", r));
        catalog
            .delete_metadata(id, "genre".into())
            .await
            .expect("delete metadata");
        let r = catalog.get(id).await.unwrap();
        assert_eq!(r.version, 5);
        assert!(!r.metadata.contains_key("genre"));
        expected.push((5, "upsert", r));

        let r = catalog
            .put_tracklist(
                id,
                TracklistInput {
                    source: "cue".into(),
                    tracks: vec![track("Only", "", "10:00")],
                    cue_file_path: None,
                },
            )
            .await
            .expect("replace the tracklist");
        let replaced = r.tracklist.clone().unwrap();
        assert_eq!(replaced.id, tl.id, "a replaced tracklist keeps its id");
        assert_eq!(replaced.source, "cue");
        assert_eq!(replaced.tracks, vec![track("Only", "", "10:00")]);
        assert_eq!(replaced.cue_file_path, None);
        assert_eq!(r.version, 6);
        expected.push((6, "upsert", r));
        catalog
            .delete_tracklist(id)
            .await
            .expect("delete the tracklist");
        let r = catalog.get(id).await.unwrap();
        assert_eq!((r.version, r.tracklist.is_none()), (7, true));
        expected.push((7, "upsert", r));
        let r = catalog
            .put_tracklist(
                id,
                TracklistInput {
                    source: "new".into(),
                    ..Default::default()
                },
            )
            .await
            .expect("a new tracklist");
        assert_eq!(r.version, 8);
        assert!(r.tracklist.as_ref().unwrap().tracks.is_empty());
        expected.push((8, "upsert", r));

        // Every write so far: one event, at its version, whose payload is what it returned.
        let evs = events(&admin, id).await;
        assert_eq!(evs.len(), expected.len());
        for (ev, (version, op, rec)) in evs.iter().zip(&expected) {
            assert_eq!((ev.version, ev.op.as_str()), (*version, *op));
            assert_eq!(&as_recording(&ev.payload), rec, "event v{version}");
        }
        assert!(evs.windows(2).all(|w| w[0].id < w[1].id));

        catalog.delete(id).await.expect("delete");
        assert_eq!(not_found(catalog.get(id).await), "recording");
        let evs = events(&admin, id).await;
        let last = evs.last().unwrap();
        assert_eq!((last.version, last.op.as_str()), (9, "delete"));
        assert_eq!(last.payload, json!({}));
        assert_eq!(
            counts(&admin).await,
            [0, 0, 0, 9],
            "the delete cascaded to metadata and tracklist; the events stay"
        );
        // The writes' sessions skip warden's reset (they set nothing): none is left in a
        // transaction.
        let idle_in_tx: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = 'warden' AND state LIKE 'idle in transaction%'",
        )
        .fetch_one(&admin)
        .await
        .unwrap();
        assert_eq!(idle_in_tx, 0);
        warden.shutdown(SHUTDOWN).await;
    });
}

/// Text PostgreSQL and JSON both have to carry: every byte of it comes back from `get`,
/// `list` and the outbox payload exactly as it went in.
#[test]
fn jsonb_round_trip_is_exact() {
    let pg = PgServer::start();
    actix_test(async {
        let warden = connected(&pg).await;
        let admin = pg.admin().await;
        let catalog = warden.catalog();
        let awkward = [
            "plain",
            "",
            "quotes \" ' ` and a backslash \\ and \\\" together",
            "unicode: Ünïcödé, 日本語, العربية, 🎧🎛️ (with a ZWJ 👩‍🎤), e\u{301} combining",
            "controls: \u{1}\u{7}\u{1b}[0m \t tab \n newline \r\n crlf",
            "json-looking: {\"a\": [1, 2]} and null and true",
            "\u{feff}BOM and \u{2028} line separator and \u{fffd}",
            "sql-looking: '); DROP TABLE recordings; --",
        ];
        let mut metadata: BTreeMap<String, String> = awkward
            .iter()
            .enumerate()
            .map(|(i, v)| {
                (
                    format!("k{i} {}", v.chars().take(20).collect::<String>()),
                    (*v).to_owned(),
                )
            })
            .collect();
        // A large value, at the limit, of multi-byte characters.
        metadata.insert("large".into(), "é🎧".repeat(64 * 1024 / 6));
        metadata.insert("ключ \"quoted\" key".into(), "v".into());
        let tracks: Vec<Track> = awkward
            .iter()
            .filter(|t| !t.is_empty())
            .enumerate()
            .map(|(i, t)| {
                track(
                    t,
                    &t.repeat(3).chars().take(300).collect::<String>(),
                    &format!("{:02}:{:02}:00", i, i * 7),
                )
            })
            .collect();
        let input = NewRecording {
            file_path: "/sets/ünïcödé \"dir\"/a'b\\c.flac".into(),
            file_name: "🎧 set.flac".into(),
            metadata: metadata.clone(),
            tracklist: Some(TracklistInput {
                source: "source \"with\" 'quotes' ✓".into(),
                tracks: tracks.clone(),
                cue_file_path: Some("/cue/日本.cue".into()),
            }),
            ..Default::default()
        };
        let created = catalog.create(input.clone()).await.expect("create");
        assert_eq!(created.file_path, input.file_path);
        assert_eq!(created.file_name, input.file_name);
        assert_eq!(created.metadata, metadata);
        let tl = created.tracklist.clone().unwrap();
        assert_eq!(tl.tracks, tracks);
        assert_eq!(tl.source, "source \"with\" 'quotes' ✓");
        assert_eq!(tl.cue_file_path.as_deref(), Some("/cue/日本.cue"));
        assert_eq!(catalog.get(created.id).await.unwrap(), created);
        let page = catalog.list(ListQuery::default()).await.unwrap();
        assert_eq!(page.items, vec![created.clone()]);
        let evs = events(&admin, created.id).await;
        assert_eq!(as_recording(&evs[0].payload), created);
        // The rows themselves hold the text, not an escaped form of it.
        let stored: String = sqlx::query_scalar(
            "SELECT value FROM warden.metadata WHERE recording_id = $1 AND key = 'large'",
        )
        .bind(created.id)
        .fetch_one(&admin)
        .await
        .unwrap();
        assert_eq!(stored, metadata["large"]);
        let title: String = sqlx::query_scalar(
            "SELECT tracks -> 1 ->> 'title' FROM warden.tracklists WHERE recording_id = $1",
        )
        .bind(created.id)
        .fetch_one(&admin)
        .await
        .unwrap();
        assert_eq!(title, awkward[2]);
        // And a value put on its own takes the same way.
        let r = catalog
            .put_metadata(created.id, awkward[4].into(), awkward[3].into())
            .await
            .unwrap();
        assert_eq!(r.metadata[awkward[4]], awkward[3]);
        assert_eq!(catalog.get(created.id).await.unwrap(), r);
        warden.shutdown(SHUTDOWN).await;
    });
}

/// Keyset pages walk every recording once, in creation order, with or without a metadata
/// filter, in one statement per page; the last page has no cursor.
#[test]
fn list_walks_pages_in_creation_order_with_filters() {
    let pg = PgServer::start();
    actix_test(async {
        let warden = connected(&pg).await;
        let admin = pg.admin().await;
        let catalog = warden.catalog();
        let mut created = Vec::new();
        for i in 0..11 {
            let bpm = if i % 3 == 0 { "128" } else { "140" };
            let mut metadata = BTreeMap::from([("bpm".to_owned(), bpm.to_owned())]);
            if i % 2 == 0 {
                metadata.insert("mood".into(), "dark".into());
            }
            created.push(
                catalog
                    .create(NewRecording {
                        metadata,
                        ..new_recording(&format!("r{i:02}"))
                    })
                    .await
                    .unwrap(),
            );
        }
        // Two with the same created_at (one transaction's now()): the id breaks the tie.
        let tied: Vec<Uuid> = sqlx::query_scalar(
            "INSERT INTO warden.recordings (file_path, file_name, created_at) \
             VALUES ('/t1', 't1', '2026-12-01T00:00:00Z'), ('/t2', 't2', '2026-12-01T00:00:00Z') \
             RETURNING id",
        )
        .fetch_all(&admin)
        .await
        .unwrap();
        assert_eq!(tied.len(), 2);
        let expected: Vec<Uuid> =
            sqlx::query_scalar("SELECT id FROM warden.recordings ORDER BY created_at, id")
                .fetch_all(&admin)
                .await
                .unwrap();

        let walk = |limit: u32, key: Option<&'static str>, value: Option<&'static str>| {
            let catalog = catalog.clone();
            async move {
                let mut seen = Vec::new();
                let mut cursor = None;
                let mut pages = 0;
                loop {
                    let page = catalog
                        .list(ListQuery {
                            limit,
                            cursor,
                            key: key.map(Into::into),
                            value: value.map(Into::into),
                        })
                        .await
                        .expect("a page");
                    pages += 1;
                    assert!(page.items.len() <= limit as usize);
                    seen.extend(page.items);
                    match page.next_cursor {
                        Some(c) => cursor = Some(c),
                        None => break,
                    }
                    assert!(pages < 50, "the walk ends");
                }
                (seen, pages)
            }
        };
        let (all, pages) = walk(4, None, None).await;
        assert_eq!(all.iter().map(|r| r.id).collect::<Vec<_>>(), expected);
        assert_eq!(pages, 4, "13 recordings in pages of 4");
        for r in &created {
            assert!(all.contains(r), "pages carry metadata and tracklists");
        }
        let (one_page, pages) = walk(500, None, None).await;
        assert_eq!((one_page.len(), pages), (13, 1));
        let (exact, pages) = walk(13, None, None).await;
        assert_eq!(
            (exact.len(), pages),
            (13, 1),
            "a full last page has no cursor"
        );

        let ids = |rs: &[Recording]| rs.iter().map(|r| r.id).collect::<Vec<_>>();
        let want = |f: &dyn Fn(&Recording) -> bool| {
            ids(&created.iter().filter(|r| f(r)).cloned().collect::<Vec<_>>())
        };
        let (fast, _) = walk(2, Some("bpm"), Some("128")).await;
        assert_eq!(ids(&fast), want(&|r| r.metadata["bpm"] == "128"));
        assert_eq!(fast.len(), 4);
        let (dark, _) = walk(3, Some("mood"), None).await;
        assert_eq!(ids(&dark), want(&|r| r.metadata.contains_key("mood")));
        let (none, pages) = walk(3, Some("bpm"), Some("999")).await;
        assert_eq!((none.len(), pages), (0, 1));

        // One statement per page, however many recordings it holds (no query per
        // recording): the server's statement log, switched on for this walk, shows it.
        for sql in [
            "ALTER SYSTEM SET log_statement = 'all'",
            "SELECT pg_reload_conf()",
        ] {
            sqlx::raw_sql(sql).execute(&admin).await.unwrap();
        }
        let marker = Uuid::from_u128(7);
        eventually(Duration::from_secs(10), "statements are logged", || {
            let catalog = catalog.clone();
            let pg = &pg;
            async move {
                let _ = catalog.get(marker).await;
                pg.log().contains(&marker.to_string()).then_some(())
            }
        })
        .await;
        let logged_before = pg.log().len();
        let (walked, pages) = walk(5, Some("bpm"), None).await;
        assert_eq!((walked.len(), pages), (11, 3));
        let log = pg.log();
        let statements = log[logged_before..]
            .lines()
            .filter(|l| l.contains("statement:") || l.contains("execute "))
            .filter(|l| l.contains("recordings"))
            .count();
        assert_eq!(
            statements,
            pages,
            "one statement per page:\n{}",
            &log[logged_before..]
        );
        for sql in [
            "ALTER SYSTEM RESET log_statement",
            "SELECT pg_reload_conf()",
        ] {
            sqlx::raw_sql(sql).execute(&admin).await.unwrap();
        }

        // A cursor from one walk, tampered with, is refused.
        let first = catalog
            .list(ListQuery {
                limit: 1,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut c = first.next_cursor.unwrap();
        c.replace_range(0..1, if c.starts_with('A') { "B" } else { "A" });
        c.push('x');
        assert_eq!(
            invalid(
                catalog
                    .list(ListQuery {
                        cursor: Some(c),
                        ..Default::default()
                    })
                    .await
            ),
            "cursor"
        );
        warden.shutdown(SHUTDOWN).await;
    });
}
