//! Getting the sources: the git strategies (none, clone, fetch), shallow clones, submodules, merge
//! request refs and Git LFS, all over the coordinator's smart HTTP with the job token.

use anyhow::{Result, ensure};

use super::support::{ensure_trace_has, job_ended, outcome};
use super::{ALL, Case, Outcome};
use crate::lab::{Lab, PipelineRun};

pub(super) const GIT_STRATEGY_NONE: Case = Case {
    name: "git-strategy-none",
    about: "GIT_STRATEGY=none skips the checkout",
    modes: ALL,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(git_strategy_none(lab)),
};

async fn git_strategy_none(lab: &Lab) -> Result<Outcome> {
    let run = lab.pipeline("git-none").run().await?;
    let job = job_ended(&run, "nocheckout", "success")?;
    ensure_trace_has(
        &job.trace(),
        &["Skipping Git repository setup", "no checkout, as asked"],
    )?;
    Ok(outcome(run))
}

pub(super) const GIT_DEPTH: Case = Case {
    name: "git-depth",
    about: "GIT_DEPTH=1 makes a shallow clone over smart HTTP",
    modes: ALL,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(git_depth(lab)),
};

async fn git_depth(lab: &Lab) -> Result<Outcome> {
    let run = lab.pipeline("git-depth").run().await?;
    let job = job_ended(&run, "shallow", "success")?;
    ensure_trace_has(
        &job.trace(),
        &[
            "git depth set to 1",
            "commits in history 1",
            "the clone is shallow",
        ],
    )?;
    Ok(outcome(run))
}

async fn git_strategy(lab: &Lab, strategy: &str) -> Result<PipelineRun> {
    lab.pipeline("git-strategy")
        .variable(mock_gitlab::Variable {
            key: "GIT_STRATEGY".into(),
            value: strategy.into(),
            ..Default::default()
        })
        .run()
        .await
}

/// The job checked out the pipeline's commit and the fixture's file is there.
fn checked_out(run: &PipelineRun) -> Result<String> {
    let job = job_ended(run, "head", "success")?;
    let trace = job.trace();
    ensure!(
        trace.lines().any(|l| l.trim() == run.record.sha),
        "HEAD is not the pipeline's commit {}; trace:\n{trace}",
        run.record.sha
    );
    ensure_trace_has(&trace, &["a file in the work tree"])?;
    ensure!(
        !trace.contains("dubious ownership"),
        "git refused the work tree (dubious ownership); trace:\n{trace}"
    );
    Ok(trace)
}

pub(super) const GIT_STRATEGY_CLONE: Case = Case {
    name: "git-strategy-clone",
    about: "GIT_STRATEGY=clone checks out the pipeline's commit into a fresh repository every time",
    modes: ALL,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(git_strategy_clone(lab)),
};

async fn git_strategy_clone(lab: &Lab) -> Result<Outcome> {
    let first = git_strategy(lab, "clone").await?;
    checked_out(&first)?;
    let second = git_strategy(lab, "clone").await?;
    let trace = checked_out(&second)?;
    ensure_trace_has(&trace, &["Created fresh repository"])?;
    ensure!(
        !trace.contains("Reinitialized existing Git repository"),
        "clone reused the previous work tree; trace:\n{trace}"
    );
    Ok(outcome(second))
}

pub(super) const GIT_STRATEGY_FETCH: Case = Case {
    name: "git-strategy-fetch",
    about: "GIT_STRATEGY=fetch reuses the work tree where the executor keeps it, without dubious-ownership errors",
    modes: ALL,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(git_strategy_fetch(lab)),
};

