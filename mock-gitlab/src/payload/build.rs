//! The payload of one job, built from its spec and the pipeline, project and runner it runs
//! for.

use super::job::{
    DEFAULT_GIT_DEPTH, Dependency, FAILURE_REASONS, Features, GitInfo, Image, JobInfo, JobPayload,
    JobVariable, RunnerInfo, SERVER_REVISION, SERVER_VERSION, Step, ZERO_SHA,
};
use super::variables::{expand_references, host_and_port, ref_variables, slugify};
use crate::git::{COMMIT_AUTHOR_EMAIL, COMMIT_AUTHOR_NAME, COMMIT_DATE};
use crate::pipeline::keywords::REPORT_TYPES;
use crate::pipeline::model::{ArtifactsSpec, CacheKey, CacheSpec, JobSpec, Variable};
use crate::state::RefKind;

/// `artifacts[]` entries as GitLab's `BuildRunnerPresenter#artifacts` makes
/// them: the archive (if there are paths or untracked) then one per report.
pub fn artifact_entries(a: &ArtifactsSpec) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    if !a.paths.is_empty() || a.untracked {
        out.push(serde_json::json!({
            "name": a.name,
            "untracked": a.untracked,
            "paths": a.paths,
            "exclude": a.exclude,
            "when": a.when,
            "artifact_type": "archive",
            "artifact_format": "zip",
            "expire_in": a.expire_in,
        }));
    }
    for (kind, paths) in &a.reports {
        let Some((_, format, file)) = REPORT_TYPES.iter().find(|(t, _, _)| t == kind) else {
            continue;
        };
        out.push(serde_json::json!({
            "name": file,
            "untracked": false,
            "paths": paths,
            "when": "always",
            "artifact_type": kind,
            "artifact_format": format,
            "expire_in": a.expire_in,
        }));
    }
    out
}

/// `cache[]` entries. GitLab's "separate caches for protected branches"
/// (on by default) suffixes keys and fallback keys with `-protected` on
/// protected refs, which every mock ref is.
pub fn cache_entries(caches: &[CacheSpec]) -> Vec<serde_json::Value> {
    caches
        .iter()
        .map(|c| {
            let key = match &c.key {
                CacheKey::Plain(k) => k.clone(),
                // Resolved at pipeline creation; kept for completeness.
                CacheKey::Files { prefix, .. } => prefix.clone().unwrap_or_else(|| "default".into()),
            };
            serde_json::json!({
                "key": format!("{key}-protected"),
                "untracked": c.untracked,
                "policy": c.policy,
                "paths": c.paths,
                "when": c.when,
                "fallback_keys": c.fallback_keys.iter().map(|k| format!("{k}-protected")).collect::<Vec<_>>(),
            })
        })
        .collect()
}

/// Everything needed to build one payload.
pub struct PayloadContext<'a> {
    pub job_id: u64,
    pub job_token: &'a str,
    pub spec: &'a JobSpec,
    pub pipeline_variables: &'a [Variable],
    pub pipeline_id: u64,
    pub pipeline_iid: u64,
    pub pipeline_created_at: &'a str,
    /// `CI_PIPELINE_SOURCE`: `push`, or `api` for pipelines made through the REST API.
    pub pipeline_source: &'a str,
    pub job_started_at: &'a str,
    pub project_id: u64,
    pub project_path: &'a str,
    /// The branch, the tag, or `refs/merge-requests/<iid>/head`.
    pub git_ref: &'a str,
    pub kind: &'a RefKind,
    pub sha: &'a str,
    pub commit_message: &'a str,
    /// `http://host:port`, what the runner was given.
    pub external_url: &'a str,
    pub runner_id: u64,
    pub runner_description: &'a str,
    pub runner_tags: &'a [String],
    pub time_in_queue_s: u64,
    /// Project CI/CD variables; sent after the YAML ones, so they win.
    pub project_variables: &'a [crate::state::Variable],
    pub dependencies: Vec<Dependency>,
}

