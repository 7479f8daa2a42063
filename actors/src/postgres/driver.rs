//! Connects, probes and closes; owns the pool callers share and the rules it is trusted by.

use std::{
    sync::{atomic::AtomicBool, Arc, OnceLock},
    time::Duration,
};

use futures_util::future::LocalBoxFuture;
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions, PgSslMode},
    ConnectOptions, Connection,
};
use url::Url;

use super::client::{PgClient, PgShared, TrustedSince};
use super::migrate::migrate_on;
use crate::{
    call_runtime::CallRuntime,
    connection::{ConnectFuture, Driver, PoolSlot, Timings},
    error::{Database, WardenError},
    io::IoRuntime,
    postgres::errors::{from_sqlx, PgBounds},
    postgres::session::{self, Untrusted},
    secret::Secret,
    settings::{check_schema, PostgresSettings, SettingsError},
};

/// A generation's probe connection: PostgresActor's own, outside the pool. Probing through
/// the pool would measure its contention, not the server: with every pooled connection busy, a
/// probe waiting for one would time out and take a healthy database for a dead one. It counts
/// towards `max_connections`, so the pool gets one less.
pub type PgProbe = Arc<tokio::sync::Mutex<sqlx::PgConnection>>;

/// A pooled connection released this recently, after the last reconnect and the last
/// connection-class failure, is handed out without a liveness round trip (HikariCP's
/// `aliveBypassWindowMs` has the same default). sqlx pings every connection when it is released
/// (off the caller's path), and with `test_before_acquire` again when it is acquired, which
/// doubles the round trips a caller waits for on a short statement; here the release ping is
/// recent enough, and warden's own probe watches the server. The price: a connection that dies
/// within the window after its release (a crash, `pg_terminate_backend`) fails the call that
/// gets it with a `Connection` error (not retried: the statement may have run), instead of
/// being replaced unseen. The first such failure withdraws trust from every idle connection.
pub const ALIVE_BYPASS: Duration = Duration::from_millis(500);

/// Connects, probes and closes; owns the pool callers share.
pub struct PgDriver {
    pub(super) settings: PostgresSettings,
    pub(super) password: Option<Secret>,
    /// Created on the first successful connect and kept until shutdown: checked before use
    /// (see `ALIVE_BYPASS`), the pool discards dead connections by itself, and one pool for
    /// the actor's life means warden never holds more than `max_connections`, even while calls
    /// from before an outage still hold connections.
    pub(super) pool: Arc<PoolSlot<PgClient>>,
    /// The pool's I/O threads, started with the first connect and stopped when the actor is
    /// dropped, after the pool has closed.
    pub(super) io: Arc<OnceLock<IoRuntime>>,
    /// The application's runtime that hosts the pool and its calls instead of `io`, if any.
    hosted: Option<CallRuntime>,
    /// Idle connections released before this moment (the last successful connect, or the last
    /// connection-class failure of a call) are pinged before use.
    trust: Arc<TrustedSince>,
    /// While a `WithPool` closure may hold pooled connections, every release is reset.
    pub(super) untrusted: Arc<Untrusted>,
    /// Scrubbed from every error text: the password, and libpq's `PGPASSWORD`, which sqlx
    /// honours when the URL has none.
    pub(crate) secrets: Arc<Vec<Secret>>,
    /// Migrations run once per process, on the first successful connect.
    pub(super) migrated: Arc<AtomicBool>,
}

