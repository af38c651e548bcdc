//! Resource samplers for soak runs.
//!
//! - [`ProcSampler`]: a thread reading `/proc` at a fixed interval for the process groups a soak
//!   watches among the rootless user's processes (its uid and sub-ids): the runner container's
//!   tree, the Podman API service, conmon, slirp4netns, catatonit, and all of them. `/proc`, not `podman stats`: rootless `podman stats`
//!   is empty on cgroup v1 hosts, and the API service and conmon are not in any container anyway.
//! - [`store_counts`]: what the rootless Podman store holds (containers, volumes, networks, images,
//!   dangling images) and the disk its graphroot and runroot use.
//!
//! The sampler measures its own CPU time, so the report can say what watching cost.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::engine::podman::{Inventory, LabUser, Podman};

/// The process groups a sample reports, in report order.
pub const GROUPS: [&str; 7] = [
    "runner",
    "podman-api",
    "conmon",
    "slirp4netns",
    // Podman 5's rootless network (the trixie engine): does it linger as slirp4netns does on 4.3?
    "pasta",
    "catatonit",
    "user",
];

/// The groups whose fds and sockets are counted (see [`count_fds`]); other groups report 0.
const FD_GROUPS: [&str; 2] = ["runner", "podman-api"];

/// One group's totals at one instant.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupStat {
    pub procs: u64,
    pub threads: u64,
    pub rss_kib: u64,
    /// Open fds; counted for the runner and podman-api groups only, 0 for the others.
    pub fds: u64,
    /// Open sockets (for the API service: its listener plus the connections it holds); counted
    /// for the runner and podman-api groups only, 0 for the others.
    pub sockets: u64,
    /// Processes that exited and were not reaped by their parent.
    pub zombies: u64,
    /// CPU use since the previous sample, in percent of one core.
    pub cpu_pct: f64,
}

/// Everything sampled at one instant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the sampler started.
    pub t_s: f64,
    /// Builds finished when the sample was taken.
    pub builds: u64,
    pub groups: BTreeMap<String, GroupStat>,
}

/// Which processes are whose: set (and changed) by the soak as labs come and go.
#[derive(Clone, Debug, Default)]
pub struct Targets {
    /// Host pid of the runner container's main process; its descendants count as "runner".
    pub runner: Option<u32>,
    /// Host pid of the Podman API service; its descendants count as "podman-api".
    pub api: Option<u32>,
}

/// The host uids of the rootless user: its own uid and its subordinate range.
#[derive(Clone, Debug)]
pub struct UserIds {
    pub uid: u32,
    pub sub: Option<(u32, u32)>,
}

impl UserIds {
    pub fn of(user: &LabUser) -> UserIds {
        UserIds {
            uid: user.uid,
            sub: subid_range(Path::new("/etc/subuid"), &user.name),
        }
    }
    fn contains(&self, uid: u32) -> bool {
        uid == self.uid
            || self
                .sub
                .is_some_and(|(start, n)| uid >= start && uid - start < n)
    }
}

/// `name:start:count` from /etc/subuid (the first line for `name`).
fn subid_range(file: &Path, name: &str) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
    })
}

/// One process as read from /proc.
#[derive(Clone, Debug)]
struct Proc {
    pid: u32,
    ppid: u32,
    uid: u32,
    comm: String,
    state: char,
    threads: u64,
    rss_kib: u64,
    cpu_ticks: u64,
    fds: u64,
    sockets: u64,
}

/// Reads `/proc/<pid>/stat` of the processes a sampler keeps, holding each file open between
/// samples: re-reading an open stat file (pread at 0) costs a third of open + read + close, and a
/// long custom-mode soak has ~1,000 of the user's processes to read every second.
///
/// An open stat file stays bound to its process: once that exits, reads fail and the entry is
/// dropped, so a reused pid is opened afresh. A process's uid is decided when it is first seen.
struct ProcReader {
    open: HashMap<u32, (std::fs::File, u32)>,
    /// How many files may be held open; beyond that, processes are opened and closed each time.
    max_open: usize,
    buf: Vec<u8>,
}

impl ProcReader {
    fn new() -> ProcReader {
        ProcReader {
            open: HashMap::new(),
            max_open: fd_budget(),
            buf: vec![0; 4096],
        }
    }

