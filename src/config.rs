//! The daemon's configuration: a TOML file layered under environment variables.
//!
//! Layers, lowest first: built-in defaults; the file (`--config PATH`, else
//! `/etc/warden/warden.toml` if it exists); the seed product's variables (`NEO4J_URI`,
//! `DATABASE_URL`, ...); then `WARDEN__SECTION__KEY` for any key. Secrets may also come from
//! files (`password_file`, `NEO4J_PASSWORD_FILE`). Bad configuration is a [`ConfigError`] that
//! names the key and the value (secrets redacted); the daemon exits with 78 (EX_CONFIG).

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use warden_actors::settings::{
    BackoffSettings, BreakerSettings, Neo4jSettings, PostgresSettings, RetrySettings,
    MAX_SUPERVISION_DELAY,
};
use warden_actors::{
    runtime::TableSettings, ProjectionSettings, Secret, SettingsError, WardenSettings,
};

/// Where the daemon looks for its file when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/warden/warden.toml";

/// sysexits' EX_CONFIG: what systemd and operators expect from a bad configuration.
pub const EX_CONFIG: u8 = 78;

/// The seed product's variable names, and the keys they set.
pub const SEEDS: &[(&str, &str)] = &[
    ("NEO4J_URI", "neo4j.uri"),
    ("NEO4J_USER", "neo4j.user"),
    ("NEO4J_PASSWORD", "neo4j.password"),
    ("NEO4J_PASSWORD_FILE", "neo4j.password_file"),
    ("NEO4J_DATABASE", "neo4j.database"),
    ("DATABASE_URL", "postgres.url"),
    ("POSTGRES_SCHEMA", "postgres.schema"),
];

/// The whole daemon configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// How long in-flight work may take to finish after SIGTERM.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// `[http]`.
    pub http: HttpConfig,
    /// `[log]`.
    pub log: LogConfig,
    /// `[neo4j]`.
    pub neo4j: Neo4jSettings,
    /// `[postgres]`.
    pub postgres: PostgresSettings,
    /// `[backoff]`.
    pub backoff: BackoffSettings,
    /// `[retry]`.
    pub retry: RetrySettings,
    /// `[breaker]`.
    pub breaker: BreakerSettings,
    /// `[runtime_settings]`: following the `config` table.
    pub runtime_settings: TableSettings,
    /// Which keys the file and the environment set (for the settings API).
    #[serde(skip)]
    pub origins: crate::api::settings::origins::Origins,
    /// `[projection]`.
    pub projection: ProjectionSettings,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            shutdown_timeout: Duration::from_secs(10),
            http: HttpConfig::default(),
            log: LogConfig::default(),
            neo4j: Neo4jSettings::default(),
            postgres: PostgresSettings::default(),
            backoff: BackoffSettings::default(),
            retry: RetrySettings::default(),
            breaker: BreakerSettings::default(),
            runtime_settings: TableSettings::default(),
            origins: Default::default(),
            projection: ProjectionSettings::default(),
        }
    }
}

/// `[http]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address the health API listens on.
    #[serde(deserialize_with = "crate::config_values::socket_addr")]
    pub bind: SocketAddr,
    /// HTTP worker threads. One worker serves about 90k health requests/s on this project's
    /// 2-core machines; more workers only add scheduling delay to the latency tail (p99 of
    /// 4 ms instead of 1 ms at 64 connections, measured with scripts/bench).
    pub workers: usize,
    /// The bearer token of the `/api/v1` API (a secret, shown as `***`; unset: the API answers
    /// 403). See `crate::api::auth` for the rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_token: Option<Secret>,
    /// A file holding the token (systemd credentials, docker secrets); wins over `api_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_token_file: Option<PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 1,
            api_token: None,
            api_token_file: None,
        }
    }
}

/// Log output format; named in the configuration by [`LogFormat::name`] (see
/// `crate::config_values`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable, for a terminal.
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
    /// journald's native protocol, each field a journal field (see `crate::journald`).
    Journald,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Unset: journald when stderr is the journal (`JOURNAL_STREAM`), pretty on a terminal,
    /// json otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<LogFormat>,
    /// A tracing filter: `info`, `debug`, `warden=debug,sqlx=warn`, ...
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: None,
            level: "info".into(),
        }
    }
}

