//! PostgresActor: a supervised sqlx pool, and the `Sql` message applications send it.
//!
//! A connect opens one connection, proves it with `SELECT 1`, runs the migrations on it, and
//! keeps it for the probes; the pool callers share is created lazily (`connect_lazy_with`).
//! Connect options are built field by field from the URL: `PgConnectOptions`'s own parser
//! reads `~/.pgpass`, and its `Debug` prints the password, so neither is used.
//! Every connection gets `statement_timeout` (a little below `query_timeout`, so the server
//! cancels a slow statement before warden gives up on the call) and `search_path` (warden's
//! schema first) as startup options, since sqlx has no read timeout of its own.
//!
//! Calls run on the pool's own I/O threads, not on the actors' arbiter (see `io.rs` for the
//! measurements behind that): whoever admits a call spawns it onto those threads, and the call
//! answers its caller directly. The handler admits calls sent to the actor's address; a
//! [`PostgresHandle`](crate::PostgresHandle) admits them on the caller's thread, which saves
//! the caller two thread wake-ups per call (see [`Call`]).

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, OnceLock,
    },
    time::{Duration, Instant},
};

use actix::prelude::*;
use futures_util::future::{BoxFuture, LocalBoxFuture};
use serde_json::{Map, Value};
use sqlx::{
    postgres::{PgArguments, PgConnectOptions, PgPoolOptions, PgRow, PgSslMode, PgTypeInfo},
    query::Query,
    Column, ConnectOptions, Connection, PgPool, Postgres, Row, TypeInfo, ValueRef,
};
use url::Url;

use crate::{
    call::{self, sealed::Start, Call, IoClient},
    connection::{
        Admitted, ConnectFuture, ConnectionActor, Driver, Failed, PoolSlot, Reply, Timings,
    },
    error::{from_sqlx, Database, PgBounds, WardenError},
    io::IoRuntime,
    secret::Secret,
    session::{self, Untrusted},
    settings::{check_schema, percent_decode, PostgresSettings, SettingsError},
    statement::{self, Context, Effect},
    transaction::{self, Committing, Transaction, WithTransaction},
};

/// Rows as JSON objects keyed by column name, the result shape of both query messages.
pub type Rows = Vec<Map<String, Value>>;

/// The supervised PostgreSQL actor.
pub type PostgresActor = ConnectionActor<PgDriver>;

/// Runs a statement on PostgreSQL. Parameters bind positionally (`$1`, `$2`, ...):
/// JSON `null` binds as an untyped NULL (the server infers its type), booleans as `bool`,
/// integers as `int8`, other numbers as `float8`, strings as `text` (cast in SQL for other
/// types: `$1::uuid`, `$2::timestamptz`), arrays and objects as `jsonb`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Rows, WardenError>")]
pub struct Sql {
    /// The statement.
    pub query: String,
    /// Positional parameters.
    pub params: Vec<Value>,
}

impl Sql {
    /// A statement without parameters; add them with [`Sql::bind`].
    pub fn new(query: impl Into<String>) -> Self {
        Self {
            query: query.into(),
            params: Vec::new(),
        }
    }

    /// Appends the next positional parameter.
    pub fn bind(mut self, value: impl Into<Value>) -> Self {
        self.params.push(value.into());
        self
    }
}

/// Hands the caller the pool itself, inside the same circuit check, retry budget and deadline
/// as [`Sql`]: the typed escape hatch for what JSON rows cannot express (`query_as`, COPY,
/// transactions). The closure may run more than once (once per attempt). Its future runs on
/// the pool's I/O threads, so it must be `Send` (sqlx's futures are).
#[derive(Message)]
#[rtype(result = "Result<T, WardenError>")]
pub struct WithPool<T: Send + 'static> {
    run: Box<dyn FnMut(PgPool) -> BoxFuture<'static, Result<T, sqlx::Error>> + Send>,
}

impl<T: Send + 'static> WithPool<T> {
    /// Wraps a closure that gets a pool handle per attempt.
    pub fn new<F>(run: F) -> Self
    where
        F: FnMut(PgPool) -> BoxFuture<'static, Result<T, sqlx::Error>> + Send + 'static,
    {
        Self { run: Box::new(run) }
    }
}

