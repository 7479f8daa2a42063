//! Request input, validated before a handler runs: the JSON body (at most [`BODY_LIMIT`]),
//! a UUID in the path, a query string. Every failure is an [`ApiError`] that names the field
//! and the reason, answered with 422, and no handler (so no database) ever sees it.

use std::{future::Future, pin::Pin};

use actix_web::{dev::Payload, http::header, web::BytesMut, FromRequest, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::error::ApiError;

/// The largest body the API reads: 1 MB (MiB), the catalog's contract. A recording with a
/// 2000-track tracklist of ordinary titles is about 200 KB; a body at the library's own
/// ceilings (256 metadata values of 64 KiB) is not: such data has to arrive in several
/// requests (one `PUT .../metadata/{key}` each). Bounded so that a worker holds little.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// How long a body may take to arrive once the request head is in. actix-web bounds the head
/// (5 s, see `web.rs`) but not the body: without this a client could hold a connection and up
/// to [`BODY_LIMIT`] of memory by sending a byte now and then.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How much of a bad path segment an error quotes back.
const QUOTE_LIMIT: usize = 64;

/// A JSON body deserialized into `T`. `T`'s serde rules decide what is accepted
/// (`deny_unknown_fields` in the catalog's inputs); an error names the path of the field
/// (`tracklist.tracks[2].title`) when there is one, else `body`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let checked = check_headers(req);
        let mut payload = payload.take();
        Box::pin(async move {
            checked?;
            let read = async {
                let mut body = BytesMut::new();
                while let Some(chunk) = payload.next().await {
                    let chunk = chunk.map_err(|e| ApiError::invalid("body", e.to_string()))?;
                    if body.len() + chunk.len() > BODY_LIMIT {
                        return Err(ApiError::PayloadTooLarge { limit: BODY_LIMIT });
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(body)
            };
            let body = actix_web::rt::time::timeout(BODY_TIMEOUT, read)
                .await
                .map_err(|_| ApiError::BodyTimeout {
                    after: BODY_TIMEOUT,
                })??;
            parse(&body).map(JsonBody)
        })
    }
}

/// A body declared too large is refused before a byte of it is read; a body that is not
/// JSON by its declared type too.
fn check_headers(req: &HttpRequest) -> Result<(), ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > BODY_LIMIT as u64) {
        return Err(ApiError::PayloadTooLarge { limit: BODY_LIMIT });
    }
    // No Content-Type is taken for JSON; any other type than JSON is a mistake worth naming
    // (curl's `-d` sends a form type unless told otherwise).
    if let Some(value) = req.headers().get(header::CONTENT_TYPE) {
        let essence = value
            .to_str()
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(ApiError::invalid(
                "content-type",
                "send the body as application/json",
            ));
        }
    }
    Ok(())
}

/// `T` from JSON text, the error naming the field's path. The body must be an object: serde
/// would also fill a struct from an array, by position, which no client means.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    match body.trim_ascii_start().first() {
        Some(b'{') => {}
        None => return Err(ApiError::invalid("body", "is empty; send a JSON object")),
        Some(_) => return Err(ApiError::invalid("body", "must be a JSON object")),
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let field = if matches!(path.as_str(), "" | "." | "?") {
            "body".to_owned()
        } else {
            path
        };
        ApiError::invalid(field, e.into_inner().to_string())
    })?;
    // Trailing characters after the value.
    de.end()
        .map_err(|e| ApiError::invalid("body", e.to_string()))?;
    Ok(value)
}

/// The UUID in the path segment `name`.
pub fn path_uuid(req: &HttpRequest, name: &str) -> Result<Uuid, ApiError> {
    let raw = req.match_info().get(name).unwrap_or_default();
    Uuid::parse_str(raw)
        .map_err(|e| ApiError::invalid(name, format!("{:?} is not a UUID: {e}", quote(raw))))
}

