//! The operator console in a real headless Chromium (Debian's `chromium` driven through
//! `chromedriver`), against warden with real servers: throwaway PostgreSQL and the FalkorDB
//! graph server behind the Bolt bridge.
//!
//! - the page shows both databases connected; PostgreSQL killed (-9), it shows it down within
//!   3 s, and connected again after the restart; warden killed, it says "unreachable";
//! - the edit form changes `breaker.failure_threshold` with the API token and is refused
//!   without it; the new value is in `/api/v1/settings` with source `table`, and in force (the
//!   circuit opens at the new threshold, and the page shows it open);
//! - the page weighs under 100 KB and loads nothing from anywhere but warden.
//!
//! Screenshots land in `target/console/*.png`. What a stand-in cannot show: FalkorDB is not
//! Neo4j (the page only reads what warden's health says of it), and a headless browser on
//! 127.0.0.1 has no slow or lossy network between it and warden.

mod support;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use fantoccini::Locator;
use serde_json::Value;
use support::{
    actix_test, browser::Browser, daemon::Daemon, eventually, graph::GraphServer, no_graph,
    pg::PgServer,
};
use warden::config::DaemonConfig;
use warden_actors::Sql;

const TOKEN: &str = "console-test-token-0123456789";

fn fast_env(neo4j_uri: &str, pg_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("NEO4J_URI", neo4j_uri.to_owned()),
        ("NEO4J_PASSWORD", "warden-test".to_owned()),
        ("DATABASE_URL", pg_url.to_owned()),
        ("WARDEN__NEO4J__CONNECT_TIMEOUT", "1s".to_owned()),
        ("WARDEN__NEO4J__PROBE_INTERVAL", "400ms".to_owned()),
        ("WARDEN__NEO4J__PROBE_TIMEOUT", "300ms".to_owned()),
        ("WARDEN__POSTGRES__CONNECT_TIMEOUT", "1s".to_owned()),
        ("WARDEN__POSTGRES__PROBE_INTERVAL", "400ms".to_owned()),
        ("WARDEN__POSTGRES__PROBE_TIMEOUT", "300ms".to_owned()),
        ("WARDEN__BACKOFF__INITIAL", "100ms".to_owned()),
        ("WARDEN__BACKOFF__MAX", "500ms".to_owned()),
        ("WARDEN__SHUTDOWN_TIMEOUT", "3s".to_owned()),
        ("WARDEN__HTTP__API_TOKEN", TOKEN.to_owned()),
        ("WARDEN__RUNTIME_SETTINGS__POLL_INTERVAL", "2s".to_owned()),
    ]
}

/// Waits until the page shows `css`'s `attr` as `want`.
async fn until_attr(b: &Browser, within: Duration, css: &str, attr: &str, want: &str) {
    eventually(
        within,
        &format!("{css} {attr}={want} on the page"),
        || async { (b.attr(css, attr).await.as_deref() == Some(want)).then_some(()) },
    )
    .await;
}

