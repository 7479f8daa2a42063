//! Typed settings for the four actors, with their defaults beside their names.
//!
//! [`WardenSettings`] deserializes from the same keys as the daemon's TOML file, so an
//! application that embeds `warden-actors` can load it with any serde format. Unknown keys are
//! rejected (`deny_unknown_fields`): a typo must fail loudly, not fall back to a default.
//! [`WardenSettings::validate`] checks what types alone cannot (ranges, URLs, orderings).

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize, Serializer};
use url::Url;

use crate::secret::{is_safe_query_key, printable_query_key, Secret, REDACTED};

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
            schema: "walltrack".into(),
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

/// `[backoff]`: `delay = min(max, initial × multiplier^attempt)`, jittered by ±`jitter`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffSettings {
    /// First delay after a failure.
    #[serde(with = "humantime_serde")]
    pub initial: Duration,
    /// Cap on the delay, before jitter; at most [`MAX_SUPERVISION_DELAY`].
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
    fn new(key: &str, value: impl ToString, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

impl WardenSettings {
    /// Reads `password_file`s into their `password`. Call once, before [`Self::validate`].
    pub fn load_secret_files(&mut self) -> Result<(), SettingsError> {
        fn read(key: &str, path: &PathBuf) -> Result<Secret, SettingsError> {
            std::fs::read_to_string(path)
                .map(|s| Secret::new(s.trim_end_matches(['\r', '\n'])))
                .map_err(|e| SettingsError::new(key, path.display(), format!("cannot read: {e}")))
        }
        if let Some(path) = &self.neo4j.password_file {
            self.neo4j.password = read("neo4j.password_file", path)?;
        }
        if let Some(path) = &self.postgres.password_file {
            self.postgres.password = read("postgres.password_file", path)?;
        }
        Ok(())
    }

    /// Checks every value that its type alone does not constrain.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let n = &self.neo4j;
        let uri = Url::parse(&n.uri)
            .map_err(|e| SettingsError::new("neo4j.uri", redact_url(&n.uri), e.to_string()))?;
        if !matches!(
            uri.scheme(),
            "bolt" | "neo4j" | "bolt+s" | "bolt+ssc" | "neo4j+s" | "neo4j+ssc"
        ) {
            return Err(SettingsError::new(
                "neo4j.uri",
                redact_url(&n.uri),
                "scheme must be bolt:// or neo4j://",
            ));
        }
        if uri.password().is_some() {
            return Err(SettingsError::new(
                "neo4j.uri",
                redact_url(&n.uri),
                "put credentials in neo4j.user and neo4j.password, not in the URI",
            ));
        }
        if uri.host_str().is_none_or(str::is_empty) {
            return Err(SettingsError::new(
                "neo4j.uri",
                redact_url(&n.uri),
                "a host is required",
            ));
        }
        at_least_two("neo4j.max_connections", n.max_connections)?;
        io_threads("neo4j.io_threads", n.io_threads)?;
        bounded(
            "neo4j.connect_timeout",
            n.connect_timeout,
            MAX_SUPERVISION_DELAY,
        )?;
        bounded("neo4j.query_timeout", n.query_timeout, MAX_QUERY_TIMEOUT)?;
        bounded(
            "neo4j.probe_interval",
            n.probe_interval,
            MAX_SUPERVISION_DELAY,
        )?;
        bounded(
            "neo4j.probe_timeout",
            n.probe_timeout,
            MAX_SUPERVISION_DELAY,
        )?;

        let p = &self.postgres;
        let url = Url::parse(&p.url)
            .map_err(|e| SettingsError::new("postgres.url", redact_url(&p.url), e.to_string()))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(SettingsError::new(
                "postgres.url",
                redact_url(&p.url),
                "scheme must be postgres://",
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(SettingsError::new(
                "postgres.url",
                redact_url(&p.url),
                "a host is required",
            ));
        }
        for (key, _) in url.query_pairs() {
            if !is_safe_query_key(&key) {
                return Err(SettingsError::new(
                    "postgres.url",
                    redact_url(&p.url),
                    format!(
                        "unsupported parameter `{}` (only sslmode; other settings have their own keys)",
                        printable_query_key(&key)
                    ),
                ));
            }
        }
        check_schema(&p.schema)?;
        at_least_two("postgres.max_connections", p.max_connections)?;
        if p.min_connections > p.max_connections {
            return Err(SettingsError::new(
                "postgres.min_connections",
                p.min_connections,
                format!(
                    "must not exceed postgres.max_connections ({})",
                    p.max_connections
                ),
            ));
        }
        io_threads("postgres.io_threads", p.io_threads)?;
        bounded(
            "postgres.connect_timeout",
            p.connect_timeout,
            MAX_SUPERVISION_DELAY,
        )?;
        bounded(
            "postgres.statement_timeout",
            p.statement_timeout,
            MAX_QUERY_TIMEOUT,
        )?;
        bounded("postgres.query_timeout", p.query_timeout, MAX_QUERY_TIMEOUT)?;
        bounded(
            "postgres.probe_interval",
            p.probe_interval,
            MAX_SUPERVISION_DELAY,
        )?;
        bounded(
            "postgres.probe_timeout",
            p.probe_timeout,
            MAX_SUPERVISION_DELAY,
        )?;
        if p.application_name.is_empty() || p.application_name.len() > 63 {
            return Err(SettingsError::new(
                "postgres.application_name",
                &p.application_name,
                "must be 1 to 63 characters",
            ));
        }

        let b = &self.backoff;
        bounded("backoff.initial", b.initial, MAX_SUPERVISION_DELAY)?;
        at_most("backoff.max", b.max, MAX_SUPERVISION_DELAY)?;
        if b.max < b.initial {
            return Err(SettingsError::new(
                "backoff.max",
                humantime::format_duration(b.max),
                "must be at least backoff.initial",
            ));
        }
        if !(1.0..=MAX_BACKOFF_MULTIPLIER).contains(&b.multiplier) {
            return Err(SettingsError::new(
                "backoff.multiplier",
                b.multiplier,
                format!("must be between 1 and {MAX_BACKOFF_MULTIPLIER}"),
            ));
        }
        if !(0.0..=1.0).contains(&b.jitter) {
            return Err(SettingsError::new(
                "backoff.jitter",
                b.jitter,
                "must be between 0 and 1",
            ));
        }

        let r = &self.retry;
        positive("retry.max_attempts", r.max_attempts)?;
        at_most("retry.initial", r.initial, MAX_RETRY_DELAY)?;
        at_most("retry.max", r.max, MAX_RETRY_DELAY)?;
        if r.max < r.initial {
            return Err(SettingsError::new(
                "retry.max",
                humantime::format_duration(r.max),
                "must be at least retry.initial",
            ));
        }

        positive("breaker.failure_threshold", self.breaker.failure_threshold)?;
        if self.breaker.failure_threshold > crate::circuit::MAX_THRESHOLD {
            return Err(SettingsError::new(
                "breaker.failure_threshold",
                self.breaker.failure_threshold,
                format!("must be at most {}", crate::circuit::MAX_THRESHOLD),
            ));
        }
        bounded(
            "breaker.cooldown",
            self.breaker.cooldown,
            MAX_SUPERVISION_DELAY,
        )?;
        Ok(())
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

fn positive(key: &str, value: u32) -> Result<(), SettingsError> {
    if value == 0 {
        return Err(SettingsError::new(key, value, "must be at least 1"));
    }
    Ok(())
}

/// One connection is kept for probes, so that a busy pool cannot fail them.
fn at_least_two(key: &str, value: u32) -> Result<(), SettingsError> {
    if value < 2 {
        return Err(SettingsError::new(
            key,
            value,
            "must be at least 2 (one connection is kept for probes)",
        ));
    }
    Ok(())
}

/// A number of I/O threads: at least one to run calls, and no more than a machine can use.
fn io_threads(key: &str, value: usize) -> Result<(), SettingsError> {
    if !(1..=64).contains(&value) {
        return Err(SettingsError::new(key, value, "must be between 1 and 64"));
    }
    Ok(())
}

/// A duration that must be longer than zero and at most `max`.
pub(crate) fn bounded(key: &str, value: Duration, max: Duration) -> Result<(), SettingsError> {
    if value.is_zero() {
        return Err(SettingsError::new(key, "0s", "must be longer than zero"));
    }
    at_most(key, value, max)
}

/// A duration that must be at most `max`; the error names the bound.
pub(crate) fn at_most(key: &str, value: Duration, max: Duration) -> Result<(), SettingsError> {
    if value > max {
        return Err(SettingsError::new(
            key,
            humantime::format_duration(value),
            format!("must be at most {}", humantime::format_duration(max)),
        ));
    }
    Ok(())
}

/// Checks `postgres.schema`. It is pasted into SQL (the `search_path` of every connection, the
/// migrations' schema and bookkeeping table), where it cannot be a bind parameter, so only a
/// plain identifier is safe. Every entry that pastes it checks again ([`crate::PgDriver::new`],
/// [`crate::postgres::run_migrations`]), for settings that never went through
/// [`WardenSettings::validate`].
pub(crate) fn check_schema(schema: &str) -> Result<(), SettingsError> {
    if !is_identifier(schema) {
        return Err(SettingsError::new(
            "postgres.schema",
            schema,
            "must be a plain identifier (letters, digits, underscore; not starting with a digit; at most 63 bytes)",
        ));
    }
    Ok(())
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 63
}

/// Decodes `%XX` escapes in a URL component (passwords may contain `@`, `:` or `/`).
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URL with its password, every query value but `sslmode`'s and any fragment replaced by
/// `***`; unparsable input is redacted whole. The user, host and path stay, so that an error
/// still says which server and database it is about.
pub fn redact_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                // Setting a password only fails for URLs that cannot have one.
                let _ = url.set_password(Some(REDACTED));
            }
            if url.query().is_some() {
                let pairs: Vec<(String, String)> = url
                    .query_pairs()
                    .map(|(key, value)| {
                        let value = if is_safe_query_key(&key) {
                            value.into_owned()
                        } else {
                            REDACTED.to_owned()
                        };
                        (printable_query_key(&key).to_owned(), value)
                    })
                    .collect();
                url.query_pairs_mut().clear().extend_pairs(pairs);
            }
            if url.fragment().is_some() {
                url.set_fragment(Some(REDACTED));
            }
            url.to_string()
        }
        Err(_) => REDACTED.to_owned(),
    }
}

