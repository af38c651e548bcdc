//! `custom`: the custom executor with runnerlab's Podman driver (`fixtures/executors/podman/`:
//! config/prepare/run/cleanup) in the `gitlab-runner-podman` image; one rootless job container per
//! job through the lab's API socket (mounted at `/run/podman/`), services on a per-job network.
//! What jobs need goes into the driver's `PODMAN_RUN_ARGS` (appended to the job container's flags).

use anyhow::Result;

use crate::forge::images;

use super::shell::volume;
use super::{
    ExecutorMode, ExecutorSetup, For, KnownGrowth, ModeFuture, RunnerExtras, SetupContext,
    start_api_service,
};

pub struct Custom;

/// Where the custom executor's Podman driver lives inside the runner image.
const DRIVER_DIR: &str = "/opt/runnerlab/executors/podman";

const EXEC_CONMONS: &str = "every `podman exec` through the API leaves its conmon for 5 minutes \
    (containers.conf `exit_command_delay`, podman #15377/#16431): about 12 per custom-executor build here, \
    ~1.5 MiB each; bounded by the builds of the last 5 minutes (the curve flattens after ~95 builds at 3 s \
    each). Lower `exit_command_delay` where builds are frequent";

impl ExecutorMode for Custom {
    fn name(&self) -> &'static str {
        "custom"
    }

    fn setup<'a>(&'a self, ctx: SetupContext<'a>) -> ModeFuture<'a, ExecutorSetup> {
        Box::pin(async move {
            let image = images::ensure_runner_podman(
                ctx.runner,
                ctx.images,
                std::slice::from_ref(ctx.podman),
            )
            .await?;
            let (dir, api) = start_api_service(&ctx).await?;
            let mut register_args = vec![
                "--builds-dir".to_owned(),
                "/builds".to_owned(),
                "--cache-dir".to_owned(),
                "/cache".to_owned(),
            ];
            for stage in ["config", "prepare", "run", "cleanup"] {
                register_args.push(format!("--custom-{stage}-exec"));
                register_args.push(format!("{DRIVER_DIR}/{stage}"));
            }
            let env = |k: &str, v: &str| ["-e".to_owned(), format!("{k}={v}")];
            let mut run_args = vec![
                "-v".to_owned(),
                format!("{}:/run/podman", dir.path().display()),
            ];
            // The driver labels what it creates with the run id, so the lab's cleanup finds it.
            run_args.extend(env("RUNNERLAB_RUN", ctx.run_id));
            // Job containers clone from mock-gitlab on the host's loopback, like the runner.
            if let Some(n) = ctx.podman.engine().container_network() {
                run_args.extend(env("RUNNERLAB_NETWORK", n));
            }
            run_args.extend(env("RUNNERLAB_DEFAULT_IMAGE", &ctx.images.base));
            run_args.extend(env("RUNNERLAB_PULL_POLICY", "never"));
            Ok(ExecutorSetup {
                image,
                run_args,
                register_args,
                api: Some(api),
                foreign_labels: vec![],
                socket_dir: Some(dir),
            })
        })
    }

    fn uses_api_service(&self) -> bool {
        true
    }

    fn known_growths(&self) -> &'static [KnownGrowth] {
        &[
            KnownGrowth {
                metric: "conmon.procs",
                why: EXEC_CONMONS,
            },
            KnownGrowth {
                metric: "user.procs",
                why: EXEC_CONMONS,
            },
            KnownGrowth {
                metric: "user.rss",
                why: EXEC_CONMONS,
            },
        ]
    }

    fn has_leak_switch(&self) -> bool {
        true
    }

    fn reuses_builds_dir(&self) -> bool {
        // The driver gives every job a new container: nothing to reuse.
        false
    }

    fn pull_failure_reason(&self) -> &'static str {
        // A failed prepare is a system failure by the custom executor's contract.
        "runner_system_failure"
    }

    fn add_tmpfs(
        &self,
        x: &mut RunnerExtras,
        target: For,
        path: &str,
        options: &str,
    ) -> Result<()> {
        driver_arg(x, target, &format!("--tmpfs={path}:{options}"));
        Ok(())
    }

    fn add_volume(&self, x: &mut RunnerExtras, src: &str, dst: &str, ro: bool) -> Result<()> {
        driver_arg(x, For::Jobs, &format!("--volume={}", volume(src, dst, ro)));
        Ok(())
    }

    fn add_security_opt(&self, x: &mut RunnerExtras, target: For, opt: &str) -> Result<()> {
        driver_arg(x, target, &format!("--security-opt={opt}"));
        Ok(())
    }

    fn add_job_user(&self, x: &mut RunnerExtras, uid: u32) -> bool {
        driver_arg(x, For::Jobs, &format!("--user={uid}"));
        true
    }

    fn allow_pull_policy(&self, x: &mut RunnerExtras, policy: &str) -> Result<()> {
        // A later `-e` wins over the lab's RUNNERLAB_PULL_POLICY=never.
        x.run_args
            .extend(["-e".into(), format!("RUNNERLAB_PULL_POLICY={policy}")]);
        Ok(())
    }
}

/// Append `arg` to the one `-e PODMAN_RUN_ARGS=…` (job containers) or `-e PODMAN_SERVICE_ARGS=…`
/// (service containers) of the runner container: the driver splits it on whitespace and appends it
/// to the container's flags.
fn driver_arg(extras: &mut RunnerExtras, target: For, arg: &str) {
    let var = match target {
        For::Jobs => "PODMAN_RUN_ARGS=",
        For::Services => "PODMAN_SERVICE_ARGS=",
    };
    match extras.run_args.iter_mut().find(|a| a.starts_with(var)) {
        Some(v) => {
            v.push(' ');
            v.push_str(arg);
        }
        None => extras.run_args.extend(["-e".into(), format!("{var}{arg}")]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_needs_gather_in_one_podman_run_args() {
        let mut x = RunnerExtras::default();
        Custom
            .add_security_opt(&mut x, For::Jobs, "unmask=/proc/*")
            .unwrap();
        Custom
            .add_tmpfs(&mut x, For::Jobs, "/var/lib/containers", "rw")
            .unwrap();
        Custom.add_volume(&mut x, "/a.tar", "/b.tar", true).unwrap();
        Custom
            .add_security_opt(&mut x, For::Services, "unmask=/proc/*")
            .unwrap();
        assert_eq!(
            x.run_args,
            [
                "-e",
                "PODMAN_RUN_ARGS=--security-opt=unmask=/proc/* --tmpfs=/var/lib/containers:rw --volume=/a.tar:/b.tar:ro",
                "-e",
                "PODMAN_SERVICE_ARGS=--security-opt=unmask=/proc/*",
            ]
        );
    }
}
