//! The catalog under faults, against a real throwaway PostgreSQL 15: a write failing
//! half-way leaves nothing, writes racing on one recording serialize in version order, and
//! PostgreSQL stopped or killed -9 mid-write gives transient errors and nothing half-written.
//!
//! What these cannot show: a network partition that leaves the server running (the proxy
//! tests in tests/postgres.rs cover the driver's side of that).

mod support;

use std::{collections::BTreeMap, time::Duration};

use serde_json::json;
use support::{actix_test, catalog::*, eventually, pg::PgServer};
use warden_actors::{
    catalog::{CatalogError, NewRecording, RecordingPatch, TracklistInput},
    WardenError,
};

/// A write that fails in its middle leaves nothing: not the recording, not its metadata, not
/// its event. The failure is a test-only trigger on `tracklists` (after the recording and its
/// metadata were inserted) and then one on `graph_outbox` (the very last statement).
#[test]
fn a_failure_in_the_middle_of_a_write_leaves_nothing() {
    let pg = PgServer::start();
    actix_test(async {
        let warden = connected(&pg).await;
        let admin = pg.admin().await;
        let catalog = warden.catalog();
        let kept = catalog
            .create(NewRecording {
                metadata: BTreeMap::from([("bpm".into(), "120".into())]),
                ..new_recording("kept")
            })
            .await
            .unwrap();
        sqlx::raw_sql(
            "CREATE FUNCTION warden.test_refuse() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'refused by the test trigger'; END $$; \
             CREATE TRIGGER test_refuse BEFORE INSERT OR UPDATE ON warden.tracklists \
             FOR EACH ROW EXECUTE FUNCTION warden.test_refuse();",
        )
        .execute(&admin)
        .await
        .unwrap();
        let before = counts(&admin).await;
        let with_children = NewRecording {
            metadata: BTreeMap::from([("bpm".into(), "128".into()), ("key".into(), "A".into())]),
            tracklist: Some(TracklistInput {
                source: "s".into(),
                tracks: vec![track("t", "a", "00:00")],
                cue_file_path: None,
            }),
            ..new_recording("doomed")
        };
        match catalog.create(with_children.clone()).await {
            Err(e @ CatalogError::Unavailable(WardenError::Query { .. })) => {
                assert!(!e.is_transient(), "a refusal is not transient: {e}");
                assert!(e.to_string().contains("P0001"), "{e}");
            }
            other => panic!("expected the trigger's refusal, got {other:?}"),
        }
        assert_eq!(
            counts(&admin).await,
            before,
            "no recording, metadata or event"
        );
        let doomed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM warden.recordings WHERE file_name = 'doomed.flac'",
        )
        .fetch_one(&admin)
        .await
        .unwrap();
        assert_eq!(doomed, 0);
        // On an existing recording: the version bump and the row lock went first, and are
        // rolled back with the rest.
        let refused = catalog
            .put_tracklist(
                kept.id,
                TracklistInput {
                    source: "s".into(),
                    ..Default::default()
                },
            )
            .await;
        assert!(
            matches!(refused, Err(CatalogError::Unavailable(_))),
            "{refused:?}"
        );
        assert_eq!(catalog.get(kept.id).await.unwrap(), kept);
        assert_eq!(counts(&admin).await, before);

        // A failure at the last statement, the event itself.
        sqlx::raw_sql(
            "DROP TRIGGER test_refuse ON warden.tracklists; \
             CREATE TRIGGER test_refuse BEFORE INSERT ON warden.graph_outbox \
             FOR EACH ROW EXECUTE FUNCTION warden.test_refuse();",
        )
        .execute(&admin)
        .await
        .unwrap();
        assert!(matches!(
            catalog.create(with_children.clone()).await,
            Err(CatalogError::Unavailable(_))
        ));
        assert!(matches!(
            catalog
                .put_metadata(kept.id, "bpm".into(), "99".into())
                .await,
            Err(CatalogError::Unavailable(_))
        ));
        assert!(matches!(
            catalog.delete(kept.id).await,
            Err(CatalogError::Unavailable(_))
        ));
        assert_eq!(
            catalog.get(kept.id).await.unwrap(),
            kept,
            "no change without its event"
        );
        assert_eq!(counts(&admin).await, before);

        // Without the trigger the same writes go through: the failures were the trigger's.
        sqlx::raw_sql("DROP TRIGGER test_refuse ON warden.graph_outbox")
            .execute(&admin)
            .await
            .unwrap();
        let created = catalog.create(with_children).await.expect("create");
        assert_eq!(created.metadata.len(), 2);
        assert_eq!(
            counts(&admin).await,
            [before[0] + 1, before[1] + 2, before[2] + 1, before[3] + 1]
        );
        warden.shutdown(SHUTDOWN).await;
    });
}

