//! A subset of GitLab's REST API v4, so test drivers can create projects and
//! pipelines and drive jobs the way they would against a real GitLab.
//!
//! Authentication is GitLab's personal access token: `PRIVATE-TOKEN` header
//! (or `Authorization: Bearer`, or `?private_token=`) equal to the mock's
//! admin token; anything else is 401 `{"message":"401 Unauthorized"}`. A
//! project `:id` is its number or its URL-encoded path (`group%2Fname`).
//!
//! `POST /projects` takes one runnerlab extension, `import_fixture`: a
//! directory *relative to* `Config::fixtures_root` that becomes the project's
//! repository. Paths that leave the root (`..`, absolute, symlinks out) are
//! refused, and without a configured root every import is.
//!
//! Shapes follow GitLab's entities (`Project`, `Ci::Pipeline`, `Ci::Job`) for
//! the fields a driver reads; everything else is left out.

// Helpers fail with the ready HTTP answer so handlers can use `?`; errors are
// the cold path, their size does not matter.
#![allow(clippy::result_large_err)]

use std::path::{Component, Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::instance::{Inner, MockGitlab};
use crate::state::PipelineId;
use crate::state::{
    Job, JobStatus, MergeRequest, Pipeline, ProjectState, RefKind, State as MockState, Variable,
};
use crate::web::rfc3339;
use crate::web::{ct_eq, header_value, json, json_message};

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct AuthQuery {
    private_token: Option<String>,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
}

type Reply = Result<Response, Response>;

/// 401 unless the request carries the admin token.
fn authorize(inner: &Inner, headers: &HeaderMap, q: &AuthQuery) -> Result<(), Response> {
    let bearer = header_value(headers, header::AUTHORIZATION.as_str())
        .and_then(|v| v.strip_prefix("Bearer ").map(str::to_string));
    let token = header_value(headers, "PRIVATE-TOKEN")
        .or(bearer)
        .or_else(|| q.private_token.clone());
    match token {
        Some(t) if ct_eq(&t, &inner.admin_token) => Ok(()),
        _ => Err(json_message(StatusCode::UNAUTHORIZED, "401 Unauthorized")),
    }
}

fn not_found(what: &str) -> Response {
    json_message(StatusCode::NOT_FOUND, &format!("404 {what} Not Found"))
}

/// A project by number or (already percent-decoded) path.
fn find_project<'a>(st: &'a MockState, id: &str) -> Result<&'a ProjectState, Response> {
    let found = match id.parse::<u64>() {
        Ok(n) => st.projects.values().find(|p| p.project.id == n),
        Err(_) => st.projects.get(id),
    };
    found.ok_or_else(|| not_found("Project"))
}

fn find_pipeline<'a>(
    st: &'a MockState,
    project: &ProjectState,
    pid: &str,
) -> Result<&'a Pipeline, Response> {
    pid.parse::<u64>()
        .ok()
        .and_then(|n| st.pipelines.get(&n))
        .filter(|p| p.project == project.project.path)
        .ok_or_else(|| not_found("Pipeline"))
}

fn find_job<'a>(st: &'a MockState, project: &ProjectState, jid: &str) -> Result<&'a Job, Response> {
    jid.parse::<u64>()
        .ok()
        .and_then(|n| st.jobs.get(&n))
        .filter(|j| j.record.project == project.project.path)
        .ok_or_else(|| not_found("Job"))
}

/// Wall-clock time of an `Instant` in the past.
fn wall(i: Instant) -> String {
    rfc3339(SystemTime::now() - i.elapsed())
}

fn project_json(inner: &Inner, p: &ProjectState) -> Value {
    let path = &p.project.path;
    let (namespace, name) = path.rsplit_once('/').unwrap_or(("", path));
    json!({
        "id": p.project.id,
        "name": name,
        "path": name,
        "path_with_namespace": path,
        "name_with_namespace": path.replace('/', " / "),
        "namespace": {"name": namespace, "path": namespace, "full_path": namespace, "kind": "group"},
        "default_branch": "main",
        "visibility": "private",
        "web_url": format!("{}/{path}", inner.external_url),
        "http_url_to_repo": format!("{}/{path}.git", inner.external_url),
    })
}

