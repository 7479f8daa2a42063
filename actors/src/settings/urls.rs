//! URLs in settings: decoding their parts, and printing them without secrets.

use serde::Serializer;
use url::Url;

use crate::secret::{is_safe_query_key, printable_query_key, REDACTED};

/// Decodes `%XX` escapes in a URL component (passwords may contain `@`, `:` or `/`).
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URL with its password, every query value but `sslmode`'s and any fragment replaced by
/// `***`; unparsable input is redacted whole. The user, host and path stay, so that an error
/// still says which server and database it is about.
pub fn redact_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                // Setting a password only fails for URLs that cannot have one.
                let _ = url.set_password(Some(REDACTED));
            }
            if url.query().is_some() {
                let pairs: Vec<(String, String)> = url
                    .query_pairs()
                    .map(|(key, value)| {
                        let value = if is_safe_query_key(&key) {
                            value.into_owned()
                        } else {
                            REDACTED.to_owned()
                        };
                        (printable_query_key(&key).to_owned(), value)
                    })
                    .collect();
                url.query_pairs_mut().clear().extend_pairs(pairs);
            }
            if url.fragment().is_some() {
                url.set_fragment(Some(REDACTED));
            }
            url.to_string()
        }
        Err(_) => REDACTED.to_owned(),
    }
}

pub(super) fn serialize_redacted_url<S: Serializer>(
    url: &str,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&redact_url(url))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::*;

    #[test]
    fn url_passwords_are_redacted_in_errors_and_output() {
        let mut s = WardenSettings::default();
        s.postgres.url = "postgres://app:s3cret@db:5432/x?bogus=1".into();
        let err = s.validate().unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
        let out = serde_json::to_string(&s).unwrap();
        assert!(!out.contains("s3cret"), "{out}");
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("s3cret") && debug.contains("app:***@db"),
            "{debug}"
        );
        assert!(out.contains("app:***@db"), "{out}");
    }

    #[test]
    fn url_query_values_are_redacted_in_errors_and_output() {
        let mut s = WardenSettings::default();
        s.postgres.url = "postgres://u@127.0.0.1/db?sslmode=disable&password=qpw".into();
        s.neo4j.uri = "neo4j://graph:7687?policy=eu&token=tpw".into();
        let err = s.validate().unwrap_err().to_string();
        assert!(!err.contains("qpw"), "{err}");
        assert!(err.contains("unsupported parameter `password`"), "{err}");
        assert!(
            err.contains("postgres://u@127.0.0.1/db?sslmode=disable&password=***"),
            "{err}"
        );
        for out in [serde_json::to_string(&s).unwrap(), format!("{s:?}")] {
            assert!(!out.contains("qpw") && !out.contains("tpw"), "{out}");
            assert!(
                out.contains("neo4j://graph:7687?policy=***&token=***"),
                "{out}"
            );
        }

        // A typo that puts the value into the name, and a fragment.
        s.postgres.url = "postgres://u@h/db?password:qpw#qpw2".into();
        let err = s.validate().unwrap_err().to_string();
        assert!(!err.contains("qpw"), "{err}");
        assert_eq!(
            redact_url("postgres://u@h/db?password:qpw#qpw2"),
            "postgres://u@h/db?***=***#***"
        );

        // Neither a missing host on a URI with a query.
        let mut s = WardenSettings::default();
        s.neo4j.uri = "bolt://?token=tpw".into();
        let err = s.validate().unwrap_err();
        assert_eq!(err.key, "neo4j.uri");
        assert!(!err.to_string().contains("tpw"), "{err}");
    }
}
