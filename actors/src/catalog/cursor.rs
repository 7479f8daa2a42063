//! The opaque cursor of `list`: the (created_at, id) of the last recording on a page, where the
//! next page starts (strictly after it, in that order: the keyset of the
//! `recordings_created_at_id_idx` index).
//!
//! Encoded as base64url (no padding) of 24 bytes: the timestamp as big-endian microseconds
//! since the Unix epoch (PostgreSQL's own precision, so no two rows collapse), then the UUID's
//! 16 bytes. Decoding is strict (exactly 32 characters, canonical base64url, a timestamp chrono
//! can hold), so a cursor that was not ours is refused rather than read as some other place.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::error::CatalogError;

/// The place after which a page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

const BYTES: usize = 24;
const CHARS: usize = 32;

impl Cursor {
    /// The opaque text a caller passes back.
    pub(crate) fn encode(&self) -> String {
        let mut raw = [0u8; BYTES];
        raw[..8].copy_from_slice(&self.created_at.timestamp_micros().to_be_bytes());
        raw[8..].copy_from_slice(self.id.as_bytes());
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Reads a cursor made by [`Cursor::encode`], or refuses it as `Invalid { field: "cursor" }`.
    pub(crate) fn decode(text: &str) -> Result<Cursor, CatalogError> {
        let invalid = || {
            CatalogError::invalid(
                "cursor",
                "not a cursor this catalog made; pass a next_cursor back unchanged",
            )
        };
        if text.len() != CHARS {
            return Err(invalid());
        }
        let raw = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
        let raw: [u8; BYTES] = raw.try_into().map_err(|_| invalid())?;
        let mut micros = [0u8; 8];
        micros.copy_from_slice(&raw[..8]);
        let created_at =
            DateTime::from_timestamp_micros(i64::from_be_bytes(micros)).ok_or_else(invalid)?;
        let id = Uuid::from_slice(&raw[8..]).map_err(|_| invalid())?;
        Ok(Cursor { created_at, id })
    }

    /// The timestamp as PostgreSQL reads it back exactly (microseconds, UTC).
    pub(crate) fn created_at_text(&self) -> String {
        self.created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Cursor {
        Cursor {
            created_at: DateTime::from_timestamp_micros(1_796_083_200_123_456).unwrap(),
            id: Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
        }
    }

    #[test]
    fn round_trips_exactly() {
        let c = sample();
        let text = c.encode();
        assert_eq!(text.len(), CHARS);
        assert!(text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(Cursor::decode(&text).unwrap(), c);
        assert_eq!(c.created_at_text(), "2026-12-01T00:00:00.123456Z");
        let before_epoch = Cursor {
            created_at: DateTime::from_timestamp_micros(-1).unwrap(),
            id: Uuid::max(),
        };
        assert_eq!(
            Cursor::decode(&before_epoch.encode()).unwrap(),
            before_epoch
        );
    }

    #[test]
    fn anything_else_is_refused_as_the_cursor() {
        let good = sample().encode();
        let max_micros = [0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        let bad = [
            String::new(),
            "x".into(),
            good[..31].to_owned(),
            format!("{good}A"),
            format!("{good}=="),
            good.replace(|c: char| c.is_ascii_alphabetic(), "+"),
            format!("{}/", &good[..31]),
            format!("{} ", &good[..31]),
            "é".repeat(16),
            // i64::MAX microseconds: beyond what chrono holds.
            URL_SAFE_NO_PAD.encode([max_micros, [0; 8], [0; 8]].concat()),
        ];
        for text in bad {
            match Cursor::decode(&text) {
                Err(CatalogError::Invalid { field, .. }) => assert_eq!(field, "cursor"),
                other => panic!("{text:?} was read as {other:?}"),
            }
        }
    }
}
