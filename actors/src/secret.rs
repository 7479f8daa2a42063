//! A string that must never be printed: passwords and anything derived from them.
//!
//! The drivers' own types leak secrets (the derived `Debug` of `PgConnectOptions` and of neo4rs
//! `Config` print the password, and so does `to_url_lossy()`), so warden keeps every secret in
//! this type until the last moment, and never formats a driver's options.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What every secret prints as, in logs, errors, HTTP output and `check-config`.
pub const REDACTED: &str = "***";

/// A secret value. `Debug`, `Display` and `Serialize` all print [`REDACTED`]; the only way to
/// read it is [`Secret::expose`], which is greppable on purpose.
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
        serializer.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// Replaces every occurrence of the given secrets, and any `user:password@` part of a URL, in a
/// text that came from a driver or a server, so that it can be logged and shown.
pub fn sanitize(text: &str, secrets: &[Secret]) -> String {
    let mut out = text.to_owned();
    for secret in secrets {
        // A one-character password would mangle every message; such a password is already
        // worthless, and replacing it would make errors unreadable.
        if secret.expose().len() >= 2 {
            out = out.replace(secret.expose(), REDACTED);
        }
    }
    redact_url_credentials(&out)
}

/// Masks the password of every `scheme://user:password@host` in a text.
fn redact_url_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        // The authority ends at the first '/', whitespace or quote; credentials end at its last '@'.
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon]);
                out.push(':');
                out.push_str(REDACTED);
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
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
}
