//! Git LFS: fixture files stored as pointers (their objects kept per project), and the batch
//! API with the basic transfer that lets jobs download them.

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio_util::io::ReaderStream;

/// Where a project's Git LFS objects live, one file per `sha256` oid.
pub fn lfs_store(data_dir: &Path, path: &str) -> PathBuf {
    data_dir.join("lfs").join(path)
}

/// The first line of every Git LFS pointer file.
pub const LFS_POINTER_VERSION: &str = "version https://git-lfs.github.com/spec/v1";

/// The Git LFS pointer of an object.
pub fn lfs_pointer(oid: &str, size: u64) -> String {
    format!("{LFS_POINTER_VERSION}\noid sha256:{oid}\nsize {size}\n")
}

/// Whether `s` is a Git LFS object id (lowercase sha256 hex).
pub(crate) fn is_oid(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The largest LFS batch request body accepted (a list of oids and sizes).
pub(crate) const MAX_LFS_BATCH_BODY: usize = 4 * 1024 * 1024;

const LFS_MEDIA_TYPE: &str = "application/vnd.git-lfs+json";

/// `http://<host>` as the client addressed us (so download hrefs work from wherever the
/// client is: the host loopback, 10.0.2.2 in a container), else the external URL.
pub(crate) fn request_base(headers: &HeaderMap, external_url: &str) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        })
        .map_or_else(|| external_url.to_string(), |h| format!("http://{h}"))
}

fn lfs_json(status: StatusCode, v: &serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, LFS_MEDIA_TYPE)],
        v.to_string(),
    )
        .into_response()
}

pub(crate) fn lfs_error(status: StatusCode, message: &str) -> Response {
    lfs_json(status, &serde_json::json!({ "message": message }))
}

#[derive(serde::Deserialize)]
struct LfsBatchRequest {
    operation: String,
    #[serde(default)]
    transfers: Option<Vec<String>>,
    objects: Vec<LfsObjectSpec>,
}

#[derive(serde::Deserialize)]
struct LfsObjectSpec {
    oid: String,
    size: u64,
}

/// The batch API for downloads (job tokens read, never write, as in GitLab): each stored
/// object gets a `download` action whose href is GitLab's object path on this server and whose
/// header repeats the request's `Authorization`, so git-lfs needs no second credential lookup;
/// an unknown object gets GitLab's per-object 404 error.
pub(crate) async fn lfs_batch(
    store: &Path,
    base: &str,
    project: &str,
    auth: Option<HeaderValue>,
    body: &[u8],
) -> Response {
    let Ok(req) = serde_json::from_slice::<LfsBatchRequest>(body) else {
        return lfs_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Unable to parse the batch request",
        );
    };
    if req.operation != "download" {
        // GitLab's answer to a job token that tries to upload.
        return lfs_error(
            StatusCode::FORBIDDEN,
            "Access forbidden. Check your access level.",
        );
    }
    if req
        .transfers
        .as_ref()
        .is_some_and(|t| !t.is_empty() && !t.iter().any(|x| x == "basic"))
    {
        return lfs_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "only the basic transfer is supported",
        );
    }
    let auth = auth.and_then(|h| h.to_str().ok().map(str::to_string));
    let mut objects = Vec::with_capacity(req.objects.len());
    for o in req.objects {
        let stored = if is_oid(&o.oid) {
            tokio::fs::metadata(store.join(&o.oid)).await.ok()
        } else {
            None
        };
        let entry = match stored {
            Some(m) if m.len() == o.size => {
                let mut download = serde_json::json!({
                    "href": format!("{base}/{project}.git/gitlab-lfs/objects/{}", o.oid),
                    "expires_in": 3600,
                });
                if let Some(a) = &auth {
                    download["header"] = serde_json::json!({ "Authorization": a });
                }
                serde_json::json!({
                    "oid": o.oid, "size": o.size, "authenticated": true,
                    "actions": { "download": download },
                })
            }
            Some(_) => serde_json::json!({
                "oid": o.oid, "size": o.size,
                "error": { "code": 422, "message": "Object size does not match the stored object" },
            }),
            None => serde_json::json!({
                "oid": o.oid, "size": o.size,
                "error": { "code": 404, "message": "Object does not exist on the server or you don't have permissions to access it" },
            }),
        };
        objects.push(entry);
    }
    lfs_json(
        StatusCode::OK,
        &serde_json::json!({ "transfer": "basic", "objects": objects }),
    )
}

/// An object's bytes, streamed.
pub(crate) async fn lfs_download(path: &Path) -> Response {
    let Ok(file) = tokio::fs::File::open(path).await else {
        return lfs_error(StatusCode::NOT_FOUND, "404 Not Found");
    };
    let len = file.metadata().await.map(|m| m.len()).ok();
    let mut resp = Response::new(Body::from_stream(ReaderStream::new(file)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(n) = len {
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lfs_pointers_follow_the_spec() {
        let oid = "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393";
        assert_eq!(
            lfs_pointer(oid, 12345),
            format!("version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize 12345\n")
        );
    }
}
