//! The private registry's images (issue 7), built into the lab store on first use and cached by
//! input hash like the other forged images:
//!
//! - `localhost/runnerlab/registry:<hash>`: Debian's `docker-registry` (distribution 2.8) FROM the
//!   base; the tag names its inputs (Containerfile, config, base), so a changed recipe is a new tag;
//! - `localhost/runnerlab/registry-seed:latest`: the base plus a marker file, the image the harness
//!   pushes into every run's registry so that jobs have something to pull.

use anyhow::Result;

use super::images::{LabImages, build_one};
use super::{sha256_str, sha256_tree};
use crate::engine::podman::{INPUT_LABEL, Podman};
use crate::paths;

/// The seed image (local tag; the registry holds it as `runnerlab/seed:latest`).
pub const SEED_IMAGE: &str = "localhost/runnerlab/registry-seed:latest";

/// What [`ensure`] made.
#[derive(Clone, Debug)]
pub struct RegistryImages {
    /// The registry server image.
    pub server: String,
    /// The image pushed into each run's registry.
    pub seed: String,
}

/// Build the registry and seed images in `podman`'s store unless they are current. The server
/// build needs the network on first use (apt).
pub async fn ensure(images: &LabImages, podman: &Podman) -> Result<RegistryImages> {
    // Concurrent labs (nextest runs two) would build the same images twice.
    let _guard = super::lock(&paths::cache_dir().join("registry/forge.lock")).await?;
    let cf = paths::fixtures().join("containerfiles");
    let stores = std::slice::from_ref(podman);
    let ctx = cf.join("registry");
    let base_id = podman
        .image_label(&images.base, INPUT_LABEL)
        .await
        .unwrap_or_else(|| images.base.clone());
    let hash = sha256_str(&[&sha256_tree(&ctx)?, &base_id]);
    let server = format!("localhost/runnerlab/registry:{}", &hash[..12]);
    build_one(&ctx, &[], &images.base, &server, None, stores, true).await?;
    remove_stale_tags(podman, &server).await;
    build_one(
        &cf.join("registry-seed"),
        &[],
        &images.base,
        SEED_IMAGE,
        None,
        stores,
        false,
    )
    .await?;
    Ok(RegistryImages {
        server,
        seed: SEED_IMAGE.into(),
    })
}

/// The hash in the tag makes every recipe change a new tag: drop the older ones. Without `-f`, so
/// an image a running registry (another checkout's) still uses stays, and failures are ignored.
async fn remove_stale_tags(podman: &Podman, current: &str) {
    let Ok(list) = podman
        .text([
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            "--filter",
            "reference=localhost/runnerlab/registry",
        ])
        .await
    else {
        return;
    };
    for tag in list.lines().map(str::trim) {
        if tag.starts_with("localhost/runnerlab/registry:") && tag != current {
            let _ = podman.run(["rmi", tag]).await;
        }
    }
}
