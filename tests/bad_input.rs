//! Bad input, with nothing lost and no panic: malformed and slow HTTP clients against the
//! daemon process, and randomized configuration for `check-config` and `run`.

mod support;

use std::{
    ffi::OsString,
    os::unix::ffi::OsStringExt,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

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

// ---- Randomized configuration ----

/// splitmix64: small, deterministic, and enough to spread cases; a failing case is replayed
/// from the seed its message prints.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }
}

/// What a key holds, for picking a value of the right (or a wrong) type.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Duration,
    Int,
    Float,
    Bool,
    Str,
    Addr,
    Level,
    Format,
    NeoUri,
    PgUrl,
    Path,
    Secret,
}

/// Every key of the configuration (README, "Configuration").
const KEYS: &[(&str, Kind)] = &[
    ("shutdown_timeout", Kind::Duration),
    ("http.bind", Kind::Addr),
    ("http.workers", Kind::Int),
    ("log.format", Kind::Format),
    ("log.level", Kind::Level),
    ("neo4j.uri", Kind::NeoUri),
    ("neo4j.user", Kind::Str),
    ("neo4j.password", Kind::Secret),
    ("neo4j.password_file", Kind::Path),
    ("neo4j.database", Kind::Str),
    ("neo4j.max_connections", Kind::Int),
    ("neo4j.io_threads", Kind::Int),
    ("neo4j.connect_timeout", Kind::Duration),
    ("neo4j.query_timeout", Kind::Duration),
    ("neo4j.probe_interval", Kind::Duration),
    ("neo4j.probe_timeout", Kind::Duration),
    ("postgres.url", Kind::PgUrl),
    ("postgres.password", Kind::Secret),
    ("postgres.password_file", Kind::Path),
    ("postgres.schema", Kind::Str),
    ("postgres.max_connections", Kind::Int),
    ("postgres.min_connections", Kind::Int),
    ("postgres.io_threads", Kind::Int),
    ("postgres.connect_timeout", Kind::Duration),
    ("postgres.statement_timeout", Kind::Duration),
    ("postgres.query_timeout", Kind::Duration),
    ("postgres.probe_interval", Kind::Duration),
    ("postgres.probe_timeout", Kind::Duration),
    ("postgres.application_name", Kind::Str),
    ("postgres.run_migrations", Kind::Bool),
    ("backoff.initial", Kind::Duration),
    ("backoff.max", Kind::Duration),
    ("backoff.multiplier", Kind::Float),
    ("backoff.jitter", Kind::Float),
    ("retry.max_attempts", Kind::Int),
    ("retry.initial", Kind::Duration),
    ("retry.max", Kind::Duration),
    ("breaker.failure_threshold", Kind::Int),
    ("breaker.cooldown", Kind::Duration),
];

/// The seed variables and the kind of value each takes.
const SEED_VARS: &[(&str, Kind)] = &[
    ("NEO4J_URI", Kind::NeoUri),
    ("NEO4J_USER", Kind::Str),
    ("NEO4J_PASSWORD", Kind::Secret),
    ("NEO4J_PASSWORD_FILE", Kind::Path),
    ("NEO4J_DATABASE", Kind::Str),
    ("DATABASE_URL", Kind::PgUrl),
    ("POSTGRES_SCHEMA", Kind::Str),
];

/// A value as TOML writes it and as an environment variable holds it.
struct Value {
    toml: String,
    env: String,
}

impl Value {
    /// A string: quoted in TOML.
    fn text(s: impl Into<String>) -> Self {
        let s = s.into();
        Self {
            toml: toml::Value::String(s.clone()).to_string(),
            env: s,
        }
    }

    /// A bare TOML literal (number, bool, array, ...), the same text in the environment.
    fn bare(s: &str) -> Self {
        Self {
            toml: s.to_owned(),
            env: s.to_owned(),
        }
    }
}

/// One generated case: its files live in `dir`, and `secret` must never be printed.
struct Case {
    seed: u64,
    index: usize,
    dir: tempfile::TempDir,
    /// The file's bytes (not always UTF-8, not always TOML); `None`: no `--config`.
    file: Option<Vec<u8>>,
    env: Vec<(String, OsString)>,
    secret: String,
}

