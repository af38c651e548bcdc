//! What a soak writes into its directory, each file complete or not at all (write, then rename):
//!
//! - `soak.json`: the whole [`SoakReport`] (schema `runnerlab.soak/1`);
//! - `builds.csv`, `samples.csv` (the 1 Hz series, one row per sample and group), `verdicts.csv`;
//! - `plots/<mode>-<metric>.svg`: per-build readings (dots), the 1 Hz curve between them (line)
//!   and the fitted slope (green: pass, red: leak);
//! - `report.md` and `report.html`: the verdict table and the plots, for people.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;

use super::verdict::{self, Verdict};
use super::{ModeSoak, PerBuild, SoakReport};
use crate::paths::write_atomic;

/// The soak's whole report, in its output directory.
pub const JSON: &str = "soak.json";

pub fn write_all(r: &SoakReport, out: &Path) -> Result<()> {
    let plots = plots(r, out)?;
    write_atomic(&out.join("builds.csv"), builds_csv(r).as_bytes())?;
    write_atomic(&out.join("samples.csv"), samples_csv(r).as_bytes())?;
    write_atomic(
        &out.join("verdicts.csv"),
        verdicts_csv(&r.verdicts).as_bytes(),
    )?;
    write_atomic(&out.join("report.md"), markdown(r, &plots).as_bytes())?;
    write_atomic(&out.join("report.html"), html(r, &plots).as_bytes())?;
    // Last: its presence says the directory is complete.
    write_atomic(&out.join(JSON), serde_json::to_string_pretty(r)?.as_bytes())?;
    Ok(())
}

fn builds_csv(r: &SoakReport) -> String {
    let mut s = String::from("mode,n,status,duration_s,checksum_ok,trace_sha256\n");
    for b in &r.builds {
        let _ = writeln!(
            s,
            "{},{},{},{:.3},{},{}",
            b.mode, b.n, b.status, b.duration_s, b.checksum_ok, b.trace_sha256
        );
    }
    s
}

fn samples_csv(r: &SoakReport) -> String {
    let mut s = String::from("t_s,mode,builds,group,procs,threads,rss_kib,fds,sockets,cpu_pct\n");
    for (x, mode) in r.series.samples.iter().zip(&r.series_mode) {
        for (g, v) in &x.groups {
            let _ = writeln!(
                s,
                "{:.2},{mode},{},{g},{},{},{},{},{},{:.2}",
                x.t_s, x.builds, v.procs, v.threads, v.rss_kib, v.fds, v.sockets, v.cpu_pct
            );
        }
    }
    s
}

fn verdicts_csv(v: &[Verdict]) -> String {
    let mut s = String::from(
        "mode,metric,scope,unit,slope_per_build,slope_stderr,threshold,pass,binding\n",
    );
    for x in v {
        let _ = writeln!(
            s,
            "{},{},{},{},{:.4},{:.4},{:.4},{},{}",
            x.mode,
            x.metric,
            x.scope,
            x.unit,
            x.slope_per_build,
            x.slope_stderr,
            x.threshold_per_build,
            x.pass,
            x.binding
        );
    }
    s
}

/// A plot written: its file (relative to the soak directory) and what it shows.
pub struct Plot {
    pub mode: String,
    pub metric: String,
    pub file: String,
}

fn plots(r: &SoakReport, out: &Path) -> Result<Vec<Plot>> {
    let mut written = Vec::new();
    for m in &r.modes {
        for (metric, per_build) in super::metric_points(m) {
            // Store and lab counts are taken per build only; processes have the 1 Hz curve too.
            let sampled = !metric.rule.metric.starts_with("lab.")
                && !metric.rule.metric.starts_with("store.");
            let curve = if sampled {
                curve(r, m, metric.get)
            } else {
                Vec::new()
            };
            let v = r
                .verdicts
                .iter()
                .find(|v| v.mode == m.mode && v.metric == metric.rule.metric);
            let file = format!("plots/{}-{}.svg", m.mode, metric.rule.metric);
            let svg = svg(
                &plot_title(&m.mode, metric.rule.metric, v),
                metric.rule.unit,
                &per_build,
                &curve,
                v,
            )
            .with_context(|| format!("plotting {file}"))?;
            write_atomic(&out.join(&file), svg.as_bytes())?;
            written.push(Plot {
                mode: m.mode.clone(),
                metric: metric.rule.metric.to_owned(),
                file,
            });
        }
        let durations: Vec<(f64, f64)> = r
            .builds
            .iter()
            .filter(|b| b.mode == m.mode && b.status == "success")
            .map(|b| (b.n as f64, b.duration_s))
            .collect();
        // No fitted line: durations are judged by medians (see `drift_verdict`).
        let file = format!("plots/{}-build.duration.svg", m.mode);
        let svg = svg(
            &format!("{} · build duration", m.mode),
            "s",
            &durations,
            &[],
            None,
        )?;
        write_atomic(&out.join(&file), svg.as_bytes())?;
        written.push(Plot {
            mode: m.mode.clone(),
            metric: "build.duration".into(),
            file,
        });
    }
    Ok(written)
}

