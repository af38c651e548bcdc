//! Git over smart HTTP through the real `git http-backend` run as a CGI program: which
//! service a path asks for, Basic credentials, and the CGI bridge. The route that lets jobs
//! in is `api::git_http`.

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, bail};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_util::io::ReaderStream;

use super::lfs::is_oid;
use super::repo::validate_project_path;

/// The largest git request body accepted (upload-pack negotiations are small).
pub const MAX_GIT_BODY: usize = 64 * 1024 * 1024;

/// Which git service a request is for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Service {
    InfoRefs,
    UploadPack,
    ReceivePack,
    /// `POST <repo>.git/info/lfs/objects/batch`: the Git LFS batch API.
    LfsBatch,
    /// `GET <repo>.git/gitlab-lfs/objects/<oid>`: GitLab's LFS download path.
    LfsObject(String),
}

/// Split `/group/project.git/info/refs` into ("group/project", service).
pub(crate) fn split_git_path(path: &str) -> Option<(String, Service)> {
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

pub(crate) fn unauthorized() -> Response {
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

pub(crate) fn plain(status: StatusCode, msg: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg,
    )
        .into_response()
}

/// (user, password) from a Basic `Authorization` header.
pub(crate) fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
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

pub(crate) async fn run_cgi(
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
