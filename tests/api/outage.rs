//! PostgreSQL going away: every catalog route answers 503 `unavailable` with `Retry-After`,
//! nothing is half-written, and writes succeed again once it is back.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::{
    client::{block_on, stack_on},
    support::eventually,
};

/// kill -9 of PostgreSQL: once warden has noticed, reads and writes on every route are 503
/// with a `Retry-After` of whole seconds (at least 1, the same in `detail`); after a restart
/// a POST is 201 again, and PostgreSQL holds exactly the recordings that got a 201. It does
/// not show an open circuit's 503 on its own (the mapping is unit-tested in `api::error`):
/// with the server gone the actor refuses calls as unavailable before any circuit matters.
#[test]
fn postgres_down_is_503_with_retry_after_then_201_again() {
    // Durable: a kill -9 must not lose the commits that were answered 201.
    let (pg, daemon, client) = stack_on(crate::support::pg::PgServer::start_durable(), &[]);
    block_on(async {
        let body =
            |n: u32| json!({"file_path": format!("/o/{n}.flac"), "file_name": format!("{n}.flac")});
        let a = client
            .call(Method::POST, "/api/v1/recordings", Some(body(0)))
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
        let url = format!(
            "/api/v1/recordings/{}",
            a.body["data"]["id"].as_str().unwrap()
        );
        let mut created = 1;

        pg.kill9();
        eventually(
            Duration::from_secs(10),
            "health shows postgres down",
            || async {
                let (_, v) = daemon.get("/health/detailed").await?;
                (v["components"]["postgres"]["healthy"] == false).then_some(())
            },
        )
        .await;
        for (method, path, b) in [
            (Method::POST, "/api/v1/recordings".to_owned(), Some(body(1))),
            (Method::GET, "/api/v1/recordings".to_owned(), None),
            (Method::GET, url.clone(), None),
            (
                Method::PATCH,
                url.clone(),
                Some(json!({"file_name": "x.flac"})),
            ),
            (Method::DELETE, url.clone(), None),
            (
                Method::PUT,
                format!("{url}/metadata/bpm"),
                Some(json!({"value": "1"})),
            ),
            (Method::DELETE, format!("{url}/metadata/bpm"), None),
            (
                Method::PUT,
                format!("{url}/tracklist"),
                Some(json!({"source": "s"})),
            ),
            (Method::DELETE, format!("{url}/tracklist"), None),
        ] {
            let a = client.call(method.clone(), &path, b).await;
            assert_eq!(a.status, 503, "{method} {path}: {}", a.text);
            assert_eq!(a.code(), "unavailable");
            let retry: u64 = a
                .header("retry-after")
                .expect("Retry-After")
                .parse()
                .expect("whole seconds");
            assert!(retry >= 1, "{retry}");
            assert_eq!(a.body["error"]["detail"]["retry_after_seconds"], retry);
        }

        pg.restart();
        // Until the pool has reconnected, a POST is 503 (and writes nothing); then 201.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut refused = 0;
        loop {
            let a = client
                .call(Method::POST, "/api/v1/recordings", Some(body(2)))
                .await;
            match a.status {
                201 => {
                    created += 1;
                    break;
                }
                503 => refused += 1,
                other => panic!("{other}: {}", a.text),
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no 201 within 30 s of the restart"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let admin = pg.admin().await;
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM warden.recordings")
            .fetch_one(&admin)
            .await
            .unwrap();
        let events: i64 = sqlx::query_scalar("SELECT count(*) FROM warden.graph_outbox")
            .fetch_one(&admin)
            .await
            .unwrap();
        assert_eq!(
            (rows, events),
            (created, created),
            "{refused} refused after the restart"
        );
        let a = client.call(Method::GET, &url, None).await;
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(
            a.body["data"]["version"], 1,
            "no write of the outage landed"
        );
    });
}
