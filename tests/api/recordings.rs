//! Every recordings route with its success and error statuses, against a real PostgreSQL:
//! 201 + Location, 200, 204, 404, 405, 409; the JSONB round trip; one outbox event per
//! successful write and none for a refused one.

use reqwest::Method;
use serde_json::{json, Value};

use crate::client::{block_on, counts, stack, Auth, TOKEN};

fn new_recording(n: u32) -> Value {
    json!({
        "file_path": format!("/sets/2026/set-{n}.flac"),
        "file_name": format!("set-{n}.flac"),
        "sha256_hash": format!("{n:064x}"),
        "metadata": {"bpm": "128", "genre": "techno", "n": n.to_string()},
    })
}

/// Through every route, as a client would use them, checking status, headers, envelope and
/// what PostgreSQL holds after each step (recordings, metadata, tracklists, outbox events).
/// The stored tracks come back exactly as sent: unicode, quotes, backslashes, emoji and an
/// `HH:MM:SS` time (the JSONB round trip). It does not show concurrent writers (the library's
/// tests do).
#[test]
fn every_route_answers_with_its_status_and_envelope() {
    let (pg, _daemon, client) = stack(&[]);
    block_on(async {
        let admin = pg.admin().await;
        let tracks = json!([
            {"title": "Intro — «Dämmerung»", "artist": "Ø \"quoted\" \\ back", "start_time": "00:00"},
            {"title": "日本語のトラック 🎧", "artist": "", "start_time": "59:59"},
            {"title": "Outro", "artist": "B2B", "start_time": "01:02:03"},
        ]);
        let mut body = new_recording(1);
        body["xxh128_hash"] = json!(format!("{:032x}", 7));
        body["tracklist"] =
            json!({"source": "1001tracklists", "tracks": tracks, "cue_file_path": "/sets/1.cue"});

        // POST -> 201, Location, the whole recording at version 1.
        let a = client
            .call(Method::POST, "/api/v1/recordings", Some(body.clone()))
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
        let rec = a.body["data"].clone();
        let id = rec["id"].as_str().expect("an id").to_owned();
        assert_eq!(
            a.header("location"),
            Some(format!("/api/v1/recordings/{id}").as_str())
        );
        assert!(a.body["meta"]["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(rec["version"], 1);
        assert_eq!(rec["file_path"], body["file_path"]);
        assert_eq!(rec["sha256_hash"], body["sha256_hash"]);
        assert_eq!(rec["metadata"], body["metadata"]);
        assert_eq!(rec["tracklist"]["tracks"], tracks);
        assert_eq!(rec["tracklist"]["source"], "1001tracklists");
        assert_eq!(counts(&admin).await, [1, 3, 1, 1]);

        // GET -> 200, the same recording; the tracks as PostgreSQL stored them, too.
        let url = format!("/api/v1/recordings/{id}");
        let a = client.call(Method::GET, &url, None).await;
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(a.body["data"], rec);
        let stored: Value = sqlx::query_scalar(
            "SELECT t.tracks FROM warden.tracklists t WHERE t.recording_id = $1::text::uuid",
        )
        .bind(&id)
        .fetch_one(&admin)
        .await
        .unwrap();
        assert_eq!(stored, tracks);

        // PATCH -> 200, version 2; null clears a hash.
        let a = client
            .call(
                Method::PATCH,
                &url,
                Some(json!({"file_name": "renamed.flac", "xxh128_hash": null})),
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(a.body["data"]["file_name"], "renamed.flac");
        assert!(a.body["data"]["xxh128_hash"].is_null());
        assert_eq!(a.body["data"]["sha256_hash"], body["sha256_hash"]);
        assert_eq!(a.body["data"]["version"], 2);

        // PUT metadata -> 200 (created, then replaced); a key with a space, a slash and
        // non-ASCII travels percent-encoded in the path.
        let key_url = format!("{url}/metadata/mood%2Fvibe%20%C3%A9");
        let a = client
            .call(Method::PUT, &key_url, Some(json!({"value": "dark"})))
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(
            a.body["data"]["metadata"]["mood/vibe é"], "dark",
            "{}",
            a.text
        );
        let a = client
            .call(
                Method::PUT,
                &format!("{url}/metadata/bpm"),
                Some(json!({"value": "130"})),
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(a.body["data"]["metadata"]["bpm"], "130");
        assert_eq!(a.body["data"]["version"], 4);

        // DELETE metadata -> 204, then 404 (what: metadata), and nothing changed by the 404.
        let a = client.call(Method::DELETE, &key_url, None).await;
        assert_eq!((a.status, a.text.as_str()), (204, ""));
        let before = counts(&admin).await;
        let a = client.call(Method::DELETE, &key_url, None).await;
        assert_eq!(a.status, 404, "{}", a.text);
        assert_eq!(a.code(), "not_found");
        assert_eq!(a.body["error"]["detail"]["resource"], "metadata");
        assert_eq!(counts(&admin).await, before);

        // PUT tracklist -> 200 (replaced), DELETE -> 204, again -> 404.
        let tl = json!({"source": "manual", "tracks": [{"title": "Only", "artist": "A", "start_time": "10:00"}]});
        let a = client
            .call(Method::PUT, &format!("{url}/tracklist"), Some(tl.clone()))
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(a.body["data"]["tracklist"]["tracks"], tl["tracks"]);
        assert!(a.body["data"]["tracklist"]["cue_file_path"].is_null());
        let a = client
            .call(Method::DELETE, &format!("{url}/tracklist"), None)
            .await;
        assert_eq!(a.status, 204, "{}", a.text);
        let a = client
            .call(Method::DELETE, &format!("{url}/tracklist"), None)
            .await;
        assert_eq!(a.status, 404, "{}", a.text);
        assert_eq!(a.body["error"]["detail"]["resource"], "tracklist");
        let a = client
            .call(Method::PUT, &format!("{url}/tracklist"), Some(tl.clone()))
            .await;
        assert_eq!(a.status, 200, "{}", a.text);

        // Every successful write above left exactly one event; the refusals none.
        let version = client.call(Method::GET, &url, None).await.body["data"]["version"]
            .as_i64()
            .unwrap();
        let events: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM warden.graph_outbox WHERE recording_id = $1::text::uuid",
        )
        .bind(&id)
        .fetch_one(&admin)
        .await
        .unwrap();
        assert_eq!(events, version, "one event per version");

        // 409: a duplicate hash, on create and on update; nothing written.
        let other = client
            .call(Method::POST, "/api/v1/recordings", Some(new_recording(2)))
            .await;
        assert_eq!(other.status, 201, "{}", other.text);
        let other_url = format!(
            "/api/v1/recordings/{}",
            other.body["data"]["id"].as_str().unwrap()
        );
        let before = counts(&admin).await;
        let mut dup = new_recording(3);
        dup["sha256_hash"] = body["sha256_hash"].clone();
        let a = client
            .call(Method::POST, "/api/v1/recordings", Some(dup))
            .await;
        assert_eq!(a.status, 409, "{}", a.text);
        assert_eq!(a.code(), "conflict");
        assert_eq!(a.body["error"]["detail"]["field"], "sha256_hash");
        let a = client
            .call(
                Method::PATCH,
                &other_url,
                Some(json!({"sha256_hash": body["sha256_hash"]})),
            )
            .await;
        assert_eq!(a.status, 409, "{}", a.text);
        assert_eq!(counts(&admin).await, before);

        // 405 with Allow, on every route.
        for (method, path, allow) in [
            (Method::PUT, "/api/v1/recordings".to_owned(), "GET, POST"),
            (Method::DELETE, "/api/v1/recordings".to_owned(), "GET, POST"),
            (Method::POST, url.clone(), "GET, PATCH, DELETE"),
            (Method::PUT, url.clone(), "GET, PATCH, DELETE"),
            (Method::GET, format!("{url}/metadata/bpm"), "PUT, DELETE"),
            (Method::POST, format!("{url}/tracklist"), "PUT, DELETE"),
        ] {
            let a = client.call(method.clone(), &path, None).await;
            assert_eq!(a.status, 405, "{method} {path}: {}", a.text);
            assert_eq!(a.code(), "method_not_allowed");
            assert_eq!(a.header("allow"), Some(allow));
        }

        // DELETE -> 204; then the recording and everything under it is 404.
        let a = client.call(Method::DELETE, &url, None).await;
        assert_eq!(a.status, 204, "{}", a.text);
        let before = counts(&admin).await;
        for (method, path, body) in [
            (Method::GET, url.clone(), None),
            (Method::DELETE, url.clone(), None),
            (Method::PATCH, url.clone(), Some(json!({"file_name": "x"}))),
            (
                Method::PUT,
                format!("{url}/metadata/bpm"),
                Some(json!({"value": "1"})),
            ),
            (Method::DELETE, format!("{url}/metadata/bpm"), None),
            (Method::PUT, format!("{url}/tracklist"), Some(tl.clone())),
            (Method::DELETE, format!("{url}/tracklist"), None),
        ] {
            let a = client.call(method.clone(), &path, body).await;
            assert_eq!(a.status, 404, "{method} {path}: {}", a.text);
            assert_eq!(a.code(), "not_found");
        }
        assert_eq!(counts(&admin).await, before);
        // The tracklist and the metadata went with the recording.
        assert_eq!(&counts(&admin).await[..3], &[1, 3, 0]);

        // The token is never echoed.
        let a = client
            .send(Method::GET, &other_url, Auth::Bearer(TOKEN), None)
            .await;
        assert!(!a.text.contains(TOKEN));
    });
}

/// `GET /recordings`: pages of `limit` in creation order, `meta.next_cursor` until the last
/// page (then `null`), the `key` / `key`+`value` filters, and the limit's bounds (1 and 500
/// pass). It does not show pagination under concurrent inserts (the library's tests do).
#[test]
fn list_pages_with_a_cursor_and_filters() {
    let (_pg, _daemon, client) = stack(&[]);
    block_on(async {
        let mut ids = Vec::new();
        for n in 0..7u32 {
            let mut body = new_recording(100 + n);
            body["metadata"]["bpm"] = json!(if n % 2 == 0 { "128" } else { "140" });
            if n == 3 {
                body["metadata"].as_object_mut().unwrap().remove("genre");
            }
            let a = client
                .call(Method::POST, "/api/v1/recordings", Some(body))
                .await;
            assert_eq!(a.status, 201, "{}", a.text);
            ids.push(a.body["data"]["id"].as_str().unwrap().to_owned());
        }
        let walk = |query: &'static str| {
            let client = &client;
            async move {
                let mut seen = Vec::new();
                let mut cursor: Option<String> = None;
                for _ in 0..20 {
                    let mut path = format!("/api/v1/recordings?limit=3{query}");
                    if let Some(c) = &cursor {
                        path.push_str(&format!("&cursor={c}"));
                    }
                    let a = client.call(Method::GET, &path, None).await;
                    assert_eq!(a.status, 200, "{path}: {}", a.text);
                    let items = a.body["data"].as_array().unwrap();
                    assert!(items.len() <= 3);
                    seen.extend(items.iter().map(|r| r["id"].as_str().unwrap().to_owned()));
                    assert!(a.body["meta"].get("next_cursor").is_some(), "{}", a.text);
                    match a.body["meta"]["next_cursor"].as_str() {
                        Some(c) => cursor = Some(c.to_owned()),
                        None => return seen,
                    }
                }
                panic!("no last page");
            }
        };
        assert_eq!(walk("").await, ids);
        let even: Vec<_> = ids.iter().step_by(2).cloned().collect();
        assert_eq!(walk("&key=bpm&value=128").await, even);
        let with_genre: Vec<_> = ids
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 3)
            .map(|(_, id)| id.clone())
            .collect();
        assert_eq!(walk("&key=genre").await, with_genre);
        assert!(walk("&key=nothing").await.is_empty());

        for limit in [1, 500] {
            let a = client
                .call(
                    Method::GET,
                    &format!("/api/v1/recordings?limit={limit}"),
                    None,
                )
                .await;
            assert_eq!(a.status, 200, "{limit}: {}", a.text);
            assert_eq!(
                a.body["data"].as_array().unwrap().len(),
                (limit as usize).min(7)
            );
        }
        let a = client.call(Method::GET, "/api/v1/recordings", None).await;
        assert_eq!(
            a.body["data"].as_array().unwrap().len(),
            7,
            "default limit 50"
        );
        assert!(a.body["meta"]["next_cursor"].is_null());
    });
}