impl Case {
    fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("warden.toml")
    }

    /// What it is, for a failure message.
    fn describe(&self) -> String {
        let file = match &self.file {
            Some(bytes) => {
                let text = String::from_utf8_lossy(bytes);
                let mut shown: String = text.chars().take(2_000).collect();
                if shown.len() < text.len() {
                    shown.push_str(&format!("... ({} bytes)", bytes.len()));
                }
                shown
            }
            None => "(none)".into(),
        };
        let env: Vec<String> = self
            .env
            .iter()
            .map(|(k, v)| {
                let v = v.to_string_lossy();
                let shown: String = v.chars().take(200).collect();
                format!(
                    "{k}={shown:?}{}",
                    if shown.len() < v.len() { "..." } else { "" }
                )
            })
            .collect();
        format!(
            "case {} of seed {} (replay with WARDEN_FUZZ_SEED={}):\n--- file ---\n{file}\n--- env ---\n{}",
            self.index,
            self.seed,
            self.seed,
            env.join("\n")
        )
    }
}

/// A value for `kind`: mostly wrong in one of the ways an operator or a template can get it
/// wrong, sometimes right.
fn value(rng: &mut Rng, kind: Kind, case: &Case) -> Value {
    let secret = &case.secret;
    if kind == Kind::Secret {
        // Secrets stay strings, so that any place they show up is a leak, not a quote of
        // another key's value.
        return Value::text(secret.clone());
    }
    match rng.below(10) {
        // Right for the kind (or nearly).
        0..=2 => match kind {
            Kind::Duration => Value::text(*rng.pick(&[
                "5s", "250ms", "1m 30s", "2h", "1day", "0s", "1ns", "24h", "1.5s", "3 days",
            ])),
            Kind::Int => {
                Value::bare(rng.pick::<&str>(&["0", "1", "2", "3", "7", "64", "65", "1000"]))
            }
            Kind::Float => {
                Value::bare(rng.pick::<&str>(&["0.0", "0.5", "1.0", "2", "1.5", "3e2", "1"]))
            }
            Kind::Bool => Value::bare(rng.pick::<&str>(&["true", "false"])),
            Kind::Str => Value::text(*rng.pick(&["neo4j", "app", "walltrack", "warden", "_x1"])),
            Kind::Addr => Value::text(*rng.pick(&[
                "127.0.0.1:0",
                "127.0.0.1:8080",
                "[::1]:8080",
                "0.0.0.0:1",
                "localhost:80",
                "127.0.0.1:65536",
                "127.0.0.1",
            ])),
            Kind::Level => Value::text(*rng.pick(&[
                "info",
                "debug",
                "warden=debug,sqlx=warn",
                "off",
                "trace",
                "warden=[",
                "=",
                ",,,",
                "warden[span{field=1}]=debug",
                "actix_http=debug",
            ])),
            Kind::Format => Value::text(*rng.pick(&["json", "pretty", "xml", "JSON"])),
            Kind::NeoUri => Value::text(match rng.below(7) {
                0 => "bolt://127.0.0.1:7687".to_owned(),
                1 => "neo4j://db.internal:7687".to_owned(),
                2 => "bolt+s://h:1".to_owned(),
                3 => "http://h:7687".to_owned(),
                4 => "bolt://".to_owned(),
                5 => format!("bolt://neo4j:{secret}@h:7687"),
                _ => "bolt://[::1:7687".to_owned(),
            }),
            Kind::PgUrl => Value::text(match rng.below(8) {
                0 => "postgres://app@127.0.0.1:5432/app".to_owned(),
                1 => "postgresql://h/db?sslmode=require".to_owned(),
                2 => format!("postgres://app:{secret}@h/db"),
                3 => format!("postgres://app:{secret}@h/db?statement_timeout=5"),
                4 => format!("mysql://app:{secret}@h/db"),
                5 => format!("postgres://app:{secret}@[::1/db"),
                6 => "postgres:///nohost".to_owned(),
                _ => format!("postgres://app:{}@h:99999/db", secret.replace(' ', "%20")),
            }),
            Kind::Path => {
                let dir = case.dir.path();
                Value::text(match rng.below(6) {
                    0 => dir.join("secret").display().to_string(),
                    1 => dir.join("not-utf8").display().to_string(),
                    2 => dir.join("empty").display().to_string(),
                    3 => dir.display().to_string(),
                    4 => "/nonexistent/password".to_owned(),
                    _ => String::new(),
                })
            }
            Kind::Secret => unreachable!(),
        },
        // The wrong type.
        3 => Value::bare(rng.pick::<&str>(&[
            "true",
            "[1, 2]",
            "[]",
            "{ a = 1 }",
            "{}",
            "1979-05-27T07:32:00Z",
            "07:32:00",
            "3.5",
            "\"text\"",
            "42",
            "[[1], [\"a\"]]",
        ])),
        // Huge numbers, and floats that are not numbers.
        4 => Value::bare(rng.pick::<&str>(&[
            "18446744073709551616",
            "99999999999999999999999999",
            "9223372036854775807",
            "4294967296",
            "1e308",
            "1e999",
            "inf",
            "-inf",
            "nan",
            "0x7fffffff",
            "0b1",
            "1_000",
        ])),
        // Negative numbers.
        5 => Value::bare(rng.pick::<&str>(&[
            "-1",
            "-9223372036854775808",
            "-0",
            "-1.5",
            "-0.0",
            "-inf",
        ])),
        // Strings that are empty, unicode, control characters or very long.
        6 => match rng.below(4) {
            0 => Value::text(""),
            1 => Value::text(*rng.pick(&[
                "ünïcødé",
                "日本語",
                "\u{202e}evil",
                "🦀",
                "\u{feff}",
                "a\u{301}",
                "\u{10ffff}",
                "Ω≈ç√",
            ])),
            2 => Value::text(*rng.pick(&["\t", "\r\n", "a\u{7}b", "\u{1b}[31mred", " "])),
            _ => {
                let len = 1 + rng.below(100_000);
                Value::text(rng.pick(&["x", "é", "9", "s"]).repeat(len))
            }
        },
        // Durations that do not parse, or parse to something absurd.
        _ => Value::text(*rng.pick(&[
            "5",
            "5 parsecs",
            "1.5.5s",
            "s",
            "ms",
            "-5s",
            "5s-",
            "1e3s",
            "0x10s",
            "18446744073709551616s",
            "18446744073709551615s",
            "584942417355years",
            "584942417354years",
            "99999999999999999999ns",
            "1000000000years",
            "25h",
            "1day 1ns",
            "5 s",
            "NaNs",
            "infs",
        ])),
    }
}

