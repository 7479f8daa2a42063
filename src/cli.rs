//! The command line: `warden [--config PATH] [run|migrate|check-config|project|outbox]`, and
//! `--version`.

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
#[derive(Debug, Clone, Subcommand, PartialEq, Eq)]
pub enum Command {
    /// Supervise both databases and serve health over HTTP until SIGTERM or SIGINT.
    Run,
    /// Apply the PostgreSQL migrations once and exit.
    Migrate,
    /// Print the effective configuration (secrets as ***) and exit: 0 if valid, 78 if not.
    CheckConfig,
    /// The graph projection: `warden project --rebuild` rebuilds the whole graph from
    /// PostgreSQL (safe while daemons run: writes are version-guarded).
    Project {
        /// Clear the projected labels and replay every recording at its current version.
        #[arg(long, required = true)]
        rebuild: bool,
    },
    /// The graph outbox: `warden outbox retry <id>` or `warden outbox retry --all-dead`.
    Outbox {
        /// What to do.
        #[command(subcommand)]
        action: OutboxCommand,
    },
}

/// `warden outbox ...`.
#[derive(Debug, Clone, Subcommand, PartialEq, Eq)]
pub enum OutboxCommand {
    /// Re-drive dead events: pending again, attempts 0, due now.
    Retry {
        /// The dead event's id (see /health/detailed or GET /api/v1/graph-sync).
        #[arg(required_unless_present = "all_dead", conflicts_with = "all_dead")]
        id: Option<i64>,
        /// Every dead event.
        #[arg(long)]
        all_dead: bool,
    },
}
