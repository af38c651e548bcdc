//! The runner forge: one trustworthy way to a real gitlab-runner and its helper binary.
//!
//! Sources, tried in this order unless the caller picks one:
//! 1. `path:/abs/gitlab-runner` — an operator-supplied binary (helper next to it or `--helper`);
//! 2. `image:<ref>` — an image in local storage or pullable; the binaries are copied out of it;
//! 3. `module:<pseudo-version>` — `go build` of the Go module, with the version's compat layer from
//!    `fixtures/runner-compat/<version>/` when the proxy refuses some dependencies.
//!
//! A build lands in `<cache>/runners/<key>/` with a `provenance.json` written last (write, then
//! rename): an entry without it, or whose binaries no longer match its sha256 or `--version`, is
//! rebuilt. A file lock keeps concurrent callers from building twice.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use super::{Progress, lock, sha256_file, sha256_str, sha256_tree, walk};
use crate::engine::podman::Podman;
use crate::paths;

/// One row of `fixtures/runner-versions.toml`.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct VersionRow {
    pub name: String,
    pub module: String,
    pub pseudo_version: Option<String>,
    pub revision: String,
    #[serde(default = "default_branch")]
    pub branch: String,
    pub compat: Option<String>,
    pub image: Option<String>,
    pub helper_image: Option<String>,
    pub version_line: String,
    #[serde(default)]
    pub default: bool,
}

fn default_branch() -> String {
    "main".into()
}

#[derive(Deserialize)]
struct VersionsFile {
    version: Vec<VersionRow>,
}

/// Read `fixtures/runner-versions.toml`.
pub fn versions() -> Result<Vec<VersionRow>> {
    let p = paths::fixtures().join("runner-versions.toml");
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    let f: VersionsFile = toml::from_str(&text).map_err(|e| {
        anyhow!(
            "{}: {}\n  fix: each [[version]] row needs name, module, revision and version_line",
            p.display(),
            e
        )
    })?;
    Ok(f.version)
}

/// The row for `name`, or the default row.
pub fn version_row(name: Option<&str>) -> Result<VersionRow> {
    let rows = versions()?;
    let found = match name {
        Some(n) => rows.iter().find(|r| r.name == n),
        None => rows.iter().find(|r| r.default).or(rows.first()),
    };
    found.cloned().ok_or_else(|| {
        anyhow!(
            "unknown runner version {:?}; known: {}\n  fix: add a [[version]] row to fixtures/runner-versions.toml",
            name.unwrap_or("<default>"),
            rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", ")
        )
    })
}

/// Where a runner comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Path(PathBuf),
    Image(String),
    Module(String),
}

impl FromStr for Source {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            anyhow!(
                "bad runner source {s:?}: expected path:/abs/gitlab-runner, image:<ref> or module:<pseudo-version>"
            )
        };
        let (kind, val) = s.split_once(':').ok_or_else(bad)?;
        if val.is_empty() {
            return Err(bad());
        }
        match kind {
            "path" => {
                let p = PathBuf::from(val);
                if !p.is_absolute() {
                    bail!(
                        "runner source {s:?}: the path must be absolute (path:/abs/gitlab-runner)"
                    );
                }
                Ok(Source::Path(p))
            }
            "image" => Ok(Source::Image(val.to_owned())),
            "module" => Ok(Source::Module(val.to_owned())),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Path(p) => write!(f, "path:{}", p.display()),
            Source::Image(r) => write!(f, "image:{r}"),
            Source::Module(v) => write!(f, "module:{v}"),
        }
    }
}

/// The compat layer applied to a module build.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Compat {
    pub name: String,
    /// sha256 over the layer's directory, first 12 hex digits in descriptions.
    pub hash: String,
}

/// Where a runner came from and what it is, recorded next to it and quoted by every report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Provenance {
    pub source: String,
    pub version: String,
    pub revision: String,
    pub branch: String,
    pub go_version: Option<String>,
    pub build_flags: Option<String>,
    pub compat: Option<Compat>,
    pub runner_sha256: String,
    pub helper_sha256: String,
    /// RFC 3339.
    pub built_at: String,
    pub build_seconds: f64,
}

