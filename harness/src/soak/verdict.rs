//! Verdicts from per-build curves: a least-squares slope per metric, judged against a threshold.
//!
//! A metric is a leak when its slope is above the threshold **and** the growth is real: the lower
//! end of the slope's ~95 % interval (slope − 2·standard error) is above zero. The first tenth of
//! the builds is warm-up (caches, first image use, Go's heap finding its size) and not fitted.
//!
//! Memory settles slowly (a Go heap grows towards its size for tens of builds), so for a rule that
//! `settles` a growing fit is not yet a verdict: the growth must persist. The second half of the
//! fitted builds is fitted again and its ~95 % interval decides — wholly above the threshold: a
//! leak; wholly below: settled, a pass; straddling it: "too short to judge" (not judged, does not
//! fail the soak). A verdict then never flips on noise at the threshold.

use serde::{Deserialize, Serialize};

/// Least-squares line through `(x, y)` points.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    pub slope: f64,
    pub intercept: f64,
    /// Standard error of the slope (0 when the points lie on the line).
    pub slope_stderr: f64,
    pub r2: f64,
    pub n: usize,
}

pub fn fit(points: &[(f64, f64)]) -> Option<Fit> {
    let n = points.len();
    if n < 3 {
        return None;
    }
    let nf = n as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / nf;
    let my = points.iter().map(|p| p.1).sum::<f64>() / nf;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - my).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let sse: f64 = points
        .iter()
        .map(|p| (p.1 - (intercept + slope * p.0)).powi(2))
        .sum();
    let slope_stderr = (sse / (nf - 2.0) / sxx).sqrt();
    let r2 = if syy == 0.0 { 1.0 } else { 1.0 - sse / syy };
    Some(Fit {
        slope,
        intercept,
        slope_stderr,
        r2,
        n,
    })
}

/// Points skipped before fitting: a tenth, and at least the first build after the baseline when
/// enough remain (the first build warms caches and the runner's heap).
pub fn warm_up(n: usize) -> usize {
    (n / 10).max(if n > 5 { 2 } else { 0 })
}

/// A metric's verdict in one mode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub mode: String,
    pub metric: String,
    /// Unit of the metric; the slope is in this unit per build.
    pub unit: String,
    pub slope_per_build: f64,
    pub slope_stderr: f64,
    pub r2: f64,
    pub threshold_per_build: f64,
    /// First and last per-build value fitted.
    pub first: f64,
    pub last: f64,
    pub pass: bool,
    /// False when there were too few builds to judge (then `pass` is true and says nothing).
    pub judged: bool,
    /// A failing verdict that is a known behaviour of this Podman/runner: why. It does not fail
    /// the soak.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known: Option<String>,
    /// `lab` (the lab's own processes and objects) or `host` (the whole rootless user and store).
    pub scope: String,
    /// Whether `pass` counts towards the soak's result (host-scope verdicts do not when the host
    /// was shared with other work).
    pub binding: bool,
    /// Why, in words (slope vs threshold, and how sure).
    pub note: String,
}

/// How a metric is judged.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    pub metric: &'static str,
    pub unit: &'static str,
    /// Largest growth per build that is not a leak.
    pub threshold: f64,
    /// Fewest fitted builds for a verdict. Counts (fds, processes, objects) tell a leak in a few
    /// builds; memory needs many, or a heap still finding its size reads as one.
    pub min_points: usize,
    /// Whether the metric settles (memory): growth must persist into the second half of the run
    /// to be a leak (see the module's doc).
    pub settles: bool,
}

/// Fewest points of the second half a settling metric is judged on.
pub const MIN_SETTLED_POINTS: usize = 10;

