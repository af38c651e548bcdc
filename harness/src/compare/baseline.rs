//! Baselines: a run's report directory kept under `<cache>/baselines/NAME/`
//! (`cargo lab conformance --save-baseline NAME`), to compare a later run with
//! (`cargo lab compare --baseline NAME`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::diff::Side;

/// Check a baseline name: letters, digits, `.`, `-`, `_`; not starting with `.` (so neither `..`
/// nor a hidden temporary directory).
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !ok {
        bail!(
            "bad baseline name {name:?}: use letters, digits, '.', '-' and '_' (no '/', not starting with '.'), e.g. before-upgrade"
        );
    }
    Ok(())
}

/// `<cache>/baselines/`.
pub fn baselines_dir() -> PathBuf {
    crate::paths::cache_dir().join("baselines")
}

/// Where baseline `name` lives.
pub fn dir(name: &str) -> Result<PathBuf> {
    validate_name(name)?;
    Ok(baselines_dir().join(name))
}

/// The fix for a baseline that cannot be used.
fn resave(name: &str) -> String {
    format!("run `cargo lab conformance --save-baseline {name}` again")
}

/// Store a copy of the report directory `run_dir` as baseline `name`, replacing an older one;
/// the baseline is complete or absent (copied to a temporary directory next to it, then renamed).
pub fn save(name: &str, run_dir: &Path) -> Result<PathBuf> {
    let dest = dir(name)?;
    // Only a sound report becomes a baseline.
    super::load_report(
        &run_dir.join("report.json"),
        "run the conformance suite again",
    )?;
    let parent = baselines_dir();
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".tmp-{name}-"))
        .tempdir_in(&parent)
        .with_context(|| format!("creating a temporary directory in {}", parent.display()))?;
    copy_dir(run_dir, tmp.path())?;
    // Replace an older baseline: move it aside first, so `dest` never holds a partial copy.
    let old = parent.join(format!(".old-{name}-{}", std::process::id()));
    let had_old = dest.exists();
    if had_old {
        std::fs::rename(&dest, &old)
            .with_context(|| format!("moving the old baseline {} aside", dest.display()))?;
    }
    let staged = tmp.keep();
    if let Err(e) = std::fs::rename(&staged, &dest) {
        if had_old {
            let _ = std::fs::rename(&old, &dest);
        }
        let _ = std::fs::remove_dir_all(&staged);
        return Err(e).with_context(|| format!("renaming into {}", dest.display()));
    }
    if had_old {
        std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    Ok(dest)
}

/// Load baseline `name`; a missing baseline, a corrupt `report.json` or another schema is a
/// one-line error naming the file and the fix.
pub fn load(name: &str) -> Result<Side> {
    let d = dir(name)?;
    let report = d.join("report.json");
    if !d.is_dir() {
        let known = list().unwrap_or_default();
        bail!(
            "no baseline {name:?}: {} does not exist ({}) — fix: run `cargo lab conformance --save-baseline {name}` first",
            d.display(),
            if known.is_empty() {
                "no baselines saved yet".to_owned()
            } else {
                format!("saved: {}", known.join(", "))
            }
        );
    }
    Ok(Side {
        report: super::load_report(&report, &resave(name))?,
        dir: d,
    })
}

/// The saved baselines' names, sorted.
pub fn list() -> Result<Vec<String>> {
    let mut v = Vec::new();
    let d = baselines_dir();
    if !d.is_dir() {
        return Ok(v);
    }
    for e in std::fs::read_dir(&d)? {
        let n = e?.file_name().to_string_lossy().into_owned();
        if !n.starts_with('.') {
            v.push(n);
        }
    }
    v.sort();
    Ok(v)
}

