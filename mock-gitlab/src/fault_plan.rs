//! A fault plan (which requests, what happens to them, how often) and the counters that
//! decide which faults fire; the middleware that applies them is [`crate::faults`], whose
//! documentation describes the plan format.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use axum::http::Method;
use serde::{Deserialize, Serialize};

/// The faults a mock applies, in order. Empty by default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultPlan {
    /// Seeds the per-fault RNGs of `probability` faults.
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub faults: Vec<Fault>,
}

/// One fault: which requests, what happens to them, how often.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// `METHOD /path/:param/**` (method `*` or omitted: any), or `METHOD git`
    /// for git over HTTP (everything outside `/api/v4`).
    pub endpoint: EndpointPattern,
    pub action: Action,
    /// Apply to at most this many requests (every matching request if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
    /// Let this many matching requests through first.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skip: u32,
    /// Apply with this probability (0..=1), rolled on the plan's seeded RNG.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<Probability>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Fault {
    /// A fault applied to every request matching `endpoint`.
    pub fn new(endpoint: &str, action: Action) -> Result<Fault, String> {
        Ok(Fault {
            endpoint: endpoint.parse()?,
            action,
            times: None,
            skip: 0,
            probability: None,
        })
    }

    /// Apply to at most `n` requests.
    pub fn times(mut self, n: u32) -> Fault {
        self.times = Some(n);
        self
    }

    /// Let `n` matching requests through first.
    pub fn skip(mut self, n: u32) -> Fault {
        self.skip = n;
        self
    }

    /// Apply with probability `p` (clamped to 0..=1).
    pub fn probability(mut self, p: f64) -> Fault {
        self.probability = Some(Probability(p.clamp(0.0, 1.0)));
        self
    }
}

/// What a fault does to a request.
///
/// In JSON `"drop_connection"` or `{"status": 503}`; in TOML
/// `action = "trace_416"` or `action = { delay = 250 }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Hold the request this many milliseconds, then serve it (other faults may still apply).
    Delay(u64),
    /// Answer with this status and a GitLab-like body `{"message": "503 Service Unavailable"}`;
    /// the route does not run.
    Status(StatusCodeValue),
    /// Close the connection without any response; the route does not run.
    DropConnection,
    /// Serve the route, announce the full `Content-Length`, send half the body and close.
    TruncatedBody,
    /// Serve the route and replace its body with broken JSON (status and headers kept).
    MalformedJson,
    /// Answer a trace PATCH with 416 and `Range: 0-<stored size>`, as GitLab does on an offset
    /// mismatch; the runner resends from there. The route does not run.
    #[serde(rename = "trace_416")]
    Trace416,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Delay(ms) => write!(f, "delay({ms}ms)"),
            Action::Status(c) => write!(f, "status({})", c.0),
            Action::DropConnection => f.write_str("drop_connection"),
            Action::TruncatedBody => f.write_str("truncated_body"),
            Action::MalformedJson => f.write_str("malformed_json"),
            Action::Trace416 => f.write_str("trace_416"),
        }
    }
}

/// An HTTP status a fault may answer with (200..=599).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u16", into = "u16")]
pub struct StatusCodeValue(u16);

impl StatusCodeValue {
    pub fn new(code: u16) -> Result<Self, String> {
        if (200..=599).contains(&code) {
            Ok(StatusCodeValue(code))
        } else {
            Err(format!(
                "status {code} is not a final HTTP status: use 200..=599 (e.g. 500, 503, 429)"
            ))
        }
    }
}

impl TryFrom<u16> for StatusCodeValue {
    type Error = String;
    fn try_from(code: u16) -> Result<Self, String> {
        StatusCodeValue::new(code)
    }
}

impl From<StatusCodeValue> for u16 {
    fn from(c: StatusCodeValue) -> u16 {
        c.0
    }
}

impl Action {
    /// `Action::Status` with a checked code.
    ///
    /// # Panics
    /// If `code` is outside 200..=599.
    pub fn status(code: u16) -> Action {
        Action::Status(StatusCodeValue::new(code).unwrap_or_else(|e| panic!("{e}")))
    }
}

/// A probability in 0..=1.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Probability(f64);

impl TryFrom<f64> for Probability {
    type Error = String;
    fn try_from(p: f64) -> Result<Self, String> {
        if (0.0..=1.0).contains(&p) {
            Ok(Probability(p))
        } else {
            Err(format!(
                "probability {p} is outside 0..=1: write e.g. 0.25 for one request in four"
            ))
        }
    }
}

