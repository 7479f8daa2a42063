//! A string that must never be printed: passwords and anything derived from them.
//!
//! The drivers' own types leak secrets (the derived `Debug` of `PgConnectOptions` and of neo4rs
//! `Config` print the password, and so does `to_url_lossy()`), so warden keeps every secret in
//! this type until the last moment, and never formats a driver's options.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What every secret prints as, in logs, errors, HTTP output and `check-config`.
pub const REDACTED: &str = "***";

/// A secret value. `Debug`, `Display` and `Serialize` all print [`REDACTED`] (`Serialize` an
/// empty string for an empty one, so that `check-config` tells an unset password from a set
/// one; its length is all that shows); the only way to read it is [`Secret::expose`], which is
/// greppable on purpose.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for handing to a driver. Never format the result.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty (no password configured).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(if self.0.is_empty() { "" } else { REDACTED })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// Query parameters whose values are printed as they are: they choose a behaviour and cannot
/// carry a secret. Any other parameter may (libpq alone has `password`, `sslpassword`, `sslkey`
/// and `passfile`; a Neo4j routing context is free-form), so its value is always redacted.
const SAFE_QUERY_KEYS: &[&str] = &["sslmode", "ssl-mode"];

impl Secret {
    /// Reads a secret file (`*_file` settings): its whole text, less the trailing newline
    /// that `echo` and editors leave. An unreadable file is an error naming `key` and the
    /// path, never the content.
    pub fn from_file(key: &str, path: &std::path::Path) -> Result<Secret, crate::SettingsError> {
        std::fs::read_to_string(path)
            .map(|s| Secret::new(s.trim_end_matches(['\r', '\n'])))
            .map_err(|e| {
                crate::SettingsError::new(key, path.display(), format!("cannot read: {e}"))
            })
    }
}

/// Whether a query parameter's value may be printed.
pub(crate) fn is_safe_query_key(key: &str) -> bool {
    SAFE_QUERY_KEYS.contains(&key)
}

/// A query parameter's name as it may be printed: a name that does not look like one (say
/// `password:hunter2`, a typo for `password=hunter2`) may hold the value itself, so it is
/// redacted too.
pub(crate) fn printable_query_key(key: &str) -> &str {
    let plain = !key.is_empty()
        && key.len() <= 64
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if plain {
        key
    } else {
        REDACTED
    }
}

/// Replaces every occurrence of the given secrets, and in every URL its `user:password@` part,
/// its query values (but `sslmode`'s) and its fragment, in a text that came from a driver or a
/// server, so that it can be logged and shown.
pub fn sanitize(text: &str, secrets: &[Secret]) -> String {
    let mut out = text.to_owned();
    for secret in secrets {
        // A one-character password would mangle every message; such a password is already
        // worthless, and replacing it would make errors unreadable.
        if secret.expose().len() >= 2 {
            out = out.replace(secret.expose(), REDACTED);
        }
    }
    redact_urls_in_text(&out)
}

/// Masks the secrets of every `scheme://...` in a text: see [`redact_url_in_text`].
fn redact_urls_in_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        // A URL in a text ends at whitespace or a quote.
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`'))
            .unwrap_or(tail.len());
        out.push_str(&redact_url_in_text(&tail[..end]));
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// One URL after its `scheme://`, taken as text rather than parsed, since a driver's message
/// may quote a URL that does not parse: the password (between the authority's first ':' and
/// last '@'), every query value but `sslmode`'s, and the fragment become `***`.
fn redact_url_in_text(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    // The authority ends at the first '/'; credentials end at its last '@'. A '?' or '#' inside
    // a password is thus still taken for part of the password.
    let authority_end = url.find('/').unwrap_or(url.len());
    let host_start = match url[..authority_end].rfind('@') {
        Some(at) => {
            match url[..at].find(':') {
                Some(colon) => {
                    out.push_str(&url[..=colon]);
                    out.push_str(REDACTED);
                }
                None => out.push_str(&url[..at]),
            }
            at
        }
        None => 0,
    };
    let rest = &url[host_start..];
    let Some(start) = rest.find(['?', '#']) else {
        out.push_str(rest);
        return out;
    };
    out.push_str(&rest[..start]);
    let (query, fragment) = match rest[start..].split_once('#') {
        Some((query, _)) => (query, true),
        None => (&rest[start..], false),
    };
    if let Some(query) = query.strip_prefix('?') {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            let key = pair.split_once('=').map_or(pair, |(key, _)| key);
            if is_safe_query_key(key) {
                out.push_str(pair);
            } else {
                out.push_str(printable_query_key(key));
                out.push('=');
                out.push_str(REDACTED);
            }
        }
    }
    if fragment {
        out.push('#');
        out.push_str(REDACTED);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_display_and_serialize_never_show_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
        assert_eq!(s.expose(), "hunter2");
        // Unset is not a secret: shown as empty, so an operator can tell it from a set one.
        assert_eq!(serde_json::to_string(&Secret::default()).unwrap(), "\"\"");
    }

    #[test]
    fn sanitize_removes_passwords_and_url_credentials() {
        let s = Secret::new("hunter2");
        assert_eq!(
            sanitize("password hunter2 rejected", std::slice::from_ref(&s)),
            "password *** rejected"
        );
        assert_eq!(
            sanitize("cannot reach postgres://app:p%40ss@db:5432/x now", &[]),
            "cannot reach postgres://app:***@db:5432/x now"
        );
        assert_eq!(
            sanitize("bolt://db:7687 and http://u@h/", &[]),
            "bolt://db:7687 and http://u@h/"
        );
    }

    #[test]
    fn sanitize_removes_url_query_values_but_sslmode() {
        assert_eq!(
            sanitize(
                "bad postgres://u@h/db?sslmode=require&password=qpw&sslpassword=kpw#frag now",
                &[]
            ),
            "bad postgres://u@h/db?sslmode=require&password=***&sslpassword=*** now"
                .replace(" now", "#*** now")
        );
        // No path, a routing context, and a name that holds the value itself. Punctuation
        // right after a URL is taken for part of it, and redacted with the value.
        assert_eq!(
            sanitize(
                "neo4j://h:7687?region=eu&token=tpw, 'x://h?password:qpw'",
                &[]
            ),
            "neo4j://h:7687?region=***&token=*** 'x://h?***=***'"
        );
        // Credentials and a query together.
        assert_eq!(
            sanitize("postgres://app:p?w@db/x?key=k1", &[]),
            "postgres://app:***@db/x?key=***"
        );
    }
}