/// Copy a directory tree (files and directories; symbolic links are followed).
pub fn copy_dir(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst).with_context(|| format!("creating {}", dst.display()))?;
    for e in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let e = e?;
        let (from, to) = (e.path(), dst.join(e.file_name()));
        if from.is_dir() {
            copy_dir(&from, &to)?;
        } else {
            std::fs::copy(&from, &to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::diff::tests::report;
    use super::*;

    /// `RUNNERLAB_CACHE_DIR` is process-wide: the baseline tests run one at a time.
    static CACHE: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn with_cache<T>(f: impl FnOnce(&Path) -> T) -> T {
        let _g = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        let tmp = tempfile::tempdir().unwrap();
        // SAFETY: the tests that read the cache directory hold CACHE.
        unsafe { std::env::set_var("RUNNERLAB_CACHE_DIR", tmp.path()) };
        let r = f(tmp.path());
        unsafe { std::env::remove_var("RUNNERLAB_CACHE_DIR") };
        r
    }

    fn run_dir(root: &Path) -> PathBuf {
        let d = root.join("run");
        let r = report(Vec::new());
        crate::paths::write_atomic(&d.join("report.json"), r.json().unwrap().as_bytes()).unwrap();
        crate::paths::write_atomic(&d.join("traces/p/hello.shell.log"), b"hi\n").unwrap();
        d
    }

    #[test]
    fn names_are_validated() {
        for bad in ["", "a/b", "..", "../x", ".hidden", "x y", "a\0"] {
            let e = validate_name(bad).unwrap_err().to_string();
            assert!(e.starts_with("bad baseline name"), "{e}");
        }
        for good in ["before-upgrade", "v19.4_podman4.3"] {
            validate_name(good).unwrap();
        }
    }

    #[test]
    fn save_copies_the_whole_directory_and_replaces_an_old_one() {
        with_cache(|cache| {
            let run = run_dir(cache);
            let d = save("before", &run).unwrap();
            assert_eq!(d, cache.join("baselines/before"));
            assert!(d.join("traces/p/hello.shell.log").is_file());
            std::fs::write(run.join("extra.txt"), "x").unwrap();
            save("before", &run).unwrap();
            assert!(d.join("extra.txt").is_file());
            // Nothing temporary left behind.
            assert_eq!(list().unwrap(), ["before"]);
            let entries = std::fs::read_dir(cache.join("baselines")).unwrap().count();
            assert_eq!(entries, 1);
            let side = load("before").unwrap();
            assert_eq!(side.report.run_id, "rl-test");
            assert_eq!(side.dir, d);
        })
    }

    #[test]
    fn save_refuses_a_directory_without_a_report() {
        with_cache(|cache| {
            let e = format!("{:#}", save("x", cache).unwrap_err());
            assert!(e.contains("report.json"), "{e}");
            assert!(!cache.join("baselines/x").exists());
        })
    }

    #[test]
    fn load_errors_are_one_line_with_the_file_and_the_fix() {
        with_cache(|cache| {
            let e = format!("{:#}", load("nope").unwrap_err());
            assert!(e.starts_with("no baseline \"nope\""), "{e}");
            assert!(e.contains("--save-baseline nope` first"), "{e}");
            assert!(!e.contains('\n'), "{e}");

            let b = cache.join("baselines/x");
            std::fs::create_dir_all(&b).unwrap();
            std::fs::write(b.join("report.json"), "{ not json").unwrap();
            let e = format!("{:#}", load("x").unwrap_err());
            assert!(
                e.contains(&b.join("report.json").display().to_string()),
                "{e}"
            );
            assert!(e.contains("is not a runnerlab report"), "{e}");
            assert!(
                e.contains("fix: run `cargo lab conformance --save-baseline x` again"),
                "{e}"
            );
            assert!(!e.contains('\n'), "{e}");

            std::fs::write(b.join("report.json"), r#"{"schema": "runnerlab.soak/1"}"#).unwrap();
            let e = format!("{:#}", load("x").unwrap_err());
            assert!(
                e.contains("(expected schema runnerlab.report/1, found \"runnerlab.soak/1\")"),
                "{e}"
            );
            assert!(!e.contains('\n'), "{e}");

            std::fs::write(b.join("report.json"), r#"{"schema": "runnerlab.report/1"}"#).unwrap();
            let e = format!("{:#}", load("x").unwrap_err());
            assert!(e.contains("is corrupt"), "{e}");
            assert!(!e.contains('\n'), "{e}");

            std::fs::remove_file(b.join("report.json")).unwrap();
            let e = format!("{:#}", load("x").unwrap_err());
            assert!(e.contains("cannot be read"), "{e}");
            assert!(!e.contains('\n'), "{e}");

            let e = format!("{:#}", load("../etc").unwrap_err());
            assert!(e.starts_with("bad baseline name"), "{e}");
        })
    }
}
