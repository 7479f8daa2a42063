//! Structured logs: pretty on a terminal, one JSON object per line otherwise (journald, log
//! shippers). Every state transition, retry, breaker change and backoff delay is one event,
//! emitted by the actors with the database, attempt, delay and a sanitized error as fields.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. The level was validated with the configuration; `RUST_LOG`,
/// when set, wins, for one-off debugging without editing the file. The drivers' own chatter
/// (neo4rs logs every pool it creates at info) is held at warn unless the level names them.
pub fn init(cfg: &LogConfig) {
    let level = std::env::var("RUST_LOG").unwrap_or_else(|_| cfg.level.clone());
    let mut directives = level.clone();
    for driver in ["neo4rs", "sqlx"] {
        if !level.contains(driver) {
            directives.push_str(&format!(",{driver}=warn"));
        }
    }
    let filter = EnvFilter::try_new(&directives)
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let format = cfg.format.unwrap_or(if std::io::stderr().is_terminal() {
        LogFormat::Pretty
    } else {
        LogFormat::Json
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests that run the daemon in-process) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}
