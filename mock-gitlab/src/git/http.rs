//! Git over smart HTTP through the real `git http-backend` run as a CGI program, and the
//! Git LFS routes, for the runner's clones and fetches.
//!
//! The runner fetches `repo_url` with the job token as Basic credentials, but
//! git only sends credentials after a `401` carrying `WWW-Authenticate: Basic`,
//! so every unauthenticated request is challenged; only `gitlab-ci-token` plus
//! the token of a job of that project that is currently running is let in.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_util::io::ReaderStream;

use super::lfs::{MAX_LFS_BATCH_BODY, is_oid, lfs_batch, lfs_download, lfs_error, request_base};
use super::repo::{repos_root, validate_project_path};
use crate::instance::Inner;
use crate::state::JobStatus;

/// The largest git request body accepted (upload-pack negotiations are small).
pub const MAX_GIT_BODY: usize = 64 * 1024 * 1024;

/// Which git service a request is for.
#[derive(Debug, PartialEq, Eq)]
enum Service {
    InfoRefs,
    UploadPack,
    ReceivePack,
    /// `POST <repo>.git/info/lfs/objects/batch`: the Git LFS batch API.
    LfsBatch,
    /// `GET <repo>.git/gitlab-lfs/objects/<oid>`: GitLab's LFS download path.
    LfsObject(String),
}

/// Split `/group/project.git/info/refs` into ("group/project", service).
fn split_git_path(path: &str) -> Option<(String, Service)> {
    let p = path.strip_prefix('/')?;
    let (repo, svc) = if let Some(r) = p.strip_suffix("/info/refs") {
        (r, Service::InfoRefs)
    } else if let Some(r) = p.strip_suffix("/git-upload-pack") {
        (r, Service::UploadPack)
    } else if let Some(r) = p.strip_suffix("/git-receive-pack") {
        (r, Service::ReceivePack)
    } else if let Some(r) = p.strip_suffix("/info/lfs/objects/batch") {
        (r, Service::LfsBatch)
    } else if let Some((r, oid)) = p.rsplit_once("/gitlab-lfs/objects/") {
        if !is_oid(oid) {
            return None;
        }
        (r, Service::LfsObject(oid.to_string()))
    } else {
        return None;
    };
    let repo = repo.strip_suffix(".git").unwrap_or(repo);
    validate_project_path(repo).ok()?;
    Some((repo.to_string(), svc))
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::WWW_AUTHENTICATE, "Basic realm=\"GitLab\""),
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        ],
        "HTTP Basic: Access denied\n",
    )
        .into_response()
}

fn plain(status: StatusCode, msg: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg,
    )
        .into_response()
}

/// (user, password) from a Basic `Authorization` header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// Fallback handler: everything outside `/api/v4` is treated as git.
pub(crate) async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let Some((project, service)) = split_git_path(&path) else {
        return plain(StatusCode::NOT_FOUND, "404 Not Found\n");
    };
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().clone();

    // Authenticate before revealing whether the project exists, like GitLab.
    let Some((user, password)) = basic_credentials(req.headers()) else {
        return unauthorized();
    };
    let lfs_store;
    {
        let st = inner.lock();
        let Some(ps) = st.projects.get(&project) else {
            return unauthorized();
        };
        // A running job's token reads its own project and the projects that allow it (its
        // submodules), like GitLab's job token allowlist.
        let token_ok = user == "gitlab-ci-token"
            && st.jobs.values().any(|j| {
                (j.record.project == project || ps.readable_by.contains(&j.record.project))
                    && j.record.status == JobStatus::Running
                    && crate::web::ct_eq(&j.token, &password)
            });
        if !token_ok || !ps.bare_repo.is_dir() {
            return unauthorized();
        }
        lfs_store = ps.lfs_store.clone();
    }
    match service {
        Service::LfsBatch if method == Method::POST => {
            let base = request_base(req.headers(), &inner.external_url);
            let auth = req.headers().get(header::AUTHORIZATION).cloned();
            return match axum::body::to_bytes(req.into_body(), MAX_LFS_BATCH_BODY).await {
                Ok(body) => lfs_batch(&lfs_store, &base, &project, auth, &body).await,
                Err(_) => lfs_error(StatusCode::PAYLOAD_TOO_LARGE, "batch request too large"),
            };
        }
        Service::LfsObject(oid) if method == Method::GET => {
            return lfs_download(&lfs_store.join(oid)).await;
        }
        Service::LfsBatch | Service::LfsObject(_) => {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed\n");
        }
        _ => {}
    }

    let wants_receive = service == Service::ReceivePack
        || (service == Service::InfoRefs && query.contains("service=git-receive-pack"));
    if wants_receive {
        return plain(
            StatusCode::FORBIDDEN,
            "You are not allowed to push code to this project.\n",
        );
    }
    match (&service, &method) {
        (Service::InfoRefs, &Method::GET) | (Service::UploadPack, &Method::POST) => {}
        _ => return plain(StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed\n"),
    }

    let headers = req.headers().clone();
    let body = match axum::body::to_bytes(req.into_body(), MAX_GIT_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "413 Request Entity Too Large\n",
            );
        }
    };
    // PATH_INFO must name the repository as it is on disk (`.git` suffix);
    // receive-pack was rejected above.
    let path_info = if service == Service::InfoRefs {
        format!("/{project}.git/info/refs")
    } else {
        format!("/{project}.git/git-upload-pack")
    };
    let root = repos_root(&inner.data_dir);
    match run_cgi(
        &inner.data_dir,
        &root,
        method.as_str(),
        &path_info,
        &query,
        &headers,
        body,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(project = %project, error = %e, "git http-backend failed");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "500 Internal Server Error\n",
            )
        }
    }
}

