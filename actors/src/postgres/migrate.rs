//! The embedded migrations, run on the first connect and by `warden migrate`.

use std::time::Duration;

use sqlx::{ConnectOptions, Connection};

use super::driver::PgDriver;
use crate::{
    error::{Database, WardenError},
    postgres::errors::{from_sqlx, PgBounds},
    secret::Secret,
    settings::PostgresSettings,
};

/// Applies the embedded migrations once (`warden migrate`), on a dedicated connection, always
/// closed afterwards: a failed migration leaks sqlx's advisory lock on the connection it ran
/// on, and a pooled connection would keep it. sqlx's advisory lock makes several instances
/// starting together take turns; `lock_timeout` (the settings' `query_timeout`) bounds the
/// wait. It takes the settings and builds the connect options the actor would, so that those
/// options (whose `Debug` prints the password) stay inside the crate, and its errors are
/// scrubbed of the same secrets as the actor's, `PGPASSWORD` included. A schema that is not
/// a plain identifier is refused with [`WardenError::Usage`] before anything connects.
pub async fn run_migrations(settings: &PostgresSettings) -> Result<(), WardenError> {
    let driver = PgDriver::new(settings.clone()).map_err(|e| WardenError::Usage {
        database: Database::Postgres,
        message: e.to_string(),
    })?;
    let opts = driver.connect_options()?;
    let schema = settings.schema.as_str();
    let lock_timeout = settings.query_timeout;
    let secrets: &[Secret] = &driver.secrets;
    let bounds = PgBounds {
        acquire: lock_timeout,
        statement: lock_timeout,
    };
    let mut conn = opts
        .connect()
        .await
        .map_err(|e| from_sqlx(&e, bounds, secrets))?;
    let result = migrate_on(&mut conn, schema, lock_timeout, secrets).await;
    let _ = conn.close().await;
    result
}

/// Applies the migrations on `conn`, which the caller must close afterwards.
pub(super) async fn migrate_on(
    conn: &mut sqlx::PgConnection,
    schema: &str,
    lock_timeout: Duration,
    secrets: &[Secret],
) -> Result<(), WardenError> {
    let result = async {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SET lock_timeout = '{}ms'",
            lock_timeout.as_millis()
        )))
        .execute(&mut *conn)
        .await?;
        // `migrate!` resolves its path from this crate (warden-actors): ../migrations.
        let mut migrator = sqlx::migrate!("../migrations");
        // The bookkeeping table would land in the first schema of search_path; keep it in
        // warden's schema explicitly, created first.
        migrator.create_schema(schema.to_owned());
        migrator.dangerous_set_table_name(format!("{schema}._sqlx_migrations"));
        migrator.run(&mut *conn).await.map_err(sqlx::Error::from)
    }
    .await;
    let bounds = PgBounds {
        acquire: lock_timeout,
        statement: lock_timeout,
    };
    result.map_err(|e| from_sqlx(&e, bounds, secrets))?;
    tracing::info!(schema, "migrations applied");
    Ok(())
}

// How each call starts on the pool's I/O threads once admitted (see `call.rs`).
// The `Admitted` in `start`'s signature is crate-private, and so in fact is the method: see
// `call::sealed`.