impl Provenance {
    /// "19.4.0 (fc1f1862) built from module <pv> with compat layer <hash>" — never just a version.
    pub fn describe(&self) -> String {
        let from = match self.source.split_once(':') {
            Some(("module", v)) => format!("built from module {v}"),
            Some(("image", r)) => format!("taken from image {r}"),
            Some(("path", p)) => format!("supplied as {p}"),
            _ => format!("from {}", self.source),
        };
        match &self.compat {
            Some(c) => format!(
                "{} ({}) {from} with compat layer {}@{}",
                self.version,
                self.revision,
                c.name,
                &c.hash[..12]
            ),
            None => format!("{} ({}) {from}", self.version, self.revision),
        }
    }
}

/// A verified runner: binaries in the cache, and what they are.
#[derive(Clone, Debug)]
pub struct ForgedRunner {
    pub dir: PathBuf,
    pub row: VersionRow,
    pub provenance: Provenance,
}

impl ForgedRunner {
    pub fn runner_bin(&self) -> PathBuf {
        self.dir.join("gitlab-runner")
    }
    pub fn helper_bin(&self) -> PathBuf {
        self.dir.join("gitlab-runner-helper")
    }
    pub fn describe(&self) -> String {
        self.provenance.describe()
    }
}

/// Where the helper binary comes from when the runner's source does not say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HelperSource {
    Path(PathBuf),
    Image(String),
}

impl FromStr for HelperSource {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        if let Some(r) = s.strip_prefix("image:") {
            return Ok(HelperSource::Image(r.to_owned()));
        }
        let p = PathBuf::from(s.strip_prefix("path:").unwrap_or(s));
        if !p.is_absolute() {
            bail!(
                "bad helper source {s:?}: expected path:/abs/gitlab-runner-helper or image:<ref>"
            );
        }
        Ok(HelperSource::Path(p))
    }
}

/// What to get.
#[derive(Clone, Debug, Default)]
pub struct GetOptions {
    pub version: Option<String>,
    pub from: Option<Source>,
    /// The helper, for `path:` sources without a helper next to the runner, or `image:` sources
    /// whose helper image is not the version row's.
    pub helper: Option<HelperSource>,
}

/// Get a verified runner, building or extracting it only when the cache has no sound copy.
pub async fn get(opts: &GetOptions) -> Result<ForgedRunner> {
    let row = version_row(opts.version.as_deref())?;
    let sources: Vec<Source> = match &opts.from {
        Some(s) => vec![s.clone()],
        None => default_sources(&row),
    };
    let mut errors = Vec::new();
    for src in &sources {
        match get_from(&row, src, opts).await {
            Ok(r) => return Ok(r),
            Err(e) => {
                // With an explicit source, its error is the answer; otherwise try the next one.
                if opts.from.is_some() {
                    return Err(e);
                }
                errors.push(format!("  - {src}: {e:#}"));
            }
        }
    }
    bail!(
        "no runner {} could be had; sources tried:\n{}\n  fix: supply one with --from path:/abs/gitlab-runner (and --helper) or --from image:<ref>",
        row.name,
        errors.join("\n")
    )
}

/// Sources in the documented order for a version row. `RUNNERLAB_RUNNER` (a source string)
/// puts an operator's choice first.
fn default_sources(row: &VersionRow) -> Vec<Source> {
    let mut v = Vec::new();
    if let Ok(s) = std::env::var("RUNNERLAB_RUNNER")
        && let Ok(src) = s.parse()
    {
        v.push(src);
    }
    if let Some(img) = &row.image {
        v.push(Source::Image(img.clone()));
    }
    if let Some(pv) = &row.pseudo_version {
        v.push(Source::Module(pv.clone()));
    }
    v
}

fn compat_dir(row: &VersionRow) -> Option<PathBuf> {
    row.compat
        .as_ref()
        .map(|c| paths::fixtures().join("runner-compat").join(c))
}

