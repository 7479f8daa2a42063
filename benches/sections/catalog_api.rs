//! The `catalog` section: catalog create and get through the daemon's HTTP API, against the
//! same SQL run directly through sqlx in the same run (target ≥ 70 %), with the library
//! called in-process in between, so that the table shows where the rest goes.
//!
//! - **direct (ceiling)**: a sqlx pool of [`POOL`] connections on a 2-worker tokio runtime,
//!   running the statements `warden_actors::catalog` runs (copied from `catalog/write.rs`
//!   and `catalog/read.rs`: a create is one transaction of the recording, its metadata, its
//!   tracklist and its outbox event; a get is `SELECT recording_snapshot($1)`), decoding the
//!   returned JSONB.
//! - **library**: `Warden::catalog()` in this process, called from an actix System: adds
//!   warden's call path (admission, the hop to the I/O threads, the session's transaction
//!   handling) and the library's validation and typed conversion.
//! - **HTTP**: wrk (one thread) against the release daemon, a POST of the same recording or a
//!   GET of a random one of 1000 ids: adds HTTP, the token check, JSON parsing and the
//!   response envelope, and wrk itself on the same 2 cores.
//!
//! Every round runs the three paths back to back at one concurrency; medians of the rates and
//! of the per-round ratios are reported.

use std::{process::Command, time::Duration};

use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use warden_actors::{catalog::NewRecording, Database, Warden};

use crate::{
    actor_load, bench_settings, direct_load, load_row, median_load, median_ratio,
    parse_wrk_duration, ratio_text, row, support, Args, Load, Row, POOL,
};

/// The token the bench daemon is given.
const TOKEN: &str = "bench-token-7c1e5b0a9d4f3e28";

/// Concurrent clients of each path.
const LEVELS: [usize; 2] = [8, 32];

/// Recordings made before the get runs, read in a scattered order.
const GET_IDS: usize = 1000;

/// The `i`-th id to read: a stride prime to [`GET_IDS`] scatters consecutive reads over the
/// table without a random number generator.
fn pick<T: Copy>(ids: &[T], i: usize) -> T {
    ids[i.wrapping_mul(7919) % ids.len()]
}

const INSERT_RECORDING: &str =
    "INSERT INTO recordings (file_path, file_name, sha256_hash, xxh128_hash) \
     VALUES ($1, $2, $3, $4) RETURNING id";
const INSERT_METADATA: &str = "INSERT INTO metadata (recording_id, key, value) \
     SELECT $1, e.key, e.value FROM unnest($2::text[], $3::text[]) AS e(key, value)";
const PUT_TRACKLIST: &str = "INSERT INTO tracklists (recording_id, source, tracks, cue_file_path) \
     VALUES ($1, $2, $3, $4) \
     ON CONFLICT (recording_id) DO UPDATE SET source = EXCLUDED.source, \
     tracks = EXCLUDED.tracks, cue_file_path = EXCLUDED.cue_file_path";
const UPSERT_EVENT: &str = "INSERT INTO graph_outbox (recording_id, version, op, payload) \
     SELECT id, version, 'upsert', recording_snapshot(id) FROM recordings WHERE id = $1 \
     RETURNING payload";
const GET: &str = "SELECT recording_snapshot($1::uuid) AS snapshot";

/// The recording every create sends: 3 metadata entries and a 10-track tracklist, no hashes
/// (so that the same body can be sent again and again).
fn recording() -> Value {
    let tracks: Vec<Value> = (0..10)
        .map(|i| json!({"title": format!("Track {i}"), "artist": "Artist", "start_time": format!("{:02}:00", i * 5)}))
        .collect();
    json!({
        "file_path": "/sets/bench/set.flac",
        "file_name": "set.flac",
        "metadata": {"bpm": "128", "genre": "techno", "venue": "bench"},
        "tracklist": {"source": "bench", "tracks": tracks, "cue_file_path": "/sets/bench/set.cue"},
    })
}

