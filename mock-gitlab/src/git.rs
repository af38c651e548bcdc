//! Git: fixture projects as bare repositories, and smart HTTP through the real
//! `git http-backend` run as a CGI program.
//!
//! The runner fetches `repo_url` with the job token as Basic credentials, but
//! git only sends credentials after a `401` carrying `WWW-Authenticate: Basic`,
//! so every unauthenticated request is challenged; only `gitlab-ci-token` plus
//! the token of a job of that project that is currently running is let in.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_util::io::ReaderStream;

use crate::Inner;
use crate::state::JobStatus;

pub const COMMIT_AUTHOR_NAME: &str = "runnerlab";
pub const COMMIT_AUTHOR_EMAIL: &str = "lab@runnerlab.invalid";
/// Fixed author and committer date: together with the fixed identity this
/// makes fixture commit SHAs deterministic.
pub const COMMIT_DATE: &str = "2026-01-01T00:00:00Z";
pub const COMMIT_MESSAGE: &str = "Initial commit\n";

/// The largest git request body accepted (upload-pack negotiations are small).
pub const MAX_GIT_BODY: usize = 64 * 1024 * 1024;

/// Where bare repositories live (`GIT_PROJECT_ROOT`).
pub fn repos_root(data_dir: &Path) -> PathBuf {
    data_dir.join("repos")
}

/// Whether `path` is a sane `group[/subgroup]/project` path.
pub fn validate_project_path(path: &str) -> anyhow::Result<()> {
    let segments: Vec<&str> = path.split('/').collect();
    if segments.len() < 2 {
        bail!("project path {path:?} must be namespace/project");
    }
    for s in &segments {
        let ok = !s.is_empty()
            && !s.starts_with('.')
            && !s.starts_with('-')
            && !s.ends_with(".git")
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !ok {
            bail!("project path {path:?} has an invalid segment {s:?}");
        }
    }
    Ok(())
}

/// Whether `r` is a branch name we are willing to hand to git.
pub fn validate_ref(r: &str) -> bool {
    !r.is_empty()
        && !r.starts_with('-')
        && !r.starts_with('/')
        && !r.ends_with('/')
        && !r.contains("..")
        && !r.contains("//")
        && !r.ends_with(".lock")
        && r.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
}

/// A git command isolated from the host's user and system configuration.
fn git(home: &Path) -> Command {
    let mut c = Command::new("git");
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    c
}

fn run(mut cmd: Command, what: &str) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("{what}: cannot run git"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The directory of a fixture that holds its submodules' fixtures (`.submodules/<name>/`): each
/// becomes a project of its own and a gitlink in the fixture's repository.
pub const SUBMODULES_DIR: &str = ".submodules";

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("create {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("read {}", from.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if name == ".git" || name == SUBMODULES_DIR {
            continue;
        }
        let src = entry.path();
        let dst = to.join(&name);
        let ft = entry.file_type()?;
        if ft.is_dir() {
            copy_tree(&src, &dst)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&src)?;
            #[cfg(unix)]
            std::os::unix::fs::symlink(&target, &dst)?;
            #[cfg(not(unix))]
            std::fs::copy(&src, &dst)?;
        } else {
            // fs::copy keeps permission bits, so executable fixtures stay 755.
            std::fs::copy(&src, &dst)
                .with_context(|| format!("copy {} to {}", src.display(), dst.display()))?;
        }
    }
    Ok(())
}

/// A submodule of a fixture: a gitlink at `path` to `sha`, cloned from `url` (relative to the
/// superproject's URL, as GitLab users write them, so the job's credentials carry over).
#[derive(Clone, Debug)]
pub struct Gitlink {
    pub path: String,
    pub url: String,
    pub sha: String,
}

