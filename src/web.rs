//! The HTTP health layer (actix-web).
//!
//! Every handler answers from the published [`HealthHandle`] snapshot: no database, no mailbox
//! round trip, no lock, so health stays fast while a database hangs.
//!
//! - `GET /health`: liveness; 200 `{"status":"ok"}` whenever the process serves.
//! - `GET /health/ready`: 200 when every database is connected and no circuit is open, else
//!   503; can flip back to 503 at any time. Same body as detailed.
//! - `GET /health/detailed` (also `/api/health`): 200 with the full picture.
//! - `GET /metrics`: Prometheus metrics, when the state has them (see `crate::metrics`).
//! - Anything else: 404, or 405 for a known path with the wrong method, as
//!   `{"error": {"code", "message"}}`.

use std::{
    cell::RefCell,
    sync::Arc,
    time::{Duration, Instant},
};

use actix_web::web::Bytes;
use actix_web::{
    http::{header, StatusCode},
    web, App, HttpRequest, HttpResponse, HttpServer,
};
use chrono::Utc;
use serde::Serialize;
use warden_actors::{
    graph_sync::GraphSyncHealth,
    health::{ComponentHealth, HealthSnapshot},
    Database, HealthHandle, HealthView,
};

/// What handlers share: the health reader and the process start, and the `/api/v1` API when
/// the server has one.
#[derive(Clone)]
pub struct AppState {
    health: HealthHandle,
    started: Instant,
    api: Option<crate::api::Api>,
    metrics: Option<crate::metrics::Endpoint>,
    console: Option<crate::console::Console>,
}

impl AppState {
    /// State for a server whose process started at `started`.
    pub fn new(health: HealthHandle, started: Instant) -> Self {
        Self {
            health,
            started,
            api: None,
            metrics: None,
            console: None,
        }
    }

    /// Serves the API under `/api/v1` too.
    pub fn with_api(mut self, api: crate::api::Api) -> Self {
        self.api = Some(api);
        self
    }

    /// Also serves `GET /metrics` from `metrics`.
    pub fn with_metrics(mut self, metrics: crate::metrics::Endpoint) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// With the operator console (the page, `/health/history`, `/health/settings`) and the
    /// `config` table's status in `/health/detailed`.
    pub fn with_console(mut self, console: crate::console::Console) -> Self {
        self.console = Some(console);
        self
    }
}

#[derive(Serialize)]
struct Detailed<'a> {
    status: &'static str,
    timestamp: String,
    version: &'static str,
    uptime_seconds: u64,
    components: Components<'a>,
    /// What became of the `config` table (with the console only).
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<Arc<warden_actors::runtime::TableStatus>>,
}

/// Both databases, and `graph_sync` when a projector runs.
#[derive(Serialize)]
struct Components<'a> {
    #[serde(flatten)]
    databases: &'a std::collections::BTreeMap<Database, ComponentHealth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    graph_sync: Option<&'a GraphSyncHealth>,
}

fn detailed_body(state: &AppState, view: &HealthView) -> Vec<u8> {
    let body = Detailed {
        status: if view.all_healthy() { "ok" } else { "degraded" },
        timestamp: warden_actors::timestamp::format(&Utc::now()),
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started.elapsed().as_secs(),
        components: Components {
            databases: &view.components,
            graph_sync: view.graph_sync.as_ref(),
        },
        config: state.console.as_ref().map(crate::console::config_health),
    };
    // Serializing plain data into a Vec cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

fn json(status: StatusCode, body: impl actix_web::body::MessageBody + 'static) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}

async fn live() -> HttpResponse {
    json(StatusCode::OK, r#"{"status":"ok"}"#)
}

/// How long a rendered detailed body may be served again. Dashboards poll from many places,
/// and rendering (a view, its JSON, a timestamp) costs more than the request itself; within a
/// millisecond nothing an operator reads can differ but the timestamp's last digit.
const RENDER_TTL: Duration = Duration::from_millis(1);

/// A rendered detailed body; per worker thread, so readers never contend.
struct Rendered {
    /// The snapshot it was rendered from: a new snapshot (any state change) renders again.
    snapshot: Arc<HealthSnapshot>,
    at: Instant,
    body: Bytes,
    ready: bool,
}

thread_local! {
    static RENDERED: RefCell<Option<Rendered>> = const { RefCell::new(None) };
}

/// The detailed body and readiness, rendered at most once per snapshot and millisecond.
fn rendered(state: &AppState) -> (Bytes, bool) {
    let snapshot = state.health.load();
    let now = Instant::now();
    RENDERED.with(|cell| {
        let mut cell = cell.borrow_mut();
        if let Some(r) = cell.as_ref() {
            if Arc::ptr_eq(&r.snapshot, &snapshot) && now.duration_since(r.at) < RENDER_TTL {
                return (r.body.clone(), r.ready);
            }
        }
        let view = snapshot.view();
        let body = Bytes::from(detailed_body(state, &view));
        let ready = view.ready();
        *cell = Some(Rendered {
            snapshot: Arc::clone(&snapshot),
            at: now,
            body: body.clone(),
            ready,
        });
        (body, ready)
    })
}

async fn detailed(state: web::Data<AppState>) -> HttpResponse {
    let (body, _) = rendered(&state);
    json(StatusCode::OK, body)
}

async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let (body, ready) = rendered(&state);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(status, body)
}

fn error(status: StatusCode, code: &str, message: String) -> HttpResponse {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    json(status, body.to_string())
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("no route for {}", req.path()),
    )
}

async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    let mut resp = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        format!("{} is not allowed on {}; use GET", req.method(), req.path()),
    );
    resp.headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
    resp
}