fn pipeline_json(inner: &Inner, st: &MockState, p: &Pipeline) -> Value {
    let project_id = st.projects.get(&p.project).map_or(0, |ps| ps.project.id);
    let started = p
        .job_ids
        .iter()
        .filter_map(|id| st.jobs.get(id))
        .filter_map(|j| j.record.dispatched_at)
        .min();
    json!({
        "id": p.id.0,
        "iid": p.iid,
        "project_id": project_id,
        "sha": p.sha,
        "ref": p.git_ref,
        "tag": matches!(p.kind, RefKind::Tag { .. }),
        "status": p.status.as_str(),
        "source": p.source,
        "before_sha": "0".repeat(40),
        "created_at": rfc3339(p.created_wall),
        "updated_at": rfc3339(SystemTime::now()),
        "started_at": started.map(wall),
        "finished_at": p.finished_at.map(wall),
        "duration": p.finished_at.zip(started).map(|(f, s)| f.saturating_duration_since(s).as_secs()),
        "yaml_errors": null,
        "web_url": format!("{}/{}/-/pipelines/{}", inner.external_url, p.project, p.id.0),
    })
}

/// GitLab's job status string; `manual` and `canceling` are states of their own there.
fn job_status(j: &Job) -> &'static str {
    if crate::pipeline::is_manual(j) {
        "manual"
    } else if j.record.canceling && j.record.status == JobStatus::Running {
        "canceling"
    } else {
        j.record.status.as_str()
    }
}

