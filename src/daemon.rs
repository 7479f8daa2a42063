//! The daemon's commands: `run` (actors and HTTP until a signal), `migrate`, `check-config`.
//!
//! Exit codes follow sysexits where one fits, so systemd and operators can tell them apart:
//! 0 clean stop; 78 (EX_CONFIG) bad configuration; 70 (EX_SOFTWARE) an actor died from a bug,
//! so systemd restarts the whole process rather than letting it limp on; 69 (EX_UNAVAILABLE)
//! `migrate` could not reach PostgreSQL; 1 anything else (the HTTP port is taken, ...).

use std::{process::ExitCode, time::Instant};

use warden_actors::Warden;

use crate::{config::DaemonConfig, shutdown, systemd::Systemd, web};

/// Anything else: the HTTP port cannot be bound, the HTTP server stopped, a migration failed
/// for good.
pub const EX_FAILURE: u8 = 1;
/// An actor died from a bug.
pub const EX_SOFTWARE: u8 = 70;
/// A database needed by a one-shot command was unreachable.
pub const EX_UNAVAILABLE: u8 = 69;

/// Runs the daemon until SIGTERM or SIGINT (exit 0) or until an actor dies (exit 70).
pub fn run(cfg: DaemonConfig) -> ExitCode {
    let started = Instant::now();
    let systemd = Systemd::from_env();
    let system = actix::System::new();
    let code = system.block_on(async move {
        crate::startup::log_targets(&cfg);
        let warden = match Warden::start(cfg.warden_settings()) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "invalid configuration");
                return crate::config::EX_CONFIG;
            }
        };
        warden_actors::faults::arm_from_env(&warden);
        warden.follow_config_table(cfg.runtime_settings);
        let state = crate::console::app_state(&warden, &cfg, started)
            .with_metrics(crate::metrics::Endpoint::new(warden.metrics()));
        let (server, addrs) = match web::listen(cfg.http.bind, cfg.http.workers, state, cfg.shutdown_timeout) {
            Ok(s) => s,
            Err(e) => {
                let message = cannot_listen(cfg.http.bind, &e);
                tracing::error!(bind = %cfg.http.bind, error = %e, "{message}");
                systemd.status(&message);
                warden.shutdown(cfg.shutdown_timeout).await;
                return EX_FAILURE;
            }
        };
        tracing::info!(bind = %cfg.http.bind, version = env!("CARGO_PKG_VERSION"), "warden started");
        let handle = server.handle();
        let mut serving = actix::spawn(server);
        // Bound and the actors started: ready, whatever the databases do.
        systemd.ready(&warden.health_handle().view());
        tokio::select! {
            never = systemd.supervise(&warden, warden.health_handle(), addrs.first().copied()) => match never {},
            signal = shutdown::signal() => {
                tracing::info!(signal, "shutting down");
                systemd.stopping(signal);
                // One budget for the whole drain. HTTP first: health requests take
                // microseconds, so a short grace is plenty; then calls in flight get the rest.
                let deadline = Instant::now() + cfg.shutdown_timeout;
                let drain = async {
                    handle.stop(true).await;
                    let left = deadline.saturating_duration_since(Instant::now());
                    warden.shutdown(left.max(std::time::Duration::from_millis(500))).await;
                };
                let bounded = tokio::time::timeout(cfg.shutdown_timeout + std::time::Duration::from_secs(1), drain);
                if systemd.extend_while(bounded).await.is_err() {
                    tracing::warn!(timeout = ?cfg.shutdown_timeout, "shutdown ran over its timeout");
                }
                tracing::info!("stopped");
                0
            }
            reason = warden.fatal() => {
                tracing::error!(reason, "an actor died; exiting so that the service manager restarts warden");
                systemd.status(&format!("exiting: {reason}"));
                handle.stop(false).await;
                EX_SOFTWARE
            }
            result = &mut serving => {
                tracing::error!(?result, "the HTTP server stopped unexpectedly");
                systemd.status("exiting: the HTTP server stopped unexpectedly");
                EX_FAILURE
            }
        }
    });
    ExitCode::from(code)
}

/// Applies the migrations once and exits.
pub fn migrate(cfg: DaemonConfig) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("warden: cannot start a runtime: {e}");
            return ExitCode::from(EX_FAILURE);
        }
    };
    let systemd = Systemd::from_env();
    crate::startup::log_targets(&cfg);
    systemd.status(&format!(
        "applying migrations to schema {}",
        cfg.postgres.schema
    ));
    let result = runtime.block_on(systemd.extend_while(async {
        let bound = cfg.postgres.connect_timeout + cfg.postgres.query_timeout;
        match tokio::time::timeout(
            bound,
            warden_actors::postgres::run_migrations(&cfg.postgres),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(warden_actors::WardenError::Timeout {
                database: warden_actors::Database::Postgres,
                phase: warden_actors::TimeoutPhase::Connect,
                after: bound,
            }),
        }
    }));
    match result {
        Ok(()) => {
            tracing::info!(schema = %cfg.postgres.schema, "migrations are up to date");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "migrations failed");
            eprintln!("warden: migrations failed: {e}");
            ExitCode::from(if e.is_transient() {
                EX_UNAVAILABLE
            } else {
                EX_FAILURE
            })
        }
    }
}

/// What a failed bind says: the address, why, and the key that changes it (a port taken by
/// another process is the usual first-run surprise).
pub fn cannot_listen(bind: std::net::SocketAddr, error: &std::io::Error) -> String {
    let hint = match error.kind() {
        std::io::ErrorKind::AddrInUse => "another process listens there",
        std::io::ErrorKind::PermissionDenied => "a port below 1024 needs CAP_NET_BIND_SERVICE",
        std::io::ErrorKind::AddrNotAvailable => "no interface of this machine has that address",
        _ => "",
    };
    let hint = if hint.is_empty() {
        String::new()
    } else {
        format!(" ({hint})")
    };
    format!(
        "cannot listen on {bind}: {error}{hint}; set http.bind in the configuration file \
         (or WARDEN__HTTP__BIND; WARDEN_PORT for scripts/dev-stack) to a free address"
    )
}

/// Prints the effective configuration, secrets as `***`.
pub fn check_config(cfg: &DaemonConfig) -> ExitCode {
    print!("{}", cfg.to_redacted_toml());
    ExitCode::SUCCESS
}
