//! `POST /jobs/:id/artifacts` (upload) and `GET /jobs/:id/artifacts`
//! (dependency download), runner-protocol.md §7.
//!
//! The runner's uploader streams one multipart part named `file` with
//! `Transfer-Encoding: chunked`, and puts `artifact_format`, `artifact_type`
//! and `expire_in` in the *query string*. The body is read up to the
//! configured maximum (413 beyond), then the part is cut out of it.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::instance::Inner;
use crate::state::{ArtifactRecord, JobStatus};
use crate::web::{ct_eq, header_value, hv, json, json_message};

/// Room for multipart headers and boundaries on top of the file itself.
const MULTIPART_OVERHEAD: u64 = 64 * 1024;

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct UploadQuery {
    artifact_format: Option<String>,
    artifact_type: Option<String>,
    expire_in: Option<String>,
    token: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct DownloadQuery {
    job_token: Option<String>,
    token: Option<String>,
}

fn too_large() -> Response {
    json_message(
        StatusCode::PAYLOAD_TOO_LARGE,
        "413 Request Entity Too Large",
    )
}

/// `POST /jobs/:id/artifacts`.
pub(crate) async fn upload(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    Query(q): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return json_message(StatusCode::NOT_FOUND, "404 Not Found");
    };
    let token = header_value(&headers, "JOB-TOKEN").or(q.token.clone());
    let max = inner.max_artifact_size;
    // Authenticate and check the job before reading the body (Workhorse
    // authorizes first, too).
    {
        let st = inner.lock();
        let Some(job) = st.jobs.get(&id) else {
            return json_message(StatusCode::NOT_FOUND, "404 Not Found");
        };
        if !token.is_some_and(|t| ct_eq(&t, &job.token)) {
            return json_message(StatusCode::FORBIDDEN, "403 Forbidden");
        }
        if job.record.status != JobStatus::Running {
            return json_message(StatusCode::FORBIDDEN, "403 Forbidden - Job is not running");
        }
    }
    let declared = header_value(&headers, "content-length").and_then(|l| l.parse::<u64>().ok());
    if declared.is_some_and(|l| l > max + MULTIPART_OVERHEAD) {
        return too_large();
    }
    let Some(boundary) = header_value(&headers, "content-type").and_then(|ct| boundary_of(&ct))
    else {
        return json_message(
            StatusCode::BAD_REQUEST,
            "400 Bad request - multipart/form-data expected",
        );
    };
    let limit = usize::try_from(max + MULTIPART_OVERHEAD).unwrap_or(usize::MAX);
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => return too_large(),
    };
    let Some(part) = file_part(&bytes, &boundary) else {
        return json_message(StatusCode::BAD_REQUEST, "400 Bad request - file is missing");
    };
    if part.data.len() as u64 > max {
        return too_large();
    }
    let record = ArtifactRecord {
        artifact_type: q.artifact_type.unwrap_or_else(|| "archive".into()),
        format: q.artifact_format.unwrap_or_else(|| "zip".into()),
        filename: part.filename.unwrap_or_else(|| "artifacts.zip".into()),
        bytes: part.data.to_vec(),
        expire_in: q.expire_in,
    };
    let mut st = inner.lock();
    let Some(job) = st.jobs.get_mut(&id) else {
        return json_message(StatusCode::NOT_FOUND, "404 Not Found");
    };
    // The job may have been canceled while we read the body.
    if job.record.status != JobStatus::Running {
        return json_message(StatusCode::FORBIDDEN, "403 Forbidden - Job is not running");
    }
    tracing::info!(
        job = id,
        artifact_type = %record.artifact_type,
        format = %record.format,
        size = record.bytes.len(),
        "artifact uploaded"
    );
    let reply = serde_json::json!({
        "id": id,
        "name": job.record.name,
        "artifact_type": record.artifact_type,
        "size": record.bytes.len(),
    });
    job.artifacts
        .retain(|a| a.artifact_type != record.artifact_type);
    job.artifacts.push(record);
    drop(st);
    json(StatusCode::CREATED, &reply)
}