fn job_json(inner: &Inner, st: &MockState, j: &Job) -> Value {
    let r = &j.record;
    let p = st.pipelines.get(&r.pipeline_id.0);
    let runner = r.runner_id.and_then(|id| st.runners.get(&id)).map(|rn| {
        json!({"id": rn.record.id, "description": rn.record.description,
                         "active": true, "is_shared": true, "runner_type": "instance_type"})
    });
    let artifacts: Vec<Value> = j
        .artifacts
        .iter()
        .map(|a| {
            json!({"file_type": a.artifact_type, "size": a.bytes.len(),
                        "filename": a.filename, "file_format": a.format})
        })
        .collect();
    let started = r.started_at.or(r.dispatched_at);
    let sha = p.map(|p| p.sha.clone()).unwrap_or_default();
    json!({
        "id": r.id,
        "name": r.name,
        "stage": r.stage,
        "status": job_status(j),
        "ref": p.map(|p| p.git_ref.clone()),
        "tag": p.is_some_and(|p| matches!(p.kind, RefKind::Tag { .. })),
        "allow_failure": r.allow_failure,
        "when": j.spec.when.as_str(),
        "tag_list": j.spec.tags,
        "created_at": wall(r.created_at),
        "started_at": started.map(wall),
        "finished_at": r.finished_wall.map(rfc3339),
        "duration": r.finished_at.zip(started).map(|(f, s)| f.saturating_duration_since(s).as_secs_f64()),
        "queued_duration": r.queued_at.zip(r.dispatched_at).map(|(q, d)| d.saturating_duration_since(q).as_secs_f64()),
        "failure_reason": (r.status == JobStatus::Failed).then(|| r.failure_reason.clone()).flatten(),
        "retried": r.retried,
        "commit": {"id": sha, "short_id": sha.chars().take(8).collect::<String>(),
                   "title": crate::git::COMMIT_MESSAGE.trim()},
        "pipeline": p.map(|p| json!({
            "id": p.id.0, "iid": p.iid, "project_id": st.projects.get(&p.project).map_or(0, |ps| ps.project.id),
            "sha": p.sha, "ref": p.git_ref, "status": p.status.as_str(), "source": p.source,
        })),
        "runner": runner,
        "artifacts": artifacts,
        "web_url": format!("{}/{}/-/jobs/{}", inner.external_url, r.project, r.id),
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct NewProject {
    name: Option<String>,
    path: Option<String>,
    namespace: Option<String>,
    import_fixture: Option<String>,
}

/// `import_fixture` resolved inside the fixtures root, or why not.
fn fixture_dir(root: Option<&FsPath>, rel: &str) -> Result<PathBuf, Response> {
    let Some(root) = root else {
        return Err(json_message(
            StatusCode::FORBIDDEN,
            "403 Forbidden - import_fixture is disabled: the mock has no fixtures root (Config::fixtures_root, --fixtures-root)",
        ));
    };
    let bad = || {
        json(
            StatusCode::BAD_REQUEST,
            &json!({"message": {"import_fixture": ["must be a directory under the fixtures root"]}}),
        )
    };
    // Lexical check first (no `..`, not absolute), then the real path, so a symlink cannot lead out.
    let rel_path = FsPath::new(rel);
    if rel.is_empty()
        || !rel_path
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(bad());
    }
    let root = root.canonicalize().map_err(|_| bad())?;
    let dir = root.join(rel_path).canonicalize().map_err(|_| bad())?;
    if !dir.starts_with(&root) || !dir.is_dir() {
        return Err(bad());
    }
    Ok(dir)
}

/// `POST /projects`.
pub(crate) async fn create_project(
    State(inner): State<Arc<Inner>>,
    Query(q): Query<AuthQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    authorize(&inner, &headers, &q)?;
    let Some(req) = crate::web::parse_body::<NewProject>(&body) else {
        return Err(crate::web::bad_json());
    };
    let Some(name) = req.name.clone().or(req.path.clone()) else {
        return Err(json(
            StatusCode::BAD_REQUEST,
            &json!({"error": "name, path are missing, at least one parameter must be provided"}),
        ));
    };
    let Some(fixture) = req.import_fixture.as_deref() else {
        return Err(json(
            StatusCode::BAD_REQUEST,
            &json!({"error": "import_fixture is missing (mock-gitlab projects come from fixture directories)"}),
        ));
    };
    let dir = fixture_dir(inner.fixtures_root.as_deref(), fixture)?;
    let path = format!(
        "{}/{}",
        req.namespace.as_deref().unwrap_or("root"),
        req.path.as_deref().unwrap_or(&name)
    );
    if let Err(e) = crate::git::validate_project_path(&path) {
        return Err(json(
            StatusCode::BAD_REQUEST,
            &json!({"message": {"path": [e.to_string()]}}),
        ));
    }
    if inner.lock().projects.contains_key(&path) {
        return Err(json(
            StatusCode::BAD_REQUEST,
            &json!({"message": {"name": ["has already been taken"], "path": ["has already been taken"]}}),
        ));
    }
    // git runs in subprocesses: keep it off the async workers.
    let mock = MockGitlab::from_inner(inner.clone());
    let p2 = path.clone();
    let res = tokio::task::spawn_blocking(move || mock.add_project(&p2, &dir)).await;
    match res {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            return Err(json(
                StatusCode::BAD_REQUEST,
                &json!({"message": {"base": [e.to_string()]}}),
            ));
        }
        Err(_) => return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response()),
    }
    let st = inner.lock();
    let p = find_project(&st, &path)?;
    Ok(json(StatusCode::CREATED, &project_json(&inner, p)))
}

