//! A small HTTP client for the API tests: every answer as (status, headers, JSON body).

use std::time::Duration;

use reqwest::{header::HeaderMap, Method};
use serde_json::Value;

use crate::support::daemon::Daemon;

/// A token long enough for the daemon to accept.
pub const TOKEN: &str = "api-test-token-5f0c9a7d3e21b8";

/// The environment of a daemon against `pg_url` (the graph a closed port), fast timings.
pub fn env(pg_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("NEO4J_URI", crate::support::no_graph()),
        ("DATABASE_URL", pg_url.to_owned()),
        ("WARDEN__NEO4J__CONNECT_TIMEOUT", "1s".to_owned()),
        ("WARDEN__POSTGRES__CONNECT_TIMEOUT", "1s".to_owned()),
        ("WARDEN__POSTGRES__QUERY_TIMEOUT", "3s".to_owned()),
        ("WARDEN__POSTGRES__PROBE_INTERVAL", "400ms".to_owned()),
        ("WARDEN__POSTGRES__PROBE_TIMEOUT", "300ms".to_owned()),
        ("WARDEN__BACKOFF__INITIAL", "100ms".to_owned()),
        ("WARDEN__BACKOFF__MAX", "500ms".to_owned()),
        ("WARDEN__BREAKER__COOLDOWN", "1s".to_owned()),
        ("WARDEN__SHUTDOWN_TIMEOUT", "3s".to_owned()),
    ]
}

/// What the `Authorization` header carries.
#[derive(Clone, Copy, Debug)]
pub enum Auth<'a> {
    /// No header.
    None,
    /// `Bearer <token>`.
    Bearer(&'a str),
    /// The header's whole value, as given.
    Raw(&'a str),
}

/// One answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Answer {
    /// The error code of an error answer.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Requests to one daemon.
pub struct Client {
    base: String,
    port: u16,
    http: reqwest::Client,
}

impl Client {
    /// A client for `daemon`.
    pub fn new(daemon: &Daemon) -> Self {
        Self {
            base: format!("http://127.0.0.1:{}", daemon.http_port),
            port: daemon.http_port,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
        }
    }

    /// The daemon's HTTP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Sends `method path` with `auth` and an optional raw body (sent as JSON).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<Vec<u8>>,
    ) -> Answer {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        req = match auth {
            Auth::None => req,
            Auth::Bearer(t) => req.header("Authorization", format!("Bearer {t}")),
            Auth::Raw(v) => req.header("Authorization", v),
        };
        if let Some(body) = body {
            req = req.header("Content-Type", "application/json").body(body);
        }
        let resp = req.send().await.expect("the daemon answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("a body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        Answer {
            status,
            headers,
            body,
            text,
        }
    }

    /// `method path` with the test token and a JSON body.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.send(
            method,
            path,
            Auth::Bearer(TOKEN),
            body.map(|b| serde_json::to_vec(&b).expect("json")),
        )
        .await
    }

    /// Waits until `/health` answers.
    pub async fn until_up(&self) {
        let url = format!("{}/health", self.base);
        crate::support::until_status(&url, 200, Duration::from_secs(15)).await;
    }
}

/// A current-thread runtime for a test body.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// A PostgreSQL cluster, a daemon on it with [`TOKEN`], and a client; returns once the
/// catalog answers (the migrations have run).
pub fn stack(extra: &[(&'static str, String)]) -> (crate::support::pg::PgServer, Daemon, Client) {
    stack_on(crate::support::pg::PgServer::start(), extra)
}

/// [`stack`] on a given cluster.
pub fn stack_on(
    pg: crate::support::pg::PgServer,
    extra: &[(&'static str, String)],
) -> (crate::support::pg::PgServer, Daemon, Client) {
    let mut e = env(&pg.url());
    e.push(("WARDEN__HTTP__API_TOKEN", TOKEN.to_owned()));
    e.extend(extra.iter().cloned());
    let daemon = Daemon::spawn(&["run"], &e);
    let client = Client::new(&daemon);
    block_on(async {
        client.until_up().await;
        crate::support::eventually(Duration::from_secs(20), "the catalog answers", || async {
            let a = client.call(Method::GET, "/api/v1/recordings", None).await;
            (a.status == 200).then_some(())
        })
        .await;
    });
    (pg, daemon, client)
}

/// Rows in each catalog table and events in the outbox, for "nothing was written" checks.
pub async fn counts(pool: &sqlx::PgPool) -> [i64; 4] {
    let row: (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM warden.recordings), \
                (SELECT count(*) FROM warden.metadata), \
                (SELECT count(*) FROM warden.tracklists), \
                (SELECT count(*) FROM warden.graph_outbox)",
    )
    .fetch_one(pool)
    .await
    .expect("counts");
    [row.0, row.1, row.2, row.3]
}