/// Judge `values` (per build: build number, value) by `rule`.
pub fn judge(mode: &str, rule: &Rule, values: &[(f64, f64)]) -> Verdict {
    let warm = warm_up(values.len());
    let pts = &values[warm.min(values.len())..];
    let (first, last) = (
        pts.first().map(|p| p.1).unwrap_or(0.0),
        pts.last().map(|p| p.1).unwrap_or(0.0),
    );
    let base = Verdict {
        mode: mode.to_owned(),
        metric: rule.metric.to_owned(),
        unit: rule.unit.to_owned(),
        slope_per_build: 0.0,
        slope_stderr: 0.0,
        r2: 0.0,
        threshold_per_build: rule.threshold,
        first,
        last,
        pass: true,
        judged: true,
        known: None,
        scope: "lab".into(),
        binding: true,
        note: String::new(),
    };
    let need = rule.min_points.max(3);
    let fitted = (pts.len() >= need).then(|| fit(pts)).flatten();
    let Some(f) = fitted else {
        return Verdict {
            note: format!(
                "not judged: {} builds after warm-up, {need} needed",
                pts.len()
            ),
            judged: false,
            ..base
        };
    };
    let lower = f.slope - 2.0 * f.slope_stderr;
    let over = f.slope > rule.threshold;
    let real = lower > 0.0;
    // A settling metric is clear only when its whole run is clearly below the threshold;
    // anything else is decided by the second half (see the module's doc).
    if rule.settles && f.slope + 2.0 * f.slope_stderr >= rule.threshold {
        return settled(base, rule, &f, pts);
    }
    let pass = !(over && real);
    let note = match (over, real) {
        (true, true) => format!(
            "grows {:.3} {}/build (≥ {:.3} at ~95 %), above {:.3}",
            f.slope, rule.unit, lower, rule.threshold
        ),
        (true, false) => format!(
            "slope {:.3} ± {:.3} {}/build is above {:.3} but not distinguishable from noise",
            f.slope,
            2.0 * f.slope_stderr,
            rule.unit,
            rule.threshold
        ),
        _ => format!(
            "slope {:.3} ± {:.3} {}/build, threshold {:.3}",
            f.slope,
            2.0 * f.slope_stderr,
            rule.unit,
            rule.threshold
        ),
    };
    Verdict {
        slope_per_build: f.slope,
        slope_stderr: f.slope_stderr,
        r2: f.r2,
        pass,
        note,
        ..base
    }
}

