//! The API's one error type, and its answer: a status, `{"error": {"code", "message",
//! "detail"}}`, and the headers a client needs to act on it (`WWW-Authenticate`, `Retry-After`,
//! `Allow`).
//!
//! `code` is a stable snake_case string clients may match on; `message` is for people and may
//! change; `detail` is an object with the specifics (which field and why, how long to wait) or
//! `null`. Every message is built from warden's own text or the client's input, never from a
//! secret (database errors arrive sanitized, see `warden_actors::secret::sanitize`).

use std::time::Duration;

use actix_web::{
    http::{header, StatusCode},
    HttpResponse, ResponseError,
};
use serde_json::{json, Value};
use warden_actors::{catalog::CatalogError, WardenError};

/// Why an API request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No usable credentials: no `Authorization` header, one that is not `Bearer <token>`, or
    /// a wrong token. 401.
    #[error("authentication required: {0}")]
    Unauthorized(&'static str),
    /// No token is configured, so the API is off. 403.
    #[error(
        "the API is disabled because no token is configured: set http.api_token or \
         http.api_token_file (or WARDEN__HTTP__API_TOKEN / WARDEN__HTTP__API_TOKEN_FILE) \
         and restart warden"
    )]
    ApiDisabled,
    /// No such route under `/api/v1`. 404.
    #[error("no route for {0}")]
    NoRoute(String),
    /// The resource does not exist: `what` is `recording`, `metadata` or `tracklist`. 404.
    #[error("{what} not found")]
    NotFound {
        /// The kind of resource.
        what: &'static str,
    },
    /// The route exists but not with this method. 405.
    #[error("{method} is not allowed here; use {allow}")]
    MethodNotAllowed {
        /// The method the client sent.
        method: String,
        /// The methods the route answers, as the `Allow` header lists them.
        allow: &'static str,
    },
    /// The write would break a uniqueness rule (a duplicate hash). 409.
    #[error("{message}")]
    Conflict {
        /// The field whose value is taken.
        field: String,
        /// What collided.
        message: String,
    },
    /// The input cannot be used: the body, a path segment or a query parameter. 422.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Where: a body field path (`tracklist.tracks[3].start_time`), `body`, `id`, `limit`.
        field: String,
        /// Why.
        reason: String,
    },
    /// The body is larger than the limit. 422, as the catalog's contract asks for every
    /// invalid input, with a code of its own.
    #[error("the body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body did not arrive in time (see `extract::BODY_TIMEOUT`). 408; nothing was read
    /// into the catalog.
    #[error("the body did not arrive within {}s", after.as_secs())]
    BodyTimeout {
        /// The bound.
        after: Duration,
    },
    /// PostgreSQL is down, its circuit is open, or a call timed out; nothing was written.
    /// 503 with `Retry-After`.
    #[error("the database is unavailable: {message}")]
    Unavailable {
        /// warden's description of the outage.
        message: String,
        /// When trying again makes sense.
        retry_after: Duration,
    },
    /// The commit was sent and no answer came: the write may or may not be there. 500; the
    /// client must read before it writes again.
    #[error("the outcome of the write is unknown; read the resource before retrying: {0}")]
    OutcomeUnknown(String),
    /// Anything else: a bug or a database error that is nobody's input. 500; the detail is
    /// logged, not shown.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// The stable code clients match on.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::ApiDisabled => "api_disabled",
            ApiError::NoRoute(_) | ApiError::NotFound { .. } => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Conflict { .. } => "conflict",
            ApiError::Invalid { .. } => "invalid_input",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::BodyTimeout { .. } => "request_timeout",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::OutcomeUnknown(_) => "outcome_unknown",
            ApiError::Internal(_) => "internal_error",
        }
    }

    /// An invalid input at `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ApiError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// A database error, classified: transient ones are 503 (retry after `retry_after`, or a
    /// second when the error does not say), an unknown commit outcome is 500
    /// `outcome_unknown`, the rest 500 `internal_error`.
    pub fn from_database(err: &WardenError, retry_after: Option<Duration>) -> Self {
        match err {
            WardenError::CommitOutcomeUnknown { .. } => ApiError::OutcomeUnknown(err.to_string()),
            // Shutting down: another instance (or this one, restarted) will answer.
            WardenError::Stopped { .. } => ApiError::Unavailable {
                message: err.to_string(),
                retry_after: Duration::from_secs(1),
            },
            e if e.is_transient() => ApiError::Unavailable {
                message: err.to_string(),
                retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
            },
            _ => ApiError::Internal(err.to_string()),
        }
    }

    fn detail(&self) -> Value {
        match self {
            ApiError::Invalid { field, reason } => json!({"field": field, "reason": reason}),
            ApiError::Conflict { field, .. } => json!({"field": field, "reason": "already taken"}),
            ApiError::NotFound { what } => json!({"resource": what}),
            ApiError::PayloadTooLarge { limit } => json!({"limit_bytes": limit}),
            ApiError::BodyTimeout { after } => json!({"timeout_seconds": after.as_secs()}),
            ApiError::MethodNotAllowed { allow, .. } => {
                json!({"allow": allow.split(", ").collect::<Vec<_>>()})
            }
            ApiError::Unavailable { retry_after, .. } => {
                json!({"retry_after_seconds": retry_after_seconds(*retry_after)})
            }
            ApiError::Unauthorized(reason) => json!({"reason": reason}),
            ApiError::ApiDisabled
            | ApiError::NoRoute(_)
            | ApiError::OutcomeUnknown(_)
            | ApiError::Internal(_) => Value::Null,
        }
    }
}