/// A generation's probe connection: PostgresActor's own, outside the pool. Probing through
/// the pool would measure its contention, not the server: with every pooled connection busy, a
/// probe waiting for one would time out and take a healthy database for a dead one. It counts
/// towards `max_connections`, so the pool gets one less.
pub type PgProbe = Arc<tokio::sync::Mutex<sqlx::PgConnection>>;

/// What calls get: the shared pool, the runtime its sockets belong to (where calls run), the
/// moment since which its idle connections are trusted, and what mapping its errors needs.
#[derive(Clone)]
pub struct PgClient {
    pool: PgPool,
    io: tokio::runtime::Handle,
    trust: Arc<TrustedSince>,
    untrusted: Arc<Untrusted>,
    bounds: PgBounds,
    secrets: Arc<Vec<Secret>>,
}

impl PgClient {
    /// The shared pool.
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Maps a driver error; a connection-class one withdraws trust from every idle connection,
    /// so that the next acquires ping them instead of handing out more dead ones.
    pub(crate) fn error(&self, e: &sqlx::Error) -> WardenError {
        let e = from_sqlx(e, self.bounds, &self.secrets);
        if e.is_connection_loss() {
            self.trust.mark();
        }
        e
    }
}

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
    settings: PostgresSettings,
    password: Option<Secret>,
    /// Created on the first successful connect and kept until shutdown: checked before use
    /// (see `ALIVE_BYPASS`), the pool discards dead connections by itself, and one pool for
    /// the actor's life means warden never holds more than `max_connections`, even while calls
    /// from before an outage still hold connections.
    pool: Arc<PoolSlot<PgClient>>,
    /// The pool's I/O threads, started with the first connect and stopped when the actor is
    /// dropped, after the pool has closed.
    io: Arc<OnceLock<IoRuntime>>,
    /// Idle connections released before this moment (the last successful connect, or the last
    /// connection-class failure of a call) are pinged before use.
    trust: Arc<TrustedSince>,
    /// While a `WithPool` closure may hold pooled connections, every release is reset.
    untrusted: Arc<Untrusted>,
    /// Scrubbed from every error text: the password, and libpq's `PGPASSWORD`, which sqlx
    /// honours when the URL has none.
    secrets: Arc<Vec<Secret>>,
    /// Migrations run once per process, on the first successful connect.
    migrated: Arc<AtomicBool>,
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
            trust: Arc::new(TrustedSince::new()),
            untrusted: Arc::new(Untrusted::new()),
            secrets: Arc::new(secrets),
            migrated: Arc::new(AtomicBool::new(false)),
        })
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
                    let fresh = meta.idle_for < ALIVE_BYPASS.min(trust.elapsed());
                    Box::pin(async move {
                        // `false` discards it; the pool opens another.
                        Ok(fresh || conn.ping().await.is_ok())
                    })
                }
            })
            // A `WithPool` closure can leave anything on a session (a `BEGIN`, a `SET`): while
            // one may be running, every connection released is reset, or closed if that fails.
            // Calls warden runs itself never need it (see `statement.rs`), so it costs nothing
            // unless `WithPool` is in use.
            .after_release({
                let untrusted = self.untrusted.clone();
                move |conn, _| {
                    let check = untrusted.now();
                    Box::pin(async move {
                        if !check {
                            return Ok(true);
                        }
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
        let host = url.host_str().unwrap_or("127.0.0.1");
        let user = match url.username() {
            "" => "postgres".to_owned(),
            u => percent_decode(u),
        };
        let database = match url.path().trim_start_matches('/') {
            "" => user.clone(),
            d => percent_decode(d),
        };
        let mut opts = PgConnectOptions::new_without_pgpass()
            .host(host)
            .port(url.port().unwrap_or(5432))
            .username(&user)
            .database(&database)
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
            query_timeout: s.query_timeout,
            probe_interval: s.probe_interval,
            probe_timeout: s.probe_timeout,
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
            let io = match io_cell.get() {
                Some(io) => io.handle().clone(),
                None => {
                    let io = IoRuntime::new("warden-pg-io", s.io_threads).map_err(|e| {
                        WardenError::Connection {
                            database: Database::Postgres,
                            message: format!("cannot start the pool's I/O threads: {e}"),
                        }
                    })?;
                    io_cell.get_or_init(|| io).handle().clone()
                }
            };
            let client = cell.get_or_open(|| {
                // Created inside the I/O runtime: the pool's own tasks (the reaper, refills
                // to min_connections) run there, so every pooled socket belongs to it.
                let _inside = io.enter();
                PgClient {
                    pool: pool_options.connect_lazy_with(opts),
                    io: io.clone(),
                    trust: trust.clone(),
                    untrusted: untrusted.clone(),
                    bounds,
                    secrets: secrets.clone(),
                }
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

impl IoClient for PgClient {
    fn io(&self) -> &tokio::runtime::Handle {
        &self.io
    }
}

/// The moment since which idle pooled connections are trusted, readable from any thread.
struct TrustedSince {
    base: Instant,
    /// Nanoseconds after `base`.
    at: AtomicU64,
}

impl TrustedSince {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            at: AtomicU64::new(0),
        }
    }

    /// Trusts only connections released from now on.
    fn mark(&self) {
        let nanos = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.at.store(nanos, Ordering::Release);
    }

    /// Time since trust was last withdrawn.
    fn elapsed(&self) -> Duration {
        let at = Duration::from_nanos(self.at.load(Ordering::Acquire));
        self.base.elapsed().saturating_sub(at)
    }
}

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
async fn migrate_on(
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
#[allow(private_interfaces)]
mod starts {
    use super::*;

    impl Start<PgDriver> for Sql {
        fn start(mut self, admitted: Admitted<PgClient>) -> BoxFuture<'static, Self::Result> {
            if let Some(refused) = refuse_params(&mut self.params, "") {
                return Box::pin(std::future::ready(Err(refused)));
            }
            Box::pin(async move { admitted.call(|client| execute(client, &self)).await })
        }
    }

    impl<T: Send + 'static> Start<PgDriver> for WithPool<T> {
        fn start(mut self, admitted: Admitted<PgClient>) -> BoxFuture<'static, Self::Result> {
            admitted.client().untrusted.until(admitted.deadline());
            Box::pin(admitted.call(move |client| {
                let fut = (self.run)(client.pool.clone());
                // The closure may have committed anything before it failed: never retried.
                async move { fut.await.map_err(|e| Failed::opaque(client.error(&e))) }
            }))
        }
    }

    impl Start<PgDriver> for Transaction {
        fn start(mut self, admitted: Admitted<PgClient>) -> BoxFuture<'static, Self::Result> {
            for (i, sql) in self.statements.iter_mut().enumerate() {
                let place = format!("statement {} of the transaction: ", i + 1);
                if let Some(refused) = refuse_params(&mut sql.params, &place) {
                    return Box::pin(std::future::ready(Err(refused)));
                }
            }
            let committing = Committing::default();
            Box::pin(async move {
                admitted
                    .call(|client| transaction::run_statements(client, &self, &committing))
                    .await
                    .map_err(|e| committing.explain(e))
            })
        }
    }

    impl<T: Send + 'static> Start<PgDriver> for WithTransaction<T> {
        fn start(self, admitted: Admitted<PgClient>) -> BoxFuture<'static, Self::Result> {
            let committing = Committing::default();
            // Each attempt borrows the closure mutably; attempts run one after another, so
            // the lock is never contended.
            let msg = Arc::new(tokio::sync::Mutex::new(self));
            Box::pin(async move {
                admitted
                    .call(|client| {
                        let msg = msg.clone();
                        let committing = &committing;
                        async move {
                            let mut msg = msg.lock().await;
                            transaction::run_closure(client, &mut msg, committing).await
                        }
                    })
                    .await
                    .map_err(|e| committing.explain(e))
            })
        }
    }
}