/// `git_info.refspecs` as GitLab's `Ci::BuildRunnerPresenter#refspecs` makes them: the
/// pipeline's persistent ref first; with a depth, the branch's or the tag's own refspec (none
/// for a merge request pipeline: the persistent ref carries its commit); without a depth, every
/// branch and tag.
pub fn refspecs(
    kind: &RefKind,
    git_ref: &str,
    sha: &str,
    pipeline_id: u64,
    depth: u32,
) -> Vec<String> {
    let mut specs = vec![format!("+{sha}:refs/pipelines/{pipeline_id}")];
    if depth > 0 {
        match kind {
            RefKind::Branch => specs.push(format!(
                "+refs/heads/{git_ref}:refs/remotes/origin/{git_ref}"
            )),
            RefKind::Tag { .. } => specs.push(format!("+refs/tags/{git_ref}:refs/tags/{git_ref}")),
            RefKind::MergeRequest(_) => {}
        }
    } else {
        specs.push("+refs/heads/*:refs/remotes/origin/*".into());
        specs.push("+refs/tags/*:refs/tags/*".into());
    }
    specs
}

/// Build the payload GitLab would send for this job.
pub fn build(cx: &PayloadContext<'_>) -> JobPayload {
    let spec = cx.spec;
    let (host, port) = host_and_port(cx.external_url);
    let project_name = cx
        .project_path
        .rsplit('/')
        .next()
        .unwrap_or(cx.project_path)
        .to_string();
    let namespace = cx
        .project_path
        .rsplit_once('/')
        .map(|(ns, _)| ns.to_string())
        .unwrap_or_default();
    let root_namespace = namespace.split('/').next().unwrap_or("").to_string();
    let project_url = format!("{}/{}", cx.external_url, cx.project_path);
    let repo_url = {
        let without_scheme = cx
            .external_url
            .strip_prefix("http://")
            .unwrap_or(cx.external_url);
        format!(
            "http://gitlab-ci-token:{}@{}/{}.git",
            cx.job_token, without_scheme, cx.project_path
        )
    };

    // Pipeline then job variables; GitLab lets later entries win.
    let yaml_vars: Vec<&Variable> = cx
        .pipeline_variables
        .iter()
        .chain(spec.variables.iter())
        .collect();
    let depth = cx
        .project_variables
        .iter()
        .rev()
        .find(|v| v.key == "GIT_DEPTH")
        .map(|v| v.value.clone())
        .or_else(|| {
            yaml_vars
                .iter()
                .rev()
                .find(|v| v.key == "GIT_DEPTH")
                .map(|v| v.value.clone())
        })
        .map(|v| v.trim().parse::<u32>().unwrap_or(0))
        .unwrap_or(DEFAULT_GIT_DEPTH);

    let short_sha: String = cx.sha.chars().take(8).collect();
    let runner_tags = serde_json::to_string(cx.runner_tags).unwrap_or_else(|_| "[]".into());
    let registry = format!("{host}:5050");
    let image_path = format!("{registry}/{}", cx.project_path.to_lowercase());

    fn p(key: &str, value: impl Into<String>) -> JobVariable {
        JobVariable::public(key, value)
    }
    let mut variables = vec![
        p("CI_PIPELINE_ID", cx.pipeline_id.to_string()),
        p(
            "CI_PIPELINE_URL",
            format!("{project_url}/-/pipelines/{}", cx.pipeline_id),
        ),
        p("CI_JOB_ID", cx.job_id.to_string()),
        p("CI_JOB_URL", format!("{project_url}/-/jobs/{}", cx.job_id)),
        JobVariable::secret("CI_JOB_TOKEN", cx.job_token),
        p("CI_JOB_STARTED_AT", cx.job_started_at),
        JobVariable::secret("CI_BUILD_TOKEN", cx.job_token),
        p("CI_REGISTRY_USER", "gitlab-ci-token"),
        JobVariable::secret("CI_REGISTRY_PASSWORD", cx.job_token),
        JobVariable {
            public: false,
            masked: false,
            ..p("CI_REPOSITORY_URL", repo_url.clone())
        },
        p("CI_DEPENDENCY_PROXY_USER", "gitlab-ci-token"),
        JobVariable::secret("CI_DEPENDENCY_PROXY_PASSWORD", cx.job_token),
        p("CI_JOB_NAME", spec.name.clone()),
        p("CI_JOB_NAME_SLUG", slugify(&spec.name)),
        p("CI_JOB_STAGE", spec.stage.clone()),
        p(
            "CI_NODE_TOTAL",
            spec.node.map(|(_, n)| n).unwrap_or(1).to_string(),
        ),
        p("CI", "true"),
        p("GITLAB_CI", "true"),
        p("CI_SERVER_FQDN", host.clone()),
        p("CI_SERVER_URL", cx.external_url),
        p("CI_SERVER_HOST", host.clone()),
        p("CI_SERVER_PORT", port.clone()),
        p("CI_SERVER_PROTOCOL", "http"),
        p("CI_SERVER_SHELL_SSH_HOST", host.clone()),
        p("CI_SERVER_SHELL_SSH_PORT", "22"),
        p("CI_SERVER_NAME", "GitLab"),
        p("CI_SERVER_VERSION", SERVER_VERSION),
        p("CI_SERVER_VERSION_MAJOR", "18"),
        p("CI_SERVER_VERSION_MINOR", "11"),
        p("CI_SERVER_VERSION_PATCH", "0"),
        p("CI_SERVER_REVISION", SERVER_REVISION),
        p("GITLAB_FEATURES", ""),
        p("CI_PROJECT_ID", cx.project_id.to_string()),
        p("CI_PROJECT_NAME", project_name.clone()),
        p("CI_PROJECT_TITLE", project_name.clone()),
        p("CI_PROJECT_DESCRIPTION", ""),
        p("CI_PROJECT_PATH", cx.project_path),
        p("CI_PROJECT_PATH_SLUG", slugify(cx.project_path)),
        p("CI_PROJECT_NAMESPACE", namespace.clone()),
        p("CI_PROJECT_NAMESPACE_SLUG", slugify(&namespace)),
        p("CI_PROJECT_NAMESPACE_ID", "1"),
        p("CI_PROJECT_ROOT_NAMESPACE", root_namespace),
        p("CI_PROJECT_URL", project_url.clone()),
        p("CI_PROJECT_VISIBILITY", "private"),
        p("CI_PROJECT_REPOSITORY_LANGUAGES", ""),
        p("CI_PROJECT_CLASSIFICATION_LABEL", ""),
        p("CI_DEFAULT_BRANCH", "main"),
        p("CI_CONFIG_PATH", ".gitlab-ci.yml"),
        p("CI_PAGES_DOMAIN", "example.com"),
        p("CI_PAGES_URL", ""),
        p("CI_API_V4_URL", format!("{}/api/v4", cx.external_url)),
        p(
            "CI_API_GRAPHQL_URL",
            format!("{}/api/graphql", cx.external_url),
        ),
        p("CI_REGISTRY", registry),
        p("CI_REGISTRY_IMAGE", image_path),
        p("CI_DEPENDENCY_PROXY_SERVER", format!("{host}:{port}")),
        p(
            "CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX",
            format!("{host}:{port}/{namespace}/dependency_proxy/containers"),
        ),
        p(
            "CI_DEPENDENCY_PROXY_DIRECT_GROUP_IMAGE_PREFIX",
            format!("{host}:{port}/{namespace}/dependency_proxy/containers"),
        ),
        p("CI_PIPELINE_IID", cx.pipeline_iid.to_string()),
        p("CI_PIPELINE_SOURCE", cx.pipeline_source),
        p("CI_PIPELINE_CREATED_AT", cx.pipeline_created_at),
        p("CI_PIPELINE_NAME", ""),
        p("CI_COMMIT_SHA", cx.sha),
        p("CI_COMMIT_SHORT_SHA", short_sha),
        p("CI_COMMIT_BEFORE_SHA", ZERO_SHA),
    ];
    variables.extend(
        ref_variables(
            cx.kind,
            cx.git_ref,
            cx.project_id,
            cx.project_path,
            &project_url,
        )
        .into_iter()
        .map(|(k, v)| p(k, v)),
    );
    variables.extend([
        p("CI_COMMIT_MESSAGE", cx.commit_message),
        p(
            "CI_COMMIT_TITLE",
            cx.commit_message.lines().next().unwrap_or(""),
        ),
        p("CI_COMMIT_DESCRIPTION", ""),
        p("CI_COMMIT_REF_PROTECTED", "true"),
        // GitLab formats this with an explicit offset.
        p("CI_COMMIT_TIMESTAMP", COMMIT_DATE.replace('Z', "+00:00")),
        p(
            "CI_COMMIT_AUTHOR",
            format!("{} <{}>", COMMIT_AUTHOR_NAME, COMMIT_AUTHOR_EMAIL),
        ),
        p("CI_RUNNER_ID", cx.runner_id.to_string()),
        p("CI_RUNNER_DESCRIPTION", cx.runner_description),
        p("CI_RUNNER_TAGS", runner_tags),
        p("GITLAB_USER_ID", "1"),
        p("GITLAB_USER_EMAIL", COMMIT_AUTHOR_EMAIL),
        p("GITLAB_USER_LOGIN", "root"),
        p("GITLAB_USER_NAME", "Administrator"),
    ]);
    if let Some((i, _)) = spec.node {
        variables.push(p("CI_NODE_INDEX", i.to_string()));
    }
    for v in yaml_vars {
        variables.push(JobVariable {
            raw: v.raw,
            ..p(&v.key, v.value.clone())
        });
    }
    for v in cx.project_variables {
        variables.push(JobVariable {
            key: v.key.clone(),
            value: v.value.clone(),
            public: false,
            masked: v.masked,
            file: v.file,
            raw: v.raw,
        });
    }

    expand_references(&mut variables);

    let mut script = spec.before_script.clone();
    script.extend(spec.script.iter().cloned());
    let mut steps = vec![Step {
        name: "script".into(),
        script,
        timeout: spec.timeout_s,
        when: "on_success".into(),
        allow_failure: false,
    }];
    if !spec.after_script.is_empty() {
        steps.push(Step {
            name: "after_script".into(),
            script: spec.after_script.clone(),
            timeout: spec.timeout_s,
            when: "always".into(),
            allow_failure: true,
        });
    }

    JobPayload {
        id: cx.job_id,
        token: cx.job_token.to_string(),
        // GitLab's project default is "git fetch".
        allow_git_fetch: true,
        job_info: JobInfo {
            id: cx.job_id,
            name: spec.name.clone(),
            stage: spec.stage.clone(),
            pipeline_id: cx.pipeline_id,
            project_id: cx.project_id,
            project_name,
            project_full_path: cx.project_path.to_string(),
            instance_id: "1".into(),
            instance_uuid: "00000000-0000-4000-8000-000000000001".into(),
            namespace_id: 1,
            root_namespace_id: 1,
            organization_id: 1,
            user_id: 1,
            scoped_user_id: None,
            project_jobs_running_on_instance_runners_count: "0".into(),
            time_in_queue_seconds: cx.time_in_queue_s,
            queue_size: 0,
            queue_depth: 0,
        },
        git_info: GitInfo {
            repo_url,
            git_ref: cx.git_ref.to_string(),
            sha: cx.sha.to_string(),
            before_sha: ZERO_SHA.into(),
            // GitLab's `ref_type` knows tags and branches only; a merge request is `branch`.
            ref_type: match cx.kind {
                RefKind::Tag { .. } => "tag",
                _ => "branch",
            }
            .into(),
            refspecs: refspecs(cx.kind, cx.git_ref, cx.sha, cx.pipeline_id, depth),
            depth,
            repo_object_format: "sha1".into(),
            protected: true,
        },
        runner_info: RunnerInfo {
            uuid: format!("6d6f636b-0000-4000-8000-{:012x}", cx.runner_id),
            timeout: spec.timeout_s,
            runner_session_url: None,
        },
        variables,
        steps,
        image: spec.image.as_ref().map(Image::from),
        services: spec.services.iter().map(Image::from).collect(),
        artifacts: spec
            .artifacts
            .as_ref()
            .map(artifact_entries)
            .unwrap_or_default(),
        cache: cache_entries(&spec.cache),
        credentials: Vec::new(),
        dependencies: cx.dependencies.clone(),
        hooks: Vec::new(),
        features: Features {
            trace_sections: true,
            failure_reasons: FAILURE_REASONS.iter().map(|s| s.to_string()).collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::ArtifactsFile;
    use crate::pipeline::lint::Pos;
    use crate::pipeline::model::{AllowFailure, ImageSpec, When};

    fn sample() -> JobPayload {
        let spec = JobSpec {
            name: "hello world".into(),
            stage: "test".into(),
            before_script: vec!["echo before".into()],
            script: vec!["echo hi".into()],
            after_script: vec!["echo after".into()],
            variables: vec![Variable {
                key: "GIT_DEPTH".into(),
                value: "5".into(),
                raw: false,
            }],
            image: Some(ImageSpec {
                name: "alpine".into(),
                pull_policy: Some(vec!["always".into()]),
                docker_user: Some("1000".into()),
                ..ImageSpec::default()
            }),
            timeout_s: 10,
            tags: vec![],
            allow_failure: AllowFailure::default(),
            when: When::OnSuccess,
            pos: Pos::default(),
            services: vec![ImageSpec {
                name: "postgres:16".into(),
                alias: Some("db,pg".into()),
                command: Some(vec!["postgres".into(), "-c".into(), "fsync=off".into()]),
                variables: vec![Variable {
                    key: "POSTGRES_PASSWORD".into(),
                    value: "x".into(),
                    raw: false,
                }],
                ..ImageSpec::default()
            }],
            artifacts: Some(ArtifactsSpec {
                paths: vec!["out/".into()],
                when: "on_success".into(),
                expire_in: Some("1 week".into()),
                reports: vec![("junit".into(), vec!["report.xml".into()])],
                ..ArtifactsSpec::default()
            }),
            cache: vec![CacheSpec {
                key: CacheKey::Plain("deps".into()),
                paths: vec!["vendor/".into()],
                untracked: false,
                policy: "pull-push".into(),
                when: "on_success".into(),
                fallback_keys: vec!["main".into()],
            }],
            dependencies: None,
            needs: None,
            retry: Default::default(),
            interruptible: false,
            rules: None,
            node: Some((2, 3)),
            base_name: "hello world".into(),
            start_in_s: None,
        };
        let project_vars = vec![crate::state::Variable {
            key: "SECRET".into(),
            value: "s3cr3t-value".into(),
            masked: true,
            file: true,
            ..Default::default()
        }];
        let globals = vec![Variable {
            key: "RAW".into(),
            value: "$X".into(),
            raw: true,
        }];
        build(&PayloadContext {
            pipeline_source: "push",
            job_id: 1001,
            job_token: "glcbt-secret",
            spec: &spec,
            pipeline_variables: &globals,
            pipeline_id: 7,
            pipeline_iid: 1,
            pipeline_created_at: "2026-01-01T00:00:00Z",
            job_started_at: "2026-01-01T00:00:01Z",
            project_id: 3,
            project_path: "group/hello",
            git_ref: "main",
            kind: &RefKind::Branch,
            sha: "0123456789abcdef0123456789abcdef01234567",
            commit_message: crate::git::COMMIT_MESSAGE,
            external_url: "http://10.0.2.2:8080",
            runner_id: 4,
            runner_description: "r",
            runner_tags: &["a".to_string()],
            time_in_queue_s: 0,
            project_variables: &project_vars,
            dependencies: vec![Dependency {
                id: 1000,
                name: "build".into(),
                token: "glcbt-secret".into(),
                artifacts_file: ArtifactsFile {
                    filename: "artifacts.zip".into(),
                    size: 123,
                },
            }],
        })
    }

    fn walk(v: &serde_json::Value, path: &str, f: &mut dyn FnMut(&str, &serde_json::Value)) {
        f(path, v);
        match v {
            serde_json::Value::Object(m) => {
                for (k, c) in m {
                    walk(c, &format!("{path}.{k}"), f);
                }
            }
            serde_json::Value::Array(a) => {
                for (i, c) in a.iter().enumerate() {
                    walk(c, &format!("{path}[{i}]"), f);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn no_floats_and_no_forbidden_keys() {
        let v = serde_json::to_value(sample()).unwrap();
        let text = serde_json::to_string(&v).unwrap();
        walk(&v, "$", &mut |path, node| {
            if let serde_json::Value::Number(n) = node {
                assert!(n.is_u64() || n.is_i64(), "{path} is not an integer: {n}");
            }
            if let serde_json::Value::Object(m) = node {
                for bad in ["run", "inputs", "secrets"] {
                    assert!(!m.contains_key(bad), "{path} has key {bad}");
                }
            }
        });
        assert!(!text.contains("\"run\""));
        assert!(!text.contains("\"inputs\""));
        assert!(!text.contains("\"secrets\""));
        assert!(!text.contains("3600.0"));
        // Specific type traps.
        assert!(v["job_info"]["project_jobs_running_on_instance_runners_count"].is_string());
        assert!(v["image"]["pull_policy"].is_array());
        assert!(v["id"].is_u64());
        assert!(v["runner_info"]["timeout"].is_u64());
        assert!(v["steps"][0]["timeout"].is_u64());
    }

    #[test]
    fn payload_content() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(
            v["git_info"]["repo_url"],
            "http://gitlab-ci-token:glcbt-secret@10.0.2.2:8080/group/hello.git"
        );
        assert_eq!(v["git_info"]["depth"], 5);
        assert_eq!(
            v["git_info"]["refspecs"][0],
            "+0123456789abcdef0123456789abcdef01234567:refs/pipelines/7"
        );
        assert_eq!(
            v["git_info"]["refspecs"][1],
            "+refs/heads/main:refs/remotes/origin/main"
        );
        assert_eq!(
            v["steps"][0]["script"],
            serde_json::json!(["echo before", "echo hi"])
        );
        assert_eq!(v["steps"][1]["name"], "after_script");
        let vars = v["variables"].as_array().unwrap();
        let get = |k: &str| vars.iter().rev().find(|x| x["key"] == k).unwrap().clone();
        assert_eq!(get("CI_JOB_TOKEN")["masked"], true);
        assert_eq!(get("CI_JOB_TOKEN")["public"], false);
        assert_eq!(get("CI_SERVER_HOST")["value"], "10.0.2.2");
        assert_eq!(get("CI_SERVER_PORT")["value"], "8080");
        assert_eq!(get("CI_PROJECT_NAMESPACE")["value"], "group");
        assert_eq!(get("CI_JOB_NAME_SLUG")["value"], "hello-world");
        assert_eq!(get("RAW")["raw"], true);
        assert!(get("CI_JOB_ID").get("raw").is_none());
        assert_eq!(
            v["features"]["failure_reasons"].as_array().unwrap().len(),
            37
        );
        assert_eq!(get("CI_NODE_INDEX")["value"], "2");
        assert_eq!(get("CI_NODE_TOTAL")["value"], "3");
        assert_eq!(get("SECRET")["masked"], true);
        assert_eq!(get("SECRET")["file"], true);
    }

    #[test]
    fn refspecs_per_ref_kind_and_depth() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let persistent = format!("+{sha}:refs/pipelines/7");
        let mr = RefKind::MergeRequest(crate::state::MergeRequest {
            id: 501,
            iid: 1,
            title: "X".into(),
            source_branch: "x".into(),
            target_branch: "main".into(),
            sha: sha.into(),
            target_sha: sha.into(),
            merge_sha: sha.into(),
        });
        let tag = RefKind::Tag { message: None };
        assert_eq!(
            refspecs(&RefKind::Branch, "main", sha, 7, 20),
            [
                persistent.clone(),
                "+refs/heads/main:refs/remotes/origin/main".into()
            ]
        );
        assert_eq!(
            refspecs(&tag, "v1", sha, 7, 20),
            [persistent.clone(), "+refs/tags/v1:refs/tags/v1".into()]
        );
        assert_eq!(
            refspecs(&mr, "refs/merge-requests/1/head", sha, 7, 20),
            vec![persistent.clone()]
        );
        for kind in [RefKind::Branch, tag, mr] {
            assert_eq!(
                refspecs(&kind, "main", sha, 7, 0),
                [
                    persistent.clone(),
                    "+refs/heads/*:refs/remotes/origin/*".into(),
                    "+refs/tags/*:refs/tags/*".into()
                ]
            );
        }
    }

    #[test]
    fn container_fields() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["image"]["name"], "alpine");
        assert_eq!(v["image"]["executor_opts"]["docker"]["user"], "1000");
        assert!(v["image"].get("alias").is_none());
        let svc = &v["services"][0];
        assert_eq!(svc["name"], "postgres:16");
        assert_eq!(svc["alias"], "db,pg");
        assert_eq!(
            svc["command"],
            serde_json::json!(["postgres", "-c", "fsync=off"])
        );
        assert_eq!(svc["variables"][0]["key"], "POSTGRES_PASSWORD");
        assert!(svc["ports"].is_array());
        let a = v["artifacts"].as_array().unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0]["artifact_type"], "archive");
        assert_eq!(a[0]["artifact_format"], "zip");
        assert_eq!(a[0]["paths"], serde_json::json!(["out/"]));
        assert_eq!(a[0]["expire_in"], "1 week");
        assert_eq!(a[1]["artifact_type"], "junit");
        assert_eq!(a[1]["artifact_format"], "gzip");
        assert_eq!(a[1]["name"], "junit.xml.gz");
        assert_eq!(a[1]["when"], "always");
        let c = &v["cache"][0];
        assert_eq!(c["key"], "deps-protected");
        assert_eq!(c["fallback_keys"], serde_json::json!(["main-protected"]));
        assert_eq!(c["policy"], "pull-push");
        let d = &v["dependencies"][0];
        assert_eq!(d["id"], 1000);
        assert_eq!(d["artifacts_file"]["size"], 123);
    }
}
