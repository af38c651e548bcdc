//! Fault injection: a plan of faults, each matching requests by method and
//! path pattern, applied by a middleware in front of every route.
//!
//! A fault fires on a matching request while its count lasts (`times`), after
//! `skip` matching requests, with an optional `probability` rolled on a
//! per-fault RNG seeded from the plan's `seed`: the same requests in the same
//! order see the same faults. `delay` faults add up and let the request go on;
//! the first other fault that fires decides the answer.
//!
//! ```json
//! {"seed": 7, "faults": [
//!   {"endpoint": "PATCH /api/v4/jobs/:id/trace", "action": "trace_416", "times": 2},
//!   {"endpoint": "POST /api/v4/jobs/request", "action": {"status": 503}, "probability": 0.5},
//!   {"endpoint": "* git", "action": {"delay": 300}}
//! ]}
//! ```

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

pub use crate::fault_plan::{
    Action, EndpointPattern, Fault, FaultPlan, FaultPlanError, Probability, StatusCodeValue,
};
use crate::instance::Inner;
use crate::state::JobStatus;

/// Put on the response by the fault layer; read by the request recorder.
#[derive(Clone, Debug)]
pub(crate) struct AppliedFault {
    pub description: String,
    /// Body bytes actually sent, when that differs from what the response says.
    pub sent_bytes: Option<u64>,
}

/// The fault middleware.
pub(crate) async fn layer(State(inner): State<Arc<Inner>>, req: Request, next: Next) -> Response {
    let decision = {
        let mut f = inner.faults.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_empty() {
            None
        } else {
            f.decide(req.method(), req.uri().path())
        }
    };
    let Some(d) = decision else {
        return next.run(req).await;
    };
    let mut description = d.applied.join(", ");
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    tracing::warn!(%method, %path, fault = %description, "fault applied");
    if !d.delay.is_zero() {
        tokio::time::sleep(d.delay).await;
    }
    let mut sent_bytes = None;
    let resp = match d.terminal {
        None | Some(Action::Delay(_)) => next.run(req).await,
        Some(Action::Status(code)) => {
            let status =
                StatusCode::from_u16(u16::from(code)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let msg = format!(
                "{} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("Error")
            );
            crate::web::json_message(status, &msg)
        }
        Some(Action::DropConnection) => {
            sent_bytes = Some(0);
            drop_connection()
        }
        Some(Action::Trace416) => trace_416(&inner, &path),
        Some(Action::TruncatedBody) => {
            let (resp, sent) = truncate(next.run(req).await).await;
            match sent {
                Some(n) => sent_bytes = Some(n),
                None => description.push_str(" (no body)"),
            }
            resp
        }
        Some(Action::MalformedJson) => {
            let (resp, had_body) = malform(next.run(req).await).await;
            if !had_body {
                description.push_str(" (no body)");
            }
            resp
        }
    };
    let mut resp = resp;
    resp.extensions_mut().insert(AppliedFault {
        description,
        sent_bytes,
    });
    resp
}

/// An error from the body before any byte makes hyper close the connection
/// without writing the queued response head.
fn drop_connection() -> Response {
    let body = Body::from_stream(futures_util::stream::once(async {
        Err::<Bytes, _>(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "fault: drop_connection",
        ))
    }));
    Response::new(body)
}

/// Half the body under the full `Content-Length`, then an error: hyper closes
/// the connection mid-body. `None` if there was no body to cut.
async fn truncate(resp: Response) -> (Response, Option<u64>) {
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return (drop_connection(), Some(0));
    };
    if bytes.is_empty() {
        return (Response::from_parts(parts, Body::empty()), None);
    }
    let keep = bytes.slice(..bytes.len() / 2);
    let sent = keep.len() as u64;
    parts.headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(bytes.len() as u64),
    );
    // The pause lets hyper flush the head and the half before the error closes the connection
    // (an error in the same poll would discard both, i.e. a dropped connection).
    let tail = futures_util::stream::once(async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "fault: truncated_body",
        ))
    });
    let body = Body::from_stream(futures_util::stream::iter([Ok(keep)]).chain(tail));
    (Response::from_parts(parts, body), Some(sent))
}

/// The route's answer with its body cut in half and garbage appended, as JSON.
async fn malform(resp: Response) -> (Response, bool) {
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    if bytes.is_empty() {
        return (Response::from_parts(parts, Body::empty()), false);
    }
    let mut broken = bytes[..bytes.len() / 2].to_vec();
    broken.extend_from_slice(b"\",,}<!-- not json");
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    (Response::from_parts(parts, Body::from(broken)), true)
}

/// 416 with `Range: 0-<stored size>` and the job headers, as the trace route
/// answers an offset mismatch.
fn trace_416(inner: &Inner, path: &str) -> Response {
    let id = path
        .split('/')
        .skip_while(|s| *s != "jobs")
        .nth(1)
        .and_then(|s| s.parse::<u64>().ok());
    let (len, status, canceling) = {
        let st = inner.lock();
        id.and_then(|id| st.jobs.get(&id))
            .map(|j| (j.record.trace.len(), j.record.status, j.record.canceling))
            .unwrap_or((0, JobStatus::Running, false))
    };
    (
        StatusCode::RANGE_NOT_SATISFIABLE,
        [(
            header::HeaderName::from_static("range"),
            crate::web::hv(&format!("0-{len}")),
        )],
        crate::api::jobs::job_headers_for(status, canceling, inner.trace_update_interval),
        "416 Range Not Satisfiable",
    )
        .into_response()
}
