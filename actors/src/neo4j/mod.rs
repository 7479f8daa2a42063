//! Neo4jActor: a supervised neo4rs graph, and the messages applications send it: [`Cypher`],
//! [`WithGraph`] and [`CypherTransaction`].
//!
//! `Graph::connect` is lazy, so the connect is proven with `RETURN 1 AS ping`, which is also
//! the probe. neo4rs's `connection_timeout` does not cover the Bolt handshake, so every driver
//! future runs under an outer timeout (see [`crate::connection`]). neo4rs retries
//! `Neo.TransientError.*` of an auto-commit query internally for up to about 60 s; that is
//! bounded by warden's `query_timeout`, which covers the whole call. Explicit transactions are
//! warden's own (see `graph_transaction.rs`): neo4rs never retries them.
//!
//! Calls run on the graph's own I/O threads (`neo4j.io_threads`), not on the actors' arbiter:
//! the shared graph is created inside that runtime and used only there, so its pooled sockets
//! belong to it. The probe's one-connection graph stays on the arbiter with the actor. Whoever
//! admits a call starts it there: the handler for a message sent to the actor's address, or a
//! [`Neo4jHandle`](crate::Neo4jHandle) on the caller's thread (see `call.rs`).

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use actix::prelude::*;
use futures_util::future::{BoxFuture, LocalBoxFuture};
use neo4rs::{BoltType, ConfigBuilder, Graph};
use serde_json::{Map, Value};

use crate::{
    call::{self, sealed::Start, Call, IoClient},
    call_runtime::CallRuntime,
    connection::{
        Admitted, Committing, ConnectFuture, ConnectionActor, Driver, Failed, PoolSlot, Reply,
        Timings,
    },
    error::{Database, WardenError},
    io::IoRuntime,
    rows::Rows,
    secret::Secret,
    settings::Neo4jSettings,
};

mod errors;
pub mod transaction;

pub(crate) use errors::from_neo4rs;
use transaction::CypherTransaction;

/// The supervised Neo4j actor.
pub type Neo4jActor = ConnectionActor<Neo4jDriver>;

/// Runs a Cypher statement in an auto-commit transaction. Parameters are named (`$name`) and
/// convert from JSON: null, booleans, integers, floats, strings, lists and maps.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Rows, WardenError>")]
pub struct Cypher {
    /// The statement.
    pub query: String,
    /// Named parameters.
    pub params: Map<String, Value>,
}

impl Cypher {
    /// A statement without parameters; add them with [`Cypher::param`].
    pub fn new(query: impl Into<String>) -> Self {
        Self {
            query: query.into(),
            params: Map::new(),
        }
    }

    /// Sets a named parameter.
    pub fn param(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.params.insert(name.into(), value.into());
        self
    }
}

/// Hands the caller the graph itself, inside the same circuit check, retry budget and deadline
/// as [`Cypher`]. The closure may run more than once (once per attempt). Its future runs on
/// the graph's I/O threads, so it must be `Send` (neo4rs's futures are): build it with
/// `Box::pin(async move { ... })`.
#[derive(Message)]
#[rtype(result = "Result<T, WardenError>")]
pub struct WithGraph<T: Send + 'static> {
    run: Box<dyn FnMut(Graph) -> BoxFuture<'static, Result<T, neo4rs::Error>> + Send>,
}

impl<T: Send + 'static> WithGraph<T> {
    /// Wraps a closure that gets a graph handle per attempt.
    pub fn new<F>(run: F) -> Self
    where
        F: FnMut(Graph) -> BoxFuture<'static, Result<T, neo4rs::Error>> + Send + 'static,
    {
        Self { run: Box::new(run) }
    }
}

/// What calls get: the shared graph, the runtime its sockets belong to (where calls run), and
/// the secrets to scrub from its errors.
#[derive(Clone)]
pub struct GraphClient {
    graph: Graph,
    io: CallRuntime,
    secrets: Arc<Vec<Secret>>,
}

impl GraphClient {
    /// The shared graph.
    pub(crate) fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Maps a driver error met while a call ran.
    pub(crate) fn error(&self, e: &neo4rs::Error) -> WardenError {
        from_neo4rs(e, Duration::ZERO, &self.secrets)
    }
}

impl IoClient for GraphClient {
    fn io(&self) -> &CallRuntime {
        &self.io
    }
}

/// Connects, probes and drops neo4rs graphs; owns the graph callers share.
pub struct Neo4jDriver {
    settings: Neo4jSettings,
    /// The graph callers share, created on the first successful connect and kept until
    /// shutdown: neo4rs resets a pooled connection before handing it out and discards it if
    /// that fails, so the pool survives outages by itself, and one pool for the actor's life
    /// bounds warden's connections. Each generation's probe uses a graph of one connection of
    /// its own, so that a busy pool cannot fail a probe; it counts towards `max_connections`.
    graph: Arc<PoolSlot<GraphClient>>,
    /// The graph's I/O threads, started with the first connect and stopped when the actor is
    /// dropped, after the graph has been closed.
    io: Arc<OnceLock<IoRuntime>>,
    /// The application's runtime that hosts the graph and its calls instead of `io`, if any.
    hosted: Option<CallRuntime>,
    /// Scrubbed from every error text.
    secrets: Arc<Vec<Secret>>,
}

