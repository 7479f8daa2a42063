//! Typed settings for the four actors, with their defaults beside their names.
//!
//! [`WardenSettings`] deserializes from the same keys as the daemon's TOML file, so an
//! application that embeds `warden-actors` can load it with any serde format. Unknown keys are
//! rejected (`deny_unknown_fields`): a typo must fail loudly, not fall back to a default.
//! [`WardenSettings::validate`] checks what types alone cannot (ranges, URLs, orderings).

use std::{path::PathBuf, time::Duration};

use ::url::Url;
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

mod target;
mod urls;
mod validate;

pub use target::PgTarget;

pub(crate) use urls::percent_decode;
pub use urls::redact_url;
use urls::serialize_redacted_url;
pub(crate) use validate::{bounded, check_schema};

/// Upper bound on connect and probe timeouts, probe intervals, reconnect delays
/// (`backoff.initial`, `backoff.max`), the breaker's `cooldown` and the daemon's
/// `shutdown_timeout`: an hour. Past it warden no longer supervises anything: an outage goes
/// unseen, or a recovered database unused, for longer than any deployment tolerates, so such a
/// value is a typo (`1h` for `1s`, a missing unit) rather than a wish. It also keeps every
/// deadline computed from these values (`now + delay`, a wall-clock `next_attempt_at`) far
/// from overflowing, which `100000 years` did not.
pub const MAX_SUPERVISION_DELAY: Duration = Duration::from_secs(60 * 60);

/// Upper bound on `query_timeout` and `statement_timeout`: a day. Longer than the other bounds
/// because `warden migrate` and the first connect run the migrations under `query_timeout`
/// (the lock wait, and each statement), and an index build on a large table can take hours;
/// a day still bounds a call that hangs.
pub const MAX_QUERY_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// Upper bound on `retry.initial` and `retry.max`: a minute. The caller of a call waits
/// through its retries; past a minute, failing the call (and letting the caller, or the
/// breaker, decide) serves it better than a longer sleep inside it.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// Upper bound on `backoff.multiplier`: 10. Past it the schedule leaps from `initial` to `max`
/// in one or two attempts, which is no longer a backoff; use a larger `initial` instead.
pub const MAX_BACKOFF_MULTIPLIER: f64 = 10.0;

/// Everything the actors need. Each section has a `Default` with the documented defaults.
/// Every duration has an upper bound ([`MAX_SUPERVISION_DELAY`], [`MAX_QUERY_TIMEOUT`],
/// [`MAX_RETRY_DELAY`]) that [`WardenSettings::validate`] enforces.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WardenSettings {
    /// The graph database.
    pub neo4j: Neo4jSettings,
    /// The relational database.
    pub postgres: PostgresSettings,
    /// Reconnect schedule after a failed connect or probe.
    pub backoff: BackoffSettings,
    /// Retries of a single call on transient failures.
    pub retry: RetrySettings,
    /// The per-database circuit breaker.
    pub breaker: BreakerSettings,
    /// The graph projection of the catalog's outbox.
    pub projection: crate::projection::ProjectionSettings,
}

/// `[neo4j]`: connection to the graph database over Bolt. `Debug` is written by hand so that
/// the values of the URI's query (a routing context may carry anything) are never printed.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Neo4jSettings {
    /// `bolt://host:port` (or `neo4j://`). Credentials do not belong here: use `user`/`password`.
    /// Printed with its query values as `***`.
    #[serde(serialize_with = "serialize_redacted_url")]
    pub uri: String,
    /// Bolt user name.
    pub user: String,
    /// Bolt password; empty when not set.
    pub password: Secret,
    /// A file holding the password (systemd credentials, docker secrets); wins over `password`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Database name sent with every query.
    pub database: String,
    /// Upper bound on connections: one for probes, the rest pooled for calls. At least 2.
    pub max_connections: u32,
    /// Threads that run calls and own the pooled connections' sockets (the actors and the
    /// probe's connection stay on one dedicated arbiter). 1 to 64.
    pub io_threads: usize,
    /// Bound on one connect (TCP, Bolt handshake, HELLO).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Bound on a whole call, retries included.
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
    /// Time between two liveness probes.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// Bound on one probe.
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
}

impl std::fmt::Debug for Neo4jSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Neo4jSettings")
            .field("uri", &redact_url(&self.uri))
            .field("user", &self.user)
            .field("password", &self.password)
            .field("password_file", &self.password_file)
            .field("database", &self.database)
            .field("max_connections", &self.max_connections)
            .field("io_threads", &self.io_threads)
            .field("connect_timeout", &self.connect_timeout)
            .field("query_timeout", &self.query_timeout)
            .field("probe_interval", &self.probe_interval)
            .field("probe_timeout", &self.probe_timeout)
            .finish()
    }
}

impl Default for Neo4jSettings {
    fn default() -> Self {
        Self {
            uri: "bolt://127.0.0.1:7687".into(),
            user: "neo4j".into(),
            password: Secret::default(),
            password_file: None,
            database: "neo4j".into(),
            max_connections: 16,
            io_threads: 2,
            connect_timeout: Duration::from_secs(5),
            query_timeout: Duration::from_secs(30),
            probe_interval: Duration::from_secs(2),
            probe_timeout: Duration::from_secs(1),
        }
    }
}