/// Writes racing on one recording run one after another (each locks the row first): every
/// one succeeds, each gets its own version, and the events' ids ascend with their versions up
/// to the row's final version, which is the order the projector applies them in.
#[test]
fn concurrent_writes_to_one_recording_serialize_in_version_order() {
    let pg = PgServer::start();
    actix_test(async {
        let warden = connected(&pg).await;
        let admin = pg.admin().await;
        let catalog = warden.catalog();
        let rec = catalog.create(new_recording("hot")).await.unwrap();
        const N: usize = 24;
        let writes = (0..N).map(|i| {
            let catalog = catalog.clone();
            let id = rec.id;
            async move {
                match i % 4 {
                    0 => catalog
                        .put_metadata(id, format!("k{i}"), i.to_string())
                        .await
                        .map(|r| r.version),
                    1 => catalog
                        .update(
                            id,
                            RecordingPatch {
                                file_name: Some(format!("n{i}")),
                                ..Default::default()
                            },
                        )
                        .await
                        .map(|r| r.version),
                    2 => catalog
                        .put_tracklist(
                            id,
                            TracklistInput {
                                source: format!("s{i}"),
                                ..Default::default()
                            },
                        )
                        .await
                        .map(|r| r.version),
                    _ => catalog
                        .put_metadata(id, "shared".into(), i.to_string())
                        .await
                        .map(|r| r.version),
                }
            }
        });
        let mut versions: Vec<i64> = futures_util::future::join_all(writes)
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .expect("every write succeeds");
        versions.sort_unstable();
        assert_eq!(
            versions,
            (2..=N as i64 + 1).collect::<Vec<_>>(),
            "one version each"
        );
        let evs = events(&admin, rec.id).await;
        let by_id: Vec<i64> = evs.iter().map(|e| e.version).collect();
        assert_eq!(
            by_id,
            (1..=N as i64 + 1).collect::<Vec<_>>(),
            "ids ascend with versions"
        );
        for e in &evs {
            assert_eq!(
                e.payload["version"],
                json!(e.version),
                "each payload is its version's"
            );
        }
        assert_eq!(row_version(&admin, rec.id).await, Some(N as i64 + 1));
        let last = as_recording(&evs.last().unwrap().payload);
        assert_eq!(
            catalog.get(rec.id).await.unwrap(),
            last,
            "the last event is the row"
        );

        // A delete racing with updates comes last or makes them NotFound; its event is one
        // past whatever version it deleted.
        let racing = (0..6).map(|i| {
            let catalog = catalog.clone();
            let id = rec.id;
            async move {
                if i == 3 {
                    catalog.delete(id).await.map(|_| 0)
                } else {
                    catalog
                        .put_metadata(id, "race".into(), i.to_string())
                        .await
                        .map(|r| r.version)
                }
            }
        });
        for r in futures_util::future::join_all(racing).await {
            assert!(
                matches!(r, Ok(_) | Err(CatalogError::NotFound { what: "recording" })),
                "{r:?}"
            );
        }
        let evs = events(&admin, rec.id).await;
        let versions: Vec<i64> = evs.iter().map(|e| e.version).collect();
        assert_eq!(versions, (1..=versions.len() as i64).collect::<Vec<_>>());
        assert_eq!(evs.last().unwrap().op, "delete");
        assert_eq!(row_version(&admin, rec.id).await, None);
        warden.shutdown(SHUTDOWN).await;
    });
}

