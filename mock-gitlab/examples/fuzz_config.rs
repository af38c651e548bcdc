//! A time-boxed fuzz run of the CI config parser (`parse_config_with`, the entry
//! point `create_pipeline` uses), for stable toolchains without cargo-fuzz.
//!
//! Inputs are GitLab-keyword fragments and mutations/splices of the corpus.
//! Each input gets a *class*: `ok`, the normalised first diagnostic (quoted
//! text and numbers masked), `slow` (> 1 s) or `panic`. The smallest input of
//! each new class is written to the corpus, so it stays small and one file per
//! behaviour; panics also go to `fuzz/crashes/` and fail the run.
//!
//! ```text
//! nice -n 19 cargo run --release -p mock-gitlab --example fuzz_config -- \
//!     --secs 600 --corpus mock-gitlab/fuzz/corpus
//! ```
//! `tests/fuzz_corpus.rs` replays the committed corpus in every test run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mock_gitlab::pipeline::config::{PipelineContext, parse_config_with};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

/// Inputs above this are not saved (keeps the corpus < 1 MB).
const MAX_SAVED: usize = 4096;
const MAX_INPUT: usize = 16 * 1024;
/// At most this many corpus files; past it, only smaller inputs of known classes are kept.
const MAX_CLASSES: usize = 400;

const FRAGMENTS: &[&str] = &[
    "\n",
    "\n",
    "\n",
    "  ",
    "  ",
    "    ",
    "- ",
    ": ",
    ":",
    "script",
    "stage",
    "stages",
    "variables",
    "default",
    "timeout",
    "when",
    "manual",
    "always",
    "on_failure",
    "never",
    "allow_failure",
    "exit_codes",
    "image",
    "services",
    "tags",
    "job",
    "build",
    "test",
    ".hidden",
    "&a ",
    "*a",
    "&b ",
    "*b",
    "<<: ",
    "!reference ",
    "!!str ",
    "!!int ",
    "!!map ",
    "[",
    "]",
    "{",
    "}",
    ", ",
    "\"",
    "'",
    "|",
    ">-",
    "# c",
    "---\n",
    "...\n",
    "? ",
    "\t",
    "10s",
    "1h 30m",
    "-1",
    "0",
    "99999999999999999999",
    "true",
    "null",
    "~",
    "extends",
    "needs",
    "rules",
    "if",
    "$CI_COMMIT_BRANCH",
    " == ",
    " =~ ",
    "/ma.*/",
    " && ",
    " || ",
    "(",
    ")",
    "exists",
    "changes",
    "include",
    "local",
    "file",
    "project",
    "template",
    "remote",
    "workflow",
    "parallel",
    "matrix",
    "retry",
    "max",
    "artifacts",
    "paths",
    "reports",
    "expire_in",
    "cache",
    "key",
    "files",
    "before_script",
    "after_script",
    "dependencies",
    "interruptible",
    "resource_group",
    "environment",
    "trigger",
    "coverage",
    "start_in",
    "pages",
    "hooks",
    "id_tokens",
    "secrets",
    "inherit",
    "spec",
    "inputs",
    "$[[ inputs.x ]]",
    "\u{feff}",
    "é",
    "\0",
    "%YAML 1.2\n",
    "!<tag:yaml.org,2002:str> ",
];

