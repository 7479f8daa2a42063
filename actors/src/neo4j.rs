//! Neo4jActor: a supervised neo4rs graph, and the `Cypher` message applications send it.
//!
//! `Graph::connect` is lazy, so the connect is proven with `RETURN 1 AS ping`, which is also
//! the probe. neo4rs's `connection_timeout` does not cover the Bolt handshake, so every driver
//! future runs under an outer timeout (see [`crate::connection`]). neo4rs retries
//! `Neo.TransientError.*` internally for up to about 60 s; that is bounded by warden's
//! `query_timeout`, which covers the whole call. Only auto-commit queries are used: explicit
//! transactions are not needed by a probe or a single statement.

use std::{sync::Arc, time::Duration};

use actix::prelude::*;
use futures_util::future::LocalBoxFuture;
use neo4rs::{BoltType, ConfigBuilder, Graph};
use serde_json::{Map, Value};

use crate::{
    connection::{ConnectFuture, ConnectionActor, Driver, Failed, PoolSlot, Reply, Timings},
    error::{from_neo4rs, Database, WardenError},
    postgres::Rows,
    secret::Secret,
    settings::Neo4jSettings,
};

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
/// as [`Cypher`]. The closure may run more than once (once per attempt).
#[derive(Message)]
#[rtype(result = "Result<T, WardenError>")]
pub struct WithGraph<T: 'static> {
    run: Box<dyn FnMut(Graph) -> LocalBoxFuture<'static, Result<T, neo4rs::Error>> + Send>,
}

impl<T: 'static> WithGraph<T> {
    /// Wraps a closure that gets a graph handle per attempt.
    pub fn new<F>(run: F) -> Self
    where
        F: FnMut(Graph) -> LocalBoxFuture<'static, Result<T, neo4rs::Error>> + Send + 'static,
    {
        Self { run: Box::new(run) }
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
    graph: Arc<PoolSlot<Graph>>,
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
            secrets,
        }
    }
}

impl Driver for Neo4jDriver {
    type Client = Graph;
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

    fn connect(&self) -> ConnectFuture<Graph, Graph> {
        let s = self.settings.clone();
        let slot = self.graph.clone();
        let secrets = self.secrets.clone();
        Box::pin(async move {
            let secrets: &[Secret] = &secrets;
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
            // Creating a graph opens nothing, so it is cheap to build one that loses the race.
            let shared = Graph::connect(config(s.max_connections.saturating_sub(1).max(1))?)
                .map_err(|e| from_neo4rs(&e, t, secrets))?;
            match slot.get_or_open(|| shared) {
                Some(graph) => Ok((graph, probe)),
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

impl actix::Handler<Cypher> for Neo4jActor {
    type Result = Reply<Result<Rows, WardenError>>;

    fn handle(&mut self, mut msg: Cypher, _: &mut Self::Context) -> Self::Result {
        if let Err(message) = crate::params::check_cypher(&msg.params) {
            // Taken apart here without recursion (see `params::dismantle`).
            let params = std::mem::take(&mut msg.params);
            params
                .into_iter()
                .for_each(|(_, v)| crate::params::dismantle(v));
            return Reply::Now(Err(WardenError::Usage {
                database: Database::Neo4j,
                message,
            }));
        }
        let admitted = match self.admit_call() {
            Ok(admitted) => admitted,
            Err(refused) => return Reply::Now(Err(refused)),
        };
        let secrets = self.driver().secrets.clone();
        let msg = Arc::new(msg);
        Reply::Later(Box::pin(async move {
            admitted
                .call(|graph| {
                    let msg = msg.clone();
                    let secrets = secrets.clone();
                    async move { execute(&graph, &msg, &secrets).await }
                })
                .await
        }))
    }
}

impl<T: 'static> actix::Handler<WithGraph<T>> for Neo4jActor {
    type Result = ResponseFuture<Result<T, WardenError>>;

    fn handle(&mut self, mut msg: WithGraph<T>, _: &mut Self::Context) -> Self::Result {
        let link = self.link();
        let secrets = self.driver().secrets.clone();
        Box::pin(async move {
            let admitted = link.admit_call()?;
            admitted
                .call(|graph| {
                    let fut = (msg.run)(graph);
                    let secrets = secrets.clone();
                    // The closure may have committed anything before it failed: never retried.
                    async move {
                        fut.await
                            .map_err(|e| Failed::opaque(from_neo4rs(&e, Duration::ZERO, &secrets)))
                    }
                })
                .await
        })
    }
}

/// Runs one attempt. neo4rs takes a pooled connection and sends the statement in one call, so
/// a failure cannot be placed before or after sending: it counts as sent, and only failures the
/// server declares transient are retried (neo4rs itself already retries those).
async fn execute(graph: &Graph, cypher: &Cypher, secrets: &[Secret]) -> Result<Rows, Failed> {
    let mut query = neo4rs::query(&cypher.query);
    for (name, value) in &cypher.params {
        let bolt = BoltType::try_from(value.clone()).map_err(|_| {
            Failed::before_send(WardenError::Conversion {
                database: Database::Neo4j,
                message: format!("parameter `{name}` has no Bolt equivalent"),
            })
        })?;
        query = query.param(name, bolt);
    }
    let sent = |e: neo4rs::Error| Failed::after_send(from_neo4rs(&e, Duration::ZERO, secrets));
    let mut stream = graph.execute(query).await.map_err(sent)?;
    let mut rows = Vec::new();
    while let Some(row) = stream.next().await.map_err(sent)? {
        let object = row.to_strict::<Map<String, Value>>().map_err(|e| {
            Failed::after_send(WardenError::Conversion {
                database: Database::Neo4j,
                message: e.to_string(),
            })
        })?;
        rows.push(object);
    }
    Ok(rows)
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
