//! The command line: `warden [--config PATH] [run|migrate|check-config]`, and `--version`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// A connection supervisor for Neo4j and PostgreSQL.
#[derive(Debug, Parser)]
#[command(
    name = "warden",
    version,
    about,
    after_help = "Environment variables and exit codes: warden --help",
    after_long_help = crate::help::after_long_help()
)]
pub struct Cli {
    /// TOML configuration file [default: /etc/warden/warden.toml if it exists].
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// What to do [default: run].
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The daemon's commands.
#[derive(Debug, Clone, Copy, Subcommand, PartialEq, Eq)]
pub enum Command {
    /// Supervise both databases and serve health over HTTP until SIGTERM or SIGINT.
    Run,
    /// Apply the PostgreSQL migrations once and exit.
    Migrate,
    /// Print the effective configuration (secrets as ***) and exit: 0 if valid, 78 if not.
    CheckConfig,
}
