//! The seed project's troubleshooting entries, reproduced: what a rootless job's identity is, and
//! the `//.gitconfig` failure of a non-root job without a writable HOME, then its documented fix.

use anyhow::{Result, ensure};

use super::support::{CUSTOM_HOME, ensure_trace_has, job_ended, outcome, variant};
use super::{ALL, Case, Outcome};
use crate::executor::For;
use crate::lab::host_identity::{self, Expect};
use crate::lab::{Lab, RunnerExtras};

pub(super) const ROOTLESS_IDENTITY: Case = Case {
    name: "rootless-identity",
    about: "the job runs in a user namespace that does not map host root (rootless Podman)",
    modes: ALL,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(rootless_identity(lab)),
};

async fn rootless_identity(lab: &Lab) -> Result<Outcome> {
    let run = lab.pipeline("identity").run().await?;
    let job = job_ended(&run, "whoami", "success")?;
    let trace = job.trace();
    // uid_map lines: "<inside> <outside> <count>". Rootful (or no namespace) maps 0 to 0 over the
    // whole 32-bit range; rootless maps inside 0 to the lab user's uid.
    let maps: Vec<Vec<u64>> = trace
        .lines()
        .map(|l| {
            l.split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect::<Vec<u64>>()
        })
        .filter(|v| v.len() == 3)
        .collect();
    ensure!(!maps.is_empty(), "no uid_map in the trace:\n{trace}");
    let uid = lab.podman().user().map(|u| u.uid as u64).unwrap_or(0);
    ensure!(
        !maps.iter().any(|m| m[1] == 0 && m[2] == 4294967295),
        "the job runs in the host's user namespace (uid map 0 0 4294967295):\n{trace}"
    );
    ensure!(
        maps.iter().any(|m| m[0] == 0 && m[1] == uid && m[2] == 1),
        "container root is not the lab user (uid {uid}) on the host:\n{trace}"
    );
    Ok(outcome(run))
}

pub(super) const ROOTLESS_FROM_HOST: Case = Case {
    name: "rootless-from-host",
    about: "read from the host's /proc while a job runs, no process of the lab (runner, Podman API \
            service, conmon, job, helpers, services) has host uid or gid 0",
    modes: ALL,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(rootless_from_host(lab)),
};

/// `rootless-identity` from the other side: the harness runs on the host and reads `/proc` itself
/// (see `lab::host_identity`). The held job is released from the host, so its timing is not
/// stable enough for a snapshot.
async fn rootless_from_host(lab: &Lab) -> Result<Outcome> {
    let expect = Expect {
        service: !lab.executor().mode().jobs_run_in_runner_container(),
        inner_container: false,
    };
    let proof = host_identity::prove(lab, "host-identity", "hold", expect).await?;
    Ok(Outcome {
        note: Some(proof.summary()),
        snapshot: false,
        ..outcome(proof.run)
    })
}

pub(super) const GITCONFIG_HOME: Case = Case {
    name: "gitconfig-home",
    about: "the seeds' `//.gitconfig` failure: a non-root job without a writable HOME cannot \
            write git's global config; HOME on a writable mount (the documented fix) can",
    modes: ALL,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(gitconfig_home(lab)),
};

/// The seeds' `//.gitconfig` troubleshooting entry, reproduced and then fixed as documented.
async fn gitconfig_home(lab: &Lab) -> Result<Outcome> {
    let mode = lab.executor();
    // A variant of the suite's lab: the runner writes global git config while getting the sources
    // (as the Kubernetes executor does by default), and the fix's directory is mounted.
    let mut extras = RunnerExtras {
        register_args: vec!["--safe-directory-checkout=true".into()],
        ..RunnerExtras::default()
    };
    // Where the runner's configuration can say so (custom), the job runs as uid 1000, like the
    // seed's pod; elsewhere the job itself sets its user (docker: `image:docker:user`) or the
    // runner does (shell: `run --user`).
    mode.mode().add_job_user(&mut extras, 1000);
    mode.mode()
        .add_tmpfs(&mut extras, For::Jobs, CUSTOM_HOME, "rw,mode=1777")?;
    let lab2 = variant(lab, extras).await?;
    let run = lab2.pipeline("gitconfig-home").run().await?;

    let failed = job_ended(&run, "unwritable-home", "failed")?;
    let trace = failed.trace();
    let error = "error: could not lock config file //.gitconfig: Permission denied";
    let at = trace
        .find(error)
        .ok_or_else(|| anyhow::anyhow!("the seed's error is not in the trace:\n{trace}"))?;
    // Where it fails is what differs between executors: while getting the sources when the runner
    // writes the config as the job's user, in the script when a root helper got the sources.
    let script_at = trace.find("step_script");
    let in_sources = script_at.is_none_or(|s| at < s);
    let expect_in_sources = !mode.mode().sources_by_helper();
    ensure!(
        in_sources == expect_in_sources,
        "the error came {} in {mode} (expected {}); trace:\n{trace}",
        if in_sources {
            "while getting the sources"
        } else {
            "in the script"
        },
        if expect_in_sources {
            "while getting the sources"
        } else {
            "in the script"
        },
    );
    ensure!(
        !trace.contains("global git config written"),
        "the script went on after the failure; trace:\n{trace}"
    );

    let fixed = job_ended(&run, "custom-home", "success")?;
    let trace = fixed.trace();
    ensure!(
        !trace.contains("could not lock config file"),
        "the fix did not help; trace:\n{trace}"
    );
    ensure_trace_has(&trace, &["global git config in /my_custom_dir/.gitconfig"])?;
    // Shell jobs run as the runner container's gitlab-runner, uid 1000 too.
    ensure!(
        trace.lines().any(|l| l.trim_end() == "1000"),
        "the job did not run as uid 1000; trace:\n{trace}"
    );
    let note = if in_sources {
        "fails while getting the sources (the runner writes global git config as the job's user)"
    } else {
        "the helper gets the sources as root; the failure shows when the job writes global git config"
    };
    Ok(Outcome {
        note: Some(note.into()),
        ..outcome(run)
    })
}
