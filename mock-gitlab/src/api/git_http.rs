//! The route of everything outside `/api/v4`: git over smart HTTP and Git LFS, for the
//! runner's clones and fetches.
//!
//! The runner fetches `repo_url` with the job token as Basic credentials, but
//! git only sends credentials after a `401` carrying `WWW-Authenticate: Basic`,
//! so every unauthenticated request is challenged; only `gitlab-ci-token` plus
//! the token of a job of that project that is currently running is let in.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::Response;

use crate::git::MAX_GIT_BODY;
use crate::git::http::{Service, basic_credentials, plain, run_cgi, split_git_path, unauthorized};
use crate::git::lfs::{MAX_LFS_BATCH_BODY, lfs_batch, lfs_download, lfs_error, request_base};
use crate::git::repos_root;
use crate::instance::Inner;
use crate::state::JobStatus;

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
