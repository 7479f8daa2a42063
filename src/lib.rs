//! The warden daemon: configuration, logging, the HTTP health layer and signal handling around
//! the actors of `warden-actors`. `main.rs` only parses the command line and calls in here, so
//! `tests/` can drive every piece.
//!
//! # Layout
//! - [`cli`]: the command line.
//! - [`config`]: file and environment layering, validation, `check-config` output;
//!   [`config_values`]: the values whose errors list or quote what is accepted.
//! - [`logging`]: tracing setup; [`journald`]: journald's native protocol.
//! - [`web`]: the health endpoints, and the [`api`] under `/api/v1`.
//! - [`api`]: the HTTP API (token, envelope, routes).
//! - [`metrics`]: `GET /metrics`, in Prometheus' text format or OpenMetrics; [`process`]: the
//!   process's own metrics, from `/proc`.
//! - [`console`]: the operator console page and the endpoints it reads.
//! - [`shutdown`]: the SIGTERM and SIGINT future.
//! - [`startup`]: the first log lines: where warden connects and which schema it writes.
//! - [`systemd`]: `Type=notify`: readiness, status, the watchdog, stopping.
//! - [`daemon`]: `run`, `migrate`, `check-config`, and the exit codes.
//! - [`project`]: `project --rebuild` and `outbox retry`.
//! - [`help`]: the environment variables and exit codes `warden --help` lists.

#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod config;
pub mod config_values;
pub mod console;
pub mod daemon;
pub mod help;
pub mod journald;
pub mod logging;
pub mod metrics;
pub mod process;
pub mod project;
pub mod shutdown;
pub mod startup;
pub mod systemd;
pub mod web;
