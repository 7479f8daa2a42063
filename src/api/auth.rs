//! Bearer-token authentication for every `/api/v1` route.
//!
//! The token is a secret (`http.api_token`, `http.api_token_file`, `WARDEN__HTTP__API_TOKEN`,
//! `WARDEN__HTTP__API_TOKEN_FILE`): it lives in a [`Secret`] until startup turns it into a
//! SHA-256 digest, and only the digest is kept by the server. A presented token is hashed the
//! same way and the two digests are compared in constant time ([`subtle`]): comparing digests
//! of a fixed length means neither the length of the token nor the position of the first
//! differing byte shows in the time an answer takes.
//!
//! The rules, decided by the pure [`ApiAuth::check`] and applied by the [`require_token`]
//! middleware around the whole `/api/v1` scope (so a route registered there cannot forget them):
//! - no token configured: 403 `api_disabled`, saying how to enable the API;
//! - no `Authorization` header, a header that is not `Bearer <token>`, or a wrong token: 401
//!   `unauthorized` with `WWW-Authenticate: Bearer realm="warden"`;
//! - the right token: the request goes on to routing (404, 405, the handler).
//!
//! The health endpoints are outside the scope and stay open.

use std::path::Path;

use actix_web::{
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::header::{HeaderMap, AUTHORIZATION},
    middleware::Next,
    web,
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use warden_actors::{Secret, SettingsError};

use super::error::ApiError;

/// Shortest token accepted: a token an attacker could enumerate protects nothing. 16 visible
/// ASCII characters are about 100 bits when drawn at random (`openssl rand -hex 32` gives 64).
pub const MIN_TOKEN_LEN: usize = 16;

/// Longest token accepted; it travels in a header line, whose whole head is bounded anyway.
pub const MAX_TOKEN_LEN: usize = 4096;

/// The configured token as startup resolves it: the file (`api_token_file`) wins over the
/// inline value, as the database passwords' files do; one trailing newline (what `echo` and
/// editors leave) is dropped. `None` means the API is disabled.
///
/// The error names the key and never the value: a token that is too short is still a token.
pub fn resolve_token(
    inline: Option<Secret>,
    file: Option<&Path>,
) -> Result<Option<Secret>, SettingsError> {
    let (key, token) = match file {
        Some(path) => (
            "http.api_token_file",
            Secret::from_file("http.api_token_file", path)?,
        ),
        None => match inline {
            Some(token) => ("http.api_token", token),
            None => return Ok(None),
        },
    };
    validate(key, &token)?;
    Ok(Some(token))
}

/// A token must be a bearer credential that fits in a header unchanged: visible ASCII, no
/// spaces, and long enough to be worth something.
fn validate(key: &str, token: &Secret) -> Result<(), SettingsError> {
    let t = token.expose();
    let reason = if t.is_empty() {
        Some("is empty; leave it unset to keep the API disabled".to_owned())
    } else if t.len() < MIN_TOKEN_LEN {
        Some(format!(
            "must be at least {MIN_TOKEN_LEN} characters (try `openssl rand -hex 32`)"
        ))
    } else if t.len() > MAX_TOKEN_LEN {
        Some(format!("must be at most {MAX_TOKEN_LEN} characters"))
    } else if !t.bytes().all(|b| b.is_ascii_graphic()) {
        Some("must be visible ASCII characters without spaces".to_owned())
    } else {
        None
    };
    match reason {
        Some(reason) => Err(SettingsError {
            key: key.into(),
            value: warden_actors::secret::REDACTED.into(),
            reason,
        }),
        None => Ok(()),
    }
}

/// What the `/api/v1` scope accepts. Cheap to clone; its `Debug` shows only whether a token is
/// set.
#[derive(Clone)]
pub enum ApiAuth {
    /// No token configured: every request gets 403.
    Disabled,
    /// The SHA-256 digest of the configured token.
    Token([u8; 32]),
}

impl std::fmt::Debug for ApiAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ApiAuth::Disabled => "ApiAuth::Disabled",
            ApiAuth::Token(_) => "ApiAuth::Token(***)",
        })
    }
}

impl ApiAuth {
    /// The rules for a configured token, or none.
    pub fn new(token: Option<&Secret>) -> Self {
        match token {
            Some(t) => ApiAuth::Token(Sha256::digest(t.expose().as_bytes()).into()),
            None => ApiAuth::Disabled,
        }
    }

