//! `runnerlab run DIR`: a directory's own `.gitlab-ci.yml` through the real gitlab-runner.
//!
//! ```text
//! DIR ─► select (git ls-files -co --exclude-standard | every file) ─► staging copy
//!     ─► pre-flight: a bare mock-gitlab lints the pipeline (lint errors: exit 2, no lab started)
//!     ─► Lab (mode) ─► project runnerlab/<name>, branch or tag ─► pipeline (--job: only those jobs
//!        and what they need, --var: pipeline variables)
//!     ─► poll the mock's job records: status lines, traces rendered live (stream.rs)
//!     ─► target/runnerlab/run-<id>/{report.json, report.md, junit.xml, traces/<job>.log,
//!        artifacts/<job>/} ─► summary ─► (--keep: wait for Ctrl-C) ─► lab removed
//! ```
//!
//! Exit: 0 the pipeline passed, 1 it failed (or was canceled), 2 a usage or configuration error
//! (lint errors in GitLab's words, one per line), 130 interrupted.

pub mod artifacts;
pub mod select;
pub mod stream;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use mock_gitlab::{JobRecord, JobStatus, LintError, MockGitlab, PipelineId, Variable};

use crate::executor::Executor;
use crate::forge::runner::GetOptions;
use crate::lab::{Lab, LabOptions};
use crate::paths;
use crate::redact::scrub;
use crate::report::{CaseResult, Report, SCHEMA, Status};

use stream::TraceRenderer;

/// How often the mock's job records are read while the pipeline runs.
const POLL: Duration = Duration::from_millis(200);

/// What to run and how.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The project directory (its `.gitlab-ci.yml` at the top).
    pub dir: PathBuf,
    pub executor: Executor,
    /// Only these jobs and what they `needs:` (empty: all).
    pub jobs: Vec<String>,
    /// Pipeline variables, as GitLab's "Run pipeline" form sets them.
    pub variables: Vec<(String, String)>,
    /// The branch the working tree is committed on (default `main`).
    pub branch: String,
    /// A tag pipeline instead: the tag is made on that commit.
    pub tag: Option<String>,
    /// Leave the lab running after the pipeline until Ctrl-C.
    pub keep: bool,
    /// Keep ANSI colours in what is printed (a terminal).
    pub color: bool,
    /// How long the pipeline may take.
    pub timeout: Duration,
    pub runner: GetOptions,
    /// Where the report directory goes (default `target/runnerlab/run-<id>/`).
    pub out: Option<PathBuf>,
}

impl RunOptions {
    pub fn new(dir: impl Into<PathBuf>, executor: Executor) -> RunOptions {
        RunOptions {
            dir: dir.into(),
            executor,
            jobs: Vec::new(),
            variables: Vec::new(),
            branch: "main".into(),
            tag: None,
            keep: false,
            color: false,
            timeout: Duration::from_secs(3600),
            runner: GetOptions::default(),
            out: None,
        }
    }
}

/// How `runnerlab run` ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Passed,
    Failed,
    /// A usage or configuration error (lint errors included).
    Usage,
    Interrupted,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Passed => 0,
            Exit::Failed => 1,
            Exit::Usage => 2,
            Exit::Interrupted => 130,
        }
    }
}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    pub exit: Exit,
    /// The lab's run id (its resources carry `runnerlab.run=<id>`), when a lab started.
    pub run_id: Option<String>,
    /// The report directory, when the pipeline ran.
    pub dir: Option<PathBuf>,
    /// The pipeline's id on the mock and its final status.
    pub pipeline: Option<u64>,
    pub status: Option<String>,
    /// Pipeline creation → the pipeline's end, when it ran (what the summary prints).
    pub wall: Option<Duration>,
    /// Usage or lint errors, one line each, as printed.
    pub errors: Vec<String>,
}

impl RunOutcome {
    fn usage(errors: Vec<String>) -> RunOutcome {
        RunOutcome {
            exit: Exit::Usage,
            run_id: None,
            dir: None,
            pipeline: None,
            status: None,
            wall: None,
            errors,
        }
    }
}

