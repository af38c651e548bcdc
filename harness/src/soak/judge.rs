//! What a soak judges: the metrics (per build, per mode), their thresholds, the duration drift, the
//! counts of failed builds and leftovers, and the known growths of each mode.

use super::sampler::GroupStat;
use super::verdict::{self, Rule, Verdict};
use super::{Build, ModeSoak, PerBuild};
use crate::executor::Executor;

/// Whose resources a metric measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The lab's own processes and store objects: other work on the host does not move them.
    Lab,
    /// The rootless user and its whole store: binding only when the soak has the host to itself.
    Host,
}

/// The metrics that apply to a mode, each with its per-build points (build number, value).
pub fn metric_points(m: &ModeSoak) -> Vec<(&'static Metric, Vec<(f64, f64)>)> {
    let Ok(mode) = m.mode.parse::<Executor>() else {
        return Vec::new();
    };
    METRICS
        .iter()
        .filter(|x| !x.api_only || mode.mode().uses_api_service())
        .map(|metric| {
            let pts = m
                .readings
                .iter()
                .filter_map(|r| (metric.get)(r).map(|v| (r.n as f64, v)))
                .collect();
            (metric, pts)
        })
        .collect()
}

/// A metric taken from a per-build reading.
pub struct Metric {
    pub rule: Rule,
    pub scope: Scope,
    /// `None` when the reading has no value (store counts are taken every few builds).
    pub get: fn(&PerBuild) -> Option<f64>,
    /// Whether the metric means something only in modes with an API service (its process).
    pub api_only: bool,
}

fn g(r: &PerBuild, group: &str, f: fn(&GroupStat) -> u64) -> Option<f64> {
    r.groups.get(group).map(|s| f(s) as f64)
}

/// What is judged. Thresholds: small enough that one leaked object per build fails clearly, large
/// enough that a Go heap settling or page-cache noise over 100 builds does not.
pub const METRICS: &[Metric] = &[
    Metric {
        rule: Rule {
            metric: "runner.rss",
            unit: "KiB",
            threshold: 64.0,
            min_points: 30,
            settles: true,
        },
        scope: Scope::Lab,
        get: |r| g(r, "runner", |s| s.rss_kib),
        api_only: false,
    },
    Metric {
        rule: Rule {
            metric: "runner.fds",
            unit: "fds",
            threshold: 0.05,
            min_points: 3,
            settles: false,
        },
        scope: Scope::Lab,
        get: |r| g(r, "runner", |s| s.fds),
        api_only: false,
    },
    Metric {
        rule: Rule {
            metric: "runner.threads",
            unit: "threads",
            threshold: 0.05,
            // Go's runtime adds threads as blocking calls need them: a long run tells.
            min_points: 30,
            settles: true,
        },
        scope: Scope::Lab,
        get: |r| g(r, "runner", |s| s.threads),
        api_only: false,
    },
    Metric {
        rule: Rule {
            metric: "podman-api.rss",
            unit: "KiB",
            threshold: 128.0,
            min_points: 30,
            settles: true,
        },
        scope: Scope::Lab,
        get: |r| g(r, "podman-api", |s| s.rss_kib),
        api_only: true,
    },
    Metric {
        rule: Rule {
            metric: "podman-api.sockets",
            unit: "sockets",
            threshold: 0.05,
            min_points: 3,
            settles: false,
        },
        scope: Scope::Lab,
        get: |r| g(r, "podman-api", |s| s.sockets),
        api_only: true,
    },
    Metric {
        rule: Rule {
            metric: "podman-api.zombies",
            unit: "zombies",
            threshold: 0.05,
            min_points: 3,
            settles: false,
        },
        scope: Scope::Lab,
        get: |r| g(r, "podman-api", |s| s.zombies),
        api_only: true,
    },
    Metric {
        rule: Rule {
            metric: "user.procs",
            unit: "processes",
            threshold: 0.05,
            min_points: 3,
            settles: false,
        },
        scope: Scope::Host,
        get: |r| g(r, "user", |s| s.procs),
        api_only: false,
    },
    Metric {
        rule: Rule {
            metric: "user.rss",
            unit: "KiB",
            threshold: 256.0,
            min_points: 30,
            settles: true,
        },
        scope: Scope::Host,
        get: |r| g(r, "user", |s| s.rss_kib),
        api_only: false,
    },
    Metric {
        rule: Rule {
            metric: "conmon.procs",
            unit: "processes",
            threshold: 0.05,
            min_points: 3,
            settles: false,
        },
        scope: Scope::Host,
        get: |r| g(r, "conmon", |s| s.procs),
        api_only: false,
    },
    Metric {
        rule: Rule {
            metric: "user.zombies",
            unit: "zombies",
            threshold: 0.05,
            min_points: 3,
            settles: false,
        },
        scope: Scope::Host,
        get: |r| g(r, "user", |s| s.zombies),
        api_only: false,
    },
    Metric {
        rule: Rule {
            metric: "lab.containers",
            unit: "containers",
            threshold: 0.02,
            min_points: 3,
            settles: false,
        },
        scope: Scope::Lab,
        get: |r| Some(r.lab.containers as f64),
        api_only: false,
    },
    Metric {
        rule: Rule {
            metric: "lab.volumes",
            unit: "volumes",
            threshold: 0.02,
            min_points: 3,
            settles: false,
        },
        scope: Scope::Lab,
        get: |r| Some(r.lab.volumes as f64),
        api_only: false,
    },
    Metric {
        rule: Rule {
            metric: "lab.networks",
            unit: "networks",
            threshold: 0.02,
            min_points: 3,
            settles: false,
        },
        scope: Scope::Lab,
        get: |r| Some(r.lab.networks as f64),
        api_only: false,
    },
    Metric {
        rule: Rule {
            metric: "store.containers",
            unit: "containers",
            threshold: 0.02,
            min_points: 3,
            settles: false,
        },
        scope: Scope::Host,
        get: |r| r.store.as_ref().map(|s| s.containers as f64),
        api_only: false,
    },
    Metric {
        rule: Rule {
            metric: "store.volumes",
            unit: "volumes",
            threshold: 0.02,
            min_points: 3,
            settles: false,
        },
        scope: Scope::Host,
        get: |r| r.store.as_ref().map(|s| s.volumes as f64),
        api_only: false,
    },
    Metric {
        rule: Rule {
            metric: "store.networks",
            unit: "networks",
            threshold: 0.02,
            min_points: 3,
            settles: false,
        },
        scope: Scope::Host,
        get: |r| r.store.as_ref().map(|s| s.networks as f64),
        api_only: false,
    },
    Metric {
        rule: Rule {
            metric: "store.graphroot",
            unit: "KiB",
            threshold: 512.0,
            min_points: 3,
            settles: false,
        },
        scope: Scope::Host,
        get: |r| r.store.as_ref().map(|s| s.graphroot_kib as f64),
        api_only: false,
    },
];

