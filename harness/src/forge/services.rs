//! Images of real services jobs reach by alias, built into the lab store on first use and cached
//! by input hash like the other forged images (apt needs the network the first time).

use anyhow::Result;

use super::images::{LabImages, build_one};
use crate::engine::podman::Podman;
use crate::paths;

/// Debian's redis-server on the forged base; also the job image (it has `redis-cli`).
pub const REDIS_IMAGE: &str = "localhost/runnerlab/redis:latest";

pub async fn ensure_redis(images: &LabImages, podman: &Podman) -> Result<String> {
    // Two labs at once (nextest runs two) would build it twice.
    let _guard = super::lock(&paths::cache_dir().join("services.lock")).await?;
    let dir = paths::fixtures().join("containerfiles").join("redis");
    build_one(
        &dir,
        &[],
        &images.base,
        REDIS_IMAGE,
        None,
        std::slice::from_ref(podman),
        true,
    )
    .await?;
    Ok(REDIS_IMAGE.into())
}
