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

use crate::secret::{sanitize, Secret};

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
/// with credentials: driver messages pass through [`sanitize`] on the way in.
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
            | WardenError::Stopped { database } => *database,
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
            | WardenError::Stopped { .. } => false,
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
            | WardenError::Stopped { .. } => false,
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

/// The bounds a sqlx error may have run into, so that a timeout says how long it waited.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PgBounds {
    /// `acquire_timeout` of the pool (connect_timeout).
    pub acquire: Duration,
    /// `statement_timeout` as sent to the server.
    pub statement: Duration,
}

/// Classifies a sqlx error.
pub(crate) fn from_sqlx(err: &sqlx::Error, bounds: PgBounds, secrets: &[Secret]) -> WardenError {
    let database = Database::Postgres;
    let clean = |s: &str| sanitize(s, secrets);
    match err {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let message = clean(db.message());
            classify_sqlstate(&code, message, bounds.statement)
        }
        sqlx::Error::PoolTimedOut => WardenError::Timeout {
            database,
            phase: TimeoutPhase::Acquire,
            after: bounds.acquire,
        },
        sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => WardenError::Connection {
            database,
            message: clean(&err.to_string()),
        },
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => {
            WardenError::Connection {
                database,
                message: clean(&err.to_string()),
            }
        }
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::Encode(_)
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. } => WardenError::Conversion {
            database,
            message: clean(&err.to_string()),
        },
        // A failed statement inside a migration is classified like any statement (a lock
        // timeout is transient); anything else about migrations is a deployment problem.
        sqlx::Error::Migrate(m) => match m.as_ref() {
            sqlx::migrate::MigrateError::Execute(inner)
            | sqlx::migrate::MigrateError::ExecuteMigration(inner, _) => {
                from_sqlx(inner, bounds, secrets)
            }
            other => WardenError::Usage {
                database,
                message: clean(&format!("migration: {other}")),
            },
        },
        sqlx::Error::RowNotFound
        | sqlx::Error::InvalidArgument(_)
        | sqlx::Error::InvalidSavePointStatement
        | sqlx::Error::BeginFailed => WardenError::Usage {
            database,
            message: clean(&err.to_string()),
        },
        // Configuration and anything newer: a connection problem, which the actor probes and
        // backs off from, rather than the caller's fault.
        _ => WardenError::Connection {
            database,
            message: clean(&err.to_string()),
        },
    }
}

/// Classifies a PostgreSQL SQLSTATE.
fn classify_sqlstate(code: &str, message: String, statement_timeout: Duration) -> WardenError {
    let database = Database::Postgres;
    let class = code.get(..2).unwrap_or("");
    match (class, code) {
        // 28000 invalid_authorization_specification, 28P01 invalid_password.
        ("28", _) => WardenError::Authentication { database, message },
        // 08P01 protocol_violation: the server refused what it was sent (a bind message with
        // the wrong number of parameters): the statement's fault, and the link is fine.
        (_, "08P01") => WardenError::Query {
            database,
            code: code.into(),
            message,
            transient: false,
        },
        // Class 08, connection exceptions: the link is broken.
        ("08", _) => WardenError::Connection {
            database,
            message: format!("[{code}] {message}"),
        },
        // 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now (starting up
        // or in recovery), 57P05 idle_session_timeout: the server ended or refused the session.
        (_, "57P01" | "57P02" | "57P03" | "57P05") => WardenError::Connection {
            database,
            message: format!("[{code}] {message}"),
        },
        // 57014 query_canceled: `statement_timeout` fired on the server, which rolled the
        // statement back.
        (_, "57014") => WardenError::Timeout {
            database,
            phase: TimeoutPhase::Query,
            after: statement_timeout,
        },
        // 40001 serialization_failure, 40P01 deadlock_detected: retrying is the documented fix.
        // Class 53, insufficient resources (53300 too_many_connections, 53200 out_of_memory):
        // the server is overloaded. 55P03 lock_not_available: `lock_timeout` fired.
        (_, "40001" | "40P01" | "55P03") | ("53", _) => WardenError::Query {
            database,
            code: code.into(),
            message,
            transient: true,
        },
        // Everything else (syntax 42601, undefined table 42P01, unique violation 23505, ...)
        // is the statement's fault.
        _ => WardenError::Query {
            database,
            code: code.into(),
            message,
            transient: false,
        },
    }
}