/// A configuration that cannot be used. Its text names the key and the offending value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--config` named a file that does not exist.
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    /// The file or an environment variable could not be parsed or has a wrong type or key.
    #[error("{0}")]
    Parse(String),
    /// A value is well-typed but unusable.
    #[error(transparent)]
    Invalid(#[from] SettingsError),
    /// A variable the configuration reads is not valid UTF-8.
    #[error("invalid configuration: environment variable {0} is not valid UTF-8")]
    NotUtf8(String),
}

/// Every value of a TOML table that is not itself a table, with its dotted key
/// (`postgres.probe_interval`): the one walk the settings API and the tests need.
pub fn toml_leaves(table: &toml::Table) -> Vec<(String, &toml::Value)> {
    fn walk<'t>(prefix: &str, table: &'t toml::Table, out: &mut Vec<(String, &'t toml::Value)>) {
        for (key, value) in table {
            let key = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                toml::Value::Table(t) => walk(&key, t, out),
                v => out.push((key, v)),
            }
        }
    }
    let mut out = Vec::new();
    walk("", table, &mut out);
    out
}

/// The process environment as text, for [`DaemonConfig::load`]. `std::env::vars` panics on a
/// variable that is not UTF-8; here such a variable is an error if the configuration reads it
/// (a seed variable or `WARDEN__*`), and skipped otherwise, since it is none of warden's
/// business.
pub fn environment() -> Result<HashMap<String, String>, ConfigError> {
    let mut env = HashMap::new();
    for (key, value) in std::env::vars_os() {
        // A name that is not UTF-8 cannot be one the configuration reads.
        let Some(key) = key.to_str() else {
            continue;
        };
        match value.into_string() {
            Ok(value) => {
                env.insert(key.to_owned(), value);
            }
            Err(_) if key.starts_with("WARDEN__") || SEEDS.iter().any(|(var, _)| *var == key) => {
                return Err(ConfigError::NotUtf8(key.to_owned()));
            }
            Err(_) => {}
        }
    }
    Ok(env)
}

/// The configuration file as a source, its syntax checked here first: the TOML parser's own
/// error quotes the offending line, and that line may hold a password (`password = "s3cret`
/// without its closing quote). This error gives the position and the reason only.
fn toml_file(
    path: &Path,
) -> Result<config::File<config::FileSourceString, config::FileFormat>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::Parse(format!(
            "invalid configuration: cannot read {}: {e}",
            path.display()
        ))
    })?;
    if let Err(e) = text.parse::<toml::Table>() {
        let at = e.span().map_or(0, |span| span.start).min(text.len());
        let before = text.get(..at).unwrap_or_default();
        let line = before.matches('\n').count() + 1;
        let column = before
            .rsplit('\n')
            .next()
            .unwrap_or_default()
            .chars()
            .count()
            + 1;
        return Err(ConfigError::Parse(format!(
            "invalid configuration: {}: TOML syntax error at line {line}, column {column}: {}",
            path.display(),
            e.message().trim_end()
        )));
    }
    Ok(config::File::from_str(&text, config::FileFormat::Toml))
}

