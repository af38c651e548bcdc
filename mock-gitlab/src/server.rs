//! The server of a mock instance: the router that assembles the handlers, with the request
//! recorder and the fault layer in front of them, the timer of delayed jobs, and starting and
//! stopping it all.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, patch, post, put};

use crate::api::{artifacts, git_http, jobs, rest, runners, trace};
use crate::config::Config;
use crate::faults::{self, AppliedFault};
use crate::instance::{Inner, MockGitlab};
use crate::pipeline;
use crate::state::RequestRecord;
use crate::web::json_message;

/// Request bodies above this are refused (trace PATCHes are ≤ 1 MiB).
const MAX_BODY: usize = 64 * 1024 * 1024;

fn router(inner: Arc<Inner>) -> Router {
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
        .fallback(git_http::handle)
        // Faults sit inside the recorder, so what a fault did is what gets recorded.
        .layer(middleware::from_fn_with_state(inner.clone(), faults::layer))
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

/// The timer of `when: delayed` jobs: after every state change (a job may have become
/// scheduled) and when the earliest scheduled job is due, due jobs become pending. Holds the
/// state only weakly and ends with the mock.
fn spawn_scheduler(inner: &Arc<Inner>) {
    let weak = Arc::downgrade(inner);
    let mut changes = inner.changes_tx.subscribe();
    let mut stop = inner.shutdown_tx.subscribe();
    tokio::spawn(async move {
        loop {
            let next_due = {
                let Some(inner) = weak.upgrade() else { return };
                let mut st = inner.lock();
                let p = pipeline::promote_due(&mut st, Instant::now());
                drop(st);
                if !p.jobs.is_empty() {
                    inner.queue_tx.send_modify(|v| *v += 1);
                }
                for adv in &p.advances {
                    inner.notify_change(adv);
                }
                p.next_due
            };
            let due = async {
                match next_due {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = due => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
}

impl MockGitlab {
    /// Bind, start serving, and return a handle.
    pub async fn start(cfg: Config) -> anyhow::Result<MockGitlab> {
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("create data dir {}", cfg.data_dir.display()))?;
        let listener = tokio::net::TcpListener::bind(cfg.bind)
            .await
            .with_context(|| format!("bind {}", cfg.bind))?;
        let addr = listener.local_addr()?;
        let local_ip = if addr.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            addr.ip()
        };
        let local_url = match local_ip {
            IpAddr::V6(ip) => format!("http://[{ip}]:{}", addr.port()),
            IpAddr::V4(ip) => format!("http://{ip}:{}", addr.port()),
        };
        let external_host = cfg
            .external_host
            .clone()
            .unwrap_or_else(|| "127.0.0.1".into());
        let external_url = format!("http://{external_host}:{}", addr.port());
        let inner = Arc::new(Inner::new(&cfg, local_url, external_url)?);
        let app = router(inner.clone());
        let mut stop = inner.shutdown_tx.subscribe();
        let handle = tokio::spawn(async move {
            let res = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = res {
                tracing::error!(error = %e, "mock-gitlab server failed");
            }
        });
        *inner.server.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        spawn_scheduler(&inner);
        tracing::info!(url = %inner.local_url, external = %inner.external_url, "mock-gitlab listening");
        Ok(MockGitlab { inner })
    }

    /// Stop serving. Held long polls are answered (204) at once, in-flight
    /// requests finish, then the listener closes.
    pub async fn shutdown(self) {
        let _ = self.inner.shutdown_tx.send(true);
        let handle = self
            .inner
            .server
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut h) = handle {
            // A client keeping a connection busy must not block us forever.
            if tokio::time::timeout(Duration::from_secs(5), &mut h)
                .await
                .is_err()
            {
                h.abort();
            }
        }
        // After the server: every recorded request is in the queue; write it all, then close.
        let log = self
            .inner
            .request_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(log) = log {
            let _ = tokio::task::spawn_blocking(move || log.close()).await;
        }
        tracing::info!("mock-gitlab stopped");
    }
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
}