/// A TOML file of `keys` values, maybe with unknown keys, duplicated tables, arrays of tables
/// and dotted keys; sometimes broken on purpose.
fn toml_file(rng: &mut Rng, case: &Case) -> Vec<u8> {
    match rng.below(40) {
        0 => return Vec::new(),
        1 => return (0..rng.below(4096)).map(|_| rng.next() as u8).collect(),
        2 => return format!("a = {}", "[".repeat(1 + rng.below(10_000))).into_bytes(),
        3 => return format!("{}x = 1", "[a.".repeat(1 + rng.below(2_000))).into_bytes(),
        _ => {}
    }
    let mut top = String::new();
    let mut sections: Vec<(String, String)> = Vec::new();
    for _ in 0..rng.below(14) {
        let (key, kind) = *rng.pick(KEYS);
        let v = value(rng, kind, case).toml;
        match key.split_once('.') {
            None => top.push_str(&format!("{key} = {v}\n")),
            Some((section, field)) => {
                if rng.percent(10) {
                    // A dotted key at the top level.
                    top.push_str(&format!("{key} = {v}\n"));
                } else {
                    sections.push((section.to_owned(), format!("{field} = {v}\n")));
                }
            }
        }
    }
    if rng.percent(15) {
        let junk = Value::text("junk").toml;
        match rng.below(4) {
            0 => top.push_str(&format!("nope = {junk}\n")),
            1 => sections.push(("http".into(), format!("bnid = {junk}\n"))),
            2 => sections.push(("[nope".into(), "x = 1\n".into())),
            _ => sections.push(("metrics".into(), "enabled = true\n".into())),
        }
    }
    let mut text = top;
    // Keys of one section together, unless the table is to be duplicated.
    let duplicate = rng.percent(10);
    if !duplicate {
        sections.sort_by(|a, b| a.0.cmp(&b.0));
    }
    let mut last = None;
    for (section, line) in &sections {
        if last != Some(section) {
            let header = if rng.percent(5) {
                format!("[[{section}]]")
            } else {
                format!("[{section}]")
            };
            text.push_str(&format!("{header}\n"));
            last = Some(section);
        }
        text.push_str(line);
    }
    let mut bytes = text.into_bytes();
    if rng.percent(25) && !bytes.is_empty() {
        // Broken syntax. Never a triple quote: a multi-line string could carry the secret
        // into another key's value, which check-config then rightly prints.
        let at = rng.below(bytes.len());
        match rng.below(4) {
            0 => {
                bytes.remove(at);
            }
            1 => bytes.truncate(at),
            2 => {
                let token = *rng.pick(&["[", "]", "=", "\"", "'", "\n[", "{", "\\", "\n=", "#"]);
                bytes.splice(at..at, token.bytes());
            }
            _ => {
                bytes.splice(at..at, [0xff, 0xfe, 0x00]);
            }
        }
    }
    bytes
}