impl Neo4jDriver {
    /// A driver for validated settings.
    pub fn new(settings: Neo4jSettings) -> Self {
        let secrets = Arc::new(vec![settings.password.clone()]);
        Self {
            settings,
            graph: Arc::new(PoolSlot::new()),
            io: Arc::new(OnceLock::new()),
            hosted: None,
            secrets,
        }
    }

    /// Hosts the graph's pool and its calls on an application's runtime instead of I/O
    /// threads of warden's own (see `call_runtime.rs`).
    pub(crate) fn hosted_on(mut self, runtime: CallRuntime) -> Self {
        self.hosted = Some(runtime);
        self
    }
}

impl Driver for Neo4jDriver {
    type Client = GraphClient;
    type Probe = Graph;
    const DATABASE: Database = Database::Neo4j;

    fn timings(&self) -> Timings {
        let s = &self.settings;
        Timings {
            connect_timeout: s.connect_timeout,
            query_timeout: s.query_timeout,
            probe_interval: s.probe_interval,
            probe_timeout: s.probe_timeout,
            call_slots: s.max_connections.saturating_sub(1).max(1) as usize,
        }
    }

    fn connect(&self) -> ConnectFuture<GraphClient, Graph> {
        let s = self.settings.clone();
        let slot = self.graph.clone();
        let io_cell = self.io.clone();
        let hosted = self.hosted.clone();
        let shared_secrets = self.secrets.clone();
        Box::pin(async move {
            let secrets: &[Secret] = &shared_secrets;
            let t = s.connect_timeout;
            // Built field by field; the derived Debug of neo4rs's Config prints the password,
            // so it is never formatted.
            let config = |max_connections: u32| {
                ConfigBuilder::default()
                    .uri(s.uri.as_str())
                    .user(s.user.as_str())
                    .password(s.password.expose())
                    .db(s.database.as_str())
                    .max_connections(max_connections as usize)
                    .connection_timeout(t)
                    .build()
                    .map_err(|e| from_neo4rs(&e, t, secrets))
            };
            // Graphs connect lazily: the probe graph's first ping opens its one connection and
            // proves the server; the shared graph opens connections on demand.
            let probe = Graph::connect(config(1)?).map_err(|e| from_neo4rs(&e, t, secrets))?;
            ping(&probe)
                .await
                .map_err(|e| from_neo4rs(&e, t, secrets))?;
            let io = match (hosted, io_cell.get()) {
                (Some(hosted), _) => hosted,
                (None, Some(io)) => CallRuntime::own(io.handle().clone()),
                (None, None) => {
                    let io = IoRuntime::new("warden-neo4j-io", s.io_threads).map_err(|e| {
                        WardenError::Connection {
                            database: Database::Neo4j,
                            message: format!("cannot start the graph's I/O threads: {e}"),
                        }
                    })?;
                    CallRuntime::own(io_cell.get_or_init(|| io).handle().clone())
                }
            };
            // Creating a graph opens nothing, so it is cheap to build one that loses the race.
            // It is created inside the I/O runtime, where every call that opens its pooled
            // connections runs, so that anything it starts belongs there too.
            let shared = {
                let _inside = io.handle().enter();
                Graph::connect(config(s.max_connections.saturating_sub(1).max(1))?)
                    .map_err(|e| from_neo4rs(&e, t, secrets))?
            };
            let client = slot.get_or_open(|| GraphClient {
                graph: shared,
                io,
                secrets: shared_secrets.clone(),
            });
            match client {
                Some(client) => Ok((client, probe)),
                // Shut down while this connect ran.
                None => Err(WardenError::Stopped {
                    database: Database::Neo4j,
                }),
            }
        })
    }

    fn probe(&self, probe: &Graph) -> LocalBoxFuture<'static, Result<(), WardenError>> {
        let probe = probe.clone();
        let secrets = self.secrets.clone();
        Box::pin(async move {
            ping(&probe)
                .await
                .map_err(|e| from_neo4rs(&e, Duration::ZERO, &secrets))
        })
    }

    fn close(&self) -> LocalBoxFuture<'static, ()> {
        // neo4rs has no close: taking the shared graph out drops the driver's handle, and its
        // pool's sockets close with the last handle, that of the last call still running.
        drop(self.graph.close());
        Box::pin(async {})
    }
}

async fn ping(graph: &Graph) -> Result<(), neo4rs::Error> {
    let mut stream = graph.execute(neo4rs::query("RETURN 1 AS ping")).await?;
    while stream.next().await?.is_some() {}
    Ok(())
}

// How each call starts on the graph's I/O threads once admitted (see `call.rs`).
// The `Admitted` in `start`'s signature is crate-private, and so in fact is the method: see
// `call::sealed`.
#[allow(private_interfaces)]
mod starts {
    use super::*;

