//! Secrets never leave the harness: every string that reaches a log, an error, a report or a snapshot
//! goes through [`scrub`]. Tokens are registered the moment they are created.

use std::sync::{LazyLock, Mutex};

use regex::Regex;

static SECRETS: LazyLock<Mutex<Vec<String>>> = LazyLock::new(|| Mutex::new(Vec::new()));

/// The text that replaces a secret, the same marker the runner uses in traces.
pub const MASK: &str = "[MASKED]";

/// Remember `secret` so that [`scrub`] removes it from any text from now on (process-wide).
pub fn register_secret(secret: &str) {
    // Very short strings would mask ordinary words; the harness never makes secrets that short.
    if secret.len() < 6 {
        return;
    }
    let mut secrets = SECRETS.lock().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|s| s == secret) {
        secrets.push(secret.to_owned());
        // Longest first, so a secret that contains another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// Whether `text` holds any registered secret verbatim: for checks on what was written (reports),
/// where [`scrub`] should already have removed it.
pub fn contains_secret(text: &str) -> bool {
    let secrets = SECRETS.lock().unwrap_or_else(|e| e.into_inner());
    secrets.iter().any(|s| text.contains(s.as_str()))
}

static TOKEN_LIKE: LazyLock<Regex> = LazyLock::new(|| {
    // GitLab token prefixes (the runner masks the same ones) and basic-auth credentials in URLs.
    // The runner's log fields `token=<first chars of the job token>` (artifact uploads) count too.
    Regex::new(
        r"(glrt-|glpat-|glcbt-|gldt-|glrtr-|\btoken=)[A-Za-z0-9_\-]+|(://[^:/@\s]+:)[^@\s/]+@",
    )
    .unwrap()
});

/// Remove every registered secret and anything token-shaped from `text`.
pub fn scrub(text: &str) -> String {
    let mut out = text.to_owned();
    {
        let secrets = SECRETS.lock().unwrap_or_else(|e| e.into_inner());
        for s in secrets.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
    }
    TOKEN_LIKE
        .replace_all(&out, |c: &regex::Captures<'_>| {
            if let Some(prefix) = c.get(1) {
                format!("{}{MASK}", prefix.as_str())
            } else {
                format!("{}{MASK}@", &c[2])
            }
        })
        .into_owned()
}

