//! neo4rs errors and Neo4j status codes, classified into [`WardenError`].

use std::time::Duration;

use crate::{
    error::{Database, TimeoutPhase, WardenError},
    secret::{sanitize, Secret},
};

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
}