impl DaemonConfig {
    /// Loads the configuration from the file and the given environment, then reads secret
    /// files and validates everything.
    pub fn load(path: Option<&Path>, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        match path {
            Some(path) if !path.exists() => return Err(ConfigError::MissingFile(path.to_owned())),
            Some(path) => builder = builder.add_source(toml_file(path)?),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                builder = builder.add_source(toml_file(Path::new(DEFAULT_CONFIG_PATH))?)
            }
            None => {}
        }
        let seeds: config::Map<String, String> = SEEDS
            .iter()
            .filter_map(|(var, key)| {
                env.get(*var)
                    .map(|value| (key.replace('.', "__").to_uppercase(), value.clone()))
            })
            .collect();
        builder = builder.add_source(
            config::Environment::default()
                .separator("__")
                .source(Some(seeds)),
        );
        let warden_vars: config::Map<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with("WARDEN__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("WARDEN")
                .prefix_separator("__")
                .separator("__")
                .source(Some(warden_vars)),
        );
        let raw = builder
            .build()
            .map_err(|e| ConfigError::Parse(describe(e)))?;
        let mut cfg: DaemonConfig = raw
            .try_deserialize()
            .map_err(|e| ConfigError::Parse(describe(e)))?;
        let mut settings = cfg.warden_settings();
        settings.load_secret_files()?;
        settings.validate()?;
        cfg.neo4j.password = settings.neo4j.password;
        cfg.postgres.password = settings.postgres.password;
        cfg.http.api_token = crate::api::auth::resolve_token(
            cfg.http.api_token.take(),
            cfg.http.api_token_file.as_deref(),
        )?;
        cfg.validate_daemon()?;
        let file = match path {
            Some(path) => Some(path),
            None => Some(Path::new(DEFAULT_CONFIG_PATH)).filter(|p| p.exists()),
        };
        cfg.origins = crate::api::settings::origins::Origins::of(file, env, SEEDS);
        Ok(cfg)
    }

    fn validate_daemon(&self) -> Result<(), SettingsError> {
        self.runtime_settings.validate()?;
        if self.http.workers == 0 || self.http.workers > 64 {
            return Err(SettingsError {
                key: "http.workers".into(),
                value: self.http.workers.to_string(),
                reason: "must be between 1 and 64".into(),
            });
        }
        if self.shutdown_timeout.is_zero() {
            return Err(SettingsError {
                key: "shutdown_timeout".into(),
                value: "0s".into(),
                reason: "must be longer than zero".into(),
            });
        }
        // The same bound as the actors' delays: a drain longer than an hour is a typo, and
        // service managers kill a stopping service far sooner (systemd's default is 90 s).
        if self.shutdown_timeout > MAX_SUPERVISION_DELAY {
            return Err(SettingsError {
                key: "shutdown_timeout".into(),
                value: humantime::format_duration(self.shutdown_timeout).to_string(),
                reason: format!(
                    "must be at most {}",
                    humantime::format_duration(MAX_SUPERVISION_DELAY)
                ),
            });
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(SettingsError {
                key: "log.level".into(),
                value: self.log.level.clone(),
                reason: e.to_string(),
            });
        }
        Ok(())
    }

    /// The actors' part.
    pub fn warden_settings(&self) -> WardenSettings {
        WardenSettings {
            neo4j: self.neo4j.clone(),
            postgres: self.postgres.clone(),
            backoff: self.backoff,
            retry: self.retry,
            breaker: self.breaker,
            projection: self.projection,
        }
    }

    /// The effective configuration as TOML, secrets shown as `***`, an unset password as
    /// `""` with a comment saying so.
    pub fn to_redacted_toml(&self) -> String {
        match toml::to_string_pretty(self) {
            Ok(text) => text
                .lines()
                .map(|line| {
                    if line == "password = \"\"" {
                        format!("{line}  # unset\n")
                    } else {
                        format!("{line}\n")
                    }
                })
                .collect(),
            Err(e) => format!("# cannot render the configuration: {e}\n"),
        }
    }
}

