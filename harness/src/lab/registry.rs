//! A private registry per run (issue 7): Debian's `docker-registry` (distribution 2.8) in the lab
//! store, with TLS from a CA made for the run and htpasswd (bcrypt) credentials made for the run.
//!
//! ```text
//!  harness ── rcgen: CA + server cert (SANs 127.0.0.1, 10.0.2.2, localhost, <run>-registry)
//!          ── bcrypt: htpasswd for runnerlab-<run> / <random password>   (both registered secrets)
//!          ── podman run -d <run>-registry -p 127.0.0.1:<port>:5000        (labelled with the run)
//!          ── poll `podman login` until it succeeds (deadline) ─► podman push the seed image
//!  host-side Podman (API service: docker-mode and custom-mode pulls) ─► 127.0.0.1:<port>
//!  containers (runner, jobs, Podman-in-Podman)                     ─► 10.0.2.2:<port>
//! ```
//!
//! The registry publishes its port on the host's loopback only. Host-side Podman reaches it as
//! `127.0.0.1:<port>`; every container of the lab reaches the host's loopback as `10.0.2.2` through
//! slirp4netns `allow_host_loopback` (how runners and jobs already reach mock-gitlab), so the
//! lab needs no network of its own for it and per-build networks reach it too.
//!
//! Trust: jobs get the CA as a file variable and trust it themselves (`--cert-dir`); the only
//! change outside the run's own files is `~<lab user>/.config/containers/certs.d/127.0.0.1:<port>/`
//! — the rootless user's per-registry trust, which the Podman API service reads on each pull.
//! Its name holds the run's port, so no other registry is affected; it is removed on drop, and the
//! reaper removes it when its owner died (an `owner` file, which Podman ignores, says whose it is).
//! Nothing is added to a system trust store.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use rand::distr::{Alphanumeric, SampleString};

use crate::engine::podman::{
    LabUser, OWNER_LABEL, Podman, RUN_LABEL, is_root, owner_alive, owner_tag,
};
use crate::forge::images::LabImages;
use crate::redact::{self, scrub};

/// How containers reach the host's loopback (slirp4netns `allow_host_loopback`).
pub const HOST_FROM_CONTAINERS: &str = "10.0.2.2";
/// The seed image's repository and tag in every run's registry.
pub const SEED_REPOSITORY: &str = "runnerlab/seed:latest";
/// Where the registry container finds its certificate, key and htpasswd (read-only).
const SERVER_FILES: &str = "/etc/runnerlab-registry";
/// How long the registry may take to accept a login after `podman run`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running registry; dropping it removes the container, the images pulled from it, its trust
/// directory and its files (also during a panic).
pub struct Registry {
    podman: Podman,
    container: String,
    port: u16,
    username: String,
    password: String,
    ca_pem: String,
    /// Harness-side client files: `certs/ca.crt` (a `--cert-dir`) and `auth.json`.
    client: PathBuf,
    /// The rootless user's trust directory for this registry, once written.
    trust_dir: Option<PathBuf>,
    /// Every credential string handed out (password, basic-auth base64, auth configs), wrong
    /// ones included: what must never appear in a trace, a log or a report.
    issued: Mutex<Vec<String>>,
    /// Wall time of [`Registry::start`] up to a successful login.
    pub ready_in: Duration,
    /// Wall time of the seed image's push.
    pub seed_push: Duration,
    _files: tempfile::TempDir,
}

