//! Bad input, with nothing lost and no panic: malformed and slow HTTP clients against the
//! daemon process.

mod support;

use std::time::{Duration, Instant};

use support::daemon::Daemon;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

fn nowhere() -> String {
    format!("127.0.0.1:{}", support::free_port())
}

/// Both databases refuse connections: these tests are about the HTTP and configuration edges.
fn databases_down() -> Vec<(&'static str, String)> {
    vec![
        ("NEO4J_URI", format!("bolt://{}", nowhere())),
        (
            "DATABASE_URL",
            format!("postgres://postgres@{}/postgres", nowhere()),
        ),
        ("WARDEN__SHUTDOWN_TIMEOUT", "2s".into()),
    ]
}

/// How a raw exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// The status line of the server's answer.
    Status(u16),
    /// Closed or reset without an answer.
    Closed,
}

/// The status of the first response in `bytes`, if it has a status line.
fn status_of(bytes: &[u8]) -> Option<u16> {
    let rest = bytes.strip_prefix(b"HTTP/1.1 ")?;
    std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()
}

/// Sends `request` on a new connection and reads until the server closes it. Writing and
/// reading run together: the server may answer and close before the request is all sent.
/// Once the request is sent, the write side is shut, so a server that keeps the connection
/// alive after answering closes it too.
async fn exchange(port: u16, request: Vec<u8>) -> Answer {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to warden");
    let (mut rd, mut wr) = stream.into_split();
    let write = async move {
        if wr.write_all(&request).await.is_ok() {
            let _ = wr.shutdown().await;
        }
    };
    let read = async move {
        let mut got = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        // Bounded: an answer to a health request is a few hundred bytes.
        while got.len() < 1 << 20 {
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
        got
    };
    let (_, got) =
        tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(write, read) })
            .await
            .expect("warden neither answered nor closed within 10 s");
    status_of(&got).map_or(Answer::Closed, Answer::Status)
}

