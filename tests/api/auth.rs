//! The token rules: 401 with `WWW-Authenticate` for missing, wrong, malformed or
//! other-scheme credentials; 403 saying how to enable the API when no token is configured;
//! health open either way; the token never printed.

use reqwest::Method;

use crate::{
    client::{block_on, env, Auth, Client, TOKEN},
    support::daemon::{run_once, Daemon},
};

fn nowhere_pg() -> String {
    format!(
        "postgres://warden@127.0.0.1:{}/warden",
        crate::support::free_port()
    )
}

/// A token from `WARDEN__HTTP__API_TOKEN_FILE` is what the API accepts; every way of not
/// presenting it is a 401 with `WWW-Authenticate: Bearer realm="warden"` and the error
/// envelope, before routing (an unknown path and a wrong method are 401 too); health stays
/// open; the token appears nowhere in the daemon's output. Needs no database: authentication
/// happens before any. It does not show timing: see `api::auth`'s constant-time comparison.
#[test]
fn the_token_from_a_file_is_required_for_every_api_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("api-token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let mut e = env(&nowhere_pg());
    e.push(("WARDEN__HTTP__API_TOKEN_FILE", file.display().to_string()));
    let daemon = Daemon::spawn(&["run"], &e);
    let client = Client::new(&daemon);
    block_on(async {
        client.until_up().await;
        let other = format!("{TOKEN}x");
        let lower = format!("bearer {TOKEN}");
        let basic = format!("Basic {TOKEN}");
        let refused = [
            Auth::None,
            Auth::Bearer(&other),
            Auth::Bearer(&TOKEN[..TOKEN.len() - 1]),
            Auth::Bearer(""),
            Auth::Raw(&basic),
            Auth::Raw(TOKEN),
            Auth::Raw("Bearer"),
        ];
        for path in ["/api/v1/recordings", "/api/v1/no-such-route", "/api/v1"] {
            for auth in refused {
                for method in [Method::GET, Method::POST, Method::DELETE] {
                    let a = client.send(method.clone(), path, auth, None).await;
                    assert_eq!(a.status, 401, "{method} {path} {auth:?}: {}", a.text);
                    assert_eq!(
                        a.header("www-authenticate"),
                        Some(r#"Bearer realm="warden""#),
                        "{auth:?}"
                    );
                    assert_eq!(a.code(), "unauthorized", "{}", a.text);
                    assert!(a.body["error"]["message"].as_str().is_some());
                    assert!(a.body["error"].get("detail").is_some());
                    assert!(!a.text.contains(TOKEN), "{}", a.text);
                }
            }
        }
        // The right token, in any case of the scheme, gets past authentication: an unknown
        // path is then a 404 in the API's error format.
        for auth in [Auth::Bearer(TOKEN), Auth::Raw(&lower)] {
            let a = client
                .send(Method::GET, "/api/v1/no-such-route", auth, None)
                .await;
            assert_eq!(a.status, 404, "{}", a.text);
            assert_eq!(a.code(), "not_found");
            assert!(a.body["error"]["detail"].is_null(), "{}", a.text);
        }
        // Health never asks for a token.
        for path in [
            "/health",
            "/health/ready",
            "/health/detailed",
            "/api/health",
        ] {
            let a = client.send(Method::GET, path, Auth::None, None).await;
            assert!(a.status == 200 || a.status == 503, "{path}: {}", a.status);
        }
    });
    let logs = daemon.logs();
    assert!(logs.contains("warden started"), "{logs}");
    assert!(!logs.contains(TOKEN), "the token reached the log: {logs}");
    assert!(!daemon.stdout().contains(TOKEN));
}

/// Without a token the API answers 403 `api_disabled` to everyone, token or not, and the
/// message names the settings that enable it; health is unaffected.
#[test]
fn no_token_configured_is_403_saying_how_to_enable() {
    let daemon = Daemon::spawn(&["run"], &env(&nowhere_pg()));
    let client = Client::new(&daemon);
    block_on(async {
        client.until_up().await;
        for auth in [Auth::None, Auth::Bearer(TOKEN)] {
            for path in ["/api/v1/recordings", "/api/v1/recordings/x", "/api/v1/nope"] {
                let a = client.send(Method::GET, path, auth, None).await;
                assert_eq!(a.status, 403, "{path}: {}", a.text);
                assert_eq!(a.code(), "api_disabled");
                let message = a.body["error"]["message"].as_str().unwrap();
                for named in [
                    "http.api_token",
                    "WARDEN__HTTP__API_TOKEN",
                    "WARDEN__HTTP__API_TOKEN_FILE",
                ] {
                    assert!(message.contains(named), "{named} not in: {message}");
                }
            }
        }
        let a = client.send(Method::GET, "/health", Auth::None, None).await;
        assert_eq!(a.status, 200);
    });
}

/// The token is a secret in the configuration too: `check-config` shows only that it is set,
/// a weak token is refused (exit 78) naming the key and not the value, and a token given
/// inline through `WARDEN__HTTP__API_TOKEN` never reaches the daemon's log.
#[test]
fn the_token_is_a_secret_in_configuration_and_logs() {
    let (code, stdout, stderr) = run_once(
        &["check-config"],
        &[("WARDEN__HTTP__API_TOKEN", TOKEN.into())],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("api_token = \"***\""), "{stdout}");
    assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN));

    let (code, stdout, _) = run_once(&["check-config"], &[]);
    assert_eq!(code, 0);
    assert!(
        !stdout.contains("api_token"),
        "unset is shown as absent: {stdout}"
    );

    for (var, value) in [
        ("WARDEN__HTTP__API_TOKEN", "weak-token-1"),
        ("WARDEN__HTTP__API_TOKEN", "a token with spaces in it"),
    ] {
        for cmd in ["check-config", "run"] {
            let (code, stdout, stderr) = run_once(&[cmd], &[(var, value.into())]);
            assert_eq!(code, 78, "{cmd} {value}: {stderr}");
            assert!(stderr.contains("http.api_token"), "{stderr}");
            assert!(
                !stderr.contains(value) && !stdout.contains(value),
                "{stderr}"
            );
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t");
    std::fs::write(&file, "short\n").unwrap();
    let (code, _, stderr) = run_once(
        &["check-config"],
        &[("WARDEN__HTTP__API_TOKEN_FILE", file.display().to_string())],
    );
    assert_eq!(code, 78);
    assert!(
        stderr.contains("http.api_token_file") && !stderr.contains("short\n"),
        "{stderr}"
    );

    let mut e = env(&nowhere_pg());
    e.push(("WARDEN__HTTP__API_TOKEN", TOKEN.into()));
    e.push(("WARDEN__LOG__LEVEL", "debug".into()));
    let daemon = Daemon::spawn(&["run"], &e);
    let client = Client::new(&daemon);
    block_on(async {
        client.until_up().await;
        let a = client.call(Method::GET, "/api/v1/nope", None).await;
        assert_eq!(a.status, 404, "{}", a.text);
        let bad = format!("Bearer {TOKEN}-wrong");
        let a = client
            .send(Method::GET, "/api/v1/nope", Auth::Raw(&bad), None)
            .await;
        assert_eq!(a.status, 401);
    });
    let logs = daemon.logs();
    assert!(logs.contains("warden started"), "{logs}");
    assert!(
        !logs.contains(TOKEN),
        "the token reached the debug log: {logs}"
    );
    assert!(!daemon.stdout().contains(TOKEN));
}
