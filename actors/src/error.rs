//! The one error type callers see, and the classification of driver errors into it.
//!
//! Classification decides three things, each a method so that no caller matches message text:
//! whether a call may be retried ([`WardenError::is_transient`]), whether the failure counts
//! against the database's circuit ([`WardenError::counts_against_circuit`]), and whether the
//! connection may be gone so the actor must probe it now ([`WardenError::is_connection_loss`]).
//! Server codes decide, with a comment per code; a caller's mistake (a syntax error, a
//! constraint violation) is never transient and never opens a circuit.

use std::{fmt, time::Duration};

use serde::Serialize;

/// Which database an error, a state or a circuit belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Database {
    /// The graph database, over Bolt.
    Neo4j,
    /// PostgreSQL.
    Postgres,
}

impl Database {
    /// Both databases, in the order health lists them.
    pub const ALL: [Database; 2] = [Database::Neo4j, Database::Postgres];

    /// The lowercase name used in health output, logs and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Database::Neo4j => "neo4j",
            Database::Postgres => "postgres",
        }
    }
}

impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which phase of a call ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeoutPhase {
    /// Opening a connection (TCP, TLS, handshake, authentication).
    Connect,
    /// Waiting for a pooled connection.
    Acquire,
    /// Running the statement, retries included (warden's `query_timeout` or the server's
    /// `statement_timeout`).
    Query,
    /// A liveness probe (`probe_timeout`).
    Probe,
}

impl fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutPhase::Connect => "connect",
            TimeoutPhase::Acquire => "acquire",
            TimeoutPhase::Query => "query",
            TimeoutPhase::Probe => "probe",
        })
    }
}

/// What a call to a database actor can fail with. No text in it carries a password or a URL
/// with credentials: driver messages pass through [`sanitize`](crate::secret::sanitize) on the way in.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WardenError {
    /// The database's circuit is open after too many consecutive failures; the call was refused
    /// without touching the database. Retry after `retry_after`.
    #[error("{database} circuit is open; retry after {}ms", retry_after.as_millis())]
    CircuitOpen {
        /// The database whose circuit is open.
        database: Database,
        /// Time until the next probe may close the circuit.
        retry_after: Duration,
    },
    /// The actor has no live connection right now (connecting or backing off); the call was
    /// refused at once instead of queueing.
    #[error("{database} is unavailable; next connect attempt in {}ms", retry_after.as_millis())]
    Unavailable {
        /// The database that is not connected.
        database: Database,
        /// Time until the next connect attempt completes or starts.
        retry_after: Duration,
    },
    /// A phase ran out of time. Transient: the server may be overloaded or hung.
    #[error("{database} {phase} timed out after {}ms", after.as_millis())]
    Timeout {
        /// The database that did not answer in time.
        database: Database,
        /// Which phase ran out of time.
        phase: TimeoutPhase,
        /// The bound that was exceeded.
        after: Duration,
    },
    /// The database rejected the statement. `transient` is set for codes that say "try again"
    /// (serialization failures, deadlocks, Neo4j `TransientError`s); otherwise it is the
    /// caller's fault and retrying will not help.
    #[error("{database} rejected the statement [{code}]: {message}")]
    Query {
        /// The database that rejected it.
        database: Database,
        /// SQLSTATE for PostgreSQL, `Neo.*` status code for Neo4j.
        code: String,
        /// The server's message, sanitized.
        message: String,
        /// Whether the server says a retry may succeed.
        transient: bool,
    },
    /// The connection failed or broke: refused, reset, closed mid-message, protocol error.
    #[error("{database} connection failed: {message}")]
    Connection {
        /// The database whose connection failed.
        database: Database,
        /// What happened, sanitized.
        message: String,
    },
    /// The server refused the credentials. Not transient for a call, but the actor keeps
    /// reconnecting on its backoff schedule, since credentials can be fixed server-side.
    #[error("{database} authentication failed: {message}")]
    Authentication {
        /// The database that refused the credentials.
        database: Database,
        /// The server's reason, sanitized.
        message: String,
    },
    /// A value could not be converted between JSON and the database's types.
    #[error("{database} value conversion failed: {message}")]
    Conversion {
        /// The database the value came from or went to.
        database: Database,
        /// Which value and why.
        message: String,
    },
    /// The call cannot be run as given: a row was expected and none came, an argument the
    /// driver refused, a broken migration. The caller's (or deployer's) fault; not transient.
    #[error("{database} refused the call: {message}")]
    Usage {
        /// The database the call was for.
        database: Database,
        /// What is wrong, sanitized.
        message: String,
    },
    /// `COMMIT` was sent and no answer came (the connection broke, or the call's deadline ran
    /// out): the transaction may or may not have committed. Not transient: running it again
    /// could apply it twice; check the data first.
    #[error("{database} commit outcome is unknown: {message}")]
    CommitOutcomeUnknown {
        /// The database the transaction ran on.
        database: Database,
        /// What happened, sanitized.
        message: String,
    },
    /// The actor is gone for good (it died from a bug, or warden is shutting down).
    #[error("{database} actor is stopped")]
    Stopped {
        /// The database whose actor stopped.
        database: Database,
    },
    /// The application's tokio runtime that hosts this database's calls
    /// ([`WardenBuilder::call_runtime`](crate::WardenBuilder::call_runtime)) has shut down, so
    /// no call can run any more. Not transient: shut warden down before that runtime, or
    /// start another warden. The database itself may be fine (health still probes it).
    #[error("{database} calls cannot run: the application's call runtime has shut down")]
    CallRuntimeGone {
        /// The database whose calls it hosted.
        database: Database,
    },
}