    /// Every process whose uid `keep` accepts.
    fn all(&mut self, keep: &dyn Fn(u32) -> bool) -> Vec<Proc> {
        let Ok(rd) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let pids: Vec<u32> = rd
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        let mut seen = HashSet::with_capacity(pids.len());
        let mut out = Vec::new();
        for pid in pids {
            if let Some(p) = self.read(pid, keep) {
                seen.insert(pid);
                out.push(p);
            }
        }
        self.open.retain(|pid, _| seen.contains(pid));
        out
    }

    fn read(&mut self, pid: u32, keep: &dyn Fn(u32) -> bool) -> Option<Proc> {
        use std::os::unix::fs::FileExt;
        if let Some((f, uid)) = self.open.get(&pid) {
            let uid = *uid;
            match f.read_at(&mut self.buf, 0) {
                Ok(n) if n > 0 && n < self.buf.len() => {
                    return parse_stat(pid, uid, &self.buf[..n]);
                }
                // Exited (and perhaps replaced by a new process with the same pid).
                _ => {
                    self.open.remove(&pid);
                }
            }
        }
        let path = format!("/proc/{pid}");
        // The owner of /proc/<pid> is the process's effective uid: one stat() decides whether the
        // process is the user's (everything a soak watches runs as the rootless user or its sub-ids).
        let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&path).ok()?);
        if !keep(uid) {
            return None;
        }
        let f = std::fs::File::open(format!("{path}/stat")).ok()?;
        let n = f.read_at(&mut self.buf, 0).ok()?;
        let p = parse_stat(pid, uid, &self.buf[..n])?;
        if self.open.len() < self.max_open {
            self.open.insert(pid, (f, uid));
        }
        Some(p)
    }
}

/// How many stat files a reader may hold open: half of what the process may open, after raising
/// its soft limit to the hard one (the default soft limit, often 1,024, is too low for a soak).
fn fd_budget() -> usize {
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return 256;
        }
        if l.rlim_cur < l.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: l.rlim_max,
                rlim_max: l.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                l = raised;
            }
        }
        (l.rlim_cur / 2).min(1 << 16) as usize
    }
}

/// A process from its `/proc/<pid>/stat`; fds are counted later, only for processes a group watches.
fn parse_stat(pid: u32, uid: u32, raw: &[u8]) -> Option<Proc> {
    let stat = std::str::from_utf8(raw).ok()?;
    // comm may hold spaces and parentheses: it ends at the last ')'.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_owned();
    let mut rest = stat.get(close + 2..)?.split_ascii_whitespace();
    // Fields after comm: state(0) ppid(1) … utime(11) stime(12) … num_threads(17) … rss(21).
    let state = rest.next()?.chars().next().unwrap_or('?');
    let ppid = rest.next()?.parse().ok()?;
    let mut rest = rest.skip(9);
    let utime: u64 = rest.next()?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    let mut rest = rest.skip(4);
    let threads = rest.next()?.parse().ok()?;
    let rss_pages: u64 = rest.nth(3)?.parse().ok()?;
    Some(Proc {
        pid,
        ppid,
        uid,
        comm,
        state,
        threads,
        rss_kib: rss_pages * page_kib(),
        cpu_ticks: utime + stime,
        fds: 0,
        sockets: 0,
    })
}

/// Count a process's open fds and which of them are sockets.
///
/// Only for the groups whose fds are judged (the runner and the API service): telling sockets
/// apart needs a readlink per fd, and even one stat() of `/proc/<pid>/fd` per process is a fifth
/// of a sample's cost with the ~1,000 lingering conmons of a custom soak. fd limits are per
/// process, so a whole-user total would not say how close anything is to one anyway.
fn count_fds(p: &mut Proc) {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{}/fd", p.pid)) else {
        return;
    };
    for e in rd.flatten() {
        p.fds += 1;
        if std::fs::read_link(e.path())
            .is_ok_and(|t| t.as_os_str().as_encoded_bytes().starts_with(b"socket:"))
        {
            p.sockets += 1;
        }
    }
}

fn page_kib() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as u64 / 1024 } else { 4 }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Pids of `root` and all its descendants.
fn tree(procs: &[Proc], root: u32) -> HashSet<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut out = HashSet::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        if out.insert(pid) {
            stack.extend(children.get(&pid).into_iter().flatten());
        }
    }
    out
}