/// `GET /projects/:id`.
pub(crate) async fn get_project(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    Query(q): Query<AuthQuery>,
    headers: HeaderMap,
) -> Reply {
    authorize(&inner, &headers, &q)?;
    let st = inner.lock();
    let p = find_project(&st, &id)?;
    Ok(json(StatusCode::OK, &project_json(&inner, p)))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct NewPipeline {
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    variables: Vec<PipelineVariable>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PipelineVariable {
    key: String,
    value: String,
    /// `env_var` (default) or `file`.
    variable_type: Option<String>,
}

/// `POST /projects/:id/pipeline?ref=main`.
pub(crate) async fn create_pipeline(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    Query(q): Query<AuthQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    authorize(&inner, &headers, &q)?;
    let Some(req) = crate::web::parse_body::<NewPipeline>(&body) else {
        return Err(crate::web::bad_json());
    };
    let path = find_project(&inner.lock(), &id)?.project.path.clone();
    let Some(git_ref) = q.git_ref.clone().or(req.git_ref) else {
        return Err(json(
            StatusCode::BAD_REQUEST,
            &json!({"error": "ref is missing"}),
        ));
    };
    let mut vars = Vec::new();
    for v in req.variables {
        let file = match v.variable_type.as_deref() {
            None | Some("env_var") => false,
            Some("file") => true,
            Some(_) => {
                return Err(json(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "variables[variable_type] does not have a valid value"}),
                ));
            }
        };
        if v.key.is_empty() || !v.key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(json(
                StatusCode::BAD_REQUEST,
                &json!({"message": {"base": [format!("variable key {:?} is invalid", v.key)]}}),
            ));
        }
        vars.push(Variable {
            key: v.key,
            value: v.value,
            file,
            ..Variable::default()
        });
    }
    let mock = MockGitlab::from_inner(inner.clone());
    let res = tokio::task::spawn_blocking(move || {
        mock.create_pipeline_from(&path, &git_ref, &vars, "api")
    })
    .await
    .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())?;
    let pid = match res {
        Ok(pid) => pid,
        Err(e) => {
            // GitLab's shape for a pipeline that cannot be created (lint errors, unknown ref).
            let base: Vec<String> = e.diagnostics.iter().map(|d| d.to_string()).collect();
            return Err(json(
                StatusCode::BAD_REQUEST,
                &json!({"message": {"base": base}}),
            ));
        }
    };
    let st = inner.lock();
    let p = st
        .pipelines
        .get(&pid.0)
        .ok_or_else(|| not_found("Pipeline"))?;
    Ok(json(StatusCode::CREATED, &pipeline_json(&inner, &st, p)))
}

/// `GET /projects/:id/pipelines/:pipeline_id`.
pub(crate) async fn get_pipeline(
    State(inner): State<Arc<Inner>>,
    Path((id, pid)): Path<(String, String)>,
    Query(q): Query<AuthQuery>,
    headers: HeaderMap,
) -> Reply {
    authorize(&inner, &headers, &q)?;
    let st = inner.lock();
    let project = find_project(&st, &id)?;
    let p = find_pipeline(&st, project, &pid)?;
    Ok(json(StatusCode::OK, &pipeline_json(&inner, &st, p)))
}

/// `GET /projects/:id/pipelines/:pipeline_id/test_report_summary`: the pipeline's JUnit
/// reports counted per job, in GitLab's shape.
pub(crate) async fn test_report_summary(
    State(inner): State<Arc<Inner>>,
    Path((id, pid)): Path<(String, String)>,
    Query(q): Query<AuthQuery>,
    headers: HeaderMap,
) -> Reply {
    authorize(&inner, &headers, &q)?;
    let pipeline = {
        let st = inner.lock();
        let project = find_project(&st, &id)?;
        find_pipeline(&st, project, &pid)?.id
    };
    let s = MockGitlab::from_inner(inner.clone())
        .test_report_summary(pipeline)
        .unwrap_or_default();
    let suites: Vec<Value> = s
        .suites
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "total_time": t.counts.time,
                "total_count": t.counts.count,
                "success_count": t.counts.success,
                "failed_count": t.counts.failed,
                "skipped_count": t.counts.skipped,
                "error_count": t.counts.error,
                "build_ids": t.build_ids,
                "suite_error": t.suite_error,
            })
        })
        .collect();
    let t = &s.total;
    let suite_error = s.suites.iter().find_map(|x| x.suite_error.clone());
    Ok(json(
        StatusCode::OK,
        &json!({
            "total": {"time": t.time, "count": t.count, "success": t.success, "failed": t.failed,
                      "skipped": t.skipped, "error": t.error, "suite_error": suite_error},
            "test_suites": suites,
        }),
    ))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct JobsQuery {
    private_token: Option<String>,
    include_retried: Option<bool>,
}

