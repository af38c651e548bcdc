//! Git LFS: files a fixture's `.gitattributes` (or `fixture.gitattributes`, which runnerlab's
//! own fixtures use) marks `filter=lfs` are committed as pointers,
//! and the batch API (job-token Basic auth, like git) hands their contents to the real
//! `git lfs` client, the way the runner's `git lfs pull` after checkout gets them.
//!
//! Needs `git-lfs` (Debian's package; `cargo lab setup` installs it).

mod common;

use std::path::Path;
use std::process::Output;

use common::{Lab, fixture, ok};
use mock_gitlab::RunnerSpec;
use mock_gitlab::git::FIXTURE_GITATTRIBUTES;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const CONTENT: &str = "real LFS content: not a pointer\n";

async fn git(dir: &Path, args: &[&str]) -> Output {
    git_with(dir, args, Path::new("/dev/null")).await
}

/// git with `global` as the global config (the runner host's `git lfs install`).
async fn git_with(dir: &Path, args: &[&str], global: &Path) -> Output {
    tokio::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", global)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "/bin/false")
        // As the runner: no smudge during checkout, `git lfs pull` afterwards.
        .env("GIT_LFS_SKIP_SMUDGE", "1")
        .env_remove("GIT_DIR")
        .output()
        .await
        .expect("run git")
}

async fn require_git_lfs() {
    let o = git(Path::new("/"), &["lfs", "version"]).await;
    assert!(
        o.status.success(),
        "git-lfs is missing: install Debian's git-lfs (`cargo lab setup` does)"
    );
}

/// A global git config with git-lfs's filters, as `git lfs install` makes on a runner host (the
/// upstream runner images run `git lfs install --skip-repo`): without them `git lfs pull`
/// downloads but skips the checkout ("Git LFS is not installed for this repository").
async fn lfs_global_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("gitconfig");
    std::fs::write(&path, "").unwrap();
    ok(&git_with(dir, &["lfs", "install", "--skip-repo"], &path).await);
    path
}

