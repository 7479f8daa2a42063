//! The success envelope every `/api/v1` route answers with:
//! `{"data": ..., "meta": {"timestamp": "2026-12-01T00:00:00.000Z"}}`, plus `next_cursor` in
//! `meta` for a page of a list. Errors have their own shape (see [`super::error`]).

use actix_web::{
    http::{header, StatusCode},
    HttpResponse,
};
use chrono::Utc;
use serde::Serialize;

use super::error::ApiError;

/// The current time as the envelope shows it: RFC 3339, milliseconds, UTC (`Z`).
pub fn timestamp() -> String {
    warden_actors::timestamp::format(&Utc::now())
}

#[derive(Serialize)]
struct Meta {
    timestamp: String,
    /// Only on a page of a list: the cursor of the next page, `null` on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<Option<String>>,
}

#[derive(Serialize)]
struct Envelope<'a, T> {
    data: &'a T,
    meta: Meta,
}

fn respond<T: Serialize>(
    status: StatusCode,
    data: &T,
    next_cursor: Option<Option<String>>,
) -> Result<HttpResponse, ApiError> {
    let body = serde_json::to_vec(&Envelope {
        data,
        meta: Meta {
            timestamp: timestamp(),
            next_cursor,
        },
    })
    .map_err(|e| ApiError::Internal(format!("cannot serialize a response: {e}")))?;
    Ok(HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body))
}

/// 200 with `data`.
pub fn ok<T: Serialize>(data: &T) -> Result<HttpResponse, ApiError> {
    respond(StatusCode::OK, data, None)
}

/// 201 with `data` and a `Location` header naming the new resource.
pub fn created<T: Serialize>(location: &str, data: &T) -> Result<HttpResponse, ApiError> {
    let mut resp = respond(StatusCode::CREATED, data, None)?;
    let location = header::HeaderValue::from_str(location)
        .map_err(|e| ApiError::Internal(format!("bad Location {location:?}: {e}")))?;
    resp.headers_mut().insert(header::LOCATION, location);
    Ok(resp)
}

/// 200 with a page of items and `meta.next_cursor`.
pub fn page<T: Serialize>(
    items: &[T],
    next_cursor: Option<String>,
) -> Result<HttpResponse, ApiError> {
    respond(StatusCode::OK, &items, Some(next_cursor))
}

/// 204, no body.
pub fn no_content() -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

#[cfg(test)]
mod tests {
    use actix_web::body::MessageBody;

    use super::*;

    fn body(resp: HttpResponse) -> serde_json::Value {
        let bytes = resp.into_body().try_into_bytes().unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn data_and_meta_with_a_millisecond_utc_timestamp() {
        let v = body(ok(&serde_json::json!({"a": 1})).unwrap());
        assert_eq!(v["data"]["a"], 1);
        let ts = v["meta"]["timestamp"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
        assert!(
            ts.ends_with('Z') && ts.len() == "2026-12-01T00:00:00.000Z".len(),
            "{ts}"
        );
        assert!(v["meta"].get("next_cursor").is_none());
    }

    #[test]
    fn a_page_always_has_next_cursor() {
        let v = body(page(&[1, 2], None).unwrap());
        assert_eq!(v["data"], serde_json::json!([1, 2]));
        assert!(v["meta"]["next_cursor"].is_null() && v["meta"].get("next_cursor").is_some());
        let v = body(page(&[3], Some("abc".into())).unwrap());
        assert_eq!(v["meta"]["next_cursor"], "abc");
    }

    #[test]
    fn created_names_the_resource() {
        let resp = created("/api/v1/recordings/x", &1).unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        assert_eq!(
            resp.headers().get(header::LOCATION).unwrap(),
            "/api/v1/recordings/x"
        );
    }
}
