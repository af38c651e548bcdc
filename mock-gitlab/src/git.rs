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

use anyhow::{Context, anyhow, bail};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_util::io::ReaderStream;

use crate::Inner;
use crate::state::{JobStatus, MergeRequest};

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

/// The directory of a fixture that holds its merge requests: `.merge-requests/<iid>-<source
/// branch>/` is overlaid on the fixture's `main` as one commit on the source branch.
pub const MERGE_REQUESTS_DIR: &str = ".merge-requests";

/// A fixture file committed as `.gitattributes` in its directory. Attributes a fixture means for
/// its project, like `filter=lfs`, would also act on the repository that holds the fixture under
/// their real name (git-lfs would store runnerlab's own fixture files as pointers).
pub const FIXTURE_GITATTRIBUTES: &str = "fixture.gitattributes";

/// Copy a fixture tree (without `.git`, `.submodules` and `.merge-requests` at any level, with
/// `fixture.gitattributes` as `.gitattributes`) and return the regular files copied, relative
/// to `to` (for the LFS conversion).
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    copy_tree_into(from, to, Path::new(""), &mut files)?;
    Ok(files)
}

fn copy_tree_into(
    from: &Path,
    to: &Path,
    rel: &Path,
    files: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("create {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("read {}", from.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if name == ".git" || name == SUBMODULES_DIR || name == MERGE_REQUESTS_DIR {
            continue;
        }
        let src = entry.path();
        let ft = entry.file_type()?;
        let name = if name == FIXTURE_GITATTRIBUTES && !ft.is_dir() {
            if from.join(".gitattributes").exists() {
                bail!(
                    "{}: both .gitattributes and {FIXTURE_GITATTRIBUTES}; merge them into one",
                    from.display()
                );
            }
            std::ffi::OsString::from(".gitattributes")
        } else {
            name
        };
        let dst = to.join(&name);
        if ft.is_dir() {
            if dst.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
                remove_path(&dst)?;
            }
            copy_tree_into(&src, &dst, &rel.join(&name), files)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&src)?;
            if dst.symlink_metadata().is_ok() {
                remove_path(&dst)?;
            }
            #[cfg(unix)]
            std::os::unix::fs::symlink(&target, &dst)?;
            #[cfg(not(unix))]
            std::fs::copy(&src, &dst)?;
        } else {
            // An overlay may replace a symlink or a file of another kind.
            if dst.symlink_metadata().is_ok_and(|m| !m.is_file()) {
                remove_path(&dst)?;
            }
            // fs::copy keeps permission bits, so executable fixtures stay 755.
            std::fs::copy(&src, &dst)
                .with_context(|| format!("copy {} to {}", src.display(), dst.display()))?;
            files.push(rel.join(&name));
        }
    }
    Ok(())
}

fn remove_path(p: &Path) -> anyhow::Result<()> {
    let m = p.symlink_metadata()?;
    if m.is_dir() {
        std::fs::remove_dir_all(p)
    } else {
        std::fs::remove_file(p)
    }
    .with_context(|| format!("remove {}", p.display()))
}

/// A submodule of a fixture: a gitlink at `path` to `sha`, cloned from `url` (relative to the
/// superproject's URL, as GitLab users write them, so the job's credentials carry over).
#[derive(Clone, Debug)]
pub struct Gitlink {
    pub path: String,
    pub url: String,
    pub sha: String,
}

/// A fixture imported as a bare repository.
#[derive(Debug)]
pub struct BareRepo {
    pub bare: PathBuf,
    /// `main`'s commit.
    pub sha: String,
    /// The merge requests of `.merge-requests/`, by iid (`id` is left 0 for the caller).
    pub merge_requests: Vec<MergeRequest>,
    /// Files stored as Git LFS pointers (their contents are in [`lfs_store`]).
    pub lfs_objects: usize,
}

/// Where a project's Git LFS objects live, one file per `sha256` oid.
pub fn lfs_store(data_dir: &Path, path: &str) -> PathBuf {
    data_dir.join("lfs").join(path)
}

