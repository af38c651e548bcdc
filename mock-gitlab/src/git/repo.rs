//! Bare repositories through the `git` command: project and ref names, the fixed identity of
//! fixture commits, tags, and what a commit holds.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, anyhow, bail};

pub const COMMIT_AUTHOR_NAME: &str = "runnerlab";
pub const COMMIT_AUTHOR_EMAIL: &str = "lab@runnerlab.invalid";
/// Fixed author and committer date: together with the fixed identity this
/// makes fixture commit SHAs deterministic.
pub const COMMIT_DATE: &str = "2026-01-01T00:00:00Z";
pub const COMMIT_MESSAGE: &str = "Initial commit\n";

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
pub(super) fn git(home: &Path) -> Command {
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

pub(super) fn run(mut cmd: Command, what: &str) -> anyhow::Result<String> {
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

/// A git command with the fixed identity and date that make fixture SHAs deterministic.
pub(super) fn git_fixed(home: &Path) -> Command {
    let mut c = git(home);
    c.env("GIT_AUTHOR_NAME", COMMIT_AUTHOR_NAME)
        .env("GIT_AUTHOR_EMAIL", COMMIT_AUTHOR_EMAIL)
        .env("GIT_AUTHOR_DATE", COMMIT_DATE)
        .env("GIT_COMMITTER_NAME", COMMIT_AUTHOR_NAME)
        .env("GIT_COMMITTER_EMAIL", COMMIT_AUTHOR_EMAIL)
        .env("GIT_COMMITTER_DATE", COMMIT_DATE);
    c
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

#[cfg(test)]
mod tests {
    use super::*;

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