/// The groups each process belongs to (a process may be in several: "user" holds them all).
fn classify(procs: &[Proc], targets: &Targets, ids: &UserIds) -> BTreeMap<u32, Vec<&'static str>> {
    let runner = targets.runner.map(|p| tree(procs, p)).unwrap_or_default();
    let api = targets.api.map(|p| tree(procs, p)).unwrap_or_default();
    let mut out: BTreeMap<u32, Vec<&'static str>> = BTreeMap::new();
    for p in procs {
        let mut g = Vec::new();
        if runner.contains(&p.pid) {
            g.push("runner");
        }
        if api.contains(&p.pid) {
            g.push("podman-api");
        }
        // conmon runs as the user, outside every container; catatonit is the rootless pause process.
        match p.comm.as_str() {
            "conmon" => g.push("conmon"),
            "slirp4netns" => g.push("slirp4netns"),
            c if c.starts_with("pasta") => g.push("pasta"),
            "catatonit" => g.push("catatonit"),
            _ => {}
        }
        if ids.contains(p.uid) {
            g.push("user");
        }
        if !g.is_empty() {
            out.insert(p.pid, g);
        }
    }
    out
}

/// Read /proc once and total the groups; CPU is the tick delta against `prev` over `dt`.
fn take(
    reader: &mut ProcReader,
    targets: &Targets,
    ids: &UserIds,
    prev: &mut HashMap<u32, u64>,
    dt: Duration,
) -> BTreeMap<String, GroupStat> {
    let mut procs = reader.all(&|uid| ids.contains(uid));
    let groups = classify(&procs, targets, ids);
    for p in procs.iter_mut() {
        if groups
            .get(&p.pid)
            .is_some_and(|g| g.iter().any(|g| FD_GROUPS.contains(g)))
        {
            count_fds(p);
        }
    }
    let mut out: BTreeMap<String, GroupStat> = GROUPS
        .iter()
        .map(|g| (g.to_string(), GroupStat::default()))
        .collect();
    let hz = clock_ticks();
    let mut ticks_now = HashMap::new();
    for p in &procs {
        let Some(gs) = groups.get(&p.pid) else {
            continue;
        };
        ticks_now.insert(p.pid, p.cpu_ticks);
        // Processes born since the last sample count from zero; those that died are lost (short).
        let delta = p
            .cpu_ticks
            .saturating_sub(prev.get(&p.pid).copied().unwrap_or(0));
        let cpu_pct = if dt.is_zero() {
            0.0
        } else {
            delta as f64 / hz / dt.as_secs_f64() * 100.0
        };
        for g in gs {
            let s = out.entry(g.to_string()).or_default();
            s.procs += 1;
            s.zombies += u64::from(p.state == 'Z');
            s.threads += p.threads;
            s.rss_kib += p.rss_kib;
            s.fds += p.fds;
            s.sockets += p.sockets;
            s.cpu_pct += cpu_pct;
        }
    }
    *prev = ticks_now;
    out
}

/// Shared between the sampling thread and the soak.
#[derive(Default)]
struct Shared {
    targets: Targets,
    builds: u64,
    samples: Vec<Sample>,
    /// CPU spent in [`ProcSampler::reading`] on callers' threads (part of the sampler's cost).
    reading_cpu: Duration,
}

/// Samples /proc every `interval` on its own thread until dropped or [`ProcSampler::finish`]ed.
pub struct ProcSampler {
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Duration>>,
    reader: Arc<Mutex<ProcReader>>,
    started: Instant,
    ids: UserIds,
}

/// What a sampler collected and what it cost.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sampled {
    pub interval_s: f64,
    pub samples: Vec<Sample>,
    /// CPU time the sampler used (its thread and the per-build readings), in percent of one core
    /// over the sampled wall time.
    pub overhead_pct_of_core: f64,
    pub wall_s: f64,
}

