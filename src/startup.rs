//! The line an operator reads first: where warden will connect and what it will write. With no
//! configuration at all warden uses whatever PostgreSQL listens on 127.0.0.1:5432 and creates
//! its schema there; it says so, at info level, before any connection is made, so that a first
//! run never writes into a database it merely found without a word. No password is logged:
//! the target is built from [`PostgresSettings::target`], which holds none, and every text is
//! scrubbed of the password and of libpq's `PGPASSWORD` as the driver's errors are (a user
//! name may happen to equal one).

use warden_actors::{
    secret::{sanitize, Secret},
    settings::{redact_url, PostgresSettings},
};

use crate::config::DaemonConfig;

/// The PostgreSQL target and schema as one sentence.
pub fn postgres_target_message(p: &PostgresSettings) -> String {
    let Some(t) = p.target() else {
        return "postgres target: postgres.url does not parse".to_owned();
    };
    let writes = if p.run_migrations {
        format!("migrations create and update schema `{}` there", p.schema)
    } else {
        format!("schema `{}` (postgres.run_migrations is off)", p.schema)
    };
    let default = if p.url_is_default() {
        " (the built-in default: set postgres.url or DATABASE_URL to choose another)"
    } else {
        ""
    };
    format!(
        "postgres target: {}@{}:{}/{}{default}; {writes}",
        t.user, t.host, t.port, t.database
    )
}

/// Logs both databases' targets at info level. Called before the actors start (`run`) and
/// before the migrations run (`migrate`).
pub fn log_targets(cfg: &DaemonConfig) {
    let secrets: Vec<Secret> = [
        cfg.postgres.effective_password(),
        Some(cfg.neo4j.password.clone()),
    ]
    .into_iter()
    .flatten()
    .chain(std::env::var("PGPASSWORD").ok().map(Secret::new))
    .collect();
    let clean = |text: &str| sanitize(text, &secrets);
    let p = &cfg.postgres;
    let message = clean(&postgres_target_message(p));
    match p.target() {
        Some(t) => tracing::info!(
            database = "postgres",
            host = %clean(&t.host),
            port = t.port,
            dbname = %clean(&t.database),
            user = %clean(&t.user),
            schema = %p.schema,
            run_migrations = p.run_migrations,
            default_url = p.url_is_default(),
            "{message}"
        ),
        None => tracing::info!(database = "postgres", "{message}"),
    }
    let n = &cfg.neo4j;
    let uri = clean(&redact_url(&n.uri));
    let (user, dbname) = (clean(&n.user), clean(&n.database));
    tracing::info!(
        database = "neo4j",
        uri = %uri,
        user = %user,
        dbname = %dbname,
        "neo4j target: {uri} as {user}, database {dbname}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_target_says_it_is_the_default() {
        let p = PostgresSettings::default();
        let m = postgres_target_message(&p);
        assert!(m.contains("postgres@127.0.0.1:5432/postgres"), "{m}");
        assert!(
            m.contains("built-in default") && m.contains("schema `warden`"),
            "{m}"
        );

        let p = PostgresSettings {
            url: "postgres://app:pg-s3cret@db:6000/appdb".into(),
            schema: "app".into(),
            run_migrations: false,
            ..Default::default()
        };
        let m = postgres_target_message(&p);
        assert!(
            m.contains("app@db:6000/appdb") && m.contains("`app`"),
            "{m}"
        );
        assert!(
            !m.contains("built-in default") && !m.contains("s3cret"),
            "{m}"
        );
    }
}