/// PostgreSQL stopped: writes and reads are refused at once as `Unavailable`, transient, with
/// a retry time; invalid input is still `Invalid` (validation needs no database); after a
/// restart the catalog works again and no refused write appears.
#[test]
fn postgres_down_is_unavailable_and_transient() {
    let pg = PgServer::start();
    actix_test(async {
        let warden = connected(&pg).await;
        let catalog = warden.catalog();
        let kept = catalog.create(new_recording("kept")).await.unwrap();
        pg.stop();
        let refused = eventually(
            Duration::from_secs(10),
            "the catalog refuses at once",
            || {
                let catalog = catalog.clone();
                async move {
                    match catalog.create(new_recording("refused")).await {
                        Err(e) if e.retry_after().is_some() => Some(e),
                        _ => None,
                    }
                }
            },
        )
        .await;
        assert!(refused.is_transient(), "{refused}");
        assert!(
            matches!(
                refused,
                CatalogError::Unavailable(
                    WardenError::Unavailable { .. } | WardenError::CircuitOpen { .. }
                )
            ),
            "{refused:?}"
        );
        let get = catalog.get(kept.id).await.unwrap_err();
        assert!(get.is_transient() && get.retry_after().is_some(), "{get:?}");
        let put = catalog
            .put_metadata(kept.id, "k".into(), "v".into())
            .await
            .unwrap_err();
        assert!(put.is_transient(), "{put:?}");
        assert_eq!(
            invalid(
                catalog
                    .create(NewRecording {
                        file_name: String::new(),
                        ..new_recording("x")
                    })
                    .await
            ),
            "file_name"
        );

        pg.restart();
        let back = eventually(
            Duration::from_secs(15),
            "the catalog takes writes again",
            || {
                let catalog = catalog.clone();
                async move { catalog.create(new_recording("after")).await.ok() }
            },
        )
        .await;
        assert_eq!(back.version, 1);
        let admin = pg.admin().await;
        let names: Vec<String> =
            sqlx::query_scalar("SELECT file_name FROM warden.recordings ORDER BY created_at")
                .fetch_all(&admin)
                .await
                .unwrap();
        assert_eq!(
            names,
            ["kept.flac", "after.flac"],
            "no refused write appeared"
        );
        assert_eq!(catalog.get(kept.id).await.unwrap(), kept);
        warden.shutdown(SHUTDOWN).await;
    });
}

/// PostgreSQL killed -9 while a write is half-way (held inside its tracklist insert by a
/// test-only trigger): the call fails as transient, and after the restart nothing of it is
/// there while earlier writes are. A durable cluster, so that the restart keeps every
/// acknowledged commit.
#[test]
fn a_kill_in_the_middle_of_a_write_leaves_nothing() {
    let pg = PgServer::start_durable();
    actix_test(async {
        let warden = connected(&pg).await;
        let catalog = warden.catalog();
        let kept = catalog.create(new_recording("kept")).await.unwrap();
        {
            let admin = pg.admin().await;
            sqlx::raw_sql(
                "CREATE FUNCTION warden.test_stall() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN PERFORM pg_sleep(2); RETURN NEW; END $$; \
                 CREATE TRIGGER test_stall BEFORE INSERT ON warden.tracklists \
                 FOR EACH ROW EXECUTE FUNCTION warden.test_stall();",
            )
            .execute(&admin)
            .await
            .unwrap();
            admin.close().await;
        }
        let write = {
            let catalog = catalog.clone();
            actix::spawn(async move {
                catalog
                    .create(NewRecording {
                        metadata: BTreeMap::from([("bpm".into(), "128".into())]),
                        tracklist: Some(TracklistInput {
                            source: "s".into(),
                            ..Default::default()
                        }),
                        ..new_recording("half")
                    })
                    .await
            })
        };
        {
            let admin = pg.admin().await;
            eventually(
                Duration::from_secs(5),
                "the write sleeps in its trigger",
                || {
                    let admin = admin.clone();
                    async move {
                        let n: i64 = sqlx::query_scalar(
                            "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'",
                        )
                        .fetch_one(&admin)
                        .await
                        .unwrap_or(0);
                        (n == 1).then_some(())
                    }
                },
            )
            .await;
            admin.close().await;
        }
        pg.kill9();
        let failed = write.await.expect("the task").unwrap_err();
        assert!(failed.is_transient(), "{failed:?}");
        assert!(matches!(failed, CatalogError::Unavailable(_)));
        pg.restart();
        let admin = pg.admin().await;
        let names: Vec<String> = sqlx::query_scalar("SELECT file_name FROM warden.recordings")
            .fetch_all(&admin)
            .await
            .unwrap();
        assert_eq!(names, ["kept.flac"], "the killed write left nothing");
        assert_eq!(counts(&admin).await, [1, 0, 0, 1]);
        let back = eventually(Duration::from_secs(15), "the catalog reads again", || {
            let catalog = catalog.clone();
            async move { catalog.get(kept.id).await.ok() }
        })
        .await;
        assert_eq!(back, kept);
        warden.shutdown(SHUTDOWN).await;
    });
}
