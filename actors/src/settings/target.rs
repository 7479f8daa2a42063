//! Where PostgreSQL calls go, as the connect options see it: host, port, database and user,
//! parsed from `postgres.url` once here so that the log line an operator reads at startup and
//! the connection the driver opens cannot disagree. It holds no password.

use ::url::Url;

use super::{percent_decode, PostgresSettings};

/// The server, database and role of `postgres.url`, with libpq's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTarget {
    /// Host name or address (`127.0.0.1` when the URL has none).
    pub host: String,
    /// Port (`5432` when the URL has none).
    pub port: u16,
    /// Database (the user's name when the URL has none, as libpq does).
    pub database: String,
    /// Role (`postgres` when the URL has none).
    pub user: String,
}

impl PostgresSettings {
    /// The target of `postgres.url`; `None` if the URL does not parse (validation refuses it).
    pub fn target(&self) -> Option<PgTarget> {
        let url = Url::parse(&self.url).ok()?;
        let user = match url.username() {
            "" => "postgres".to_owned(),
            u => percent_decode(u),
        };
        let database = match url.path().trim_start_matches('/') {
            "" => user.clone(),
            d => percent_decode(d),
        };
        Some(PgTarget {
            host: url.host_str().unwrap_or("127.0.0.1").to_owned(),
            port: url.port().unwrap_or(5432),
            database,
            user,
        })
    }

    /// Whether `postgres.url` is still the built-in default: warden will use whatever
    /// PostgreSQL it finds on the local port 5432.
    pub fn url_is_default(&self) -> bool {
        self.url == PostgresSettings::default().url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> PgTarget {
        PostgresSettings {
            url: url.into(),
            ..Default::default()
        }
        .target()
        .unwrap()
    }

    #[test]
    fn defaults_fill_what_the_url_leaves_out() {
        assert_eq!(
            target("postgres://db.internal"),
            PgTarget {
                host: "db.internal".into(),
                port: 5432,
                database: "postgres".into(),
                user: "postgres".into(),
            }
        );
        let t = target("postgres://app%40x:s3cret@[::1]:6543/my%20db?sslmode=require");
        assert_eq!((t.host.as_str(), t.port), ("[::1]", 6543));
        assert_eq!((t.user.as_str(), t.database.as_str()), ("app@x", "my db"));
        assert!(!format!("{t:?}").contains("s3cret"));
        assert!(PostgresSettings::default().url_is_default());
    }
}
