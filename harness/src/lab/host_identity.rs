//! Who a lab's processes are on the host, read from `/proc`: rootless, proved from outside. The
//! `rootless-identity` case reads the job's uid map from inside; this reads every process of the
//! lab from the host — runner, Podman API service, conmon, job, helpers, services, containers a
//! job starts itself — and fails if any of them has host uid or gid 0 in any of its four fields
//! (real, effective, saved, filesystem).
//!
//! Which processes are the lab's: the process trees of its roots (the runner's main process, the
//! runner container's conmon, the API service), plus every process in a user namespace other than
//! the host's that one of those lives in (the lab user's rootless namespace: every conmon, every
//! container, the pause process), plus their trees, to a fixed point. A container started inside
//! a job is in the job's tree (its conmon is reparented to the job container's init); a process
//! with a nested user namespace is reached by its tree.
//!
//! [`prove`] runs a fixture whose job holds in a process named `runnerlab-hold-<token>` (the token
//! a CI/CD variable set per run), reads `/proc` while it holds, kills that process from the host
//! (SIGKILL; the job goes on and ends), and samples `/proc` in a thread from the pipeline's start
//! to its end, so short-lived processes (the docker executor's helpers) are checked too.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::{Lab, PipelineRun};
use crate::engine::podman::process_start_time;

/// One process as the host sees it.
#[derive(Clone, Debug)]
pub struct HostProc {
    pub pid: u32,
    pub ppid: u32,
    /// Start time in clock ticks since boot: with the pid, names one process for good.
    pub start: u64,
    pub comm: String,
    /// `State` (`R`, `S`, `Z`, …): a zombie has exited and keeps only its ids until reaped.
    pub state: char,
    pub argv: Vec<String>,
    /// Real, effective, saved and filesystem uid on the host.
    pub uids: [u32; 4],
    pub gids: [u32; 4],
    /// Inode of its user namespace (`/proc/<pid>/ns/user`), when readable.
    pub userns: Option<u64>,
    /// Its pid in each pid namespace it is in, the host's first (`NSpid`).
    pub nspid: Vec<u32>,
}

impl HostProc {
    /// Whether any of its eight ids is 0 on the host.
    pub fn has_root_id(&self) -> bool {
        self.uids.contains(&0) || self.gids.contains(&0)
    }

    /// The container a conmon process watches (its `-n` argument).
    fn conmon_of(&self) -> Option<&str> {
        if self.comm != "conmon" {
            return None;
        }
        let i = self.argv.iter().position(|a| a == "-n" || a == "--name")?;
        self.argv.get(i + 1).map(String::as_str)
    }
}

/// The inode of a namespace link such as `/proc/1/ns/user` (`user:[4026531837]`).
fn ns_inode(link: &str) -> Option<u64> {
    let target = std::fs::read_link(link).ok()?;
    let s = target.to_string_lossy();
    s.rsplit_once('[')?.1.strip_suffix(']')?.parse().ok()
}

/// The host's user namespace: init's, or (where init's links are not readable, as in some VMs)
/// this process's, which runs on the host.
pub fn host_userns() -> Option<u64> {
    ns_inode("/proc/1/ns/user").or_else(|| ns_inode("/proc/self/ns/user"))
}

/// Read one process; `None` when it is gone (or not readable).
pub fn read_proc(pid: u32) -> Option<HostProc> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let ids = |key: &str| -> Option<[u32; 4]> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        let v: Vec<u32> = line[key.len()..]
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        v.try_into().ok()
    };
    let field = |key: &str| status.lines().find_map(|l| l.strip_prefix(key));
    let comm = field("Name:")?.trim().to_owned();
    let state = field("State:")?.trim().chars().next().unwrap_or('?');
    let ppid = field("PPid:")?.trim().parse().ok()?;
    let nspid = field("NSpid:")
        .map(|s| {
            s.split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let argv = std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Some(HostProc {
        pid,
        ppid,
        start: process_start_time(pid)?,
        comm,
        state,
        argv,
        uids: ids("Uid:")?,
        gids: ids("Gid:")?,
        userns: ns_inode(&format!("/proc/{pid}/ns/user")),
        nspid,
    })
}

/// Every process on the host (threads are not processes: `/proc` lists thread group leaders).
pub fn scan() -> Vec<HostProc> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(read_proc)
        .collect()
}

