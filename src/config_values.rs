//! (De)serialization of the configuration values whose default errors do not help a new user:
//! an unknown `log.format` is answered with every accepted value, and an `http.bind` that is not
//! an address is quoted back (an address is never a secret). Errors follow serde's
//! `invalid value: string "…", expected …` shape, which the config crate completes with
//! `for key `…``, like every other bad value.

use std::{fmt, net::SocketAddr};

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::config::LogFormat;

/// A bad value is quoted up to this many characters: enough to recognise it, never a screenful.
const SHOWN_CHARS: usize = 64;

impl LogFormat {
    /// Every format, in the order the help and the errors list them: the one source of the
    /// accepted names.
    pub const ALL: [LogFormat; 3] = [LogFormat::Pretty, LogFormat::Json, LogFormat::Journald];

    /// The name in the configuration (`log.format = "json"`).
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Pretty => "pretty",
            LogFormat::Json => "json",
            LogFormat::Journald => "journald",
        }
    }
}

/// `one of `pretty`, `json`, `journald``.
struct OneOfFormats;

impl de::Expected for OneOfFormats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("one of ")?;
        for (i, format) in LogFormat::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "`{}`", format.name())?;
        }
        Ok(())
    }
}

impl Serialize for LogFormat {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for LogFormat {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        LogFormat::ALL
            .into_iter()
            .find(|f| f.name() == text)
            .ok_or_else(|| {
                de::Error::invalid_value(de::Unexpected::Str(&shown(&text)), &OneOfFormats)
            })
    }
}

/// `http.bind`: a socket address, its error quoting the value (the standard one says only
/// "invalid socket address syntax").
pub fn socket_addr<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(|_| {
        de::Error::invalid_value(
            de::Unexpected::Str(&shown(&text)),
            &"an IP address and a port, such as 127.0.0.1:8080 or [::1]:8080 (not a host name)",
        )
    })
}

/// The value as quoted in an error: at most [`SHOWN_CHARS`] characters, then `…`. serde's
/// `Unexpected::Str` prints it with `{:?}`, so control characters come out escaped.
fn shown(value: &str) -> String {
    let mut out: String = value.chars().take(SHOWN_CHARS).collect();
    if out.len() < value.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_round_trips_by_name() {
        for format in LogFormat::ALL {
            let text = serde_json::to_string(&format).unwrap();
            assert_eq!(text, format!("\"{}\"", format.name()));
            assert_eq!(serde_json::from_str::<LogFormat>(&text).unwrap(), format);
        }
    }

    #[test]
    fn an_unknown_format_lists_the_accepted_ones() {
        let err = serde_json::from_str::<LogFormat>("\"xml\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"xml\"") && err.contains("`pretty`, `json`, `journald`"),
            "{err}"
        );
        let err = serde_json::from_str::<LogFormat>("\"JSON\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"JSON\"") && err.contains("`journald`"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_address_is_quoted_and_bounded() {
        #[derive(Deserialize, Debug)]
        struct Bind {
            #[serde(deserialize_with = "socket_addr")]
            #[allow(dead_code)]
            bind: SocketAddr,
        }
        let err = serde_json::from_str::<Bind>(r#"{"bind": "localhost:80"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"localhost:80\"") && err.contains("127.0.0.1:8080"),
            "{err}"
        );
        let long = "x".repeat(10_000);
        let err = serde_json::from_str::<Bind>(&format!(r#"{{"bind": "{long}"}}"#))
            .unwrap_err()
            .to_string();
        assert!(err.len() < 400 && err.contains('…'), "{err}");
        let ok: Bind = serde_json::from_str(r#"{"bind": "[::1]:8080"}"#).unwrap();
        assert_eq!(ok.bind.to_string(), "[::1]:8080");
    }
}
