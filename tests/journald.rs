//! journald, played by the test: a Unix datagram socket bound in a temp dir and mounted at
//! journald's path (/run/systemd/journal/socket, which `tracing-journald` hard-codes) in a
//! private mount namespace made for the daemon alone.
//!
//! What a stand-in cannot show: journald storing and indexing the fields (`journalctl
//! DATABASE=neo4j`); `scripts/systemd-e2e` shows that with real journald.

mod support;

use std::{
    collections::BTreeMap,
    os::unix::fs::MetadataExt,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use support::{daemon::run_once, datagram::Listener};

/// A `bolt://` URI where nothing listens.
fn nowhere() -> String {
    format!("bolt://127.0.0.1:{}", support::free_port())
}

/// One journal datagram (the native protocol: `KEY=value` lines, or `KEY`, a 64-bit
/// little-endian length and the value for values with a newline) as fields.
fn journal_fields(datagram: &[u8]) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
        let line = &rest[..end];
        if let Some(eq) = line.iter().position(|b| *b == b'=') {
            fields.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            rest = rest.get(end + 1..).unwrap_or_default();
        } else {
            let name = String::from_utf8_lossy(line).into_owned();
            let after = &rest[end + 1..];
            let len = u64::from_le_bytes(after[..8].try_into().expect("length")) as usize;
            fields.insert(
                name,
                String::from_utf8_lossy(&after[8..8 + len]).into_owned(),
            );
            rest = after.get(8 + len + 1..).unwrap_or_default();
        }
    }
    fields
}

/// Whether this machine lets the test make a private mount namespace (root, util-linux).
fn can_unshare_mounts() -> Result<(), String> {
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .output()
        .map_err(|e| format!("unshare: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// With stderr being what `JOURNAL_STREAM` names, warden logs to journald by itself, each
/// event's fields as journal fields (database, attempt, delay, state); nothing on stderr, and
/// no password in any datagram. journald's socket is ours: a private mount namespace mounts
/// the test's directory at /run/systemd/journal for the daemon only.
#[test]
fn journald_gets_structured_fields_when_stderr_is_the_journal() {
    if let Err(why) = can_unshare_mounts() {
        println!("SKIPPED: no private mount namespace for the journald socket here: {why}");
        return;
    }
    let mut journal = Listener::bind("socket");
    let stderr_path = journal.dir().join("stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let meta = stderr.metadata().expect("stat");
    let http_port = support::free_listen_port();
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(
            "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal \
             && mount --bind \"$0\" /run/systemd/journal && exec \"$1\" run",
        )
        .arg(journal.dir())
        .arg(env!("CARGO_BIN_EXE_warden"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env("WARDEN__HTTP__BIND", format!("127.0.0.1:{http_port}"))
        .env("WARDEN__LOG__LEVEL", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    let dead_pg = format!(
        "postgres://postgres:pg-journal-secret@127.0.0.1:{}/postgres",
        support::free_port()
    );
    for (k, v) in [
        ("NEO4J_URI", nowhere()),
        ("NEO4J_PASSWORD", "systemd-test-secret".to_owned()),
        ("DATABASE_URL", dead_pg),
        ("WARDEN__NEO4J__CONNECT_TIMEOUT", "1s".to_owned()),
        ("WARDEN__POSTGRES__CONNECT_TIMEOUT", "1s".to_owned()),
        ("WARDEN__BACKOFF__INITIAL", "100ms".to_owned()),
        ("WARDEN__BACKOFF__MAX", "2s".to_owned()),
    ] {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn unshare");

    journal.collect(Duration::from_secs(4));
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    let datagrams: Vec<BTreeMap<String, String>> =
        journal.raw.iter().map(|d| journal_fields(d)).collect();
    let shown = format!("{datagrams:#?}");
    let find = |message: &str, database: &str| {
        datagrams
            .iter()
            .find(|f| {
                f.get("MESSAGE").map(String::as_str) == Some(message)
                    && f.get("DATABASE").map(String::as_str) == Some(database)
            })
            .unwrap_or_else(|| panic!("no {message:?} for {database}: {shown}"))
    };
    let backoff = find("connection failed; backing off", "neo4j");
    assert_eq!(backoff["PRIORITY"], "4", "{backoff:?}");
    assert_eq!(backoff["SYSLOG_IDENTIFIER"], "warden", "{backoff:?}");
    assert!(backoff["ATTEMPT"].parse::<u32>().is_ok(), "{backoff:?}");
    assert!(backoff["DELAY_MS"].parse::<u64>().is_ok(), "{backoff:?}");
    assert!(backoff["ERROR"].contains("neo4j"), "{backoff:?}");
    let state = find("connection state changed", "postgres");
    assert!(
        ["connecting", "backoff"].contains(&state["STATE"].as_str()),
        "{state:?}"
    );
    assert!(
        datagrams
            .iter()
            .any(|f| f.get("MESSAGE").map(String::as_str) == Some("warden started")),
        "{shown}"
    );
    for secret in ["pg-journal-secret", "systemd-test-secret"] {
        assert!(!shown.contains(secret), "{secret} reached the journal");
    }
    let on_stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(
        !on_stderr.contains("\"level\""),
        "JSON logs on stderr as well: {on_stderr}"
    );
}

/// `log.format = "journald"` where journald cannot be reached (no socket): logs go on, as JSON
/// lines on stderr, and warden says why.
#[test]
fn journald_format_without_journald_falls_back_to_json() {
    if Path::new("/run/systemd/journal/socket").exists() {
        println!("SKIPPED: this machine runs journald; the fallback needs its absence");
        return;
    }
    let (code, _, stderr) = run_once(
        &["migrate"],
        &[
            (
                "DATABASE_URL",
                format!(
                    "postgres://postgres@127.0.0.1:{}/postgres",
                    support::free_port()
                ),
            ),
            ("WARDEN__LOG__FORMAT", "journald".into()),
            ("WARDEN__POSTGRES__CONNECT_TIMEOUT", "1s".into()),
        ],
    );
    assert_eq!(code, 69, "{stderr}");
    assert!(
        stderr.contains("cannot reach journald") && stderr.contains("logging JSON lines"),
        "{stderr}"
    );
    assert!(stderr.contains("\"level\":\"ERROR\""), "{stderr}");
}
