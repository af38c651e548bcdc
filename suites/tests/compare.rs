//! `runnerlab compare` end to end with the real runner: a stack against itself, a runner
//! configuration that breaks a case (a regression, then accepted), and two runner sources of the same
//! build. Shell mode and a couple of cases keep each comparison to about a minute.

use anyhow::{Result, ensure};
use runnerlab::Executor;
use runnerlab::compare::{self, Class, CompareOptions, Stack};
use runnerlab::conformance::SuiteOptions;

fn suite(cases: &[&str]) -> SuiteOptions {
    SuiteOptions {
        modes: vec![Executor::Shell],
        runner: Default::default(),
        only: cases.iter().map(|c| c.to_string()).collect(),
        parallel: 1,
        runner_on_host: false,
        engine: runnerlab::engine::host(),
        config_env: Vec::new(),
        partition: None,
    }
}

fn options(a: &str, b: &str, cases: &[&str], out: &std::path::Path) -> Result<CompareOptions> {
    Ok(CompareOptions {
        a: Stack::parse("--a", a)?,
        b: Stack::parse("--b", b)?,
        baseline: None,
        accept: Vec::new(),
        suite: suite(cases),
        soak: None,
        out: out.to_path_buf(),
    })
}

fn rows_of(c: &compare::Comparison) -> String {
    c.diff
        .rows
        .iter()
        .map(|r| format!("{} {} {:?} → {:?}: {:?}", r.case, r.mode, r.a, r.b, r.class))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_compared_with_itself_has_no_regression() -> Result<()> {
    let out = tempfile::tempdir()?;
    let c = compare::run(&options(
        "podman=host",
        "podman=host",
        &["hello", "exit-code"],
        out.path(),
    )?)
    .await?;
    ensure!(
        c.diff.gate.passed && c.diff.gate.exit_code == 0,
        "{}",
        rows_of(&c)
    );
    ensure!(c.diff.rows.len() == 2, "{}", rows_of(&c));
    ensure!(
        c.diff.rows.iter().all(|r| r.class == Class::Unchanged),
        "{}",
        rows_of(&c)
    );
    for f in [
        "compare.json",
        "compare.md",
        "compare.html",
        "a/report.json",
        "b/report.json",
    ] {
        ensure!(out.path().join(f).is_file(), "{f} is missing");
    }
    Ok(())
}

/// `GIT_STRATEGY=none` in `[runners] environment` leaves `hello` without its checkout: the
/// comparison names the case, the mode and the changed output, fails the gate, and passes it once
/// the regression is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_that_breaks_a_case_is_a_regression_until_accepted() -> Result<()> {
    let out = tempfile::tempdir()?;
    let c = compare::run(&options(
        "config=default",
        "config=GIT_STRATEGY=none",
        &["hello"],
        out.path(),
    )?)
    .await?;
    let row = c
        .diff
        .rows
        .iter()
        .find(|r| r.case == "hello" && r.mode == "shell")
        .ok_or_else(|| anyhow::anyhow!("no hello × shell row:\n{}", rows_of(&c)))?;
    ensure!(row.class == Class::Regression, "{}", rows_of(&c));
    ensure!(
        !c.diff.gate.passed && c.diff.gate.exit_code == 1,
        "{:?}",
        c.diff.gate
    );
    let diff = c
        .diff
        .diffs
        .iter()
        .find(|d| d.case == "hello" && d.mode == "shell")
        .ok_or_else(|| anyhow::anyhow!("no output diff for hello × shell"))?;
    ensure!(
        diff.diff.contains("hello from runnerlab"),
        "the diff does not show the job's output:\n{}",
        diff.diff
    );
    let accept_file = out.path().join("accept.txt");
    std::fs::write(
        &accept_file,
        "# case mode reason\nhello shell the checkout is off on purpose\n",
    )?;
    let accept = compare::diff::load_accept(&accept_file)?;
    let again = compare::finish(out.path(), c.a.clone(), c.b.clone(), accept)?;
    ensure!(
        again.diff.gate.passed && again.diff.gate.exit_code == 0,
        "{:?}",
        again.diff.gate
    );
    ensure!(
        again.diff.rows.iter().any(|r| r.class == Class::Accepted),
        "{}",
        rows_of(&again)
    );
    Ok(())
}

/// Only one runner can be built here, so runner A/B is the module build against a copy of the same
/// binary given as `path:`: the columns agree, the provenance differs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_runner_from_two_sources_agrees_but_for_provenance() -> Result<()> {
    let forged = runnerlab::forge::runner::get(&Default::default()).await?;
    let copy_dir = tempfile::tempdir()?;
    let copy = copy_dir.path().join("gitlab-runner");
    std::fs::copy(forged.runner_bin(), &copy)?;
    // A `path:` runner takes its helper from beside it.
    std::fs::copy(
        forged.helper_bin(),
        copy_dir.path().join("gitlab-runner-helper"),
    )?;
    let out = tempfile::tempdir()?;
    let c = compare::run(&options(
        "",
        &format!("runner=path:{}", copy.display()),
        &["hello"],
        out.path(),
    )?)
    .await?;
    ensure!(c.diff.gate.passed, "{}", rows_of(&c));
    ensure!(
        c.diff.rows.iter().all(|r| r.class == Class::Unchanged),
        "{}",
        rows_of(&c)
    );
    ensure!(
        c.a.runner != c.b.runner,
        "both sides report the same provenance: {}",
        c.a.runner
    );
    Ok(())
}

/// `--soak N`: both stacks soaked, their leak verdicts side by side. Stack B's runner configuration
/// switches on the custom driver's leak (its cleanup leaves a container per build): the soak
/// table shows the verdict that held on A failing on B, and that regression fails the gate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soak_that_leaks_on_b_is_a_regression_of_the_gate() -> Result<()> {
    let out = tempfile::tempdir()?;
    let mut o = options(
        "podman=host",
        &format!("podman=host,config={}=1", runnerlab::soak::LEAK_VARIABLE),
        &["hello"],
        out.path(),
    )?;
    o.suite.modes = vec![Executor::Custom];
    o.soak = Some(8);
    let c = compare::run(&o).await?;
    let soak = c.soak.as_ref().expect("a soak comparison");
    let table = soak
        .rows
        .iter()
        .map(|r| format!("{} {} {:?} {:?} {:?}", r.mode, r.metric, r.a, r.b, r.class))
        .collect::<Vec<_>>()
        .join("\n");
    let row = soak
        .rows
        .iter()
        .find(|r| r.mode == "custom" && r.metric == "lab.containers")
        .expect("a lab.containers row");
    ensure!(
        row.class == compare::soak::SoakClass::Regression,
        "lab.containers should regress:\n{table}"
    );
    ensure!(
        row.a.as_ref().is_some_and(|a| a.status == "pass")
            && row.b.as_ref().is_some_and(|b| b.status == "FAIL"),
        "{table}"
    );
    ensure!(
        !c.diff.gate.passed && c.diff.gate.exit_code == 1,
        "the gate should fail: {:?}",
        c.diff.gate
    );
    for f in ["a/soak/soak.json", "b/soak/report.html"] {
        ensure!(out.path().join(f).is_file(), "{f} is missing");
    }
    let md = std::fs::read_to_string(out.path().join("compare.md"))?;
    ensure!(
        md.contains("## Soak") && md.contains("| custom | lab.containers | pass"),
        "{md}"
    );
    Ok(())
}