/// Cache key: source, version and the compat layer's content.
fn cache_key(
    row: &VersionRow,
    src: &Source,
    helper: Option<&HelperSource>,
) -> Result<(String, Option<Compat>)> {
    let compat = match (src, compat_dir(row)) {
        (Source::Module(_), Some(d)) => Some(Compat {
            name: row.compat.clone().expect("compat dir implies name"),
            hash: sha256_tree(&d)
                .with_context(|| format!("hashing compat layer {}", d.display()))?,
        }),
        _ => None,
    };
    let src_id = match src {
        // A supplied binary is keyed by its content, so replacing it is noticed.
        Source::Path(p) => format!(
            "path:{}",
            sha256_file(p).with_context(|| format!("source {src}"))?
        ),
        other => other.to_string(),
    };
    let helper_id = match helper {
        Some(HelperSource::Path(h)) => sha256_file(h)?,
        Some(HelperSource::Image(r)) => format!("image:{r}"),
        None => String::new(),
    };
    let key = sha256_str(&[
        FORGE_REVISION,
        &row.name,
        &src_id,
        &helper_id,
        compat.as_ref().map(|c| c.hash.as_str()).unwrap_or(""),
    ]);
    Ok((key[..16].to_owned(), compat))
}

/// Bumped when the build steps change.
const FORGE_REVISION: &str = "2";

async fn get_from(row: &VersionRow, src: &Source, opts: &GetOptions) -> Result<ForgedRunner> {
    let (key, compat) = cache_key(row, src, opts.helper.as_ref())?;
    let root = paths::cache_dir().join("runners");
    let dir = root.join(format!("{}-{key}", row.name));
    let _guard = lock(&root.join(format!("{}-{key}.lock", row.name))).await?;
    if let Some(r) = load_cached(&dir, row)? {
        return Ok(r);
    }
    let progress = Progress::new(&format!("runner {}", row.name));
    let started = Instant::now();
    // Build into a fresh sibling directory and rename: a killed build never looks complete.
    let staging = root.join(format!(".{}-{key}.staging", row.name));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    let (go_version, build_flags) = match src {
        Source::Path(p) => {
            progress.step(format!("copying {}", p.display()));
            copy_supplied(p, opts.helper.as_ref(), &staging, &progress).await?;
            (None, None)
        }
        Source::Image(r) => {
            // Pull only when asked for explicitly: on a machine without a registry an implicit
            // pull would only add minutes of retries before the module build.
            let helper = match &opts.helper {
                Some(HelperSource::Image(h)) => Some(h.clone()),
                Some(HelperSource::Path(_)) => {
                    bail!(
                        "an image: source takes its helper from an image: use --helper image:<ref>"
                    )
                }
                None => row.helper_image.clone(),
            };
            let helper = helper.ok_or_else(|| {
                anyhow!(
                    "image source: no helper_image for {} in fixtures/runner-versions.toml\n  fix: add one, or give --helper image:<ref>",
                    row.name
                )
            })?;
            let pull = opts.from.is_some();
            let podman = Podman::lab()?;
            extract_binary(
                &podman,
                r,
                "/usr/bin/gitlab-runner",
                &staging.join("gitlab-runner"),
                &progress,
                pull,
            )
            .await?;
            extract_binary(
                &podman,
                &helper,
                "/usr/bin/gitlab-runner-helper",
                &staging.join("gitlab-runner-helper"),
                &progress,
                pull,
            )
            .await?;
            (None, None)
        }
        Source::Module(pv) => {
            let (gv, flags) = build_module(row, pv, compat.as_ref(), &staging, &progress).await?;
            (Some(gv), Some(flags))
        }
    };
    let (version, revision) = verify_version(&staging.join("gitlab-runner"), row)
        .with_context(|| format!("the runner from {src} failed verification"))?;
    verify_helper(&staging.join("gitlab-runner-helper"))?;
    let prov = Provenance {
        source: src.to_string(),
        version,
        revision,
        branch: row.branch.clone(),
        go_version,
        build_flags,
        compat,
        runner_sha256: sha256_file(&staging.join("gitlab-runner"))?,
        helper_sha256: sha256_file(&staging.join("gitlab-runner-helper"))?,
        built_at: now_rfc3339(),
        build_seconds: started.elapsed().as_secs_f64(),
    };
    paths::write_atomic(
        &staging.join("provenance.json"),
        serde_json::to_string_pretty(&prov)?.as_bytes(),
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&staging, &dir)?;
    progress.finish(format!(
        "{} in {:.0}s",
        prov.describe(),
        started.elapsed().as_secs_f64()
    ));
    Ok(ForgedRunner {
        dir,
        row: row.clone(),
        provenance: prov,
    })
}