/// The 1 Hz series of a mode on the build axis: a sample between readings k and k+1 sits at the
/// fraction of that build's time that had passed.
fn curve(r: &SoakReport, m: &ModeSoak, get: fn(&PerBuild) -> Option<f64>) -> Vec<(f64, f64)> {
    let marks: Vec<(f64, f64)> = m.readings.iter().map(|x| (x.t_s, x.n as f64)).collect();
    let mut out = Vec::new();
    for (s, mode) in r.series.samples.iter().zip(&r.series_mode) {
        if *mode != m.mode {
            continue;
        }
        let Some(k) = marks
            .windows(2)
            .position(|w| w[0].0 <= s.t_s && s.t_s < w[1].0)
        else {
            continue;
        };
        let ((t0, n0), (t1, n1)) = (marks[k], marks[k + 1]);
        let x = n0 + (s.t_s - t0) / (t1 - t0).max(1e-9) * (n1 - n0);
        let pb = PerBuild {
            n: 0,
            t_s: s.t_s,
            groups: s.groups.clone(),
            lab: Default::default(),
            store: None,
        };
        if let Some(y) = get(&pb) {
            out.push((x, y));
        }
    }
    out
}

/// A plot's title says its verdict, so a page of plots reads at a glance.
fn plot_title(mode: &str, metric: &str, v: Option<&Verdict>) -> String {
    let verdict = match v {
        None => return format!("{mode} · {metric}"),
        Some(v) if !v.judged && v.note.starts_with("too short") => "too short to judge".into(),
        Some(v) if !v.judged => "not judged".into(),
        Some(v) if v.known.is_some() => "known finding".into(),
        Some(v) if v.pass => "pass".into(),
        Some(v) => {
            let (div, unit) = human_unit(&v.unit, v.slope_per_build.abs());
            format!(
                "LEAK {:+.1} {unit}/build{}",
                v.slope_per_build / div,
                if v.binding { "" } else { " (not binding)" }
            )
        }
    };
    format!("{mode} · {metric} — {verdict}")
}

/// KiB values shown in the unit that keeps them short: (divisor, unit).
fn human_unit(unit: &str, max: f64) -> (f64, &str) {
    match unit {
        "KiB" if max >= 1024.0 * 1024.0 * 10.0 => (1024.0 * 1024.0, "GiB"),
        "KiB" if max >= 1024.0 * 10.0 => (1024.0, "MiB"),
        u => (1.0, u),
    }
}

fn svg(
    title: &str,
    unit: &str,
    points: &[(f64, f64)],
    curve: &[(f64, f64)],
    v: Option<&Verdict>,
) -> Result<String> {
    // Axes in human units: 74 MiB, not 75776.0 KiB.
    let top = points
        .iter()
        .chain(curve)
        .map(|p| p.1.abs())
        .fold(0.0_f64, f64::max);
    let (div, unit) = human_unit(unit, top);
    let scale =
        |s: &[(f64, f64)]| -> Vec<(f64, f64)> { s.iter().map(|p| (p.0, p.1 / div)).collect() };
    let (points, curve) = (&scale(points)[..], &scale(curve)[..]);
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (560, 300)).into_drawing_area();
        root.fill(&WHITE)?;
        let all = points.iter().chain(curve);
        let xmax = all.clone().map(|p| p.0).fold(1.0_f64, f64::max);
        let (lo, hi) = all
            .map(|p| p.1)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
                (a.min(y), b.max(y))
            });
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
        // Flat curves get some room, so that "flat" is what one sees.
        let pad = ((hi - lo) * 0.1).max(hi.abs() * 0.05).max(1.0);
        let (ylo, yhi) = (
            (lo - pad).max(if lo >= 0.0 { 0.0 } else { lo - pad }),
            hi + pad,
        );
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..xmax, ylo..yhi)?;
        chart
            .configure_mesh()
            .x_desc("build")
            .y_desc(unit)
            .light_line_style(WHITE)
            .draw()?;
        chart.draw_series(LineSeries::new(curve.iter().copied(), BLUE.mix(0.35)))?;
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 2, BLACK.filled())))?;
        if let Some(v) = v {
            let warm = verdict::warm_up(points.len());
            if let Some(f) = verdict::fit(&points[warm.min(points.len())..]) {
                let colour = if v.pass { GREEN.mix(0.8) } else { RED.mix(0.9) };
                let x0 = points.get(warm).map(|p| p.0).unwrap_or(0.0);
                chart.draw_series(LineSeries::new(
                    [x0, xmax]
                        .into_iter()
                        .map(|x| (x, f.intercept + f.slope * x)),
                    colour.stroke_width(2),
                ))?;
            }
        }
        root.present()?;
    }
    Ok(buf)
}

