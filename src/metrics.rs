//! `GET /metrics`: warden's Prometheus metrics ([`warden_actors::Metrics`]) and the process's
//! own (`crate::process`), in Prometheus' text format (0.0.4) by default, or in OpenMetrics
//! 1.0.0 when the `Accept` header prefers `application/openmetrics-text` (as Prometheus itself
//! asks).
//!
//! Open like `/health`, without the API token: it is a read, carries no secret, no query and
//! no error text (label values come from closed sets), and a scraper is configured far more
//! easily without a credential. Bind `http.bind` to an internal address to keep it there.
//!
//! A scrape renders from atomics and the published health snapshot: no database, no actor
//! mailbox, no lock held by a call, so it answers while a database hangs.

use std::sync::Arc;

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use prometheus_client::registry::Registry;
use warden_actors::Metrics;

use crate::process::ProcessCollector;

/// Content type of Prometheus' text format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of OpenMetrics' text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What `/metrics` serves: warden's registry and the process's.
#[derive(Clone)]
pub struct Endpoint {
    warden: Arc<Metrics>,
    process: Arc<Registry>,
}

impl Endpoint {
    /// Serves `warden`'s metrics and this process's.
    pub fn new(warden: Arc<Metrics>) -> Self {
        let mut process = Registry::default();
        process.register_collector(Box::new(ProcessCollector));
        Self {
            warden,
            process: Arc::new(process),
        }
    }

    /// The exposition in the format asked for.
    pub fn render(&self, openmetrics: bool) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        if openmetrics {
            self.warden.encode_openmetrics(&mut out)?;
            prometheus_client::encoding::text::encode_registry(&mut out, &self.process)?;
            prometheus_client::encoding::text::encode_eof(&mut out)?;
        } else {
            self.warden.encode_prometheus_text(&mut out)?;
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.process)?;
        }
        Ok(out)
    }
}

/// Whether an `Accept` header prefers OpenMetrics to Prometheus' text format: it names
/// `application/openmetrics-text` with a quality above zero and at least that of any other
/// range it names (`text/plain`, `*/*`, ...). Prometheus sends
/// `application/openmetrics-text;version=1.0.0;q=0.5,...,text/plain;version=0.0.4;q=0.3,...`.
pub fn prefers_openmetrics(accept: &str) -> bool {
    let mut openmetrics: f32 = 0.0;
    let mut other: f32 = 0.0;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .and_then(|(_, v)| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if media == "application/openmetrics-text" {
            openmetrics = openmetrics.max(q);
        } else if !media.is_empty() {
            other = other.max(q);
        }
    }
    openmetrics > 0.0 && openmetrics >= other
}

/// The handler.
pub async fn serve(req: HttpRequest, endpoint: web::Data<Endpoint>) -> HttpResponse {
    let openmetrics = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(prefers_openmetrics);
    match endpoint.render(openmetrics) {
        Ok(body) => HttpResponse::Ok()
            .insert_header((
                header::CONTENT_TYPE,
                if openmetrics {
                    OPENMETRICS_CONTENT_TYPE
                } else {
                    TEXT_CONTENT_TYPE
                },
            ))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(body),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the metrics");
            HttpResponse::InternalServerError().finish()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_only_when_preferred() {
        // What Prometheus 2.x sends.
        assert!(prefers_openmetrics(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
             version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(prefers_openmetrics("application/openmetrics-text"));
        assert!(prefers_openmetrics(
            "Application/OpenMetrics-Text; version=1.0.0"
        ));
        assert!(!prefers_openmetrics("text/plain"));
        assert!(!prefers_openmetrics("*/*"));
        assert!(!prefers_openmetrics(""));
        assert!(!prefers_openmetrics("application/openmetrics-text;q=0"));
        assert!(!prefers_openmetrics(
            "application/openmetrics-text;q=0.2, text/plain;q=0.9"
        ));
    }
}