/// Build-duration drift: the median of the last fifth of the builds against the first fifth (after
/// warm-up) may grow by this fraction. Medians, not a fitted slope: a few builds slowed by other
/// work on the host must not read as drift.
pub const DRIFT_LIMIT: f64 = 0.25;

/// The duration verdict of one mode (successful builds only).
fn drift_verdict(mode: &str, pts: &[(f64, f64)]) -> Verdict {
    let pts = &pts[verdict::warm_up(pts.len()).min(pts.len())..];
    let fifth = pts.len() / 5;
    let mut v = count_verdict(mode, "build.duration", "s", 0.0, String::new());
    v.threshold_per_build = DRIFT_LIMIT;
    if fifth < 2 {
        v.judged = false;
        v.note = format!("not judged: {} builds after warm-up, 10 needed", pts.len());
        return v;
    }
    let median = |s: &[(f64, f64)]| crate::bench::Stats::of(s.iter().map(|p| p.1).collect()).p50;
    let (a, b) = (&pts[..fifth], &pts[pts.len() - fifth..]);
    let (ma, mb) = (median(a), median(b));
    let centre = |s: &[(f64, f64)]| s.iter().map(|p| p.0).sum::<f64>() / s.len() as f64;
    v.slope_per_build = (mb - ma) / (centre(b) - centre(a)).max(1.0);
    v.first = ma;
    v.last = mb;
    let drift = (mb - ma) / ma.max(1e-9);
    v.pass = drift <= DRIFT_LIMIT;
    v.note = format!(
        "median {ma:.2} s over the first fifth, {mb:.2} s over the last ({:+.0} %, limit +{:.0} %)",
        drift * 100.0,
        DRIFT_LIMIT * 100.0
    );
    v
}

