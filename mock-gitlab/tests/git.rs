//! Git over smart HTTP with the real git client: the 401 Basic challenge,
//! job-token authentication, clone and the runner's shallow SHA fetch in
//! protocol v0 and v2, gzip request bodies, and refused pushes.

mod common;

use common::{Lab, fixture, git, header, ok};
use mock_gitlab::RunnerSpec;
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Setup {
    lab: Lab,
    job: Value,
    sha: String,
    port: String,
}

async fn setup() -> Setup {
    let lab = Lab::start().await;
    let runner = lab.mock.create_runner(RunnerSpec::default());
    let project = lab
        .mock
        .add_project("group/hello", &fixture("hello"))
        .unwrap();
    lab.mock.create_pipeline("group/hello", "main").unwrap();
    let job = lab.take_job(&runner.token).await;
    let port = lab.mock.local_url().rsplit(':').next().unwrap().to_string();
    Setup {
        lab,
        job,
        sha: project.sha,
        port,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unauthenticated_requests_get_a_basic_challenge() {
    let s = setup().await;
    let url = format!(
        "{}/group/hello.git/info/refs?service=git-upload-pack",
        s.lab.mock.local_url()
    );
    let r = s.lab.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&r, "www-authenticate").as_deref(),
        Some("Basic realm=\"GitLab\"")
    );
    // Wrong user, wrong token, unknown project: all the same 401.
    for (user, pass, path) in [
        ("root", s.job["token"].as_str().unwrap(), "group/hello"),
        ("gitlab-ci-token", "glcbt-wrong", "group/hello"),
        (
            "gitlab-ci-token",
            s.job["token"].as_str().unwrap(),
            "group/other",
        ),
    ] {
        let url = format!(
            "{}/{path}.git/info/refs?service=git-upload-pack",
            s.lab.mock.local_url()
        );
        let r = s
            .lab
            .http
            .get(&url)
            .basic_auth(user, Some(pass))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{user} {path}");
    }
    // Valid credentials: the smart HTTP advertisement.
    let r = s
        .lab
        .http
        .get(format!(
            "{}/group/hello.git/info/refs?service=git-upload-pack",
            s.lab.mock.local_url()
        ))
        .basic_auth("gitlab-ci-token", s.job["token"].as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "content-type").as_deref(),
        Some("application/x-git-upload-pack-advertisement")
    );

    // The git client without credentials fails on the challenge.
    let tmp = tempfile::tempdir().unwrap();
    let o = git(
        tmp.path(),
        &[
            "clone",
            &format!("http://127.0.0.1:{}/group/hello.git", s.port),
            "x",
        ],
    )
    .await;
    assert!(!o.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clone_with_the_job_token() {
    let s = setup().await;
    let token = s.job["token"].as_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let url = format!(
        "http://gitlab-ci-token:{token}@127.0.0.1:{}/group/hello.git",
        s.port
    );
    ok(&git(tmp.path(), &["clone", "-q", &url, "hello"]).await);
    let repo = tmp.path().join("hello");
    assert_eq!(ok(&git(&repo, &["rev-parse", "HEAD"]).await), s.sha);
    let readme = std::fs::read_to_string(repo.join("README.md")).unwrap();
    assert!(readme.contains("checked out by gitlab-runner"));
    let log = ok(&git(&repo, &["log", "-1", "--format=%an <%ae> %aI"]).await);
    assert_eq!(
        log,
        "runnerlab <lab@runnerlab.invalid> 2026-01-01T00:00:00+00:00"
    );
    // Git requests are recorded without credentials.
    let recs = s.lab.mock.requests();
    assert!(
        recs.iter()
            .any(|r| r.path == "/group/hello.git/git-upload-pack" && r.status == 200)
    );
    assert!(recs.iter().any(|r| r.status == 401));
    assert!(!format!("{recs:?}").contains(token));
}

/// What the runner does: init, then fetch the pipeline refspecs shallowly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runner_style_shallow_sha_fetch_v0_and_v2() {
    let s = setup().await;
    let token = s.job["token"].as_str().unwrap();
    let refspecs: Vec<String> = s.job["git_info"]["refspecs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    for version in ["0", "2"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        ok(&git(dir, &["init", "-q"]).await);
        let url = format!(
            "http://gitlab-ci-token:{token}@127.0.0.1:{}/group/hello.git",
            s.port
        );
        ok(&git(dir, &["remote", "add", "origin", &url]).await);
        let proto = format!("protocol.version={version}");
        let mut args = vec![
            "-c",
            proto.as_str(),
            "fetch",
            "origin",
            "--no-recurse-submodules",
        ];
        args.extend(refspecs.iter().map(String::as_str));
        args.extend(["--depth", "20", "--prune", "--quiet"]);
        ok(&git(dir, &args).await);
        ok(&git(dir, &["checkout", "-f", "-q", &s.sha]).await);
        assert_eq!(
            ok(&git(dir, &["rev-parse", "HEAD"]).await),
            s.sha,
            "v{version}"
        );
        assert!(dir.join("README.md").exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gzip_request_bodies_are_inflated_by_http_backend() {
    let s = setup().await;
    let token = s.job["token"].as_str().unwrap();
    // A protocol v0 upload-pack request: want <sha>, done.
    let want = format!("want {}\n", s.sha);
    let plain = format!("{:04x}{want}00000009done\n", want.len() + 4);
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("req");
    std::fs::write(&raw, plain).unwrap();
    let out = tokio::process::Command::new("gzip")
        .arg("-c")
        .arg(&raw)
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let r = s
        .lab
        .http
        .post(format!(
            "{}/group/hello.git/git-upload-pack",
            s.lab.mock.local_url()
        ))
        .basic_auth("gitlab-ci-token", Some(token))
        .header("Content-Type", "application/x-git-upload-pack-request")
        .header("Content-Encoding", "gzip")
        .body(out.stdout)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "content-type").as_deref(),
        Some("application/x-git-upload-pack-result")
    );
    let body = r.bytes().await.unwrap();
    assert!(
        body.windows(4).any(|w| w == b"PACK"),
        "no pack in the reply: {:?}",
        String::from_utf8_lossy(&body[..body.len().min(200)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_are_refused_and_tokens_expire_with_the_job() {
    let s = setup().await;
    let token = s.job["token"].as_str().unwrap().to_string();
    let base = s.lab.mock.local_url();
    let r = s
        .lab
        .http
        .get(format!(
            "{base}/group/hello.git/info/refs?service=git-receive-pack"
        ))
        .basic_auth("gitlab-ci-token", Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = s
        .lab
        .http
        .post(format!("{base}/group/hello.git/git-receive-pack"))
        .basic_auth("gitlab-ci-token", Some(&token))
        .body("0000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = s
        .lab
        .http
        .get(format!("{base}/group/hello.git/objects/info/packs"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Finish the job; its token no longer opens the repository.
    let id = s.job["id"].as_u64().unwrap();
    let r = s
        .lab
        .put_job(id, json!({"token": token, "state": "success"}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = s
        .lab
        .http
        .get(format!(
            "{base}/group/hello.git/info/refs?service=git-upload-pack"
        ))
        .basic_auth("gitlab-ci-token", Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// A fixture's `.submodules/<name>/` becomes a project and a gitlink with a relative URL; the
/// superproject's job token clones both (`--recurse-submodules`, as the runner's
/// `GIT_SUBMODULE_STRATEGY: normal` does), and no other project's token reads the submodule.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn submodules_are_projects_the_superprojects_job_token_reads() {
    let lab = Lab::start().await;
    let runner = lab.mock.create_runner(RunnerSpec::default());
    lab.mock
        .add_project("group/submodules", &fixture("submodules"))
        .unwrap();
    lab.mock
        .add_project("group/hello", &fixture("hello"))
        .unwrap();
    lab.mock
        .create_pipeline("group/submodules", "main")
        .unwrap();
    let job = lab.take_job(&runner.token).await;
    let token = job["token"].as_str().unwrap();
    let port = lab.mock.local_url().rsplit(':').next().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("http://gitlab-ci-token:{token}@127.0.0.1:{port}/group/submodules.git");
    ok(&git(
        tmp.path(),
        &[
            "-c",
            "protocol.file.allow=never",
            "clone",
            "-q",
            "--recurse-submodules",
            &url,
            "sup",
        ],
    )
    .await);
    let sup = tmp.path().join("sup");
    let greeting = std::fs::read_to_string(sup.join("lib/greeting.txt")).unwrap();
    assert_eq!(greeting.trim(), "hello from the submodule");
    let gitmodules = std::fs::read_to_string(sup.join(".gitmodules")).unwrap();
    assert!(
        gitmodules.contains("url = ../submodules-lib.git"),
        "{gitmodules}"
    );
    // The fixture's .submodules directory is not part of the superproject's tree.
    assert!(!sup.join(".submodules").exists());

    // A job of another project cannot read the submodule with its token.
    lab.mock.create_pipeline("group/hello", "main").unwrap();
    let other = lab.take_job(&runner.token).await;
    let other_token = other["token"].as_str().unwrap();
    let url =
        format!("http://gitlab-ci-token:{other_token}@127.0.0.1:{port}/group/submodules-lib.git");
    let o = git(tmp.path(), &["clone", "-q", &url, "lib"]).await;
    assert!(
        !o.status.success(),
        "another project's token read the submodule"
    );
    // While its own project stays readable to it.
    let url = format!("http://gitlab-ci-token:{other_token}@127.0.0.1:{port}/group/hello.git");
    ok(&git(tmp.path(), &["clone", "-q", &url, "hello"]).await);
}