impl From<Probability> for f64 {
    fn from(p: Probability) -> f64 {
        p.0
    }
}

/// `METHOD PATH`: method `*` (or none) for any; path segments are literals,
/// `:name`/`{name}`/`*` (one segment) or `**` (any number); `git` stands for
/// every path outside `/api/v4` (git over HTTP).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EndpointPattern {
    method: Option<Method>,
    path: PathPattern,
}

#[derive(Clone, PartialEq, Eq)]
enum PathPattern {
    Git,
    Segments(Vec<Seg>),
}

#[derive(Clone, PartialEq, Eq)]
enum Seg {
    Lit(String),
    One,
    Any,
}

impl fmt::Debug for EndpointPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from(self.clone()))
    }
}

impl fmt::Display for EndpointPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from(self.clone()))
    }
}

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

impl std::str::FromStr for EndpointPattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (method, path) = match s.split_once(char::is_whitespace) {
            Some((m, p)) => (Some(m), p.trim()),
            None => (None, s),
        };
        let method = match method {
            None | Some("*") => None,
            Some(m) if METHODS.contains(&m) => {
                Some(Method::from_bytes(m.as_bytes()).map_err(|e| e.to_string())?)
            }
            Some(m) => {
                return Err(format!(
                    "endpoint {s:?}: unknown method {m:?}; use one of {} or * (e.g. \"PATCH /api/v4/jobs/:id/trace\")",
                    METHODS.join(", ")
                ));
            }
        };
        let path = if path == "git" {
            PathPattern::Git
        } else if let Some(rest) = path.strip_prefix('/') {
            PathPattern::Segments(
                rest.split('/')
                    .filter(|x| !x.is_empty())
                    .map(|x| match x {
                        "**" => Seg::Any,
                        "*" => Seg::One,
                        _ if x.starts_with(':') || (x.starts_with('{') && x.ends_with('}')) => {
                            Seg::One
                        }
                        _ => Seg::Lit(x.to_string()),
                    })
                    .collect(),
            )
        } else {
            return Err(format!(
                "endpoint {s:?}: the path must start with / or be `git` \
                 (e.g. \"POST /api/v4/jobs/request\", \"PUT /api/v4/jobs/:id\", \"GET git\")"
            ));
        };
        Ok(EndpointPattern { method, path })
    }
}

impl TryFrom<String> for EndpointPattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<EndpointPattern> for String {
    fn from(p: EndpointPattern) -> String {
        let m = p.method.as_ref().map_or("*", Method::as_str);
        let path = match &p.path {
            PathPattern::Git => "git".to_string(),
            PathPattern::Segments(segs) => {
                let mut s = String::new();
                for seg in segs {
                    s.push('/');
                    s.push_str(match seg {
                        Seg::Lit(l) => l,
                        Seg::One => "*",
                        Seg::Any => "**",
                    });
                }
                if s.is_empty() {
                    s.push('/');
                }
                s
            }
        };
        format!("{m} {path}")
    }
}

impl EndpointPattern {
    /// Whether a request matches.
    pub fn matches(&self, method: &Method, path: &str) -> bool {
        if self.method.as_ref().is_some_and(|m| m != method) {
            return false;
        }
        match &self.path {
            PathPattern::Git => !path.starts_with("/api/"),
            PathPattern::Segments(segs) => {
                let parts: Vec<&str> = path.split('/').filter(|x| !x.is_empty()).collect();
                match_segs(segs, &parts)
            }
        }
    }
}

fn match_segs(pat: &[Seg], parts: &[&str]) -> bool {
    match pat.split_first() {
        None => parts.is_empty(),
        Some((Seg::Any, rest)) => (0..=parts.len()).any(|i| match_segs(rest, &parts[i..])),
        Some((seg, rest)) => match parts.split_first() {
            None => false,
            Some((p, prest)) => {
                (match seg {
                    Seg::Lit(l) => l == p,
                    _ => true,
                }) && match_segs(rest, prest)
            }
        },
    }
}

/// A plan file that cannot be used: names the file, the line and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}\n  fix: {fix}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct FaultPlanError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
    pub fix: String,
}

