//! The runner forge end to end: a verified real runner, its provenance, its cache (hit, miss,
//! corruption, concurrency), the compat layer's MANIFEST, and clear errors for bad inputs.
//!
//! Tests that need their own cache set RUNNERLAB_CACHE_DIR; nextest runs each test in its own
//! process, so that does not leak into other tests.

use std::path::PathBuf;

use runnerlab::forge::runner::{self, GetOptions, Source};

fn set_env(k: &str, v: &str) {
    // SAFETY: nextest runs every test in its own process, before any other thread reads the env.
    unsafe { std::env::set_var(k, v) }
}

/// The default runner, from the shared cache (built there by `cargo lab setup` or the first test).
async fn default_runner() -> runner::ForgedRunner {
    runner::get(&GetOptions::default())
        .await
        .expect("default runner")
}

#[tokio::test]
async fn the_default_runner_is_the_pinned_real_one_with_provenance() {
    let r = default_runner().await;
    let row = runner::version_row(None).unwrap();
    let out = std::process::Command::new(r.runner_bin())
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with(&row.version_line), "{text}");
    assert!(
        text.contains(&format!("Git revision: {}", row.revision)),
        "{text}"
    );
    assert!(!text.contains("development version"), "{text}");
    let d = r.describe();
    assert!(
        d.starts_with(&format!("{} ({})", row.name, row.revision)),
        "{d}"
    );
    if r.provenance.source.starts_with("module:") {
        assert!(d.contains("with compat layer"), "{d}");
        assert!(
            r.provenance
                .go_version
                .as_deref()
                .unwrap_or("")
                .starts_with("go version")
        );
    }
    let helper = std::process::Command::new(r.helper_bin())
        .arg("--version")
        .output()
        .unwrap();
    assert!(helper.status.success());
}

#[tokio::test]
async fn a_warm_get_is_a_verified_cache_hit() {
    let first = default_runner().await;
    let second = default_runner().await;
    assert_eq!(first.dir, second.dir);
    assert_eq!(
        first.provenance.built_at, second.provenance.built_at,
        "rebuilt instead of reused"
    );
}

/// A private cache holding a copy of the default runner, reached through the `path:` source.
async fn private_cache() -> (tempfile::TempDir, PathBuf) {
    let r = default_runner().await;
    let src = tempfile::tempdir().unwrap();
    std::fs::copy(r.runner_bin(), src.path().join("gitlab-runner")).unwrap();
    std::fs::copy(r.helper_bin(), src.path().join("gitlab-runner-helper")).unwrap();
    let cache = src.path().join("cache");
    set_env("RUNNERLAB_CACHE_DIR", cache.to_str().unwrap());
    let bin = src.path().join("gitlab-runner");
    (src, bin)
}

#[tokio::test]
async fn a_corrupt_or_partial_cache_entry_is_detected_and_rebuilt() {
    let (_src, bin) = private_cache().await;
    let opts = GetOptions {
        from: Some(Source::Path(bin)),
        ..Default::default()
    };
    let a = runner::get(&opts).await.unwrap();
    // Corrupt the cached binary: the next get must notice (sha256) and rebuild.
    std::fs::write(a.runner_bin(), b"not a runner").unwrap();
    let b = runner::get(&opts).await.unwrap();
    assert_ne!(
        a.provenance.built_at, b.provenance.built_at,
        "corruption not noticed"
    );
    assert_eq!(
        runnerlab::forge::sha256_file(&b.runner_bin()).unwrap(),
        b.provenance.runner_sha256
    );
    // A partial entry (no provenance.json: the build was killed) is rebuilt too.
    std::fs::remove_file(b.dir.join("provenance.json")).unwrap();
    let c = runner::get(&opts).await.unwrap();
    assert!(c.dir.join("provenance.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_gets_build_once() {
    let (_src, bin) = private_cache().await;
    let opts = GetOptions {
        from: Some(Source::Path(bin)),
        ..Default::default()
    };
    let (a, b) = tokio::join!(runner::get(&opts), runner::get(&opts));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.provenance.built_at, b.provenance.built_at, "built twice");
}

#[tokio::test]
async fn the_compat_layer_changes_exactly_what_its_manifest_declares() {
    let row = runner::version_row(None).unwrap();
    let (Some(pv), Some(compat)) = (row.pseudo_version.clone(), row.compat.clone()) else {
        panic!("the default version is built from the module with a compat layer");
    };
    let layer = runnerlab::paths::fixtures()
        .join("runner-compat")
        .join(compat);
    let module_dir = runner::module_download(&row.module, &pv).unwrap();
    let work = tempfile::tempdir().unwrap();
    let wd = work.path().join("w");
    runner::prepare_workdir(&module_dir, Some(&layer), &wd).unwrap();
    let got = runner::changed_upstream_files(&module_dir, &wd, runner::MANIFEST_IGNORES).unwrap();
    let want = runner::read_manifest(&layer).unwrap();
    assert_eq!(got, want, "upstream files changed vs MANIFEST");
    // The executors, network client and trace code stay upstream, byte for byte.
    for keep in [
        "executors/shell/",
        "executors/docker/",
        "executors/custom/",
        "network/",
        "helpers/trace/",
    ] {
        assert!(
            !got.iter().any(|l| l[2..].starts_with(keep)),
            "{keep} was modified: {got:?}"
        );
    }
}

#[tokio::test]
async fn bad_inputs_give_one_clear_error_naming_source_cause_and_fix() {
    let e = runner::get(&GetOptions {
        version: Some("0.0.1".into()),
        ..Default::default()
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("unknown runner version") && e.contains("runner-versions.toml"),
        "{e}"
    );

    let e = runner::get(&GetOptions {
        from: Some(Source::Path("/nonexistent/gitlab-runner".into())),
        ..Default::default()
    })
    .await
    .unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains("/nonexistent/gitlab-runner"), "{e}");

    // An image that is not local and a registry that cannot be reached.
    let e = runner::get(&GetOptions {
        from: Some(Source::Image(
            "registry.invalid/gitlab/gitlab-runner:v0".into(),
        )),
        ..Default::default()
    })
    .await
    .unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("registry.invalid/gitlab/gitlab-runner:v0") && e.contains("fix:"),
        "{e}"
    );
}

