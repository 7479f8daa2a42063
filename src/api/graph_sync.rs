//! `GET /api/v1/graph-sync`: the graph projection's backlog and its dead events, behind the
//! API's token like every `/api/v1` route. Health shows the counts to anyone; which events are
//! dead, for which recording and why, is for authenticated operators (the error text may name
//! the data).

use actix_web::{web, HttpResponse};
use serde::Serialize;
use warden_actors::{
    projection::{outbox, DeadEvent, Summary},
    PostgresHandle,
};

use super::{envelope, error::ApiError, resource};

/// At most this many dead events are listed (oldest first); `dead` counts them all.
pub const DEAD_LISTED: u32 = 100;

/// The projection's state, for the route.
#[derive(Clone)]
pub struct GraphSync(pub PostgresHandle);

impl std::fmt::Debug for GraphSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GraphSync")
    }
}

#[derive(Serialize)]
struct Body {
    #[serde(flatten)]
    summary: Summary,
    dead_events: Vec<DeadEvent>,
}

async fn get(state: web::Data<GraphSync>) -> Result<HttpResponse, ApiError> {
    let pg = &state.0;
    let summary = outbox::summary(pg)
        .await
        .map_err(|e| ApiError::from_database(&e, None))?;
    let dead_events = outbox::dead_events(pg, DEAD_LISTED)
        .await
        .map_err(|e| ApiError::from_database(&e, None))?;
    envelope::ok(&Body {
        summary,
        dead_events,
    })
}

/// Registers the route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/graph-sync", "GET").route(web::get().to(get)));
}
