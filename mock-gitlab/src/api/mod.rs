//! The runner API under `/api/v4`, plus request recording.

pub mod artifacts;
pub mod jobs;
pub mod rest;
pub mod runners;
pub mod trace;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use serde::de::DeserializeOwned;

use crate::Inner;
use crate::faults::AppliedFault;
use crate::state::RequestRecord;

/// Request bodies above this are refused (trace PATCHes are ≤ 1 MiB).
const MAX_BODY: usize = 64 * 1024 * 1024;

pub(crate) fn router(inner: Arc<Inner>) -> Router {
    let api = Router::new()
        .route(
            "/runners",
            post(runners::register).delete(runners::unregister),
        )
        .route("/runners/verify", post(runners::verify))
        .route("/runners/managers", delete(runners::unregister_manager))
        .route(
            "/runners/reset_authentication_token",
            post(runners::reset_token),
        )
        .route("/jobs/request", post(jobs::request))
        .route("/jobs/{id}", put(jobs::update))
        .route("/jobs/{id}/trace", patch(trace::append))
        .route(
            "/jobs/{id}/artifacts",
            post(artifacts::upload).get(artifacts::download),
        )
        // The REST subset for test drivers (PRIVATE-TOKEN auth), see `rest`.
        .route("/projects", post(rest::create_project))
        .route("/projects/{id}", get(rest::get_project))
        .route("/projects/{id}/pipeline", post(rest::create_pipeline))
        .route("/projects/{id}/pipelines/{pid}", get(rest::get_pipeline))
        .route(
            "/projects/{id}/merge_requests/{iid}",
            get(rest::get_merge_request),
        )
        .route(
            "/projects/{id}/merge_requests/{iid}/pipelines",
            post(rest::create_merge_request_pipeline),
        )
        .route("/projects/{id}/repository/tags", post(rest::create_tag))
        .route(
            "/projects/{id}/pipelines/{pid}/jobs",
            get(rest::pipeline_jobs),
        )
        .route(
            "/projects/{id}/pipelines/{pid}/cancel",
            post(rest::cancel_pipeline),
        )
        .route(
            "/projects/{id}/pipelines/{pid}/test_report_summary",
            get(rest::test_report_summary),
        )
        .route("/projects/{id}/jobs/{jid}", get(rest::get_job))
        .route("/projects/{id}/jobs/{jid}/trace", get(rest::get_trace))
        .route(
            "/projects/{id}/jobs/{jid}/artifacts",
            get(rest::get_artifacts),
        )
        .route("/projects/{id}/jobs/{jid}/cancel", post(rest::cancel_job))
        .route("/projects/{id}/jobs/{jid}/retry", post(rest::retry_job))
        .route("/projects/{id}/jobs/{jid}/play", post(rest::play_job))
        .fallback(not_found);
    Router::new()
        .nest("/api/v4", api)
        .fallback(crate::git::handle)
        // Faults sit inside the recorder, so what a fault did is what gets recorded.
        .layer(middleware::from_fn_with_state(
            inner.clone(),
            crate::faults::layer,
        ))
        .layer(middleware::from_fn_with_state(inner.clone(), record))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(inner)
}

async fn not_found() -> Response {
    json_message(StatusCode::NOT_FOUND, "404 Not Found")
}

/// Records every request (never its tokens), logs it at debug level and
/// appends it to the JSONL request log if one is open.
async fn record(State(inner): State<Arc<Inner>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let at = SystemTime::now();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query();
    let query = raw_query.map(redact_query);
    let query_token = raw_query.is_some_and(|q| query.as_deref() != Some(q));
    let h = req.headers();
    let header_str = |name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let user_agent = header_str("user-agent");
    let request_id = header_str("x-request-id");
    let runner_token_header = h.contains_key("runner-token");
    let job_token_header = h.contains_key("job-token");
    let private_token_header = h.contains_key("private-token");
    let authorization_header = h.contains_key(header::AUTHORIZATION);
    let request_bytes = header_str("content-length")
        .and_then(|v| v.parse().ok())
        .or_else(|| axum::body::HttpBody::size_hint(req.body()).exact());
    let resp = next.run(req).await;
    let elapsed = started.elapsed();
    let status = resp.status().as_u16();
    let applied = resp.extensions().get::<AppliedFault>().cloned();
    let response_bytes = applied
        .as_ref()
        .and_then(|a| a.sent_bytes)
        .or_else(|| axum::body::HttpBody::size_hint(resp.body()).exact());
    let fault = applied.map(|a| a.description);
    tracing::debug!(%method, %path, status, ?elapsed, fault = fault.as_deref().unwrap_or(""), "request");
    let rec = RequestRecord {
        method,
        path,
        query,
        status,
        elapsed,
        at,
        user_agent,
        request_id,
        runner_token_header,
        job_token_header,
        private_token_header,
        authorization_header,
        query_token,
        request_bytes,
        response_bytes,
        fault,
    };
    inner.log_request(&rec);
    inner.lock().push_request(rec);
    resp
}

/// Drop any query parameter whose name mentions a token.
fn redact_query(q: &str) -> String {
    q.split('&')
        .filter(|kv| {
            let k = kv.split('=').next().unwrap_or("");
            !k.to_ascii_lowercase().contains("token")
        })
        .collect::<Vec<_>>()
        .join("&")
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_redaction() {
        assert_eq!(redact_query("debug_trace=false"), "debug_trace=false");
        assert_eq!(
            redact_query("a=1&private_token=x&token=y&JOB_TOKEN=z&b=2"),
            "a=1&b=2"
        );
    }

    #[test]
    fn constant_time_eq() {
        assert!(ct_eq("abc", "abc"));
        assert!(!ct_eq("abc", "abd"));
        assert!(!ct_eq("abc", "ab"));
    }
}