impl PgDriver {
    /// A driver for `settings`. Refuses a schema that is not a plain identifier, since it is
    /// pasted into SQL (`search_path`, the migrations); validated settings always pass.
    pub fn new(settings: PostgresSettings) -> Result<Self, SettingsError> {
        check_schema(&settings.schema)?;
        let password = settings.effective_password();
        let secrets = password
            .iter()
            .cloned()
            .chain(std::env::var("PGPASSWORD").ok().map(Secret::new))
            .collect();
        Ok(Self {
            settings,
            password,
            pool: Arc::new(PoolSlot::new()),
            io: Arc::new(OnceLock::new()),
            hosted: None,
            trust: Arc::new(TrustedSince::new()),
            untrusted: Arc::new(Untrusted::new()),
            secrets: Arc::new(secrets),
            migrated: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Reads the shared pool's counts for a metrics scrape: two atomic loads in sqlx, no
    /// round trip; `None` before the first connect and after shutdown.
    pub(crate) fn pool_reader(&self) -> crate::metrics::PoolReader {
        let slot = self.pool.clone();
        let max = self.settings.max_connections.saturating_sub(1).max(1);
        Box::new(move || {
            slot.peek().map(|client| crate::metrics::PoolStats {
                size: client.pool.size(),
                idle: u32::try_from(client.pool.num_idle()).unwrap_or(u32::MAX),
                max,
            })
        })
    }

    /// Hosts the pool and its calls on an application's runtime instead of I/O threads of
    /// warden's own (see `call_runtime.rs`).
    pub(crate) fn hosted_on(mut self, runtime: CallRuntime) -> Self {
        self.hosted = Some(runtime);
        self
    }

    fn bounds(&self) -> PgBounds {
        PgBounds {
            acquire: self.settings.connect_timeout,
            statement: self.statement_timeout(),
        }
    }

    fn pool_options(&self) -> PgPoolOptions {
        let s = &self.settings;
        PgPoolOptions::new()
            // One connection of max_connections is the probe's.
            .max_connections(s.max_connections.saturating_sub(1).max(1))
            .min_connections(s.min_connections.min(s.max_connections.saturating_sub(1)))
            // sqlx retries connects inside acquire_timeout (30 s by default): keep it to the
            // connect bound so an outage surfaces in seconds.
            .acquire_timeout(s.connect_timeout)
            // A connection that died with its server is discarded, not handed out: pinged
            // first unless released recently and since trust was last withdrawn (see
            // ALIVE_BYPASS).
            .test_before_acquire(false)
            .before_acquire({
                let trust = self.trust.clone();
                move |conn, meta| {
                    if meta.idle_for < ALIVE_BYPASS && meta.idle_for < trust.elapsed() {
                        return Box::pin(Keep);
                    }
                    // `false` discards it; the pool opens another.
                    Box::pin(async move { Ok(conn.ping().await.is_ok()) })
                }
            })
            // A `WithPool` closure can leave anything on a session (a `BEGIN`, a `SET`): while
            // one may be running, every connection released is reset, or closed if that fails.
            // Calls warden runs itself never need it (see `statement/`), so it costs nothing
            // unless `WithPool` is in use.
            .after_release({
                let untrusted = self.untrusted.clone();
                move |conn, _| {
                    if !untrusted.now() {
                        return Box::pin(Keep);
                    }
                    Box::pin(async move {
                        Ok(match session::reset(conn).await {
                            Ok(()) => true,
                            Err(error) => {
                                tracing::warn!(%error, "could not reset a pooled session; closing the connection");
                                false
                            }
                        })
                    })
                }
            })
    }

    /// `statement_timeout` as sent: the configured one, but at least a tenth of `query_timeout`
    /// (100 ms at least) below it.
    fn statement_timeout(&self) -> Duration {
        let q = self.settings.query_timeout;
        let margin = (q / 10).max(Duration::from_millis(100));
        self.settings
            .statement_timeout
            .min(q.saturating_sub(margin))
            .max(Duration::from_millis(1))
    }

    /// Connect options built field by field (see the module docs for why). Crate-private: their
    /// `Debug` prints the password, so they never leave the crate; `warden migrate` goes
    /// through [`run_migrations`].
    pub(crate) fn connect_options(&self) -> Result<PgConnectOptions, WardenError> {
        let s = &self.settings;
        let bad = |why: String| WardenError::Connection {
            database: Database::Postgres,
            message: why,
        };
        let url = Url::parse(&s.url).map_err(|e| bad(format!("invalid postgres.url: {e}")))?;
        // The same host, port, user and database `warden run` logs at startup.
        let target = s
            .target()
            .ok_or_else(|| bad("invalid postgres.url".to_owned()))?;
        let mut opts = PgConnectOptions::new_without_pgpass()
            .host(&target.host)
            .port(target.port)
            .username(&target.user)
            .database(&target.database)
            .application_name(&s.application_name)
            .options([
                (
                    "statement_timeout",
                    format!("{}ms", self.statement_timeout().as_millis()),
                ),
                ("search_path", format!("{},public", s.schema)),
            ])
            .log_statements(tracing::log::LevelFilter::Debug);
        if let Some(password) = &self.password {
            opts = opts.password(password.expose());
        }
        for (key, value) in url.query_pairs() {
            if key == "sslmode" || key == "ssl-mode" {
                let mode: PgSslMode = value
                    .parse()
                    .map_err(|_| bad(format!("invalid sslmode `{value}`")))?;
                opts = opts.ssl_mode(mode);
            }
        }
        Ok(opts)
    }
}

impl Driver for PgDriver {
    type Client = PgClient;
    type Probe = PgProbe;
    const DATABASE: Database = Database::Postgres;

    fn timings(&self) -> Timings {
        let s = &self.settings;
        let migrations_pending =
            s.run_migrations && !self.migrated.load(std::sync::atomic::Ordering::Acquire);
        Timings {
            // Migrations run inside the first connect; give them a query's time as well.
            connect_timeout: if migrations_pending {
                s.connect_timeout + s.query_timeout
            } else {
                s.connect_timeout
            },
            call_slots: s.max_connections.saturating_sub(1).max(1) as usize,
        }
    }

    fn connect(&self) -> ConnectFuture<PgClient, PgProbe> {
        let opts = self.connect_options();
        let s = self.settings.clone();
        let secrets = self.secrets.clone();
        let migrated = self.migrated.clone();
        let cell = self.pool.clone();
        let io_cell = self.io.clone();
        let hosted = self.hosted.clone();
        let trust = self.trust.clone();
        let untrusted = self.untrusted.clone();
        let pool_options = self.pool_options();
        let bounds = self.bounds();
        Box::pin(async move {
            let opts = opts?;
            // One connection, one TCP attempt: the pool would retry a refused connect inside
            // acquire_timeout on its own. Warden's backoff paces these connects; the pool's own
            // refills happen only inside a call's acquire, bounded by acquire_timeout.
            let mut conn = opts
                .connect()
                .await
                .map_err(|e| from_sqlx(&e, bounds, &secrets))?;
            let proven = async {
                sqlx::query("SELECT 1")
                    .execute(&mut conn)
                    .await
                    .map_err(|e| from_sqlx(&e, bounds, &secrets))?;
                if s.run_migrations && !migrated.load(std::sync::atomic::Ordering::Acquire) {
                    migrate_on(&mut conn, &s.schema, s.query_timeout, &secrets).await?;
                    migrated.store(true, std::sync::atomic::Ordering::Release);
                    sqlx::query("RESET lock_timeout")
                        .execute(&mut conn)
                        .await
                        .map_err(|e| from_sqlx(&e, bounds, &secrets))?;
                }
                Ok::<_, WardenError>(())
            }
            .await;
            if let Err(e) = proven {
                // A failed migration leaks sqlx's advisory lock on the connection it ran on:
                // close it rather than keep it.
                let _ = conn.close().await;
                return Err(e);
            }
            trust.mark();
            let io = match (hosted, io_cell.get()) {
                (Some(hosted), _) => hosted,
                (None, Some(io)) => CallRuntime::own(io.handle().clone()),
                (None, None) => {
                    let io = IoRuntime::new("warden-pg-io", s.io_threads).map_err(|e| {
                        WardenError::Connection {
                            database: Database::Postgres,
                            message: format!("cannot start the pool's I/O threads: {e}"),
                        }
                    })?;
                    CallRuntime::own(io_cell.get_or_init(|| io).handle().clone())
                }
            };
            let client = cell.get_or_open(|| {
                // Created inside the call runtime: the pool's own tasks (the reaper, refills
                // to min_connections) run there, so every pooled socket belongs to it.
                let _inside = io.handle().enter();
                PgClient(Arc::new(PgShared {
                    pool: pool_options.connect_lazy_with(opts),
                    io: io.clone(),
                    trust: trust.clone(),
                    untrusted: untrusted.clone(),
                    bounds,
                    secrets: secrets.clone(),
                }))
            });
            let Some(client) = client else {
                // Shut down while this connect ran.
                let _ = conn.close().await;
                return Err(WardenError::Stopped {
                    database: Database::Postgres,
                });
            };
            Ok((client, Arc::new(tokio::sync::Mutex::new(conn))))
        })
    }

    fn probe(&self, probe: &PgProbe) -> LocalBoxFuture<'static, Result<(), WardenError>> {
        let probe = probe.clone();
        let secrets = self.secrets.clone();
        Box::pin(async move {
            let mut conn = probe.lock().await;
            sqlx::query("SELECT 1")
                .execute(&mut *conn)
                .await
                .map(drop)
                .map_err(|e| from_sqlx(&e, PgBounds::default(), &secrets))
        })
    }

    fn close(&self) -> LocalBoxFuture<'static, ()> {
        let pool = self.pool.close();
        Box::pin(async move {
            if let Some(client) = pool {
                client.pool.close().await;
            }
        })
    }
}

/// A pool hook's answer when no round trip is needed: keep the connection. The hooks run at
/// every checkout and release and must return a boxed future; this one is zero-sized, so
/// boxing it allocates nothing.
struct Keep;

impl std::future::Future for Keep {
    type Output = Result<bool, sqlx::Error>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::task::Poll::Ready(Ok(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_timeout_stays_below_the_call_timeout() {
        let mut s = PostgresSettings::default();
        assert_eq!(
            PgDriver::new(s.clone()).unwrap().statement_timeout(),
            Duration::from_secs(27)
        );
        s.statement_timeout = Duration::from_secs(5);
        assert_eq!(
            PgDriver::new(s.clone()).unwrap().statement_timeout(),
            Duration::from_secs(5)
        );
        s.query_timeout = Duration::from_millis(500);
        assert_eq!(
            PgDriver::new(s).unwrap().statement_timeout(),
            Duration::from_millis(400)
        );
    }

    #[test]
    fn connect_options_never_print_the_password() {
        let s = PostgresSettings {
            url: "postgres://app:s3cret@db.example:6543/wallets".into(),
            ..Default::default()
        };
        let opts = PgDriver::new(s).unwrap().connect_options().unwrap();
        assert_eq!(opts.get_host(), "db.example");
        assert_eq!(opts.get_port(), 6543);
        assert_eq!(opts.get_username(), "app");
        assert_eq!(opts.get_database(), Some("wallets"));
        assert_eq!(opts.get_application_name(), Some("warden"));
        let o = opts.get_options().unwrap();
        assert!(o.contains("search_path=warden,public"), "{o}");
        assert!(o.contains("statement_timeout=27000ms"), "{o}");
    }

    #[test]
    fn a_schema_that_is_not_an_identifier_is_refused_before_any_sql() {
        for schema in [
            "warden; DROP SCHEMA public",
            "wall-track",
            "1st",
            "",
            "x\"y",
        ] {
            let s = PostgresSettings {
                // Nothing listens on port 1: a missing check fails to connect, not as Usage.
                url: "postgres://postgres@127.0.0.1:1/postgres".into(),
                schema: schema.into(),
                ..Default::default()
            };
            let err = PgDriver::new(s.clone()).err().unwrap();
            assert_eq!(err.key, "postgres.schema", "{schema}");

            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let err = rt
                .block_on(crate::postgres::run_migrations(&s))
                .unwrap_err();
            assert!(
                matches!(&err, WardenError::Usage { message, .. }
                    if message.contains("postgres.schema") && message.contains("plain identifier")),
                "{schema}: {err}"
            );
        }
        let s = PostgresSettings {
            schema: "wallet_2".into(),
            ..Default::default()
        };
        assert!(PgDriver::new(s).is_ok());
    }
}