const PLAN_FIX: &str = "each fault is {\"endpoint\": \"PATCH /api/v4/jobs/:id/trace\", \"action\": \"trace_416\", \
    \"times\": 2} (TOML: [[faults]] endpoint = \"…\" action = { status = 503 }); actions: {\"delay\": MS}, \
    {\"status\": CODE}, \"drop_connection\", \"truncated_body\", \"malformed_json\", \"trace_416\"; optional \
    times, skip, probability (0..=1); top level: seed, faults";

impl FaultPlan {
    /// Read a plan from a `.json` or `.toml` file.
    pub fn from_file(path: &Path) -> Result<FaultPlan, FaultPlanError> {
        let file = path.display().to_string();
        let err = |line, message: String, fix: &str| FaultPlanError {
            file: file.clone(),
            line,
            message,
            fix: fix.to_string(),
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            err(
                None,
                format!("cannot read the fault plan: {e}"),
                "pass an existing, readable .json or .toml file to --faults",
            )
        })?;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let r = match ext.as_deref() {
            Some("json") => Self::from_json_str(&text),
            Some("toml") => Self::from_toml_str(&text),
            _ => {
                return Err(err(
                    None,
                    "unknown fault plan format".into(),
                    "name the file *.json or *.toml",
                ));
            }
        };
        r.map_err(|(line, message)| err(line, message, PLAN_FIX))
    }

    /// Parse a JSON plan; the error carries the line.
    pub fn from_json_str(s: &str) -> Result<FaultPlan, (Option<usize>, String)> {
        serde_json::from_str(s).map_err(|e| {
            let line = (e.line() > 0).then_some(e.line());
            // serde_json appends " at line L column C"; the line is reported apart.
            let msg = e.to_string();
            let msg = msg
                .rsplit_once(" at line ")
                .map_or(msg.as_str(), |(m, _)| m)
                .to_string();
            (line, msg)
        })
    }

    /// Parse a TOML plan; the error carries the line.
    pub fn from_toml_str(s: &str) -> Result<FaultPlan, (Option<usize>, String)> {
        toml::from_str(s).map_err(|e| {
            let line = e
                .span()
                .map(|sp| s[..sp.start.min(s.len())].matches('\n').count() + 1);
            (line, e.message().trim().to_string())
        })
    }
}

// ---------------------------------------------------------------------------
// Runtime
// ---------------------------------------------------------------------------

/// SplitMix64: tiny, and stable across crate versions (a plan's seed must
/// mean the same faults tomorrow).
#[derive(Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Active {
    fault: Fault,
    seen: u64,
    applied: u32,
    rng: SplitMix64,
}

/// The plan in force and its counters.
#[derive(Default)]
pub(crate) struct Faults {
    seed: u64,
    active: Vec<Active>,
}

impl Faults {
    pub(crate) fn set(&mut self, plan: FaultPlan) {
        self.seed = plan.seed;
        self.active.clear();
        for f in plan.faults {
            self.push(f);
        }
    }

    pub(crate) fn push(&mut self, fault: Fault) {
        let i = self.active.len() as u64;
        self.active.push(Active {
            fault,
            seen: 0,
            applied: 0,
            // Distinct streams per fault, so traffic on one endpoint does not shift another's rolls.
            rng: SplitMix64(self.seed ^ i.wrapping_mul(0xd1b5_4a32_d192_ed03)),
        });
    }

    pub(crate) fn plan(&self) -> FaultPlan {
        FaultPlan {
            seed: self.seed,
            faults: self.active.iter().map(|a| a.fault.clone()).collect(),
        }
    }

    /// Whether no fault is planned (the middleware then lets every request through untouched).
    pub(crate) fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Which faults fire for this request (and count them).
    pub(crate) fn decide(&mut self, method: &Method, path: &str) -> Option<Decision> {
        let mut d = Decision::default();
        for a in &mut self.active {
            if !a.fault.endpoint.matches(method, path) {
                continue;
            }
            a.seen += 1;
            if a.seen <= u64::from(a.fault.skip) || a.fault.times.is_some_and(|t| a.applied >= t) {
                continue;
            }
            if let Some(p) = a.fault.probability
                && a.rng.next_f64() >= p.0
            {
                continue;
            }
            a.applied += 1;
            d.applied.push(a.fault.action.to_string());
            match a.fault.action {
                Action::Delay(ms) => d.delay += Duration::from_millis(ms),
                other => {
                    d.terminal = Some(other);
                    break;
                }
            }
        }
        (!d.applied.is_empty()).then_some(d)
    }
}

