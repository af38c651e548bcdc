//! The job's containers: services reached by alias (with and without a network per build, a real
//! Redis, a Podman API service at `DOCKER_HOST`), and what the job's image says about how it runs
//! (its entrypoint, a non-root user).

use std::time::Duration;

use anyhow::{Result, ensure};

use super::pinp_registry::pinp_extras;
use super::support::{CUSTOM_HOME, ensure_trace_has, job_ended, outcome, variant};
use super::{CONTAINERS, Case, DOCKER, Outcome};
use crate::executor::For;
use crate::lab::Lab;

pub(super) const SERVICES_BY_ALIAS: Case = Case {
    name: "services-by-alias",
    about: "a service container is reachable from the job by its alias",
    modes: CONTAINERS,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(services_by_alias(lab)),
};

async fn services_by_alias(lab: &Lab) -> Result<Outcome> {
    let run = lab.pipeline("services").run().await?;
    let job = job_ended(&run, "svc-lookup", "success")?;
    ensure_trace_has(&job.trace(), &[" svc"])?;
    Ok(outcome(run))
}

pub(super) const REDIS_SERVICE: Case = Case {
    name: "redis-service",
    about: "a real service (Redis from Debian's package) is reached by its alias; the job \
            writes and reads a key",
    modes: CONTAINERS,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(redis_service(lab)),
};

async fn redis_service(lab: &Lab) -> Result<Outcome> {
    crate::forge::services::ensure_redis(lab.images(), lab.podman()).await?;
    let run = lab.pipeline("redis-service").run().await?;
    let job = job_ended(&run, "redis", "success")?;
    let trace = job.trace();
    // The answers, not the echoed commands: `PONG` alone on a line, then the value read back.
    ensure!(
        trace.lines().any(|l| l.trim_end() == "PONG"),
        "redis did not answer PING by its alias; trace:\n{trace}"
    );
    ensure!(
        trace.lines().any(|l| l.trim_end() == "stored by redis"),
        "the value written to redis was not read back; trace:\n{trace}"
    );
    Ok(outcome(run))
}

pub(super) const IMAGE_ENTRYPOINT: Case = Case {
    name: "image-entrypoint",
    about: "`image:entrypoint` runs before the job's shell, which it hands over to",
    modes: DOCKER,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(image_entrypoint(lab)),
};

async fn image_entrypoint(lab: &Lab) -> Result<Outcome> {
    let run = lab.pipeline("image-entrypoint").run().await?;
    let job = job_ended(&run, "entrypoint", "success")?;
    let trace = job.trace();
    ensure!(
        trace.lines().any(|l| l.trim_end() == "entrypoint-ran"),
        "the entrypoint's marker is not there; trace:\n{trace}"
    );
    Ok(outcome(run))
}

pub(super) const SERVICES_WITHOUT_NETWORK_PER_BUILD: Case = Case {
    name: "services-without-network-per-build",
    about: "a service is reachable by alias with FF_NETWORK_PER_BUILD off (no Docker links on Podman)",
    modes: DOCKER,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(services_without_network_per_build(lab)),
};

async fn services_without_network_per_build(lab: &Lab) -> Result<Outcome> {
    let run = lab.pipeline("services-legacy").run().await?;
    let job = job_ended(&run, "svc-lookup", "success")?;
    let trace = job.trace();
    // The alias resolves through the runner's link emulation (extra_hosts), since Podman has no
    // links. The fixture's service exposes no port, so the runner's health check only warns.
    ensure!(
        trace
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("svc")),
        "the alias svc did not resolve; trace:\n{trace}"
    );
    Ok(outcome(run))
}

pub(super) const NON_ROOT_JOB_USER: Case = Case {
    name: "non-root-job-user",
    about: "a job run as uid 1000 (`image:docker:user`) writes into the work tree the helper checked out",
    modes: DOCKER,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(non_root_job_user(lab)),
};

async fn non_root_job_user(lab: &Lab) -> Result<Outcome> {
    let run = lab.pipeline("non-root-user").run().await?;
    let job = job_ended(&run, "as-1000", "success")?;
    let trace = job.trace();
    ensure!(
        trace.lines().any(|l| l.trim_end() == "1000"),
        "the job did not run as uid 1000; trace:\n{trace}"
    );
    ensure!(
        trace
            .lines()
            .any(|l| l.starts_with("1000 ") && l.trim_end().ends_with("/by-uid-1000")),
        "the file written in the work tree is not owned by uid 1000; trace:\n{trace}"
    );
    Ok(outcome(run))
}

pub(super) const DOCKER_HOST_SERVICE: Case = Case {
    name: "docker-host-service",
    about: "the seed's `DOCKER_HOST: tcp://docker:2375` reaches a real engine: a Podman API \
            service in a service container (alias `docker`) builds and runs the job's image, \
            unprivileged, on rootless Podman",
    modes: CONTAINERS,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(docker_host_service(lab)),
};

async fn docker_host_service(lab: &Lab) -> Result<Outcome> {
    let pinp = crate::forge::pinp::ensure(lab.runner(), lab.images(), lab.podman()).await?;
    // The job gets the Podman-in-Podman flags (for the builder archive's mount); the service, which
    // runs the builds, needs the same nesting flags through the services' own settings.
    let (mut extras, _) = pinp_extras(lab.executor(), &pinp)?;
    // The seed's HOME=/my_custom_dir must exist wherever the job's variables go (the helper's git
    // writes its global config there): the documented fix, a writable mount (Kubernetes: an
    // emptyDir), here a tmpfs on the job's containers and, where services get the job's variables
    // too (docker), on the service. The service, which runs the builds, needs the nesting flags.
    let m = lab.executor().mode();
    m.add_tmpfs(&mut extras, For::Jobs, CUSTOM_HOME, "rw,mode=1777")?;
    m.add_security_opt(&mut extras, For::Services, "unmask=/proc/*")?;
    m.add_tmpfs(&mut extras, For::Services, "/var/lib/containers", "rw")?;
    if m.services_get_job_variables() {
        m.add_tmpfs(&mut extras, For::Services, CUSTOM_HOME, "rw,mode=1777")?;
    }
    let flags = extras.describe();
    let lab2 = variant(lab, extras).await?;
    let run = lab2
        .pipeline("docker-host-service")
        .timeout(Duration::from_secs(300))
        .run()
        .await?;
    let job = job_ended(&run, "podman-remote-build", "success")?;
    let trace = job.trace();
    ensure_trace_has(
        &trace,
        &[
            "Successfully tagged localhost/playground-bis:testing",
            "hello from playground-bis:testing, built by the Podman service at DOCKER_HOST",
            // Built in the service, not by the job's own podman.
            "playground-bis images in the service 1, in the job 0",
        ],
    )?;
    ensure!(
        trace.lines().any(|l| l.starts_with("service API ")),
        "the job did not reach the service's API through DOCKER_HOST; trace:\n{trace}"
    );
    // Two engines: the service answers with its own host name.
    let hosts = trace
        .lines()
        .find_map(|l| l.strip_prefix("job host "))
        .and_then(|l| l.split_once(", service host "));
    match hosts {
        Some((job, service)) if !job.trim().is_empty() && job.trim() != service.trim() => {}
        _ => anyhow::bail!(
            "expected the service's host name to differ from the job's; trace:\n{trace}"
        ),
    }
    Ok(Outcome {
        note: Some(format!(
            "{flags}; DOCKER_HOST is read by the job's `podman --url`, podman itself ignores it"
        )),
        ..outcome(run)
    })
}