/// `KEY=VALUE` of `--var`; the key as GitLab accepts it (letters, digits, `_`).
pub fn parse_var(s: &str) -> Result<(String, String)> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| anyhow!("--var {s:?}: expected KEY=VALUE"))?;
    if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("--var {s:?}: the key must be letters, digits and underscores");
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// Colour a word for a terminal.
fn paint(color: bool, code: &str, s: &str) -> String {
    if color {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_owned()
    }
}

/// GitLab's words for a job's state, as the status line shows them.
fn state_word(j: &JobRecord) -> (&'static str, &'static str) {
    match j.status {
        JobStatus::Created => ("created", "2"),
        JobStatus::Scheduled => ("scheduled", "2"),
        JobStatus::Pending => ("queued", "2"),
        JobStatus::Running => ("running", "34"),
        JobStatus::Success => ("passed", "32"),
        JobStatus::Failed if j.allow_failure => ("failed (allowed to fail)", "33"),
        JobStatus::Failed => ("failed", "31"),
        JobStatus::Canceled => ("canceled", "31"),
        JobStatus::Skipped => ("skipped", "2"),
    }
}

fn job_duration(j: &JobRecord) -> Option<Duration> {
    Some(j.finished_at?.saturating_duration_since(j.started_at?))
}

fn detail(j: &JobRecord) -> String {
    let mut parts = Vec::new();
    if let Some(r) = &j.failure_reason {
        parts.push(r.clone());
    }
    if let Some(c) = j.exit_code.filter(|_| j.status == JobStatus::Failed) {
        parts.push(format!("exit code {c}"));
    }
    parts.join(", ")
}

/// A lint error as GitLab's CI lint says it, one line per problem, with the file's path as the
/// user knows it (`DIR/.gitlab-ci.yml:LINE:COLUMN: message (hint)`).
pub fn lint_lines(dir: &Path, e: &LintError) -> Vec<String> {
    e.diagnostics
        .iter()
        .map(|d| format!("{}/{d}", dir.display().to_string().trim_end_matches('/')))
        .collect()
}