/// A process of the lab, and why it counts as one.
#[derive(Clone, Debug)]
pub struct LabProc {
    pub proc: HostProc,
    /// The root whose tree it is in (`runner`, `api`, …) or `lab userns`.
    pub via: String,
    /// The container it runs in, from the nearest conmon above it (or itself, for a conmon).
    pub container: Option<String>,
}

/// The lab's processes among `all`: the trees of `roots` (pid, label), every process in a
/// non-host user namespace one of them is in, and their trees, to a fixed point.
pub fn lab_processes(
    all: &[HostProc],
    roots: &[(u32, String)],
    host_ns: Option<u64>,
) -> Vec<LabProc> {
    let by_pid: HashMap<u32, &HostProc> = all.iter().map(|p| (p.pid, p)).collect();
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for p in all {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut via: BTreeMap<u32, String> = BTreeMap::new();
    let mut namespaces: HashSet<u64> = HashSet::new();
    let mut queue: VecDeque<(u32, String)> = roots
        .iter()
        .filter(|(pid, _)| by_pid.contains_key(pid))
        .cloned()
        .collect();
    loop {
        while let Some((pid, label)) = queue.pop_front() {
            if via.contains_key(&pid) {
                continue;
            }
            if let Some(ns) = by_pid[&pid].userns.filter(|ns| Some(*ns) != host_ns) {
                namespaces.insert(ns);
            }
            for c in children.get(&pid).into_iter().flatten() {
                queue.push_back((*c, label.clone()));
            }
            via.insert(pid, label);
        }
        for p in all {
            if !via.contains_key(&p.pid) && p.userns.is_some_and(|ns| namespaces.contains(&ns)) {
                queue.push_back((p.pid, "lab userns".into()));
            }
        }
        if queue.is_empty() {
            break;
        }
    }
    let container = |mut pid: u32| -> Option<String> {
        for _ in 0..64 {
            let p = by_pid.get(&pid)?;
            if let Some(n) = p.conmon_of() {
                return Some(n.to_owned());
            }
            pid = p.ppid;
        }
        None
    };
    via.into_iter()
        .map(|(pid, via)| LabProc {
            proc: by_pid[&pid].clone(),
            via,
            container: container(pid),
        })
        .collect()
}

/// The per-process table: pid, ppid, comm, uids and gids (real/effective/saved/fs), user
/// namespace, why it counts, container, argv (cut).
pub fn table<'a>(procs: impl IntoIterator<Item = &'a LabProc>) -> String {
    let mut s = format!(
        "{:>7} {:>7} {:<16} {:<24} {:<24} {:<11} {:<14} {:<40} {}\n",
        "pid", "ppid", "comm", "uid r/e/s/fs", "gid r/e/s/fs", "userns", "via", "container", "argv"
    );
    let ids = |v: &[u32; 4]| v.map(|x| x.to_string()).join("/");
    // Zombies (exited, not yet reaped: the API service's slirp4netns pile up so) in one line per
    // parent, identity and all, unless one has a root id.
    let mut zombies: BTreeMap<(u32, String, String, String), usize> = BTreeMap::new();
    for l in procs {
        let p = &l.proc;
        if p.state == 'Z' && !p.has_root_id() {
            let key = (p.ppid, p.comm.clone(), ids(&p.uids), ids(&p.gids));
            *zombies.entry(key).or_default() += 1;
            continue;
        }
        let mut argv = p.argv.join(" ");
        if let Some((i, _)) = argv.char_indices().nth(60) {
            argv.truncate(i);
            argv.push('…');
        }
        let mut ctr = l.container.clone().unwrap_or_else(|| "-".into());
        if let Some((i, _)) = ctr.char_indices().nth(40) {
            ctr = format!("…{}", &ctr[ctr.len() - (ctr.len() - i).min(39)..]);
        }
        let _ = writeln!(
            s,
            "{:>7} {:>7} {:<16} {:<24} {:<24} {:<11} {:<14} {:<40} {}{}",
            p.pid,
            p.ppid,
            p.comm,
            ids(&p.uids),
            ids(&p.gids),
            p.userns.map_or("?".into(), |n| n.to_string()),
            l.via,
            ctr,
            argv,
            if p.has_root_id() { "   <== ROOT" } else { "" }
        );
    }
    for ((ppid, comm, uids, gids), n) in zombies {
        let _ = writeln!(
            s,
            "{:>7} {ppid:>7} {comm:<16} {uids:<24} {gids:<24} ({n} zombies)",
            "-"
        );
    }
    s
}

