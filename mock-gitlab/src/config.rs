//! The configuration of a mock instance.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::fault_plan::FaultPlan;
use crate::state::random_token;

/// Configuration of a mock instance.
#[derive(Clone)]
pub struct Config {
    /// Where to listen. Default `127.0.0.1:0` (a free port).
    pub bind: SocketAddr,
    /// Host the runner uses to reach the mock (e.g. `10.0.2.2` from a
    /// rootless container); the external URL is `http://{host}:{port}`.
    /// Default `127.0.0.1`.
    pub external_host: Option<String>,
    /// The instance's legacy registration token.
    pub registration_token: String,
    /// How long a job request with an up-to-date `last_update` is held.
    pub long_poll: Duration,
    /// `X-GitLab-Trace-Update-Interval` in seconds.
    pub trace_update_interval: u32,
    /// Bare repositories and fixture work trees go here.
    pub data_dir: PathBuf,
    /// Artifact uploads above this many bytes are refused with 413
    /// (GitLab's default maximum artifacts size is 100 MiB).
    pub max_artifact_size: u64,
    /// Faults applied from the start (see [`MockGitlab::set_faults`](crate::MockGitlab::set_faults)).
    pub faults: FaultPlan,
    /// Append one JSON line per request to this file (see
    /// [`MockGitlab::set_request_log`](crate::MockGitlab::set_request_log)).
    pub request_log: Option<PathBuf>,
    /// `PRIVATE-TOKEN` of the REST API's administrator (see [`api::rest`](crate::api::rest)).
    pub admin_token: String,
    /// The only directory `POST /api/v4/projects` may import fixtures from
    /// (`import_fixture` is relative to it); `None` refuses imports, so the
    /// API can never read arbitrary paths.
    pub fixtures_root: Option<PathBuf>,
}

impl std::fmt::Debug for Config {
    // The registration token is a secret: keep it out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("bind", &self.bind)
            .field("external_host", &self.external_host)
            .field("registration_token", &"[MASKED]")
            .field("long_poll", &self.long_poll)
            .field("trace_update_interval", &self.trace_update_interval)
            .field("data_dir", &self.data_dir)
            .field("max_artifact_size", &self.max_artifact_size)
            .field("faults", &self.faults)
            .field("request_log", &self.request_log)
            .field("admin_token", &"[MASKED]")
            .field("fixtures_root", &self.fixtures_root)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            external_host: None,
            registration_token: random_token("GR1348941", 20),
            long_poll: Duration::from_secs(20),
            trace_update_interval: 3,
            data_dir: std::env::temp_dir().join(format!(
                "mock-gitlab-{}-{}",
                std::process::id(),
                random_token("", 8)
            )),
            max_artifact_size: 100 * 1024 * 1024,
            faults: FaultPlan::default(),
            request_log: None,
            admin_token: random_token("glpat-", 20),
            fixtures_root: None,
        }
    }
}
