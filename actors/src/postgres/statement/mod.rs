//! What a caller's statement would do to the pooled session it runs on, decided from its text
//! before it is sent.
//!
//! Pooled connections are shared: whatever one call leaves behind on its session (an open
//! transaction, a `SET`, a `LISTEN`, a session advisory lock, a temporary table) is inherited
//! by the next caller that gets the connection. An open transaction is the worst case: the next
//! caller's `INSERT` is acknowledged, never committed, and lost when the connection closes. So
//! statements that change the session for longer than themselves are refused with a `Usage`
//! error that names the statement and the API to use instead, and statements that *might*
//! change it (a `DO` block, a procedure, `set_config`) mark the connection for a reset before
//! it goes back to the pool (see `session.rs`).
//!
//! This is a lexer, not a parser: it reads the first keywords (skipping comments) and looks for
//! a few function names. A function of the caller's own that changes session state inside
//! (`SELECT my_fn()`) cannot be seen from the text; the README says so. The lexing is in
//! `lexer.rs`.

mod lexer;

use lexer::{code_only, contains_word, leading_words, Mentions, Word};

/// Where a statement runs: as a call of its own, or inside a transaction warden begins and
/// commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Context {
    /// An [`Sql`](crate::Sql) call: the statement is its own transaction.
    Single,
    /// One statement of a [`Transaction`](crate::Transaction).
    InTransaction,
}

/// What running a statement may leave behind on its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Nothing outlives the statement's transaction.
    Clean,
    /// It may change the session (`set_config(.., false)`, a `DO` block, a procedure, a
    /// temporary table inside a transaction): reset the session before the connection goes back
    /// to the pool.
    MayTaint,
}

/// Why a statement is refused: the statement's name and what to use instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal(pub String);

/// Decides what `sql` may do to its session, or refuses it.
pub(crate) fn classify(sql: &str, context: Context) -> Result<Effect, Refusal> {
    let words = leading_words(sql);
    let word = |i: usize| words[i].as_bytes();
    let first = word(0);
    let name = || String::from_utf8_lossy(first).to_ascii_uppercase();
    match first {
        b"begin" | b"start" | b"commit" | b"end" | b"rollback" | b"abort" | b"savepoint"
        | b"release" => {
            return Err(Refusal(format!(
                "`{}` is transaction control: a pooled connection must not be left inside a \
                 transaction; send a Transaction (statements run all-or-nothing) or a \
                 WithTransaction (a closure) instead",
                name()
            )));
        }
        b"prepare" if word(1) == b"transaction" => {
            return Err(Refusal(
                "`PREPARE TRANSACTION` is not supported through warden's pool".into(),
            ));
        }
        b"prepare" | b"deallocate" => {
            return Err(Refusal(format!(
                "`{}` manages named prepared statements, which outlive the call on a pooled \
                 connection (and warden prepares and caches statements itself); send the \
                 statement with parameters instead",
                name()
            )));
        }
        b"set" if word(1) == b"local" && context == Context::InTransaction => {}
        b"set" if word(1) == b"local" => {
            return Err(Refusal(
                "`SET LOCAL` has no effect outside a transaction; put it first in a Transaction"
                    .into(),
            ));
        }
        b"set" | b"reset" => {
            return Err(Refusal(format!(
                "`{}` changes the session of a pooled connection that other calls share; use \
                 `SET LOCAL` inside a Transaction, or set it in warden's configuration",
                name()
            )));
        }
        b"listen" | b"unlisten" => {
            return Err(Refusal(format!(
                "`{}` subscribes the session of a pooled connection that other calls share; \
                 keep a dedicated connection for notifications",
                name()
            )));
        }
        b"declare" => {
            return Err(Refusal(
                "`DECLARE` opens a cursor on a pooled connection; fetch the rows in one \
                 statement, or use WithTransaction"
                    .into(),
            ));
        }
        b"load" => {
            return Err(Refusal(
                "`LOAD` changes the session of a pooled connection that other calls share".into(),
            ));
        }
        b"create" if creates_temporary(&words) => {
            if context == Context::Single {
                return Err(Refusal(
                    "`CREATE TEMPORARY` objects outlive the call on a pooled connection; create \
                     them inside a Transaction (they are dropped with the session reset after \
                     it), or use a regular table"
                        .into(),
                ));
            }
            return Ok(Effect::MayTaint);
        }
        _ => {}
    }
    // The scans below copy the text; the common statement names none of what they look for,
    // which one pass without a copy tells.
    let mentions = Mentions::of(sql);
    let locks = mentions.advisory_lock;
    if locks {
        let code = code_only(sql);
        if let Some(function) = SESSION_LOCKS.iter().find(|f| contains_word(&code, f)) {
            return Err(Refusal(format!(
                "`{function}` takes a session-level advisory lock, which outlives the call on \
                 a pooled connection; use the `_xact_` variant (`pg_advisory_xact_lock`) \
                 inside a Transaction"
            )));
        }
    }
    // Whatever may hide session changes, looked for in the whole text, string bodies included
    // (a `DO` block's body is a dollar-quoted string).
    let hidden = matches!(first, b"do" | b"call")
        || ((locks || mentions.set_config || mentions.temp) && {
            let lower = sql.to_ascii_lowercase();
            ["set_config", "temp", "temporary"]
                .iter()
                .chain(SESSION_LOCKS.iter())
                .any(|w| contains_word(&lower, w))
        });
    Ok(if hidden {
        Effect::MayTaint
    } else {
        Effect::Clean
    })
}

