//! What the report says about the machine, the runner and Podman.

use anyhow::Result;

/// What the report says about the machine, the runner and Podman.
pub async fn environment(
    podman: &crate::engine::podman::Podman,
    runner: &crate::forge::runner::ForgedRunner,
) -> Result<crate::report::Environment> {
    use crate::report::{Environment, PodmanEnv, RunnerEnv};
    let info = podman
        .text([
            "info",
            "--format",
            "{{.Version.Version}}|{{.Host.Security.Rootless}}|{{.Host.OCIRuntime.Name}}|{{.Host.CgroupsVersion}}|{{.Host.Kernel}}|{{.Host.NetworkBackend}}|{{range .Host.IDMappings.UIDMap}}{{.ContainerID}}:{{.HostID}}:{{.Size}} {{end}}",
        ])
        .await?;
    let f: Vec<&str> = info.split('|').collect();
    let facts = podman.engine().facts();
    let get = |i: usize| f.get(i).copied().unwrap_or("").to_owned();
    let p = &runner.provenance;
    Ok(Environment {
        runner: RunnerEnv {
            version: p.version.clone(),
            revision: p.revision.clone(),
            source: p.source.clone(),
            compat: p
                .compat
                .as_ref()
                .map(|c| format!("{}@{}", c.name, &c.hash[..12])),
            describe: p.describe(),
            placement: "container".into(),
        },
        podman: PodmanEnv {
            version: get(0),
            rootless: get(1) == "true",
            runtime: get(2),
            cgroup_version: get(3),
            network_backend: get(5),
            // Empty for a rootful store: no user namespace.
            uid_map: get(6).trim().to_owned(),
            engine: facts.engine.clone(),
            components: vec![
                facts.podman,
                facts.conmon,
                facts.oci_runtime,
                facts.network_backend,
                facts.rootless_network,
            ],
        },
        kernel: get(4),
        harness_version: env!("CARGO_PKG_VERSION").into(),
    })
}