async fn git_strategy_fetch(lab: &Lab) -> Result<Outcome> {
    let first = git_strategy(lab, "fetch").await?;
    checked_out(&first)?;
    let second = git_strategy(lab, "fetch").await?;
    let trace = checked_out(&second)?;
    let reused = trace.contains("Reinitialized existing Git repository");
    // Shell keeps builds_dir in the runner container and docker in a per-project volume, so the
    // second job fetches into the first one's tree. The podman driver gives every job a new
    // container: nothing to reuse, a fresh clone is right there.
    if lab.executor().mode().reuses_builds_dir() {
        ensure!(
            reused,
            "the second fetch did not reuse the work tree; trace:\n{trace}"
        );
    } else {
        ensure!(
            !reused,
            "a job container of the podman driver found an earlier job's work tree; trace:\n{trace}"
        );
    }
    Ok(Outcome {
        note: Some(format!(
            "second job {}",
            if reused {
                "reused the work tree"
            } else {
                "cloned afresh"
            }
        )),
        ..outcome(second)
    })
}

pub(super) const GIT_SUBMODULES: Case = Case {
    name: "git-submodules",
    about: "`GIT_SUBMODULE_STRATEGY: normal` fetches a submodule (relative URL, another \
            project) with the job token",
    modes: ALL,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(git_submodules(lab)),
};

async fn git_submodules(lab: &Lab) -> Result<Outcome> {
    let run = lab.pipeline("submodules").run().await?;
    let job = job_ended(&run, "with-submodule", "success")?;
    let trace = job.trace();
    ensure_trace_has(
        &trace,
        &[
            "Updating/initializing submodules",
            "Updated submodules",
            "hello from the submodule",
        ],
    )?;
    // `git submodule status`: a leading space means checked out at the recorded commit.
    ensure!(
        trace
            .lines()
            .any(|l| l.starts_with(' ') && l.split_whitespace().nth(1) == Some("lib")),
        "git submodule status does not show lib checked out at its commit; trace:\n{trace}"
    );
    Ok(outcome(run))
}

pub(super) const MERGE_REQUEST_PIPELINE: Case = Case {
    name: "merge-request-pipeline",
    about: "a merge request pipeline checks out `refs/merge-requests/1/head` with the \
            `CI_MERGE_REQUEST_*` variables; jobs without rules stay out, as in GitLab",
    modes: ALL,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(merge_request_pipeline(lab)),
};

async fn merge_request_pipeline(lab: &Lab) -> Result<Outcome> {
    let run = lab.pipeline("merge-request").merge_request(1).run().await?;
    let names: Vec<&str> = run.jobs.iter().map(|j| j.name.as_str()).collect();
    // `branch-job` has no rules: GitLab's default `only: [branches, tags]` keeps it out.
    ensure!(
        names == ["mr-job"],
        "a merge request pipeline should hold mr-job only, it holds {names:?}"
    );
    let job = job_ended(&run, "mr-job", "success")?;
    let trace = job.trace();
    ensure_trace_has(
        &trace,
        &[
            "(ref is refs/merge-requests/1/head)",
            "merge request !1 from add-feature into main",
            "ref name add-feature, branch ''",
            "only in merge request !1",
        ],
    )?;
    Ok(outcome(run))
}

pub(super) const GIT_LFS: Case = Case {
    name: "git-lfs",
    about: "a Git LFS file is checked out with its content: the runner's `git lfs pull` \
            fetches it from the coordinator's LFS API with the job token",
    modes: ALL,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(git_lfs(lab)),
};

async fn git_lfs(lab: &Lab) -> Result<Outcome> {
    let run = lab.pipeline("lfs").run().await?;
    let job = job_ended(&run, "lfs", "success")?;
    let trace = job.trace();
    // The content, not the pointer, after `cat`; `*` = checked out (`-` would be a pointer only).
    let after_cat = trace
        .split("$ cat data/blob.bin")
        .nth(1)
        .and_then(|t| t.lines().nth(1))
        .map(str::trim);
    ensure!(
        after_cat == Some("real LFS content: not a pointer"),
        "data/blob.bin holds {after_cat:?} after the checkout, not its LFS content; trace:\n{trace}"
    );
    ensure_trace_has(
        &trace,
        &[
            "* data/blob.bin",
            "version https://git-lfs.github.com/spec/v1",
        ],
    )?;
    Ok(outcome(run))
}