/// Classifies a neo4rs error; `connect_timeout` is the bound of neo4rs's own connect timeout.
pub(crate) fn from_neo4rs(
    err: &neo4rs::Error,
    connect_timeout: Duration,
    secrets: &[Secret],
) -> WardenError {
    use neo4rs::{Neo4jClientErrorKind as C, Neo4jErrorKind as K, Neo4jSecurityErrorKind as S};
    let database = Database::Neo4j;
    let clean = |s: &str| sanitize(s, secrets);
    match err {
        neo4rs::Error::Neo4j(e) => {
            let code = e.code().to_owned();
            let message = clean(e.message());
            match e.kind() {
                // Neo.ClientError.Security.Forbidden: this user may not run this statement.
                K::Client(C::Security(S::Forbidden)) => WardenError::Query {
                    database,
                    code,
                    message,
                    transient: false,
                },
                // Neo.ClientError.Security.*: wrong credentials, expired or rate-limited auth.
                K::Client(C::Security(_)) => WardenError::Authentication {
                    database,
                    message: format!("[{code}] {message}"),
                },
                // SessionExpired / FatalDiscovery: the server we talk to can no longer serve us.
                K::Client(C::SessionExpired) | K::Client(C::FatalDiscovery) => {
                    WardenError::Connection {
                        database,
                        message: format!("[{code}] {message}"),
                    }
                }
                // Neo.TransientError.*: the server asks for a retry (deadlock, leader switch,
                // memory pressure). neo4rs retries these itself inside each attempt.
                K::Transient => WardenError::Query {
                    database,
                    code,
                    message,
                    transient: true,
                },
                // ClientError.* (syntax, constraint, parameter) and DatabaseError.*: retrying
                // the same statement will not help.
                _ => WardenError::Query {
                    database,
                    code,
                    message,
                    transient: false,
                },
            }
        }
        // HELLO was refused; neo4rs drops the code, so this is all there is.
        neo4rs::Error::AuthenticationError(msg) => WardenError::Authentication {
            database,
            message: clean(msg),
        },
        neo4rs::Error::ConnectionTimedOut => WardenError::Timeout {
            database,
            phase: TimeoutPhase::Connect,
            after: connect_timeout,
        },
        // The caller asked for one row (or exactly one) and the result did not have it.
        neo4rs::Error::NoMoreRows | neo4rs::Error::NotSingleResult => WardenError::Usage {
            database,
            message: err.to_string(),
        },
        neo4rs::Error::DeserializationError(_)
        | neo4rs::Error::ConversionError
        | neo4rs::Error::UnknownType(_) => WardenError::Conversion {
            database,
            message: clean(&err.to_string()),
        },
        neo4rs::Error::InvalidInteger(..)
        | neo4rs::Error::IntegerOverflow(..)
        | neo4rs::Error::StringTooLong
        | neo4rs::Error::MapTooBig
        | neo4rs::Error::BytesTooBig
        | neo4rs::Error::ListTooLong => WardenError::Conversion {
            database,
            message: clean(&err.to_string()),
        },
        // IO errors, closed or half-read connections, protocol mismatches, ignored requests:
        // the connection is not usable.
        _ => WardenError::Connection {
            database,
            message: clean(&err.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_classified_by_code() {
        let q = |c: &str| classify_sqlstate(c, "m".into(), Duration::from_secs(1));
        assert!(!q("42601").counts_against_circuit() && !q("42601").is_transient());
        assert!(!q("23505").is_transient());
        // Contention: retried, rolled back for a retry (except a lock timeout, which ends the
        // statement only), and never a sign of a sick database.
        for code in ["40001", "40P01", "55P03"] {
            let e = q(code);
            assert!(e.is_transient() && e.is_contention(), "{code}");
            assert!(!e.counts_against_circuit(), "{code}");
            assert_eq!(e.rolled_back_for_retry(), code != "55P03", "{code}");
        }
        // Overload does count.
        assert!(q("53300").is_transient() && q("53300").counts_against_circuit());
        assert!(!q("53300").rolled_back_for_retry());
        assert!(q("57P01").is_connection_loss());
        assert!(q("08006").is_connection_loss());
        assert!(matches!(q("28P01"), WardenError::Authentication { .. }));
        // A bind message with the wrong parameter count: the statement's fault.
        assert!(!q("08P01").is_connection_loss() && !q("08P01").is_transient());
        assert!(matches!(
            q("57014"),
            WardenError::Timeout {
                phase: TimeoutPhase::Query,
                ..
            }
        ));
        assert!(!q("28P01").is_transient());
    }

    #[test]
    fn io_errors_are_connection_losses() {
        let e = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let bounds = PgBounds {
            acquire: Duration::from_secs(3),
            statement: Duration::from_secs(1),
        };
        let w = from_sqlx(&e, bounds, &[]);
        assert!(w.is_connection_loss() && w.is_transient() && w.counts_against_circuit());
        let w = from_sqlx(&sqlx::Error::RowNotFound, bounds, &[]);
        assert!(matches!(w, WardenError::Usage { .. }) && !w.counts_against_circuit());
        let w = from_sqlx(&sqlx::Error::PoolTimedOut, bounds, &[]);
        // A saturated pool is not a sick database.
        assert!(!w.counts_against_circuit());
        assert_eq!(
            w,
            WardenError::Timeout {
                database: Database::Postgres,
                phase: TimeoutPhase::Acquire,
                after: Duration::from_secs(3)
            }
        );
    }

    #[test]
    fn neo4j_errors_are_classified_by_kind() {
        let io = neo4rs::Error::IOError {
            detail: std::io::Error::from(std::io::ErrorKind::ConnectionReset),
        };
        let t = Duration::from_secs(5);
        assert!(from_neo4rs(&io, t, &[]).is_connection_loss());
        assert!(matches!(
            from_neo4rs(&neo4rs::Error::NoMoreRows, t, &[]),
            WardenError::Usage { .. }
        ));
        assert_eq!(
            from_neo4rs(&neo4rs::Error::ConnectionTimedOut, t, &[]),
            WardenError::Timeout {
                database: Database::Neo4j,
                phase: TimeoutPhase::Connect,
                after: t
            }
        );
        let auth = neo4rs::Error::AuthenticationError("bad hunter22 creds".into());
        let w = from_neo4rs(&auth, t, &[Secret::new("hunter22")]);
        assert!(matches!(w, WardenError::Authentication { .. }));
        assert!(!w.to_string().contains("hunter22"));
    }

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