/// An environment: PATH, JSON logs, then a few variables the configuration reads, some of them
/// malformed.
fn environment(rng: &mut Rng, case: &Case) -> Vec<(String, OsString)> {
    let mut env: Vec<(String, OsString)> = Vec::new();
    for _ in 0..rng.below(5) {
        let (name, v) = match rng.below(10) {
            0..=3 => {
                let (key, kind) = *rng.pick(KEYS);
                let name = format!("WARDEN__{}", key.replace('.', "__").to_uppercase());
                (name, value(rng, kind, case).env)
            }
            4..=6 => {
                let (name, kind) = *rng.pick(SEED_VARS);
                (name.to_owned(), value(rng, kind, case).env)
            }
            7 => {
                let name = *rng.pick(&[
                    "WARDEN__",
                    "WARDEN____",
                    "WARDEN__HTTP",
                    "WARDEN__HTTP__BIND__PORT",
                    "WARDEN__NOPE__X",
                    "warden__http__workers",
                    "WARDEN_HTTP_WORKERS",
                    "WARDEN__HTTP____WORKERS",
                    "WARDEN__LOG__LEVEL__",
                ]);
                (name.to_owned(), value(rng, Kind::Int, case).env)
            }
            8 => {
                // Bytes that are not UTF-8, in a variable warden reads or one it does not.
                let name = *rng.pick(&[
                    "WARDEN__LOG__LEVEL",
                    "DATABASE_URL",
                    "NEO4J_PASSWORD",
                    "LANG",
                    "RUST_LOG",
                ]);
                env.push((
                    name.to_owned(),
                    OsString::from_vec(vec![b'a', 0xff, 0xfe, b'z']),
                ));
                continue;
            }
            _ => ("RUST_LOG".to_owned(), value(rng, Kind::Level, case).env),
        };
        // An environment variable cannot hold a NUL, nor more than 128 KB (Linux's
        // MAX_ARG_STRLEN).
        let v: String = v.replace('\0', "").chars().take(30_000).collect();
        env.push((name, OsString::from(v)));
    }
    env
}

