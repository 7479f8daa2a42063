//! The settings that may change while warden runs, and how a `config` table's rows become a
//! complete, validated snapshot of them (or an error that names the key). Pure: no database,
//! no clock, so every rule is unit-tested.
//!
//! A snapshot is the file/environment settings with the table's rows laid over them, checked
//! by the very [`WardenSettings::validate`] the file goes through. It is all or nothing, as
//! PostgreSQL treats its own configuration file: one bad row, and the whole table is refused
//! (the previous snapshot stays in force), never applied key by key.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    error::Database,
    settings::{BackoffSettings, BreakerSettings, RetrySettings, SettingsError, WardenSettings},
};

/// The keys the table may set, in the order they are listed. Everything else in
/// [`WardenSettings`] (URLs, credentials, pool sizes, threads, the schema, connect and
/// statement timeouts, whether migrations run) shapes connections or pools that exist once,
/// and needs a restart.
pub const RUNTIME_KEYS: &[&str] = &[
    "breaker.failure_threshold",
    "breaker.cooldown",
    "backoff.initial",
    "backoff.max",
    "backoff.multiplier",
    "backoff.jitter",
    "retry.max_attempts",
    "retry.initial",
    "retry.max",
    "neo4j.probe_interval",
    "neo4j.probe_timeout",
    "neo4j.query_timeout",
    "postgres.probe_interval",
    "postgres.probe_timeout",
    "postgres.query_timeout",
];

/// The longest key the table may hold, and the most rows it may have: a table is written by
/// people and by the settings API, and anything past these is a mistake, not configuration.
pub const MAX_KEY_LEN: usize = 64;
/// See [`MAX_KEY_LEN`].
pub const MAX_ROWS: usize = 256;

/// The per-database values that may change at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseTunables {
    /// Time between two liveness probes; also how long a half-open circuit tells callers to
    /// wait, and a third of how long health waits before calling the actor stale.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// Bound on one probe.
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
    /// Bound on a whole call, retries included, counted from its admission.
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
}

/// Every value that may change at run time: what the actors read at each decision point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSettings {
    /// The graph database's probes and call deadline.
    pub neo4j: DatabaseTunables,
    /// PostgreSQL's probes and call deadline.
    pub postgres: DatabaseTunables,
    /// The reconnect schedule.
    pub backoff: BackoffSettings,
    /// The retries of one call.
    pub retry: RetrySettings,
    /// Both circuits.
    pub breaker: BreakerSettings,
}

impl RuntimeSettings {
    /// The runtime part of `settings`.
    pub fn of(settings: &WardenSettings) -> Self {
        let db = |probe_interval, probe_timeout, query_timeout| DatabaseTunables {
            probe_interval,
            probe_timeout,
            query_timeout,
        };
        let (n, p) = (&settings.neo4j, &settings.postgres);
        Self {
            neo4j: db(n.probe_interval, n.probe_timeout, n.query_timeout),
            postgres: db(p.probe_interval, p.probe_timeout, p.query_timeout),
            backoff: settings.backoff,
            retry: settings.retry,
            breaker: settings.breaker,
        }
    }

    /// One database's values.
    pub fn database(&self, database: Database) -> &DatabaseTunables {
        match database {
            Database::Neo4j => &self.neo4j,
            Database::Postgres => &self.postgres,
        }
    }

    /// `settings` with these values in place of its own.
    pub fn applied_to(&self, settings: &WardenSettings) -> WardenSettings {
        let mut s = settings.clone();
        s.neo4j.probe_interval = self.neo4j.probe_interval;
        s.postgres.probe_interval = self.postgres.probe_interval;
        s.neo4j.probe_timeout = self.neo4j.probe_timeout;
        s.neo4j.query_timeout = self.neo4j.query_timeout;
        s.postgres.probe_timeout = self.postgres.probe_timeout;
        s.postgres.query_timeout = self.postgres.query_timeout;
        s.backoff = self.backoff;
        s.retry = self.retry;
        s.breaker = self.breaker;
        s
    }

    /// Every value by its dotted key, as the file and the table spell it (durations as
    /// humantime strings).
    pub fn flatten(&self) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        if let Ok(Value::Object(sections)) = serde_json::to_value(self) {
            for (section, fields) in sections {
                if let Value::Object(fields) = fields {
                    for (field, value) in fields {
                        out.insert(format!("{section}.{field}"), value);
                    }
                }
            }
        }
        out
    }
}