    /// Whether a request with these headers may use the API.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let expected = match self {
            ApiAuth::Disabled => return Err(ApiError::ApiDisabled),
            ApiAuth::Token(digest) => digest,
        };
        let mut values = headers.get_all(AUTHORIZATION);
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(if headers.contains_key(AUTHORIZATION) {
                ApiError::Unauthorized("send one Authorization header, not several")
            } else {
                ApiError::Unauthorized("missing Authorization: Bearer <token>")
            });
        };
        let presented = bearer(value.as_bytes()).ok_or(ApiError::Unauthorized(
            "Authorization must be `Bearer <token>`",
        ))?;
        let digest: [u8; 32] = Sha256::digest(presented).into();
        if bool::from(digest.ct_eq(expected)) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized("the token is not valid"))
        }
    }
}

/// The credentials of `Bearer <token>` (RFC 6750: the scheme is case-insensitive, one or more
/// spaces follow it); `None` for any other scheme or an empty token.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer";
    let (scheme, rest) = value.split_at_checked(SCHEME.len())?;
    if !scheme.eq_ignore_ascii_case(SCHEME) || rest.first() != Some(&b' ') {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// The middleware around the `/api/v1` scope: a request that fails [`ApiAuth::check`] gets its
/// error answer before any routing, body reading or database work.
pub async fn require_token(
    auth: web::Data<ApiAuth>,
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    auth.check(req.headers())?;
    next.call(req).await
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderValue;

    use super::*;

    const TOKEN: &str = "0123456789abcdef-token";

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    fn code(r: Result<(), ApiError>) -> &'static str {
        match r {
            Ok(()) => "ok",
            Err(e) => e.code(),
        }
    }

    #[test]
    fn the_right_token_passes_and_everything_else_is_401() {
        let auth = ApiAuth::new(Some(&Secret::new(TOKEN)));
        let right = format!("Bearer {TOKEN}");
        assert_eq!(code(auth.check(&headers(&[right.as_bytes()]))), "ok");
        let lower = format!("bearer   {TOKEN}");
        assert_eq!(code(auth.check(&headers(&[lower.as_bytes()]))), "ok");
        let cases: Vec<Vec<u8>> = vec![
            format!("Bearer {TOKEN}x").into_bytes(),
            format!("Bearer {}", &TOKEN[1..]).into_bytes(),
            format!("Basic {TOKEN}").into_bytes(),
            format!("Bearer{TOKEN}").into_bytes(),
            TOKEN.as_bytes().to_vec(),
            b"Bearer ".to_vec(),
            b"Bearer".to_vec(),
            b"".to_vec(),
            b"Bearer \xff\xfe".to_vec(),
        ];
        for case in cases {
            assert_eq!(
                code(auth.check(&headers(&[&case]))),
                "unauthorized",
                "{}",
                String::from_utf8_lossy(&case)
            );
        }
        assert_eq!(code(auth.check(&headers(&[]))), "unauthorized");
        assert_eq!(
            code(auth.check(&headers(&[right.as_bytes(), right.as_bytes()]))),
            "unauthorized"
        );
    }

    #[test]
    fn no_token_configured_is_403_whatever_is_sent() {
        let auth = ApiAuth::new(None);
        let right = format!("Bearer {TOKEN}");
        assert_eq!(
            code(auth.check(&headers(&[right.as_bytes()]))),
            "api_disabled"
        );
        assert_eq!(code(auth.check(&headers(&[]))), "api_disabled");
    }

    #[test]
    fn debug_never_shows_the_digest() {
        let auth = ApiAuth::new(Some(&Secret::new(TOKEN)));
        assert_eq!(format!("{auth:?}"), "ApiAuth::Token(***)");
    }

    #[test]
    fn resolve_prefers_the_file_and_refuses_weak_tokens_without_quoting_them() {
        assert!(resolve_token(None, None).unwrap().is_none());
        let inline = resolve_token(Some(Secret::new(TOKEN)), None)
            .unwrap()
            .unwrap();
        assert_eq!(inline.expose(), TOKEN);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-the-file-0123456789\n").unwrap();
        let from_file = resolve_token(Some(Secret::new(TOKEN)), Some(&path))
            .unwrap()
            .unwrap();
        assert_eq!(from_file.expose(), "from-the-file-0123456789");

        for (bad, why) in [
            ("", "empty"),
            ("short-secret", "at least 16"),
            ("has a space in the middle", "without spaces"),
            ("tab\there-0123456789", "without spaces"),
        ] {
            let err = resolve_token(Some(Secret::new(bad)), None).unwrap_err();
            assert_eq!(err.key, "http.api_token");
            assert!(err.reason.contains(why), "{bad:?}: {}", err.reason);
            let text = err.to_string();
            assert!(bad.is_empty() || !text.contains(bad), "{text}");
        }
        std::fs::write(&path, "short-secret\n").unwrap();
        let err = resolve_token(None, Some(&path)).unwrap_err();
        assert_eq!(err.key, "http.api_token_file");
        assert!(!err.to_string().contains("short-secret"));
        let err = resolve_token(None, Some(Path::new("/nonexistent/token"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/token"), "{err}");
    }
}