fn verdict_rows(r: &SoakReport) -> Vec<[String; 5]> {
    r.verdicts
        .iter()
        .map(|v| {
            [
                v.mode.clone(),
                v.metric.clone(),
                match (v.pass, v.binding) {
                    _ if !v.judged && v.note.starts_with("too short") => "too short to judge",
                    _ if !v.judged => "not judged",
                    _ if v.known.is_some() => "known finding",
                    (true, _) => "pass",
                    (false, true) => "FAIL",
                    (false, false) => "high (host shared, not binding)",
                }
                .into(),
                if v.metric.starts_with("builds.") || v.metric.ends_with(".left_behind") {
                    format!("{}", v.last)
                } else {
                    format!("{:+.3} {}/build", v.slope_per_build, v.unit)
                },
                match &v.known {
                    Some(k) => format!("{} — {k}", v.note),
                    None => v.note.clone(),
                },
            ]
        })
        .collect()
}

fn summary_rows(r: &SoakReport) -> Vec<[String; 6]> {
    r.modes
        .iter()
        .map(|m| {
            let mine: Vec<_> = r.builds.iter().filter(|b| b.mode == m.mode).collect();
            let ok = mine.iter().filter(|b| b.status == "success").count();
            let d = crate::bench::Stats::of(mine.iter().map(|b| b.duration_s).collect());
            [
                m.mode.clone(),
                format!("{ok}/{}", mine.len()),
                format!("{:.2} s / {:.2} s", d.p50, d.max),
                format!("{:.0} s", m.wall_s),
                format!("{}", m.removed_by_cleanup),
                format!("{}", m.leftovers_after_cleanup),
            ]
        })
        .collect()
}

fn markdown(r: &SoakReport, plots: &[Plot]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# runnerlab soak {} — {}\n",
        r.id,
        if r.passed { "PASS" } else { "FAIL" }
    );
    let _ = writeln!(
        s,
        "{} builds per mode, runner check_interval {} s, sampled every {:.2} s (sampler cost {:.2} % of one core){}. Started {}, took {:.0} s.\n",
        r.builds_per_mode,
        r.check_interval_s,
        r.series.interval_s,
        r.series.overhead_pct_of_core,
        condition(r)
            .map(|c| format!(", **{c}**"))
            .unwrap_or_default(),
        r.started,
        r.wall_s
    );
    s.push_str("| mode | builds ok | duration p50 / max | wall | removed by cleanup | leftovers |\n|---|---|---|---|---|---|\n");
    for row in summary_rows(r) {
        let _ = writeln!(s, "| {} |", row.join(" | "));
    }
    s.push_str(
        "\n## Verdicts\n\n| mode | metric | verdict | value | why |\n|---|---|---|---|---|\n",
    );
    for row in verdict_rows(r) {
        let _ = writeln!(s, "| {} |", row.join(" | "));
    }
    if let Some(d) = &r.disk_full {
        s.push_str("\n## Disk full (docker executor, loop-mounted store)\n\n");
        let _ = writeln!(s, "```text\n{}```", disk_text(d));
    }
    s.push_str("\n## Plots\n\n");
    for p in plots {
        let _ = writeln!(s, "![{} {}]({})", p.mode, p.metric, p.file);
    }
    s.push_str("\nRaw data: [soak.json](soak.json), [builds.csv](builds.csv), [samples.csv](samples.csv), [verdicts.csv](verdicts.csv).\n");
    s
}

fn disk_text(d: &super::disk::DiskFull) -> String {
    let mut s = format!(
        "A {} MiB store, {:.0} MiB used once the lab's images were in it; every build caches 40 MiB.\n\n",
        d.size_mib, d.used_at_start_mib
    );
    for b in d.builds.iter().chain(&d.after_prune) {
        let _ = writeln!(
            s,
            "build {}: {} — {:.0} MiB used",
            b.n,
            b.outcome(),
            b.used_mib
        );
        for l in &b.evidence {
            let _ = writeln!(s, "    {l}");
        }
        if d.after_prune.as_ref() == Some(b) {
            continue;
        }
        if Some(b.n) == d.first_symptom {
            let _ = writeln!(s, "`{}`: {:.0} MiB freed", d.prune_command, d.freed_mib);
        }
    }
    let _ = writeln!(
        s,
        "\n{}",
        if d.recovered {
            "Recovered: the build after the prune succeeded."
        } else {
            "NOT recovered: the build after the prune did not succeed."
        }
    );
    s
}