/// `[postgres]`: connection to PostgreSQL. `Debug` is written by hand so that a password in
/// `url`, or a value in its query, is never printed.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresSettings {
    /// `postgres://user[:password]@host:port/database[?sslmode=...]`. A password in it is
    /// accepted (the seeds' `DATABASE_URL` has one) but is printed as `***`, and so is every
    /// query value but `sslmode`'s.
    #[serde(serialize_with = "serialize_redacted_url")]
    pub url: String,
    /// Password; wins over one in `url`.
    pub password: Secret,
    /// A file holding the password; wins over `password`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// warden's own schema: created by the migrations and first in every connection's
    /// `search_path`.
    pub schema: String,
    /// Upper bound on connections, the probe's included; warden never holds more, even across
    /// flaps. At least 2.
    pub max_connections: u32,
    /// Connections the pool keeps open while idle.
    pub min_connections: u32,
    /// Threads that run calls and own the pool's sockets (the actors themselves run on one
    /// dedicated arbiter). Two drive both cores of a small machine; 1 to 64.
    pub io_threads: usize,
    /// Bound on acquiring a connection (sqlx retries connects inside it).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Server-side `statement_timeout`; keep it a little below `query_timeout` so the server
    /// cancels a slow statement before warden gives up on the call.
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// Bound on a whole call, retries included.
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
    /// Time between two liveness probes.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// Bound on one probe.
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
    /// `application_name` of every connection, as seen in `pg_stat_activity`.
    pub application_name: String,
    /// Apply the embedded migrations on the first successful connect.
    pub run_migrations: bool,
}

impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("url", &redact_url(&self.url))
            .field("password", &self.password)
            .field("password_file", &self.password_file)
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("io_threads", &self.io_threads)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("query_timeout", &self.query_timeout)
            .field("probe_interval", &self.probe_interval)
            .field("probe_timeout", &self.probe_timeout)
            .field("application_name", &self.application_name)
            .field("run_migrations", &self.run_migrations)
            .finish()
    }
}

impl Default for PostgresSettings {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            password: Secret::default(),
            password_file: None,
            schema: "warden".into(),
            max_connections: 10,
            min_connections: 1,
            io_threads: 2,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            query_timeout: Duration::from_secs(30),
            probe_interval: Duration::from_secs(2),
            probe_timeout: Duration::from_secs(1),
            application_name: "warden".into(),
            run_migrations: true,
        }
    }
}

/// `[backoff]`: `delay = min(max, initial × multiplier^attempt)`, jittered by ±`jitter`, and
/// never above `max` (at the cap jitter only shortens the delay).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffSettings {
    /// First delay after a failure.
    #[serde(with = "humantime_serde")]
    pub initial: Duration,
    /// Cap on the delay, jitter included; at most [`MAX_SUPERVISION_DELAY`].
    #[serde(with = "humantime_serde")]
    pub max: Duration,
    /// Growth factor per attempt; 1 to [`MAX_BACKOFF_MULTIPLIER`].
    pub multiplier: f64,
    /// Random spread as a fraction of the delay, in `0..=1`.
    pub jitter: f64,
}

impl Default for BackoffSettings {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

/// `[retry]`: retries of one call on a transient failure, all inside the call's `query_timeout`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Attempts in all, the first one included; 1 disables retries.
    pub max_attempts: u32,
    /// Delay before the first retry; it doubles up to `max` and is jittered like `backoff`.
    #[serde(with = "humantime_serde")]
    pub initial: Duration,
    /// Cap on the delay between retries; at most [`MAX_RETRY_DELAY`].
    #[serde(with = "humantime_serde")]
    pub max: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(4),
        }
    }
}

/// `[breaker]`: one circuit per database.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSettings {
    /// Failed calls among the last `2 × failure_threshold` that open the circuit (1 to
    /// [`MAX_THRESHOLD`](crate::circuit::MAX_THRESHOLD)). Only failures that say something
    /// about the database count: timeouts, connection errors, overload; not contention or a
    /// caller's mistakes.
    pub failure_threshold: u32,
    /// How long an open circuit refuses calls before the next probe may close it; at most
    /// [`MAX_SUPERVISION_DELAY`].
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            cooldown: Duration::from_secs(30),
        }
    }
}

/// A setting that is well-typed but unusable, named by its full key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for `{key}` ({value}): {reason}")]
pub struct SettingsError {
    /// Dotted key, as in the file (`postgres.max_connections`).
    pub key: String,
    /// The offending value, with secrets redacted.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl SettingsError {
    pub(crate) fn new(key: &str, value: impl ToString, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

impl PostgresSettings {
    /// The password that will be used: `password` (or its file) if set, else the URL's.
    pub fn effective_password(&self) -> Option<Secret> {
        if !self.password.is_empty() {
            return Some(self.password.clone());
        }
        let url = Url::parse(&self.url).ok()?;
        let raw = url.password()?;
        let decoded = percent_decode(raw);
        Some(Secret::new(decoded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_password_prefers_the_explicit_one_and_decodes_the_url() {
        let mut p = PostgresSettings {
            url: "postgres://app:p%40ss@db/x".into(),
            ..Default::default()
        };
        assert_eq!(p.effective_password().unwrap().expose(), "p@ss");
        p.password = Secret::new("other");
        assert_eq!(p.effective_password().unwrap().expose(), "other");
    }

    #[test]
    fn password_file_is_read_and_trimmed() {
        let dir = std::env::temp_dir().join(format!("warden-secret-{}", std::process::id()));
        std::fs::write(&dir, "from-file\n").unwrap();
        let mut s = WardenSettings::default();
        s.neo4j.password_file = Some(dir.clone());
        s.load_secret_files().unwrap();
        assert_eq!(s.neo4j.password.expose(), "from-file");
        std::fs::remove_file(dir).unwrap();

        s.neo4j.password_file = None;
        s.postgres.password_file = Some("/nonexistent/warden".into());
        assert_eq!(
            s.load_secret_files().unwrap_err().key,
            "postgres.password_file"
        );
    }
}
