//! `shell`: jobs run inside the runner container, as user `gitlab-runner` (`run --user`, like the
//! upstream image). No API service: the runner container is the job's container, so what jobs need
//! (mounts, security options) goes onto the runner container itself.

use anyhow::{Result, bail};

use super::{ExecutorMode, ExecutorSetup, For, ModeFuture, RunnerExtras, SetupContext};

pub struct Shell;

impl ExecutorMode for Shell {
    fn name(&self) -> &'static str {
        "shell"
    }

    fn setup<'a>(&'a self, ctx: SetupContext<'a>) -> ModeFuture<'a, ExecutorSetup> {
        Box::pin(async move { Ok(ExecutorSetup::plain(ctx.images.runner.clone())) })
    }

    fn uses_api_service(&self) -> bool {
        false
    }

    fn jobs_run_in_runner_container(&self) -> bool {
        true
    }

    fn job_identity(&self) -> &'static str {
        "uid=1000(gitlab-runner)"
    }

    fn stops_script_on_cancel(&self) -> bool {
        // With `run --user` the runner stops `su`, not the script under it.
        false
    }

    fn add_tmpfs(
        &self,
        x: &mut RunnerExtras,
        target: For,
        path: &str,
        options: &str,
    ) -> Result<()> {
        no_services(self, target)?;
        // Jobs run as gitlab-runner: a tmpfs for them must be theirs to write.
        let options = if options.contains("mode=") {
            options.to_owned()
        } else {
            format!("{options},mode=1777")
        };
        x.run_args
            .extend(["--tmpfs".into(), format!("{path}:{options}")]);
        Ok(())
    }

    fn add_volume(&self, x: &mut RunnerExtras, src: &str, dst: &str, ro: bool) -> Result<()> {
        x.run_args.extend(["-v".into(), volume(src, dst, ro)]);
        Ok(())
    }

    fn add_security_opt(&self, x: &mut RunnerExtras, target: For, opt: &str) -> Result<()> {
        no_services(self, target)?;
        x.run_args.extend(["--security-opt".into(), opt.to_owned()]);
        Ok(())
    }
}

fn no_services(mode: &Shell, target: For) -> Result<()> {
    if target == For::Services {
        bail!("the {} executor runs no service containers", mode.name());
    }
    Ok(())
}

pub(super) fn volume(src: &str, dst: &str, ro: bool) -> String {
    if ro {
        format!("{src}:{dst}:ro")
    } else {
        format!("{src}:{dst}")
    }
}
