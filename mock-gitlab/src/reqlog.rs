//! The JSONL request log: one JSON object per request, appended to a file.
//!
//! Lines are formatted in the request's task and written by one thread, each
//! with a single `write` of the whole line on an `O_APPEND` file, so a reader
//! (or a crash) never sees half a line, and no request waits on the disk.
//! Secrets never reach it: the record holds no token value (query tokens are
//! removed, headers are reduced to "present or not").

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use serde::Serialize;

use crate::state::RequestRecord;

enum Msg {
    Line(String),
    /// Answered once every earlier line is written.
    Sync(tokio::sync::oneshot::Sender<()>),
}

/// An open request log: the writer thread and its queue.
pub(crate) struct RequestLog {
    tx: mpsc::Sender<Msg>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl RequestLog {
    pub(crate) fn open(path: &Path) -> std::io::Result<RequestLog> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let (tx, rx) = mpsc::channel::<Msg>();
        let shown = path.display().to_string();
        let thread = std::thread::Builder::new()
            .name("mock-gitlab-reqlog".into())
            .spawn(move || {
                for msg in rx {
                    match msg {
                        Msg::Line(line) => {
                            // Unbuffered: one write(2) per complete line.
                            if let Err(e) = file.write_all(line.as_bytes()) {
                                tracing::error!(file = %shown, error = %e, "request log write failed");
                            }
                        }
                        Msg::Sync(done) => {
                            let _ = done.send(());
                        }
                    }
                }
                // Queue closed (log replaced or mock stopped): make it durable once, not per line.
                let _ = file.sync_data();
            })?;
        Ok(RequestLog {
            tx,
            thread: Some(thread),
            path: path.to_path_buf(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn append(&self, rec: &RequestRecord) {
        let _ = self.tx.send(Msg::Line(format_line(rec)));
    }

    /// A receiver that fires when every line queued so far is written.
    pub(crate) fn sync(&self) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = self.tx.send(Msg::Sync(tx));
        rx
    }

    /// Close the queue and wait until the writer has written everything.
    pub(crate) fn close(mut self) {
        let (tx, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Serialize)]
struct Line<'a> {
    ts: String,
    method: &'a str,
    path: String,
    query: Option<String>,
    status: u16,
    latency_ms: f64,
    request_bytes: Option<u64>,
    response_bytes: Option<u64>,
    fault: Option<&'a str>,
    runner_token: bool,
    job_token: bool,
    private_token: bool,
    authorization: bool,
    query_token: bool,
    request_id: Option<&'a str>,
    user_agent: Option<&'a str>,
}

/// One complete JSONL line, newline included.
pub(crate) fn format_line(rec: &RequestRecord) -> String {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    let ts = time::OffsetDateTime::from(rec.at)
        .format(&fmt)
        .unwrap_or_default();
    let line = Line {
        ts,
        method: &rec.method,
        path: mask_token_shapes(&rec.path),
        query: rec.query.as_deref().map(mask_token_shapes),
        status: rec.status,
        latency_ms: (rec.elapsed.as_secs_f64() * 1e6).round() / 1e3,
        request_bytes: rec.request_bytes,
        response_bytes: rec.response_bytes,
        fault: rec.fault.as_deref(),
        runner_token: rec.runner_token_header,
        job_token: rec.job_token_header,
        private_token: rec.private_token_header,
        authorization: rec.authorization_header,
        query_token: rec.query_token,
        request_id: rec.request_id.as_deref(),
        user_agent: rec.user_agent.as_deref(),
    };
    let mut s = serde_json::to_string(&line).unwrap_or_else(|_| "{}".into());
    s.push('\n');
    s
}

/// GitLab token prefixes; a value carrying one is masked wherever it shows up
/// (belt and braces: tokens never belong in paths or the kept query).
const TOKEN_PREFIXES: [&str; 6] = ["glrt-", "glcbt-", "glpat-", "gldt-", "glptt-", "GR1348941"];

pub(crate) fn mask_token_shapes(s: &str) -> String {
    let mut out = s.to_string();
    for p in TOKEN_PREFIXES {
        let mut from = 0;
        while let Some(i) = out[from..].find(p) {
            let start = from + i + p.len();
            let end = out[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                .map_or(out.len(), |j| start + j);
            out.replace_range(start..end, "[MASKED]");
            from = start + "[MASKED]".len();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::mask_token_shapes as m;

    #[test]
    fn masks_token_shapes() {
        assert_eq!(m("/a/glrt-abc_DEF-1/b"), "/a/glrt-[MASKED]/b");
        assert_eq!(m("x=glcbt-zz&y=1"), "x=glcbt-[MASKED]&y=1");
        assert_eq!(m("/api/v4/jobs/request"), "/api/v4/jobs/request");
    }
}
