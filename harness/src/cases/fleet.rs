//! Several runners against one coordinator, as the seed sets them up.

use anyhow::{Result, ensure};

use super::support::{job_ended, outcome};
use super::{ALL, Case, Outcome};
use crate::lab::Lab;

pub(super) const FLEET_TAG_ROUTING: Case = Case {
    name: "fleet-tag-routing",
    about: "two runners with their own config volumes and tags: each job lands on the runner \
            its tags name, untagged jobs only on the runner with run_untagged",
    modes: ALL,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(fleet_tag_routing(lab)),
};

/// The seed's several-runners setup (`runner-1-config`, `runner-2-config`) as a case: a fleet of its
/// own, in the lab's mode, with the lab's runner.
async fn fleet_tag_routing(lab: &Lab) -> Result<Outcome> {
    use crate::lab::fleet::{Fleet, FleetOptions, RunnerSpec};
    let mut opts = FleetOptions::new(
        lab.executor(),
        vec![
            RunnerSpec::new("build")
                .tags(&["build"])
                .run_untagged(false),
            RunnerSpec::new("test").tags(&["test"]).run_untagged(true),
        ],
    );
    opts.runner = lab.options().runner.clone();
    let fleet = Fleet::start(opts).await?;
    let run = fleet.pipeline("fleet-routing").run().await?;
    let (build, test) = (fleet.runner("build").id(), fleet.runner("test").id());
    for (name, want, why) in [
        ("compile", build, "tagged build"),
        ("package", build, "tagged build"),
        ("unit", test, "tagged test"),
        ("integration", test, "tagged test"),
        ("lint", test, "untagged: only `test` has run_untagged"),
        ("docs", test, "untagged: only `test` has run_untagged"),
    ] {
        let j = job_ended(&run, name, "success")?;
        let took = j
            .job
            .runner_id
            .and_then(|id| fleet.runner_by_id(id))
            .and_then(|r| r.name().map(str::to_owned));
        ensure!(
            j.job.runner_id == Some(want),
            "job {name} ({why}) ran on runner {took:?}"
        );
    }
    let registrations = fleet
        .runners()
        .iter()
        .map(|r| r.record().map_or(0, |rec| rec.verify_count))
        .collect::<Vec<_>>();
    fleet.shutdown().await?;
    Ok(Outcome {
        note: Some(format!(
            "2 runners, 2 config volumes; build jobs on `build`, test and untagged jobs on `test`; \
             verifications per runner {registrations:?}"
        )),
        // The two runners work at once: which job's trace comes first is not fixed.
        snapshot: false,
        ..outcome(run)
    })
}
