//! `/api/v1/settings` and the console's read-only endpoints, against a throwaway PostgreSQL,
//! served in-process exactly as the daemon wires them (`warden::console::app_state`): every
//! effective value with its source; writes that need the token, are validated before anything
//! is written, land in the table and are in force when the answer comes; `DELETE` goes back to
//! the file's value.

mod support;

use std::{collections::HashMap, time::Duration};

use serde_json::{json, Value};
use support::{actix_test, eventually, no_graph, pg::PgServer};
use warden::config::DaemonConfig;

const TOKEN: &str = "settings-api-token-0123456789";

struct Served {
    base: String,
    client: reqwest::Client,
}

impl Served {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: bool,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if token {
            req = req.bearer_auth(TOKEN);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("warden answers");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn setting(&self, key: &str) -> Value {
        let (status, body) = self.call("GET", "/api/v1/settings", true, None).await;
        assert_eq!(status, 200, "{body}");
        body["data"]["settings"]
            .as_array()
            .expect("a list of settings")
            .iter()
            .find(|s| s["key"] == key)
            .cloned()
            .unwrap_or(Value::Null)
    }
}

#[test]
fn settings_are_listed_with_their_source_and_written_only_when_valid_and_authorized() {
    let pg = PgServer::start();
    actix_test(async {
        let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::io::Write::write_all(&mut file, b"[breaker]\ncooldown = \"20s\"\n").unwrap();
        let env: HashMap<String, String> = [
            ("DATABASE_URL", pg.url()),
            ("NEO4J_URI", no_graph()),
            ("WARDEN__HTTP__API_TOKEN", TOKEN.to_owned()),
            ("WARDEN__POSTGRES__PROBE_INTERVAL", "200ms".to_owned()),
            ("WARDEN__POSTGRES__PROBE_TIMEOUT", "150ms".to_owned()),
            ("WARDEN__RUNTIME_SETTINGS__POLL_INTERVAL", "2s".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let cfg = DaemonConfig::load(Some(file.path()), &env).unwrap();
        let (warden, base) = support::console::serve(&cfg).await;
        let runtime = warden.runtime_settings();
        let s = Served {
            base,
            client: reqwest::Client::new(),
        };
        let admin = pg.admin().await;
        let rows = || async {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM warden.config")
                .fetch_one(&admin)
                .await
                .unwrap()
        };

        // The token is needed for everything under /api/v1, reads included.
        let (status, body) = s.call("GET", "/api/v1/settings", false, None).await;
        assert_eq!(status, 401, "{body}");
        let (status, _) = s
            .call(
                "PUT",
                "/api/v1/settings/breaker.cooldown",
                false,
                Some(json!({"value": "45s"})),
            )
            .await;
        assert_eq!(status, 401);

        // Every value, with its source; secrets never shown.
        let (_, listing) = s.call("GET", "/api/v1/settings", true, None).await;
        let text = listing.to_string();
        assert!(!text.contains(TOKEN), "the token is never shown");
        let by_key = |k: &str| {
            listing["data"]["settings"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["key"] == k)
                .cloned()
                .unwrap()
        };
        assert_eq!(by_key("breaker.cooldown")["source"], "file");
        assert_eq!(by_key("breaker.cooldown")["value"], "20s");
        assert_eq!(by_key("postgres.probe_interval")["source"], "environment");
        assert_eq!(by_key("retry.max_attempts")["source"], "default");
        assert_eq!(by_key("retry.max_attempts")["runtime"], true);
        assert_eq!(by_key("postgres.url")["runtime"], false);
        assert_eq!(by_key("http.api_token")["value"], "***");
        for key in warden_actors::runtime::RUNTIME_KEYS {
            assert_eq!(by_key(key)["runtime"], true, "{key}");
        }

        // Refused, with the key and the reason, and nothing written.
        for (key, value, says) in [
            ("breaker.cooldwn", json!("1s"), "is not a setting"),
            ("postgres.max_connections", json!(50), "restart"),
            ("breaker.failure_threshold", json!("abc"), "expected u32"),
            ("breaker.failure_threshold", json!(0), "at least 1"),
            ("breaker.cooldown", json!("2h"), "at most 1h"),
            ("backoff.initial", json!("1m"), "backoff.initial"),
        ] {
            let (status, body) = s
                .call(
                    "PUT",
                    &format!("/api/v1/settings/{key}"),
                    true,
                    Some(json!({"value": value})),
                )
                .await;
            assert_eq!(status, 422, "{key}={value}: {body}");
            assert_eq!(body["error"]["code"], "invalid_input", "{body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(says), "{key}={value}: {message}");
        }
        let (status, _) = s
            .call(
                "PUT",
                "/api/v1/settings/breaker.cooldown",
                true,
                Some(json!({"value": "45s", "extra": 1})),
            )
            .await;
        assert_eq!(status, 422, "unknown fields in the body are refused");
        assert_eq!(rows().await, 0, "nothing was written");

        // Accepted: written, read back, in force, from the table.
        let (status, body) = s
            .call(
                "PUT",
                "/api/v1/settings/breaker.cooldown",
                true,
                Some(json!({"value": "45s"})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["applied"], true, "{body}");
        assert_eq!(body["data"]["source"], "table", "{body}");
        assert_eq!(runtime.current().breaker.cooldown, Duration::from_secs(45));
        assert_eq!(rows().await, 1);
        let setting = s.setting("breaker.cooldown").await;
        assert_eq!(
            (setting["value"].clone(), setting["source"].clone()),
            (json!("45s"), json!("table"))
        );
        assert_eq!(setting["base"], "20s");

        // Health and the console show the table's state.
        let (_, detailed) = s.call("GET", "/health/detailed", false, None).await;
        assert_eq!(detailed["config"]["version"], 1, "{detailed}");
        assert_eq!(detailed["config"]["last_error"], Value::Null);
        let (_, public) = s.call("GET", "/health/settings", false, None).await;
        assert_eq!(public["values"]["breaker.cooldown"], "45s");
        assert_eq!(public["sources"]["breaker.cooldown"], "table");
        let history: Value = eventually(Duration::from_secs(3), "history samples", || async {
            let h: Value = s
                .client
                .get(format!("{}/health/history", s.base))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (h["samples"].as_array()?.len() >= 2).then_some(h)
        })
        .await;
        assert_eq!(history["capacity"], 300);
        assert!(
            history["samples"][0]["components"]["postgres"]["status"].is_string(),
            "{history}"
        );

        // DELETE: back to the file's value.
        let (status, body) = s
            .call("DELETE", "/api/v1/settings/breaker.cooldown", true, None)
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["source"], "file", "{body}");
        assert_eq!(body["data"]["value"], "20s", "{body}");
        assert_eq!(runtime.current().breaker.cooldown, Duration::from_secs(20));
        assert_eq!(rows().await, 0);

        // A method the route does not answer.
        let (status, body) = s
            .call(
                "POST",
                "/api/v1/settings/breaker.cooldown",
                true,
                Some(json!({})),
            )
            .await;
        assert_eq!(status, 405, "{body}");
        warden.shutdown(Duration::from_secs(2)).await;
    });
}
