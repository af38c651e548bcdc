//! Replays the committed fuzz corpus (`fuzz/corpus/`, one smallest input per
//! behaviour class found by `examples/fuzz_config.rs`) through the parser on
//! every test run: none may panic, and every error names the file.

use mock_gitlab::pipeline::config::parse_config;

#[test]
fn the_fuzz_corpus_parses_without_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/corpus exists") {
        let path = entry.unwrap().path();
        let src = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        let res = std::panic::catch_unwind(|| parse_config(&src, "ci.yml"));
        let res = res.unwrap_or_else(|_| panic!("{} panics the parser", path.display()));
        if let Err(e) = res {
            assert!(!e.diagnostics.is_empty(), "{}", path.display());
            let text = e.to_string();
            assert!(
                text.lines().all(|l| l.starts_with("ci.yml")),
                "{}: {text}",
                path.display()
            );
        }
        n += 1;
    }
    assert!(n >= 50, "only {n} corpus files in {}", dir.display());
}
