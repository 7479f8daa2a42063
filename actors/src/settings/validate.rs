//! What types alone cannot check: ranges, bounds, URLs, orderings, identifiers.

use std::time::Duration;

use ::url::Url;

use super::*;
use crate::secret::{is_safe_query_key, printable_query_key};

impl WardenSettings {
    /// Reads `password_file`s into their `password`. Call once, before [`Self::validate`].
    pub fn load_secret_files(&mut self) -> Result<(), SettingsError> {
        if let Some(path) = &self.neo4j.password_file {
            self.neo4j.password = Secret::from_file("neo4j.password_file", path)?;
        }
        if let Some(path) = &self.postgres.password_file {
            self.postgres.password = Secret::from_file("postgres.password_file", path)?;
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
        probe_ends_before_the_next("neo4j", n.probe_interval, n.probe_timeout)?;

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
        probe_ends_before_the_next("postgres", p.probe_interval, p.probe_timeout)?;
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
        self.projection.validate(&self.neo4j)?;
        Ok(())
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

/// `probe_timeout < probe_interval`: a probe that may last longer than the interval overlaps
/// the next one, so a hung database is reported later than `probe_interval + probe_timeout`
/// promises and probes pile up on the connection kept for them.
fn probe_ends_before_the_next(
    db: &str,
    interval: Duration,
    timeout: Duration,
) -> Result<(), SettingsError> {
    if timeout >= interval {
        return Err(SettingsError::new(
            &format!("{db}.probe_timeout"),
            humantime::format_duration(timeout),
            format!(
                "must be shorter than `{db}.probe_interval` ({}), so that a probe ends before \
                 the next one is due",
                humantime::format_duration(interval)
            ),
        ));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let s = WardenSettings::default();
        s.validate().unwrap();
        assert_eq!(s.neo4j.max_connections, 16);
        assert_eq!(s.postgres.schema, "warden");
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
    fn a_probe_timeout_must_be_shorter_than_its_interval() {
        for db in ["neo4j", "postgres"] {
            for timeout_ms in [2_000, 5_000] {
                let mut s = WardenSettings::default();
                let timeout = Duration::from_millis(timeout_ms);
                if db == "neo4j" {
                    s.neo4j.probe_timeout = timeout;
                } else {
                    s.postgres.probe_timeout = timeout;
                }
                let err = s.validate().unwrap_err();
                assert_eq!(err.key, format!("{db}.probe_timeout"));
                assert_eq!(err.value, humantime::format_duration(timeout).to_string());
                assert!(
                    err.reason.contains(&format!("`{db}.probe_interval` (2s)")),
                    "{err}"
                );
            }
        }
        let mut s = WardenSettings::default();
        s.postgres.probe_timeout = Duration::from_millis(1_999);
        s.neo4j.probe_timeout = Duration::from_millis(1_999);
        assert_eq!(s.validate(), Ok(()));
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
        let cases: [(&str, Duration, Set); 12] = [
            ("neo4j.connect_timeout", hour, |s, d| {
                s.neo4j.connect_timeout = d
            }),
            ("neo4j.query_timeout", day, |s, d| {
                s.neo4j.query_timeout = d;
                // A lease must outlast a graph call, and leases are bounded by an hour.
                s.projection.enabled = false;
            }),
            ("neo4j.probe_interval", hour, |s, d| {
                s.neo4j.probe_interval = d
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
        // A probe timeout is bounded by its interval (at most an hour) and by the hour itself.
        let mut s = WardenSettings::default();
        s.neo4j.probe_interval = hour;
        s.neo4j.probe_timeout = hour - Duration::from_millis(1);
        s.postgres.probe_interval = hour;
        s.postgres.probe_timeout = hour - Duration::from_millis(1);
        assert_eq!(s.validate(), Ok(()));
        s.postgres.probe_timeout = hour + Duration::from_millis(1);
        let err = s.validate().unwrap_err();
        assert_eq!(err.key, "postgres.probe_timeout");
        assert_eq!(err.reason, "must be at most 1h");

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
}