/// The `Usage` error for parameters out of bounds (see `params.rs`), which are taken apart
/// here, without recursion, rather than dropped wherever the call ends.
fn refuse_params(params: &mut Vec<Value>, place: &str) -> Option<WardenError> {
    let why = crate::params::check_sql(params).err()?;
    params.drain(..).for_each(crate::params::dismantle);
    Some(WardenError::Usage {
        database: Database::Postgres,
        message: format!("{place}{why}"),
    })
}

impl Call<PgDriver> for Sql {
    type Output = Rows;
}

impl<T: Send + 'static> Call<PgDriver> for WithPool<T> {
    type Output = T;
}

impl Call<PgDriver> for Transaction {
    type Output = Vec<Rows>;
}

impl<T: Send + 'static> Call<PgDriver> for WithTransaction<T> {
    type Output = T;
}

impl actix::Handler<Sql> for PostgresActor {
    type Result = Reply<Result<Rows, WardenError>>;

    fn handle(&mut self, msg: Sql, _: &mut Self::Context) -> Self::Result {
        call::start(self, msg)
    }
}

impl<T: Send + 'static> actix::Handler<WithPool<T>> for PostgresActor {
    type Result = Reply<Result<T, WardenError>>;

    fn handle(&mut self, msg: WithPool<T>, _: &mut Self::Context) -> Self::Result {
        call::start(self, msg)
    }
}