/// What a key of the table is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// One of [`RUNTIME_KEYS`].
    Runtime,
    /// A setting of the file that only a restart can change.
    RestartOnly,
    /// Not a setting at all.
    Unknown,
}

/// Which kind of key `key` is.
pub fn classify(key: &str) -> KeyKind {
    if RUNTIME_KEYS.contains(&key) {
        return KeyKind::Runtime;
    }
    let Some((section, field)) = key.split_once('.') else {
        return KeyKind::Unknown;
    };
    // The file's keys, from the settings' own serialization, so a new setting is classified
    // without anyone remembering to list it here. `password_file` is skipped when unset.
    let known = serde_json::to_value(WardenSettings::default())
        .ok()
        .and_then(|v| v.get(section).cloned())
        .and_then(|v| v.get(field).cloned())
        .is_some()
        || (matches!(section, "neo4j" | "postgres") && field == "password_file");
    if known {
        KeyKind::RestartOnly
    } else {
        KeyKind::Unknown
    }
}

/// Why a table (or one value for it) cannot become the running settings.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuntimeSettingsError {
    /// A setting that shapes connections or pools; the table may not set it.
    #[error(
        "`{key}` cannot change while warden runs (it shapes connections or pools); set it in the \
         configuration file and restart"
    )]
    RestartOnly {
        /// The key.
        key: String,
    },
    /// Not a setting.
    #[error("`{key}` is not a setting; the table may hold: {}", RUNTIME_KEYS.join(", "))]
    Unknown {
        /// The key, shortened if it was absurdly long.
        key: String,
    },
    /// A value of the wrong type or format (`"abc"` for a number, `30` for a duration).
    #[error("invalid value for `{key}` ({value}): {reason}")]
    Type {
        /// The key.
        key: String,
        /// The value as JSON, shortened.
        value: String,
        /// What the type expects.
        reason: String,
    },
    /// Well typed, but refused by the file's rules (a range, an ordering).
    #[error(transparent)]
    Invalid(#[from] SettingsError),
    /// More rows than any configuration needs.
    #[error("the config table has more than {MAX_ROWS} rows")]
    TooManyRows,
}

impl RuntimeSettingsError {
    /// Whether the same table could be accepted later: never, it must be edited.
    pub fn is_transient(&self) -> bool {
        false
    }

    /// The key the error is about, if it names one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::RestartOnly { key } | Self::Unknown { key } | Self::Type { key, .. } => Some(key),
            Self::Invalid(e) => Some(&e.key),
            Self::TooManyRows => None,
        }
    }
}