fn oid(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

struct Setup {
    lab: Lab,
    job: Value,
    token: String,
    port: String,
}

async fn setup(project: &str, dir: &Path) -> Setup {
    require_git_lfs().await;
    let lab = Lab::start().await;
    let runner = lab.mock.create_runner(RunnerSpec::default());
    lab.mock.add_project(project, dir).unwrap();
    lab.mock.create_pipeline(project, "main").unwrap();
    let job = lab.take_job(&runner.token).await;
    let token = job["token"].as_str().unwrap().to_string();
    let port = lab.mock.local_url().rsplit(':').next().unwrap().to_string();
    Setup {
        lab,
        job,
        token,
        port,
    }
}

/// The runner's get_sources: init, fetch the refspecs, checkout, then `git lfs pull`.
async fn runner_checkout(s: &Setup, project: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(&git(dir, &["init", "-q"]).await);
    let url = format!(
        "http://gitlab-ci-token:{}@127.0.0.1:{}/{project}.git",
        s.token, s.port
    );
    ok(&git(dir, &["remote", "add", "origin", &url]).await);
    let mut args = vec!["fetch", "origin", "--no-recurse-submodules"];
    let specs: Vec<&str> = s.job["git_info"]["refspecs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    args.extend(specs);
    args.extend(["--depth", "20", "--quiet"]);
    ok(&git(dir, &args).await);
    let sha = s.job["git_info"]["sha"].as_str().unwrap();
    ok(&git(dir, &["checkout", "-f", "-q", sha]).await);
    tmp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lfs_pull_gets_the_content_the_repository_holds_a_pointer_for() {
    let s = setup("group/lfs", &fixture("lfs")).await;
    assert_eq!(s.lab.mock.project("group/lfs").unwrap().lfs_objects, 1);
    let tree = runner_checkout(&s, "group/lfs").await;
    let dir = tree.path();
    let file = dir.join("data/blob.bin");

    // After checkout: the pointer, exactly as git-lfs writes it.
    let pointer = std::fs::read_to_string(&file).unwrap();
    let expected = format!(
        "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize {}\n",
        oid(CONTENT.as_bytes()),
        CONTENT.len()
    );
    assert_eq!(pointer, expected);
    // Other files are ordinary blobs.
    assert!(
        std::fs::read_to_string(dir.join("README.md"))
            .unwrap()
            .contains("Git LFS")
    );

    let cfg_dir = tempfile::tempdir().unwrap();
    let global = lfs_global_config(cfg_dir.path()).await;
    ok(&git_with(dir, &["lfs", "pull"], &global).await);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), CONTENT);
    let listed = ok(&git_with(dir, &["lfs", "ls-files"], &global).await);
    assert!(listed.ends_with("data/blob.bin"), "{listed}");

    // The batch and download requests were answered, and recorded without the token.
    let recs = s.lab.mock.requests();
    assert!(recs.iter().any(|r| r.method == "POST"
        && r.path == "/group/lfs.git/info/lfs/objects/batch"
        && r.status == 200));
    assert!(recs.iter().any(|r| r.method == "GET"
        && r.path.starts_with("/group/lfs.git/gitlab-lfs/objects/")
        && r.status == 200));
    assert!(!format!("{recs:?}").contains(&s.token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_api_answers_like_gitlab() {
    let s = setup("group/lfs", &fixture("lfs")).await;
    let base = s.lab.mock.local_url();
    let batch_url = format!("{base}/group/lfs.git/info/lfs/objects/batch");
    let good = oid(CONTENT.as_bytes());
    let missing = oid(b"never stored");
    let body = json!({
        "operation": "download",
        "transfers": ["basic"],
        "objects": [
            {"oid": good, "size": CONTENT.len()},
            {"oid": missing, "size": 12},
            {"oid": good, "size": 3},
        ],
    });
    let batch = |user: &str, pass: &str, body: &Value| {
        s.lab
            .http
            .post(&batch_url)
            .basic_auth(user, Some(pass))
            .header("Accept", "application/vnd.git-lfs+json")
            .json(body)
            .send()
    };

    // No credentials, a wrong token: 401 with a Basic challenge; uploads: 403.
    let r = s
        .lab
        .http
        .post(&batch_url)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = batch("gitlab-ci-token", "glcbt-wrong", &body)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let mut upload = body.clone();
    upload["operation"] = json!("upload");
    let r = batch("gitlab-ci-token", &s.token, &upload).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    let r = batch("gitlab-ci-token", &s.token, &body).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/vnd.git-lfs+json");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["transfer"], "basic");
    let objs = v["objects"].as_array().unwrap();
    assert_eq!(objs.len(), 3);
    let href = objs[0]["actions"]["download"]["href"].as_str().unwrap();
    assert_eq!(
        href,
        format!("{base}/group/lfs.git/gitlab-lfs/objects/{good}"),
        "the href names the host the client used"
    );
    assert!(
        objs[0]["actions"]["download"]["header"]["Authorization"]
            .as_str()
            .unwrap()
            .starts_with("Basic ")
    );
    assert_eq!(objs[1]["error"]["code"], 404);
    assert_eq!(objs[2]["error"]["code"], 422, "a size that does not match");

    // The download: the content with the token, 401 without; an unknown object 404.
    let r = s
        .lab
        .http
        .get(href)
        .basic_auth("gitlab-ci-token", Some(&s.token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), CONTENT);
    let r = s.lab.http.get(href).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = s
        .lab
        .http
        .get(format!("{base}/group/lfs.git/gitlab-lfs/objects/{missing}"))
        .basic_auth("gitlab-ci-token", Some(&s.token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // The token ends with its job.
    let id = s.job["id"].as_u64().unwrap();
    let r = s
        .lab
        .put_job(id, json!({"token": s.token, "state": "success"}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = batch("gitlab-ci-token", &s.token, &body).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// LFS files in merge request overlays are stored too; files outside `filter=lfs` and empty LFS
/// files stay as they are; a pointer whose content the fixture lacks is refused, naming the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlays_and_edge_cases() {
    require_git_lfs().await;
    let lab = Lab::start().await;
    let fx = common::temp_fixture("j:\n  rules: [{when: always}]\n  script: [x]\n");
    let root = fx.path();
    std::fs::write(root.join(".gitattributes"), "assets/** filter=lfs\n").unwrap();
    std::fs::create_dir_all(root.join("assets")).unwrap();
    std::fs::write(root.join("assets/empty.dat"), "").unwrap();
    std::fs::write(root.join("plain.dat"), "plain\n").unwrap();
    let mr = root.join(".merge-requests/1-add-asset/assets");
    std::fs::create_dir_all(&mr).unwrap();
    std::fs::write(mr.join("new.dat"), "asset of the merge request\n").unwrap();
    let project = lab.mock.add_project("group/edge", fx.path()).unwrap();
    assert_eq!(project.lfs_objects, 1, "only the merge request's asset");

    let store = lab.mock.data_dir().join("lfs/group/edge");
    let stored = std::fs::read(store.join(oid(b"asset of the merge request\n"))).unwrap();
    assert_eq!(stored, b"asset of the merge request\n");
    // `git show REV` in the bare repository of project `group/<name>`.
    let show_in = |name: &str, rev: &str| {
        let bare = lab.mock.data_dir().join(format!("repos/group/{name}.git"));
        let o = std::process::Command::new("git")
            .args(["-C", bare.to_str().unwrap(), "show", rev])
            .output()
            .unwrap();
        assert!(o.status.success(), "{rev}");
        String::from_utf8(o.stdout).unwrap()
    };
    let show = |rev: &str| show_in("edge", rev);
    let mr_sha = &project.merge_requests[0].sha;
    assert!(show(&format!("{mr_sha}:assets/new.dat")).starts_with("version https://git-lfs"));
    assert_eq!(show("main:assets/empty.dat"), "");
    assert_eq!(show("main:plain.dat"), "plain\n");
    // No temporary files are left in the store.
    let names: Vec<String> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [oid(b"asset of the merge request\n")]);

    // A pointer without its content: what a fixture committed through git-lfs looks like in a
    // clone made without git-lfs.
    let own_pointer = "version https://git-lfs.github.com/spec/v1\noid sha256:00ab\nsize 1\n";
    std::fs::write(root.join("assets/pointer.dat"), own_pointer).unwrap();
    let err = lab.mock.add_project("group/edge2", fx.path()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("assets/pointer.dat: a Git LFS pointer without its content")
            && msg.contains("00ab")
            && msg.contains("git add --renormalize"),
        "{msg}"
    );
    std::fs::remove_file(root.join("assets/pointer.dat")).unwrap();

    // The same rule as `fixture.gitattributes` is committed as `.gitattributes`; both at once
    // is ambiguous.
    let rules = "assets/** filter=lfs\nplain.dat filter=lfs\n";
    std::fs::write(root.join(FIXTURE_GITATTRIBUTES), rules).unwrap();
    let err = lab.mock.add_project("group/edge3", fx.path()).unwrap_err();
    assert!(
        format!("{err:#}").contains("both .gitattributes and fixture.gitattributes"),
        "{err:#}"
    );
    std::fs::remove_file(root.join(".gitattributes")).unwrap();
    let project = lab.mock.add_project("group/edge4", fx.path()).unwrap();
    assert_eq!(
        project.lfs_objects, 2,
        "plain.dat and the merge request's asset"
    );
    assert_eq!(show_in("edge4", "main:.gitattributes"), rules);
}

/// runnerlab's own `lfs` fixture holds the file's content in this repository, not a git-lfs
/// pointer: a clone made without git-lfs must still give mock-gitlab something to store.
#[test]
fn the_lfs_fixture_holds_content_in_this_repository() {
    let file = fixture("lfs").join("data/blob.bin");
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&bytes),
        CONTENT,
        "{} is not the content (a git-lfs pointer?): see fixtures/projects/lfs/README.md",
        file.display()
    );
    assert!(
        !fixture("lfs").join(".gitattributes").exists(),
        "fixtures keep filter=lfs in fixture.gitattributes, or it acts on runnerlab's repository"
    );
}