impl ProcSampler {
    pub fn start(ids: UserIds, interval: Duration) -> ProcSampler {
        let shared = Arc::new(Mutex::new(Shared::default()));
        // Shared with per-build readings, which then find the files already open.
        let reader = Arc::new(Mutex::new(ProcReader::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let thread = {
            let (shared, stop, ids, reader) =
                (shared.clone(), stop.clone(), ids.clone(), reader.clone());
            std::thread::Builder::new()
                .name("runnerlab-sampler".into())
                .spawn(move || {
                    let mut prev = HashMap::new();
                    let mut last = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        let targets = lock(&shared).targets.clone();
                        let now = Instant::now();
                        let groups =
                            take(&mut lock(&reader), &targets, &ids, &mut prev, now - last);
                        last = now;
                        {
                            let mut s = lock(&shared);
                            let builds = s.builds;
                            s.samples.push(Sample {
                                t_s: started.elapsed().as_secs_f64(),
                                builds,
                                groups,
                            });
                        }
                        // Sleep in short steps so that finish() does not wait a whole interval.
                        let until = now + interval;
                        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(50).min(interval));
                        }
                    }
                    thread_cpu()
                })
                .expect("spawning the sampler thread")
        };
        ProcSampler {
            shared,
            stop,
            thread: Some(thread),
            reader,
            started,
            ids,
        }
    }

    /// Time since the sampler started: the clock of every sample.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Point the "runner" and "podman-api" groups at a new lab's processes.
    pub fn set_targets(&self, targets: Targets) {
        lock(&self.shared).targets = targets;
    }

    /// Count a finished build; later samples carry the new count.
    pub fn set_builds(&self, n: u64) {
        lock(&self.shared).builds = n;
    }

    /// One reading now, outside the series (for per-build values); CPU is not measured here.
    pub fn reading(&self) -> BTreeMap<String, GroupStat> {
        let c0 = thread_cpu();
        let targets = lock(&self.shared).targets.clone();
        let r = take(
            &mut lock(&self.reader),
            &targets,
            &self.ids,
            &mut HashMap::new(),
            Duration::ZERO,
        );
        let spent = thread_cpu().saturating_sub(c0);
        lock(&self.shared).reading_cpu += spent;
        r
    }

    /// Stop sampling and return the series with the sampler's own cost.
    pub fn finish(mut self) -> Sampled {
        self.stop.store(true, Ordering::Relaxed);
        let cpu = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        let wall = self.started.elapsed();
        let (samples, reading_cpu) = {
            let mut s = lock(&self.shared);
            (std::mem::take(&mut s.samples), s.reading_cpu)
        };
        let cpu = cpu + reading_cpu;
        let interval_s = if samples.len() > 1 {
            let (a, b) = (&samples[0], &samples[samples.len() - 1]);
            (b.t_s - a.t_s) / (samples.len() - 1) as f64
        } else {
            0.0
        };
        Sampled {
            interval_s,
            samples,
            overhead_pct_of_core: cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9) * 100.0,
            wall_s: wall.as_secs_f64(),
        }
    }
}

impl Drop for ProcSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// CPU time (user + system) of the calling thread.
fn thread_cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// What the Podman store holds and the disk it uses.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreCounts {
    pub containers: u64,
    pub volumes: u64,
    /// Networks other than the default `podman` one.
    pub networks: u64,
    pub images: u64,
    pub dangling_images: u64,
    pub graphroot_kib: u64,
    pub runroot_kib: u64,
}

impl StoreCounts {
    /// How much more there is than in `before` (never negative).
    pub fn growth_since(&self, before: &StoreCounts) -> StoreCounts {
        StoreCounts {
            containers: self.containers.saturating_sub(before.containers),
            volumes: self.volumes.saturating_sub(before.volumes),
            networks: self.networks.saturating_sub(before.networks),
            images: self.images.saturating_sub(before.images),
            dangling_images: self.dangling_images.saturating_sub(before.dangling_images),
            graphroot_kib: self.graphroot_kib.saturating_sub(before.graphroot_kib),
            runroot_kib: self.runroot_kib.saturating_sub(before.runroot_kib),
        }
    }
}

/// Where a store keeps its data (asked once per soak).
#[derive(Clone, Debug)]
pub struct StorePaths {
    pub graphroot: PathBuf,
    pub runroot: PathBuf,
}

impl StorePaths {
    pub async fn of(podman: &Podman) -> Result<StorePaths> {
        let out = podman
            .text([
                "info",
                "--format",
                "{{.Store.GraphRoot}}\n{{.Store.RunRoot}}",
            ])
            .await
            .context("asking podman info for the store's paths")?;
        let mut l = out.lines();
        // Podman names its paths in its engine's view; the soak measures them from the host's.
        let mut path = || {
            podman
                .engine()
                .host_path(Path::new(l.next().unwrap_or_default().trim()))
        };
        Ok(StorePaths {
            graphroot: path(),
            runroot: path(),
        })
    }
}

