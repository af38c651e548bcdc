//! Fixture directories imported as bare repositories: one commit on `main`, submodules as
//! gitlinks, merge requests as branches and merge refs, Git LFS files as pointers.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, anyhow, bail};

use super::lfs::{LFS_POINTER_VERSION, is_oid, lfs_pointer, lfs_store};
use super::repo::{
    COMMIT_MESSAGE, git, git_fixed, merge_message, repos_root, run, validate_project_path,
    validate_ref,
};
use crate::state::MergeRequest;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