    impl Start<Neo4jDriver> for Cypher {
        fn start(mut self, admitted: Admitted<GraphClient>) -> BoxFuture<'static, Self::Result> {
            if let Some(refused) = refuse_params(&mut self.params, "") {
                return Box::pin(std::future::ready(Err(admitted.refuse(refused))));
            }
            Box::pin(async move { admitted.call(|client| execute(client, &self)).await })
        }
    }

    impl<T: Send + 'static> Start<Neo4jDriver> for WithGraph<T> {
        fn start(mut self, admitted: Admitted<GraphClient>) -> BoxFuture<'static, Self::Result> {
            Box::pin(admitted.call(move |client| {
                let fut = (self.run)(client.graph.clone());
                // The closure may have committed anything before it failed: never retried.
                async move { fut.await.map_err(|e| Failed::opaque(client.error(&e))) }
            }))
        }
    }

    impl Start<Neo4jDriver> for CypherTransaction {
        fn start(mut self, admitted: Admitted<GraphClient>) -> BoxFuture<'static, Self::Result> {
            for (i, cypher) in self.statements.iter_mut().enumerate() {
                let place = format!("statement {} of the transaction: ", i + 1);
                if let Some(refused) = refuse_params(&mut cypher.params, &place) {
                    return Box::pin(std::future::ready(Err(admitted.refuse(refused))));
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
}

impl Call<Neo4jDriver> for Cypher {
    type Output = Rows;
}

impl<T: Send + 'static> Call<Neo4jDriver> for WithGraph<T> {
    type Output = T;
}

impl Call<Neo4jDriver> for CypherTransaction {
    type Output = Vec<Rows>;
}

impl actix::Handler<Cypher> for Neo4jActor {
    type Result = Reply<Result<Rows, WardenError>>;

    fn handle(&mut self, msg: Cypher, _: &mut Self::Context) -> Self::Result {
        call::start(self, msg)
    }
}

impl<T: Send + 'static> actix::Handler<WithGraph<T>> for Neo4jActor {
    type Result = Reply<Result<T, WardenError>>;

    fn handle(&mut self, msg: WithGraph<T>, _: &mut Self::Context) -> Self::Result {
        call::start(self, msg)
    }
}

impl actix::Handler<CypherTransaction> for Neo4jActor {
    type Result = Reply<Result<Vec<Rows>, WardenError>>;

    fn handle(&mut self, msg: CypherTransaction, _: &mut Self::Context) -> Self::Result {
        call::start(self, msg)
    }
}

/// Runs one attempt. neo4rs takes a pooled connection and sends the statement in one call, so
/// a failure cannot be placed before or after sending: it counts as sent, and only failures the
/// server declares transient are retried (neo4rs itself already retries those).
async fn execute(client: GraphClient, cypher: &Cypher) -> Result<Rows, Failed> {
    let query = to_query(cypher).map_err(Failed::before_send)?;
    let sent = |e: neo4rs::Error| Failed::after_send(client.error(&e));
    let mut stream = client.graph.execute(query).await.map_err(sent)?;
    let mut rows = Vec::new();
    while let Some(row) = stream.next().await.map_err(sent)? {
        rows.push(row_to_json(&row).map_err(Failed::after_send)?);
    }
    Ok(rows)
}

/// The `Usage` error for parameters out of bounds (see `params.rs`), which are taken apart
/// here, where the call is started, without recursion, rather than dropped wherever the call
/// ends.
pub(crate) fn refuse_params(params: &mut Map<String, Value>, place: &str) -> Option<WardenError> {
    let why = crate::params::check_cypher(params).err()?;
    std::mem::take(params)
        .into_iter()
        .for_each(|(_, v)| crate::params::dismantle(v));
    Some(WardenError::Usage {
        database: Database::Neo4j,
        message: format!("{place}{why}"),
    })
}

/// The statement with its parameters converted to Bolt (checked when the call started), or
/// why they cannot be.
pub(crate) fn to_query(cypher: &Cypher) -> Result<neo4rs::Query, WardenError> {
    let mut query = neo4rs::query(&cypher.query);
    for (name, value) in &cypher.params {
        let bolt = BoltType::try_from(value.clone()).map_err(|_| WardenError::Conversion {
            database: Database::Neo4j,
            message: format!("parameter `{name}` has no Bolt equivalent"),
        })?;
        query = query.param(name, bolt);
    }
    Ok(query)
}

/// One row as a JSON object keyed by column.
pub(crate) fn row_to_json(row: &neo4rs::Row) -> Result<Map<String, Value>, WardenError> {
    row.to_strict::<Map<String, Value>>()
        .map_err(|e| WardenError::Conversion {
            database: Database::Neo4j,
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cypher_builder_sets_named_params() {
        let q = Cypher::new("RETURN $a AS a").param("a", 1);
        assert_eq!(q.params.get("a"), Some(&Value::from(1)));
    }
}