/// Rules that turn a job trace into a stable snapshot: values that change from run to run
/// (run ids, tokens, times, durations, hashes, paths under temp dirs) become placeholders.
pub fn snapshot_filters() -> Vec<(&'static str, &'static str)> {
    vec![
        // The per-line timestamp prefix of FF_USE_TIMESTAMPS (the mock strips it already; kept for raw traces).
        (
            r"(?m)^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z [0-9a-f]{2}[OE][ +]",
            "",
        ),
        // The runner's short token: after the runner's name, and as a directory of the builds dir.
        (
            r"(?m)^(  on \S+) [A-Za-z0-9_-]{8,}, ",
            "$1 [RUNNER_SHORT_TOKEN], ",
        ),
        (
            r"/builds/[A-Za-z0-9_-]{8,}/",
            "/builds/[RUNNER_SHORT_TOKEN]/",
        ),
        // Container, network and volume names the executors derive from it, and the docker
        // executor's per-job container hash.
        // Lines whose presence or order varies between identical runs (the docker executor's
        // network detach notices, its occasional attach retry warning): not part of the contract.
        (r"(?m)^Container \S+ disconnected from network \S+\n", ""),
        (r"(?m)^.*Failed to exec attach to container.*\n", ""),
        // The cache extractor's stderr echo of the "Cache file does not exist" warning kept above
        // it: stdout and stderr interleave differently from run to run.
        (r"(?m)^Failed to extract cache\n", ""),
        // The cache archiver's and extractor's result lines and their "No URL provided" warning
        // come on different streams too: the warning goes first.
        (
            r"(?m)^Created cache\n(No URL provided, cache will not be uploaded[^\n]*\n)",
            "${1}Created cache\n",
        ),
        (
            r"(?m)^Successfully extracted cache\n(No URL provided, cache will not be downloaded[^\n]*\n)",
            "${1}Successfully extracted cache\n",
        ),
        (r"\brunner-[A-Za-z0-9_]{9}-", "runner-[RUNNER_SHORT_TOKEN]-"),
        // The docker executor's per-job hash in build, helper, cache and service container names.
        (r"(concurrent-\d+)-[0-9a-f]{16}-", "$1-[HASH16]-"),
        (r"-[0-9a-f]{16}-(build|predefined|cache)\b", "-[HASH16]-$1"),
        // Addresses Podman hands out (service aliases resolve to them) and process ids.
        // (`getent hosts` pads the address to a column: the padding goes too.)
        (r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}[ \t]+", "[IP] "),
        (r"\bpid=\d+", "pid=[PID]"),
        (
            r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b",
            "[UUID]",
        ),
        (r"\b[0-9a-f]{32}\b", "[ID32]"),
        (r"rl-[0-9a-f]{8}", "[RUN]"),
        (r"system ID: [rs]_[0-9A-Za-z]{12}", "system ID: [SYSTEM_ID]"),
        (r"\b[0-9a-f]{40}\b", "[SHA]"),
        (r"\bsha256:[0-9a-f]{64}\b", "sha256:[DIGEST]"),
        (r"\b[0-9a-f]{64}\b", "[DIGEST]"),
        // `podman build` names each layer it commits by an 11-digit id (Podman 4.3; 12 in later ones).
        (
            r"(?m)^--> (Using cache )?[0-9a-f]{11}\b",
            "--> $1[SHORT_ID]",
        ),
        (r"\b[0-9a-f]{12}\b", "[SHORT_ID]"),
        (r"\b[0-9a-f]{8}\b", "[SHORT_SHA]"),
        (
            r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d| UTC)?",
            "[TIME]",
        ),
        (r"\b\d+(\.\d+)?(ms|s|m)\b", "[DURATION]"),
        (r"\b(\d+)m(\d+)s\b", "[DURATION]"),
        // A run's private registry (its port varies): an address without a URL scheme before it.
        // mock-gitlab is only ever named in URLs (`http://…`), and gets the rules below.
        (
            r"(^|[^/0-9.])(?:127\.0\.0\.1|10\.0\.2\.2):\d+",
            "${1}[REGISTRY]",
        ),
        (
            r"docker://(?:127\.0\.0\.1|10\.0\.2\.2):\d+",
            "docker://[REGISTRY]",
        ),
        (r"10\.0\.2\.2:\d+", "[COORDINATOR]"),
        (r"127\.0\.0\.1:\d+", "[COORDINATOR]"),
        (r"/tmp/[^\s'\x22]+", "[TMP]"),
        (r"section_(start|end):\d+:", "section_$1:[UNIX]:"),
    ]
}