/// `GET /projects/:id/pipelines/:pipeline_id/jobs` (retried attempts only
/// with `include_retried=true`, as in GitLab).
pub(crate) async fn pipeline_jobs(
    State(inner): State<Arc<Inner>>,
    Path((id, pid)): Path<(String, String)>,
    Query(q): Query<JobsQuery>,
    headers: HeaderMap,
) -> Reply {
    let auth = AuthQuery {
        private_token: q.private_token.clone(),
        git_ref: None,
    };
    authorize(&inner, &headers, &auth)?;
    let st = inner.lock();
    let project = find_project(&st, &id)?;
    let p = find_pipeline(&st, project, &pid)?;
    let jobs: Vec<Value> = p
        .job_ids
        .iter()
        .filter_map(|j| st.jobs.get(j))
        .filter(|j| q.include_retried.unwrap_or(false) || !j.record.retried)
        .map(|j| job_json(&inner, &st, j))
        .collect();
    Ok(json(StatusCode::OK, &jobs))
}

/// `GET /projects/:id/jobs/:job_id`.
pub(crate) async fn get_job(
    State(inner): State<Arc<Inner>>,
    Path((id, jid)): Path<(String, String)>,
    Query(q): Query<AuthQuery>,
    headers: HeaderMap,
) -> Reply {
    authorize(&inner, &headers, &q)?;
    let st = inner.lock();
    let project = find_project(&st, &id)?;
    let j = find_job(&st, project, &jid)?;
    Ok(json(StatusCode::OK, &job_json(&inner, &st, j)))
}

/// `GET /projects/:id/jobs/:job_id/trace`: the raw log as the runner sent it.
pub(crate) async fn get_trace(
    State(inner): State<Arc<Inner>>,
    Path((id, jid)): Path<(String, String)>,
    Query(q): Query<AuthQuery>,
    headers: HeaderMap,
) -> Reply {
    authorize(&inner, &headers, &q)?;
    let st = inner.lock();
    let project = find_project(&st, &id)?;
    let j = find_job(&st, project, &jid)?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        j.record.trace.clone(),
    )
        .into_response())
}

/// `GET /projects/:id/jobs/:job_id/artifacts`: the job's archive.
pub(crate) async fn get_artifacts(
    State(inner): State<Arc<Inner>>,
    Path((id, jid)): Path<(String, String)>,
    Query(q): Query<AuthQuery>,
    headers: HeaderMap,
) -> Reply {
    authorize(&inner, &headers, &q)?;
    let st = inner.lock();
    let project = find_project(&st, &id)?;
    let j = find_job(&st, project, &jid)?;
    let Some(a) = j.artifacts.iter().find(|a| a.artifact_type == "archive") else {
        return Err(json_message(StatusCode::NOT_FOUND, "404 Not found"));
    };
    let filename = a.filename.replace(['"', '\\', '\r', '\n'], "_");
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        a.bytes.clone(),
    )
        .into_response())
}

/// Which job action a POST asks for.
#[derive(Clone, Copy)]
enum Action {
    Cancel,
    Retry,
    Play,
}