/// A settling metric whose whole run grows: judge the second half (see the module's doc).
fn settled(base: Verdict, rule: &Rule, whole: &Fit, pts: &[(f64, f64)]) -> Verdict {
    let half = &pts[pts.len() / 2..];
    let from = half.first().map(|p| p.0).unwrap_or(0.0);
    let u = rule.unit;
    let overall = format!("grows {:.1} {u}/build overall", whole.slope);
    let base = Verdict {
        slope_per_build: whole.slope,
        slope_stderr: whole.slope_stderr,
        r2: whole.r2,
        ..base
    };
    let h = (half.len() >= MIN_SETTLED_POINTS)
        .then(|| fit(half))
        .flatten();
    let Some(h) = h else {
        return Verdict {
            judged: false,
            note: format!(
                "too short to judge: {overall}, and {} builds since build {from:.0} are too few to tell a settling heap from a leak ({MIN_SETTLED_POINTS} needed) — run more builds",
                half.len()
            ),
            ..base
        };
    };
    let (lo, hi) = (
        h.slope - 2.0 * h.slope_stderr,
        h.slope + 2.0 * h.slope_stderr,
    );
    let since = format!(
        "{:.1} ± {:.1} {u}/build since build {from:.0}",
        h.slope,
        2.0 * h.slope_stderr
    );
    let t = rule.threshold;
    if lo > t {
        Verdict {
            // The persisting growth is the leak's rate.
            slope_per_build: h.slope,
            slope_stderr: h.slope_stderr,
            r2: h.r2,
            pass: false,
            note: format!("{overall} and keeps growing: {since}, above {t:.1}"),
            ..base
        }
    } else if hi < t {
        Verdict {
            note: format!("{overall} while settling, then {since}: below {t:.1}, settled"),
            ..base
        }
    } else {
        Verdict {
            judged: false,
            note: format!(
                "too short to judge: {overall}, {since} — the interval straddles the threshold {t:.1}; run more builds"
            ),
            ..base
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: usize, a: f64, b: f64) -> Vec<(f64, f64)> {
        (0..n).map(|i| (i as f64, a + b * i as f64)).collect()
    }

    #[test]
    fn fit_recovers_a_line() {
        let f = fit(&line(20, 5.0, 0.5)).unwrap();
        assert!((f.slope - 0.5).abs() < 1e-9 && (f.intercept - 5.0).abs() < 1e-9);
        assert!(f.slope_stderr < 1e-9 && (f.r2 - 1.0).abs() < 1e-9);
        assert!(fit(&line(2, 0.0, 1.0)).is_none());
    }

    const CONTAINERS: Rule = Rule {
        metric: "containers",
        unit: "containers",
        threshold: 0.02,
        min_points: 3,
        settles: false,
    };

    const RSS: Rule = Rule {
        metric: "runner.rss",
        unit: "KiB",
        threshold: 64.0,
        min_points: 30,
        settles: true,
    };

    /// Deterministic noise in [-amp, amp] (an LCG: the same series every run).
    fn noise(n: usize, amp: f64, seed: u64) -> Vec<f64> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 33) as f64 / (1u64 << 31) as f64 * 2.0 - 1.0) * amp
            })
            .collect()
    }

    /// A Go heap finding its size: ~4.7 MiB of growth approaching a plateau, with page noise.
    fn settling_heap(builds: usize, seed: u64) -> Vec<(f64, f64)> {
        noise(builds, 300.0, seed)
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let n = (i + 1) as f64;
                (n, 70_000.0 + 4_800.0 * (1.0 - (-n / 12.0).exp()) + e)
            })
            .collect()
    }

    fn leaking(builds: usize, per_build: f64, seed: u64) -> Vec<(f64, f64)> {
        noise(builds, 300.0, seed)
            .into_iter()
            .enumerate()
            .map(|(i, e)| ((i + 1) as f64, 70_000.0 + per_build * (i + 1) as f64 + e))
            .collect()
    }

    #[test]
    fn a_settling_heap_is_not_a_leak_at_40_or_100_builds() {
        for seed in 1..=20 {
            for builds in [40, 100] {
                let pts = settling_heap(builds, seed);
                // The whole run's slope is above the threshold: the old rule failed it.
                let whole = fit(&pts[warm_up(builds)..]).unwrap();
                if builds == 40 {
                    assert!(whole.slope > RSS.threshold, "seed {seed}: {whole:?}");
                }
                let v = judge("shell", &RSS, &pts);
                assert!(v.pass, "seed {seed}, {builds} builds: {v:?}");
            }
        }
    }

    #[test]
    fn a_persistent_leak_is_caught_at_40_builds() {
        for seed in 1..=20 {
            for per_build in [128.0, 256.0, 1024.0] {
                let v = judge("shell", &RSS, &leaking(40, per_build, seed));
                assert!(!v.pass && v.judged, "seed {seed}, {per_build}: {v:?}");
                assert!(v.note.contains("keeps growing"), "{}", v.note);
            }
        }
    }

    #[test]
    fn growth_at_the_threshold_is_too_short_to_judge_not_a_failure() {
        // 64 KiB/build against a 64 KiB threshold: no run length makes that a definite leak.
        let v = judge("shell", &RSS, &leaking(40, 64.0, 7));
        assert!(v.pass && !v.judged, "{v:?}");
        assert!(v.note.starts_with("too short to judge"), "{}", v.note);
    }

    #[test]
    fn one_container_per_build_is_a_leak() {
        let v = judge("custom", &CONTAINERS, &line(10, 0.0, 1.0));
        assert!(!v.pass, "{v:?}");
        assert!(v.note.contains("grows 1.000"), "{}", v.note);
    }

    #[test]
    fn a_flat_curve_passes_and_noise_is_not_a_leak() {
        assert!(judge("shell", &CONTAINERS, &line(10, 3.0, 0.0)).pass);
        // Steep-looking but alternating: the interval straddles zero.
        let noisy: Vec<(f64, f64)> = (0..10)
            .map(|i| (i as f64, if i % 2 == 0 { 0.0 } else { 5.0 }))
            .collect();
        let v = judge("shell", &CONTAINERS, &noisy);
        assert!(v.pass, "{v:?}");
    }

    #[test]
    fn too_few_points_are_not_judged() {
        let v = judge("shell", &CONTAINERS, &line(2, 0.0, 1.0));
        assert!(
            v.pass && !v.judged && v.note.starts_with("not judged"),
            "{v:?}"
        );
    }
}