/// Turn a fixture directory into `<data_dir>/repos/<path>.git` with one commit
/// on `main` made with a fixed identity and date, with `submodules` as gitlinks and
/// `.gitmodules`. Returns (bare repo, sha).
pub fn create_bare_repo(
    data_dir: &Path,
    path: &str,
    fixture_dir: &Path,
    submodules: &[Gitlink],
) -> anyhow::Result<(PathBuf, String)> {
    validate_project_path(path)?;
    if !fixture_dir.is_dir() {
        bail!("fixture {} is not a directory", fixture_dir.display());
    }
    let work = data_dir.join("src").join(path);
    let bare = repos_root(data_dir).join(format!("{path}.git"));
    for d in [&work, &bare] {
        if d.exists() {
            std::fs::remove_dir_all(d).with_context(|| format!("remove {}", d.display()))?;
        }
    }
    copy_tree(fixture_dir, &work)?;

    let mut c = git(data_dir);
    c.arg("init").arg("-q").arg("-b").arg("main").arg(&work);
    run(c, "git init")?;
    if !submodules.is_empty() {
        let mut text = String::new();
        for m in submodules {
            text.push_str(&format!(
                "[submodule \"{0}\"]\n\tpath = {0}\n\turl = {1}\n",
                m.path, m.url
            ));
        }
        std::fs::write(work.join(".gitmodules"), text)?;
    }
    let mut c = git(data_dir);
    c.current_dir(&work)
        .args(["-c", "core.autocrlf=false", "add", "-A"]);
    run(c, "git add")?;
    for m in submodules {
        // A gitlink is an index entry of mode 160000 naming the submodule's commit.
        let mut c = git(data_dir);
        c.current_dir(&work).args([
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{},{}", m.sha, m.path),
        ]);
        run(c, "git update-index (submodule)")?;
    }
    let mut c = git(data_dir);
    c.current_dir(&work)
        .env("GIT_AUTHOR_NAME", COMMIT_AUTHOR_NAME)
        .env("GIT_AUTHOR_EMAIL", COMMIT_AUTHOR_EMAIL)
        .env("GIT_AUTHOR_DATE", COMMIT_DATE)
        .env("GIT_COMMITTER_NAME", COMMIT_AUTHOR_NAME)
        .env("GIT_COMMITTER_EMAIL", COMMIT_AUTHOR_EMAIL)
        .env("GIT_COMMITTER_DATE", COMMIT_DATE)
        .args([
            "-c",
            "commit.gpgsign=false",
            "commit",
            "-q",
            "--allow-empty",
            "--no-verify",
            "-m",
            COMMIT_MESSAGE.trim(),
        ]);
    run(c, "git commit")?;

    if let Some(parent) = bare.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut c = git(data_dir);
    c.args(["init", "-q", "--bare", "-b", "main"]).arg(&bare);
    run(c, "git init --bare")?;
    let mut c = git(data_dir);
    c.current_dir(&work)
        .arg("push")
        .arg("-q")
        .arg(&bare)
        .arg("main:refs/heads/main");
    run(c, "git push")?;
    for (k, v) in [
        // Lets protocol v0 clients fetch `+<sha>:refs/pipelines/<id>` even for
        // commits that are not a branch tip.
        ("uploadpack.allowReachableSHA1InWant", "true"),
        ("http.receivepack", "false"),
        ("http.uploadpack", "true"),
    ] {
        let mut c = git(data_dir);
        c.arg("-C").arg(&bare).args(["config", k, v]);
        run(c, "git config")?;
    }
    let sha = resolve_branch(data_dir, &bare, "main")?;
    Ok((bare, sha))
}

/// The 40-hex commit a branch points at.
pub fn resolve_branch(home: &Path, bare: &Path, branch: &str) -> anyhow::Result<String> {
    if !validate_ref(branch) {
        bail!("invalid ref {branch:?}");
    }
    let mut c = git(home);
    c.arg("-C")
        .arg(bare)
        .args(["rev-parse", "--verify", "--quiet"])
        .arg(format!("refs/heads/{branch}^{{commit}}"));
    let sha = run(c, "git rev-parse").with_context(|| format!("unknown branch {branch:?}"))?;
    if sha.len() != 40 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("unexpected sha {sha:?} for {branch}");
    }
    Ok(sha)
}

/// A file's content at a commit, `None` if it does not exist there.
pub fn read_file_at(
    home: &Path,
    bare: &Path,
    sha: &str,
    file: &str,
) -> anyhow::Result<Option<String>> {
    let mut c = git(home);
    c.arg("-C")
        .arg(bare)
        .arg("show")
        .arg(format!("{sha}:{file}"));
    let out = c.output().context("cannot run git show")?;
    if !out.status.success() {
        return Ok(None);
    }
    Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// Every file path (blobs, recursively) at a commit.
pub fn list_files(home: &Path, bare: &Path, sha: &str) -> anyhow::Result<Vec<String>> {
    let mut c = git(home);
    c.arg("-C")
        .arg(bare)
        .args(["ls-tree", "-r", "--name-only", "-z"])
        .arg(sha);
    let out = c.output().context("cannot run git ls-tree")?;
    if !out.status.success() {
        bail!("git ls-tree failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .split('\0')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect())
}

// ---------------------------------------------------------------------------
// Smart HTTP
// ---------------------------------------------------------------------------

/// Which git service a request is for.
#[derive(Debug, PartialEq, Eq)]
enum Service {
    InfoRefs,
    UploadPack,
    ReceivePack,
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
                    && crate::api::ct_eq(&j.token, &password)
            });
        if !token_ok || !ps.bare_repo.is_dir() {
            return unauthorized();
        }
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
        assert_eq!(split_git_path("/hello.git/info/refs"), None);
        assert_eq!(split_git_path("/../x.git/info/refs"), None);
        assert_eq!(split_git_path("/group/hello.git/HEAD"), None);
    }

    #[test]
    fn refs_are_validated() {
        assert!(validate_ref("main"));
        assert!(validate_ref("feature/x-1"));
        for bad in [
            "", "-x", "a..b", "a b", "x.lock", "/a", "a/", "a//b", "$(x)",
        ] {
            assert!(!validate_ref(bad), "{bad}");
        }
    }
}
