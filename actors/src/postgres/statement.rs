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
//! (`SELECT my_fn()`) cannot be seen from the text; the README says so.

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

/// A leading keyword, lowercased into a buffer of its own: classifying a statement allocates
/// nothing unless it is refused. A word longer than any keyword is kept empty.
#[derive(Default)]
struct Word {
    buf: [u8; 16],
    len: usize,
}

impl Word {
    fn new(word: &str) -> Self {
        let mut w = Word::default();
        if word.len() <= w.buf.len() {
            w.buf[..word.len()].copy_from_slice(word.as_bytes());
            w.buf[..word.len()].make_ascii_lowercase();
            w.len = word.len();
        }
        w
    }

    /// The word's bytes: compared with byte strings, with no UTF-8 check on every call (only
    /// ASCII identifier bytes are ever copied in).
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The first three words (ASCII identifiers), skipping white space and comments. Only the
/// statements `classify` reads past their first word get more than one: this runs on every
/// call.
fn leading_words(sql: &str) -> [Word; 3] {
    let mut words = [Word::default(), Word::default(), Word::default()];
    let mut rest = sql;
    for i in 0..words.len() {
        if i == 1 && !matches!(words[0].as_bytes(), b"prepare" | b"set" | b"create") {
            break;
        }
        rest = skip_space_and_comments(rest);
        let len = rest
            .bytes()
            .position(|b| !(b.is_ascii_alphanumeric() || b == b'_'))
            .unwrap_or(rest.len());
        if len == 0 {
            break;
        }
        words[i] = Word::new(&rest[..len]);
        rest = &rest[len..];
    }
    words
}

fn skip_space_and_comments(mut s: &str) -> &str {
    loop {
        // PostgreSQL's scanner takes only ASCII white space as a separator.
        let trimmed = s.trim_start_matches(|c: char| c.is_ascii_whitespace());
        if let Some(after) = trimmed.strip_prefix("--") {
            s = after.find('\n').map_or("", |i| &after[i + 1..]);
        } else if trimmed.starts_with("/*") {
            s = skip_block_comment(trimmed);
        } else {
            return trimmed;
        }
    }
}

/// Skips a block comment at the start of `s`; PostgreSQL's nest.
fn skip_block_comment(s: &str) -> &str {
    let bytes = s.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i + 1 < bytes.len() {
        match &bytes[i..i + 2] {
            b"/*" => {
                depth += 1;
                i += 2;
            }
            b"*/" => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return &s[i..];
                }
            }
            _ => i += 1,
        }
    }
    ""
}

/// The statement with comments and quoted text ('...', "...", $tag$...$tag$) blanked out, in
/// lowercase: where function names are code, not data.
fn code_only(sql: &str) -> String {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &sql[i..];
        let skip = if rest.starts_with("--") {
            rest.find('\n').unwrap_or(rest.len())
        } else if rest.starts_with("/*") {
            rest.len() - skip_block_comment(rest).len()
        } else if rest.starts_with('\'') || rest.starts_with('"') {
            quoted_len(rest)
        } else {
            dollar_quoted_len(rest).unwrap_or_default()
        };
        if skip > 0 {
            out.push(' ');
            i += skip;
            continue;
        }
        let c = rest.chars().next().unwrap_or(' ');
        out.push(c.to_ascii_lowercase());
        i += c.len_utf8();
    }
    out
}

/// Length of a '...' or "..." run at the start of `s`, doubled quotes included; backslash
/// escapes (E'..') are honoured too, which at worst blanks a little more.
fn quoted_len(s: &str) -> usize {
    let bytes = s.as_bytes();
    let quote = bytes[0];
    let mut i = 1;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
        } else if bytes[i] == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    bytes.len()
}

/// Length of a `$tag$ ... $tag$` string at the start of `s`, if one starts there.
fn dollar_quoted_len(s: &str) -> Option<usize> {
    let body = s.strip_prefix('$')?;
    let tag_len = body.find('$')?;
    let tag = &body[..tag_len];
    if !tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        || tag.starts_with(|c: char| c.is_ascii_digit())
    {
        return None;
    }
    let delimiter = &s[..tag_len + 2];
    let after = &s[delimiter.len()..];
    Some(
        after
            .find(delimiter)
            .map_or(s.len(), |end| delimiter.len() + end + delimiter.len()),
    )
}

/// Whether `needle` (lowercase ASCII) occurs in `haystack`, in any case, without a copy.
/// Which of the names that `classify` looks further for occur in a statement, in any case and
/// anywhere (string bodies and comments included): found in one pass over its bytes, since
/// this runs on every call and most statements name none of them.
#[derive(Debug, Default, PartialEq, Eq)]
struct Mentions {
    advisory_lock: bool,
    set_config: bool,
    temp: bool,
}

impl Mentions {
    fn of(sql: &str) -> Self {
        let bytes = sql.as_bytes();
        let at = |i: usize, needle: &str| {
            bytes
                .get(i..i + needle.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
        };
        let mut found = Self::default();
        for (i, b) in bytes.iter().enumerate() {
            // Only a needle's first letter, in either case, can start a match.
            match b | 0x20 {
                b'a' => found.advisory_lock |= at(i, "advisory_lock"),
                b's' => found.set_config |= at(i, "set_config"),
                b't' => found.temp |= at(i, "temp"),
                _ => {}
            }
        }
        found
    }
}

/// Whether `word` occurs in `haystack` (lowercase) as a whole identifier.
fn contains_word(haystack: &str, word: &str) -> bool {
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = haystack.as_bytes();
    haystack.match_indices(word).any(|(at, _)| {
        let before = at.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(at + word.len()).copied();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_are_found_in_any_case_anywhere() {
        let m = |sql| Mentions::of(sql);
        assert_eq!(m("SELECT 1"), Mentions::default());
        assert!(m("select PG_ADVISORY_LOCK(1)").advisory_lock);
        assert!(m("SELECT Set_Config('a', 'b', false)").set_config);
        // At the very end, and right at the start.
        assert!(m("select 'x' from attemp").temp);
        assert!(m("Temp").temp);
        // Cut short by the end of the text.
        assert_eq!(m("select advisory_loc"), Mentions::default());
        assert_eq!(m("set_confi"), Mentions::default());
        assert_eq!(m("tem"), Mentions::default());
    }

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

    #[test]
    fn quoted_text_is_data_not_code() {
        assert_eq!(
            code_only("select 'it''s pg_advisory_lock', \"x\" -- pg_advisory_lock\n, 1"),
            "select  ,    \n, 1"
        );
        assert_eq!(
            code_only("select $q$ pg_advisory_lock $q$, 2"),
            "select  , 2"
        );
        assert_eq!(code_only("select $1, $2"), "select $1, $2");
    }
}