/// Count the store's objects (containers, volumes and networks from `inv`, its listing) and
/// measure its disk use.
pub async fn store_counts(
    podman: &Podman,
    paths: &StorePaths,
    inv: &Inventory,
) -> Result<StoreCounts> {
    let lines = |s: String| s.lines().filter(|l| !l.trim().is_empty()).count() as u64;
    let containers = inv.containers.len() as u64;
    let volumes = inv.volumes.len() as u64;
    let networks = inv.networks.iter().filter(|(n, _)| n != "podman").count() as u64;
    let images = lines(podman.text(["images", "-q", "--no-trunc"]).await?);
    let dangling_images = lines(
        podman
            .text(["images", "-q", "--no-trunc", "--filter", "dangling=true"])
            .await?,
    );
    let (g, r) = (paths.graphroot.clone(), paths.runroot.clone());
    let (graphroot_kib, runroot_kib) =
        tokio::task::spawn_blocking(move || (disk_kib(&g), disk_kib(&r))).await?;
    Ok(StoreCounts {
        containers,
        volumes,
        networks,
        images,
        dangling_images,
        graphroot_kib,
        runroot_kib,
    })
}

/// Allocated size of a tree (like `du -sk`), hard links counted once, mount points not crossed.
pub fn disk_kib(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = std::fs::symlink_metadata(root) else {
        return 0;
    };
    let dev = top.dev();
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if md.dev() != dev || !seen.insert(md.ino()) {
            continue;
        }
        total += md.blocks() * 512;
        if md.is_dir()
            && let Ok(rd) = std::fs::read_dir(&p)
        {
            stack.extend(rd.flatten().map(|e| e.path()));
        }
    }
    total / 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subid_ranges_are_read_for_the_named_user() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("subuid");
        std::fs::write(&f, "other:200000:65536\nrunner-user:100000:65536\n").unwrap();
        assert_eq!(subid_range(&f, "runner-user"), Some((100000, 65536)));
        assert_eq!(subid_range(&f, "nobody"), None);
        let ids = UserIds {
            uid: 1001,
            sub: Some((100000, 65536)),
        };
        assert!(ids.contains(1001) && ids.contains(100000) && ids.contains(165535));
        assert!(!ids.contains(0) && !ids.contains(165536));
    }

    #[test]
    fn this_process_is_read_and_its_tree_found() {
        let me = std::process::id();
        let procs = ProcReader::new().all(&|_| true);
        let mut p = procs
            .into_iter()
            .find(|p| p.pid == me)
            .expect("own /proc entry");
        let _listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        count_fds(&mut p);
        assert!(p.threads >= 1 && p.rss_kib > 0 && p.fds > 0, "{p:?}");
        assert!(p.sockets >= 1, "the listener is a socket: {p:?}");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let procs = ProcReader::new().all(&|_| true);
        let t = tree(&procs, me);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(t.contains(&me) && t.contains(&child.id()));
    }

    #[test]
    fn the_sampler_counts_its_targets_and_stops_promptly() {
        let me = std::process::id();
        let uid = unsafe { libc::getuid() };
        let s = ProcSampler::start(UserIds { uid, sub: None }, Duration::from_millis(100));
        s.set_targets(Targets {
            runner: Some(me),
            api: None,
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while lock(&s.shared).samples.len() < 3 {
            assert!(Instant::now() < deadline, "no samples within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        s.set_builds(7);
        while !lock(&s.shared).samples.iter().any(|x| x.builds == 7) {
            assert!(
                Instant::now() < deadline,
                "the build count never reached a sample"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let now = s.reading();
        assert!(now["runner"].procs >= 1 && now["user"].procs >= 1);
        let t0 = Instant::now();
        let out = s.finish();
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "finish waited a whole interval"
        );
        assert!(out.samples.len() >= 3);
        // Samples taken before set_targets have no runner; those after the build count do.
        assert!(
            out.samples
                .iter()
                .filter(|x| x.builds == 7)
                .all(|x| x.groups["runner"].rss_kib > 0 && x.groups["runner"].fds > 0)
        );
        assert!(out.overhead_pct_of_core >= 0.0);
    }

    #[test]
    fn disk_use_counts_hard_links_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 64 * 1024]).unwrap();
        let one = disk_kib(dir.path());
        std::fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        assert_eq!(disk_kib(dir.path()), one);
        assert!(one >= 64);
    }
}