/// A create through sqlx, the library's statements in one transaction.
async fn direct_create(pool: &sqlx::PgPool, rec: &Value) -> Result<Value, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let id: uuid::Uuid = sqlx::query_scalar(INSERT_RECORDING)
        .bind(rec["file_path"].as_str())
        .bind(rec["file_name"].as_str())
        .bind(None::<String>)
        .bind(None::<String>)
        .fetch_one(&mut *tx)
        .await?;
    let (keys, values): (Vec<&str>, Vec<&str>) = rec["metadata"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default()))
        .unzip();
    sqlx::query(INSERT_METADATA)
        .bind(id)
        .bind(keys)
        .bind(values)
        .execute(&mut *tx)
        .await?;
    let tl = &rec["tracklist"];
    sqlx::query(PUT_TRACKLIST)
        .bind(id)
        .bind(tl["source"].as_str())
        .bind(sqlx::types::Json(&tl["tracks"]))
        .bind(tl["cue_file_path"].as_str())
        .execute(&mut *tx)
        .await?;
    let payload: Value = sqlx::query_scalar(UPSERT_EVENT)
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(payload)
}

fn direct_pool(pg_url: &str) -> sqlx::PgPool {
    let options: PgConnectOptions = pg_url.parse().expect("url");
    PgPoolOptions::new()
        .max_connections(POOL)
        .connect_lazy_with(options.options([("search_path", "warden")]))
}