/// What makes this soak unlike a plain one, for the report's first lines.
fn condition(r: &SoakReport) -> Option<&'static str> {
    match (r.leak_switch, r.interrupted) {
        (_, true) => Some("interrupted (Ctrl-C)"),
        (true, _) => Some("leak switch on"),
        _ => None,
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn html(r: &SoakReport, plots: &[Plot]) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>runnerlab soak {id}</title>\n<style>\
         body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin:1em 0}}\
         td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-size:90%}}\
         .pass{{color:#070}}.warn{{color:#a60}}.FAIL{{color:#b00;font-weight:bold}}.grid{{display:flex;flex-wrap:wrap;gap:8px}}\
         img{{border:1px solid #ddd}}</style></head><body>\n<h1>runnerlab soak {id} — <span class=\"{v}\">{v}</span></h1>\n",
        id = esc(&r.id),
        v = if r.passed { "pass" } else { "FAIL" }
    );
    let _ = writeln!(
        s,
        "<p>{} builds per mode, runner <code>check_interval</code> {} s, sampled every {:.2} s \
         (sampler cost {:.2} % of one core){}. Started {}, took {:.0} s.</p>",
        r.builds_per_mode,
        r.check_interval_s,
        r.series.interval_s,
        r.series.overhead_pct_of_core,
        condition(r)
            .map(|c| format!(", <b>{c}</b>"))
            .unwrap_or_default(),
        esc(&r.started),
        r.wall_s
    );
    s.push_str("<table><tr><th>mode</th><th>builds ok</th><th>duration p50 / max</th><th>wall</th><th>removed by cleanup</th><th>leftovers</th></tr>\n");
    for row in summary_rows(r) {
        s.push_str("<tr>");
        for c in row {
            let _ = write!(s, "<td>{}</td>", esc(&c));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>\n<h2>Verdicts</h2>\n<table><tr><th>mode</th><th>metric</th><th>verdict</th><th>value</th><th>why</th></tr>\n");
    for row in verdict_rows(r) {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&row[0]),
            esc(&row[1]),
            match row[2].as_str() {
                "FAIL" => "FAIL",
                "pass" => "pass",
                _ => "warn",
            },
            esc(&row[2]),
            esc(&row[3]),
            esc(&row[4])
        );
    }
    s.push_str("</table>\n");
    if let Some(d) = &r.disk_full {
        let _ = writeln!(
            s,
            "<h2>Disk full (docker executor, loop-mounted store)</h2>\n<pre>{}</pre>",
            esc(&disk_text(d))
        );
    }
    for m in &r.modes {
        let _ = writeln!(s, "<h2>{}</h2>\n<div class=\"grid\">", esc(&m.mode));
        for p in plots.iter().filter(|p| p.mode == m.mode) {
            let _ = writeln!(
                s,
                "<a href=\"{f}\"><img src=\"{f}\" alt=\"{} {}\" width=\"560\" height=\"300\"></a>",
                esc(&p.mode),
                esc(&p.metric),
                f = esc(&p.file)
            );
        }
        s.push_str("</div>\n");
    }
    s.push_str("<p>Raw data: <a href=\"soak.json\">soak.json</a>, <a href=\"builds.csv\">builds.csv</a>, \
                <a href=\"samples.csv\">samples.csv</a>, <a href=\"verdicts.csv\">verdicts.csv</a>. \
                Dots: per-build readings; line: the 1&nbsp;Hz samples between them; \
                green/red: the fitted slope (pass/leak).</p>\n</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_use_human_units_and_say_the_verdict() {
        assert_eq!(human_unit("KiB", 75_776.0), (1024.0, "MiB"));
        assert_eq!(human_unit("KiB", 900.0), (1.0, "KiB"));
        assert_eq!(human_unit("fds", 90_000.0), (1.0, "fds"));
        let mut v =
            super::super::judge::count_verdict("shell", "runner.rss", "KiB", 0.0, "".into());
        v.unit = "KiB".into();
        v.pass = false;
        v.slope_per_build = 20_480.0;
        assert_eq!(
            plot_title("shell", "runner.rss", Some(&v)),
            "shell · runner.rss — LEAK +20.0 MiB/build"
        );
        v.judged = false;
        v.note = "too short to judge: …".into();
        assert_eq!(
            plot_title("shell", "runner.rss", Some(&v)),
            "shell · runner.rss — too short to judge"
        );
        let svg = svg("t", "KiB", &[(1.0, 70_000.0), (2.0, 75_000.0)], &[], None).unwrap();
        assert!(svg.contains("MiB") && !svg.contains("KiB"), "{svg}");
    }
}