/// A path segment as text, percent-decoded in full. The router decodes all but `%2F`, `%25`
/// and `%2B` (so that an encoded `/` cannot split a segment); this decodes those too, so a
/// metadata key may hold any character. Not UTF-8 once decoded: a 422 naming the segment.
pub fn path_text(req: &HttpRequest, name: &str) -> Result<String, ApiError> {
    let raw = req.match_info().get(name).unwrap_or_default();
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ApiError::invalid(name, "is not UTF-8 once percent-decoded"))
}

/// The query string deserialized into `T`. With `deny_unknown_fields` on `T`, a parameter it
/// does not know is an error that names it; a value of the wrong type names its parameter
/// (`limit`), a repeated parameter is refused.
pub fn query<T: DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    let de =
        serde_urlencoded::Deserializer::new(form_urlencoded::parse(req.query_string().as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = if matches!(path.as_str(), "" | "." | "?") {
            "query".to_owned()
        } else {
            path
        };
        ApiError::invalid(field, e.into_inner().to_string())
    })
}

/// At most [`QUOTE_LIMIT`] characters of client input, for an error message.
fn quote(raw: &str) -> String {
    match raw.char_indices().nth(QUOTE_LIMIT) {
        Some((at, _)) => format!("{}...", &raw[..at]),
        None => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[allow(dead_code)]
        title: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[allow(dead_code)]
        name: String,
        #[serde(default)]
        #[allow(dead_code)]
        items: Vec<Inner>,
    }

    fn field(r: Result<Outer, ApiError>) -> (String, String) {
        match r.unwrap_err() {
            ApiError::Invalid { field, reason } => (field, reason),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field_path() {
        assert!(parse::<Outer>(br#"{"name": "a", "items": [{"title": "t"}]}"#).is_ok());
        let (f, r) = field(parse(br#"{"name": "a", "items": [{"title": 5}]}"#));
        assert_eq!(f, "items[0].title");
        assert!(r.contains("invalid type"), "{r}");
        let (f, r) = field(parse(br#"{"name": "a", "bogus": 1}"#));
        assert_eq!(f, "bogus");
        assert!(r.contains("unknown field `bogus`"), "{r}");
        let (f, r) = field(parse(
            br#"{"name": "a", "items": [{"title": "t", "x": 1}]}"#,
        ));
        assert_eq!(f, "items[0].x");
        assert!(r.contains("unknown field `x`"), "{r}");
        let (f, _) = field(parse(br#"{"name": "a""#));
        assert_eq!(f, "body");
        let (f, _) = field(parse(br#"{"name": "a"} trailing"#));
        assert_eq!(f, "body");
        let (f, _) = field(parse(b""));
        assert_eq!(f, "body");
        let (f, r) = field(parse(br#"["a", []]"#));
        assert_eq!((f.as_str(), r.as_str()), ("body", "must be a JSON object"));
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Params {
        #[serde(default)]
        limit: Option<u32>,
        #[serde(default)]
        key: Option<String>,
    }

    fn params(uri: &str) -> Result<Params, ApiError> {
        query(&actix_web::test::TestRequest::with_uri(uri).to_http_request())
    }

    #[test]
    fn query_errors_name_the_parameter() {
        let p = params("/x?limit=5&key=b%20pm").unwrap();
        assert_eq!((p.limit, p.key.as_deref()), (Some(5), Some("b pm")));
        assert!(params("/x").unwrap().limit.is_none());
        for (uri, want) in [
            ("/x?limit=abc", "limit"),
            ("/x?limit=-1", "limit"),
            ("/x?bogus=1", "bogus"),
        ] {
            match params(uri).unwrap_err() {
                ApiError::Invalid { field, .. } => assert_eq!(field, want, "{uri}"),
                other => panic!("{uri}: {other:?}"),
            }
        }
        assert!(matches!(
            params("/x?limit=1&limit=2").unwrap_err(),
            ApiError::Invalid { .. }
        ));
    }

    #[test]
    fn quotes_are_bounded() {
        assert_eq!(quote("abc"), "abc");
        let long = "é".repeat(100);
        assert_eq!(quote(&long).chars().count(), QUOTE_LIMIT + 3);
    }
}
