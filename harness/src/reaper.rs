//! The reaper: removes what killed runs left behind. A run is dead when the process named in its
//! `runnerlab.owner` label (pid and start time) no longer exists; live runs of concurrent tests are
//! never touched.

use std::collections::BTreeMap;
use std::process::Stdio;

use anyhow::Result;

use crate::podman::{OWNER_LABEL, Podman, RUN_LABEL, Resources, owner_alive};

/// Run ids found in a store, with the owner tags their resources carry. Resources made by others on
/// the run's behalf (a job container of the custom executor, say) may carry the run label only.
pub fn runs(podman: &Podman) -> Result<BTreeMap<String, Vec<String>>> {
    let mut out = BTreeMap::new();
    let fmt_c =
        format!("{{{{index .Labels \"{RUN_LABEL}\"}}}} {{{{index .Labels \"{OWNER_LABEL}\"}}}}");
    let filter = format!("label={RUN_LABEL}");
    for args in [
        vec!["ps", "-a", "--filter", &filter, "--format", &fmt_c],
        vec!["volume", "ls", "--filter", &filter, "--format", &fmt_c],
        vec!["network", "ls", "--filter", &filter, "--format", &fmt_c],
    ] {
        let o = podman.std_command(&args).stderr(Stdio::null()).output()?;
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            let mut it = line.split_whitespace();
            if let Some(run) = it.next() {
                let owners: &mut Vec<String> = out.entry(run.to_owned()).or_default();
                if let Some(owner) = it.next().filter(|o| !o.starts_with("<no")) {
                    owners.push(owner.to_owned());
                }
            }
        }
    }
    Ok(out)
}

/// Remove the resources of every dead run in `stores`; returns (run id, what was removed).
pub fn reap_dead(stores: &[Podman]) -> Vec<(String, Resources)> {
    reap(stores, false)
}

/// Remove dead runs, or every run when `all` (for `runnerlab reap --all` when nothing runs).
pub fn reap(stores: &[Podman], all: bool) -> Vec<(String, Resources)> {
    let mut removed = Vec::new();
    for s in stores {
        let Ok(found) = runs(s) else { continue };
        for (run, owners) in found {
            // Alive while any of its resources names a live owner.
            if all || !owners.iter().any(|o| owner_alive(o)) {
                match s.remove_run(&run) {
                    Ok(r) => removed.push((run, r)),
                    Err(e) => eprintln!("runnerlab: reaping {run}: {e:#}"),
                }
            }
        }
    }
    removed
}