fn main() {
    let mut secs = 600u64;
    let mut corpus = PathBuf::from("mock-gitlab/fuzz/corpus");
    let mut seed: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_default();
        match a.as_str() {
            "--secs" => secs = v.parse().expect("--secs N"),
            "--corpus" => corpus = PathBuf::from(v),
            "--seed" => seed = v.parse().expect("--seed N"),
            _ => panic!("usage: fuzz_config [--secs N] [--corpus DIR] [--seed N]"),
        }
    }
    std::fs::create_dir_all(&corpus).expect("corpus dir");
    let crashes = corpus.parent().unwrap_or(Path::new(".")).join("crashes");
    // Panics are expected findings here: keep the default hook from flooding stderr.
    std::panic::set_hook(Box::new(|_| {}));

    let mut rng = StdRng::seed_from_u64(seed);
    // class -> (file name, input); the smallest input of each class wins.
    let mut classes: BTreeMap<String, (PathBuf, String)> = BTreeMap::new();
    let mut pool: Vec<String> = Vec::new();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/projects");
    for e in std::fs::read_dir(&fixtures).into_iter().flatten().flatten() {
        if let Ok(s) = std::fs::read_to_string(e.path().join(".gitlab-ci.yml")) {
            pool.push(s);
        }
    }
    // Words the inputs themselves bring (fragments, fixture files) say nothing about the class.
    let mut exclude: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for text in FRAGMENTS
        .iter()
        .copied()
        .chain(pool.iter().map(String::as_str))
    {
        exclude.extend(words(text).map(str::to_string));
    }
    let _ = EXCLUDE.set(exclude);
    for e in std::fs::read_dir(&corpus).expect("read corpus").flatten() {
        if let Ok(s) = std::fs::read_to_string(e.path()) {
            let class = classify(&s).0;
            let keep = classes
                .get(&class)
                .is_none_or(|(_, old)| s.len() < old.len());
            if keep {
                classes.insert(class, (e.path(), s.clone()));
            }
            pool.push(s);
        }
    }
    let start_classes = classes.len();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let (mut execs, mut panics, mut slow, mut replaced) = (0u64, 0u64, 0u64, 0u64);
    let mut last_report = Instant::now();
    while Instant::now() < deadline {
        let input = if pool.is_empty() || rng.random_bool(0.3) {
            generate(&mut rng)
        } else {
            let base = pool[rng.random_range(0..pool.len())].clone();
            mutate(&mut rng, base, &pool)
        };
        execs += 1;
        let (class, elapsed) = classify(&input);
        if class.starts_with("panic") {
            panics += 1;
            std::fs::create_dir_all(&crashes).ok();
            let p = crashes.join(format!("{}.yml", short_hash(&input)));
            std::fs::write(&p, &input).ok();
            eprintln!("PANIC {class} -> {}", p.display());
        }
        if elapsed > Duration::from_secs(1) {
            slow += 1;
        }
        if input.len() > MAX_SAVED {
            continue;
        }
        let better = match classes.get(&class) {
            None => classes.len() < MAX_CLASSES,
            Some((_, old)) => input.len() < old.len(),
        };
        if better {
            let name = corpus.join(format!("{}.yml", &short_hash(&class)[..16]));
            if let Some((old, _)) = classes.get(&class) {
                replaced += 1;
                if *old != name {
                    std::fs::remove_file(old).ok();
                }
            }
            std::fs::write(&name, &input).expect("write corpus file");
            classes.insert(class, (name, input.clone()));
            pool.push(input);
        }
        if last_report.elapsed() > Duration::from_secs(30) {
            last_report = Instant::now();
            eprintln!(
                "{:>4}s execs {execs} classes {} panics {panics} slow {slow}",
                started.elapsed().as_secs(),
                classes.len()
            );
        }
    }
    let bytes: usize = classes.values().map(|(_, s)| s.len()).sum();
    // The class of each corpus file, for review (what the fuzz saw, by behaviour).
    let index: String = classes
        .iter()
        .map(|(c, (p, _))| {
            let f = p.file_name().map(|f| f.to_string_lossy().into_owned());
            format!("{}\t{c}\n", f.unwrap_or_default())
        })
        .collect();
    std::fs::write(
        corpus
            .parent()
            .unwrap_or(Path::new("."))
            .join("classes.tsv"),
        index,
    )
    .ok();
    println!(
        "fuzz_config: seed {seed}, {:.0} s, {execs} executions ({:.0}/s), classes {start_classes} -> {} \
         ({replaced} minimised), corpus {bytes} bytes, panics {panics}, slow (>1 s) {slow}",
        started.elapsed().as_secs_f64(),
        execs as f64 / started.elapsed().as_secs_f64(),
        classes.len()
    );
    if panics > 0 {
        std::process::exit(1);
    }
}

fn short_hash(s: &str) -> String {
    let d = Sha256::digest(s.as_bytes());
    d.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// Parse like `create_pipeline` does (includes resolve to a small local file),
/// and name what happened.
fn classify(src: &str) -> (String, Duration) {
    let read = |p: &str| -> Option<String> {
        (p.trim_start_matches('/') == "inc.yml").then(|| ".inc:\n  script: [echo]\n".to_string())
    };
    let pcx = PipelineContext {
        variables: PipelineContext::for_branch("main").variables,
        project_variables: vec![("PV".into(), "x".into())],
        files: vec!["inc.yml".into(), "README.md".into()],
        read_file: &read,
    };
    let t = Instant::now();
    // Nothing is shared between runs, so a panic cannot leave broken state behind.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        parse_config_with(src, ".gitlab-ci.yml", &pcx)
    }));
    let elapsed = t.elapsed();
    let class = match r {
        Ok(Ok(cfg)) => format!("ok:{}", cfg.jobs.len().min(3)),
        Ok(Err(e)) => match e.first() {
            Some(d) => format!("err:{}", normalise(&d.message)),
            None => "err:<no diagnostic>".into(),
        },
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            format!("panic:{}", normalise(&msg))
        }
    };
    if elapsed > Duration::from_secs(1) {
        return (format!("slow:{class}"), elapsed);
    }
    (class, elapsed)
}