impl From<CatalogError> for ApiError {
    fn from(err: CatalogError) -> Self {
        let retry_after = err.retry_after();
        match err {
            CatalogError::NotFound { what } => ApiError::NotFound { what },
            CatalogError::Conflict { field, message } => ApiError::Conflict {
                field: field.to_owned(),
                message,
            },
            CatalogError::Invalid { field, reason } => ApiError::Invalid { field, reason },
            CatalogError::Unavailable(e) => ApiError::from_database(&e, retry_after),
        }
    }
}

/// `Retry-After` in whole seconds: rounded up, so a client never comes back too early, and at
/// least 1, since 0 would invite a tight loop.
pub fn retry_after_seconds(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::ApiDisabled => StatusCode::FORBIDDEN,
            ApiError::NoRoute(_) | ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Invalid { .. } | ApiError::PayloadTooLarge { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::OutcomeUnknown(_) | ApiError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, "API request failed");
            }
            ApiError::OutcomeUnknown(cause) => {
                tracing::warn!(error = %cause, "API write with an unknown outcome");
            }
            _ => {}
        }
        let body = json!({"error": {
            "code": self.code(),
            "message": self.to_string(),
            "detail": self.detail(),
        }});
        let mut resp = HttpResponse::build(self.status_code());
        resp.insert_header((header::CONTENT_TYPE, "application/json"))
            .insert_header((header::CACHE_CONTROL, "no-store"));
        match self {
            ApiError::Unauthorized(_) => {
                resp.insert_header((header::WWW_AUTHENTICATE, r#"Bearer realm="warden""#));
            }
            ApiError::Unavailable { retry_after, .. } => {
                resp.insert_header((header::RETRY_AFTER, retry_after_seconds(*retry_after)));
            }
            ApiError::MethodNotAllowed { allow, .. } => {
                resp.insert_header((header::ALLOW, *allow));
            }
            _ => {}
        }
        resp.body(body.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_actors::Database;

    #[test]
    fn retry_after_rounds_up_and_is_at_least_one() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_seconds(Duration::from_secs(30)), 30);
    }

    #[test]
    fn database_errors_map_by_transience() {
        let open = WardenError::CircuitOpen {
            database: Database::Postgres,
            retry_after: Duration::from_millis(2500),
        };
        let e = ApiError::from_database(&open, Some(Duration::from_millis(2500)));
        assert_eq!(e.status_code(), StatusCode::SERVICE_UNAVAILABLE);
        let resp = e.error_response();
        assert_eq!(resp.headers().get(header::RETRY_AFTER).unwrap(), "3");

        let usage = WardenError::Usage {
            database: Database::Postgres,
            message: "bad".into(),
        };
        let e = ApiError::from_database(&usage, None);
        assert_eq!(e.code(), "internal_error");
        assert_eq!(e.to_string(), "internal error");

        let unknown = WardenError::CommitOutcomeUnknown {
            database: Database::Postgres,
            message: "reset".into(),
        };
        assert_eq!(
            ApiError::from_database(&unknown, None).code(),
            "outcome_unknown"
        );
    }

    #[test]
    fn unauthorized_says_how_to_authenticate() {
        let resp = ApiError::Unauthorized("x").error_response();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            resp.headers().get(header::WWW_AUTHENTICATE).unwrap(),
            r#"Bearer realm="warden""#
        );
    }
}
