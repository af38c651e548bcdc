//! mock-gitlab's own figures (never asserted): job dispatch to long-polling
//! runners, trace PATCH throughput, pipeline creation of a 200-job matrix.
//!
//! ```text
//! cargo bench -p mock-gitlab --bench mock
//! BENCH_RUNNERS=100 BENCH_JOBS=300 BENCH_SECS=5 cargo bench -p mock-gitlab --bench mock
//! ```
//!
//! Client and server share one 2-worker tokio runtime, like a 2-core machine.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mock_gitlab::{Config, MockGitlab, RunnerSpec};
use serde_json::{Value, json};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn fixture(dir: &Path, yml: &str) {
    std::fs::write(dir.join(".gitlab-ci.yml"), yml).expect("write .gitlab-ci.yml");
}

async fn start(data: &Path, f: impl FnOnce(&mut Config)) -> MockGitlab {
    let mut cfg = Config {
        data_dir: data.to_path_buf(),
        long_poll: Duration::from_secs(50),
        ..Config::default()
    };
    f(&mut cfg);
    MockGitlab::start(cfg).await.expect("start mock")
}

fn client(pool: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(pool)
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client")
}

struct Row {
    what: String,
    figure: String,
    target: String,
}

/// (a) N runners hold long polls; jobs are created one at a time and the time
/// from "job queued" to "runner got its 201" is measured.
async fn dispatch(runners: usize, jobs: usize) -> Vec<Row> {
    let tmp = tempfile::tempdir().unwrap();
    let mock = start(tmp.path(), |_| {}).await;
    let fx = tempfile::tempdir().unwrap();
    fixture(fx.path(), "job:\n  script:\n    - echo ok\n");
    mock.add_project("bench/dispatch", fx.path()).unwrap();
    let http = client(runners * 2);
    let url = format!("{}/api/v4/jobs/request", mock.local_url());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..runners {
        let token = mock.create_runner(RunnerSpec::default()).token;
        let (http, url, tx, stop) = (http.clone(), url.clone(), tx.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut last: Option<String> = None;
            while !stop.load(Ordering::Relaxed) {
                let mut body = json!({"token": token, "info": {"features": {}}});
                if let Some(l) = &last {
                    body["last_update"] = json!(l);
                }
                let Ok(r) = http.post(&url).json(&body).send().await else {
                    break;
                };
                match r.status().as_u16() {
                    201 => {
                        let at = Instant::now();
                        let v: Value = r.json().await.expect("job json");
                        let _ = tx.send((v["id"].as_u64().unwrap(), at));
                    }
                    204 => {
                        if let Some(v) = r.headers().get("x-gitlab-last-update") {
                            last = Some(v.to_str().unwrap().to_string());
                        }
                    }
                    s => panic!("job request answered {s}"),
                }
            }
        }));
    }
    let held = |m: &MockGitlab| m.runners().iter().map(|r| r.long_polls).sum::<u64>();
    let wait_held = |target: u64| {
        let mock = mock.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while held(&mock) < target && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    wait_held(runners as u64).await;
    let mut lat = Vec::with_capacity(jobs);
    let mut create = Vec::with_capacity(jobs);
    for k in 0..jobs {
        let t = Instant::now();
        mock.create_pipeline("bench/dispatch", "main").unwrap();
        create.push(t.elapsed());
        let (id, got) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a runner got the job within 10 s")
            .unwrap();
        let queued = mock.job(id).unwrap().queued_at.unwrap();
        lat.push(got.saturating_duration_since(queued));
        // Every runner is holding a long poll again before the next job.
        wait_held((runners * (k + 2)) as u64).await;
    }
    stop.store(true, Ordering::Relaxed);
    mock.shutdown().await;
    for t in tasks {
        let _ = t.await;
    }
    lat.sort();
    create.sort();
    vec![
        Row {
            what: format!("dispatch p50 ({runners} long-polling runners, {jobs} jobs)"),
            figure: ms(pct(&lat, 0.5)),
            target: String::new(),
        },
        Row {
            what: "dispatch p99".into(),
            figure: ms(pct(&lat, 0.99)),
            target: "≤ 50 ms".into(),
        },
        Row {
            what: "dispatch max".into(),
            figure: ms(*lat.last().unwrap()),
            target: String::new(),
        },
    ]
}