/// A pipeline for the project on `mock`: the branch (made at the imported commit unless it is
/// `main`) or the tag, then the pipeline with `--var`s and the `--job` selection.
fn create_pipeline(
    mock: &MockGitlab,
    path: &str,
    opts: &RunOptions,
) -> Result<std::result::Result<PipelineId, LintError>> {
    let project = mock
        .project(path)
        .ok_or_else(|| anyhow!("project {path} vanished from the mock"))?;
    let git_ref = match &opts.tag {
        Some(t) => {
            mock.create_tag(path, t, "main", None)?;
            format!("refs/tags/{t}")
        }
        None => {
            if opts.branch != "main" {
                // mock-gitlab imports onto `main`; another branch is that commit under its name,
                // as `git push origin HEAD:<branch>` would make it.
                let bare =
                    mock_gitlab::git::repos_root(&mock.data_dir()).join(format!("{path}.git"));
                let out = std::process::Command::new("git")
                    .arg("--git-dir")
                    .arg(&bare)
                    .args([
                        "update-ref",
                        &format!("refs/heads/{}", opts.branch),
                        &project.sha,
                    ])
                    .output()
                    .context("running git update-ref")?;
                if !out.status.success() {
                    bail!(
                        "cannot create branch {}: {}",
                        opts.branch,
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
            }
            format!("refs/heads/{}", opts.branch)
        }
    };
    let vars: Vec<Variable> = opts
        .variables
        .iter()
        .map(|(k, v)| Variable {
            key: k.clone(),
            value: v.clone(),
            masked: false,
            protected: false,
            file: false,
            raw: false,
        })
        .collect();
    Ok(mock.create_pipeline_only(path, &git_ref, &vars, &opts.jobs))
}

/// Check what can be checked before a lab starts; `Err` lines are usage errors.
fn check_usage(opts: &RunOptions) -> std::result::Result<(), Vec<String>> {
    let mut errs = Vec::new();
    if !opts.dir.is_dir() {
        errs.push(format!("{} is not a directory", opts.dir.display()));
    } else if !opts.dir.join(".gitlab-ci.yml").is_file() {
        errs.push(format!(
            "{} has no .gitlab-ci.yml (runnerlab run takes the project's top directory)",
            opts.dir.display()
        ));
    }
    for r in std::iter::once(&opts.branch).chain(opts.tag.iter()) {
        if !mock_gitlab::git::validate_ref(r) {
            errs.push(format!(
                "{r:?} is not a ref name runnerlab accepts: letters, digits, '.', '_', '-' and '/'"
            ));
        }
    }
    if opts.tag.is_some() && opts.branch != "main" {
        errs.push("--ref and --tag: choose one (a tag pipeline runs the tag)".into());
    }
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

/// Run the pipeline of `opts.dir`; what a user sees goes to `out`. `Err` is an infrastructure
/// failure (Podman, the runner); usage and lint errors come back as [`Exit::Usage`].
pub async fn run(opts: &RunOptions, out: &mut (dyn Write + Send)) -> Result<RunOutcome> {
    if let Err(errs) = check_usage(opts) {
        for e in &errs {
            writeln!(out, "runnerlab: {e}")?;
        }
        return Ok(RunOutcome::usage(errs));
    }
    let selected = select::select(&opts.dir)?;
    let staging = tempfile::Builder::new()
        .prefix("runnerlab-run-")
        .tempdir()?;
    select::stage(&opts.dir, &selected.files, staging.path())?;
    let name = select::project_name(&opts.dir);
    writeln!(
        out,
        "runnerlab: {} → project runnerlab/{name}: {} file{} ({}){}",
        opts.dir.display(),
        selected.files.len(),
        if selected.files.len() == 1 { "" } else { "s" },
        match selected.how {
            select::Selection::Git => "git ls-files -co --exclude-standard",
            select::Selection::All => "not a git work tree: every file",
        },
        if selected.skipped.is_empty() {
            String::new()
        } else {
            format!(
                "; submodules not included: {}",
                selected
                    .skipped
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    )?;

    // Pre-flight: the same import and pipeline creation on a mock without runners, so that a
    // configuration error costs no lab.
    if let Err(errs) = preflight(opts, &name, staging.path()).await? {
        writeln!(out, "runnerlab: the pipeline cannot be created:")?;
        for e in &errs {
            writeln!(out, "{e}")?;
        }
        return Ok(RunOutcome::usage(errs));
    }

    writeln!(out, "runnerlab: starting a lab ({} mode)…", opts.executor)?;
    out.flush()?;
    let start = Lab::start_with(LabOptions {
        runner: opts.runner.clone(),
        // The runner asks for the next stage's jobs 1 s after a job rather than 3 s.
        check_interval: Some(1),
        ..LabOptions::new(opts.executor)
    });
    // Ctrl-C while the lab starts: dropping the start removes what it made so far.
    let lab = tokio::select! {
        lab = start => lab?,
        _ = tokio::signal::ctrl_c() => {
            writeln!(out, "runnerlab: interrupted")?;
            return Ok(RunOutcome { exit: Exit::Interrupted, ..RunOutcome::usage(Vec::new()) });
        }
    };
    let run_id = lab.run_id().to_owned();
    writeln!(
        out,
        "runnerlab: lab {run_id} ready in {:.1}s ({})",
        lab.started_in().as_secs_f64(),
        lab.runner().describe()
    )?;
    let result = run_on_lab(&lab, opts, &name, staging.path(), out).await;
    drop(staging);
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            lab.shutdown().await.ok();
            return Err(e);
        }
    };
    if opts.keep && outcome.exit != Exit::Interrupted {
        keep_until_interrupted(&lab, &name, outcome.pipeline.unwrap_or(1), out).await?;
    }
    lab.shutdown().await?;
    writeln!(out, "runnerlab: lab {run_id} removed")?;
    Ok(RunOutcome {
        run_id: Some(run_id),
        ..outcome
    })
}

/// The warm path of `runnerlab run`: `opts.dir`'s pipeline on a lab that is already up, as
/// project `runnerlab/<name>` (a name not used on this lab yet), with the same file selection,
/// live output, report and summary; no pre-flight, and the lab stays up. `bench --peer` times it.
pub async fn run_on(
    lab: &Lab,
    opts: &RunOptions,
    name: &str,
    out: &mut (dyn Write + Send),
) -> Result<RunOutcome> {
    if let Err(errs) = check_usage(opts) {
        return Ok(RunOutcome::usage(errs));
    }
    let selected = select::select(&opts.dir)?;
    let staging = tempfile::Builder::new()
        .prefix("runnerlab-run-")
        .tempdir()?;
    select::stage(&opts.dir, &selected.files, staging.path())?;
    run_on_lab(lab, opts, name, staging.path(), out).await
}

/// Import and create the pipeline on a throw-away mock; `Ok(Err(lines))` for lint errors.
async fn preflight(
    opts: &RunOptions,
    name: &str,
    staged: &Path,
) -> Result<std::result::Result<(), Vec<String>>> {
    let data = tempfile::Builder::new()
        .prefix("runnerlab-lint-")
        .tempdir()?;
    let mock = MockGitlab::start(mock_gitlab::Config {
        data_dir: data.path().to_path_buf(),
        ..Default::default()
    })
    .await?;
    let path = format!("runnerlab/{name}");
    let res = match mock.add_project(&path, staged) {
        Err(e) => Err(vec![format!("{}: {e:#}", opts.dir.display())]),
        Ok(_) => match create_pipeline(&mock, &path, opts)? {
            Ok(_) => Ok(()),
            Err(lint) => Err(lint_lines(&opts.dir, &lint)),
        },
    };
    mock.shutdown().await;
    Ok(res)
}

struct Live {
    renderer: TraceRenderer,
    seen: usize,
    status: Option<JobStatus>,
}

async fn run_on_lab(
    lab: &Lab,
    opts: &RunOptions,
    name: &str,
    staged: &Path,
    out: &mut (dyn Write + Send),
) -> Result<RunOutcome> {
    let c = opts.color;
    let started_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mock = lab.mock();
    let path = lab.add_project(name, staged)?;
    // Timed from the pipeline's creation (the import above is not part of it).
    let t0 = Instant::now();
    let id = match create_pipeline(mock, &path, opts)? {
        Ok(id) => id,
        Err(lint) => {
            // The pre-flight passed the same file: only a mock difference gets here.
            let errs = lint_lines(&opts.dir, &lint);
            for e in &errs {
                writeln!(out, "{e}")?;
            }
            return Ok(RunOutcome::usage(errs));
        }
    };
    let first = mock.pipeline(id);
    let width = first.jobs.iter().map(|j| j.name.len()).max().unwrap_or(4);
    writeln!(
        out,
        "runnerlab: pipeline #{} of {path} on {}: {} job{}",
        id.0,
        first.git_ref,
        first.jobs.len(),
        if first.jobs.len() == 1 { "" } else { "s" }
    )?;

    let deadline = Instant::now() + opts.timeout;
    let mut live: BTreeMap<u64, Live> = BTreeMap::new();
    let mut last_trace_job: Option<u64> = None;
    let mut interrupted = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let record = loop {
        let rec = mock.pipeline(id);
        let total = rec.jobs.iter().filter(|j| !j.retried).count();
        let done = rec
            .jobs
            .iter()
            .filter(|j| !j.retried && j.status.is_complete())
            .count();
        for j in &rec.jobs {
            let l = live.entry(j.id).or_insert_with(|| Live {
                renderer: TraceRenderer::new(c),
                seen: 0,
                status: None,
            });
            let mut lines = if j.trace.len() > l.seen {
                let new = l.renderer.push(&j.trace[l.seen..]);
                l.seen = j.trace.len();
                new
            } else {
                l.renderer.idle()
            };
            let changed = l.status != Some(j.status);
            if changed && j.status.is_complete() {
                lines.extend(l.renderer.finish());
            }
            if !lines.is_empty() {
                if last_trace_job != Some(j.id) {
                    let bar = format!("── {} ──", j.name);
                    writeln!(out, "{}", paint(c, "1", &bar))?;
                    last_trace_job = Some(j.id);
                }
                for line in lines {
                    writeln!(out, "{}", scrub(&line))?;
                }
            }
            if changed {
                l.status = Some(j.status);
                let (word, code) = state_word(j);
                let mut extra = String::new();
                if j.status.is_complete()
                    && let Some(d) = job_duration(j)
                {
                    extra = format!(" in {:.1}s", d.as_secs_f64());
                }
                let why = detail(j);
                if !why.is_empty() && j.status == JobStatus::Failed {
                    extra.push_str(&format!(" ({why})"));
                }
                writeln!(
                    out,
                    "{} {:<width$}  {}{extra}  [{done}/{total}]",
                    paint(c, code, "●"),
                    j.name,
                    paint(c, code, word),
                )?;
            }
        }
        out.flush()?;
        if rec.status.is_complete() {
            break rec;
        }
        if Instant::now() > deadline {
            mock.cancel_pipeline(id, false).ok();
            bail!(
                "pipeline #{} still {} after {:?} (--timeout); unfinished: {}",
                id.0,
                rec.status,
                opts.timeout,
                rec.jobs
                    .iter()
                    .filter(|j| !j.status.is_complete())
                    .map(|j| format!("{} ({})", j.name, j.status))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = &mut ctrl_c => {
                interrupted = true;
                mock.cancel_pipeline(id, false).ok();
                break mock.pipeline(id);
            }
        }
    };
    let wall = t0.elapsed();

    // What stays: traces, artifacts, report.
    let dir = match &opts.out {
        Some(d) => d.clone(),
        None => paths::run_output_dir(&format!("run-{}", lab.run_id().trim_start_matches("rl-"))),
    };
    std::fs::create_dir_all(&dir)?;
    let mut cases = Vec::new();
    let mut artifact_counts: BTreeMap<u64, usize> = BTreeMap::new();
    for j in record.jobs.iter().filter(|j| !j.retried) {
        let file = artifacts::job_file_name(&j.name);
        let trace_rel = format!("traces/{file}.log");
        paths::write_atomic(
            &dir.join(&trace_rel),
            scrub(&mock_gitlab::normalize_trace(&j.trace_text())).as_bytes(),
        )?;
        if let Some(a) = mock
            .artifacts(j.id)
            .into_iter()
            .find(|a| a.artifact_type == "archive")
        {
            let dest = dir.join("artifacts").join(&file);
            match artifacts::unpack(&a.bytes, &dest) {
                Ok(n) => {
                    artifact_counts.insert(j.id, n);
                }
                Err(e) => writeln!(out, "runnerlab: artifacts of {}: {e:#}", j.name)?,
            }
        }
        let status = match j.status {
            JobStatus::Success => Status::Passed,
            JobStatus::Skipped | JobStatus::Created | JobStatus::Scheduled | JobStatus::Pending => {
                Status::Skipped
            }
            _ => Status::Failed,
        };
        let mut d = detail(j);
        if j.status == JobStatus::Failed && j.allow_failure {
            d = format!("allowed to fail: {d}");
        }
        cases.push(CaseResult {
            name: j.name.clone(),
            mode: opts.executor.to_string(),
            status,
            duration_s: job_duration(j).map_or(0.0, |d| d.as_secs_f64()),
            trace: Some(trace_rel),
            detail: Some(format!("stage {}; {}", j.stage, j.status))
                .map(|s| if d.is_empty() { s } else { format!("{s}: {d}") }),
        });
    }
    let environment = crate::conformance::environment(lab.podman(), lab.runner()).await?;
    let report = Report {
        schema: SCHEMA.into(),
        run_id: lab.run_id().to_owned(),
        started_at,
        duration_s: wall.as_secs_f64(),
        environment,
        cases,
        cross_mode: Vec::new(),
        job_cost: Vec::new(),
    };
    report.write(&dir)?;

    // The summary.
    writeln!(out)?;
    writeln!(
        out,
        "{:<width$}  {:<10} {:<8} {:>8}  detail",
        "job", "stage", "status", "duration"
    )?;
    for j in record.jobs.iter().filter(|j| !j.retried) {
        let (word, code) = state_word(j);
        let word = word.split(' ').next().unwrap_or(word);
        let mut d = detail(j);
        if let Some(n) = artifact_counts.get(&j.id) {
            let a = format!("{n} artifact file{}", if *n == 1 { "" } else { "s" });
            d = if d.is_empty() { a } else { format!("{d}; {a}") };
        }
        writeln!(
            out,
            "{:<width$}  {:<10} {} {:>8}  {d}",
            j.name,
            j.stage,
            paint(c, code, &format!("{word:<8}")),
            job_duration(j).map_or("-".into(), |d| format!("{:.1}s", d.as_secs_f64())),
        )?;
    }
    let passed = record.status == mock_gitlab::PipelineStatus::Success;
    writeln!(
        out,
        "pipeline #{} {} in {:.1}s ({} mode)",
        id.0,
        paint(
            c,
            if passed { "32" } else { "31" },
            &record.status.to_string()
        ),
        wall.as_secs_f64(),
        opts.executor
    )?;
    writeln!(
        out,
        "report: {} (report.json, traces/, artifacts/); runner log: {}",
        dir.display(),
        lab.out_dir().join("runner.log").display()
    )?;
    Ok(RunOutcome {
        exit: if interrupted {
            Exit::Interrupted
        } else if passed {
            Exit::Passed
        } else {
            Exit::Failed
        },
        run_id: Some(lab.run_id().to_owned()),
        dir: Some(dir),
        pipeline: Some(id.0),
        status: Some(record.status.to_string()),
        wall: Some(wall),
        errors: Vec::new(),
    })
}

/// `--keep`: say how to reach the lab, then wait for Ctrl-C.
async fn keep_until_interrupted(
    lab: &Lab,
    name: &str,
    pipeline: u64,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    let api = format!("{}/api/v4", lab.mock().local_url());
    let logs = lab
        .podman()
        .std_command(["logs", "-f", lab.runner_container()]);
    let logs_cmd = std::iter::once(logs.get_program())
        .chain(logs.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    writeln!(out)?;
    writeln!(out, "runnerlab: the lab stays up until Ctrl-C (--keep)")?;
    writeln!(out, "  REST API     {api}")?;
    writeln!(out, "  admin token  {}", lab.mock().admin_token())?;
    writeln!(
        out,
        "  e.g.         curl -sH 'PRIVATE-TOKEN: {}' {api}/projects/runnerlab%2F{name}/pipelines/{pipeline}/jobs",
        lab.mock().admin_token()
    )?;
    writeln!(out, "  runner logs  {logs_cmd}")?;
    writeln!(
        out,
        "  more jobs    POST {api}/projects/runnerlab%2F{name}/pipeline?ref=main (the runner is still polling)"
    )?;
    out.flush()?;
    tokio::signal::ctrl_c().await?;
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vars_are_key_equals_value() {
        assert_eq!(
            parse_var("DEPLOY=yes=no").unwrap(),
            ("DEPLOY".into(), "yes=no".into())
        );
        assert_eq!(parse_var("EMPTY=").unwrap(), ("EMPTY".into(), "".into()));
        assert!(parse_var("NOEQUALS").is_err());
        assert!(parse_var("BAD-KEY=1").is_err());
    }

    #[test]
    fn lint_errors_name_the_users_file_with_line_and_column() {
        let e = mock_gitlab::pipeline::config::parse_config(
            "build:\n  stage: build\n  scrip: [make]\n",
            ".gitlab-ci.yml",
        )
        .unwrap_err();
        let lines = lint_lines(Path::new("/src/app"), &e);
        assert!(!lines.is_empty());
        for l in &lines {
            assert!(l.starts_with("/src/app/.gitlab-ci.yml:"), "{l}");
            assert!(!l.contains('\n'));
        }
        assert!(
            lines
                .iter()
                .any(|l| regex::Regex::new(r"\.gitlab-ci\.yml:\d+:\d+: ")
                    .unwrap()
                    .is_match(l)),
            "{lines:?}"
        );
    }

    #[test]
    fn usage_errors_come_before_any_lab() {
        let d = tempfile::tempdir().unwrap();
        let mut o = RunOptions::new(d.path(), Executor::Shell);
        o.tag = Some("v 1".into());
        let errs = check_usage(&o).unwrap_err();
        assert!(errs[0].contains("has no .gitlab-ci.yml"), "{errs:?}");
        assert!(errs[1].contains("\"v 1\" is not a ref name"), "{errs:?}");
    }
}