impl Registry {
    /// Start a registry for run `run_id` in `podman`'s (rootless) store and seed it. The caller's
    /// lab removes the container too when it goes (it carries the run's labels).
    pub async fn start(podman: &Podman, images: &LabImages, run_id: &str) -> Result<Registry> {
        let t0 = Instant::now();
        let user = podman
            .user()
            .context("the private registry runs in the rootless lab store")?
            .clone();
        let forged = crate::forge::registry::ensure(images, podman).await?;
        let username = format!("runnerlab-{}", run_id.trim_start_matches("rl-"));
        let password = Alphanumeric.sample_string(&mut rand::rng(), 32);
        redact::register_secret(&password);

        let files = tempfile::Builder::new()
            .prefix(&format!("runnerlab-{run_id}-registry-"))
            .tempdir_in("/tmp")?;
        let server = files.path().join("server");
        let client = files.path().join("client");
        let tls = Tls::new(run_id)?;
        // A low bcrypt cost: distribution checks the hash on every request (a push makes dozens),
        // and the password is random and lives as long as the run.
        let hash = bcrypt::hash(&password, 5).context("bcrypt of the registry password")?;
        write_private(&server.join("server.crt"), &tls.cert_pem, &user)?;
        write_private(&server.join("server.key"), &tls.key_pem, &user)?;
        write_private(
            &server.join("htpasswd"),
            &format!("{username}:{hash}\n"),
            &user,
        )?;
        write_private(&client.join("certs/ca.crt"), &tls.ca_pem, &user)?;
        for d in [files.path(), &server, &client, &client.join("certs")] {
            own(d, &user, 0o700)?;
        }

        let mut reg = Registry {
            podman: podman.clone(),
            container: format!("{run_id}-registry"),
            port: 0,
            username,
            password: password.clone(),
            ca_pem: tls.ca_pem.clone(),
            client,
            trust_dir: None,
            issued: Mutex::new(vec![password]),
            ready_in: Duration::ZERO,
            seed_push: Duration::ZERO,
            _files: files,
        };
        let basic = reg.basic_auth(&reg.username, &reg.password);
        reg.remember(&basic);
        reg.run_container(run_id, &forged.server, &server).await?;
        reg.trust(&user)?;
        reg.wait_ready().await?;
        reg.ready_in = t0.elapsed();
        let t = Instant::now();
        reg.push_seed(&forged.seed).await?;
        reg.seed_push = t.elapsed();
        Ok(reg)
    }

    /// `podman run` the registry on a free loopback port (a port taken between choosing and
    /// binding is retried with another).
    async fn run_container(&mut self, run_id: &str, image: &str, server: &Path) -> Result<()> {
        let owner = owner_tag();
        for attempt in 1..=3 {
            self.port = free_port()?;
            let args: Vec<String> = vec![
                "run".into(),
                "-d".into(),
                "--name".into(),
                self.container.clone(),
                "--label".into(),
                format!("{RUN_LABEL}={run_id}"),
                "--label".into(),
                format!("{OWNER_LABEL}={owner}"),
                "-p".into(),
                format!("127.0.0.1:{}:5000", self.port),
                "-v".into(),
                format!("{}:{SERVER_FILES}:ro", server.display()),
                "-e".into(),
                format!("REGISTRY_HTTP_TLS_CERTIFICATE={SERVER_FILES}/server.crt"),
                "-e".into(),
                format!("REGISTRY_HTTP_TLS_KEY={SERVER_FILES}/server.key"),
                image.into(),
            ];
            match self.podman.run(&args).await {
                Ok(_) => return Ok(()),
                Err(e) if attempt < 3 && format!("{e:#}").contains("address already in use") => {
                    self.remove_container();
                }
                Err(e) => {
                    return Err(e.context(format!(
                        "starting the private registry {} (image {image})",
                        self.container
                    )));
                }
            }
        }
        unreachable!("the loop returns on its last attempt")
    }

    /// Trust the run's CA for this registry in the rootless user's Podman (see the module doc).
    fn trust(&mut self, user: &LabUser) -> Result<()> {
        let certs_d = user.home.join(".config/containers/certs.d");
        crate::forge::pinp::create_owned(&user.home, &certs_d, user)?;
        let dir = certs_d.join(self.host_address());
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        self.trust_dir = Some(dir.clone());
        crate::paths::write_atomic(&dir.join("ca.crt"), self.ca_pem.as_bytes())?;
        crate::paths::write_atomic(&dir.join("owner"), owner_tag().as_bytes())?;
        if is_root() {
            for p in [dir.clone(), dir.join("ca.crt"), dir.join("owner")] {
                user.chown(&p)?;
            }
        }
        Ok(())
    }

