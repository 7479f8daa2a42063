//! sqlx errors and PostgreSQL SQLSTATEs, classified into [`WardenError`].

use std::time::Duration;

use crate::{
    error::{Database, TimeoutPhase, WardenError},
    secret::{sanitize, Secret},
};

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
}
