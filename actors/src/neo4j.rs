//! Neo4jActor: a supervised neo4rs graph, and the `Cypher` message applications send it.
//!
//! `Graph::connect` is lazy, so the connect is proven with `RETURN 1 AS ping`, which is also
//! the probe. neo4rs's `connection_timeout` does not cover the Bolt handshake, so every driver
//! future runs under an outer timeout (see [`crate::connection`]). neo4rs retries
//! `Neo.TransientError.*` internally for up to about 60 s; that is bounded by warden's
//! `query_timeout`, which covers the whole call. Only auto-commit queries are used: explicit
//! transactions are not needed by a probe or a single statement.

use std::sync::Arc;

use actix::prelude::*;
use futures_util::future::LocalBoxFuture;
use neo4rs::{BoltType, ConfigBuilder, Graph};
use serde_json::{Map, Value};

use crate::{
    connection::{ConnectionActor, Driver, Timings},
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

/// What a connected Neo4jActor holds: the graph callers share, and a graph of one connection
/// for probes, so that a busy pool cannot fail a probe (see `postgres::PgClient`). The probe's
/// connection counts towards `max_connections`.
#[derive(Clone)]
pub struct Neo4jClient {
    graph: Graph,
    probe: Graph,
}

/// Connects, probes and drops neo4rs graphs.
pub struct Neo4jDriver {
    settings: Neo4jSettings,
}

impl Neo4jDriver {
    /// A driver for validated settings.
    pub fn new(settings: Neo4jSettings) -> Self {
        Self { settings }
    }
}

impl Driver for Neo4jDriver {
    type Client = Neo4jClient;
    const DATABASE: Database = Database::Neo4j;

    fn timings(&self) -> Timings {
        let s = &self.settings;
        Timings {
            connect_timeout: s.connect_timeout,
            query_timeout: s.query_timeout,
            probe_interval: s.probe_interval,
            probe_timeout: s.probe_timeout,
        }
    }

    fn secrets(&self) -> Vec<Secret> {
        vec![self.settings.password.clone()]
    }

    fn connect(&self) -> LocalBoxFuture<'static, Result<Neo4jClient, WardenError>> {
        let s = self.settings.clone();
        Box::pin(async move {
            let secrets = [&s.password];
            // Built field by field; the derived Debug of neo4rs's Config prints the password,
            // so it is never formatted.
            let config = |max_connections: u32| {
                ConfigBuilder::default()
                    .uri(s.uri.as_str())
                    .user(s.user.as_str())
                    .password(s.password.expose())
                    .db(s.database.as_str())
                    .max_connections(max_connections as usize)
                    .connection_timeout(s.connect_timeout)
                    .build()
                    .map_err(|e| from_neo4rs(&e, &secrets))
            };
            // Both graphs connect lazily; the probe graph's first ping opens its one
            // connection and proves the server, the call graph opens its own on demand.
            let probe = Graph::connect(config(1)?).map_err(|e| from_neo4rs(&e, &secrets))?;
            ping(&probe).await.map_err(|e| from_neo4rs(&e, &secrets))?;
            let graph = Graph::connect(config(s.max_connections.saturating_sub(1).max(1))?)
                .map_err(|e| from_neo4rs(&e, &secrets))?;
            Ok(Neo4jClient { graph, probe })
        })
    }

    fn probe(client: &Neo4jClient) -> LocalBoxFuture<'static, Result<(), WardenError>> {
        let probe = client.probe.clone();
        Box::pin(async move { ping(&probe).await.map_err(|e| from_neo4rs(&e, &[])) })
    }

    fn close(client: Neo4jClient) -> LocalBoxFuture<'static, ()> {
        // neo4rs has no close: dropping the last handles drops the pools and their sockets.
        Box::pin(async move { drop(client) })
    }
}

async fn ping(graph: &Graph) -> Result<(), neo4rs::Error> {
    let mut stream = graph.execute(neo4rs::query("RETURN 1 AS ping")).await?;
    while stream.next().await?.is_some() {}
    Ok(())
}

impl actix::Handler<Cypher> for Neo4jActor {
    type Result = ResponseFuture<Result<Rows, WardenError>>;

    fn handle(&mut self, msg: Cypher, _: &mut Self::Context) -> Self::Result {
        let link = self.link();
        let msg = Arc::new(msg);
        Box::pin(async move {
            link.call(|client| {
                let msg = msg.clone();
                async move { execute(&client.graph, &msg).await }
            })
            .await
        })
    }
}

impl<T: 'static> actix::Handler<WithGraph<T>> for Neo4jActor {
    type Result = ResponseFuture<Result<T, WardenError>>;

    fn handle(&mut self, mut msg: WithGraph<T>, _: &mut Self::Context) -> Self::Result {
        let link = self.link();
        Box::pin(async move {
            link.call(|client| {
                let fut = (msg.run)(client.graph);
                async move { fut.await.map_err(|e| from_neo4rs(&e, &[])) }
            })
            .await
        })
    }
}

async fn execute(graph: &Graph, cypher: &Cypher) -> Result<Rows, WardenError> {
    let mut query = neo4rs::query(&cypher.query);
    for (name, value) in &cypher.params {
        let bolt = BoltType::try_from(value.clone()).map_err(|_| WardenError::Conversion {
            database: Database::Neo4j,
            message: format!("parameter `{name}` has no Bolt equivalent"),
        })?;
        query = query.param(name, bolt);
    }
    let mut stream = graph
        .execute(query)
        .await
        .map_err(|e| from_neo4rs(&e, &[]))?;
    let mut rows = Vec::new();
    while let Some(row) = stream.next().await.map_err(|e| from_neo4rs(&e, &[]))? {
        let object =
            row.to_strict::<Map<String, Value>>()
                .map_err(|e| WardenError::Conversion {
                    database: Database::Neo4j,
                    message: e.to_string(),
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
