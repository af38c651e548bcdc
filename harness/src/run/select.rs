//! Which files of a directory become the project: what `git add -A` would commit.
//!
//! In a git work tree, `git ls-files -co --exclude-standard` (tracked and untracked files, not
//! ignored ones; tracked files deleted from the tree are left out, and so are submodules, whose
//! content is another repository); otherwise every file. The selection is copied into a staging
//! directory that mock-gitlab commits.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// How the files were chosen, for the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// A git work tree: `git ls-files -co --exclude-standard`.
    Git,
    /// Not a git work tree: every file.
    All,
}

/// The selected files, relative to `dir`, sorted; and what was skipped (submodules).
#[derive(Clone, Debug)]
pub struct Selected {
    pub how: Selection,
    pub files: Vec<PathBuf>,
    pub skipped: Vec<PathBuf>,
}

/// A git command for the user's repository: their configuration counts (ignore rules), but an
/// owner other than the caller does not stop it (`runnerlab` runs as root).
fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("-c")
        .arg("safe.directory=*")
        .arg("-C")
        .arg(dir)
        .stdin(Stdio::null());
    c
}

fn is_work_tree(dir: &Path) -> bool {
    git(dir)
        .args(["rev-parse", "--is-inside-work-tree"])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "true")
}

/// Choose the files of `dir` (see the module documentation).
pub fn select(dir: &Path) -> Result<Selected> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let (how, listed) = if is_work_tree(dir) {
        let out = git(dir)
            .args(["ls-files", "-z", "-co", "--exclude-standard"])
            .output()
            .context("running git ls-files")?;
        if !out.status.success() {
            bail!(
                "git ls-files in {} failed: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let files = out
            .stdout
            .split(|&b| b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| PathBuf::from(String::from_utf8_lossy(p).into_owned()))
            .collect::<Vec<_>>();
        (Selection::Git, files)
    } else {
        let mut files = Vec::new();
        walk(dir, Path::new(""), &mut files)?;
        (Selection::All, files)
    };
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    for f in listed {
        match dir.join(&f).symlink_metadata() {
            // A tracked file deleted from the tree is not part of it.
            Err(_) => {}
            // A gitlink: the submodule's own repository, not files of this one.
            Ok(m) if m.is_dir() => skipped.push(f),
            Ok(_) => files.push(f),
        }
    }
    files.sort();
    files.dedup();
    Ok(Selected {
        how,
        files,
        skipped,
    })
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let here = root.join(rel);
    for e in std::fs::read_dir(&here).with_context(|| format!("reading {}", here.display()))? {
        let e = e?;
        let r = rel.join(e.file_name());
        if e.file_type()?.is_dir() {
            walk(root, &r, out)?;
        } else {
            out.push(r);
        }
    }
    Ok(())
}

/// Copy the selected files of `dir` into `to` (symlinks stay symlinks, modes are kept).
pub fn stage(dir: &Path, files: &[PathBuf], to: &Path) -> Result<()> {
    for f in files {
        let src = dir.join(f);
        let dst = to.join(f);
        if let Some(p) = dst.parent() {
            std::fs::create_dir_all(p)?;
        }
        let meta = src.symlink_metadata()?;
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else {
            std::fs::copy(&src, &dst)
                .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
        }
    }
    Ok(())
}

/// A project name the mock accepts, from the directory's name: letters, digits, `_`, `-`, `.`;
/// not starting with `.` or `-`, not ending with `.git`.
pub fn project_name(dir: &Path) -> String {
    let base = std::fs::canonicalize(dir)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let mut name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    name = name.trim_start_matches(['.', '-']).to_owned();
    while let Some(n) = name.strip_suffix(".git") {
        name = n.to_owned();
    }
    if name.is_empty() {
        "project".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(dir: &Path, script: &str) {
        let st = Command::new("sh")
            .arg("-ec")
            .arg(script)
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .status()
            .expect("sh");
        assert!(st.success(), "{script}");
    }

    fn names(s: &Selected) -> Vec<String> {
        s.files
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_git_work_tree_gives_tracked_and_untracked_files_but_not_ignored_ones() {
        let d = tempfile::tempdir().unwrap();
        sh(
            d.path(),
            "git init -q . && printf 'target/\\n*.log\\n' > .gitignore && echo ci > .gitlab-ci.yml \
             && mkdir -p src target && echo a > src/a.rs && echo x > target/out && echo l > x.log \
             && echo gone > gone.txt && git add -A && \
             git -c user.name=t -c user.email=t@t commit -qm init && rm gone.txt && echo new > new.txt",
        );
        let s = select(d.path()).unwrap();
        assert_eq!(s.how, Selection::Git);
        assert_eq!(
            names(&s),
            [".gitignore", ".gitlab-ci.yml", "new.txt", "src/a.rs"]
        );
    }

    #[test]
    fn a_plain_directory_gives_every_file() {
        let d = tempfile::tempdir().unwrap();
        sh(
            d.path(),
            "echo ci > .gitlab-ci.yml && mkdir -p a/b && echo x > a/b/c && echo l > x.log \
             && ln -s a/b/c link",
        );
        let s = select(d.path()).unwrap();
        assert_eq!(s.how, Selection::All);
        assert_eq!(names(&s), [".gitlab-ci.yml", "a/b/c", "link", "x.log"]);
        let to = tempfile::tempdir().unwrap();
        stage(d.path(), &s.files, to.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(to.path().join("a/b/c")).unwrap(),
            "x\n"
        );
        assert_eq!(
            std::fs::read_link(to.path().join("link")).unwrap(),
            Path::new("a/b/c")
        );
    }

    #[test]
    fn project_names_are_what_the_mock_accepts() {
        let d = tempfile::tempdir().unwrap();
        for (dir, want) in [
            ("my project", "my-project"),
            (".hidden", "hidden"),
            ("repo.git", "repo"),
            ("ünï", "n-"),
        ] {
            let p = d.path().join(dir);
            std::fs::create_dir(&p).unwrap();
            let got = project_name(&p);
            assert_eq!(got, want);
            mock_gitlab::git::validate_project_path(&format!("runnerlab/{got}")).unwrap();
        }
    }
}
