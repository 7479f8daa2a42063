//! `/api/v1/settings`: every effective setting with its source, and the runtime ones written to
//! the `config` table (behind the API token, like the whole scope).
//!
//! - `GET /api/v1/settings`: `data.settings` lists every key with its `value` (secrets as
//!   `***`), its `source` (`default`, `file`, `environment` or `table`), whether it may
//!   change at run time, and for those the `base` value an absent row means; `data.table`
//!   says what became of the table (version, the error that refused it, ...).
//! - `PUT /api/v1/settings/{key}` with `{"value": ...}` (durations as `"45s"`): the key must
//!   be a runtime one and the table with this row must pass the file's rules, else 422
//!   naming the key and the reason and nothing is written. The row is written through
//!   warden's own PostgreSQL pool; the answer waits (up to 2 s) until the loader has read it
//!   back and says whether it is in force.
//! - `DELETE /api/v1/settings/{key}`: removes the row, so the file's (or default) value
//!   applies again; refused the same way if the table without it would be invalid. Any key
//!   the table holds may be deleted, a refused one (`postgres.url` typed into psql) included.
//!
//! Each change is logged by the loader when it applies it (key, old, new).

pub mod origins;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use warden_actors::{
    runtime::{check_key, snapshot::MAX_KEY_LEN, RuntimeSettingsHandle, TableStatus},
    PostgresHandle, Sql,
};

use self::origins::{Origins, Source};
use super::{envelope, error::ApiError, extract::JsonBody, resource};

/// The largest value a row may hold, as JSON text: every runtime value is a number or a short
/// duration.
pub const MAX_VALUE_LEN: usize = 256;

/// How long a write waits for the loader to read it back.
const LANDING: Duration = Duration::from_secs(2);

/// What the routes need.
#[derive(Clone)]
pub struct SettingsApi {
    runtime: RuntimeSettingsHandle,
    postgres: PostgresHandle,
    /// Every setting of the daemon's configuration by dotted key, secrets as `***`.
    configured: Arc<BTreeMap<String, Value>>,
    origins: Arc<Origins>,
    /// Whether the loader follows the table (`runtime_settings.enabled`).
    following: bool,
}

impl std::fmt::Debug for SettingsApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SettingsApi")
            .field("following", &self.following)
            .finish_non_exhaustive()
    }
}

impl SettingsApi {
    /// The routes' state: `configured` is the daemon's effective configuration as redacted
    /// TOML (`check-config`'s output).
    pub fn new(
        runtime: RuntimeSettingsHandle,
        postgres: PostgresHandle,
        configured_toml: &str,
        origins: Origins,
        following: bool,
    ) -> Self {
        let mut configured = BTreeMap::new();
        if let Ok(table) = configured_toml.parse::<toml::Table>() {
            configured.extend(
                crate::config::toml_leaves(&table)
                    .into_iter()
                    .map(|(key, v)| (key, serde_json::to_value(v).unwrap_or(Value::Null))),
            );
        }
        Self {
            runtime,
            postgres,
            configured: Arc::new(configured),
            origins: Arc::new(origins),
            following,
        }
    }
}

/// Registers the routes (inside the authenticated scope).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/settings", "GET").route(web::get().to(list)))
        .service(
            resource("/settings/{key}", "PUT, DELETE")
                .route(web::put().to(put))
                .route(web::delete().to(delete)),
        );
}

/// One setting as listed.
#[derive(Debug, Serialize)]
struct Setting {
    key: String,
    value: Value,
    source: Source,
    /// May change at run time (from the table).
    runtime: bool,
    /// For a runtime key: the value without a row (the file's, the environment's or the
    /// default), which `DELETE` goes back to.
    #[serde(skip_serializing_if = "Option::is_none")]
    base: Option<Value>,
}

#[derive(Serialize)]
struct Listing {
    settings: Vec<Setting>,
    table: Arc<TableStatus>,
}

fn listing(s: &SettingsApi) -> Listing {
    let current = s.runtime.current().flatten();
    let base = s.runtime.base().flatten();
    let table = s.runtime.status();
    let mut settings: Vec<Setting> = s
        .configured
        .iter()
        .map(|(key, value)| {
            let runtime = current.contains_key(key);
            let from_table = table.table_keys.iter().any(|k| k == key);
            Setting {
                key: key.clone(),
                value: current.get(key).cloned().unwrap_or_else(|| value.clone()),
                source: if runtime && from_table {
                    Source::Table
                } else {
                    s.origins.source(key)
                },
                runtime,
                base: base.get(key).cloned(),
            }
        })
        .collect();
    settings.sort_by(|a, b| a.key.cmp(&b.key));
    Listing { settings, table }
}