/// What a [`Watch`] saw: every lab process it met, and every observation with a root id.
#[derive(Debug, Default)]
pub struct WatchLog {
    pub scans: u32,
    /// Keyed by (pid, start time); the last observation of each.
    pub seen: BTreeMap<(u32, u64), LabProc>,
    pub violations: Vec<LabProc>,
}

/// A thread that reads the lab's processes every `interval` until [`Watch::finish`].
pub struct Watch {
    stop: Option<mpsc::Sender<()>>,
    handle: Option<std::thread::JoinHandle<WatchLog>>,
}

impl Watch {
    pub fn start(roots: Vec<(u32, String)>, interval: Duration) -> Watch {
        let (tx, rx) = mpsc::channel::<()>();
        let host_ns = host_userns();
        let handle = std::thread::spawn(move || {
            let mut log = WatchLog::default();
            loop {
                for l in lab_processes(&scan(), &roots, host_ns) {
                    if l.proc.has_root_id() {
                        log.violations.push(l.clone());
                    }
                    log.seen.insert((l.proc.pid, l.proc.start), l);
                }
                log.scans += 1;
                // The interval between readings; a message (or a dropped sender) stops the thread.
                match rx.recv_timeout(interval) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
            }
            log
        });
        Watch {
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    /// Stop the thread (after its current reading) and return what it saw.
    pub fn finish(mut self) -> WatchLog {
        self.stop.take();
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// What [`prove`] expects among the lab's processes besides the runner and the job.
#[derive(Clone, Copy, Debug, Default)]
pub struct Expect {
    /// A service container's process (docker and custom modes).
    pub service: bool,
    /// The held process runs in a container inside the job (its own pid namespace below the
    /// job's: Podman in Podman).
    pub inner_container: bool,
}

/// What [`prove`] found.
#[derive(Debug)]
pub struct Proof {
    pub run: PipelineRun,
    /// The lab's processes while the job held.
    pub at_hold: Vec<LabProc>,
    /// Everything the sampling thread saw from the pipeline's start to its end.
    pub watched: WatchLog,
    pub hold: LabProc,
    pub service: Option<LabProc>,
}

impl Proof {
    /// The per-process table of the lab while the job held.
    pub fn table(&self) -> String {
        table(&self.at_hold)
    }

    /// The containers whose processes the sampling thread saw (by conmon's `-n`), sorted.
    pub fn containers_seen(&self) -> Vec<String> {
        let set: std::collections::BTreeSet<&str> = self
            .watched
            .seen
            .values()
            .filter_map(|l| l.container.as_deref())
            .collect();
        set.into_iter().map(str::to_owned).collect()
    }

    /// One line for a report.
    pub fn summary(&self) -> String {
        let containers = self.containers_seen();
        format!(
            "{} lab processes while the job held, {} over the job ({} readings, {} containers), \
             none with host uid or gid 0; job process uid {}, service {}",
            self.at_hold.len(),
            self.watched.seen.len(),
            self.watched.scans,
            containers.len(),
            self.hold.proc.uids[0],
            self.service
                .as_ref()
                .map_or("-".into(), |s| format!("uid {}", s.proc.uids[0])),
        )
    }
}

/// The CI/CD variable that names the held process.
pub const HOLD_VARIABLE: &str = "RUNNERLAB_HOLD";

/// Run `project` on `lab` (its job `job` holds as `runnerlab-hold-$RUNNERLAB_HOLD` after printing
/// `hold $RUNNERLAB_HOLD running`), check every process of the lab from the host while it holds and
/// all along, release it, and check the job then succeeded.
pub async fn prove(lab: &Lab, project: &str, job: &str, expect: Expect) -> Result<Proof> {
    use rand::distr::{Alphanumeric, SampleString};
    let token = Alphanumeric
        .sample_string(&mut rand::rng(), 12)
        .to_lowercase();
    let hold_name = format!("runnerlab-hold-{token}");
    let lab_uid = lab.podman().user().map(|u| u.uid);
    let host_ns = host_userns();

    let runner_pid = lab.runner_pid().await?;
    let mut roots = vec![(runner_pid, "runner".to_owned())];
    let runner_parent = read_proc(runner_pid).map(|p| p.ppid);
    let runner_conmon = runner_parent
        .and_then(read_proc)
        .filter(|p| p.comm == "conmon");
    if let Some(c) = &runner_conmon {
        roots.push((c.pid, "runner conmon".into()));
    }
    if let Some(api) = lab.api_pid() {
        roots.push((api, "api".into()));
    }
    let watch = Watch::start(roots.clone(), Duration::from_millis(200));

    let started = lab
        .pipeline(project)
        .timeout(Duration::from_secs(150))
        .variable(mock_gitlab::Variable {
            key: HOLD_VARIABLE.into(),
            value: token.clone(),
            ..Default::default()
        })
        .spawn()?;
    started
        .wait_trace(job, &format!("hold {token} running"))
        .await?;

    // The job said it holds; its process may be a moment behind the words (echo, then exec).
    let services = if expect.service {
        service_containers(lab).await?
    } else {
        Vec::new()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let (procs, hold) = loop {
        let all = scan();
        let mut procs = lab_processes(&all, &roots, host_ns);
        let hold = procs
            .iter()
            .find(|l| l.proc.argv.first() == Some(&hold_name))
            .cloned();
        let service_up = !expect.service
            || procs
                .iter()
                .any(|l| l.container.as_ref().is_some_and(|c| services.contains(c)));
        if let (Some(h), true) = (&hold, service_up) {
            // The roots' trees first, then the rest of the lab user's namespace.
            procs.sort_by_key(|l| (l.via == "lab userns", l.via.clone(), l.proc.pid));
            break (procs, h.clone());
        }
        if Instant::now() > deadline {
            let anywhere = all
                .iter()
                .find(|p| p.argv.first() == Some(&hold_name))
                .map(|p| format!("pid {} uids {:?}", p.pid, p.uids));
            bail!(
                "after the job printed its marker: held process {hold_name} {}, service \
                 {} (containers {services:?}); the lab's processes:\n{}",
                match (&hold, anywhere) {
                    (Some(_), _) => "found".to_owned(),
                    (None, Some(a)) => format!("runs on the host ({a}) but not among them"),
                    (None, None) => "not found on the host".to_owned(),
                },
                if service_up { "up" } else { "not found" },
                table(&procs)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let service = procs
        .iter()
        .find(|l| {
            l.container.as_ref().is_some_and(|c| services.contains(c)) && l.proc.comm != "conmon"
        })
        .cloned();

    let check = || -> Result<()> {
        let root: Vec<&LabProc> = procs.iter().filter(|l| l.proc.has_root_id()).collect();
        ensure!(
            root.is_empty(),
            "{} of the lab's processes have host uid or gid 0:\n{}",
            root.len(),
            table(root)
        );
        ensure!(
            procs.iter().any(|l| l.proc.pid == runner_pid),
            "the runner (pid {runner_pid}) is not among the lab's processes"
        );
        if !lab.runner_on_host() {
            let c = runner_conmon
                .as_ref()
                .context("the runner container's main process has no conmon parent")?;
            if let Some(uid) = lab_uid {
                ensure!(
                    c.uids == [uid; 4],
                    "the runner container's conmon (pid {}) runs as {:?}, not the lab user {uid}",
                    c.pid,
                    c.uids
                );
            }
        }
        if let Some(api) = lab.api_pid() {
            ensure!(
                procs.iter().any(|l| l.proc.pid == api),
                "the API service (pid {api}) is not among the lab's processes"
            );
        }
        if expect.service {
            ensure!(
                service.is_some(),
                "no process of a service container ({services:?}) among the lab's processes"
            );
        }
        let levels = hold.proc.nspid.len();
        if expect.inner_container {
            // host, job container, the job's own container.
            ensure!(
                levels >= 3,
                "the held process is in {levels} pid namespaces, not in a container inside the job"
            );
        }
        ensure!(
            host_ns.is_none() || hold.proc.userns != host_ns,
            "the job's process runs in the host's user namespace"
        );
        Ok(())
    };
    if let Err(e) = check() {
        bail!(
            "{e:#}\nthe lab's processes while the job held:\n{}",
            table(&procs)
        );
    }

    // Release the job: its held process, killed from the host (SIGKILL reaches even the init of a
    // nested pid namespace from an ancestor one).
    if process_start_time(hold.proc.pid) == Some(hold.proc.start) {
        // SAFETY: kill(2) with a pid read just now and checked against its start time.
        let rc = unsafe { libc::kill(hold.proc.pid as libc::pid_t, libc::SIGKILL) };
        ensure!(
            rc == 0,
            "kill {}: {}",
            hold.proc.pid,
            std::io::Error::last_os_error()
        );
    }
    let run = started.wait().await?;
    let watched = watch.finish();
    let j = run.job(job);
    ensure!(
        j.status() == "success" && j.trace().contains("hold released"),
        "job {job} ended {} without being released by the host; trace:\n{}",
        j.status(),
        j.trace()
    );
    if !watched.violations.is_empty() {
        bail!(
            "while the job ran, {} observations of the lab's processes had host uid or gid 0:\n{}",
            watched.violations.len(),
            table(&watched.violations)
        );
    }
    Ok(Proof {
        run,
        at_hold: procs,
        watched,
        hold,
        service,
    })
}

/// Names of the lab's service containers: the docker executor's (GitLab's `type=service` label)
/// and the custom driver's (`runnerlab.custom.service`).
async fn service_containers(lab: &Lab) -> Result<Vec<String>> {
    let inv = lab.podman().inventory().await?;
    let own = lab.own(&inv);
    Ok(inv
        .containers
        .iter()
        .filter(|(name, labels)| {
            own.containers.contains(name)
                && (labels
                    .get("com.gitlab.gitlab-runner.type")
                    .map(String::as_str)
                    == Some("service")
                    || labels.contains_key("runnerlab.custom.service"))
        })
        .map(|(n, _)| n.clone())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_read_with_its_ids() {
        let me = read_proc(std::process::id()).expect("this process");
        let uid = unsafe { libc::getuid() };
        assert_eq!(me.uids[0], uid);
        assert!(me.userns.is_some());
        assert_eq!(me.nspid.first(), Some(&std::process::id()));
    }

    #[test]
    fn a_root_tree_and_its_namespace_are_the_lab() {
        let p = |pid, ppid, ns, uid| HostProc {
            pid,
            ppid,
            start: 1,
            comm: if pid == 20 {
                "conmon".into()
            } else {
                "x".into()
            },
            state: 'S',
            argv: if pid == 20 {
                vec!["conmon".into(), "-n".into(), "ctr".into()]
            } else {
                vec![]
            },
            uids: [uid; 4],
            gids: [uid; 4],
            userns: Some(ns),
            nspid: vec![pid],
        };
        let all = vec![
            p(1, 0, 1, 0),
            p(10, 1, 1, 1001),    // runner, host userns
            p(11, 10, 1, 1001),   // its child
            p(20, 1, 7, 1001),    // a conmon in the lab userns, not in any tree
            p(21, 20, 7, 100000), // its container
            p(22, 21, 8, 100000), // nested userns under it
            p(30, 1, 1, 0),       // a root process elsewhere
            p(40, 1, 9, 0),       // another userns nobody of the lab is in
            p(12, 10, 7, 1001),   // runner child in the lab userns
        ];
        let lab = lab_processes(&all, &[(10, "runner".into())], Some(1));
        let pids: Vec<u32> = lab.iter().map(|l| l.proc.pid).collect();
        assert_eq!(pids, vec![10, 11, 12, 20, 21, 22]);
        let c = lab.iter().find(|l| l.proc.pid == 22).unwrap();
        assert_eq!(c.container.as_deref(), Some("ctr"));
        assert_eq!(c.via, "lab userns");
        assert!(table(&lab).contains("ctr"));
    }
}