/// The parser's own message words: the text of its string literals.
const SOURCES: &[&str] = &[
    include_str!("../src/pipeline/config.rs"),
    include_str!("../src/pipeline/keywords.rs"),
    include_str!("../src/pipeline/yaml.rs"),
    include_str!("../src/pipeline/rules.rs"),
    include_str!("../src/pipeline/preprocess.rs"),
    include_str!("../src/pipeline/duration.rs"),
];

fn vocabulary() -> &'static std::collections::BTreeSet<String> {
    static V: std::sync::OnceLock<std::collections::BTreeSet<String>> = std::sync::OnceLock::new();
    V.get_or_init(|| {
        let mut v = std::collections::BTreeSet::new();
        for src in SOURCES {
            for line in src.lines() {
                // Odd-numbered pieces between quotes are literal text.
                for lit in line.split('"').skip(1).step_by(2) {
                    for w in words(lit) {
                        v.insert(w.to_string());
                    }
                }
            }
        }
        if let Some(ex) = EXCLUDE.get() {
            v.retain(|w| !ex.contains(w));
        }
        v
    })
}

static EXCLUDE: std::sync::OnceLock<std::collections::BTreeSet<String>> =
    std::sync::OnceLock::new();

fn words(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.len() > 1)
}

/// An error class: the message's words that come from the parser's own
/// literals (job names, keys and values the input chose are dropped), so one
/// template is one class whatever the input named.
fn normalise(msg: &str) -> String {
    let v = vocabulary();
    // Quoted text (`{:?}` of the user's value, escapes included) is the input's, not the template's.
    let mut unquoted = String::new();
    let mut chars = msg.chars();
    while let Some(c) = chars.next() {
        if c == '"' {
            while let Some(q) = chars.next() {
                match q {
                    '\\' => {
                        chars.next();
                    }
                    '"' => break,
                    _ => {}
                }
            }
            unquoted.push(' ');
        } else {
            unquoted.push(c);
        }
    }
    // A set of the template's longer words: order, repeats and short tokens vary with the input.
    let set: std::collections::BTreeSet<&str> = words(&unquoted)
        .filter(|w| w.len() >= 4 && v.contains(*w))
        .collect();
    set.into_iter().collect::<Vec<_>>().join(" ")
}

fn generate(rng: &mut StdRng) -> String {
    let n = rng.random_range(0..80);
    (0..n)
        .map(|_| FRAGMENTS[rng.random_range(0..FRAGMENTS.len())])
        .collect()
}

fn char_floor(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i.min(s.len())
}

fn mutate(rng: &mut StdRng, mut s: String, pool: &[String]) -> String {
    for _ in 0..rng.random_range(1..5) {
        let at = char_floor(&s, rng.random_range(0..=s.len()));
        match rng.random_range(0..6) {
            0 => s.insert_str(at, FRAGMENTS[rng.random_range(0..FRAGMENTS.len())]),
            1 => {
                let end = char_floor(&s, (at + rng.random_range(0..32)).min(s.len()));
                s.replace_range(at..end, "");
            }
            2 => {
                let end = char_floor(&s, (at + rng.random_range(0..64)).min(s.len()));
                let dup = s[at..end].to_string();
                s.insert_str(at, &dup);
            }
            3 => {
                // Splice: a line range of another input.
                let other = &pool[rng.random_range(0..pool.len())];
                let lines: Vec<&str> = other.lines().collect();
                if !lines.is_empty() {
                    let a = rng.random_range(0..lines.len());
                    let b = (a + rng.random_range(1..6)).min(lines.len());
                    let mut piece = lines[a..b].join("\n");
                    piece.push('\n');
                    s.insert_str(at, &piece);
                }
            }
            4 => {
                // Re-indent a line.
                let line_start = s[..at].rfind('\n').map_or(0, |i| i + 1);
                s.insert_str(line_start, if rng.random_bool(0.5) { "  " } else { "\t" });
            }
            _ => {
                let c = char::from(rng.random_range(0x20u8..0x7f));
                s.insert(at, c);
            }
        }
        if s.len() > MAX_INPUT {
            s.truncate(char_floor(&s, MAX_INPUT));
        }
    }
    s
}
