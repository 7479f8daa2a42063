//! One precision for every timestamp warden serves: RFC 3339 in UTC with milliseconds
//! (`2026-11-22T02:22:27.555Z`), the precision of `/health/detailed`'s own `timestamp`.
//! chrono's default writes as many fraction digits as the value has (up to nanoseconds), so a
//! dashboard comparing or parsing timestamps would otherwise meet several shapes in one body.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serializer;

/// `at` as served.
pub fn format(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// For `#[serde(serialize_with = "crate::timestamp::millis_opt")]` on an optional timestamp.
pub fn millis_opt<S: Serializer>(at: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => s.serialize_str(&format(at)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct T {
        #[serde(serialize_with = "millis_opt")]
        at: Option<DateTime<Utc>>,
    }

    #[test]
    fn always_three_fraction_digits() {
        let json = |at| serde_json::to_string(&T { at }).unwrap();
        let at = |s: &str| Some(s.parse::<DateTime<Utc>>().unwrap());
        assert_eq!(
            json(at("2026-11-22T02:22:27.555123456Z")),
            r#"{"at":"2026-11-22T02:22:27.555Z"}"#
        );
        assert_eq!(
            json(at("2026-11-22T02:22:27Z")),
            r#"{"at":"2026-11-22T02:22:27.000Z"}"#
        );
        assert_eq!(json(None), r#"{"at":null}"#);
    }
}