impl actix::Handler<Transaction> for PostgresActor {
    type Result = Reply<Result<Vec<Rows>, WardenError>>;

    fn handle(&mut self, msg: Transaction, _: &mut Self::Context) -> Self::Result {
        call::start(self, msg)
    }
}

impl<T: Send + 'static> actix::Handler<WithTransaction<T>> for PostgresActor {
    type Result = Reply<Result<T, WardenError>>;

    fn handle(&mut self, msg: WithTransaction<T>, _: &mut Self::Context) -> Self::Result {
        call::start(self, msg)
    }
}

/// Runs one attempt of a statement and converts its rows. A statement that would leave its
/// session changed is refused before anything is sent, and one that may have changed it has
/// its session reset before the connection goes back to the pool (see `statement.rs`). The
/// connection is acquired first, so that a failure to get one (nothing sent yet) can be told
/// from a failure mid-statement.
async fn execute(client: PgClient, sql: &Sql) -> Result<Rows, Failed> {
    let usage = |message: String| {
        Failed::before_send(WardenError::Usage {
            database: Database::Postgres,
            message,
        })
    };
    let effect = statement::classify(&sql.query, Context::Single).map_err(|r| usage(r.0))?;
    crate::params::check_sql(&sql.params).map_err(usage)?;
    let mut conn = client
        .pool
        .acquire()
        .await
        .map_err(|e| Failed::before_send(client.error(&e)))?;
    let rows = fetch_rows(&client, &mut conn, sql)
        .await
        .map_err(Failed::after_send);
    if effect == Effect::MayTaint {
        session::reset_or_close(conn).await;
    }
    rows
}

/// Runs one statement on `conn` and converts its rows to JSON.
pub(crate) async fn fetch_rows(
    client: &PgClient,
    conn: &mut sqlx::PgConnection,
    sql: &Sql,
) -> Result<Rows, WardenError> {
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.query.as_str()));
    for param in &sql.params {
        query = bind(query, param);
    }
    let rows = query
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| client.error(&e))?;
    rows.iter().map(row_to_json).collect()
}

/// A NULL whose type the server infers: declared as `unknown` (OID 705), which PostgreSQL
/// resolves from context like an untyped literal. Only NULL can be sent this way, since a
/// value's bytes must match the type sqlx declares.
struct UntypedNull;

impl sqlx::Type<Postgres> for UntypedNull {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(sqlx::postgres::types::Oid(705))
    }
}

impl sqlx::Encode<'_, Postgres> for UntypedNull {
    fn encode_by_ref(
        &self,
        _: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        Ok(sqlx::encode::IsNull::Yes)
    }
}

fn bind<'q>(
    query: Query<'q, Postgres, PgArguments>,
    value: &Value,
) -> Query<'q, Postgres, PgArguments> {
    match value {
        Value::Null => query.bind(UntypedNull),
        Value::Bool(b) => query.bind(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => query.bind(i),
            None => query.bind(n.as_f64()),
        },
        Value::String(s) => query.bind(s.clone()),
        Value::Array(_) | Value::Object(_) => query.bind(sqlx::types::Json(value.clone())),
    }
}

/// Converts one row: common PostgreSQL types to their natural JSON, numeric as a string (JSON
/// numbers would lose its precision), timestamptz as RFC 3339 UTC.
fn row_to_json(row: &PgRow) -> Result<Map<String, Value>, WardenError> {
    let mut out = Map::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let value = column_to_json(row, i).map_err(|e| WardenError::Conversion {
            database: Database::Postgres,
            message: format!(
                "column `{}` ({}): {e}",
                column.name(),
                column.type_info().name()
            ),
        })?;
        out.insert(column.name().to_owned(), value);
    }
    Ok(out)
}