async fn list(s: web::Data<SettingsApi>) -> Result<HttpResponse, ApiError> {
    envelope::ok(&listing(&s))
}

/// The body of a `PUT`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewValue {
    /// The value as the file spells it: a number, or a duration string (`"45s"`).
    pub value: Value,
}

/// The `{key}` of the path, bounded.
fn path_key(req: &HttpRequest) -> Result<String, ApiError> {
    let key = req.match_info().get("key").unwrap_or_default();
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(ApiError::invalid(
            "key",
            format!("must be 1 to {MAX_KEY_LEN} characters"),
        ));
    }
    Ok(key.to_owned())
}

fn refused(e: &warden_actors::runtime::RuntimeSettingsError) -> ApiError {
    ApiError::invalid(e.key().unwrap_or("value"), e.to_string())
}

fn not_following() -> ApiError {
    ApiError::invalid(
        "key",
        "warden does not follow the config table (runtime_settings.enabled = false): a row \
         written now would not take effect",
    )
}

#[derive(Serialize)]
struct Written {
    key: String,
    /// The value in force for the key now.
    value: Value,
    source: Source,
    /// The loader read the table back and the value is in force.
    applied: bool,
    /// Snapshots applied since start.
    version: u64,
}

/// The `config` table's rows as warden last read them, less `key`: what a write or a delete
/// of `key` is checked against before it goes to the table.
fn rows_without(s: &SettingsApi, key: &str) -> Vec<(String, Value)> {
    s.runtime
        .status()
        .rows
        .iter()
        .filter(|(k, _)| k != key)
        .cloned()
        .collect()
}

async fn put(
    req: HttpRequest,
    s: web::Data<SettingsApi>,
    body: JsonBody<NewValue>,
) -> Result<HttpResponse, ApiError> {
    let key = path_key(&req)?;
    check_key(&key).map_err(|e| refused(&e))?;
    if !s.following {
        return Err(not_following());
    }
    let value = body.0.value;
    let text = value.to_string();
    if text.len() > MAX_VALUE_LEN {
        return Err(ApiError::invalid(
            "value",
            format!("must be at most {MAX_VALUE_LEN} characters of JSON"),
        ));
    }
    let mut rows = rows_without(&s, &key);
    rows.push((key.clone(), value.clone()));
    s.runtime.check(&rows).map_err(|e| refused(&e))?;
    let write = Sql::new(
        "INSERT INTO config (key, value, updated_at) VALUES ($1, $2::text::jsonb, now()) \
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
    )
    .bind(key.as_str())
    .bind(text);
    s.postgres
        .send(write)
        .await
        .map_err(|e| ApiError::from_database(&e, None))?;
    let landed = landed(&s.runtime, |t| {
        t.rows.iter().any(|(k, v)| *k == key && *v == value)
    })
    .await;
    written(&s, key, landed)
}

async fn delete(req: HttpRequest, s: web::Data<SettingsApi>) -> Result<HttpResponse, ApiError> {
    let key = path_key(&req)?;
    if !s.following {
        return Err(not_following());
    }
    let rows = rows_without(&s, &key);
    s.runtime.check(&rows).map_err(|e| {
        ApiError::invalid(
            e.key().unwrap_or("key"),
            format!("the table without `{key}` would be refused: {e}"),
        )
    })?;
    s.postgres
        .send(Sql::new("DELETE FROM config WHERE key = $1").bind(key.as_str()))
        .await
        .map_err(|e| ApiError::from_database(&e, None))?;
    let landed = landed(&s.runtime, |t| t.rows.iter().all(|(k, _)| *k != key)).await;
    written(&s, key, landed)
}

fn written(s: &SettingsApi, key: String, landed: bool) -> Result<HttpResponse, ApiError> {
    let listing = listing(s);
    let table = &listing.table;
    let setting = listing.settings.into_iter().find(|x| x.key == key);
    let (value, source) = setting.map_or((Value::Null, Source::Default), |x| (x.value, x.source));
    envelope::ok(&Written {
        key,
        value,
        source,
        applied: landed && table.last_error.is_none(),
        version: table.version,
    })
}

/// Waits (up to [`LANDING`]) until the table as last read satisfies `read_back`.
async fn landed(runtime: &RuntimeSettingsHandle, read_back: impl Fn(&TableStatus) -> bool) -> bool {
    let mut changes = runtime.changes();
    let deadline = tokio::time::Instant::now() + LANDING;
    loop {
        if read_back(&runtime.status()) {
            return true;
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {}
            _ => return false,
        }
    }
}
