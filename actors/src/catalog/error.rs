//! [`CatalogError`]: what a catalog call can fail with, in the terms its callers act on.
//!
//! Three are the caller's to fix (`NotFound`, `Conflict`, `Invalid`: never transient, nothing
//! was written) and one is the database's (`Unavailable`, wrapping the [`WardenError`] that
//! says whether and when to retry). No variant carries a metadata value or any other stored
//! text beyond a short, truncated excerpt, so that errors can be logged and returned as they
//! are.

use std::time::Duration;

use crate::error::WardenError;

/// Why a catalog call failed.
#[derive(thiserror::Error, Debug)]
pub enum CatalogError {
    /// The recording (or, for a child operation on an existing recording, its metadata entry
    /// or tracklist) does not exist. Nothing was written.
    #[error("{what} not found")]
    NotFound {
        /// `"recording"`, `"metadata"` or `"tracklist"`.
        what: &'static str,
    },
    /// Another recording already has this hash (a unique constraint refused the write, which
    /// was rolled back whole).
    #[error("conflict on {field}: {message}")]
    Conflict {
        /// `"sha256_hash"` or `"xxh128_hash"`.
        field: &'static str,
        /// What conflicts, for people.
        message: String,
    },
    /// The input breaks a rule; found before any SQL ran.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Where, as a path into the input: `file_path`, `metadata.bpm`,
        /// `tracklist.tracks[3].start_time`, `cursor`.
        field: String,
        /// Which rule, for people.
        reason: String,
    },
    /// PostgreSQL could not run the call: it is down, its circuit is open, the call timed out,
    /// or it refused a statement. Nothing was written, except for
    /// [`WardenError::CommitOutcomeUnknown`], after which the write may or may not be there.
    #[error("catalog database call failed: {0}")]
    Unavailable(#[from] WardenError),
}

impl CatalogError {
    /// Whether the same call may succeed later as it is: only for some database failures
    /// (an outage, an open circuit, a timeout), never for the caller's mistakes.
    pub fn is_transient(&self) -> bool {
        match self {
            CatalogError::Unavailable(e) => e.is_transient(),
            CatalogError::NotFound { .. }
            | CatalogError::Conflict { .. }
            | CatalogError::Invalid { .. } => false,
        }
    }

    /// When to retry, where warden knows: the time until the next connect attempt, or until
    /// the circuit's next probe. `None` otherwise, including transient failures with no known
    /// time (a broken connection, a timeout): a caller then picks its own delay.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CatalogError::Unavailable(
                WardenError::CircuitOpen { retry_after, .. }
                | WardenError::Unavailable { retry_after, .. },
            ) => Some(*retry_after),
            _ => None,
        }
    }

    /// A short, stable code for the variant (for HTTP bodies and logs).
    pub fn code(&self) -> &'static str {
        match self {
            CatalogError::NotFound { .. } => "not_found",
            CatalogError::Conflict { .. } => "conflict",
            CatalogError::Invalid { .. } => "invalid",
            CatalogError::Unavailable(_) => "unavailable",
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        CatalogError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// At most `max` characters of `text` (and `…` when cut), on a character boundary: how stored
/// text may appear in an error, if at all.
pub(crate) fn excerpt(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Database;

    #[test]
    fn only_outages_are_transient_and_carry_a_retry_time() {
        let open = CatalogError::from(WardenError::CircuitOpen {
            database: Database::Postgres,
            retry_after: Duration::from_millis(700),
        });
        assert!(open.is_transient());
        assert_eq!(open.retry_after(), Some(Duration::from_millis(700)));
        let down = CatalogError::from(WardenError::Unavailable {
            database: Database::Postgres,
            retry_after: Duration::from_secs(2),
        });
        assert_eq!(down.retry_after(), Some(Duration::from_secs(2)));
        let broken = CatalogError::from(WardenError::Connection {
            database: Database::Postgres,
            message: "reset".into(),
        });
        assert!(broken.is_transient() && broken.retry_after().is_none());
        let refused = CatalogError::from(WardenError::Query {
            database: Database::Postgres,
            code: "P0001".into(),
            message: "boom".into(),
            transient: false,
        });
        assert!(!refused.is_transient());
        for e in [
            CatalogError::NotFound { what: "recording" },
            CatalogError::Conflict {
                field: "sha256_hash",
                message: "taken".into(),
            },
            CatalogError::invalid("file_path", "empty"),
        ] {
            assert!(!e.is_transient() && e.retry_after().is_none(), "{e}");
        }
    }

    #[test]
    fn excerpts_cut_on_characters() {
        assert_eq!(excerpt("abc", 3), "abc");
        assert_eq!(excerpt("abcd", 3), "abc…");
        assert_eq!(excerpt("ééééé", 2), "éé…");
    }
}