/// A cache entry is sound when its provenance exists, both binaries match their recorded
/// sha256, and the runner still prints the expected version. Anything else is removed.
fn load_cached(dir: &Path, row: &VersionRow) -> Result<Option<ForgedRunner>> {
    let pf = dir.join("provenance.json");
    if !pf.exists() {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        return Ok(None);
    }
    let sound = (|| -> Result<Provenance> {
        let prov: Provenance = serde_json::from_slice(&std::fs::read(&pf)?)?;
        if sha256_file(&dir.join("gitlab-runner"))? != prov.runner_sha256 {
            bail!("gitlab-runner does not match its recorded sha256");
        }
        if sha256_file(&dir.join("gitlab-runner-helper"))? != prov.helper_sha256 {
            bail!("gitlab-runner-helper does not match its recorded sha256");
        }
        verify_version(&dir.join("gitlab-runner"), row)?;
        Ok(prov)
    })();
    match sound {
        Ok(provenance) => Ok(Some(ForgedRunner {
            dir: dir.to_path_buf(),
            row: row.clone(),
            provenance,
        })),
        Err(e) => {
            eprintln!(
                "runnerlab: cached runner at {} is corrupt ({e:#}); rebuilding",
                dir.display()
            );
            std::fs::remove_dir_all(dir)?;
            Ok(None)
        }
    }
}

/// Run `--version`; check the first line and return (version, revision).
pub fn verify_version(bin: &Path, row: &VersionRow) -> Result<(String, String)> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("{} --version exited with {}", bin.display(), out.status);
    }
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let version = field("Version:");
    let revision = field("Git revision:");
    if !text
        .lines()
        .next()
        .unwrap_or("")
        .starts_with(row.version_line.trim_end())
    {
        bail!(
            "{} --version printed {:?}, expected {:?} (fixtures/runner-versions.toml)",
            bin.display(),
            text.lines().next().unwrap_or(""),
            row.version_line
        );
    }
    if version.contains("development") || revision.is_empty() {
        bail!(
            "{} reports a development build ({version}, {revision})",
            bin.display()
        );
    }
    Ok((version, revision))
}

fn verify_helper(bin: &Path) -> Result<()> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", bin.display()))?;
    if !out.status.success() {
        bail!("{} --version exited with {}", bin.display(), out.status);
    }
    Ok(())
}

