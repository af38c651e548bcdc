//! Where things live: fixtures in the repository, the cache of expensive builds, run outputs.

use std::path::PathBuf;

/// The repository's `fixtures/` directory (`RUNNERLAB_FIXTURES` overrides it for installed binaries).
pub fn fixtures() -> PathBuf {
    if let Ok(p) = std::env::var("RUNNERLAB_FIXTURES") {
        return PathBuf::from(p);
    }
    workspace_root().join("fixtures")
}

/// The workspace root, known at compile time.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("harness crate lives in the workspace")
        .to_path_buf()
}

/// The cache of built runners, base images and tarballs: `RUNNERLAB_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/runnerlab`, else `~/.cache/runnerlab`.
pub fn cache_dir() -> PathBuf {
    if let Ok(p) = std::env::var("RUNNERLAB_CACHE_DIR") {
        return PathBuf::from(p);
    }
    if let Ok(p) = std::env::var("XDG_CACHE_HOME")
        && !p.is_empty()
    {
        return PathBuf::from(p).join("runnerlab");
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    PathBuf::from(home).join(".cache/runnerlab")
}

/// Where reports of a run go: `target/runnerlab/<run id>/` (`RUNNERLAB_OUT` overrides the parent).
pub fn run_output_dir(run_id: &str) -> PathBuf {
    let base = std::env::var("RUNNERLAB_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target/runnerlab"));
    base.join(run_id)
}

/// Write `bytes` to `path` completely or not at all: a temporary file in the same directory,
/// fsync'd, then renamed over the target.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    // tempfile creates 0600; keep the mode of the file being replaced, else the usual 0644
    // (Podman reads /etc/containers/*.conf as the rootless user).
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