/// Apply [`scrub`] and [`snapshot_filters`] to a trace: what every snapshot stores.
pub fn normalize_for_snapshot(trace: &str) -> String {
    let mut out = scrub(trace);
    for (pat, rep) in snapshot_filters() {
        let re = Regex::new(pat).expect("snapshot filter regex");
        out = re.replace_all(&out, rep).into_owned();
    }
    // A runner on the host says "Running on … via <this machine's hostname>...".
    if let Some(h) = hostname().filter(|h| !h.is_empty()) {
        out = out.replace(&format!(" via {h}..."), " via [HOSTNAME]...");
    }
    out
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into the buffer we own.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secret_and_token_shapes_are_masked() {
        register_secret("sup3r-s3cret-value");
        let text =
            "token sup3r-s3cret-value glrt-abcDEF123_x http://gitlab-ci-token:abc123@host/x.git";
        let out = scrub(text);
        assert!(!out.contains("sup3r-s3cret-value"), "{out}");
        assert!(!out.contains("abcDEF123"), "{out}");
        assert!(!out.contains("abc123@"), "{out}");
        assert!(out.contains("glrt-[MASKED]"), "{out}");
        assert!(out.contains("gitlab-ci-token:[MASKED]@host"), "{out}");
    }

    #[test]
    fn snapshot_normalisation_removes_run_specific_values() {
        let t = "Running with gitlab-runner 19.4.0 (fc1f1862)\n  on rl-0123abcd-runner AbCdEf123, system ID: s_0123456789ab\n  UUID: 6d6f636b-0000-4000-8000-000000000001\nGitaly correlation ID: 8be27c15c1524e23827bf416f86230d8\nInitialized empty Git repository in /home/gitlab-runner/builds/AbCdEf123/0/x/.git/\nFetching http://10.0.2.2:41234/x.git\nDuration 1.5s at 2026-11-23T18:00:01Z\n";
        let out = normalize_for_snapshot(t);
        assert!(out.contains("gitlab-runner 19.4.0 ([SHORT_SHA])"), "{out}");
        assert!(out.contains("[RUN]"), "{out}");
        assert!(out.contains("[SYSTEM_ID]"), "{out}");
        assert!(out.contains("[COORDINATOR]"), "{out}");
        assert!(
            out.contains("[DURATION]") && out.contains("[TIME]"),
            "{out}"
        );
        assert!(
            out.contains("  on [RUN]-runner [RUNNER_SHORT_TOKEN], system ID"),
            "{out}"
        );
        assert!(out.contains("/builds/[RUNNER_SHORT_TOKEN]/0/"), "{out}");
        assert!(
            out.contains("UUID: [UUID]") && out.contains("ID: [ID32]"),
            "{out}"
        );
        assert!(!out.contains("AbCdEf123"), "{out}");
        let names = normalize_for_snapshot(
            "Container runner-ixnqxd6dv-project-1-concurrent-0-5de4742308924050-build disconnected from network runner-ixnqxd6dv-1-0-1001 (gitlab-runner-helper:19.4.0)",
        );
        assert_eq!(
            names,
            "Container runner-[RUNNER_SHORT_TOKEN]-project-1-concurrent-0-[HASH16]-build disconnected from network runner-[RUNNER_SHORT_TOKEN]-1-0-1001 (gitlab-runner-helper:19.4.0)"
        );
        let varying = normalize_for_snapshot(
            "*** WARNING: Service runner-ixnqxd6dv-project-1-concurrent-0-9f42c42c162c3c40-localhost__base-0 probably didn't start properly.\n\
             10.88.0.82      svc\n\
             Failed to extract cache\n\
             Runtime platform  arch=amd64 os=linux pid=101 revision=fc1f1862 version=19.4.0\n\
             Uploading artifacts as \"archive\" to coordinator... 201 Created  id=1001 status=201 token=B4yfjnh7c\n",
        );
        assert_eq!(
            varying,
            "*** WARNING: Service runner-[RUNNER_SHORT_TOKEN]-project-1-concurrent-0-[HASH16]-localhost__base-0 probably didn't start properly.\n\
             [IP] svc\n\
             Runtime platform  arch=amd64 os=linux pid=[PID] revision=[SHORT_SHA] version=19.4.0\n\
             Uploading artifacts as \"archive\" to coordinator... 201 Created  id=1001 status=201 token=[MASKED]\n"
        );
        assert_eq!(
            normalize_for_snapshot(
                "Pulling docker image 127.0.0.1:41234/runnerlab/seed:latest ...\nFROM 10.0.2.2:41234/runnerlab/seed\nsource docker://127.0.0.1:41234/runnerlab/seed:latest\nFetching http://10.0.2.2:39999/runnerlab/x.git\n"
            ),
            "Pulling docker image [REGISTRY]/runnerlab/seed:latest ...\nFROM [REGISTRY]/runnerlab/seed\nsource docker://[REGISTRY]/runnerlab/seed:latest\nFetching http://[COORDINATOR]/runnerlab/x.git\n"
        );
        assert_eq!(
            normalize_for_snapshot("--> df5ae422f43\n--> 1a2ce0e6e0f2\n"),
            "--> [SHORT_ID]\n--> [SHORT_ID]\n"
        );
        // Both orders of the cache lines give the same snapshot.
        let warning_first = "No URL provided, cache will not be uploaded to shared cache server. Cache will be stored only locally.\nCreated cache\nNo URL provided, cache will not be downloaded from shared cache server. Instead a local version of cache will be extracted.\nSuccessfully extracted cache\n";
        let result_first = "Created cache\nNo URL provided, cache will not be uploaded to shared cache server. Cache will be stored only locally.\nSuccessfully extracted cache\nNo URL provided, cache will not be downloaded from shared cache server. Instead a local version of cache will be extracted.\n";
        assert_eq!(normalize_for_snapshot(warning_first), warning_first);
        assert_eq!(normalize_for_snapshot(result_first), warning_first);
    }
}
