//! The reaper: removes what killed runs left behind. A run is dead when the process named in its
//! `runnerlab.owner` label (pid and start time) no longer exists; live runs of concurrent tests are
//! never touched.

use std::collections::BTreeMap;
use std::process::Stdio;

use anyhow::Result;

use crate::engine::podman::{
    OWNER_LABEL, Podman, RUN_LABEL, Resources, owner_alive, process_running,
};

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

/// What a run created that does not carry its label (the docker executor's cache volumes and
/// per-build networks carry GitLab's labels only): label filters that find it. Recorded in
/// `<cache>/runs/<run>.json` while the run lives, so that the reaper can remove it after a kill.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub owner: String,
    pub foreign_labels: Vec<String>,
}

fn records_dir() -> std::path::PathBuf {
    crate::paths::cache_dir().join("runs")
}

impl RunRecord {
    /// Write the record (write, then rename).
    pub fn save(&self) -> Result<()> {
        crate::paths::write_atomic(
            &records_dir().join(format!("{}.json", self.run_id)),
            serde_json::to_string(self)?.as_bytes(),
        )?;
        Ok(())
    }

    /// Remove what the record's filters find in `store`, then the record.
    pub fn remove(&self, store: &Podman) -> Result<Resources> {
        let mut all = Resources::default();
        for l in &self.foreign_labels {
            let r = store.remove_matching(l)?;
            all.containers.extend(r.containers);
            all.volumes.extend(r.volumes);
            all.networks.extend(r.networks);
        }
        let _ = std::fs::remove_file(records_dir().join(format!("{}.json", self.run_id)));
        Ok(all)
    }

    pub fn all() -> Vec<RunRecord> {
        std::fs::read_dir(records_dir())
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Remove dead runs, or every run when `all` (for `runnerlab reap --all` when nothing runs).
pub fn reap(stores: &[Podman], all: bool) -> Vec<(String, Resources)> {
    let mut removed = Vec::new();
    // Foreign resources of dead runs first: they are only findable through the run's record.
    for rec in RunRecord::all() {
        if all || !owner_alive(&rec.owner) {
            for s in stores {
                match rec.remove(s) {
                    Ok(r) if !r.is_empty() => removed.push((rec.run_id.clone(), r)),
                    Ok(_) => {}
                    Err(e) => eprintln!("runnerlab: reaping {}: {e:#}", rec.run_id),
                }
            }
        }
    }
    crate::soak::loopstore::reap(all);
    // Second engines' namespaces nobody alive owns (their stores are reaped through a handle).
    if !all {
        crate::engine::trixie::reap(false);
    }
    for s in stores {
        if let Some(u) = s.user() {
            reap_socket_dirs(u, all);
            crate::lab::registry::reap_trust_dirs(u, all);
        }
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

/// Remove the per-lab API socket directories (`/run/user/<uid>/podman/rl-…/`) of dead runs: each
/// holds an `owner` file with its run's owner tag.
fn reap_socket_dirs(user: &crate::engine::podman::LabUser, all: bool) {
    let Ok(rd) = std::fs::read_dir(user.runtime_dir().join("podman")) else {
        return;
    };
    for e in rd.flatten() {
        let dir = e.path();
        if !e.file_name().to_string_lossy().starts_with("rl-") || !dir.is_dir() {
            continue;
        }
        let owner = std::fs::read_to_string(dir.join("owner")).unwrap_or_default();
        if all || !owner_alive(owner.trim()) {
            // A killed harness leaves its API service (and a runner on the host) running,
            // reparented to init.
            stop_services_in(&dir);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// Stop every `podman system service` listening on a socket under `dir`, and every runner on the
/// host run from a binary under it (SIGTERM, then SIGKILL).
fn stop_services_in(dir: &std::path::Path) {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return;
    };
    let pids: Vec<u32> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<String> = cmd
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let service = args
                .windows(2)
                .any(|w| w[0] == "system" && w[1] == "service")
                && args.iter().any(|a| a.contains(&needle));
            let host_runner = args.first().is_some_and(|a| a.starts_with(&needle));
            service || host_runner
        })
        .collect();
    for (sig, wait) in [(libc::SIGTERM, 50), (libc::SIGKILL, 20)] {
        let alive: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|p| process_running(*p))
            .collect();
        if alive.is_empty() {
            return;
        }
        for p in &alive {
            // SAFETY: kill(2) on pids we just found serving this dead run's socket or directory.
            unsafe {
                libc::kill(*p as i32, sig);
            }
        }
        // Poll (up to wait × 100 ms) until they are gone.
        for _ in 0..wait {
            if !alive.iter().any(|p| process_running(*p)) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}
