//! Bad input is a 422 that names the field and why, and writes nothing: a bad UUID, JSON that
//! does not parse, unknown fields, wrong types, broken catalog rules, bad query strings.

use reqwest::Method;
use serde_json::{json, Value};

use crate::client::{block_on, counts, stack, Auth, TOKEN};

/// Every kind of invalid input on every route it can reach: 422 `invalid_input` with
/// `detail.field` naming where, and the catalog tables and the outbox unchanged afterwards.
/// It does not list every catalog rule (the library's validation tests do); it shows that
/// the API passes the library's verdict through, field and all.
#[test]
fn invalid_input_is_422_naming_the_field_and_writes_nothing() {
    let (pg, _daemon, client) = stack(&[]);
    block_on(async {
        let admin = pg.admin().await;
        let a = client
            .call(
                Method::POST,
                "/api/v1/recordings",
                Some(json!({"file_path": "/a.flac", "file_name": "a.flac"})),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
        let url = format!(
            "/api/v1/recordings/{}",
            a.body["data"]["id"].as_str().unwrap()
        );
        let before = counts(&admin).await;
        let good = || json!({"file_path": "/b.flac", "file_name": "b.flac"});
        let with = |k: &str, v: Value| {
            let mut b = good();
            b[k] = v;
            b
        };
        let track = |title: &str, start: &str| json!({"source": "s", "tracks": [{"title": title, "artist": "x", "start_time": start}]});
        let raw = |s: &str| s.as_bytes().to_vec();
        let j = |v: Value| serde_json::to_vec(&v).unwrap();
        let cases: Vec<(Method, String, Option<Vec<u8>>, &str)> = vec![
            // The path.
            (
                Method::GET,
                "/api/v1/recordings/not-a-uuid".into(),
                None,
                "id",
            ),
            (
                Method::PATCH,
                "/api/v1/recordings/123".into(),
                Some(j(json!({}))),
                "id",
            ),
            (
                Method::DELETE,
                "/api/v1/recordings/zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz".into(),
                None,
                "id",
            ),
            (
                Method::PUT,
                "/api/v1/recordings/x/metadata/bpm".into(),
                Some(j(json!({"value": "1"}))),
                "id",
            ),
            (
                Method::DELETE,
                "/api/v1/recordings/x/metadata/bpm".into(),
                None,
                "id",
            ),
            (
                Method::PUT,
                "/api/v1/recordings/x/tracklist".into(),
                Some(j(track("t", "01:00"))),
                "id",
            ),
            (
                Method::DELETE,
                "/api/v1/recordings/x/tracklist".into(),
                None,
                "id",
            ),
            // JSON that does not parse, or is not the right shape.
            (
                Method::POST,
                "/api/v1/recordings".into(),
                Some(raw(r#"{"file_path": "/b.flac","#)),
                "body",
            ),
            (
                Method::POST,
                "/api/v1/recordings".into(),
                Some(raw("")),
                "body",
            ),
            (
                Method::POST,
                "/api/v1/recordings".into(),
                Some(raw("[1, 2]")),
                "body",
            ),
            (
                Method::POST,
                "/api/v1/recordings".into(),
                Some(raw(r#"["/b.flac", "b.flac"]"#)),
                "body",
            ),
            (
                Method::POST,
                "/api/v1/recordings".into(),
                Some(raw(r#"{"file_path": "/b", "file_name": "b"} {}"#)),
                "body",
            ),
            (Method::PATCH, url.clone(), Some(raw("not json")), "body"),
            // Unknown fields, at every depth.
            (
                Method::POST,
                "/api/v1/recordings".into(),
                Some(j(with("colour", json!("red")))),
                "colour",
            ),
            (
                Method::POST,
                "/api/v1/recordings".into(),
                Some(j(with("tracklist", json!({"source": "s", "extra": 1})))),
                "tracklist.extra",
            ),
            (
                Method::POST,
                "/api/v1/recordings".into(),
                Some(j(with(
                    "tracklist",
                    json!({"source": "s", "tracks": [{"title": "t", "artist": "a", "start_time": "01:00", "bpm": 1}]}),
                ))),
                "tracklist.tracks[0].bpm",
            ),
            (
                Method::PATCH,
                url.clone(),
                Some(j(json!({"id": "x"}))),
                "id",
            ),
            (
                Method::PUT,
                format!("{url}/metadata/bpm"),
                Some(j(json!({"value": "1", "other": 2}))),
                "other",
            ),
            (
                Method::PUT,
                format!("{url}/tracklist"),
                Some(j(json!({"source": "s", "id": "x"}))),
                "id",
            ),
            // Wrong types and missing fields.
            (
                Method::POST,
                "/api/v1/recordings".into(),
                Some(j(with("file_path", json!(5)))),
                "file_path",
            ),
            (
                Method::POST,
                "/api/v1/recordings".into(),
                Some(j(json!({"file_path": "/b.flac"}))),
                "body",
            ),
            (
                Method::POST,
                "/api/v1/recordings".into(),
                Some(j(with("metadata", json!({"bpm": 128})))),
                "metadata.bpm",
            ),
            (
                Method::PUT,
                format!("{url}/metadata/bpm"),
                Some(j(json!({"value": 128}))),
                "value",
            ),
            (
                Method::PUT,
                format!("{url}/metadata/bpm"),
                Some(j(json!({}))),
                "body",
            ),
            // The catalog's rules, checked by the library before any SQL.
            (
                Method::POST,
                "/api/v1/recordings".into(),
                Some(j(with("file_path", json!("")))),
                "file_path",
            ),
            (
                Method::POST,
                "/api/v1/recordings".into(),
                Some(j(with("sha256_hash", json!("ABC")))),
                "sha256_hash",
            ),
            (
                Method::POST,
                "/api/v1/recordings".into(),
                Some(j(with("tracklist", track("", "01:00")))),
                "tracklist.tracks[0].title",
            ),
            (
                Method::POST,
                "/api/v1/recordings".into(),
                Some(j(with("tracklist", track("t", "1:60")))),
                "tracklist.tracks[0].start_time",
            ),
            (
                Method::POST,
                "/api/v1/recordings".into(),
                Some(j(with("tracklist", track("t", "00:60")))),
                "tracklist.tracks[0].start_time",
            ),
            (
                Method::PUT,
                format!("{url}/tracklist"),
                Some(j(track("t", "soon"))),
                "tracks[0].start_time",
            ),
            (
                Method::PUT,
                format!("{url}/tracklist"),
                Some(j(track("", "01:00"))),
                "tracks[0].title",
            ),
            (
                Method::PATCH,
                url.clone(),
                Some(j(json!({"file_name": ""}))),
                "file_name",
            ),
            (
                Method::PUT,
                format!("{url}/metadata/{}", "k".repeat(256)),
                Some(j(json!({"value": "1"}))),
                "key",
            ),
            // Query strings.
            (
                Method::GET,
                "/api/v1/recordings?limit=0".into(),
                None,
                "limit",
            ),
            (
                Method::GET,
                "/api/v1/recordings?limit=501".into(),
                None,
                "limit",
            ),
            (
                Method::GET,
                "/api/v1/recordings?limit=ten".into(),
                None,
                "limit",
            ),
            (
                Method::GET,
                "/api/v1/recordings?limit=-1".into(),
                None,
                "limit",
            ),
            (
                Method::GET,
                "/api/v1/recordings?cursor=garbage".into(),
                None,
                "cursor",
            ),
            (
                Method::GET,
                "/api/v1/recordings?value=128".into(),
                None,
                "value",
            ),
            (
                Method::GET,
                "/api/v1/recordings?sort=name".into(),
                None,
                "sort",
            ),
            (
                Method::GET,
                "/api/v1/recordings?limit=1&limit=2".into(),
                None,
                "query",
            ),
        ];
        for (method, path, body, field) in cases {
            let a = client
                .send(method.clone(), &path, Auth::Bearer(TOKEN), body.clone())
                .await;
            let shown = body
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            assert_eq!(a.status, 422, "{method} {path} {shown}: {}", a.text);
            assert_eq!(a.code(), "invalid_input", "{}", a.text);
            assert_eq!(
                a.body["error"]["detail"]["field"], field,
                "{method} {path} {shown}: {}",
                a.text
            );
            assert!(a.body["error"]["detail"]["reason"]
                .as_str()
                .is_some_and(|r| !r.is_empty()));
        }

        // A body that is not JSON by its declared type.
        let resp = reqwest::Client::new()
            .post(format!(
                "http://127.0.0.1:{}/api/v1/recordings",
                client.port()
            ))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(r#"{"file_path": "/b.flac", "file_name": "b.flac"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 422);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["detail"]["field"], "content-type", "{v}");

        assert_eq!(
            counts(&admin).await,
            before,
            "a refused request wrote something"
        );
    });
}