impl WardenError {
    /// The database the error belongs to.
    pub fn database(&self) -> Database {
        match self {
            WardenError::CircuitOpen { database, .. }
            | WardenError::Unavailable { database, .. }
            | WardenError::Timeout { database, .. }
            | WardenError::Query { database, .. }
            | WardenError::Connection { database, .. }
            | WardenError::Authentication { database, .. }
            | WardenError::Conversion { database, .. }
            | WardenError::Usage { database, .. }
            | WardenError::CommitOutcomeUnknown { database, .. }
            | WardenError::Stopped { database }
            | WardenError::CallRuntimeGone { database } => *database,
        }
    }

    /// Whether the same call may succeed later without any change by the caller.
    pub fn is_transient(&self) -> bool {
        match self {
            WardenError::CircuitOpen { .. }
            | WardenError::Unavailable { .. }
            | WardenError::Timeout { .. }
            | WardenError::Connection { .. } => true,
            WardenError::Query { transient, .. } => *transient,
            WardenError::Authentication { .. }
            | WardenError::Conversion { .. }
            | WardenError::Usage { .. }
            | WardenError::CommitOutcomeUnknown { .. }
            | WardenError::Stopped { .. }
            | WardenError::CallRuntimeGone { .. } => false,
        }
    }

    /// Whether the server rolled the statement or transaction back and asks for it to run
    /// again: 40001 serialization_failure, 40P01 deadlock_detected (and Neo4j's
    /// `Neo.TransientError.Transaction.*` deadlock and lock codes).
    pub fn rolled_back_for_retry(&self) -> bool {
        match self {
            WardenError::Query {
                code,
                transient: true,
                ..
            } => matches!(code.as_str(), "40001" | "40P01") || is_neo4j_contention(code),
            _ => false,
        }
    }

    /// Whether the failure is contention between callers (serialization failures, deadlocks,
    /// lock timeouts): retried as the retry policy says, but no sign of a sick database, so it
    /// never counts towards opening the circuit.
    pub fn is_contention(&self) -> bool {
        match self {
            WardenError::Query { code, .. } => {
                matches!(code.as_str(), "40001" | "40P01" | "55P03") || is_neo4j_contention(code)
            }
            _ => false,
        }
    }

    /// Whether the failure says something about the database's health and so counts towards
    /// opening its circuit. Refusals by warden itself (open circuit, not connected) do not: they
    /// would keep a circuit open for ever. Nor does waiting for a pooled connection: a pool
    /// saturated by callers is not a sick database.
    pub fn counts_against_circuit(&self) -> bool {
        match self {
            WardenError::Timeout { phase, .. } => *phase != TimeoutPhase::Acquire,
            WardenError::Connection { .. }
            | WardenError::Authentication { .. }
            | WardenError::CommitOutcomeUnknown { .. } => true,
            WardenError::Query { .. } if self.is_contention() => false,
            WardenError::Query { transient, .. } => *transient,
            WardenError::CircuitOpen { .. }
            | WardenError::Unavailable { .. }
            | WardenError::Usage { .. }
            | WardenError::Conversion { .. }
            | WardenError::Stopped { .. }
            | WardenError::CallRuntimeGone { .. } => false,
        }
    }

    /// Whether the connection may be unusable. The actor then probes at once, and drops the
    /// connection only if the probe fails too: a call alone never tears a connection down.
    pub fn is_connection_loss(&self) -> bool {
        matches!(
            self,
            WardenError::Connection { .. }
                | WardenError::Authentication { .. }
                | WardenError::CommitOutcomeUnknown { .. }
                // sqlx retries a refused connect inside the acquire phase until it gives up:
                // from the outside that is the only sign of a server that went away.
                | WardenError::Timeout {
                    phase: TimeoutPhase::Acquire,
                    ..
                }
        )
    }

    /// The code behind the error, for health output and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            WardenError::CircuitOpen { .. } => "circuit_open",
            WardenError::Unavailable { .. } => "unavailable",
            WardenError::Timeout { .. } => "timeout",
            WardenError::Query { .. } => "query",
            WardenError::Connection { .. } => "connection",
            WardenError::Authentication { .. } => "authentication",
            WardenError::Conversion { .. } => "conversion",
            WardenError::Usage { .. } => "usage",
            WardenError::CommitOutcomeUnknown { .. } => "commit_outcome_unknown",
            WardenError::Stopped { .. } => "stopped",
            WardenError::CallRuntimeGone { .. } => "call_runtime_gone",
        }
    }
}

/// Neo4j's codes for contention between transactions: a deadlock, a lock that could not be had
/// in time, a transaction terminated to break a lock cycle.
fn is_neo4j_contention(code: &str) -> bool {
    matches!(
        code,
        "Neo.TransientError.Transaction.DeadlockDetected"
            | "Neo.TransientError.Transaction.LockAcquisitionTimeout"
            | "Neo.TransientError.Transaction.LockClientStopped"
            | "Neo.TransientError.Transaction.Outdated"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_never_count_against_the_circuit() {
        let open = WardenError::CircuitOpen {
            database: Database::Neo4j,
            retry_after: Duration::from_secs(1),
        };
        assert!(open.is_transient() && !open.counts_against_circuit());
        let un = WardenError::Unavailable {
            database: Database::Neo4j,
            retry_after: Duration::from_secs(1),
        };
        assert!(!un.counts_against_circuit());
    }
}