    /// Poll `podman login` (the harness's own credentials) until the registry accepts it. A
    /// refusal of the credentials is final; anything else (not listening yet) is retried.
    async fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let err = match self.login().await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if err.contains("unauthorized") || err.contains("invalid username/password") {
                bail!(
                    "the private registry {} refused the harness's own credentials: {err}\n  \
                     registry log:\n{}",
                    self.container,
                    self.logs()
                );
            }
            let running = self
                .podman
                .text(["inspect", "--format", "{{.State.Running}}", &self.container])
                .await
                .unwrap_or_default();
            if running != "true" {
                bail!(
                    "the private registry {} stopped before it accepted a login; its log:\n{}",
                    self.container,
                    self.logs()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the private registry {} did not accept a login on {} within {READY_TIMEOUT:?}; \
                     last error: {err}\n  registry log:\n{}",
                    self.container,
                    self.host_address(),
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `podman login` as the lab user, the password on stdin; the error text (scrubbed) if it fails.
    async fn login(&self) -> std::result::Result<(), String> {
        use tokio::io::AsyncWriteExt;
        let auth = self.client.join("auth.json");
        let certs = self.client.join("certs");
        let host = self.host_address();
        let mut child = self
            .podman
            .command([
                "login".as_ref(),
                "--authfile".as_ref(),
                auth.as_os_str(),
                "--cert-dir".as_ref(),
                certs.as_os_str(),
                "--username".as_ref(),
                self.username.as_ref(),
                "--password-stdin".as_ref(),
                std::ffi::OsStr::new(&host),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting podman login: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(self.password.as_bytes()).await;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| format!("podman login: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(scrub(String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    /// Push the seed image as [`SEED_REPOSITORY`] with the harness's login.
    async fn push_seed(&self, seed: &str) -> Result<()> {
        let auth = self.client.join("auth.json");
        let certs = self.client.join("certs");
        let dest = format!("docker://{}", self.seed_image());
        self.podman
            .run([
                "push".as_ref(),
                "--quiet".as_ref(),
                "--authfile".as_ref(),
                auth.as_os_str(),
                "--cert-dir".as_ref(),
                certs.as_os_str(),
                std::ffi::OsStr::new(seed),
                std::ffi::OsStr::new(&dest),
            ])
            .await
            .with_context(|| format!("pushing the seed image {seed} into the private registry"))?;
        Ok(())
    }

    /// The registry as host-side Podman (and so the runner's pulls) sees it: `127.0.0.1:<port>`.
    pub fn host_address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry as containers see it: `10.0.2.2:<port>`.
    pub fn job_address(&self) -> String {
        format!("{HOST_FROM_CONTAINERS}:{}", self.port)
    }

    /// The seed image as host-side Podman pulls it (a job's `image:`).
    pub fn seed_image(&self) -> String {
        format!("{}/{SEED_REPOSITORY}", self.host_address())
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    /// The run's password (a registered secret; pass it to jobs as a masked variable only).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The run's CA certificate (PEM): what a job trusts to talk to the registry.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// `base64(user:password)`, as in an auth config's `auth` field; registered as a secret.
    pub fn basic_auth(&self, user: &str, password: &str) -> String {
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.remember(&b);
        b
    }

    /// A `DOCKER_AUTH_CONFIG` value for `address` with the run's user and `password` (the right
    /// one, or a wrong one for the wrong-credentials case); registered as a secret.
    pub fn docker_auth_config(&self, address: &str, password: &str) -> String {
        self.remember(password);
        let auth = self.basic_auth(&self.username, password);
        let v = serde_json::json!({ "auths": { address: { "auth": auth } } }).to_string();
        self.remember(&v);
        v
    }

    /// Every credential string handed out so far: none of them may appear in a trace, a log, a
    /// snapshot or a report.
    pub fn secrets(&self) -> Vec<String> {
        self.issued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn remember(&self, s: &str) {
        redact::register_secret(s);
        let mut v = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        if !v.iter().any(|x| x == s) {
            v.push(s.to_owned());
        }
    }

    pub fn container(&self) -> &str {
        &self.container
    }

    /// The registry's log (scrubbed), for error messages.
    pub fn logs(&self) -> String {
        let out = self
            .podman
            .std_command(["logs", "--tail", "30", &self.container])
            .output();
        match out {
            Ok(o) => scrub(&format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )),
            Err(e) => format!("(podman logs failed: {e})"),
        }
    }

    fn remove_container(&self) {
        let _ = self
            .podman
            .std_command(["rm", "-f", "-t", "0", &self.container])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Images pulled from this registry into the lab store (docker- and custom-mode jobs pull
    /// through the API service): their names hold the run's port, so they are this run's.
    fn remove_pulled_images(&self) {
        let prefix = format!("{}/", self.host_address());
        let Ok(out) = self
            .podman
            .std_command(["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .output()
        else {
            return;
        };
        let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .map(str::to_owned)
            .collect();
        if !names.is_empty() {
            let mut args = vec!["rmi".to_owned(), "-f".to_owned()];
            args.extend(names);
            let _ = self
                .podman
                .std_command(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.remove_container();
        self.remove_pulled_images();
        if let Some(d) = self.trust_dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Remove the trust directories of registries whose owner died (`runnerlab reap`, and every lab
/// start): `~/.config/containers/certs.d/127.0.0.1:<port>/` with an `owner` file.
pub fn reap_trust_dirs(user: &LabUser, all: bool) {
    let Ok(rd) = std::fs::read_dir(user.home.join(".config/containers/certs.d")) else {
        return;
    };
    for e in rd.flatten() {
        let dir = e.path();
        let Ok(owner) = std::fs::read_to_string(dir.join("owner")) else {
            // Not ours: we always write an owner file.
            continue;
        };
        if all || !owner_alive(owner.trim()) {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// The run's CA and the registry's certificate and key (PEM).
struct Tls {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl Tls {
    fn new(run_id: &str) -> Result<Tls> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let now = time::OffsetDateTime::now_utc();
        // Valid from a day ago (clock skew between host and containers) for a week: a run is short.
        let (from, to) = (now - time::Duration::days(1), now + time::Duration::days(7));
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(
            DnType::CommonName,
            format!("runnerlab registry CA {run_id}"),
        );
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca.not_before = from;
        ca.not_after = to;
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);
        let name = format!("{run_id}-registry");
        let mut srv = CertificateParams::new(vec![
            "127.0.0.1".to_owned(),
            HOST_FROM_CONTAINERS.to_owned(),
            "localhost".to_owned(),
            name.clone(),
        ])?;
        srv.distinguished_name.push(DnType::CommonName, name);
        srv.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        srv.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        srv.use_authority_key_identifier_extension = true;
        srv.not_before = from;
        srv.not_after = to;
        let key = KeyPair::generate()?;
        let cert = srv.signed_by(&key, &issuer)?;
        Ok(Tls {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A free TCP port on the loopback (the kernel's choice).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(l.local_addr()?.port())
}

/// Write `text` to `path` (creating its directory), 0600, owned by the lab user: the registry
/// container (root inside = the lab user outside) and the lab user's podman read it.
fn write_private(path: &Path, text: &str, user: &LabUser) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    own(path, user, 0o600)
}

fn own(path: &Path, user: &LabUser, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    if is_root() {
        user.chown(path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_certificate_names_both_addresses_and_is_signed_by_the_ca() {
        let t = Tls::new("rl-0000abcd").expect("tls");
        assert!(t.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(t.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(t.key_pem.contains("PRIVATE KEY"));
        assert_ne!(t.ca_pem, t.cert_pem);
    }

    #[test]
    fn htpasswd_hash_verifies() {
        let h = bcrypt::hash("pw-for-test", 5).unwrap();
        assert!(h.starts_with("$2"));
        assert!(bcrypt::verify("pw-for-test", &h).unwrap());
    }
}