fn copy_exec(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

async fn copy_supplied(
    runner: &Path,
    helper: Option<&HelperSource>,
    out: &Path,
    progress: &Progress,
) -> Result<()> {
    if !runner.is_file() {
        bail!(
            "path source: {} is not a file\n  fix: give the absolute path of a gitlab-runner binary",
            runner.display()
        );
    }
    copy_exec(runner, &out.join("gitlab-runner"))?;
    let dest = out.join("gitlab-runner-helper");
    match helper {
        Some(HelperSource::Path(h)) => copy_exec(h, &dest),
        Some(HelperSource::Image(r)) => {
            extract_binary(
                &Podman::lab()?,
                r,
                "/usr/bin/gitlab-runner-helper",
                &dest,
                progress,
                true,
            )
            .await
        }
        None => {
            let beside = runner.with_file_name("gitlab-runner-helper");
            if !beside.is_file() {
                bail!(
                    "path source: no helper binary next to {}\n  fix: supply --helper /abs/gitlab-runner-helper or --helper image:<ref>",
                    runner.display()
                );
            }
            copy_exec(&beside, &dest)
        }
    }
}

/// Copy `path_in` out of image `reference` (local, or pulled when `allow_pull` and a registry answers).
async fn extract_binary(
    podman: &Podman,
    reference: &str,
    path_in: &str,
    dest: &Path,
    progress: &Progress,
    allow_pull: bool,
) -> Result<()> {
    if !podman.image_exists(reference).await {
        if !allow_pull {
            bail!(
                "{reference} is not in local storage (not pulled implicitly; use --from image:{reference} to pull)"
            );
        }
        progress.step(format!("pulling {reference}"));
        podman.run(["pull", "--quiet", reference]).await.map_err(|e| {
            anyhow!(
                "{reference} is not in local storage and cannot be pulled (no registry reachable?): {e:#}\n  \
                 fix: load it with `podman load`, or use --from path:/abs/gitlab-runner or --from module:<pseudo-version>"
            )
        })?;
    }
    progress.step(format!("copying {path_in} out of {reference}"));
    // A created (never started) container is the way to read a file out of an image; it carries
    // the run label so that the reaper removes it should this process die right here.
    let ctr = podman
        .text([
            "create",
            "--label",
            &format!(
                "{}=forge-{}",
                crate::engine::podman::RUN_LABEL,
                std::process::id()
            ),
            "--label",
            &format!(
                "{}={}",
                crate::engine::podman::OWNER_LABEL,
                crate::engine::podman::owner_tag()
            ),
            reference,
        ])
        .await?;
    let tmp = tempfile::Builder::new()
        .prefix("runnerlab-extract-")
        .tempdir_in("/tmp")?;
    make_world_writable(tmp.path())?;
    let name = Path::new(path_in).file_name().expect("a file path");
    let copied = podman
        .run([
            "cp",
            &format!("{ctr}:{path_in}"),
            &tmp.path().join(name).to_string_lossy(),
        ])
        .await;
    podman.run(["rm", "-f", &ctr]).await?;
    copied.with_context(|| format!("{reference} has no {path_in}"))?;
    copy_exec(&tmp.path().join(name), dest)
}

fn make_world_writable(p: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777))?;
    Ok(())
}

#[derive(Deserialize)]
struct ModDownload {
    #[serde(rename = "Dir")]
    dir: Option<String>,
    #[serde(rename = "Error")]
    error: Option<String>,
}

fn go(args: &[&str]) -> Command {
    let mut c = Command::new("go");
    // -buildvcs=false: a work dir under a git checkout must not get that checkout's VCS stamp.
    c.args(args)
        .env("GOFLAGS", "-mod=mod -buildvcs=false")
        .env("CGO_ENABLED", "0");
    c
}