/// A value or key shown in an error: bounded, since either may come from anyone.
fn shown(text: &str) -> String {
    const MAX: usize = 80;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Checks that `key` may be set from the table at all.
pub fn check_key(key: &str) -> Result<(), RuntimeSettingsError> {
    match classify(key) {
        KeyKind::Runtime => Ok(()),
        KeyKind::RestartOnly => Err(RuntimeSettingsError::RestartOnly {
            key: key.to_owned(),
        }),
        KeyKind::Unknown => Err(RuntimeSettingsError::Unknown { key: shown(key) }),
    }
}

/// The snapshot `rows` (key, JSON value) make over `base` (the file and environment), validated
/// as a whole by the file's rules. Any bad row refuses the whole table.
pub fn overlay(
    base: &WardenSettings,
    rows: &[(String, Value)],
) -> Result<RuntimeSettings, RuntimeSettingsError> {
    if rows.len() > MAX_ROWS {
        return Err(RuntimeSettingsError::TooManyRows);
    }
    let mut current = serde_json::to_value(RuntimeSettings::of(base)).map_err(|e| {
        RuntimeSettingsError::Type {
            key: "(all)".into(),
            value: String::new(),
            reason: e.to_string(),
        }
    })?;
    for (key, value) in rows {
        check_key(key)?;
        let (section, field) = key.split_once('.').unwrap_or_default();
        let mut next = current.clone();
        if let Some(slot) = next.get_mut(section).and_then(|s| s.get_mut(field)) {
            *slot = value.clone();
        }
        // One key at a time, so that a type error names the key it is about.
        serde_json::from_value::<RuntimeSettings>(next.clone()).map_err(|e| {
            RuntimeSettingsError::Type {
                key: key.clone(),
                value: shown(&value.to_string()),
                reason: e.to_string(),
            }
        })?;
        current = next;
    }
    let runtime: RuntimeSettings =
        serde_json::from_value(current).map_err(|e| RuntimeSettingsError::Type {
            key: "(all)".into(),
            value: String::new(),
            reason: e.to_string(),
        })?;
    runtime.applied_to(base).validate()?;
    Ok(runtime)
}

/// The keys whose values differ between `old` and `new`, with both values.
pub fn diff(old: &RuntimeSettings, new: &RuntimeSettings) -> Vec<(String, Value, Value)> {
    let (old, new) = (old.flatten(), new.flatten());
    new.into_iter()
        .filter_map(|(key, value)| {
            let before = old.get(&key).cloned().unwrap_or(Value::Null);
            (before != value).then_some((key, before, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows(pairs: &[(&str, Value)]) -> Vec<(String, Value)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn every_runtime_key_is_a_field_and_round_trips() {
        let base = WardenSettings::default();
        let flat = RuntimeSettings::of(&base).flatten();
        let keys: Vec<&str> = flat.keys().map(String::as_str).collect();
        let mut listed = RUNTIME_KEYS.to_vec();
        listed.sort_unstable();
        assert_eq!(keys, listed);
        assert_eq!(flat["breaker.cooldown"], json!("30s"));
        assert_eq!(flat["breaker.failure_threshold"], json!(5));
        // An empty table is the file.
        assert_eq!(overlay(&base, &[]).unwrap(), RuntimeSettings::of(&base));
    }

    #[test]
    fn rows_lay_over_the_file_and_are_applied_whole() {
        let base = WardenSettings::default();
        let got = overlay(
            &base,
            &rows(&[
                ("breaker.failure_threshold", json!(3)),
                ("breaker.cooldown", json!("45s")),
                ("postgres.query_timeout", json!("2s")),
                ("backoff.multiplier", json!(3)),
            ]),
        )
        .unwrap();
        assert_eq!(got.breaker.failure_threshold, 3);
        assert_eq!(got.breaker.cooldown, Duration::from_secs(45));
        assert_eq!(got.postgres.query_timeout, Duration::from_secs(2));
        assert_eq!(got.neo4j.query_timeout, Duration::from_secs(30));
        assert_eq!(got.backoff.multiplier, 3.0);
        let changed = diff(&RuntimeSettings::of(&base), &got);
        assert_eq!(changed.len(), 4, "{changed:?}");
        assert!(changed.contains(&("breaker.failure_threshold".into(), json!(5), json!(3))));
    }

    #[test]
    fn a_bad_row_refuses_the_whole_table_and_names_its_key() {
        let base = WardenSettings::default();
        let err = |pairs: &[(&str, Value)]| overlay(&base, &rows(pairs)).unwrap_err();

        let e = err(&[
            ("breaker.cooldown", json!("45s")),
            ("breaker.failure_threshold", json!("abc")),
        ]);
        assert_eq!(e.key(), Some("breaker.failure_threshold"), "{e}");
        assert!(e.to_string().contains("\"abc\""), "{e}");

        // The file's ranges and orderings.
        let e = err(&[("breaker.failure_threshold", json!(0))]);
        assert!(
            matches!(&e, RuntimeSettingsError::Invalid(s) if s.key == "breaker.failure_threshold"),
            "{e}"
        );
        let e = err(&[("breaker.failure_threshold", json!(-1))]);
        assert_eq!(e.key(), Some("breaker.failure_threshold"));
        let e = err(&[("backoff.initial", json!("1m"))]);
        assert_eq!(e.key(), Some("backoff.max"), "{e}");
        let e = err(&[("breaker.cooldown", json!("2h"))]);
        assert!(e.to_string().contains("at most 1h"), "{e}");
        let e = err(&[("postgres.probe_interval", json!(30))]);
        assert_eq!(e.key(), Some("postgres.probe_interval"), "{e}");

        // Keys a restart needs, and keys that are nothing.
        let e = err(&[("postgres.url", json!("postgres://x@y/z"))]);
        assert!(matches!(e, RuntimeSettingsError::RestartOnly { .. }), "{e}");
        assert!(e.to_string().contains("restart"), "{e}");
        for key in [
            "postgres.max_connections",
            "postgres.schema",
            "neo4j.password_file",
        ] {
            assert_eq!(classify(key), KeyKind::RestartOnly, "{key}");
        }
        let e = err(&[("breaker.cooldwn", json!("1s"))]);
        assert!(matches!(e, RuntimeSettingsError::Unknown { .. }), "{e}");
        let long = "x".repeat(10_000);
        let e = err(&[(long.as_str(), json!(1))]);
        assert!(e.to_string().len() < 1000, "errors stay short");
    }
}