/// `(iid, source branch)` from a `.merge-requests/<iid>-<source-branch>` directory name, or an
/// error naming the directory and the fix.
fn parse_merge_request_dir(dir: &Path) -> anyhow::Result<(u64, String)> {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let parsed = name.split_once('-').and_then(|(iid, branch)| {
        let iid = iid.parse::<u64>().ok().filter(|n| *n > 0)?;
        (validate_ref(branch) && branch != "main").then(|| (iid, branch.to_string()))
    });
    parsed.ok_or_else(|| {
        anyhow!(
            "{}: a merge request directory is named <iid>-<source-branch> with iid ≥ 1 and a \
             branch name other than main of letters, digits, '.', '_' and '-' \
             (e.g. .merge-requests/1-add-feature); rename it",
            dir.display()
        )
    })
}

/// The merge request directories of a fixture, by iid; errors name the directory and the fix.
fn merge_request_dirs(fixture_dir: &Path) -> anyhow::Result<Vec<(u64, String, PathBuf)>> {
    let root = fixture_dir.join(MERGE_REQUESTS_DIR);
    if !root.exists() {
        return Ok(Vec::new());
    }
    if !root.is_dir() {
        bail!(
            "{}: must be a directory of <iid>-<source-branch>/ overlays (e.g. 1-add-feature/)",
            root.display()
        );
    }
    let mut out: Vec<(u64, String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(&root).with_context(|| format!("read {}", root.display()))? {
        let dir = entry?.path();
        if !dir.is_dir() {
            bail!(
                "{}: only <iid>-<source-branch>/ directories belong in {MERGE_REQUESTS_DIR}/; \
                 move the file into one",
                dir.display()
            );
        }
        let (iid, branch) = parse_merge_request_dir(&dir)?;
        if let Some((_, _, other)) = out.iter().find(|(i, b, _)| *i == iid || *b == branch) {
            bail!(
                "{} and {}: two merge requests with the same iid or source branch; rename one",
                other.display(),
                dir.display()
            );
        }
        out.push((iid, branch, dir));
    }
    out.sort_by_key(|(iid, _, _)| *iid);
    Ok(out)
}

/// GitLab's default title for a merge request from `branch`: `add-feature` → `Add feature`.
fn title_from_branch(branch: &str) -> String {
    let words = branch.replace(['-', '_'], " ");
    let mut c = words.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// A git command with the fixed identity and date that make fixture SHAs deterministic.
fn git_fixed(home: &Path) -> Command {
    let mut c = git(home);
    c.env("GIT_AUTHOR_NAME", COMMIT_AUTHOR_NAME)
        .env("GIT_AUTHOR_EMAIL", COMMIT_AUTHOR_EMAIL)
        .env("GIT_AUTHOR_DATE", COMMIT_DATE)
        .env("GIT_COMMITTER_NAME", COMMIT_AUTHOR_NAME)
        .env("GIT_COMMITTER_EMAIL", COMMIT_AUTHOR_EMAIL)
        .env("GIT_COMMITTER_DATE", COMMIT_DATE);
    c
}

/// Commit the index of `work`; returns the new commit.
fn commit(home: &Path, work: &Path, message: &str) -> anyhow::Result<String> {
    let mut c = git_fixed(home);
    c.current_dir(work).args([
        "-c",
        "commit.gpgsign=false",
        "commit",
        "-q",
        "--allow-empty",
        "--no-verify",
        "-m",
        message,
    ]);
    run(c, "git commit")?;
    let mut c = git(home);
    c.current_dir(work).args(["rev-parse", "HEAD"]);
    run(c, "git rev-parse HEAD")
}

/// Turn a fixture directory into `<data_dir>/repos/<path>.git` with one commit
/// on `main` made with a fixed identity and date, with `submodules` as gitlinks and
/// `.gitmodules`. Each `.merge-requests/<iid>-<branch>/` becomes a commit on `main` that adds
/// or replaces its files, on `refs/heads/<branch>` and `refs/merge-requests/<iid>/head`, and
/// GitLab's merge ref `refs/merge-requests/<iid>/merge` (a merge commit into `main`). Files the
/// fixture's `.gitattributes` marks `filter=lfs` are committed as Git LFS pointers, their
/// contents kept in [`lfs_store`].
pub fn create_bare_repo(
    data_dir: &Path,
    path: &str,
    fixture_dir: &Path,
    submodules: &[Gitlink],
) -> anyhow::Result<BareRepo> {
    validate_project_path(path)?;
    if !fixture_dir.is_dir() {
        bail!("fixture {} is not a directory", fixture_dir.display());
    }
    let mr_dirs = merge_request_dirs(fixture_dir)?;
    let work = data_dir.join("src").join(path);
    let bare = repos_root(data_dir).join(format!("{path}.git"));
    let lfs = lfs_store(data_dir, path);
    for d in [&work, &bare, &lfs] {
        if d.exists() {
            std::fs::remove_dir_all(d).with_context(|| format!("remove {}", d.display()))?;
        }
    }
    let files = copy_tree(fixture_dir, &work)?;

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
    let mut lfs_objects = lfs_convert(data_dir, fixture_dir, &work, &files, &lfs)?;
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
    let sha = commit(data_dir, &work, COMMIT_MESSAGE.trim())?;

    let mut merge_requests = Vec::new();
    let mut pushes = vec!["main:refs/heads/main".to_string()];
    for (iid, branch, dir) in mr_dirs {
        // Each merge request starts from main, not from the previous one.
        let mut c = git(data_dir);
        c.current_dir(&work)
            .args(["checkout", "-q", "-f", "-B", &branch, "main"]);
        run(c, "git checkout (merge request)")?;
        let mut c = git(data_dir);
        c.current_dir(&work).args(["clean", "-q", "-ffdx"]);
        run(c, "git clean (merge request)")?;
        let files = copy_tree(&dir, &work)?;
        lfs_objects += lfs_convert(data_dir, &dir, &work, &files, &lfs)?;
        if !files.is_empty() {
            // Only the overlay's files: it adds and replaces, never deletes (gitlinks stay).
            let mut c = git(data_dir);
            c.current_dir(&work)
                .args(["-c", "core.autocrlf=false", "add", "-f", "--"])
                .args(&files);
            run(c, "git add (merge request)")?;
        }
        let title = title_from_branch(&branch);
        let head = commit(data_dir, &work, &title)?;
        let mut c = git_fixed(data_dir);
        c.current_dir(&work)
            .args([
                "commit-tree",
                &format!("{head}^{{tree}}"),
                "-p",
                "main",
                "-p",
            ])
            .arg(&head)
            .arg("-m")
            .arg(merge_message(&branch, "main"));
        let merge_sha = run(c, "git commit-tree (merge ref)")?;
        pushes.push(format!("{head}:refs/heads/{branch}"));
        pushes.push(format!("{head}:refs/merge-requests/{iid}/head"));
        pushes.push(format!("{merge_sha}:refs/merge-requests/{iid}/merge"));
        merge_requests.push(MergeRequest {
            id: 0,
            iid,
            title,
            source_branch: branch,
            target_branch: "main".into(),
            sha: head,
            target_sha: sha.clone(),
            merge_sha,
        });
    }

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
        .args(&pushes);
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
    Ok(BareRepo {
        bare,
        sha,
        merge_requests,
        lfs_objects,
    })
}

/// The first line of every Git LFS pointer file.
pub const LFS_POINTER_VERSION: &str = "version https://git-lfs.github.com/spec/v1";

/// Replace each of `files` (relative to `work`) that `.gitattributes` marks `filter=lfs` by a
/// Git LFS pointer and keep its content in `store/<sha256>`. Git itself decides which files
/// match (`git check-attr`), so every pattern git-lfs accepts works. Empty files stay as they
/// are, as git-lfs leaves them. A file that already is a pointer is an error unless its object
/// is stored: GitLab refuses such a push ("LFS objects are missing"), and it is what a fixture
/// committed through git-lfs looks like in a clone without git-lfs. Returns how many were stored.
fn lfs_convert(
    home: &Path,
    source: &Path,
    work: &Path,
    files: &[PathBuf],
    store: &Path,
) -> anyhow::Result<usize> {
    use sha2::{Digest, Sha256};
    use std::io::Write;
    if files.is_empty() {
        return Ok(0);
    }
    let mut input = Vec::new();
    for f in files {
        input.extend_from_slice(f.to_string_lossy().as_bytes());
        input.push(0);
    }
    let mut c = git(home);
    c.current_dir(work)
        .args(["check-attr", "-z", "--stdin", "filter"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().context("git check-attr: cannot run git")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    // Written from a thread: a large file list must not deadlock against unread output.
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().context("git check-attr")?;
    let _ = writer.join();
    if !out.status.success() {
        bail!(
            "git check-attr failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let fields: Vec<&[u8]> = out.stdout.split(|b| *b == 0).collect();
    let mut stored = 0;
    for triple in fields.chunks(3) {
        let [file, _attr, value] = triple else {
            continue;
        };
        if *value != b"lfs" {
            continue;
        }
        let rel = String::from_utf8_lossy(file).into_owned();
        let path = work.join(&rel);
        let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        if bytes.is_empty() {
            continue;
        }
        if bytes.starts_with(LFS_POINTER_VERSION.as_bytes()) {
            let text = String::from_utf8_lossy(&bytes);
            let oid = text
                .lines()
                .find_map(|l| l.strip_prefix("oid sha256:"))
                .unwrap_or("");
            if !is_oid(oid) || !store.join(oid).is_file() {
                let src = source.join(&rel);
                bail!(
                    "{0}: a Git LFS pointer without its content (LFS object {1} is missing). \
                     The fixture must hold the file's content; mock-gitlab makes the pointer. \
                     If the fixture's own repository stored it through git-lfs, move the fixture's \
                     filter=lfs rules to {FIXTURE_GITATTRIBUTES} and commit the content itself: \
                     GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null git add --renormalize {0}",
                    src.display(),
                    if oid.is_empty() { "?" } else { oid },
                );
            }
            continue;
        }
        let oid = format!("{:x}", Sha256::digest(&bytes));
        std::fs::create_dir_all(store).with_context(|| format!("create {}", store.display()))?;
        let obj = store.join(&oid);
        if !obj.exists() {
            // Complete or absent: the HTTP side may read the store at any time.
            let tmp = store.join(format!(".{oid}.{}.tmp", std::process::id()));
            std::fs::write(&tmp, &bytes).with_context(|| format!("write {}", tmp.display()))?;
            std::fs::rename(&tmp, &obj).with_context(|| format!("rename {}", obj.display()))?;
        }
        std::fs::write(&path, lfs_pointer(&oid, bytes.len() as u64))
            .with_context(|| format!("write pointer {}", path.display()))?;
        stored += 1;
    }
    Ok(stored)
}

/// The Git LFS pointer of an object.
pub fn lfs_pointer(oid: &str, size: u64) -> String {
    format!("{LFS_POINTER_VERSION}\noid sha256:{oid}\nsize {size}\n")
}

/// Create tag `name` at `sha` in a bare repository: annotated with `message` (fixed tagger and
/// date), else lightweight. An existing tag is an error.
pub fn create_tag(
    home: &Path,
    bare: &Path,
    name: &str,
    sha: &str,
    message: Option<&str>,
) -> anyhow::Result<()> {
    if !validate_ref(name) {
        bail!("tag name {name:?} is invalid: use letters, digits, '.', '_', '-' and '/'");
    }
    if resolve(home, bare, &format!("refs/tags/{name}")).is_ok() {
        bail!("Tag {name} already exists");
    }
    let mut c = git_fixed(home);
    c.arg("-C").arg(bare).arg("tag");
    if let Some(m) = message {
        c.args(["-a", "-m", m]);
    }
    c.args(["--", name, sha]);
    run(c, "git tag")?;
    Ok(())
}

/// GitLab's message of the merge commit of `source` into `target`.
pub fn merge_message(source: &str, target: &str) -> String {
    format!("Merge branch '{source}' into '{target}'")
}

/// `(name, is_tag, sha)` of a branch or tag: `refs/heads/x` and `refs/tags/x` say which; a bare
/// name is a branch if one exists, else a tag (GitLab's order).
pub fn resolve_named(home: &Path, bare: &Path, r: &str) -> anyhow::Result<(String, bool, String)> {
    if let Some(b) = r.strip_prefix("refs/heads/") {
        return Ok((b.to_string(), false, resolve_branch(home, bare, b)?));
    }
    if let Some(t) = r.strip_prefix("refs/tags/") {
        let sha = resolve(home, bare, r).with_context(|| format!("unknown tag {t:?}"))?;
        return Ok((t.to_string(), true, sha));
    }
    if !validate_ref(r) {
        bail!("invalid ref {r:?}");
    }
    if let Ok(sha) = resolve(home, bare, &format!("refs/heads/{r}")) {
        return Ok((r.to_string(), false, sha));
    }
    let sha = resolve(home, bare, &format!("refs/tags/{r}"))
        .map_err(|_| anyhow!("no branch or tag {r:?}"))?;
    Ok((r.to_string(), true, sha))
}

/// A 40-hex commit that exists in the repository.
pub fn resolve_commit(home: &Path, bare: &Path, sha: &str) -> anyhow::Result<String> {
    if sha.len() != 40 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("{sha:?} is not a 40-hex commit");
    }
    let mut c = git(home);
    c.arg("-C")
        .arg(bare)
        .args(["rev-parse", "--verify", "--quiet"])
        .arg(format!("{sha}^{{commit}}"));
    run(c, "git rev-parse").with_context(|| format!("no commit {sha}"))
}

/// The 40-hex commit a full ref name (`refs/heads/x`, `refs/tags/v1`, …) points at.
pub fn resolve(home: &Path, bare: &Path, full_ref: &str) -> anyhow::Result<String> {
    let name = full_ref.strip_prefix("refs/").unwrap_or("");
    if !validate_ref(name) {
        bail!("invalid ref {full_ref:?}");
    }
    let mut c = git(home);
    c.arg("-C")
        .arg(bare)
        .args(["rev-parse", "--verify", "--quiet"])
        .arg(format!("{full_ref}^{{commit}}"));
    let sha = run(c, "git rev-parse").with_context(|| format!("unknown ref {full_ref:?}"))?;
    if sha.len() != 40 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("unexpected sha {sha:?} for {full_ref}");
    }
    Ok(sha)
}

/// The 40-hex commit a branch points at.
pub fn resolve_branch(home: &Path, bare: &Path, branch: &str) -> anyhow::Result<String> {
    if !validate_ref(branch) {
        bail!("invalid ref {branch:?}");
    }
    resolve(home, bare, &format!("refs/heads/{branch}"))
        .with_context(|| format!("unknown branch {branch:?}"))
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

/// Whether `s` is a Git LFS object id (lowercase sha256 hex).
fn is_oid(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
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
                    && crate::api::ct_eq(&j.token, &password)
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

// ---------------------------------------------------------------------------
// Git LFS (batch API, basic transfer)
// ---------------------------------------------------------------------------

/// The largest LFS batch request body accepted (a list of oids and sizes).
const MAX_LFS_BATCH_BODY: usize = 4 * 1024 * 1024;
const LFS_MEDIA_TYPE: &str = "application/vnd.git-lfs+json";

/// `http://<host>` as the client addressed us (so download hrefs work from wherever the
/// client is: the host loopback, 10.0.2.2 in a container), else the external URL.
fn request_base(headers: &HeaderMap, external_url: &str) -> String {
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

fn lfs_error(status: StatusCode, message: &str) -> Response {
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
async fn lfs_batch(
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
async fn lfs_download(path: &Path) -> Response {
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

    #[test]
    fn merge_request_dirs_and_titles() {
        let p = |n: &str| parse_merge_request_dir(Path::new(n));
        assert_eq!(p("1-add-feature").unwrap(), (1, "add-feature".into()));
        assert_eq!(p("12-fix_it.2").unwrap(), (12, "fix_it.2".into()));
        for bad in [
            "add-feature",
            "0-x",
            "1-",
            "1-main",
            "x-y",
            "1-a..b",
            "-1-x",
        ] {
            let e = p(bad).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("rename it"), "{bad}: {e}");
        }
        assert_eq!(title_from_branch("add-feature"), "Add feature");
        assert_eq!(title_from_branch("fix_the_bug"), "Fix the bug");
    }

    #[test]
    fn lfs_pointers_follow_the_spec() {
        let oid = "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393";
        assert_eq!(
            lfs_pointer(oid, 12345),
            format!("version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize 12345\n")
        );
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