/// The daemon's ERROR lines and panic messages, if any.
fn errors_and_panics(logs: &str) -> Vec<&str> {
    logs.lines()
        .filter(|l| l.contains(r#""level":"ERROR""#) || l.contains("panicked"))
        .collect()
}

/// Malformed requests (a 64 KB path, 1,000 headers, bytes that are not UTF-8 in the path and
/// the headers, 10 MB bodies, smuggling-shaped lengths, bytes that are not HTTP) each get a
/// 4xx, or the answer HTTP allows, never a 5xx; the daemon keeps serving, and its log has no
/// ERROR line for them. It does not show what happens with HTTP/2 (not enabled) or TLS (none).
#[test]
fn malformed_requests_get_4xx_and_no_error_log() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let d = Daemon::spawn(&[], &databases_down());
        support::eventually(Duration::from_secs(10), "health served", || d.get("/health")).await;
        let head = |lines: &str| format!("{lines}Host: 127.0.0.1\r\n\r\n").into_bytes();
        let ten_mb = 10 << 20;
        let mut chunked = b"POST /health/detailed HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..10 {
            chunked.extend_from_slice(b"100000\r\n");
            chunked.resize(chunked.len() + (1 << 20), b'x');
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let mut thousand_headers = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n".to_vec();
        for i in 0..1000 {
            thousand_headers.extend_from_slice(format!("X-Header-{i}: value\r\n").as_bytes());
        }
        thousand_headers.extend_from_slice(b"\r\n");
        let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
            (
                "a 64 KB path",
                head(&format!("GET /{} HTTP/1.1\r\n", "a".repeat(64 * 1024))),
                &[400, 414, 431],
            ),
            ("1,000 headers", thousand_headers, &[431, 400]),
            (
                "a 64 KB header value",
                head(&format!(
                    "GET /health HTTP/1.1\r\nX-Big: {}\r\n",
                    "v".repeat(64 * 1024)
                )),
                // Within actix-web's 128 KB limit on a request head: a normal answer.
                &[200, 431, 400],
            ),
            (
                "a 200 KB header value",
                head(&format!(
                    "GET /health HTTP/1.1\r\nX-Big: {}\r\n",
                    "v".repeat(200 * 1024)
                )),
                &[431, 400],
            ),
            (
                "bytes that are not UTF-8 in the path",
                [b"GET /health/\xff\xfe\xc0\xaf HTTP/1.1\r\n".as_slice(), b"Host: 127.0.0.1\r\n\r\n"].concat(),
                &[400, 404],
            ),
            (
                "percent-encoded bytes that are not UTF-8 in the path",
                head("GET /%ff%fe%c0%af HTTP/1.1\r\n"),
                &[404, 400],
            ),
            (
                // Bytes over 0x7f are obs-text, which HTTP allows in a value: a normal answer.
                "bytes that are not UTF-8 in a header value",
                [b"GET /health HTTP/1.1\r\nX-Bad: \xff\xfe\xc0\xaf\r\n".as_slice(), b"Host: 127.0.0.1\r\n\r\n"].concat(),
                &[200, 400],
            ),
            (
                "bytes that are not UTF-8 in a header name",
                [b"GET /health HTTP/1.1\r\nX-\xff\xfe: v\r\n".as_slice(), b"Host: 127.0.0.1\r\n\r\n"].concat(),
                &[400],
            ),
            (
                "a 10 MB POST to /health",
                [head(&format!("POST /health HTTP/1.1\r\nContent-Length: {ten_mb}\r\n")), vec![b'x'; ten_mb]].concat(),
                &[405, 413],
            ),
            ("a 10 MB chunked POST", chunked, &[405, 413]),
            (
                "a 10 MB body on a GET",
                [head(&format!("GET /health/detailed HTTP/1.1\r\nContent-Length: {ten_mb}\r\n")), vec![b'x'; ten_mb]].concat(),
                &[200, 400, 413],
            ),
            (
                "a Content-Length that is not a number",
                head("POST /health HTTP/1.1\r\nContent-Length: lots\r\n"),
                &[400],
            ),
            (
                "two different Content-Lengths",
                head("POST /health HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n"),
                &[400],
            ),
            (
                "both Content-Length and chunked",
                head("POST /health HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n"),
                &[400],
            ),
            ("bytes that are not HTTP", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(), &[400]),
            ("a request line without a version", head("GET /health\r\n"), &[400]),
            ("an unknown HTTP version", head("GET /health HTTP/7.3\r\n"), &[400, 505]),
            ("a NUL in the path", head("GET /hea\0lth HTTP/1.1\r\n"), &[400]),
        ];
        let mut answers = Vec::new();
        for (what, request, allowed) in cases {
            let started = Instant::now();
            let answer = exchange(d.http_port, request).await;
            answers.push(format!("{what}: {answer:?} in {:?}", started.elapsed()));
            assert!(
                matches!(answer, Answer::Status(s) if allowed.contains(&s)),
                "{what}: {answer:?}, expected one of {allowed:?}\n{}",
                d.logs()
            );
        }
        println!("{}", answers.join("\n"));

        let (status, body) = d.get("/health/detailed").await.expect("health still answers");
        assert_eq!(status, 200, "{body}");
        let logs = d.logs();
        let bad = errors_and_panics(&logs);
        assert!(bad.is_empty(), "a client's bad request logged as an error:\n{}", bad.join("\n"));
    });
}

/// A request that never finishes: what each slow client sends, a byte a second.
const SLOW_REQUEST: &[u8] = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow\r\n\r\n";

/// Slow clients: how many, and how long each may dribble before the test calls it held open.
const SLOW_CLIENTS: usize = 500;
const SLOW_LIMIT: Duration = Duration::from_secs(10);