async fn run_cgi(
    home: &Path,
    project_root: &Path,
    method: &str,
    path_info: &str,
    query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> anyhow::Result<Response> {
    let hv = |h: &HeaderName| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", project_root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REQUEST_METHOD", method)
        .env("PATH_INFO", path_info)
        .env("QUERY_STRING", query)
        .env("REMOTE_USER", "gitlab-ci-token")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_TYPE", hv(&header::CONTENT_TYPE))
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let encoding = hv(&header::CONTENT_ENCODING);
    if !encoding.is_empty() {
        // http-backend inflates gzip request bodies itself.
        cmd.env("HTTP_CONTENT_ENCODING", encoding);
    }
    let proto = hv(&HeaderName::from_static("git-protocol"));
    if !proto.is_empty() {
        // Without this, protocol v2 clients silently fall back to v0.
        cmd.env("GIT_PROTOCOL", proto);
    }
    let mut child = cmd.spawn().context("spawn git http-backend")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut stderr = child.stderr.take().context("stderr")?;

    // Feed stdin and drain stderr concurrently with reading stdout, so a large
    // request or chatty backend cannot deadlock us; then reap the child.
    tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
        drop(stdin);
        let mut err = Vec::new();
        let _ = stderr.read_to_end(&mut err).await;
        match child.wait().await {
            Ok(st) if !st.success() => tracing::debug!(
                status = %st,
                stderr = %String::from_utf8_lossy(&err).trim(),
                "git http-backend exited with failure"
            ),
            Err(e) => tracing::debug!(error = %e, "waiting for git http-backend"),
            _ => {}
        }
    });

    let mut reader = BufReader::new(stdout);
    let mut status = StatusCode::OK;
    let mut out_headers = HeaderMap::new();
    let mut line = Vec::new();
    for _ in 0..100 {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).await?;
        if n == 0 {
            bail!("git http-backend closed stdout before the end of its headers");
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            let stream = ReaderStream::new(reader);
            let mut resp = Response::new(Body::from_stream(stream));
            *resp.status_mut() = status;
            *resp.headers_mut() = out_headers;
            return Ok(resp);
        }
        let Some((name, value)) = text.split_once(':') else {
            bail!("malformed CGI header line");
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("200");
            status = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        } else if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value),
        ) {
            out_headers.append(n, v);
        }
    }
    bail!("too many CGI header lines")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_paths() {
        assert_eq!(
            split_git_path("/group/hello.git/info/refs"),
            Some(("group/hello".into(), Service::InfoRefs))
        );
        assert_eq!(
            split_git_path("/a/b/c.git/git-upload-pack"),
            Some(("a/b/c".into(), Service::UploadPack))
        );
        assert_eq!(
            split_git_path("/group/hello/info/refs"),
            Some(("group/hello".into(), Service::InfoRefs))
        );
        let oid = "a".repeat(64);
        assert_eq!(
            split_git_path("/group/lfs.git/info/lfs/objects/batch"),
            Some(("group/lfs".into(), Service::LfsBatch))
        );
        assert_eq!(
            split_git_path(&format!("/group/lfs.git/gitlab-lfs/objects/{oid}")),
            Some(("group/lfs".into(), Service::LfsObject(oid.clone())))
        );
        // Only sha256 oids name objects: no path tricks through the oid.
        for bad in ["../../x", "ABC", &"a".repeat(63), &"A".repeat(64)] {
            assert_eq!(
                split_git_path(&format!("/group/lfs.git/gitlab-lfs/objects/{bad}")),
                None,
                "{bad}"
            );
        }
        assert_eq!(split_git_path("/hello.git/info/refs"), None);
        assert_eq!(split_git_path("/../x.git/info/refs"), None);
        assert_eq!(split_git_path("/group/hello.git/HEAD"), None);
    }
}
