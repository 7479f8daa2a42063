//! The 1 MB body limit: a body over it is a 422 `payload_too_large` and writes nothing,
//! whether its length was declared or it came chunked.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use reqwest::Method;
use serde_json::{json, Value};

use crate::client::{block_on, counts, stack, Auth, TOKEN};

/// The 1 MB body limit: a body just under it is taken (201); one over it is a 422
/// `payload_too_large` whether its length was declared (refused before it is read) or it came
/// chunked (refused once 1 MB has arrived), and nothing is written either way.
#[test]
fn a_body_over_1_mb_is_422_and_writes_nothing() {
    let (pg, _daemon, client) = stack(&[]);
    block_on(async {
        let admin = pg.admin().await;
        // 15 values of 64 KiB: about 0.98 MB of JSON, within the limit.
        let value = "v".repeat(64 * 1024);
        let metadata: serde_json::Map<String, Value> =
            (0..15).map(|i| (format!("k{i}"), json!(value))).collect();
        let under =
            json!({"file_path": "/big.flac", "file_name": "big.flac", "metadata": metadata});
        let bytes = serde_json::to_vec(&under).unwrap();
        assert!(bytes.len() < 1024 * 1024 && bytes.len() > 900 * 1024);
        let a = client
            .send(
                Method::POST,
                "/api/v1/recordings",
                Auth::Bearer(TOKEN),
                Some(bytes),
            )
            .await;
        assert_eq!(a.status, 201, "{}", &a.text[..a.text.len().min(300)]);
        let before = counts(&admin).await;

        // 17 values: about 1.1 MB, valid JSON otherwise.
        let metadata: serde_json::Map<String, Value> =
            (0..17).map(|i| (format!("k{i}"), json!(value))).collect();
        let over = serde_json::to_vec(
            &json!({"file_path": "/over.flac", "file_name": "over.flac", "metadata": metadata}),
        )
        .unwrap();
        assert!(over.len() > 1024 * 1024);
        let a = client
            .send(
                Method::POST,
                "/api/v1/recordings",
                Auth::Bearer(TOKEN),
                Some(over.clone()),
            )
            .await;
        assert_eq!(a.status, 422, "{}", a.text);
        assert_eq!(a.code(), "payload_too_large");
        assert_eq!(a.body["error"]["detail"]["limit_bytes"], 1024 * 1024);

        // The same body chunked, without a declared length, over a raw connection.
        let answer = chunked_post(client.port(), "/api/v1/recordings", &over);
        assert!(
            answer.starts_with("HTTP/1.1 422"),
            "{}",
            &answer[..answer.len().min(300)]
        );
        assert!(answer.contains("payload_too_large"), "{answer}");

        // And on the other routes that take a body.
        let url = format!("/api/v1/recordings/{}", a_recording(&client).await);
        for (method, path) in [
            (Method::PATCH, url.clone()),
            (Method::PUT, format!("{url}/tracklist")),
            (Method::PUT, format!("{url}/metadata/k")),
        ] {
            let a = client
                .send(
                    method.clone(),
                    &path,
                    Auth::Bearer(TOKEN),
                    Some(over.clone()),
                )
                .await;
            assert_eq!(a.status, 422, "{method} {path}: {}", a.text);
            assert_eq!(a.code(), "payload_too_large");
        }
        let mut after = counts(&admin).await;
        // The one recording made for the routes above, with its event.
        after[0] -= 1;
        after[3] -= 1;
        assert_eq!(after, before, "a refused body wrote something");
    });
}

/// A body that stops arriving: 408 `request_timeout` about 10 s after the head, the
/// connection closed, nothing written; meanwhile other requests are served.
#[test]
fn a_body_that_stops_arriving_is_408() {
    let (pg, _daemon, client) = stack(&[]);
    block_on(async {
        let admin = pg.admin().await;
        let before = counts(&admin).await;
        let port = client.port();
        let started = std::time::Instant::now();
        let answer = tokio::task::spawn_blocking(move || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(20)))
                .expect("read timeout");
            write!(
                s,
                "POST /api/v1/recordings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"file_path\""
            )
            .expect("request head");
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            String::from_utf8_lossy(&out).into_owned()
        });
        // Served meanwhile.
        let a = client.call(Method::GET, "/api/v1/recordings", None).await;
        assert_eq!(a.status, 200, "{}", a.text);
        let answer = answer.await.expect("the slow client");
        let took = started.elapsed();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("request_timeout"), "{answer}");
        assert!(
            took >= Duration::from_secs(9) && took < Duration::from_secs(19),
            "{took:?}"
        );
        assert_eq!(counts(&admin).await, before);
    });
}

async fn a_recording(client: &crate::client::Client) -> String {
    let a = client
        .call(
            Method::POST,
            "/api/v1/recordings",
            Some(json!({"file_path": "/r.flac", "file_name": "r.flac"})),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    a.body["data"]["id"].as_str().expect("an id").to_owned()
}

/// POSTs `body` with `Transfer-Encoding: chunked` in 64 KiB chunks, stopping early if the
/// server answers or closes; returns what the server sent.
fn chunked_post(port: u16, path: &str, body: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .expect("request head");
    for chunk in body.chunks(64 * 1024) {
        let sent = write!(s, "{:x}\r\n", chunk.len())
            .and_then(|()| s.write_all(chunk))
            .and_then(|()| s.write_all(b"\r\n"));
        if sent.is_err() {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}