fn go_version() -> Result<String> {
    let out = Command::new("go").arg("version").output().map_err(|e| {
        anyhow!(
            "module source: no Go toolchain (`go` not found: {e})\n  fix: install Go ≥ 1.26.5, or supply \
             --from path:/abs/gitlab-runner or --from image:<ref>"
        )
    })?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Download the module into the Go module cache; returns its (read-only) directory.
pub fn module_download(module: &str, pv: &str) -> Result<PathBuf> {
    let spec = format!("{module}@{pv}");
    let out = go(&["mod", "download", "-json", &spec])
        .current_dir(std::env::temp_dir())
        .output()
        .context("running go mod download")?;
    let parsed: Option<ModDownload> = serde_json::from_slice(&out.stdout).ok();
    match parsed {
        Some(ModDownload {
            dir: Some(d),
            error: None,
        }) => Ok(PathBuf::from(d)),
        Some(ModDownload { error: Some(e), .. }) => bail!(
            "the Go module proxy refused {spec}: {e}\n  fix: use the version the proxy serves (see fixtures/runner-versions.toml), \
             or supply --from path:/abs/gitlab-runner or --from image:<ref>"
        ),
        _ => bail!(
            "go mod download {spec} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

/// Prepare a work dir from the module with the compat layer applied; returns the list of upstream
/// files changed or removed (`M path` / `D path`), which must match the layer's MANIFEST.
pub fn prepare_workdir(module_dir: &Path, compat: Option<&Path>, work: &Path) -> Result<()> {
    if work.exists() {
        make_writable(work)?;
        std::fs::remove_dir_all(work)?;
    }
    std::fs::create_dir_all(work.parent().expect("work has a parent"))?;
    run(
        Command::new("cp").arg("-r").arg(module_dir).arg(work),
        "copying the module",
    )?;
    make_writable(work)?;
    let Some(layer) = compat else { return Ok(()) };
    if let Ok(list) = std::fs::read_to_string(layer.join("remove.list")) {
        for (n, line) in list.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if line.contains("..") || line.starts_with('/') {
                bail!(
                    "{}:{}: path {line:?} must be relative to the module root",
                    layer.join("remove.list").display(),
                    n + 1
                );
            }
            for p in glob_simple(work, line)? {
                if p.is_dir() {
                    std::fs::remove_dir_all(&p)?;
                } else {
                    std::fs::remove_file(&p)?;
                }
            }
        }
    }
    let mut patches: Vec<PathBuf> = std::fs::read_dir(layer.join("patches"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    patches.sort();
    for p in patches {
        // Inside a git checkout `git apply` resolves paths against that repository and silently
        // applies nothing; the ceiling keeps it to the work dir.
        run(
            Command::new("git")
                .arg("apply")
                .arg("--whitespace=nowarn")
                .arg(&p)
                .env(
                    "GIT_CEILING_DIRECTORIES",
                    work.parent().expect("work has a parent"),
                )
                .current_dir(work),
            &format!("applying {}", p.display()),
        )?;
    }
    let modules = layer.join("modules");
    if modules.is_dir() {
        run(
            Command::new("cp")
                .arg("-r")
                .arg(&modules)
                .arg(work.join(".runnerlab-compat")),
            "copying compat modules",
        )?;
    }
    if let Ok(args) = std::fs::read_to_string(layer.join("gomod.args")) {
        let args: Vec<&str> = args
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .collect();
        if !args.is_empty() {
            let mut c = go(&["mod", "edit"]);
            c.args(&args).current_dir(work);
            run(&mut c, "go mod edit (gomod.args)")?;
        }
    }
    Ok(())
}

/// Entries `remove.list` may use: a plain path, or a final component with a `*` wildcard.
fn glob_simple(root: &Path, pattern: &str) -> Result<Vec<PathBuf>> {
    let full = root.join(pattern);
    let name = full
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains('*') {
        return Ok(if full.exists() { vec![full] } else { vec![] });
    }
    let (pre, post) = name.split_once('*').expect("has *");
    let dir = full.parent().expect("has parent");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            n.starts_with(pre) && n.ends_with(post) && n.len() >= pre.len() + post.len()
        })
        .collect();
    v.sort();
    Ok(v)
}

/// The upstream files a work dir differs in, as MANIFEST lines (`M path`, `D path`), sorted.
/// Files the layer adds (its modules) are not upstream files and are not listed.
pub fn changed_upstream_files(
    module_dir: &Path,
    work: &Path,
    ignore: &[&str],
) -> Result<Vec<String>> {
    let mut files = Vec::new();
    walk(module_dir, module_dir, &mut files)?;
    let mut out = BTreeSet::new();
    for rel in files {
        let r = rel.to_string_lossy().into_owned();
        if ignore.contains(&r.as_str()) {
            continue;
        }
        let w = work.join(&rel);
        if !w.exists() {
            out.insert(format!("D {r}"));
        } else if std::fs::read(&w)? != std::fs::read(module_dir.join(&rel))? {
            out.insert(format!("M {r}"));
        }
    }
    Ok(out.into_iter().collect())
}

/// Read a layer's MANIFEST (comments and blank lines ignored), sorted.
pub fn read_manifest(layer: &Path) -> Result<Vec<String>> {
    let p = layer.join("MANIFEST");
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    let mut v: Vec<String> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    v.sort();
    Ok(v)
}

/// Files whose change by `go build -mod=mod` is not part of the layer (go.sum may gain entries).
pub const MANIFEST_IGNORES: &[&str] = &["go.sum"];

async fn build_module(
    row: &VersionRow,
    pv: &str,
    compat: Option<&Compat>,
    out: &Path,
    progress: &Progress,
) -> Result<(String, String)> {
    let gv = go_version()?;
    progress.step(format!("go mod download {}@{pv}", row.module));
    let (module, pv2) = (row.module.clone(), pv.to_owned());
    let module_dir = tokio::task::spawn_blocking(move || module_download(&module, &pv2)).await??;
    let work =
        paths::cache_dir()
            .join("work")
            .join(format!("{}-{}", row.name, &sha256_str(&[pv])[..8]));
    let layer = compat.and_then(|_| compat_dir(row));
    progress.step("preparing the work dir (compat layer)");
    prepare_workdir(&module_dir, layer.as_deref(), &work)?;
    if let Some(l) = &layer {
        let want = read_manifest(l)?;
        let got = changed_upstream_files(&module_dir, &work, MANIFEST_IGNORES)?;
        if want != got {
            bail!(
                "the compat layer changes upstream files its MANIFEST does not declare (or vice versa)\n  MANIFEST: {want:?}\n  actual:   {got:?}\n  fix: update {}",
                l.join("MANIFEST").display()
            );
        }
    }
    let m = &row.module;
    let flags = format!(
        "-trimpath -ldflags \"-X {m}/common.NAME=gitlab-runner -X {m}/common.VERSION={v} -X {m}/common.REVISION={r} -X {m}/common.BRANCH={b} -w\"",
        v = row.name,
        r = row.revision,
        b = row.branch
    );
    let ldflags = format!(
        "-X {m}/common.NAME=gitlab-runner -X {m}/common.VERSION={v} -X {m}/common.REVISION={r} -X {m}/common.BRANCH={b} -w",
        v = row.name,
        r = row.revision,
        b = row.branch
    );
    for (pkg, name) in [
        (".", "gitlab-runner"),
        ("./apps/gitlab-runner-helper", "gitlab-runner-helper"),
    ] {
        progress.step(format!(
            "go build {name}{}",
            if name == "gitlab-runner" {
                " (cold: 2.5–4 min on 2 cores)"
            } else {
                ""
            }
        ));
        let mut c = go(&["build", "-trimpath", "-ldflags", &ldflags, "-o"]);
        c.arg(out.join(name)).arg(pkg).current_dir(&work);
        let label = format!("go build {name}");
        tokio::task::spawn_blocking(move || run(&mut c, &label)).await??;
    }
    Ok((gv, flags))
}

fn run(c: &mut Command, what: &str) -> Result<()> {
    let out = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| what.to_owned())?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(25).collect();
        bail!(
            "{what} failed ({}):\n{}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(())
}

fn make_writable(p: &Path) -> Result<()> {
    run(
        Command::new("chmod").arg("-R").arg("u+w").arg(p),
        "chmod -R u+w",
    )
}

fn now_rfc3339() -> String {
    let t = time::OffsetDateTime::from(SystemTime::now());
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_and_bad_ones_explain_the_format() {
        assert_eq!(
            "path:/usr/bin/gitlab-runner".parse::<Source>().unwrap(),
            Source::Path("/usr/bin/gitlab-runner".into())
        );
        assert_eq!(
            "image:docker.io/gitlab/gitlab-runner:v19.3.0"
                .parse::<Source>()
                .unwrap(),
            Source::Image("docker.io/gitlab/gitlab-runner:v19.3.0".into())
        );
        let e = "ftp:x".parse::<Source>().unwrap_err().to_string();
        assert!(e.contains("path:/abs/gitlab-runner"), "{e}");
        let e = "path:relative/bin"
            .parse::<Source>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("absolute"), "{e}");
    }

    #[test]
    fn describe_names_source_and_compat() {
        let p = Provenance {
            source: "module:v1.11.1-0.20260903214710-fc1f1862bd91".into(),
            version: "19.4.0".into(),
            revision: "fc1f1862".into(),
            branch: "main".into(),
            go_version: None,
            build_flags: None,
            compat: Some(Compat {
                name: "19.4.0".into(),
                hash: "0123456789abcdef0123".into(),
            }),
            runner_sha256: String::new(),
            helper_sha256: String::new(),
            built_at: String::new(),
            build_seconds: 0.0,
        };
        assert_eq!(
            p.describe(),
            "19.4.0 (fc1f1862) built from module v1.11.1-0.20260903214710-fc1f1862bd91 with compat layer 19.4.0@0123456789ab"
        );
    }

    #[test]
    fn versions_file_has_a_default_row() {
        let row = version_row(None).unwrap();
        assert!(row.default);
        assert!(
            version_row(Some("0.0.0"))
                .unwrap_err()
                .to_string()
                .contains("unknown runner version")
        );
    }
}