/// The config crate's error text, with the environment variable named where it helps.
fn describe(err: config::ConfigError) -> String {
    let text = err.to_string();
    // Values of secrets never reach here: passwords deserialize from any string, so no error
    // quotes one.
    format!("invalid configuration: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file(contents: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::io::Write::write_all(&mut f, contents.as_bytes()).unwrap();
        f
    }

    #[test]
    fn defaults_without_file_or_env() {
        let cfg = DaemonConfig::load(None, &env(&[])).unwrap();
        assert_eq!(cfg.http.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(cfg.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(cfg.postgres.schema, "warden");
    }

    #[test]
    fn env_layers_over_the_file_and_seeds_under_warden_vars() {
        let f = file("[breaker]\ncooldown = \"10s\"\nfailure_threshold = 7\n[neo4j]\nuri = \"bolt://file:7687\"\n");
        let cfg = DaemonConfig::load(
            Some(f.path()),
            &env(&[
                ("WARDEN__BREAKER__COOLDOWN", "45s"),
                ("NEO4J_URI", "bolt://seed:7687"),
                ("NEO4J_PASSWORD", "pw-from-env"),
                ("DATABASE_URL", "postgres://app@pg:5432/app"),
                ("WARDEN__POSTGRES__MAX_CONNECTIONS", "4"),
                ("WARDEN__POSTGRES__MIN_CONNECTIONS", "0"),
                ("WARDEN__POSTGRES__RUN_MIGRATIONS", "false"),
                ("POSTGRES_SCHEMA", "metrics"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.breaker.cooldown, Duration::from_secs(45));
        assert_eq!(cfg.breaker.failure_threshold, 7);
        assert_eq!(cfg.neo4j.uri, "bolt://seed:7687");
        assert_eq!(cfg.neo4j.password.expose(), "pw-from-env");
        assert_eq!(cfg.postgres.url, "postgres://app@pg:5432/app");
        assert_eq!(cfg.postgres.max_connections, 4);
        assert!(!cfg.postgres.run_migrations);
        assert_eq!(cfg.postgres.schema, "metrics");

        let cfg = DaemonConfig::load(
            None,
            &env(&[
                ("NEO4J_URI", "bolt://seed:7687"),
                ("WARDEN__NEO4J__URI", "bolt://explicit:7687"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.neo4j.uri, "bolt://explicit:7687");

        // Secrets from files, as systemd credentials and docker secrets provide them.
        let secret = file("from-a-file\n");
        let cfg = DaemonConfig::load(
            None,
            &env(&[
                ("NEO4J_PASSWORD_FILE", secret.path().to_str().unwrap()),
                ("NEO4J_PASSWORD", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.neo4j.password.expose(), "from-a-file");
    }

    #[test]
    fn errors_name_the_key() {
        let f = file("[breaker]\ncooldwn = \"10s\"\n");
        let err = DaemonConfig::load(Some(f.path()), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cooldwn"), "{err}");

        let err = DaemonConfig::load(None, &env(&[("WARDEN__BREAKER__COOLDOWN", "soon")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("breaker.cooldown") && err.contains("soon"),
            "{err}"
        );

        let err = DaemonConfig::load(None, &env(&[("WARDEN__POSTGRES__MAX_CONNECTIONS", "many")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("postgres.max_connections"), "{err}");

        let err = DaemonConfig::load(None, &env(&[("WARDEN__HTTP__BIND", "nowhere")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("http.bind"), "{err}");

        let err = DaemonConfig::load(Some(Path::new("/nonexistent/warden.toml")), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/warden.toml"), "{err}");

        let err = DaemonConfig::load(None, &env(&[("WARDEN__LOG__LEVEL", "warden=[")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("log.level"), "{err}");
    }

    /// Every duration setting has an upper bound (see `warden_actors::settings`): an absurd
    /// value of each key found in the default configuration is refused, naming the key, so a
    /// new duration setting cannot be forgotten. Near 2^64 s, deadline arithmetic would panic.
    #[test]
    fn every_duration_setting_is_bounded() {
        let cfg = DaemonConfig::default();
        let table: toml::Table = cfg.to_redacted_toml().parse().unwrap();
        let found: Vec<String> = toml_leaves(&table)
            .into_iter()
            .filter(|(_, v)| {
                v.as_str()
                    .is_some_and(|s| humantime::parse_duration(s).is_ok())
            })
            .map(|(key, _)| key)
            .collect();
        assert!(found.len() >= 15, "{found:?}");
        for key in found {
            let var = format!("WARDEN__{}", key.replace('.', "__").to_uppercase());
            for absurd in ["18446744073709551615s", "30days"] {
                let err = DaemonConfig::load(None, &env(&[(var.as_str(), absurd)]))
                    .unwrap_err()
                    .to_string();
                assert!(
                    err.contains(&key) && err.contains("at most"),
                    "{key}={absurd}: {err}"
                );
            }
        }
    }

    #[test]
    fn a_syntax_error_names_the_place_but_never_quotes_the_line() {
        let f = file("[neo4j]\nuser = \"app\"\npassword = \"hunter2-in-a-file\n");
        let err = DaemonConfig::load(Some(f.path()), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(
            err.contains("line 3, column") && err.contains(&f.path().display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn redacted_output_hides_every_secret() {
        let cfg = DaemonConfig::load(
            None,
            &env(&[
                ("NEO4J_PASSWORD", "graph-secret"),
                ("DATABASE_URL", "postgres://app:pg-secret@pg:5432/app"),
                ("WARDEN__POSTGRES__PASSWORD", "other-secret"),
            ]),
        )
        .unwrap();
        let out = cfg.to_redacted_toml();
        assert!(
            !out.contains("graph-secret")
                && !out.contains("pg-secret")
                && !out.contains("other-secret")
        );
        assert!(out.contains("password = \"***\""), "{out}");
        // Unset: shown as such, and the output still parses.
        let unset = DaemonConfig::load(None, &env(&[]))
            .unwrap()
            .to_redacted_toml();
        assert!(unset.contains("password = \"\"  # unset\n"), "{unset}");
        assert!(!unset.contains("***"), "{unset}");
        assert!(unset.parse::<toml::Table>().is_ok(), "{unset}");
        assert!(out.contains("postgres://app:***@pg:5432/app"), "{out}");
        assert!(out.contains("cooldown = \"30s\""), "{out}");
    }
}