/// What the faults that fired on one request do.
#[derive(Default)]
pub(crate) struct Decision {
    /// The sum of the `delay` faults.
    pub(crate) delay: Duration,
    /// The first other fault, which decides the answer.
    pub(crate) terminal: Option<Action>,
    /// Every fault that fired, as written in the request record.
    pub(crate) applied: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, method: &str, path: &str) -> bool {
        p.parse::<EndpointPattern>()
            .unwrap()
            .matches(&Method::from_bytes(method.as_bytes()).unwrap(), path)
    }

    #[test]
    fn patterns() {
        assert!(m(
            "POST /api/v4/jobs/request",
            "POST",
            "/api/v4/jobs/request"
        ));
        assert!(!m(
            "POST /api/v4/jobs/request",
            "GET",
            "/api/v4/jobs/request"
        ));
        assert!(m(
            "PATCH /api/v4/jobs/:id/trace",
            "PATCH",
            "/api/v4/jobs/1001/trace"
        ));
        assert!(m("PUT /api/v4/jobs/{id}", "PUT", "/api/v4/jobs/1001"));
        assert!(!m("PUT /api/v4/jobs/:id", "PUT", "/api/v4/jobs/1001/trace"));
        assert!(m(
            "/api/v4/jobs/*/artifacts",
            "GET",
            "/api/v4/jobs/7/artifacts"
        ));
        assert!(m("* /**/info/refs", "GET", "/g/p.git/info/refs"));
        assert!(m("GET git", "GET", "/g/p.git/info/refs"));
        assert!(!m("git", "POST", "/api/v4/jobs/request"));
        assert!(m("/api/**", "DELETE", "/api/v4/runners"));
        assert!("FETCH /x".parse::<EndpointPattern>().is_err());
        assert!("POST api/v4".parse::<EndpointPattern>().is_err());
        assert_eq!(
            String::from(
                "PATCH /api/v4/jobs/:id/trace"
                    .parse::<EndpointPattern>()
                    .unwrap()
            ),
            "PATCH /api/v4/jobs/*/trace"
        );
    }

    #[test]
    fn counts_skip_and_seeded_probability() {
        let mut f = Faults::default();
        f.set(FaultPlan {
            seed: 42,
            faults: vec![
                Fault::new("PUT /a", Action::status(500))
                    .unwrap()
                    .skip(1)
                    .times(2),
                Fault::new("GET /b", Action::DropConnection)
                    .unwrap()
                    .probability(0.5),
            ],
        });
        let put = Method::PUT;
        let fired: Vec<bool> = (0..5).map(|_| f.decide(&put, "/a").is_some()).collect();
        assert_eq!(fired, [false, true, true, false, false]);
        let roll = |f: &mut Faults| -> Vec<bool> {
            (0..64)
                .map(|_| f.decide(&Method::GET, "/b").is_some())
                .collect()
        };
        let first = roll(&mut f);
        let n = first.iter().filter(|x| **x).count();
        assert!((16..=48).contains(&n), "{n} of 64 at p=0.5");
        // Same seed, same rolls.
        let mut g = Faults::default();
        g.set(f.plan());
        assert_eq!(roll(&mut g), first);
    }

    #[test]
    fn plan_errors_name_the_line() {
        let json = "{\"faults\": [\n {\"endpoint\": \"POST /api/v4/jobs/request\",\n  \"action\": {\"dleay\": 5}}\n]}";
        let (line, msg) = FaultPlan::from_json_str(json).unwrap_err();
        assert_eq!(line, Some(3), "{msg}");
        assert!(msg.contains("dleay"), "{msg}");
        let toml = "seed = 1\n[[faults]]\nendpoint = \"POST /x\"\naction = { status = 99 }\n";
        let (line, msg) = FaultPlan::from_toml_str(toml).unwrap_err();
        assert_eq!(line, Some(4), "{msg}");
        assert!(msg.contains("200..=599"), "{msg}");
        let ok = FaultPlan::from_toml_str(
            "seed = 3\n[[faults]]\nendpoint = \"PATCH /api/v4/jobs/:id/trace\"\naction = \"trace_416\"\ntimes = 2\n",
        )
        .unwrap();
        assert_eq!(ok.faults[0].action, Action::Trace416);
        assert_eq!(ok.faults[0].times, Some(2));
    }
}