async fn job_action(
    inner: Arc<Inner>,
    id: String,
    jid: String,
    q: AuthQuery,
    headers: HeaderMap,
    action: Action,
) -> Reply {
    authorize(&inner, &headers, &q)?;
    let job_id = {
        let st = inner.lock();
        let project = find_project(&st, &id)?;
        find_job(&st, project, &jid)?.record.id
    };
    let mock = MockGitlab::from_inner(inner.clone());
    let shown = match action {
        Action::Cancel => {
            // GitLab answers a job that cannot be canceled with the job unchanged.
            let cancelable = mock
                .job(job_id)
                .is_some_and(|j| !j.status.is_complete() && !j.canceling);
            if cancelable {
                mock.cancel_job(job_id, true).map_err(|e| {
                    json_message(StatusCode::FORBIDDEN, &format!("403 Forbidden - {e}"))
                })?;
            }
            job_id
        }
        Action::Retry => mock.retry_job(job_id).map_err(|_| {
            json_message(
                StatusCode::FORBIDDEN,
                "403 Forbidden - Job is not retryable",
            )
        })?,
        Action::Play => {
            mock.play_job(job_id).map_err(|_| {
                json_message(StatusCode::BAD_REQUEST, "400 Bad request - Unplayable Job")
            })?;
            job_id
        }
    };
    let st = inner.lock();
    let j = st.jobs.get(&shown).ok_or_else(|| not_found("Job"))?;
    Ok(json(StatusCode::CREATED, &job_json(&inner, &st, j)))
}

/// `POST /projects/:id/jobs/:job_id/cancel` (graceful, like GitLab with a
/// runner that supports it: a running job shows `canceling` until the runner ends it).
pub(crate) async fn cancel_job(
    State(inner): State<Arc<Inner>>,
    Path((id, jid)): Path<(String, String)>,
    Query(q): Query<AuthQuery>,
    headers: HeaderMap,
) -> Reply {
    job_action(inner, id, jid, q, headers, Action::Cancel).await
}

/// `POST /projects/:id/jobs/:job_id/retry`: answers with the *new* job.
pub(crate) async fn retry_job(
    State(inner): State<Arc<Inner>>,
    Path((id, jid)): Path<(String, String)>,
    Query(q): Query<AuthQuery>,
    headers: HeaderMap,
) -> Reply {
    job_action(inner, id, jid, q, headers, Action::Retry).await
}

/// `POST /projects/:id/jobs/:job_id/play`: a manual job becomes pending.
pub(crate) async fn play_job(
    State(inner): State<Arc<Inner>>,
    Path((id, jid)): Path<(String, String)>,
    Query(q): Query<AuthQuery>,
    headers: HeaderMap,
) -> Reply {
    job_action(inner, id, jid, q, headers, Action::Play).await
}

/// `POST /projects/:id/pipelines/:pipeline_id/cancel`.
pub(crate) async fn cancel_pipeline(
    State(inner): State<Arc<Inner>>,
    Path((id, pid)): Path<(String, String)>,
    Query(q): Query<AuthQuery>,
    headers: HeaderMap,
) -> Reply {
    authorize(&inner, &headers, &q)?;
    let pid = {
        let st = inner.lock();
        let project = find_project(&st, &id)?;
        find_pipeline(&st, project, &pid)?.id
    };
    let mock = MockGitlab::from_inner(inner.clone());
    if !mock.pipeline(pid).status.is_complete() {
        mock.cancel_pipeline(PipelineId(pid.0), true)
            .map_err(|e| json_message(StatusCode::FORBIDDEN, &format!("403 Forbidden - {e}")))?;
    }
    let st = inner.lock();
    let p = st
        .pipelines
        .get(&pid.0)
        .ok_or_else(|| not_found("Pipeline"))?;
    Ok(json(StatusCode::CREATED, &pipeline_json(&inner, &st, p)))
}

fn merge_request_json(inner: &Inner, p: &ProjectState, mr: &MergeRequest) -> Value {
    let path = &p.project.path;
    json!({
        "id": mr.id,
        "iid": mr.iid,
        "project_id": p.project.id,
        "title": mr.title,
        "state": "opened",
        "source_branch": mr.source_branch,
        "target_branch": mr.target_branch,
        "source_project_id": p.project.id,
        "target_project_id": p.project.id,
        "sha": mr.sha,
        "merge_commit_sha": null,
        "diff_refs": {"base_sha": mr.target_sha, "head_sha": mr.sha, "start_sha": mr.target_sha},
        "draft": false,
        "web_url": format!("{}/{path}/-/merge_requests/{}", inner.external_url, mr.iid),
    })
}

