//! `docker`: the docker executor pointed at the lab's rootless Podman API socket (its directory
//! mounted into the runner container, or the runner on the host — see `hostrunner`), the forged
//! helper image, `pull_policy = never`, `FF_NETWORK_PER_BUILD` on through `[runners] environment`
//! as GitLab's Podman docs do (a job can turn it off).

use anyhow::Result;

use crate::engine::podman::{OWNER_LABEL, RUN_LABEL};

use super::shell::volume;
use super::{
    ExecutorMode, ExecutorSetup, For, KnownGrowth, ModeFuture, RunnerExtras, SetupContext,
    start_api_service,
};

pub struct Docker;

const SLIRP_ZOMBIES: &str = "Podman 4.3.1's API service never waits for the slirp4netns of containers \
    on the default rootless network (the docker executor's helper containers): six zombies per build here, \
    until the service restarts (podman #9777). They count against the user's process limit; restart the \
    service now and then, or use pasta (Podman ≥ 4.4)";

impl ExecutorMode for Docker {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn setup<'a>(&'a self, ctx: SetupContext<'a>) -> ModeFuture<'a, ExecutorSetup> {
        Box::pin(async move {
            let (dir, api) = start_api_service(&ctx).await?;
            let sock = dir.socket().display().to_string();
            let (run_id, owner) = (ctx.run_id, ctx.owner);
            let register_args: Vec<String> = [
                "--docker-host",
                &format!("unix://{sock}"),
                "--docker-image",
                &ctx.images.base,
                "--docker-helper-image",
                &ctx.images.helper,
                // No registry: local images only ("always" would pull even localhost/ images).
                "--docker-pull-policy",
                "never",
                "--docker-volumes",
                "/cache",
                // Job, helper and service containers carry the lab's labels (cleanup, reaper).
                "--docker-container-labels",
                &format!("{RUN_LABEL}:{run_id}"),
                "--docker-container-labels",
                &format!("{OWNER_LABEL}:{owner}"),
                // GitLab's Podman docs set it as `[runners] environment`: on by default, and a
                // job may still turn it off (a `[runners.feature_flags]` entry would win).
                "--env",
                "FF_NETWORK_PER_BUILD=true",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            // The socket's directory at the same path inside as outside: what the config says is
            // what exists, and a restarted service's new socket shows up in it.
            let d = dir.path().display();
            let run_args = vec!["-v".to_owned(), format!("{d}:{d}")];
            // Cache volumes and per-build networks carry GitLab's labels only: the runner id is
            // the 9 characters after the glrt- prefix.
            let short: String = ctx
                .runner_token
                .trim_start_matches("glrt-")
                .chars()
                .take(9)
                .collect();
            Ok(ExecutorSetup {
                image: ctx.images.runner.clone(),
                run_args,
                register_args,
                api: Some(api),
                foreign_labels: vec![format!("com.gitlab.gitlab-runner.runner.id={short}")],
                socket_dir: Some(dir),
            })
        })
    }

    fn uses_api_service(&self) -> bool {
        true
    }

    fn runs_on_host(&self) -> bool {
        true
    }

    fn has_api_floor(&self) -> bool {
        true
    }

    fn bench_variants(&self) -> &'static [(&'static str, &'static str)] {
        // GitLab's Podman docs turn it on; its cost per container is the bridge's set-up and teardown.
        &[("FF_NETWORK_PER_BUILD", "false")]
    }

    fn known_growths(&self) -> &'static [KnownGrowth] {
        &[
            KnownGrowth {
                metric: "podman-api.zombies",
                why: SLIRP_ZOMBIES,
            },
            KnownGrowth {
                metric: "user.zombies",
                why: SLIRP_ZOMBIES,
            },
            KnownGrowth {
                metric: "user.procs",
                why: SLIRP_ZOMBIES,
            },
        ]
    }

    fn sources_by_helper(&self) -> bool {
        true
    }

    fn services_get_job_variables(&self) -> bool {
        true
    }

    fn add_tmpfs(
        &self,
        x: &mut RunnerExtras,
        target: For,
        path: &str,
        options: &str,
    ) -> Result<()> {
        // A `key:value` pair (the help's "json object" ends up as a literal key).
        let flag = match target {
            For::Jobs => "--docker-tmpfs",
            For::Services => "--docker-services-tmpfs",
        };
        x.register_args
            .extend([flag.into(), format!("{path}:{options}")]);
        Ok(())
    }

    fn add_volume(&self, x: &mut RunnerExtras, src: &str, dst: &str, ro: bool) -> Result<()> {
        x.register_args
            .extend(["--docker-volumes".into(), volume(src, dst, ro)]);
        Ok(())
    }

    fn add_security_opt(&self, x: &mut RunnerExtras, target: For, opt: &str) -> Result<()> {
        let flag = match target {
            For::Jobs => "--docker-security-opt",
            For::Services => "--docker-services-security-opt",
        };
        x.register_args.extend([flag.into(), opt.to_owned()]);
        Ok(())
    }

    fn allow_pull_policy(&self, x: &mut RunnerExtras, policy: &str) -> Result<()> {
        // The lab registers `pull_policy = ["never"]`; a job's pull_policy outside
        // allowed_pull_policies fails the job.
        x.register_args.extend([
            "--docker-allowed-pull-policies".into(),
            "never".into(),
            "--docker-allowed-pull-policies".into(),
            policy.to_owned(),
        ]);
        Ok(())
    }
}
