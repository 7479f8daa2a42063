//! The operator console: one page at `GET /` and `GET /dashboard`, and the two read-only
//! endpoints it loads besides `/health/detailed`.
//!
//! - The page (`dashboard.html`) is embedded in the binary and self-contained: its style and
//!   script are inline, it loads nothing from elsewhere (no CDN, no font), so it works on a
//!   box with no internet. Its `Content-Security-Policy` allows exactly its own inline script
//!   and style (by their SHA-256, worked out once at startup) and requests to warden itself.
//!   It polls `/health/detailed` every second with a timeout, and tells "warden unreachable,
//!   data stale" apart from "database down".
//! - `GET /health/history` ([`history`]): the last five minutes, one sample a second.
//! - `GET /health/settings`: the runtime settings in force and what became of the `config`
//!   table; no secret is among them. Changing them takes the API token
//!   (`PUT /api/v1/settings/{key}`, see [`crate::api::settings`]).
//!
//! Nothing here reads a database or waits on an actor.

pub mod history;

use std::sync::{Arc, OnceLock};

use actix_web::{
    http::{header, StatusCode},
    web, HttpResponse,
};
use base64::Engine as _;
use serde::Serialize;
use sha2::{Digest, Sha256};
use warden_actors::runtime::{RuntimeSettingsHandle, TableStatus};

use self::history::History;

/// The HTTP layer's state for a daemon running `warden` with `cfg`: health, the API (with the
/// settings routes) and the console, whose history sampler starts here (in the current actix
/// system). Shared by the daemon and the tests that serve it in-process.
pub fn app_state(
    warden: &warden_actors::Warden,
    cfg: &crate::config::DaemonConfig,
    started: std::time::Instant,
) -> crate::web::AppState {
    let history = Arc::new(History::default());
    history.start_sampling(warden.health_handle());
    let console = Console {
        history,
        runtime: warden.runtime_settings(),
        origins: Arc::new(cfg.origins.clone()),
    };
    let settings = crate::api::settings::SettingsApi::new(
        warden.runtime_settings(),
        warden.postgres_handle(),
        &cfg.to_redacted_toml(),
        cfg.origins.clone(),
        cfg.runtime_settings.enabled,
    );
    let api = crate::api::Api::new(
        crate::api::auth::ApiAuth::new(cfg.http.api_token.as_ref()),
        warden.catalog(),
    )
    .with_settings(settings)
    .with_graph_sync(warden.postgres_handle());
    crate::web::AppState::new(warden.health_handle(), started)
        .with_api(api)
        .with_console(console)
}

/// The page.
pub const PAGE: &str = include_str!("dashboard.html");

/// What the console's endpoints read.
#[derive(Clone, Debug)]
pub struct Console {
    /// The ring buffer behind `/health/history`.
    pub history: Arc<History>,
    /// The runtime settings.
    pub runtime: RuntimeSettingsHandle,
    /// Which keys the file and the environment set.
    pub origins: Arc<crate::api::settings::origins::Origins>,
}

/// The `config` part of `/health/detailed`: what became of the table. `null` in an embedding
/// that does not follow it.
pub fn config_health(console: &Console) -> Arc<TableStatus> {
    console.runtime.status()
}

/// The SHA-256 of the text between the first `open` tag and the following `</tag>`, as a CSP
/// source (`'sha256-...'`).
fn inline_hash(page: &str, open: &str, close: &str) -> String {
    let start = page.find(open).map_or(0, |i| i + open.len());
    let end = page[start..].find(close).map_or(page.len(), |i| start + i);
    let digest = Sha256::digest(&page.as_bytes()[start..end]);
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// The page's policy: its own inline script and style only, requests to warden only.
pub fn content_security_policy() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self'; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            inline_hash(PAGE, "<script>", "</script>"),
            inline_hash(PAGE, "<style>", "</style>"),
        )
    })
}

async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CONTENT_SECURITY_POLICY, content_security_policy()))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(PAGE)
}

fn json(body: impl actix_web::body::MessageBody + 'static) -> HttpResponse {
    HttpResponse::build(StatusCode::OK)
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}

async fn history(console: web::Data<Console>) -> HttpResponse {
    json(console.history.body())
}

#[derive(Serialize)]
struct Settings {
    /// Every runtime value in force, by key (durations as `"30s"`).
    values: std::collections::BTreeMap<String, serde_json::Value>,
    /// Where each comes from: `default`, `file`, `environment` or `table`.
    sources: std::collections::BTreeMap<String, crate::api::settings::origins::Source>,
    /// What became of the table.
    table: Arc<TableStatus>,
}

async fn settings(console: web::Data<Console>) -> HttpResponse {
    let table = console.runtime.status();
    let values = console.runtime.current().flatten();
    let sources = values
        .keys()
        .map(|key| {
            let source = if table.table_keys.iter().any(|k| k == key) {
                crate::api::settings::origins::Source::Table
            } else {
                console.origins.source(key)
            };
            (key.clone(), source)
        })
        .collect();
    let body = Settings {
        values,
        sources,
        table,
    };
    json(serde_json::to_vec(&body).unwrap_or_default())
}

/// Registers the page and its endpoints (GET and HEAD; another method gets the health
/// layer's 405).
pub fn routes(console: Console) -> impl FnOnce(&mut web::ServiceConfig) {
    use crate::web::get_only;
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(web::Data::new(console))
            .service(get_only("/", page))
            .service(get_only("/dashboard", page))
            .service(get_only("/health/history", history))
            .service(get_only("/health/settings", settings));
    }
}