/// A resource that answers GET and HEAD, and 405 to any other method.
pub(crate) fn get_only<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args> + Clone,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::get().to(handler.clone()))
        .route(web::head().to(handler))
        .default_service(web::to(method_not_allowed))
}

/// Registers the routes; shared by the daemon and in-process tests.
pub fn configure(state: AppState) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        if let Some(api) = state.api.clone() {
            cfg.configure(crate::api::configure(api));
        }
        if let Some(metrics) = state.metrics.clone() {
            cfg.app_data(web::Data::new(metrics))
                .service(get_only("/metrics", crate::metrics::serve));
        }
        if let Some(console) = state.console.clone() {
            cfg.configure(crate::console::routes(console));
        }
        cfg.app_data(web::Data::new(state))
            .service(get_only("/health", live))
            .service(get_only("/health/ready", ready))
            .service(get_only("/health/detailed", detailed))
            .service(get_only("/api/health", detailed));
    }
}

/// How long a graceful HTTP stop waits for requests in flight: health answers take
/// microseconds, and a dashboard's keep-alive connection must not eat the drain budget that
/// database calls need.
const HTTP_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a client has to send a whole request head once it has connected (actix-web's
/// default, made explicit because the slow-client defence rests on it). A health poller sends
/// its ~100 bytes in one packet; a client that dribbles a byte a second gets a 408 and loses
/// its connection after this, so slow clients cannot hold connections (and file descriptors,
/// which the database pools need too) for longer.
const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long closing a connection may take (actix-web's default): once warden has answered
/// and decided to close (a 408, a 400), a client that does not read the answer is dropped
/// after this instead of holding the socket.
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Binds and starts the HTTP server. Signals are the daemon's business, not actix-web's.
///
/// Malformed requests never reach a handler: actix-web answers a path over its limit or a
/// header that is not HTTP with 400, more than its 96 headers with 431, and closes the
/// connection; a body sent to a handler that reads none is not read, and the connection is
/// closed after the answer. (`crate::logging` logs these at debug, not as errors.)
pub fn server(
    bind: std::net::SocketAddr,
    workers: usize,
    state: AppState,
    shutdown_timeout: std::time::Duration,
) -> std::io::Result<actix_web::dev::Server> {
    listen(bind, workers, state, shutdown_timeout).map(|(server, _)| server)
}

/// [`server`], and the addresses it listens on (the port chosen when `bind`'s is 0), for the
/// systemd watchdog's own request.
pub fn listen(
    bind: std::net::SocketAddr,
    workers: usize,
    state: AppState,
    shutdown_timeout: std::time::Duration,
) -> std::io::Result<(actix_web::dev::Server, Vec<std::net::SocketAddr>)> {
    let grace = shutdown_timeout.min(HTTP_GRACE);
    let bound = HttpServer::new(move || {
        App::new()
            .configure(configure(state.clone()))
            .default_service(web::to(not_found))
    })
    .disable_signals()
    .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
    .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
    .workers(workers.max(1))
    .shutdown_timeout(grace.as_secs().max(1))
    .bind(bind)?;
    let addrs = bound.addrs();
    Ok((bound.run(), addrs))
}
