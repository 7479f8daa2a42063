//! The lexing `classify` needs: the leading keywords of a statement (skipping white space and
//! comments), its text with comments and quoted strings blanked out, and a one-pass scan for the
//! few names that call for a closer look. The leading words and the scan run on every call and
//! copy nothing; the blanked-out copy is made only for a statement that names an advisory lock.

/// A leading keyword, lowercased into a buffer of its own: classifying a statement allocates
/// nothing unless it is refused. A word longer than any keyword is kept empty.
#[derive(Default)]
pub(super) struct Word {
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
    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The first three words (ASCII identifiers), skipping white space and comments. Only the
/// statements `classify` reads past their first word get more than one: this runs on every
/// call.
pub(super) fn leading_words(sql: &str) -> [Word; 3] {
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
pub(super) fn code_only(sql: &str) -> String {
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

/// Which of the names that `classify` looks further for occur in a statement, in any case and
/// anywhere (string bodies and comments included): found in one pass over its bytes, since
/// this runs on every call and most statements name none of them.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Mentions {
    pub(super) advisory_lock: bool,
    pub(super) set_config: bool,
    pub(super) temp: bool,
}

impl Mentions {
    pub(super) fn of(sql: &str) -> Self {
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
pub(super) fn contains_word(haystack: &str, word: &str) -> bool {
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
