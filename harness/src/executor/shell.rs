//! `shell`: jobs run inside the runner container, as user `gitlab-runner` (`run --user`, like the
//! upstream image). No API service: the runner container is the job's container, so what jobs need
//! (mounts, security options) goes onto the runner container itself.

use super::{ExecutorMode, ExecutorSetup, ModeFuture, RunnerExtras, SetupContext};

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

    fn add_tmpfs(&self, extras: &mut RunnerExtras, path: &str, options: &str) {
        extras
            .run_args
            .extend(["--tmpfs".into(), format!("{path}:{options}")]);
    }

    fn add_volume(&self, extras: &mut RunnerExtras, src: &str, dst: &str, ro: bool) {
        extras.run_args.extend(["-v".into(), volume(src, dst, ro)]);
    }

    fn add_security_opt(&self, extras: &mut RunnerExtras, opt: &str) {
        extras
            .run_args
            .extend(["--security-opt".into(), opt.to_owned()]);
    }
}

pub(super) fn volume(src: &str, dst: &str, ro: bool) -> String {
    if ro {
        format!("{src}:{dst}:ro")
    } else {
        format!("{src}:{dst}")
    }
}
