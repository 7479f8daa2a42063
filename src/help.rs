//! What `warden --help` says after the options: the environment variables warden reads and
//! the exit codes it returns, built from the constants the code uses so that the two cannot
//! drift apart.

use std::fmt::Write;

use crate::{
    config::{EX_CONFIG, SEEDS},
    daemon::{EX_FAILURE, EX_SOFTWARE, EX_UNAVAILABLE},
};

/// clap's own exit code for a command line it cannot parse.
pub const EX_USAGE_CLAP: u8 = 2;

/// Every exit code warden returns, and when.
pub const EXIT_CODES: &[(u8, &str)] = &[
    (
        0,
        "clean stop after SIGTERM or SIGINT; migrations applied; configuration valid",
    ),
    (
        EX_FAILURE,
        "anything else: the HTTP port cannot be bound (the message names http.bind),\n      \
         the HTTP server stopped, a migration failed for good",
    ),
    (
        EX_USAGE_CLAP,
        "the command line is wrong (unknown option or command)",
    ),
    (
        EX_UNAVAILABLE,
        "`migrate` could not reach PostgreSQL (EX_UNAVAILABLE)",
    ),
    (
        EX_SOFTWARE,
        "an actor died from a bug; systemd restarts warden (EX_SOFTWARE)",
    ),
    (
        EX_CONFIG,
        "the configuration is invalid; the message names the key (EX_CONFIG)",
    ),
];

/// The text after the options in `warden --help`, laid out as clap lays out the options.
pub fn after_long_help() -> String {
    let mut out = String::from("Environment:\n");
    let mut var = |name: &str, what: &str| {
        let _ = writeln!(out, "  {name}\n          {what}\n");
    };
    var(
        "WARDEN__<SECTION>__<KEY>",
        "Any configuration key, over the file and the variables below:\n          \
         WARDEN__HTTP__BIND=127.0.0.1:9090, WARDEN__LOG__FORMAT=json, WARDEN__SHUTDOWN_TIMEOUT=20s",
    );
    for (name, key) in SEEDS {
        let var_name = format!("WARDEN__{}", key.replace('.', "__").to_uppercase());
        var(name, &format!("Sets {key}; {var_name} wins over it"));
    }
    var(
        "WARDEN__NEO4J__PASSWORD_FILE, WARDEN__POSTGRES__PASSWORD_FILE",
        "Read the password from a file (systemd credentials, docker secrets)",
    );
    var("RUST_LOG", "A log filter; wins over log.level");
    var(
        "JOURNAL_STREAM",
        "Set by systemd: log.format defaults to journald when stderr is the journal",
    );
    var(
        "NOTIFY_SOCKET",
        "Set by systemd (Type=notify): READY, STATUS and STOPPING notifications",
    );
    var(
        "WATCHDOG_USEC, WATCHDOG_PID",
        "Set by systemd (WatchdogSec=): a WATCHDOG ping every half of WATCHDOG_USEC",
    );
    out.push_str("  (WARDEN_PORT is read by scripts/dev-stack only, not by warden.)\n");
    out.push_str("\nExit codes:\n");
    let mut codes = EXIT_CODES.to_vec();
    codes.sort_by_key(|(code, _)| *code);
    for (code, what) in codes {
        let _ = writeln!(out, "  {code:<3} {what}");
    }
    out
}
