//! Nothing a user or a client sends may crash the mock: property tests over
//! the CI config parser and the HTTP endpoints.

mod common;

use common::Lab;
use mock_gitlab::RunnerSpec;
use mock_gitlab::pipeline::config::parse_config;
use proptest::prelude::*;
use proptest::strategy::ValueTree;

/// Fragments that make YAML interesting: indentation, indicators, anchors,
/// merge keys, tags, GitLab keywords.
fn yamlish() -> impl Strategy<Value = String> {
    let frag = prop_oneof![
        Just("\n".to_string()),
        Just("  ".to_string()),
        Just("- ".to_string()),
        Just(": ".to_string()),
        Just("script".to_string()),
        Just("stage".to_string()),
        Just("stages".to_string()),
        Just("variables".to_string()),
        Just("default".to_string()),
        Just("timeout".to_string()),
        Just("when".to_string()),
        Just("allow_failure".to_string()),
        Just("image".to_string()),
        Just("tags".to_string()),
        Just("job".to_string()),
        Just(".hidden".to_string()),
        Just("&a ".to_string()),
        Just("*a".to_string()),
        Just("<<: ".to_string()),
        Just("!reference ".to_string()),
        Just("!!str ".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just(", ".to_string()),
        Just("\"".to_string()),
        Just("'".to_string()),
        Just("|".to_string()),
        Just("# c".to_string()),
        Just("---\n".to_string()),
        Just("? ".to_string()),
        Just("\t".to_string()),
        Just("10s".to_string()),
        "[a-z0-9 ]{0,6}",
    ];
    proptest::collection::vec(frag, 0..60).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn config_parser_never_panics_on_yamlish_input(src in yamlish()) {
        let _ = parse_config(&src, ".gitlab-ci.yml");
    }

    #[test]
    fn config_parser_never_panics_on_arbitrary_text(src in "\\PC{0,300}") {
        let _ = parse_config(&src, ".gitlab-ci.yml");
    }

    #[test]
    fn errors_always_carry_the_file_name(src in yamlish()) {
        if let Err(e) = parse_config(&src, "ci.yml") {
            prop_assert!(!e.diagnostics.is_empty());
            prop_assert!(e.to_string().lines().all(|l| l.starts_with("ci.yml:")));
        }
    }
}

/// Found by the fuzz above in CI: a complex key holding newlines was quoted
/// verbatim, splitting one diagnostic over several lines.
#[test]
fn a_diagnostic_quoting_a_multi_line_key_stays_on_one_line() {
    let e = parse_config("? \"---\n\n\"", "ci.yml").unwrap_err();
    let text = e.to_string();
    assert_eq!(text.lines().count(), e.diagnostics.len(), "{text}");
    assert!(text.lines().all(|l| l.starts_with("ci.yml:")), "{text}");
}

#[test]
fn nasty_inputs() {
    let nasty: Vec<String> = vec![
        String::new(),
        "\u{feff}".into(),
        "\0".into(),
        "- ".repeat(100_000),
        "[".repeat(100_000),
        "{a: ".repeat(50_000),
        // Billion laughs.
        "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n".into(),
        "j: &j\n  <<: *j\n  script: x\n".into(),
        "j:\n  script: x\n  timeout: 99999999999999999999999h\n".into(),
        "j:\n  script: x\n  allow_failure: {exit_codes: [99999999999]}\n".into(),
        "x".repeat(2 * 1024 * 1024),
        "j: !!int abc\n".into(),
        "? [a, b]\n: c\n".into(),
        "j:\n  script: !reference [.x, script]\n".into(),
    ];
    for src in nasty {
        let _ = parse_config(&src, ".gitlab-ci.yml");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn endpoints_never_answer_5xx_to_garbage() {
    let lab = Lab::start().await;
    let runner = lab.mock.create_runner(RunnerSpec::default());
    lab.mock
        .add_project("group/hello", &common::fixture("hello"))
        .unwrap();
    lab.mock.create_pipeline("group/hello", "main").unwrap();
    let job = lab.take_job(&runner.token).await;
    let id = job["id"].as_u64().unwrap();
    let token = job["token"].as_str().unwrap().to_string();

    let mut runner_proptest =
        proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(64));
    let strategy = (
        proptest::collection::vec(any::<u8>(), 0..200),
        "[0-9a-z -]{0,12}",
        0usize..7,
    );
    let bodies = (0..64)
        .map(|_| {
            strategy
                .new_tree(&mut runner_proptest)
                .expect("strategy")
                .current()
        })
        .collect::<Vec<_>>();
    for (body, range, which) in bodies {
        let (method, path) = match which {
            0 => (reqwest::Method::POST, "/api/v4/runners".to_string()),
            1 => (reqwest::Method::POST, "/api/v4/runners/verify".to_string()),
            2 => (
                reqwest::Method::DELETE,
                "/api/v4/runners/managers".to_string(),
            ),
            3 => (reqwest::Method::POST, "/api/v4/jobs/request".to_string()),
            4 => (reqwest::Method::PUT, format!("/api/v4/jobs/{id}")),
            5 => (reqwest::Method::PATCH, format!("/api/v4/jobs/{id}/trace")),
            _ => (
                reqwest::Method::POST,
                "/group/hello.git/git-upload-pack".to_string(),
            ),
        };
        let r = lab
            .http
            .request(method, format!("{}{path}", lab.mock.local_url()))
            .header("JOB-TOKEN", &token)
            .header("Content-Range", range)
            .basic_auth("gitlab-ci-token", Some(&token))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(r.status().as_u16() < 500, "{path}: {}", r.status());
    }
}