#[tokio::test]
async fn a_refused_module_version_says_so_and_suggests_another_source() {
    let cache = tempfile::tempdir().unwrap();
    set_env("RUNNERLAB_CACHE_DIR", cache.path().to_str().unwrap());
    // A pseudo-version of a commit that does not exist: the proxy refuses it.
    let e = runner::get(&GetOptions {
        from: Some(Source::Module(
            "v1.11.1-0.20200101000000-000000000000".into(),
        )),
        ..Default::default()
    })
    .await
    .unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains("refused") && e.contains("--from path:"), "{e}");
}

#[tokio::test]
async fn a_missing_go_toolchain_says_which_source_needs_it_and_the_alternatives() {
    let cache = tempfile::tempdir().unwrap();
    set_env("RUNNERLAB_CACHE_DIR", cache.path().to_str().unwrap());
    set_env("PATH", "/usr/bin:/bin");
    let row = runner::version_row(None).unwrap();
    let e = runner::get(&GetOptions {
        from: Some(Source::Module(row.pseudo_version.unwrap())),
        ..Default::default()
    })
    .await
    .unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("no Go toolchain") && e.contains("--from path:"),
        "{e}"
    );
}

#[tokio::test]
async fn an_image_source_copies_both_binaries_out_of_local_images() {
    // The lab's own images stand in for upstream's: same layout (/usr/bin/gitlab-runner and
    // /usr/bin/gitlab-runner-helper), and no registry is needed to have them.
    let r = default_runner().await;
    let imgs = runnerlab::forge::images::ensure(&r, &[runnerlab::podman::Podman::lab().unwrap()])
        .await
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    set_env("RUNNERLAB_CACHE_DIR", cache.path().to_str().unwrap());
    let got = runner::get(&GetOptions {
        from: Some(Source::Image(imgs.runner.clone())),
        helper: Some(runner::HelperSource::Image(imgs.helper.clone())),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(got.provenance.runner_sha256, r.provenance.runner_sha256);
    assert_eq!(got.provenance.helper_sha256, r.provenance.helper_sha256);
    assert_eq!(got.provenance.source, format!("image:{}", imgs.runner));
    assert!(
        got.describe()
            .contains("taken from image localhost/runnerlab/gitlab-runner:"),
        "{}",
        got.describe()
    );
    // Nothing of the extraction is left in the store.
    let run = format!("forge-{}", std::process::id());
    let left = runnerlab::podman::Podman::lab()
        .unwrap()
        .labelled(Some(&run))
        .unwrap();
    assert!(left.is_empty(), "{left}");
}

/// A rebuilt image (its inputs changed) replaces its previous build instead of leaving it behind
/// as a dangling `<none>` image: each runner rebuild would otherwise keep hundreds of MB.
#[tokio::test]
async fn a_rebuilt_image_leaves_no_dangling_build() {
    use anyhow::{Context, ensure};
    let podman = runnerlab::podman::Podman::lab().unwrap();
    let run = runnerlab::lab::new_run_id();
    let tag = format!("localhost/runnerlab/rebuild-test:{run}");
    let body = async {
        let ctx = tempfile::tempdir()?;
        let id = |p: &runnerlab::podman::Podman| {
            let p = p.clone();
            let tag = tag.clone();
            async move {
                p.text(["image", "inspect", "--format", "{{.Id}}", &tag])
                    .await
                    .map(|s| s.trim().to_owned())
            }
        };
        let mut ids = Vec::new();
        for version in ["one", "two"] {
            std::fs::write(
                ctx.path().join("Containerfile"),
                format!(
                    "ARG BASE\nFROM $BASE\nLABEL runnerlab.test={run}\nRUN echo {version} > /version\n"
                ),
            )?;
            runnerlab::forge::images::build_one(
                ctx.path(),
                &[],
                runnerlab::forge::base::LATEST,
                &tag,
                None,
                std::slice::from_ref(&podman),
                false,
            )
            .await
            .with_context(|| format!("building {version}"))?;
            ids.push(id(&podman).await?);
        }
        ensure!(ids[0] != ids[1], "the changed input did not rebuild: {ids:?}");
        let gone = podman
            .run(["image", "exists", ids[0].as_str()])
            .await
            .is_err();
        ensure!(gone, "the first build {} is still in the store", ids[0]);
        anyhow::Ok(())
    }
    .await;
    // Every build of this test (the tagged one and a dangling one if the test fails) is removed
    // whatever happened, before the verdict.
    let label = format!("label=runnerlab.test={run}");
    if let Ok(ids) = podman
        .text(["images", "-q", "--filter", label.as_str()])
        .await
    {
        for id in ids.split_whitespace() {
            let _ = podman.run(["rmi", "--force", id]).await;
        }
    }
    body.unwrap();
}
