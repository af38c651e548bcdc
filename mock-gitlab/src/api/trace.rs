//! `PATCH /jobs/:id/trace`: incremental trace upload (runner-protocol.md §6).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::jobs::{job_headers, job_headers_for};
use crate::instance::Inner;
use crate::state::JobStatus;
use crate::web::{header_value, hv, json_message};

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct TraceQuery {
    token: Option<String>,
}

/// `Content-Range: <start>-<end>`: no `bytes ` prefix, inclusive end. Only
/// `start` matters (GitLab derives the length from the body).
fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let (a, b) = v.trim().split_once('-')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

fn range_header(len: usize) -> (HeaderName, axum::http::HeaderValue) {
    (HeaderName::from_static("range"), hv(&format!("0-{len}")))
}

pub(crate) async fn append(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    Query(q): Query<TraceQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return json_message(StatusCode::NOT_FOUND, "404 Not Found");
    };
    let token = header_value(&headers, "JOB-TOKEN").or(q.token);
    let interval = inner.trace_update_interval;
    let mut st = inner.lock();
    let Some(job) = st.jobs.get_mut(&id) else {
        return json_message(StatusCode::NOT_FOUND, "404 Not Found");
    };
    if !token.is_some_and(|t| crate::web::ct_eq(&t, &job.token)) {
        return json_message(StatusCode::FORBIDDEN, "403 Forbidden");
    }
    let r = &mut job.record;
    if r.status != JobStatus::Running {
        return (
            StatusCode::FORBIDDEN,
            job_headers(r.status, interval),
            "403 Forbidden - Job is not running",
        )
            .into_response();
    }
    let Some(range) = header_value(&headers, "Content-Range") else {
        return json_message(
            StatusCode::BAD_REQUEST,
            "400 Bad request - Missing header Content-Range",
        );
    };
    let Some((start, _end)) = parse_content_range(&range) else {
        return json_message(
            StatusCode::BAD_REQUEST,
            "400 Bad request - Invalid Content-Range",
        );
    };
    let len = r.trace.len();
    if start != len as u64 {
        r.trace_rejections += 1;
        // The runner resumes from the number after the dash; without this
        // header it would restart from 0.
        return (
            StatusCode::RANGE_NOT_SATISFIABLE,
            [range_header(len)],
            job_headers_for(JobStatus::Running, r.canceling, interval),
            "416 Range Not Satisfiable",
        )
            .into_response();
    }
    r.trace.extend_from_slice(&body);
    r.trace_patches += 1;
    if r.started_at.is_none() {
        r.started_at = Some(Instant::now());
    }
    let new_len = r.trace.len();
    let canceling = r.canceling;
    drop(st);
    (
        StatusCode::ACCEPTED,
        [range_header(new_len)],
        job_headers_for(JobStatus::Running, canceling, interval),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::parse_content_range as p;

    #[test]
    fn content_range() {
        assert_eq!(p("0-9"), Some((0, 9)));
        assert_eq!(p(" 10-19 "), Some((10, 19)));
        assert_eq!(p("bytes 0-9"), None);
        assert_eq!(p("x"), None);
        assert_eq!(p("-1-2"), None);
    }
}