/// (b) Concurrent tasks PATCH their own job's trace in 64-byte steps over a
/// keep-alive client for `secs` seconds.
async fn trace_throughput(tasks: usize, secs: u64, log: bool) -> Vec<Row> {
    let tmp = tempfile::tempdir().unwrap();
    let log_path = tmp.path().join("requests.jsonl");
    let mock = start(tmp.path(), |c| {
        if log {
            c.request_log = Some(log_path.clone());
        }
    })
    .await;
    let fx = tempfile::tempdir().unwrap();
    fixture(
        fx.path(),
        &format!("job:\n  parallel: {tasks}\n  script:\n    - echo ok\n"),
    );
    mock.add_project("bench/trace", fx.path()).unwrap();
    mock.create_pipeline("bench/trace", "main").unwrap();
    let runner = mock.create_runner(RunnerSpec::default());
    let http = client(tasks * 2);
    let base = format!("{}/api/v4", mock.local_url());
    let mut jobs = Vec::new();
    while jobs.len() < tasks {
        let r = http
            .post(format!("{base}/jobs/request"))
            .json(&json!({"token": runner.token}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "all {tasks} jobs are pending");
        let v: Value = r.json().await.unwrap();
        jobs.push((
            v["id"].as_u64().unwrap(),
            v["token"].as_str().unwrap().to_string(),
        ));
    }
    let count = Arc::new(AtomicU64::new(0));
    let chunk = vec![b'x'; 64];
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let mut handles = Vec::new();
    for (id, token) in jobs {
        let (http, count, chunk) = (http.clone(), count.clone(), chunk.clone());
        let url = format!("{base}/jobs/{id}/trace?debug_trace=false");
        handles.push(tokio::spawn(async move {
            let mut offset = 0usize;
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let r = http
                    .patch(&url)
                    .header("JOB-TOKEN", &token)
                    .header("Content-Type", "text/plain")
                    .header(
                        "Content-Range",
                        format!("{offset}-{}", offset + chunk.len() - 1),
                    )
                    .body(chunk.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 202);
                lat.push(t.elapsed());
                offset += chunk.len();
                count.fetch_add(1, Ordering::Relaxed);
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for h in handles {
        lat.extend(h.await.unwrap());
    }
    let elapsed = started.elapsed();
    let n = count.load(Ordering::Relaxed);
    mock.shutdown().await;
    if log {
        let lines = std::fs::read_to_string(&log_path).unwrap().lines().count() as u64;
        assert!(lines >= n, "{lines} log lines for {n} PATCHes");
    }
    lat.sort();
    let suffix = if log { ", JSONL log on" } else { "" };
    vec![
        Row {
            what: format!("trace PATCH throughput ({tasks} tasks, {secs} s{suffix})"),
            figure: format!("{:.0} req/s", n as f64 / elapsed.as_secs_f64()),
            target: if log {
                String::new()
            } else {
                "≥ 5,000 req/s".into()
            },
        },
        Row {
            what: format!("trace PATCH latency p50 / p99{suffix}"),
            figure: format!("{} / {}", ms(pct(&lat, 0.5)), ms(pct(&lat, 0.99))),
            target: String::new(),
        },
    ]
}

/// (c) `create_pipeline` of a `parallel:matrix` job with 200 combinations.
async fn pipeline_creation(reps: usize) -> Vec<Row> {
    let tmp = tempfile::tempdir().unwrap();
    let mock = start(tmp.path(), |_| {}).await;
    let fx = tempfile::tempdir().unwrap();
    let envs: Vec<String> = (1..=20).map(|i| format!("e{i}")).collect();
    let archs: Vec<String> = (1..=10).map(|i| format!("a{i}")).collect();
    fixture(
        fx.path(),
        &format!(
            "stages: [build, test]\n\
             build:\n  stage: build\n  script:\n    - echo $ENV $ARCH\n  parallel:\n    matrix:\n      \
             - ENV: [{}]\n        ARCH: [{}]\n",
            envs.join(", "),
            archs.join(", ")
        ),
    );
    mock.add_project("bench/matrix", fx.path()).unwrap();
    let mut times = Vec::new();
    let mut jobs = 0;
    for _ in 0..reps {
        let t = Instant::now();
        let id = mock.create_pipeline("bench/matrix", "main").unwrap();
        times.push(t.elapsed());
        jobs = mock.pipeline(id).jobs.len();
    }
    mock.shutdown().await;
    times.sort();
    vec![Row {
        what: format!("create_pipeline, {jobs}-job parallel:matrix (median of {reps}; min)"),
        figure: format!("{}; {}", ms(pct(&times, 0.5)), ms(times[0])),
        target: "≤ 100 ms".into(),
    }]
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument selects parts by name.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |name: &str| args.is_empty() || args.iter().any(|a| name.contains(a.as_str()));
    let runners = env_or("BENCH_RUNNERS", 64) as usize;
    let jobs = env_or("BENCH_JOBS", 200) as usize;
    let secs = env_or("BENCH_SECS", 3);
    let tasks = env_or("BENCH_TASKS", 32) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut rows = Vec::new();
    rt.block_on(async {
        if want("dispatch") {
            rows.extend(dispatch(runners, jobs).await);
        }
        if want("trace") {
            rows.extend(trace_throughput(tasks, secs, false).await);
            rows.extend(trace_throughput(tasks, secs, true).await);
        }
        if want("pipeline") {
            rows.extend(pipeline_creation(20).await);
        }
    });
    let w = rows
        .iter()
        .map(|r| r.what.chars().count())
        .max()
        .unwrap_or(0);
    let f = rows
        .iter()
        .map(|r| r.figure.chars().count())
        .max()
        .unwrap_or(0);
    println!("\n{:<w$}  {:<f$}  target", "mock-gitlab bench", "figure");
    for r in &rows {
        println!("{:<w$}  {:<f$}  {}", r.what, r.figure, r.target);
    }
}