/// Generates case `index` of `seed` and writes its files.
fn generate(seed: u64, index: usize) -> Case {
    let mut rng = Rng(seed ^ (index as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut case = Case {
        seed,
        index,
        dir: tempfile::tempdir().expect("temp dir"),
        file: None,
        env: Vec::new(),
        secret: format!("s3cret!{:08x} x", rng.next() as u32),
    };
    let dir = case.dir.path();
    std::fs::write(dir.join("secret"), format!("{}\n", case.secret)).expect("write a secret file");
    std::fs::write(dir.join("not-utf8"), [0xff, 0xfe, b'p', b'w']).expect("write a case file");
    std::fs::write(dir.join("empty"), b"").expect("write a case file");
    if rng.percent(80) {
        let file = toml_file(&mut rng, &case);
        std::fs::write(case.config_path(), &file).expect("write a case file");
        case.file = Some(file);
    }
    case.env = environment(&mut rng, &case);
    case
}

/// How a process ended: its exit code (`None`: killed by a signal), stdout and stderr.
struct Ended {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `warden ARGS` for `case` (with `extra` variables last, so they win), killing it after
/// `within`; `None` if it had to be killed.
fn run_case(
    case: &Case,
    args: &[&str],
    extra: &[(&str, String)],
    within: Duration,
) -> Option<Ended> {
    let out = case.dir.path().join(format!("{}.stdout", args.join("-")));
    let err = case.dir.path().join(format!("{}.stderr", args.join("-")));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
    if case.file.is_some() {
        cmd.arg("--config").arg(case.config_path());
    }
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("WARDEN__LOG__FORMAT", "json")
        .stdin(Stdio::null())
        // Files, not pipes: a long value echoed in an error must not fill a pipe and stall.
        .stdout(std::fs::File::create(&out).expect("create an output file"))
        .stderr(std::fs::File::create(&err).expect("create an output file"));
    for (k, v) in &case.env {
        cmd.env(k, v);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn warden");
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    status.map(|s| Ended {
        code: s.code(),
        stdout: read(&out),
        stderr: read(&err),
    })
}

/// Asserts what holds for every run: exit 0 or 78 (or `also`), no panic, no secret.
fn assert_sane(case: &Case, what: &str, ended: &Ended, also: &[i32]) {
    let ok =
        matches!(ended.code, Some(0) | Some(78)) || ended.code.is_some_and(|c| also.contains(&c));
    let excerpt = |s: &str| s.chars().take(3_000).collect::<String>();
    assert!(
        ok,
        "{what}: exit {:?}\n--- stderr ---\n{}\n{}",
        ended.code,
        excerpt(&ended.stderr),
        case.describe()
    );
    for marker in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        assert!(
            !ended.stderr.contains(marker),
            "{what}: a panic\n--- stderr ---\n{}\n{}",
            excerpt(&ended.stderr),
            case.describe()
        );
    }
    assert!(
        !ended.stdout.contains(&case.secret) && !ended.stderr.contains(&case.secret),
        "{what}: the secret {:?} was printed\n--- stdout ---\n{}\n--- stderr ---\n{}\n{}",
        case.secret,
        excerpt(&ended.stdout),
        excerpt(&ended.stderr),
        case.describe()
    );
}

/// How many configurations `check-config` gets, and from which seed; `WARDEN_FUZZ_SEED` and
/// `WARDEN_FUZZ_CASES` explore others. The default seed is fixed so that a run is repeatable.
fn fuzz_plan() -> (u64, usize) {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
    (
        var("WARDEN_FUZZ_SEED").unwrap_or(0x5eed_0008),
        var("WARDEN_FUZZ_CASES").map_or(400, |n: u64| n as usize),
    )
}

/// Randomized configuration files and environments: `check-config` always exits 0 or 78,
/// never panics and never prints a secret; a configuration it accepts is printed as one it
/// accepts again, unchanged. A sample of the rejected ones exits 78 from `run` too, at once;
/// a sample of the accepted ones runs (databases pointed at closed loopback ports), serves
/// health and stops with 0 on SIGTERM. It shows no semantic check beyond those.
#[test]
fn randomized_configuration_exits_0_or_78_and_never_panics() {
    let (seed, cases) = fuzz_plan();
    println!("configuration fuzz: seed {seed}, {cases} cases (WARDEN_FUZZ_SEED to replay)");
    let started = Instant::now();
    let threads = 4;
    let results: Vec<(Case, Ended)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut done = Vec::new();
                    for index in (t..cases).step_by(threads) {
                        let case = generate(seed, index);
                        let ended =
                            run_case(&case, &["check-config"], &[], Duration::from_secs(10))
                                .unwrap_or_else(|| {
                                    panic!("check-config hung\n{}", case.describe())
                                });
                        assert_sane(&case, "check-config", &ended, &[]);
                        if ended.code == Some(0) {
                            // What it prints is a configuration it accepts, and prints again
                            // unchanged.
                            let again = Case {
                                seed,
                                index,
                                dir: tempfile::tempdir().unwrap(),
                                file: Some(ended.stdout.clone().into_bytes()),
                                env: Vec::new(),
                                secret: case.secret.clone(),
                            };
                            std::fs::write(again.config_path(), &ended.stdout)
                                .expect("write a case file");
                            let reprinted =
                                run_case(&again, &["check-config"], &[], Duration::from_secs(10))
                                    .expect("check-config of its own output hung");
                            assert_eq!(
                                (reprinted.code, &reprinted.stdout),
                                (Some(0), &ended.stdout),
                                "its own output, checked again: {}\n{}",
                                reprinted.stderr,
                                case.describe()
                            );
                        }
                        done.push((case, ended));
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect()
    });
    let accepted: Vec<&(Case, Ended)> = results.iter().filter(|(_, e)| e.code == Some(0)).collect();
    let rejected: Vec<&(Case, Ended)> =
        results.iter().filter(|(_, e)| e.code == Some(78)).collect();
    println!(
        "check-config: {} accepted, {} rejected in {:?}",
        accepted.len(),
        rejected.len(),
        started.elapsed()
    );
    // A generator that only ever produced one outcome would test little.
    assert!(
        accepted.len() >= cases / 20,
        "only {} accepted",
        accepted.len()
    );
    assert!(
        rejected.len() >= cases / 2,
        "only {} rejected",
        rejected.len()
    );

    // `run` with a rejected configuration: 78 before anything starts.
    let run_started = Instant::now();
    let sample: Vec<_> = rejected
        .iter()
        .step_by(rejected.len().div_ceil(12).max(1))
        .collect();
    std::thread::scope(|s| {
        for chunk in sample.chunks(3) {
            s.spawn(move || {
                for (case, _) in chunk {
                    let ended = run_case(case, &["run"], &[], Duration::from_secs(10))
                        .unwrap_or_else(|| {
                            panic!("run with a bad configuration hung\n{}", case.describe())
                        });
                    assert_eq!(
                        ended.code,
                        Some(78),
                        "{}\n{}",
                        ended.stderr,
                        case.describe()
                    );
                    assert_sane(case, "run", &ended, &[]);
                }
            });
        }
    });
    println!("run, rejected sample: {:?}", run_started.elapsed());

    // `run` with an accepted configuration, kept on loopback: serves health, stops with 0.
    let run_started = Instant::now();
    std::thread::scope(|s| {
        for (case, _) in accepted.iter().step_by(accepted.len().div_ceil(6).max(1)) {
            s.spawn(move || run_accepted(case));
        }
    });
    println!("run, accepted sample: {:?}", run_started.elapsed());
}

/// Runs an accepted configuration with the databases on closed loopback ports and HTTP on a
/// free one: health answers within 10 s, and SIGTERM stops it with 0.
fn run_accepted(case: &Case) {
    let port = support::free_listen_port();
    let extra = [
        ("WARDEN__HTTP__BIND", format!("127.0.0.1:{port}")),
        ("WARDEN__NEO4J__URI", format!("bolt://{}", nowhere())),
        (
            "WARDEN__POSTGRES__URL",
            format!("postgres://postgres@{}/postgres", nowhere()),
        ),
        ("WARDEN__SHUTDOWN_TIMEOUT", "2s".to_owned()),
    ];
    let err = case.dir.path().join("run.stderr");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
    if case.file.is_some() {
        cmd.arg("--config").arg(case.config_path());
    }
    cmd.arg("run")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("WARDEN__LOG__FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).expect("create an output file"));
    for (k, v) in &case.env {
        cmd.env(k, v);
    }
    for (k, v) in &extra {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn warden");
    let logs = || String::from_utf8_lossy(&std::fs::read(&err).unwrap_or_default()).into_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!(
                "run exited with {status} before serving\n{}\n{}",
                logs(),
                case.describe()
            );
        }
        let health = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            use std::io::{Read, Write};
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
            let mut got = Vec::new();
            s.read_to_end(&mut got)?;
            Ok(got)
        });
        if health.is_ok_and(|got| status_of(&got) == Some(200)) {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "run did not serve health within 10 s\n{}\n{}",
                logs(),
                case.describe()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(6);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "run did not stop within 6 s of SIGTERM\n{}\n{}",
                logs(),
                case.describe()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let ended = Ended {
        code: status.code(),
        stdout: String::new(),
        stderr: logs(),
    };
    assert_eq!(ended.code, Some(0), "{}\n{}", ended.stderr, case.describe());
    assert_sane(case, "run (accepted)", &ended, &[]);
}
