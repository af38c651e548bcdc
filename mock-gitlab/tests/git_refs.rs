//! Branch, tag and merge request pipelines: what the payload carries (ref, ref_type, refspecs,
//! `CI_COMMIT_*`/`CI_MERGE_REQUEST_*`), which jobs `rules` keep, and that the real git client
//! fetches exactly the commit with the payload's refspecs, the way the runner does.

mod common;

use common::{Lab, fixture, git, ok};
use mock_gitlab::{PipelineId, RefKind, RunnerSpec, Variable};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const PROJECT: &str = "group/merge-request";

/// The value of a payload variable; `None` if it is not sent.
fn var(job: &Value, key: &str) -> Option<String> {
    job["variables"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|v| v["key"] == key)
        .map(|v| v["value"].as_str().unwrap().to_string())
}

fn job_names(lab: &Lab, pid: PipelineId) -> Vec<String> {
    lab.mock
        .pipeline(pid)
        .jobs
        .iter()
        .map(|j| j.name.clone())
        .collect()
}

/// What the runner does with a payload: init, remote, fetch the refspecs at the payload's
/// depth, check out the sha. Returns the work tree.
async fn runner_fetch(lab: &Lab, job: &Value, protocol: &str) -> tempfile::TempDir {
    let token = job["token"].as_str().unwrap();
    let port = lab.mock.local_url().rsplit(':').next().unwrap().to_string();
    let path = job["job_info"]["project_full_path"].as_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(&git(dir, &["init", "-q"]).await);
    let url = format!("http://gitlab-ci-token:{token}@127.0.0.1:{port}/{path}.git");
    ok(&git(dir, &["remote", "add", "origin", &url]).await);
    let proto = format!("protocol.version={protocol}");
    let depth = job["git_info"]["depth"].as_u64().unwrap().to_string();
    let mut args = vec![
        "-c",
        proto.as_str(),
        "fetch",
        "origin",
        "--no-recurse-submodules",
    ];
    let refspecs: Vec<&str> = job["git_info"]["refspecs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    args.extend(refspecs);
    if depth != "0" {
        args.extend(["--depth", depth.as_str()]);
    }
    args.extend(["--prune", "--quiet"]);
    ok(&git(dir, &args).await);
    let sha = job["git_info"]["sha"].as_str().unwrap();
    ok(&git(dir, &["checkout", "-f", "-q", sha]).await);
    tmp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn merge_request_pipeline_runs_the_source_commit_with_merge_request_variables() {
    let lab = Lab::start().await;
    let runner = lab.mock.create_runner(RunnerSpec::default());
    let project = lab
        .mock
        .add_project(PROJECT, &fixture("merge-request"))
        .unwrap();
    assert_eq!(project.merge_requests.len(), 1, "{project:?}");
    let mr = project.merge_requests[0].clone();
    assert_eq!(mr.iid, 1);
    assert_eq!(mr.source_branch, "add-feature");
    assert_eq!(mr.target_branch, "main");
    assert_eq!(mr.title, "Add feature");
    assert_eq!(mr.target_sha, project.sha);
    assert_ne!(mr.sha, project.sha);
    assert_ne!(mr.id, mr.iid, "instance-wide id and iid must differ");
    assert_eq!(lab.mock.merge_requests(PROJECT), vec![mr.clone()]);

    // A branch pipeline on main: the job without rules runs, the merge request job does not.
    let branch = lab.mock.create_pipeline(PROJECT, "main").unwrap();
    assert_eq!(job_names(&lab, branch), ["branch-job"]);
    lab.mock.cancel_pipeline(branch, false).unwrap();

    let pid = lab.mock.create_merge_request_pipeline(PROJECT, 1).unwrap();
    let rec = lab.mock.pipeline(pid);
    assert_eq!(job_names(&lab, pid), ["mr-job"], "only jobs with rules run");
    assert_eq!(rec.git_ref, "refs/merge-requests/1/head");
    assert_eq!(rec.source, "merge_request_event");
    assert_eq!(rec.sha, mr.sha);
    assert_eq!(rec.kind, RefKind::MergeRequest(mr.clone()));

    let job = lab.take_job(&runner.token).await;
    assert_eq!(job["job_info"]["name"], "mr-job");
    let gi = &job["git_info"];
    assert_eq!(gi["ref"], "refs/merge-requests/1/head");
    assert_eq!(gi["sha"], mr.sha.as_str());
    assert_eq!(gi["ref_type"], "branch");
    // GitLab's presenter: the persistent ref only (no branch refspec for merge request refs).
    assert_eq!(
        gi["refspecs"],
        json!([format!("+{}:refs/pipelines/{}", mr.sha, pid.0)])
    );
    for (k, v) in [
        ("CI_PIPELINE_SOURCE", "merge_request_event"),
        ("CI_MERGE_REQUEST_IID", "1"),
        ("CI_MERGE_REQUEST_ID", &mr.id.to_string()),
        ("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME", "add-feature"),
        ("CI_MERGE_REQUEST_TARGET_BRANCH_NAME", "main"),
        ("CI_MERGE_REQUEST_REF_PATH", "refs/merge-requests/1/head"),
        ("CI_MERGE_REQUEST_TITLE", "Add feature"),
        ("CI_MERGE_REQUEST_PROJECT_PATH", PROJECT),
        ("CI_MERGE_REQUEST_EVENT_TYPE", "detached"),
        ("CI_MERGE_REQUEST_DIFF_BASE_SHA", &project.sha),
        ("CI_COMMIT_REF_NAME", "add-feature"),
        ("CI_COMMIT_REF_SLUG", "add-feature"),
        ("CI_COMMIT_SHA", &mr.sha),
        ("CI_COMMIT_MESSAGE", "Add feature"),
    ] {
        assert_eq!(var(&job, k).as_deref(), Some(v), "{k}");
    }
    assert_eq!(var(&job, "CI_COMMIT_BRANCH"), None);
    assert_eq!(var(&job, "CI_COMMIT_TAG"), None);

    // The runner's fetch with exactly these refspecs gets the merge request's commit, in both
    // protocol versions (v0 needs the mock's allowReachableSHA1InWant: the sha is no branch of
    // the refspecs).
    for protocol in ["0", "2"] {
        let tree = runner_fetch(&lab, &job, protocol).await;
        let dir = tree.path();
        assert_eq!(ok(&git(dir, &["rev-parse", "HEAD"]).await), mr.sha);
        assert_eq!(ok(&git(dir, &["rev-parse", "HEAD^"]).await), project.sha);
        let feature = std::fs::read_to_string(dir.join("feature.txt")).unwrap();
        assert_eq!(feature.trim(), "only in merge request !1");
        assert!(dir.join("README.md").is_file(), "main's files stay");
        assert!(!dir.join(".merge-requests").exists());
    }

    // The refs GitLab keeps: the source branch, the head ref and the merge ref (a merge commit
    // of the head into main).
    let token = job["token"].as_str().unwrap();
    let port = lab.mock.local_url().rsplit(':').next().unwrap().to_string();
    let url = format!("http://gitlab-ci-token:{token}@127.0.0.1:{port}/{PROJECT}.git");
    let tmp = tempfile::tempdir().unwrap();
    let refs = ok(&git(tmp.path(), &["ls-remote", &url]).await);
    for (sha, r) in [
        (&project.sha, "refs/heads/main"),
        (&mr.sha, "refs/heads/add-feature"),
        (&mr.sha, "refs/merge-requests/1/head"),
        (&mr.merge_sha, "refs/merge-requests/1/merge"),
    ] {
        assert!(refs.contains(&format!("{sha}\t{r}")), "{r} in:\n{refs}");
    }
    let dir = tmp.path();
    ok(&git(dir, &["init", "-q"]).await);
    ok(&git(
        dir,
        &[
            "fetch",
            "-q",
            &url,
            "+refs/merge-requests/1/merge:refs/mr-merge",
        ],
    )
    .await);
    let parents = ok(&git(dir, &["rev-list", "--parents", "-n", "1", "refs/mr-merge"]).await);
    assert_eq!(
        parents,
        format!("{} {} {}", mr.merge_sha, project.sha, mr.sha)
    );
    let msg = ok(&git(dir, &["log", "-1", "--format=%s", "refs/mr-merge"]).await);
    assert_eq!(msg, "Merge branch 'add-feature' into 'main'");

    // An unknown merge request is refused, naming the fixture convention.
    let e = lab
        .mock
        .create_merge_request_pipeline(PROJECT, 7)
        .unwrap_err();
    assert!(e.to_string().contains(".merge-requests/<iid>"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tag_pipelines_fetch_the_tag() {
    let lab = Lab::start().await;
    let runner = lab.mock.create_runner(RunnerSpec::default());
    let project = lab
        .mock
        .add_project(PROJECT, &fixture("merge-request"))
        .unwrap();
    let mr_sha = project.merge_requests[0].sha.clone();
    assert_eq!(
        lab.mock.create_tag(PROJECT, "v1.0", "main", None).unwrap(),
        project.sha
    );
    assert_eq!(
        lab.mock
            .create_tag(PROJECT, "v2.0", "add-feature", Some("Release 2.0"))
            .unwrap(),
        mr_sha
    );
    let e = lab
        .mock
        .create_tag(PROJECT, "v1.0", "main", None)
        .unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    assert!(
        lab.mock
            .create_tag(PROJECT, "bad..name", "main", None)
            .is_err()
    );
    assert!(lab.mock.create_tag(PROJECT, "v3", "nope", None).is_err());

    let pid = lab.mock.create_pipeline(PROJECT, "v1.0").unwrap();
    let rec = lab.mock.pipeline(pid);
    assert_eq!(rec.kind, RefKind::Tag { message: None });
    assert_eq!(rec.sha, project.sha);
    assert_eq!(job_names(&lab, pid), ["branch-job", "tag-job"]);
    let job = lab.take_job(&runner.token).await;
    let gi = &job["git_info"];
    assert_eq!(gi["ref"], "v1.0");
    assert_eq!(gi["ref_type"], "tag");
    assert_eq!(
        gi["refspecs"],
        json!([
            format!("+{}:refs/pipelines/{}", project.sha, pid.0),
            "+refs/tags/v1.0:refs/tags/v1.0"
        ])
    );
    assert_eq!(var(&job, "CI_COMMIT_TAG").as_deref(), Some("v1.0"));
    assert_eq!(var(&job, "CI_COMMIT_TAG_MESSAGE").as_deref(), Some(""));
    assert_eq!(var(&job, "CI_COMMIT_REF_NAME").as_deref(), Some("v1.0"));
    assert_eq!(var(&job, "CI_COMMIT_BRANCH"), None);
    assert_eq!(var(&job, "CI_MERGE_REQUEST_IID"), None);
    let tree = runner_fetch(&lab, &job, "2").await;
    assert_eq!(
        ok(&git(tree.path(), &["rev-parse", "refs/tags/v1.0"]).await),
        project.sha
    );
    assert!(!tree.path().join("feature.txt").exists());

    // An annotated tag on the merge request's branch; `refs/tags/…` names it explicitly.
    let pid = lab.mock.create_pipeline(PROJECT, "refs/tags/v2.0").unwrap();
    assert_eq!(
        lab.mock.pipeline(pid).kind,
        RefKind::Tag {
            message: Some("Release 2.0".into())
        }
    );
    assert_eq!(lab.mock.pipeline(pid).sha, mr_sha);
    // Skip the first pipeline's second job: take until this pipeline's job appears.
    let mut job = lab.take_job(&runner.token).await;
    while job["job_info"]["pipeline_id"] != pid.0 {
        job = lab.take_job(&runner.token).await;
    }
    assert_eq!(
        var(&job, "CI_COMMIT_TAG_MESSAGE").as_deref(),
        Some("Release 2.0")
    );
    assert_eq!(
        var(&job, "CI_COMMIT_MESSAGE").as_deref(),
        Some("Add feature")
    );

    // A branch named like nothing: refused, saying branches and tags.
    let e = lab.mock.create_pipeline(PROJECT, "v9").unwrap_err();
    assert!(e.to_string().contains("no branch or tag"), "{e}");

    // GIT_DEPTH 0: GitLab sends every branch and tag instead of the ref's own refspec.
    lab.mock
        .set_variable(
            PROJECT,
            Variable {
                key: "GIT_DEPTH".into(),
                value: "0".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let pid = lab.mock.create_pipeline(PROJECT, "main").unwrap();
    let mut job = lab.take_job(&runner.token).await;
    while job["job_info"]["pipeline_id"] != pid.0 {
        job = lab.take_job(&runner.token).await;
    }
    assert_eq!(
        job["git_info"]["refspecs"],
        json!([
            format!("+{}:refs/pipelines/{}", project.sha, pid.0),
            "+refs/heads/*:refs/remotes/origin/*",
            "+refs/tags/*:refs/tags/*"
        ])
    );
    let tree = runner_fetch(&lab, &job, "2").await;
    let tags = ok(&git(tree.path(), &["tag", "--list"]).await);
    assert_eq!(tags, "v1.0\nv2.0");
    ok(&git(
        tree.path(),
        &["rev-parse", "--verify", "origin/add-feature"],
    )
    .await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rest_creates_tags_and_merge_request_pipelines() {
    let lab = Lab::start_with(|c| c.fixtures_root = Some(fixture(""))).await;
    let rest = |method: Method, path: &str, body: Option<Value>| {
        let mut req = lab
            .http
            .request(method, lab.url(path))
            .header("PRIVATE-TOKEN", lab.mock.admin_token());
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send()
    };
    let r = rest(
        Method::POST,
        "/projects",
        Some(json!({"name": "merge-request", "namespace": "group", "import_fixture": "merge-request"})),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<Value>().await.unwrap()["id"].as_u64().unwrap();
    let mr_sha = lab.mock.merge_requests(PROJECT)[0].sha.clone();

    let r = rest(
        Method::GET,
        &format!("/projects/{id}/merge_requests/1"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mr: Value = r.json().await.unwrap();
    assert_eq!(mr["iid"], 1);
    assert_eq!(mr["source_branch"], "add-feature");
    assert_eq!(mr["target_branch"], "main");
    assert_eq!(mr["sha"], mr_sha.as_str());
    assert_eq!(mr["state"], "opened");
    let r = rest(
        Method::GET,
        &format!("/projects/{id}/merge_requests/9"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let r = rest(
        Method::POST,
        &format!("/projects/{id}/merge_requests/1/pipelines"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["ref"], "refs/merge-requests/1/head");
    assert_eq!(p["source"], "merge_request_event");
    assert_eq!(p["sha"], mr_sha.as_str());
    assert_eq!(p["tag"], false);

    let r = rest(
        Method::POST,
        &format!("/projects/{id}/repository/tags?tag_name=v1.0&ref=main"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["name"], "v1.0");
    assert_eq!(t["target"], lab.mock.project(PROJECT).unwrap().sha.as_str());
    let r = rest(
        Method::POST,
        &format!("/projects/{id}/repository/tags"),
        Some(json!({"tag_name": "v1.0", "ref": "main"})),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "an existing tag");
    let r = rest(
        Method::POST,
        &format!("/projects/{id}/pipeline"),
        Some(json!({"ref": "v1.0"})),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["tag"], true);
    assert_eq!(p["ref"], "v1.0");
}

/// Bad `.merge-requests/` entries fail the import with the path and the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_merge_request_fixtures_are_refused_with_the_fix() {
    let lab = Lab::start().await;
    let cases: &[(&str, &[&str], &str)] = &[
        ("no-iid", &["feature/x.txt"], "<iid>-<source-branch>"),
        ("zero", &["0-x/x.txt"], "iid ≥ 1"),
        ("main", &["1-main/x.txt"], "other than main"),
        (
            "file",
            &["1-x.txt"],
            "only <iid>-<source-branch>/ directories",
        ),
        ("dup", &["1-a/x.txt", "1-b/x.txt"], "same iid"),
    ];
    for (i, (name, files, needle)) in cases.iter().enumerate() {
        let fx = common::temp_fixture("j:\n  script: [x]\n");
        let mrs = fx.path().join(".merge-requests");
        for f in *files {
            let p = mrs.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "x").unwrap();
        }
        let e = lab
            .mock
            .add_project(&format!("group/bad{i}"), fx.path())
            .unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains(needle), "{name}: {msg}");
        assert!(
            msg.contains(".merge-requests"),
            "{name}: names the path: {msg}"
        );
    }
    // `.merge-requests` as a file.
    let fx = common::temp_fixture("j:\n  script: [x]\n");
    std::fs::write(fx.path().join(".merge-requests"), "x").unwrap();
    let e = lab
        .mock
        .add_project("group/badfile", fx.path())
        .unwrap_err();
    assert!(format!("{e:#}").contains("must be a directory"), "{e:#}");
}

/// Overlays add and replace files; two merge requests each start from main.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn merge_requests_are_independent_overlays_on_main() {
    let lab = Lab::start().await;
    let runner = lab.mock.create_runner(RunnerSpec::default());
    let ci = "mr:\n  rules: [{if: $CI_MERGE_REQUEST_IID}]\n  script: [x]\n";
    let fx = common::temp_fixture(ci);
    std::fs::write(fx.path().join("a.txt"), "main a\n").unwrap();
    for (dir, file, text) in [
        ("1-first", "a.txt", "first a\n"),
        ("2-second", "sub/b.txt", "second b\n"),
    ] {
        let p = fx.path().join(".merge-requests").join(dir).join(file);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let project = lab.mock.add_project("group/two", fx.path()).unwrap();
    let iids: Vec<u64> = project.merge_requests.iter().map(|m| m.iid).collect();
    assert_eq!(iids, [1, 2]);
    for (iid, a, b) in [(1, "first a\n", None), (2, "main a\n", Some("second b\n"))] {
        let pid = lab
            .mock
            .create_merge_request_pipeline("group/two", iid)
            .unwrap();
        let job = lab.take_job(&runner.token).await;
        assert_eq!(job["job_info"]["pipeline_id"], pid.0);
        let tree = runner_fetch(&lab, &job, "2").await;
        let dir = tree.path();
        assert_eq!(
            std::fs::read_to_string(dir.join("a.txt")).unwrap(),
            a,
            "!{iid}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("sub/b.txt"))
                .ok()
                .as_deref(),
            b,
            "!{iid}"
        );
        assert_eq!(ok(&git(dir, &["rev-parse", "HEAD^"]).await), project.sha);
    }
}
