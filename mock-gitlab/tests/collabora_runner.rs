//! Cross-check with an independent implementation of the runner side:
//! collabora's `gitlab-runner` crate (a library for custom runners) takes a
//! job from the mock, streams its trace, uploads an artifact and reports
//! success (and stops on a cancel); the mock's records must agree. The real
//! gitlab-runner covers the same protocol in `suites/`; this one needs no
//! Podman and runs everywhere.

mod common;

use std::borrow::Cow;
use std::time::Duration;

use common::{Lab, temp_fixture};
use gitlab_runner::job::Job;
use gitlab_runner::{
    GitlabLayer, JobHandler, JobResult, Phase, RunnerBuilder, UploadableFile, outputln,
};
use mock_gitlab::{JobStatus, PipelineStatus, RunnerSpec};
use tracing_subscriber::layer::SubscriberExt;

const CI: &str = r#"
build:
  script:
    - make all
  artifacts:
    paths: [out.txt]
"#;

/// An artifact file held in memory.
struct MemFile {
    path: String,
    data: Vec<u8>,
}

#[async_trait::async_trait]
impl UploadableFile for MemFile {
    type Data<'a> = &'a [u8];

    fn get_path(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.path)
    }

    async fn get_data(&self) -> Result<Self::Data<'_>, ()> {
        Ok(&self.data)
    }
}

/// "Runs" each script line by writing it to the trace.
struct Echo {
    job: Job,
}

#[async_trait::async_trait]
impl JobHandler<MemFile> for Echo {
    async fn step(&mut self, script: &[String], phase: Phase) -> JobResult {
        outputln!("phase {:?} of job {}", phase, self.job.id());
        for line in script {
            outputln!("$ {}", line);
        }
        Ok(())
    }

    async fn get_uploadable_files(
        &mut self,
    ) -> Result<Box<dyn Iterator<Item = MemFile> + Send>, ()> {
        Ok(Box::new(std::iter::once(MemFile {
            path: "out.txt".into(),
            data: b"built by collabora's runner\n".to_vec(),
        })))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collabora_runner_runs_a_job_end_to_end() {
    let lab = Lab::start().await;
    let runner = lab.mock.create_runner(RunnerSpec::default());
    let fixture = temp_fixture(CI);
    lab.mock
        .add_project("group/collabora", fixture.path())
        .unwrap();
    let pid = lab.mock.create_pipeline("group/collabora", "main").unwrap();

    // The crate writes job logs through a tracing layer; it must be the
    // subscriber of the tasks the runner spawns (they inherit the current one).
    let (layer, jobs) = GitlabLayer::new();
    let subscriber = tracing_subscriber::registry().with(layer);
    let _guard = tracing::subscriber::set_default(subscriber);

    let build_dir = tempfile::tempdir().unwrap();
    let url = url::Url::parse(&lab.mock.local_url()).unwrap();
    let mut client = RunnerBuilder::new(url, runner.token.clone(), build_dir.path(), jobs)
        .version("runnerlab-crosscheck")
        .build()
        .await;
    let got = client
        .request_job(|job| async move { Ok(Echo { job }) })
        .await
        .expect("job request");
    assert!(got, "the mock handed out no job");
    tokio::time::timeout(Duration::from_secs(60), client.drain())
        .await
        .expect("job finished");

    let done = lab
        .mock
        .wait_pipeline(pid, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(done.status, PipelineStatus::Success);
    let job = done.job("build").unwrap();
    assert_eq!(job.status, JobStatus::Success);
    assert_eq!(job.runner_id, Some(runner.id));
    assert_eq!(
        job.state_updates.last().map(String::as_str),
        Some("success")
    );
    let trace = job.trace_text();
    assert!(trace.contains("$ make all"), "{trace:?}");
    assert!(trace.contains(&format!("of job {}", job.id)), "{trace:?}");
    assert!(job.trace_patches >= 1);
    assert_eq!(job.trace_rejections, 0);
    // The crate does not announce `trace_checksum`, so there is nothing to compare.
    assert_eq!(job.checksum_ok, None);

    let arts = lab.mock.artifacts(job.id);
    assert_eq!(arts.len(), 1, "{arts:?}");
    assert_eq!(arts[0].artifact_type, "archive");
    assert_eq!(arts[0].format, "zip");
    assert!(arts[0].bytes.starts_with(b"PK\x03\x04"), "a zip archive");
    // Zip keeps member names in clear: the file the handler offered is in it.
    assert!(arts[0].bytes.windows(7).any(|w| w == b"out.txt"));
}

/// Writes a line every 100 ms until the job is canceled (the crate drops the
/// step). Output keeps trace PATCHes going, and a PATCH is where the cancel
/// shows; with no output the crate would only learn it at its 30 s keep-alive PUT.
struct Forever;

#[async_trait::async_trait]
impl JobHandler for Forever {
    async fn step(&mut self, _script: &[String], _phase: Phase) -> JobResult {
        for i in 0..6000 {
            outputln!("waiting for the cancel ({i})");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }
}

/// A forced cancel reaches the crate as GitLab sends it (`Job-Status: canceled`
/// on its next trace PATCH or update): it stops, and reports nothing after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collabora_runner_stops_on_a_forced_cancel() {
    let lab = Lab::start_with(|c| c.trace_update_interval = 1).await;
    let runner = lab.mock.create_runner(RunnerSpec::default());
    let fixture = temp_fixture("long:\n  script: [sleep 600]\n");
    lab.mock.add_project("group/long", fixture.path()).unwrap();
    let pid = lab.mock.create_pipeline("group/long", "main").unwrap();

    let (layer, jobs) = GitlabLayer::new();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    let build_dir = tempfile::tempdir().unwrap();
    let url = url::Url::parse(&lab.mock.local_url()).unwrap();
    let mut client = RunnerBuilder::new(url, runner.token.clone(), build_dir.path(), jobs)
        .build()
        .await;
    assert!(
        client
            .request_job(|_job| async move { Ok(Forever) })
            .await
            .unwrap()
    );

    // Wait (with a deadline) until the script runs and its line reached the trace.
    let id = lab.mock.pipeline(pid).job("long").unwrap().id;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !lab
        .mock
        .job(id)
        .unwrap()
        .trace_text()
        .contains("waiting for the cancel")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no trace from the crate"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    lab.mock.cancel_job(id, false).unwrap();
    tokio::time::timeout(Duration::from_secs(15), client.drain())
        .await
        .expect("the crate stopped the job");

    let job = lab.mock.job(id).unwrap();
    assert_eq!(job.trace_rejections, 0);
    assert_eq!(job.status, JobStatus::Canceled);
    assert!(
        !job.state_updates
            .iter()
            .any(|s| s == "success" || s == "failed"),
        "{:?}",
        job.state_updates
    );
    assert_eq!(lab.mock.pipeline(pid).status, PipelineStatus::Canceled);
}
