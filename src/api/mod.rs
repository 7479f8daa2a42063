//! The daemon's HTTP API under `/api/v1`: bearer-token authentication for the whole scope, the
//! `{"data", "meta"}` / `{"error"}` envelopes, and the routes.
//!
//! # Layout
//! - [`auth`]: the token (configuration, constant-time check) and the scope's middleware.
//! - [`error`]: [`ApiError`](error::ApiError), the one error type, and its answer.
//! - [`envelope`]: the success answers.
//! - [`settings`]: `/api/v1/settings`, the effective settings and the runtime ones' table.
//! - [`extract`]: request bodies (1 MB, JSON), path ids and query strings, validated before a
//!   handler runs, every failure a 422.
//! - [`recordings`]: the catalog's routes.
//! - [`graph_sync`]: the graph projection's backlog and dead events.
//!
//! # Adding routes
//! A module with `pub fn routes(cfg: &mut web::ServiceConfig)` registers its resources (use
//! [`resource`] so a wrong method gets the API's 405), and gets one `.configure(...)` line in
//! [`configure`]: it is then behind the token like every other route, and its errors are
//! [`ApiError`](error::ApiError)s. State a module needs goes into [`Api`].

pub mod auth;
pub mod envelope;
pub mod error;
pub mod extract;
pub mod graph_sync;
pub mod recordings;
pub mod settings;

use actix_web::{middleware::from_fn, web, HttpRequest, HttpResponse};
use warden_actors::catalog::Catalog;

use self::{auth::ApiAuth, error::ApiError};

/// Everything the API's routes need, cloned into each HTTP worker.
#[derive(Clone, Debug)]
pub struct Api {
    auth: ApiAuth,
    catalog: Catalog,
    settings: Option<settings::SettingsApi>,
    graph_sync: Option<graph_sync::GraphSync>,
}

impl Api {
    /// The API with these authentication rules, over this catalog.
    pub fn new(auth: ApiAuth, catalog: Catalog) -> Self {
        Self {
            auth,
            catalog,
            settings: None,
            graph_sync: None,
        }
    }

    /// With the settings routes.
    pub fn with_settings(mut self, settings: settings::SettingsApi) -> Self {
        self.settings = Some(settings);
        self
    }

    /// Serves `GET /api/v1/graph-sync` from this database's outbox.
    pub fn with_graph_sync(mut self, postgres: warden_actors::PostgresHandle) -> Self {
        self.graph_sync = Some(graph_sync::GraphSync(postgres));
        self
    }
}

/// Registers the `/api/v1` scope: every request in it passes [`auth::require_token`] first,
/// then its route; an unknown path is a 404 in the API's error format.
pub fn configure(api: Api) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        let mut scope = web::scope("/api/v1")
            .wrap(from_fn(auth::require_token))
            .app_data(web::Data::new(api.catalog.clone()))
            .configure(recordings::routes);
        if let Some(s) = api.settings.clone() {
            scope = scope
                .app_data(web::Data::new(s))
                .configure(settings::routes);
        }
        if let Some(state) = api.graph_sync.clone() {
            scope = scope
                .app_data(web::Data::new(state))
                .configure(graph_sync::routes);
        }
        cfg.app_data(web::Data::new(api.auth.clone()))
            .service(scope.default_service(web::to(no_route)));
    }
}

async fn no_route(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NoRoute(req.path().to_owned()))
}

/// A resource at `path` whose other methods get 405 with `Allow: allow` (for example
/// `"GET, POST"`). Add the routes with `.route(...)` on the result.
pub fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move |req: HttpRequest| async move {
        Err::<HttpResponse, _>(ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            allow,
        })
    }))
}