#[test]
fn the_page_shows_both_databases_follows_an_outage_and_says_when_warden_is_gone() {
    let pg = PgServer::start();
    let graph = GraphServer::start();
    actix_test(async {
        let mut d = Daemon::spawn(&[], &fast_env(&graph.uri(), &pg.url()));
        let base = format!("http://127.0.0.1:{}", d.http_port);
        eventually(Duration::from_secs(15), "both connected", || async {
            let (_, v) = d.get("/health/detailed").await?;
            (v["status"] == "ok").then_some(())
        })
        .await;

        // One self-contained page, under 100 KB, at / and /dashboard.
        let resp = reqwest::get(format!("{base}/")).await.unwrap();
        assert_eq!(resp.status(), 200);
        let headers = resp.headers().clone();
        assert!(headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let csp = headers["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("'sha256-"),
            "{csp}"
        );
        let page = resp.text().await.unwrap();
        assert!(
            page.len() < 100 * 1024,
            "the page weighs {} bytes",
            page.len()
        );
        for external in [
            "src=\"http",
            "href=\"http",
            "url(http",
            "@import",
            "src=\"//",
        ] {
            assert!(!page.contains(external), "the page loads {external}...");
        }
        let dashboard = reqwest::get(format!("{base}/dashboard")).await.unwrap();
        assert_eq!(dashboard.text().await.unwrap(), page);
        eprintln!("page weight: {} bytes", page.len());

        let b = Browser::start(1000, 1500).await;
        b.client.goto(&format!("{base}/dashboard")).await.unwrap();
        for db in ["postgres", "neo4j"] {
            until_attr(
                &b,
                Duration::from_secs(10),
                &format!("#c-{db}"),
                "data-status",
                "connected",
            )
            .await;
            until_attr(
                &b,
                Duration::from_secs(2),
                &format!("#c-{db}"),
                "data-circuit",
                "closed",
            )
            .await;
        }
        until_attr(&b, Duration::from_secs(3), "#overall", "data-status", "ok").await;
        // The sparkline has points, from /health/history and the polls.
        eventually(Duration::from_secs(5), "a sparkline", || async {
            let points = b.attr("#c-postgres svg.spark polyline", "points").await?;
            (points.split(' ').count() >= 2).then_some(())
        })
        .await;
        b.screenshot("dashboard-connected").await;

        // PostgreSQL dies: shown down within 3 s, with why.
        pg.kill9();
        let killed = Instant::now();
        until_attr(
            &b,
            Duration::from_secs(3),
            "#c-postgres",
            "data-health",
            "bad",
        )
        .await;
        let shown_down = killed.elapsed();
        let status = b.attr("#c-postgres", "data-status").await.unwrap();
        assert!(
            matches!(status.as_str(), "backoff" | "connecting"),
            "{status}"
        );
        let why = b.text("#c-postgres dd.err").await.unwrap_or_default();
        assert!(!why.is_empty(), "the page says why");
        assert_eq!(
            b.attr("#c-neo4j", "data-status").await.as_deref(),
            Some("connected")
        );
        assert_eq!(
            b.attr("body", "data-stale").await.as_deref(),
            Some("false"),
            "down is not stale"
        );
        b.screenshot("dashboard-postgres-down").await;

        pg.restart();
        until_attr(
            &b,
            Duration::from_secs(15),
            "#c-postgres",
            "data-status",
            "connected",
        )
        .await;
        let log = b.text("#log").await.unwrap();
        assert!(log.contains("postgres: connected/closed →"), "{log}");

        // warden gone: the page says so, apart from any database state.
        d.signal("KILL");
        let stopped = Instant::now();
        until_attr(&b, Duration::from_secs(3), "body", "data-stale", "true").await;
        let gone = stopped.elapsed();
        let banner = b.text("#stale").await.unwrap();
        assert!(banner.contains("warden unreachable"), "{banner}");
        assert_eq!(
            b.attr("#overall", "data-status").await.as_deref(),
            Some("unreachable")
        );
        b.screenshot("dashboard-unreachable").await;
        let _ = d.wait_exit(Duration::from_secs(5));
        eprintln!(
            "postgres shown down after {shown_down:?}; warden shown unreachable after {gone:?}"
        );
        b.close().await;
    });
}

#[test]
fn the_edit_form_changes_the_threshold_with_the_token_and_not_without() {
    let pg = PgServer::start();
    actix_test(async {
        let mut env: HashMap<String, String> = fast_env(&no_graph(), &pg.url())
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        env.insert("WARDEN__POSTGRES__QUERY_TIMEOUT".into(), "300ms".into());
        env.insert("WARDEN__RETRY__MAX_ATTEMPTS".into(), "1".into());
        env.insert("WARDEN__BREAKER__COOLDOWN".into(), "60s".into());
        let cfg = DaemonConfig::load(None, &env).expect("configuration");
        // warden served in-process, wired as the daemon wires it, so that this test can make
        // calls through it to show the circuit opening.
        let (warden, base) = support::console::serve(&cfg).await;
        let runtime = warden.runtime_settings();

        let b = Browser::start(420, 1600).await; // a phone's width
        b.client.goto(&base).await.unwrap();
        let row = "#settings tr[data-key='breaker.failure_threshold'] td.value";
        eventually(Duration::from_secs(10), "the threshold listed", || async {
            (b.text(row).await.as_deref() == Some("5")).then_some(())
        })
        .await;
        let key = b.client.find(Locator::Css("#edit-key")).await.unwrap();
        key.select_by_value("breaker.failure_threshold")
            .await
            .unwrap();
        b.type_text("#edit-value", "3").await;

        // Without the token: refused, nothing changes.
        b.click("#edit-save").await;
        until_attr(
            &b,
            Duration::from_secs(5),
            "#edit-result",
            "data-outcome",
            "error",
        )
        .await;
        let refused = b.text("#edit-result").await.unwrap();
        assert!(refused.contains("401"), "{refused}");
        assert_eq!(runtime.current().breaker.failure_threshold, 5);

        // With it: written to the table, read back, in force.
        b.type_text("#edit-token", TOKEN).await;
        b.click("#edit-save").await;
        until_attr(
            &b,
            Duration::from_secs(5),
            "#edit-result",
            "data-outcome",
            "ok",
        )
        .await;
        let saved = b.text("#edit-result").await.unwrap();
        assert!(
            saved.contains("table") && saved.contains("in force"),
            "{saved}"
        );
        eventually(
            Duration::from_secs(3),
            "the page lists 3 from the table",
            || async { (b.text(row).await.as_deref() == Some("3")).then_some(()) },
        )
        .await;
        // The token is kept for the tab only.
        let session = b
            .client
            .execute("return sessionStorage.getItem('warden-token')", vec![])
            .await
            .unwrap();
        assert_eq!(session, Value::from(TOKEN));
        let local = b
            .client
            .execute("return localStorage.length", vec![])
            .await
            .unwrap();
        assert_eq!(local, Value::from(0));

        let listing: Value = reqwest::Client::new()
            .get(format!("{base}/api/v1/settings"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let setting = listing["data"]["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["key"] == "breaker.failure_threshold")
            .cloned()
            .unwrap();
        assert_eq!(setting["value"], 3, "{setting}");
        assert_eq!(setting["source"], "table", "{setting}");
        assert_eq!(setting["base"], 5, "{setting}");
        let cooldown = listing["data"]["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["key"] == "breaker.cooldown")
            .cloned()
            .unwrap();
        assert_eq!(cooldown["source"], "environment", "{cooldown}");

        // In force: three calls past the 300 ms deadline open the circuit (the file's 5 would
        // not), and the page shows it.
        let handle = warden.postgres_handle();
        for _ in 0..3 {
            assert!(handle.send(Sql::new("SELECT pg_sleep(1)")).await.is_err());
        }
        until_attr(
            &b,
            Duration::from_secs(3),
            "#c-postgres",
            "data-circuit",
            "open",
        )
        .await;
        let source = b
            .text("#settings tr[data-key='breaker.cooldown'] td:last-child")
            .await
            .unwrap();
        assert_eq!(source, "environment");
        b.screenshot("dashboard-settings-phone").await;

        // A bad row typed into psql: the page shows the table refused and why.
        let admin = pg.admin().await;
        sqlx::query(
            "INSERT INTO warden.config VALUES ('postgres.url', '\"postgres://elsewhere/x\"')",
        )
        .execute(&admin)
        .await
        .unwrap();
        eventually(
            Duration::from_secs(3),
            "the refusal on the page",
            || async {
                let class = b.attr("#config-error", "class").await?;
                let text = b.text("#config-error").await?;
                (class.contains("show")
                    && text.contains("postgres.url")
                    && text.contains("restart"))
                .then_some(())
            },
        )
        .await;
        assert_eq!(
            runtime.current().breaker.failure_threshold,
            3,
            "the settings in force stay"
        );
        b.close().await;
        warden.shutdown(Duration::from_secs(2)).await;
    });
}
