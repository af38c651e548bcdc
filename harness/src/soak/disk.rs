//! The disk-full scenario: the docker executor on a store whose file system is small (a loop
//! mount), builds that each cache 40 MiB under a key of their own, until a build fails or warns of
//! a full disk; then the seed's advice, `podman system prune --volumes --force`, and one more
//! build that must succeed. The report shows how it failed and what the prune gave back.

use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::engine::podman::{Podman, owner_tag};
use crate::forge::runner::GetOptions;
use crate::lab::{Executor, Lab, LabOptions};
use crate::soak::loopstore::LoopStore;

pub const PROJECT: &str = "disk-fill";

/// One build of the scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FillBuild {
    pub n: usize,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// File system use after the build, MiB.
    pub used_mib: f64,
    /// Trace lines that speak of the full disk (or the failure).
    pub evidence: Vec<String>,
}

impl FillBuild {
    /// `success`, or the status with the failure reason.
    pub fn outcome(&self) -> String {
        match &self.failure_reason {
            Some(r) => format!("{} ({r})", self.status),
            None => self.status.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiskFull {
    pub size_mib: u64,
    /// Used right after the lab started (images, runner, config).
    pub used_at_start_mib: f64,
    pub builds: Vec<FillBuild>,
    /// The first build that failed or warned of a full disk.
    pub first_symptom: Option<usize>,
    pub prune_command: String,
    pub freed_mib: f64,
    /// The build after the prune.
    pub after_prune: Option<FillBuild>,
    pub recovered: bool,
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// What in a trace tells of a full disk.
fn evidence(trace: &str) -> Vec<String> {
    trace
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("no space left") || l.contains("disk quota") || l.starts_with("error:")
        })
        .take(6)
        .map(|l| l.chars().take(300).collect())
        .collect()
}

async fn build(lab: &Lab, store: &LoopStore, n: usize) -> Result<FillBuild> {
    let run = lab
        .pipeline(PROJECT)
        .timeout(Duration::from_secs(300))
        .run()
        .await?;
    let job = run
        .jobs
        .first()
        .context("the disk-fill pipeline has no job")?;
    let view = crate::lab::JobView { job };
    if let Some(f) = job.finished_at {
        lab.wait_asking_since(f, Duration::from_secs(120)).await?;
    }
    Ok(FillBuild {
        n,
        status: view.status(),
        failure_reason: view.failure_reason().map(str::to_owned),
        used_mib: mib(store.usage()?.0),
        evidence: evidence(&view.trace()),
    })
}

/// Run the scenario on a `size_mib` store; at most `max_builds` builds to fill it.
pub async fn run(runner: &GetOptions, size_mib: u64, max_builds: usize) -> Result<DiskFull> {
    let user_podman = Podman::lab()?;
    let user = user_podman
        .user()
        .context("the disk-full scenario uses the rootless user")?
        .clone();
    let id = crate::lab::new_run_id();
    // Declared before the lab: dropped after it, once the lab's containers are gone.
    let store = LoopStore::create(&user, &user_podman, &id, &owner_tag(), size_mib)?;
    let podman = store.podman(&user_podman);
    let mut opts = LabOptions::new(Executor::Docker);
    opts.runner = runner.clone();
    opts.check_interval = Some(1);
    opts.store = Some(podman.clone());
    eprintln!(
        "runnerlab soak: disk-full: a {size_mib} MiB store; building the lab's images into it"
    );
    let lab = Lab::start_with(opts).await?;
    let used_at_start_mib = mib(store.usage()?.0);
    let mut builds = Vec::new();
    let mut first_symptom = None;
    for n in 1..=max_builds {
        let b = build(&lab, &store, n).await?;
        eprintln!(
            "runnerlab soak: disk-full {n}: {} ({:.0} of {size_mib} MiB used)",
            b.outcome(),
            b.used_mib
        );
        let symptom = b.status != "success"
            || b.evidence
                .iter()
                .any(|l| l.to_ascii_lowercase().contains("no space left"));
        builds.push(b);
        if symptom {
            first_symptom = Some(n);
            break;
        }
    }
    let before = store.usage()?.0;
    // Not `--all`: that would also remove the helper and job images (pull policy `never`).
    let prune = ["system", "prune", "--volumes", "--force"];
    podman
        .run(prune)
        .await
        .context("podman system prune in the full store")?;
    let freed_mib = mib(before.saturating_sub(store.usage()?.0));
    eprintln!("runnerlab soak: disk-full: podman system prune freed {freed_mib:.0} MiB");
    let after = build(&lab, &store, builds.len() + 1).await?;
    let recovered = after.status == "success";
    lab.shutdown().await?;
    drop(store);
    Ok(DiskFull {
        size_mib,
        used_at_start_mib,
        builds,
        first_symptom,
        prune_command: format!("podman {}", prune.join(" ")),
        freed_mib,
        after_prune: Some(after),
        recovered,
    })
}