/// One slow client, already connected at `started`: sends a byte a second until warden
/// answers or closes. Returns how it ended and after how long, or `None` if still open at
/// [`SLOW_LIMIT`].
async fn dribble(mut stream: TcpStream, started: Instant) -> Option<(Answer, Duration)> {
    let mut got = [0u8; 512];
    for byte in SLOW_REQUEST.iter() {
        if started.elapsed() >= SLOW_LIMIT {
            return None;
        }
        if stream.write_all(&[*byte]).await.is_err() {
            return Some((Answer::Closed, started.elapsed()));
        }
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut got)).await {
            Err(_) => continue,
            Ok(Ok(0)) | Ok(Err(_)) => return Some((Answer::Closed, started.elapsed())),
            Ok(Ok(n)) => {
                let answer = status_of(&got[..n]).map_or(Answer::Closed, Answer::Status);
                return Some((answer, started.elapsed()));
            }
        }
    }
    None
}

/// 500 clients that each send a byte a second: another client's `/health/detailed` (a new
/// connection each time) still answers in under 100 ms throughout, and warden cuts every slow
/// client off with a 408 after its 5 s request timeout rather than holding the connection.
/// It does not show the limit: more connections than file descriptors is a different failure.
#[test]
fn slow_clients_never_slow_health() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let d = Daemon::spawn(&[], &databases_down());
        support::eventually(Duration::from_secs(10), "health served", || d.get("/health")).await;
        let port = d.http_port;
        // A poller with no connection reuse: each poll connects anew, as a load balancer's
        // health check does, so accept is measured too.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        // Connected first, so that the polls measure warden while they dribble, not this
        // test's own single thread opening 500 connections at once.
        let mut slow = Vec::with_capacity(SLOW_CLIENTS);
        for _ in 0..SLOW_CLIENTS {
            let stream = TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect a slow client");
            slow.push(tokio::spawn(dribble(stream, Instant::now())));
        }
        let all_done = || slow.iter().all(|t| t.is_finished());

        let url = format!("http://127.0.0.1:{port}/health/detailed");
        let mut latencies = Vec::new();
        let begun = Instant::now();
        let deadline = begun + SLOW_LIMIT + Duration::from_secs(2);
        while !all_done() && Instant::now() < deadline {
            let started = Instant::now();
            let resp = client.get(&url).send().await.expect("health answers");
            assert_eq!(resp.status().as_u16(), 200);
            resp.bytes().await.expect("health body");
            latencies.push((started.elapsed(), started - begun));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let mut ends = Vec::new();
        for task in slow {
            ends.push(task.await.expect("slow client task"));
        }
        let held: usize = ends.iter().filter(|e| e.is_none()).count();
        assert_eq!(held, 0, "{held} slow clients still open after {SLOW_LIMIT:?}");
        let ends: Vec<(Answer, Duration)> = ends.into_iter().flatten().collect();
        let timed_out = ends.iter().filter(|(a, _)| *a == Answer::Status(408)).count();
        let other: Vec<_> = ends
            .iter()
            .filter(|(a, _)| !matches!(a, Answer::Status(408) | Answer::Closed))
            .collect();
        assert!(other.is_empty(), "slow clients answered otherwise: {other:?}");
        let cut_after = ends.iter().map(|(_, t)| *t).max().unwrap_or_default();
        let first_cut = ends.iter().map(|(_, t)| *t).min().unwrap_or_default();

        latencies.sort();
        let slowest: Vec<_> = latencies.iter().rev().take(3).collect();
        let max = latencies.last().expect("polled").0;
        let median = latencies[latencies.len() / 2].0;
        println!(
            "{} polls of /health/detailed during {SLOW_CLIENTS} slow clients: median {median:?}, \
             max {max:?} (slowest 3, with when they started: {slowest:?}); slow clients cut after {first_cut:?} to {cut_after:?}, {timed_out} with 408",
            latencies.len()
        );
        assert!(latencies.len() >= 20, "only {} polls", latencies.len());
        assert!(
            max < Duration::from_millis(100),
            "slowest health answer {max:?} (median {median:?})"
        );
        assert_eq!(timed_out + ends.iter().filter(|(a, _)| *a == Answer::Closed).count(), SLOW_CLIENTS);

        let (status, _) = d.get("/health").await.expect("health still answers");
        assert_eq!(status, 200);
        let logs = d.logs();
        let bad = errors_and_panics(&logs);
        assert!(bad.is_empty(), "slow clients logged as errors:\n{}", bad.join("\n"));
    });
}