/// What wrk measured, with the count of answers that were not 2xx.
fn wrk(port: u16, script: &str, connections: usize, seconds: u64) -> (Load, usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("script.lua");
    std::fs::write(&path, script).expect("lua script");
    let out = Command::new("wrk")
        .args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s")])
        .args(["--latency", "--timeout", "5s", "-s"])
        .arg(&path)
        .arg(format!("http://127.0.0.1:{port}"))
        .output()
        .expect("wrk (scripts/bench installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |prefix: &str, nth: usize| {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(nth).map(str::to_owned))
    };
    let rate: f64 = field("Requests/sec:", 1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk output:\n{text}"));
    let bad: usize = field("Non-2xx", 4)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let pct = |p: &str| {
        field(p, 1)
            .map(|v| parse_wrk_duration(&v))
            .unwrap_or_else(|| panic!("no {p} in wrk output:\n{text}"))
    };
    (
        Load {
            rate,
            errors: bad,
            p50: pct("50%"),
            p99: pct("99%"),
            cpu: Duration::ZERO,
        },
        bad,
    )
}

fn post_script() -> String {
    let body = serde_json::to_string(&recording())
        .expect("json")
        .replace('\'', "\\'");
    format!(
        "wrk.method = \"POST\"\n\
         wrk.path = \"/api/v1/recordings\"\n\
         wrk.body = '{body}'\n\
         wrk.headers[\"Content-Type\"] = \"application/json\"\n\
         wrk.headers[\"Authorization\"] = \"Bearer {TOKEN}\"\n"
    )
}

fn get_script(ids: &[String]) -> String {
    let list: Vec<String> = ids.iter().map(|id| format!("\"{id}\"")).collect();
    format!(
        "wrk.headers[\"Authorization\"] = \"Bearer {TOKEN}\"\n\
         local ids = {{{}}}\n\
         request = function()\n  \
           return wrk.format(\"GET\", \"/api/v1/recordings/\" .. ids[math.random(#ids)])\n\
         end\n",
        list.join(",")
    )
}

pub fn catalog(args: &Args, rows: &mut Vec<Row>) {
    let secs = args.message_seconds;
    let rounds = args.message_rounds;
    eprintln!(
        "catalog: {rounds} alternating rounds of {secs} s per level; direct sqlx, the library in-process, HTTP (wrk -t1)"
    );
    let pg = support::pg::PgServer::start();
    let graph_uri = support::no_graph();
    let daemon = support::daemon::Daemon::spawn(
        &["run"],
        &[
            ("NEO4J_URI", graph_uri.clone()),
            ("DATABASE_URL", pg.url()),
            ("WARDEN__POSTGRES__MAX_CONNECTIONS", (POOL + 1).to_string()),
            ("WARDEN__HTTP__API_TOKEN", TOKEN.into()),
            ("WARDEN__LOG__LEVEL", "warn".into()),
        ],
    );
    let rt = crate::runtime();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}/api/v1/recordings", daemon.http_port);
    // Wait for the migrations, then make the recordings the gets read.
    let ids: Vec<String> = rt.block_on(async {
        support::eventually(Duration::from_secs(30), "the catalog answers", || async {
            let r = http.get(&base).bearer_auth(TOKEN).send().await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
        let mut ids = Vec::with_capacity(GET_IDS);
        for _ in 0..GET_IDS {
            let r: Value = http
                .post(&base)
                .bearer_auth(TOKEN)
                .json(&recording())
                .send()
                .await
                .expect("create")
                .json()
                .await
                .expect("json");
            ids.push(r["data"]["id"].as_str().expect("id").to_owned());
        }
        ids
    });
    let uuids: Vec<uuid::Uuid> = ids.iter().map(|i| i.parse().expect("uuid")).collect();
    let new: NewRecording = serde_json::from_value(recording()).expect("a NewRecording");

    let system = actix::System::new();
    let warden = system.block_on(async {
        let warden = Warden::start(bench_settings(&pg, &graph_uri)).expect("settings");
        crate::wait_connected(&warden, Database::Postgres).await;
        warden
    });
    for n in LEVELS {
        let mut paths: [[Vec<Load>; 3]; 2] = Default::default();
        for _ in 0..rounds {
            // Create.
            let url = pg.url();
            paths[0][0].push(direct_load(n, secs, move || {
                let pool = direct_pool(&url);
                let rec = std::sync::Arc::new(recording());
                move || {
                    let pool = pool.clone();
                    let rec = rec.clone();
                    Box::pin(async move { direct_create(&pool, &rec).await.is_ok() })
                        as std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
                }
            }));
            let catalog = warden.catalog();
            let rec = new.clone();
            paths[0][1].push(system.block_on(actor_load(n, secs, move || {
                let catalog = catalog.clone();
                let rec = rec.clone();
                async move { catalog.create(rec).await.is_ok() }
            })));
            paths[0][2].push(wrk(daemon.http_port, &post_script(), n, secs).0);
            // Get.
            let url = pg.url();
            let shared = std::sync::Arc::new(uuids.clone());
            paths[1][0].push(direct_load(n, secs, move || {
                let pool = direct_pool(&url);
                let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
                move || {
                    let pool = pool.clone();
                    let id = pick(
                        &shared,
                        next.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                    );
                    Box::pin(async move {
                        sqlx::query_scalar::<_, Option<Value>>(GET)
                            .bind(id)
                            .fetch_one(&pool)
                            .await
                            .is_ok_and(|v| v.is_some())
                    })
                        as std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
                }
            }));
            let catalog = warden.catalog();
            let shared = std::sync::Arc::new(uuids.clone());
            let next = std::rc::Rc::new(std::cell::Cell::new(0usize));
            paths[1][1].push(system.block_on(actor_load(n, secs, move || {
                let catalog = catalog.clone();
                next.set(next.get() + 1);
                let id = pick(&shared, next.get());
                async move { catalog.get(id).await.is_ok() }
            })));
            paths[1][2].push(wrk(daemon.http_port, &get_script(&ids), n, secs).0);
        }
        for (i, what) in ["create", "get"].into_iter().enumerate() {
            let [direct, library, http] = &paths[i];
            load_row(
                rows,
                format!("catalog {what} ×{n}: direct sqlx (ceiling) /s, p50 / p99"),
                &median_load(direct),
            );
            load_row(
                rows,
                format!("catalog {what} ×{n}: library in-process /s, p50 / p99"),
                &median_load(library),
            );
            load_row(
                rows,
                format!("catalog {what} ×{n}: HTTP API /s, p50 / p99"),
                &median_load(http),
            );
            row(
                rows,
                format!("catalog {what} ×{n}: library ÷ direct (reference)"),
                ratio_text(library, direct),
                "",
                None,
            );
            // A path with failed calls measured something else than the catalog.
            let clean = [direct, library, http]
                .iter()
                .all(|p| p.iter().all(|l| l.errors == 0));
            let ratio = median_ratio(http, direct);
            row(
                rows,
                format!("catalog {what} ×{n}: HTTP ÷ direct (median of {rounds} rounds)"),
                ratio_text(http, direct),
                "≥ 70 %",
                Some(ratio >= 0.7 && clean),
            );
        }
    }
    system.block_on(warden.shutdown(Duration::from_secs(5)));
}
