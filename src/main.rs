//! `warden`: parse the command line, load the configuration, set up logs, run the command.

use std::process::ExitCode;

use clap::Parser;
use warden::{
    cli::{Cli, Command, OutboxCommand},
    config::{self, DaemonConfig, EX_CONFIG},
    daemon, logging, project,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let loaded =
        config::environment().and_then(|env| DaemonConfig::load(cli.config.as_deref(), &env));
    let cfg = match loaded {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("warden: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig => daemon::check_config(&cfg),
        Command::Migrate => {
            logging::init(&cfg.log);
            daemon::migrate(cfg)
        }
        Command::Run => {
            logging::init(&cfg.log);
            daemon::run(cfg)
        }
        Command::Project { .. } => {
            logging::init(&cfg.log);
            project::rebuild(cfg)
        }
        Command::Outbox {
            action: OutboxCommand::Retry { id, all_dead: _ },
        } => {
            logging::init(&cfg.log);
            project::retry(cfg, id)
        }
    }
}