fn find_merge_request<'a>(p: &'a ProjectState, iid: &str) -> Result<&'a MergeRequest, Response> {
    iid.parse::<u64>()
        .ok()
        .and_then(|n| p.project.merge_requests.iter().find(|m| m.iid == n))
        .ok_or_else(|| not_found("Merge Request"))
}

/// `GET /projects/:id/merge_requests/:iid`.
pub(crate) async fn get_merge_request(
    State(inner): State<Arc<Inner>>,
    Path((id, iid)): Path<(String, String)>,
    Query(q): Query<AuthQuery>,
    headers: HeaderMap,
) -> Reply {
    authorize(&inner, &headers, &q)?;
    let st = inner.lock();
    let p = find_project(&st, &id)?;
    let mr = find_merge_request(p, &iid)?;
    Ok(json(StatusCode::OK, &merge_request_json(&inner, p, mr)))
}

/// `POST /projects/:id/merge_requests/:iid/pipelines`: a merge request pipeline (source
/// `merge_request_event`, ref `refs/merge-requests/<iid>/head`), as GitLab's "Run pipeline"
/// button on a merge request.
pub(crate) async fn create_merge_request_pipeline(
    State(inner): State<Arc<Inner>>,
    Path((id, iid)): Path<(String, String)>,
    Query(q): Query<AuthQuery>,
    headers: HeaderMap,
) -> Reply {
    authorize(&inner, &headers, &q)?;
    let (path, iid) = {
        let st = inner.lock();
        let p = find_project(&st, &id)?;
        (p.project.path.clone(), find_merge_request(p, &iid)?.iid)
    };
    let mock = MockGitlab::from_inner(inner.clone());
    let res = tokio::task::spawn_blocking(move || mock.create_merge_request_pipeline(&path, iid))
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())?;
    let pid = res.map_err(|e| {
        let base: Vec<String> = e.diagnostics.iter().map(|d| d.to_string()).collect();
        json(StatusCode::BAD_REQUEST, &json!({"message": {"base": base}}))
    })?;
    let st = inner.lock();
    let p = st
        .pipelines
        .get(&pid.0)
        .ok_or_else(|| not_found("Pipeline"))?;
    Ok(json(StatusCode::CREATED, &pipeline_json(&inner, &st, p)))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct NewTag {
    tag_name: Option<String>,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    message: Option<String>,
    private_token: Option<String>,
}

/// `POST /projects/:id/repository/tags` (`tag_name`, `ref`, optional `message` for an
/// annotated tag; in the query or a JSON body, as GitLab accepts both).
pub(crate) async fn create_tag(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    Query(q): Query<NewTag>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let auth = AuthQuery {
        private_token: q.private_token.clone(),
        git_ref: None,
    };
    authorize(&inner, &headers, &auth)?;
    let b = if body.is_empty() {
        NewTag::default()
    } else {
        crate::web::parse_body::<NewTag>(&body).ok_or_else(crate::web::bad_json)?
    };
    let (Some(name), Some(git_ref)) = (q.tag_name.or(b.tag_name), q.git_ref.or(b.git_ref)) else {
        return Err(json(
            StatusCode::BAD_REQUEST,
            &json!({"error": "tag_name, ref are missing, both must be provided"}),
        ));
    };
    let message = q.message.or(b.message).filter(|m| !m.is_empty());
    let path = find_project(&inner.lock(), &id)?.project.path.clone();
    let mock = MockGitlab::from_inner(inner.clone());
    let (n2, m2) = (name.clone(), message.clone());
    let res =
        tokio::task::spawn_blocking(move || mock.create_tag(&path, &n2, &git_ref, m2.as_deref()))
            .await
            .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())?;
    let sha = res.map_err(|e| json_message(StatusCode::BAD_REQUEST, &format!("{e:#}")))?;
    Ok(json(
        StatusCode::CREATED,
        &json!({
            "name": name,
            "message": message,
            "target": sha,
            "commit": {"id": sha, "short_id": sha.chars().take(8).collect::<String>()},
            "protected": false,
        }),
    ))
}