/// All verdicts: per mode, every metric that applies, the duration drift, failed builds and what
/// builds left in the store.
pub fn judge_all(modes: &[ModeSoak], builds: &[Build], shared_host: bool) -> Vec<Verdict> {
    let mut out = Vec::new();
    let scoped = |mut v: Verdict, scope: Scope| {
        v.scope = match scope {
            Scope::Lab => "lab",
            Scope::Host => "host",
        }
        .into();
        v.binding = scope == Scope::Lab || !shared_host;
        v
    };
    for m in modes {
        for (metric, pts) in metric_points(m) {
            out.push(scoped(
                verdict::judge(&m.mode, &metric.rule, &pts),
                metric.scope,
            ));
        }
        let mine: Vec<&Build> = builds.iter().filter(|b| b.mode == m.mode).collect();
        let pts: Vec<(f64, f64)> = mine
            .iter()
            .filter(|b| b.status == "success")
            .map(|b| (b.n as f64, b.duration_s))
            .collect();
        // Durations stretch when other work shares the two cores.
        out.push(scoped(drift_verdict(&m.mode, &pts), Scope::Host));
        // Builds lost to an API restart are judged by their own verdict below.
        let lost = |n: usize| {
            m.api_restart
                .as_ref()
                .is_some_and(|r| n > r.after_build && r.first_good_build.is_none_or(|g| n < g))
        };
        let bad = mine
            .iter()
            .filter(|b| !lost(b.n) && (b.status != "success" || !b.checksum_ok))
            .count();
        out.push(count_verdict(
            &m.mode,
            "builds.failed",
            "builds",
            bad as f64,
            format!(
                "{bad} of {} builds failed or had a bad trace checksum",
                mine.len()
            ),
        ));
        if let Some(r) = &m.api_restart {
            let mut v = count_verdict(
                &m.mode,
                "api_restart.lost_builds",
                "builds",
                r.lost_builds as f64,
                match r.first_good_build {
                    Some(b) => format!(
                        "API service restarted after build {}: {} builds lost, build {b} succeeded again",
                        r.after_build, r.lost_builds
                    ),
                    None => format!(
                        "API service restarted after build {}: the runner never built again ({} builds lost)",
                        r.after_build, r.lost_builds
                    ),
                },
            );
            // Losing the build in flight is tolerable; never recovering is not.
            v.pass = r.first_good_build.is_some();
            out.push(v);
        }
        let left = &m.lab_left_behind;
        let n = left.containers + left.volumes + left.networks;
        out.push(count_verdict(
            &m.mode,
            "lab.left_behind",
            "objects",
            n as f64,
            format!(
                "the lab owns {} containers, {} volumes, {} networks more after the last build than after the first",
                left.containers, left.volumes, left.networks
            ),
        ));
        let left = &m.left_behind;
        let n = left.containers + left.volumes + left.networks;
        out.push(scoped(
            count_verdict(
                &m.mode,
                "store.left_behind",
                "objects",
                n as f64,
                format!(
                    "the store holds {} containers, {} volumes, {} networks more after the last build than before the first",
                    left.containers, left.volumes, left.networks
                ),
            ),
            Scope::Host,
        ));
    }
    out
}

/// Mark failing verdicts that are known growths, and known growths that no longer reproduce.
pub(super) fn apply_known(verdicts: &mut [Verdict]) {
    for v in verdicts.iter_mut() {
        let Some(k) = v.mode.parse::<Executor>().ok().and_then(|m| {
            m.mode()
                .known_growths()
                .iter()
                .find(|k| k.metric == v.metric)
        }) else {
            continue;
        };
        if !v.pass {
            v.known = Some(k.why.to_owned());
        } else if v.judged {
            v.note = format!("{} — known growth did not reproduce: {}", v.note, k.why);
        }
    }
}

pub(super) fn count_verdict(mode: &str, metric: &str, unit: &str, n: f64, note: String) -> Verdict {
    Verdict {
        mode: mode.to_owned(),
        metric: metric.to_owned(),
        unit: unit.to_owned(),
        slope_per_build: 0.0,
        slope_stderr: 0.0,
        r2: 0.0,
        threshold_per_build: 0.0,
        first: 0.0,
        last: n,
        pass: n == 0.0,
        judged: true,
        known: None,
        scope: "lab".into(),
        binding: true,
        note,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_slow_builds_are_not_drift_but_a_slowing_runner_is() {
        let steady: Vec<(f64, f64)> = (1..=100)
            .map(|n| (n as f64, if (70..80).contains(&n) { 2.0 } else { 0.4 }))
            .collect();
        let v = drift_verdict("shell", &steady);
        assert!(v.pass && v.judged, "{v:?}");
        let slowing: Vec<(f64, f64)> = (1..=100)
            .map(|n| (n as f64, 0.4 + 0.004 * n as f64))
            .collect();
        let v = drift_verdict("shell", &slowing);
        assert!(!v.pass, "{v:?}");
        assert!(!drift_verdict("shell", &steady[..8]).judged);
    }

    #[test]
    fn known_growths_do_not_fail_the_soak_and_say_why() {
        let mut v = vec![
            count_verdict(
                "docker",
                "podman-api.zombies",
                "zombies",
                0.0,
                "grows".into(),
            ),
            count_verdict(
                "shell",
                "podman-api.zombies",
                "zombies",
                0.0,
                "grows".into(),
            ),
        ];
        v[0].pass = false;
        v[1].pass = false;
        apply_known(&mut v);
        assert!(v[0].known.as_deref().is_some_and(|k| k.contains("#9777")));
        // Only for the mode it is known in.
        assert!(v[1].known.is_none());
    }
}