fn column_to_json(row: &PgRow, i: usize) -> Result<Value, sqlx::Error> {
    if row.try_get_raw(i)?.is_null() {
        return Ok(Value::Null);
    }
    let type_name = row.columns()[i].type_info().name().to_owned();
    Ok(match type_name.as_str() {
        "BOOL" => Value::Bool(row.try_get(i)?),
        "INT2" => Value::from(row.try_get::<i16, _>(i)?),
        "INT4" => Value::from(row.try_get::<i32, _>(i)?),
        "INT8" => Value::from(row.try_get::<i64, _>(i)?),
        "OID" => Value::from(row.try_get::<sqlx::postgres::types::Oid, _>(i)?.0),
        "FLOAT4" => float(row.try_get::<f32, _>(i)?.into()),
        "FLOAT8" => float(row.try_get::<f64, _>(i)?),
        "NUMERIC" => Value::String(numeric_text(row, i)?),
        "VOID" => Value::Null,
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" | "CITEXT" => {
            Value::String(row.try_get(i)?)
        }
        "UUID" => Value::String(row.try_get::<sqlx::types::Uuid, _>(i)?.to_string()),
        "TIMESTAMPTZ" => Value::String(
            row.try_get::<chrono::DateTime<chrono::Utc>, _>(i)?
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        ),
        "TIMESTAMP" => Value::String(row.try_get::<chrono::NaiveDateTime, _>(i)?.to_string()),
        "DATE" => Value::String(row.try_get::<chrono::NaiveDate, _>(i)?.to_string()),
        "TIME" => Value::String(row.try_get::<chrono::NaiveTime, _>(i)?.to_string()),
        "JSON" | "JSONB" => row.try_get::<sqlx::types::Json<Value>, _>(i)?.0,
        "TEXT[]" | "VARCHAR[]" => Value::from(row.try_get::<Vec<String>, _>(i)?),
        "INT4[]" => Value::from(row.try_get::<Vec<i32>, _>(i)?),
        "INT8[]" => Value::from(row.try_get::<Vec<i64>, _>(i)?),
        "BOOL[]" => Value::from(row.try_get::<Vec<bool>, _>(i)?),
        "FLOAT8[]" => Value::from(row.try_get::<Vec<f64>, _>(i)?),
        "UUID[]" => Value::from(
            row.try_get::<Vec<sqlx::types::Uuid>, _>(i)?
                .iter()
                .map(|u| u.to_string())
                .collect::<Vec<_>>(),
        ),
        other => {
            return Err(sqlx::Error::Decode(
                format!("no JSON mapping for type {other}; cast it in SQL (e.g. ::text)").into(),
            ))
        }
    })
}

/// A numeric as PostgreSQL prints it. The decoded value loses the display scale (`10.50`
/// would print as `10.5000`), so the scale is read from the binary header (ndigits, weight,
/// sign, dscale: four big-endian i16s) and applied.
fn numeric_text(row: &PgRow, i: usize) -> Result<String, sqlx::Error> {
    let raw = row.try_get_raw(i)?;
    let bytes = raw.as_bytes().map_err(sqlx::Error::Decode)?;
    // sign 0xC000 is NaN, which BigDecimal cannot hold.
    if bytes.len() >= 6 && bytes[4..6] == [0xC0, 0x00] {
        return Ok("NaN".into());
    }
    let dscale = bytes
        .get(6..8)
        .map(|b| i64::from(i16::from_be_bytes([b[0], b[1]])))
        .unwrap_or(0);
    let value = row.try_get::<sqlx::types::BigDecimal, _>(i)?;
    Ok(value.with_scale(dscale).to_string())
}

/// NaN and infinities have no JSON number; they become strings as PostgreSQL prints them.
fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or_else(
        || {
            Value::String(
                if f.is_nan() {
                    "NaN"
                } else if f > 0.0 {
                    "Infinity"
                } else {
                    "-Infinity"
                }
                .into(),
            )
        },
        Value::Number,
    )
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
        assert!(o.contains("search_path=walltrack,public"), "{o}");
        assert!(o.contains("statement_timeout=27000ms"), "{o}");
    }

    #[test]
    fn a_schema_that_is_not_an_identifier_is_refused_before_any_sql() {
        for schema in [
            "walltrack; DROP SCHEMA public",
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
            let err = rt.block_on(run_migrations(&s)).unwrap_err();
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

    #[test]
    fn sql_builder_binds_in_order() {
        let q = Sql::new("SELECT $1, $2").bind(1).bind("x");
        assert_eq!(q.params, vec![Value::from(1), Value::from("x")]);
    }
}