/// Functions that take session-level advisory locks (the `_xact_` ones end with the
/// transaction and are fine).
const SESSION_LOCKS: [&str; 4] = [
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];

/// `CREATE [GLOBAL | LOCAL] { TEMP | TEMPORARY } ...`.
fn creates_temporary(words: &[Word; 3]) -> bool {
    let next = match words[1].as_bytes() {
        b"global" | b"local" => words[2].as_bytes(),
        word => word,
    };
    matches!(next, b"temp" | b"temporary")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(sql: &str) -> Result<Effect, Refusal> {
        classify(sql, Context::Single)
    }

    fn in_tx(sql: &str) -> Result<Effect, Refusal> {
        classify(sql, Context::InTransaction)
    }

    #[test]
    fn ordinary_statements_are_clean() {
        for sql in [
            "SELECT 1",
            "insert into t values ($1)",
            "UPDATE t SET a = 1 WHERE b = 'begin'",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "CREATE TABLE settings (a int)",
            "select pg_advisory_xact_lock(1)",
            "-- BEGIN\nSELECT 1",
        ] {
            assert_eq!(single(sql), Ok(Effect::Clean), "{sql}");
        }
        // A name inside quoted text is data: not refused, though it costs a reset (the scan
        // for hidden changes reads string bodies, where a DO block keeps its code).
        assert_eq!(single("select 'pg_advisory_lock(1)'"), Ok(Effect::MayTaint));
    }

    #[test]
    fn transaction_control_is_refused_with_the_right_api() {
        for sql in [
            "BEGIN",
            "  begin isolation level serializable",
            "/* a /* nested */ comment */ START TRANSACTION",
            "COMMIT",
            "end",
            "ROLLBACK",
            "abort",
            "SAVEPOINT a",
            "release a",
        ] {
            let err = single(sql).unwrap_err();
            assert!(err.0.contains("Transaction"), "{sql}: {}", err.0);
            assert!(in_tx(sql).is_err(), "{sql} inside a transaction");
        }
        assert!(single("BEGIN").unwrap_err().0.starts_with("`BEGIN`"));
    }

    #[test]
    fn session_statements_are_refused_and_named() {
        for (sql, name) in [
            ("SET search_path = x", "`SET`"),
            ("set session statement_timeout = 1", "`SET`"),
            ("RESET ALL", "`RESET`"),
            ("LISTEN jobs", "`LISTEN`"),
            ("unlisten *", "`UNLISTEN`"),
            ("PREPARE q AS SELECT 1", "`PREPARE`"),
            ("DEALLOCATE ALL", "`DEALLOCATE`"),
            ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", "`DECLARE`"),
            ("LOAD 'auto_explain'", "`LOAD`"),
            ("CREATE TEMP TABLE t (a int)", "`CREATE TEMPORARY`"),
            (
                "create local temporary table t (a int)",
                "`CREATE TEMPORARY`",
            ),
            // The words after the first are read only for the statements that need them,
            // past comments and any ASCII white space.
            (
                "create /* c */ global\ttemporary\ntable t (a int)",
                "`CREATE TEMPORARY`",
            ),
            ("prepare -- x\n transaction 'gid'", "`PREPARE TRANSACTION`"),
            ("SELECT pg_advisory_lock(42)", "`pg_advisory_lock`"),
            (
                "select PG_TRY_ADVISORY_LOCK_SHARED(1, 2)",
                "`pg_try_advisory_lock_shared`",
            ),
        ] {
            let err = single(sql).unwrap_err();
            assert!(err.0.contains(name), "{sql}: {}", err.0);
        }
    }

    #[test]
    fn set_local_belongs_in_a_transaction() {
        assert!(single("SET LOCAL lock_timeout = '1s'")
            .unwrap_err()
            .0
            .contains("Transaction"));
        assert_eq!(in_tx("SET LOCAL lock_timeout = '1s'"), Ok(Effect::Clean));
        assert!(in_tx("SET lock_timeout = '1s'").is_err());
    }

    #[test]
    fn hidden_session_changes_mark_the_connection_for_a_reset() {
        for sql in [
            "SELECT set_config('search_path', 'x', false)",
            "DO $$ BEGIN PERFORM set_config('a.b', '1', false); END $$",
            "DO $body$ BEGIN PERFORM pg_advisory_lock(1); END $body$",
            "CALL refresh_all()",
            "SELECT 1 INTO TEMP t",
        ] {
            assert_eq!(single(sql), Ok(Effect::MayTaint), "{sql}");
        }
        // Inside a transaction a temporary table is allowed; the reset after it drops it.
        assert_eq!(in_tx("CREATE TEMP TABLE t (a int)"), Ok(Effect::MayTaint));
    }
}