fn serialize_redacted_url<S: Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&redact_url(url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let s = WardenSettings::default();
        s.validate().unwrap();
        assert_eq!(s.neo4j.max_connections, 16);
        assert_eq!(s.postgres.schema, "walltrack");
        assert_eq!(s.backoff.max, Duration::from_secs(30));
        assert_eq!(s.retry.max_attempts, 3);
        assert_eq!(s.breaker.failure_threshold, 5);
    }

    #[test]
    fn durations_parse_from_humantime_strings() {
        let s: WardenSettings = serde_json::from_str(
            r#"{"breaker": {"cooldown": "45s"}, "retry": {"initial": "250ms"}}"#,
        )
        .unwrap();
        assert_eq!(s.breaker.cooldown, Duration::from_secs(45));
        assert_eq!(s.retry.initial, Duration::from_millis(250));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = serde_json::from_str::<WardenSettings>(r#"{"breaker": {"cooldwn": "45s"}}"#)
            .unwrap_err();
        assert!(err.to_string().contains("cooldwn"), "{err}");
    }

    #[test]
    fn validation_names_the_key() {
        let mut s = WardenSettings::default();
        s.postgres.min_connections = 20;
        let err = s.validate().unwrap_err();
        assert_eq!(err.key, "postgres.min_connections");

        let mut s = WardenSettings::default();
        s.backoff.jitter = 1.5;
        assert_eq!(s.validate().unwrap_err().key, "backoff.jitter");

        let mut s = WardenSettings::default();
        s.postgres.url = "mysql://x@h/db".into();
        assert_eq!(s.validate().unwrap_err().key, "postgres.url");

        let mut s = WardenSettings::default();
        s.postgres.schema = "bad-schema; drop".into();
        assert_eq!(s.validate().unwrap_err().key, "postgres.schema");

        let mut s = WardenSettings::default();
        s.postgres.io_threads = 0;
        assert_eq!(s.validate().unwrap_err().key, "postgres.io_threads");

        for threads in [0, 65] {
            let mut s = WardenSettings::default();
            s.neo4j.io_threads = threads;
            assert_eq!(s.validate().unwrap_err().key, "neo4j.io_threads");
        }
    }

    #[test]
    fn durations_and_the_multiplier_have_upper_bounds() {
        type Set = fn(&mut WardenSettings, Duration);
        let hour = MAX_SUPERVISION_DELAY;
        let day = MAX_QUERY_TIMEOUT;
        let minute = MAX_RETRY_DELAY;
        let cases: [(&str, Duration, Set); 14] = [
            ("neo4j.connect_timeout", hour, |s, d| {
                s.neo4j.connect_timeout = d
            }),
            ("neo4j.query_timeout", day, |s, d| s.neo4j.query_timeout = d),
            ("neo4j.probe_interval", hour, |s, d| {
                s.neo4j.probe_interval = d
            }),
            ("neo4j.probe_timeout", hour, |s, d| {
                s.neo4j.probe_timeout = d
            }),
            ("postgres.connect_timeout", hour, |s, d| {
                s.postgres.connect_timeout = d
            }),
            ("postgres.statement_timeout", day, |s, d| {
                s.postgres.statement_timeout = d
            }),
            ("postgres.query_timeout", day, |s, d| {
                s.postgres.query_timeout = d
            }),
            ("postgres.probe_interval", hour, |s, d| {
                s.postgres.probe_interval = d
            }),
            ("postgres.probe_timeout", hour, |s, d| {
                s.postgres.probe_timeout = d
            }),
            ("backoff.initial", hour, |s, d| {
                s.backoff.initial = d;
                s.backoff.max = s.backoff.max.max(d).min(MAX_SUPERVISION_DELAY);
            }),
            ("backoff.max", hour, |s, d| s.backoff.max = d),
            ("retry.initial", minute, |s, d| {
                s.retry.initial = d;
                s.retry.max = s.retry.max.max(d).min(MAX_RETRY_DELAY);
            }),
            ("retry.max", minute, |s, d| s.retry.max = d),
            ("breaker.cooldown", hour, |s, d| s.breaker.cooldown = d),
        ];
        for (key, bound, set) in cases {
            let mut s = WardenSettings::default();
            set(&mut s, bound);
            assert_eq!(s.validate(), Ok(()), "{key} at its bound");
            set(&mut s, bound + Duration::from_millis(1));
            let err = s.validate().unwrap_err();
            assert_eq!(err.key, key);
            let bound = humantime::format_duration(bound).to_string();
            assert!(
                err.reason == format!("must be at most {bound}"),
                "{key}: {err}"
            );
        }

        // The values of the issue, which passed before.
        let mut s = WardenSettings::default();
        s.breaker.cooldown = humantime::parse_duration("100000 years").unwrap();
        assert_eq!(s.validate().unwrap_err().key, "breaker.cooldown");
        let mut s = WardenSettings::default();
        s.backoff.max = humantime::parse_duration("999999999999h").unwrap();
        assert_eq!(s.validate().unwrap_err().key, "backoff.max");

        let mut s = WardenSettings::default();
        s.backoff.multiplier = MAX_BACKOFF_MULTIPLIER;
        assert_eq!(s.validate(), Ok(()));
        for bad in [10.5, 1e300, f64::INFINITY, f64::NAN, 0.5] {
            s.backoff.multiplier = bad;
            let err = s.validate().unwrap_err();
            assert_eq!(err.key, "backoff.multiplier");
            assert_eq!(err.reason, "must be between 1 and 10", "{bad}");
        }
    }

    #[test]
    fn url_passwords_are_redacted_in_errors_and_output() {
        let mut s = WardenSettings::default();
        s.postgres.url = "postgres://app:s3cret@db:5432/x?bogus=1".into();
        let err = s.validate().unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
        let out = serde_json::to_string(&s).unwrap();
        assert!(!out.contains("s3cret"), "{out}");
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("s3cret") && debug.contains("app:***@db"),
            "{debug}"
        );
        assert!(out.contains("app:***@db"), "{out}");
    }

    #[test]
    fn url_query_values_are_redacted_in_errors_and_output() {
        let mut s = WardenSettings::default();
        s.postgres.url = "postgres://u@127.0.0.1/db?sslmode=disable&password=qpw".into();
        s.neo4j.uri = "neo4j://graph:7687?policy=eu&token=tpw".into();
        let err = s.validate().unwrap_err().to_string();
        assert!(!err.contains("qpw"), "{err}");
        assert!(err.contains("unsupported parameter `password`"), "{err}");
        assert!(
            err.contains("postgres://u@127.0.0.1/db?sslmode=disable&password=***"),
            "{err}"
        );
        for out in [serde_json::to_string(&s).unwrap(), format!("{s:?}")] {
            assert!(!out.contains("qpw") && !out.contains("tpw"), "{out}");
            assert!(
                out.contains("neo4j://graph:7687?policy=***&token=***"),
                "{out}"
            );
        }

        // A typo that puts the value into the name, and a fragment.
        s.postgres.url = "postgres://u@h/db?password:qpw#qpw2".into();
        let err = s.validate().unwrap_err().to_string();
        assert!(!err.contains("qpw"), "{err}");
        assert_eq!(
            redact_url("postgres://u@h/db?password:qpw#qpw2"),
            "postgres://u@h/db?***=***#***"
        );

        // Neither a missing host on a URI with a query.
        let mut s = WardenSettings::default();
        s.neo4j.uri = "bolt://?token=tpw".into();
        let err = s.validate().unwrap_err();
        assert_eq!(err.key, "neo4j.uri");
        assert!(!err.to_string().contains("tpw"), "{err}");
    }

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