/// `GET /jobs/:id/artifacts`: the archive of job `id`. Accepts the job's own
/// token or the token of any running job of the same project (GitLab sends
/// the dependent job's token in `dependencies[].token`).
pub(crate) async fn download(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    Query(q): Query<DownloadQuery>,
    headers: HeaderMap,
) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return json_message(StatusCode::NOT_FOUND, "404 Not Found");
    };
    let token = header_value(&headers, "JOB-TOKEN")
        .or(q.job_token)
        .or(q.token);
    let st = inner.lock();
    let Some(job) = st.jobs.get(&id) else {
        return json_message(StatusCode::NOT_FOUND, "404 Not Found");
    };
    let Some(token) = token else {
        return json_message(StatusCode::UNAUTHORIZED, "401 Unauthorized");
    };
    let authorized = ct_eq(&token, &job.token)
        || st.jobs.values().any(|j| {
            j.record.project == job.record.project
                && j.record.status == JobStatus::Running
                && ct_eq(&token, &j.token)
        });
    if !authorized {
        return json_message(StatusCode::FORBIDDEN, "403 Forbidden");
    }
    let Some(a) = job.artifacts.iter().find(|a| a.artifact_type == "archive") else {
        return json_message(StatusCode::NOT_FOUND, "404 Not Found");
    };
    let bytes = a.bytes.clone();
    let filename = a.filename.clone();
    drop(st);
    let total = bytes.len() as u64;
    let disposition = (
        header::CONTENT_DISPOSITION,
        hv(&format!("attachment; filename=\"{filename}\"")),
    );
    let common = [
        (header::CONTENT_TYPE, hv("application/zip")),
        (header::ACCEPT_RANGES, hv("bytes")),
        disposition,
    ];
    match header_value(&headers, "range").map(|r| parse_range(&r, total)) {
        Some(Some(Some((start, end)))) => {
            let body = bytes[start as usize..=end as usize].to_vec();
            (
                StatusCode::PARTIAL_CONTENT,
                common,
                [(
                    header::CONTENT_RANGE,
                    hv(&format!("bytes {start}-{end}/{total}")),
                )],
                body,
            )
                .into_response()
        }
        Some(Some(None)) => (
            StatusCode::RANGE_NOT_SATISFIABLE,
            [(
                HeaderName::from_static("content-range"),
                hv(&format!("bytes */{total}")),
            )],
        )
            .into_response(),
        // No Range, or one we do not handle (several ranges): the whole file.
        _ => (StatusCode::OK, common, bytes).into_response(),
    }
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` → `Some(Some((start, end)))` (end
/// inclusive), `Some(None)` if unsatisfiable, `None` if not understood.
fn parse_range(v: &str, total: u64) -> Option<Option<(u64, u64)>> {
    let spec = v.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 || total == 0 {
            return Some(None);
        }
        (total.saturating_sub(n), total - 1)
    } else {
        let start: u64 = a.parse().ok()?;
        let end: u64 = if b.is_empty() {
            total.saturating_sub(1)
        } else {
            b.parse::<u64>().ok()?.min(total.saturating_sub(1))
        };
        if start >= total || end < start {
            return Some(None);
        }
        (start, end)
    };
    Some(Some(range))
}

/// The `boundary` parameter of a `multipart/form-data` content type.
fn boundary_of(content_type: &str) -> Option<String> {
    let mut parts = content_type.split(';');
    let media = parts.next()?.trim();
    if !media.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    parts
        .find_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("boundary")
                .then(|| v.trim().trim_matches('"').to_string())
        })
        .filter(|b| !b.is_empty())
}

struct Part<'a> {
    filename: Option<String>,
    data: &'a [u8],
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut i = from;
    while i + needle.len() <= hay.len() {
        match hay[i..=hay.len() - needle.len()]
            .iter()
            .position(|b| *b == first)
        {
            None => return None,
            Some(off) => {
                let at = i + off;
                if &hay[at..at + needle.len()] == needle {
                    return Some(at);
                }
                i = at + 1;
            }
        }
    }
    None
}

/// The part named `file` of a multipart body.
fn file_part<'a>(body: &'a [u8], boundary: &str) -> Option<Part<'a>> {
    let delim = format!("--{boundary}");
    let next_delim = format!("\r\n--{boundary}");
    let mut pos = find(body, delim.as_bytes(), 0)? + delim.len();
    loop {
        // After a delimiter: `--` ends the body, else CRLF and headers.
        if body.get(pos..pos + 2) == Some(b"--") {
            return None;
        }
        let headers_start = pos + 2;
        let headers_end = find(body, b"\r\n\r\n", headers_start)?;
        let head = String::from_utf8_lossy(&body[headers_start..headers_end]);
        let data_start = headers_end + 4;
        let data_end = find(body, next_delim.as_bytes(), data_start)?;
        let mut name = None;
        let mut filename = None;
        for line in head.split("\r\n") {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            if !k.trim().eq_ignore_ascii_case("content-disposition") {
                continue;
            }
            for param in v.split(';').skip(1) {
                if let Some((pk, pv)) = param.trim().split_once('=') {
                    let pv = pv.trim().trim_matches('"').to_string();
                    match pk.trim() {
                        "name" => name = Some(pv),
                        "filename" => filename = Some(pv),
                        _ => {}
                    }
                }
            }
        }
        if name.as_deref() == Some("file") {
            return Some(Part {
                filename,
                data: &body[data_start..data_end],
            });
        }
        pos = data_end + next_delim.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(Some((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Some(Some((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Some(Some((90, 99))));
        assert_eq!(parse_range("bytes=50-500", 100), Some(Some((50, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Some(None));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }

    #[test]
    fn multipart() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nv\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"artifacts.zip\"\r\nContent-Type: application/octet-stream\r\n\r\nPK\x03\x04\r\n--data\r\n--XyZ--\r\n";
        let p = file_part(body, "XyZ").unwrap();
        assert_eq!(p.filename.as_deref(), Some("artifacts.zip"));
        assert_eq!(p.data, b"PK\x03\x04\r\n--data");
        assert!(file_part(b"--XyZ--\r\n", "XyZ").is_none());
        assert_eq!(
            boundary_of("multipart/form-data; boundary=\"abc\"").as_deref(),
            Some("abc")
        );
        assert_eq!(boundary_of("text/plain"), None);
    }
}
