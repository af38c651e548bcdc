//! HTTP helpers shared by the handlers and the layers in front of them: GitLab's JSON
//! replies, request bodies and headers, secrets compared in constant time, GitLab's time format.

use std::time::SystemTime;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

/// A JSON reply with `Content-Type: application/json` (the runner refuses to
/// decode anything else).
pub(crate) fn json(status: StatusCode, value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// GitLab's error body shape: `{"message": "403 Forbidden"}`.
pub(crate) fn json_message(status: StatusCode, message: &str) -> Response {
    json(status, &serde_json::json!({ "message": message }))
}

/// Parse a JSON request body; an empty body yields the default value.
/// `None` for invalid JSON (answer with [`bad_json`]).
pub(crate) fn parse_body<T: DeserializeOwned + Default>(body: &Bytes) -> Option<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Some(T::default());
    }
    serde_json::from_slice(body).ok()
}

/// 400 for a body that is not the JSON we expect.
pub(crate) fn bad_json() -> Response {
    json(
        StatusCode::BAD_REQUEST,
        &serde_json::json!({ "error": "body is not valid JSON" }),
    )
}

/// A header as a string, if present and valid.
pub(crate) fn header_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Token from the body if given, else from the header (GitLab:
/// `params[:token] || env[HTTP_...]`).
pub(crate) fn token_from(
    body_token: Option<&str>,
    headers: &HeaderMap,
    header_name: &str,
) -> Option<String> {
    body_token
        .map(str::to_string)
        .filter(|t| !t.is_empty())
        .or_else(|| header_value(headers, header_name))
}

/// Constant-time comparison for secrets.
pub(crate) fn ct_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Format a wall-clock time like GitLab does in `CI_*_AT` variables.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from(t)
        .format(&fmt)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq() {
        assert!(ct_eq("abc", "abc"));
        assert!(!ct_eq("abc", "abd"));
        assert!(!ct_eq("abc", "ab"));
    }
}
