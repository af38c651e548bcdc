//! The page's structure, from the sample report and small traces.

use super::super::tests::sample;
use super::*;

/// A trace as the runner sends it: sections, colours, and text that must not become markup.
const RAW: &str = "Running with gitlab-runner 19.4.0\n\
    section_start:1700000000:prepare_executor\r\x1b[0K\x1b[0K\x1b[36;1mPreparing the \"shell\" executor\x1b[0;m\n\
    Using Shell executor...\n\
    section_end:1700000001:prepare_executor\r\x1b[0Ksection_start:1700000001:step_script[collapsed=true]\r\x1b[0K\x1b[0K\x1b[36;1mExecuting \"step_script\" stage\x1b[0;m\n\
    \x1b[32;1m$ echo '<script>alert(1)</script>' && true\x1b[0;m\n\
    <script>alert(1)</script>\n\
    section_start:1700000002:my_section\r\x1b[0KInner\n\
    inner line\n\
    section_end:1700000003:my_section\r\x1b[0K\n\
    section_end:1700000004:step_script\r\x1b[0K\n\
    \x1b[32;1mJob succeeded\x1b[0;m\n";

fn rendered() -> String {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("traces/hello");
    std::fs::create_dir_all(&t).unwrap();
    std::fs::write(t.join("hello.shell.log"), RAW).unwrap();
    sample().html(dir.path())
}

#[test]
fn html_has_the_matrix_filters_and_embedded_traces() {
    let h = rendered();
    assert!(h.starts_with("<!doctype html>"), "{h}");
    assert!(h.trim_end().ends_with("</html>"), "{h}");
    // Self-contained: nothing fetched.
    for remote in ["http://", "https://", "<link", "src="] {
        assert!(!h.contains(remote), "{remote} in {h}");
    }
    // One table of cases × modes: a header cell per mode, a row per case, a class per status.
    assert_eq!(h.matches("<table id=\"matrix\">").count(), 1);
    let matrix = &h[h.find("<table id=\"matrix\">").unwrap()..];
    let matrix = &matrix[..matrix.find("</table>").unwrap()];
    let head = &matrix[..matrix.find("</thead>").unwrap()];
    assert_eq!(
        head.matches("<th data-mode=\"shell\">shell</th>").count(),
        1
    );
    assert_eq!(head.matches("<th data-mode=").count(), 1, "{head}");
    assert_eq!(
        matrix.matches("<tr><th scope=\"row\">").count(),
        2,
        "{matrix}"
    );
    assert!(matrix.contains("<th scope=\"row\">hello</th><td class=\"passed\" data-mode=\"shell\" data-status=\"passed\"><a href=\"#t-0\">passed</a>"), "{matrix}");
    assert!(
        matrix.contains("<td class=\"failed\" data-mode=\"shell\" data-status=\"failed\" title=\"exit code &lt;None&gt; &amp; more\"><a href=\"#t-1\">failed <span class=\"note\">i</span></a>"),
        "{matrix}"
    );
    // The filters, shown by the script.
    for control in [
        "id=\"f-failed\"",
        "id=\"f-findings\"",
        "class=\"f-mode\" value=\"shell\" checked",
    ] {
        assert!(h.contains(control), "{control}");
    }
    assert!(h.contains("<form id=\"filters\" hidden>"));
    assert_eq!(
        h.matches("<script>").count(),
        1,
        "only the page's own script"
    );
    // The trace, embedded: its sections folded (nested), colours as spans, nothing raw.
    let entry = &h[h.find("<details class=\"entry\" id=\"t-0\"").unwrap()..];
    let entry = &entry[..entry.find("<p class=\"back\">").unwrap()];
    assert!(
        entry.contains("<a href=\"traces/hello/hello.shell.log\">"),
        "{entry}"
    );
    assert_eq!(
        entry.matches("<details class=\"sec\">").count(),
        3,
        "{entry}"
    );
    assert!(
        entry.contains("<span class=\"sn\">step_script</span> <span class=\"c36 b\">Executing &quot;step_script&quot; stage</span>"),
        "{entry}"
    );
    let step = &entry[entry.find("step_script</span>").unwrap()..];
    assert!(
        step.find("<span class=\"sn\">my_section</span>").unwrap()
            < step.find("</details>").unwrap(),
        "my_section nests in step_script: {step}"
    );
    assert!(
        entry.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{entry}"
    );
    assert!(
        entry.contains("<span class=\"c32 b\">Job succeeded</span>"),
        "{entry}"
    );
    assert!(
        !h.contains('\x1b') && !h.contains('\r'),
        "raw escapes in {h}"
    );
    assert!(!h.contains("section_start") && !h.contains("section_end"));
    // The detail, escaped, in the failed case's entry.
    assert!(h.contains("<pre class=\"detail\">exit code &lt;None&gt; &amp; more</pre>"));
    // Cross-mode diffs as diffs, the job cost as a table.
    assert!(
        h.contains("<span class=\"add\">+something else\n</span>"),
        "{h}"
    );
    assert!(h.contains("<b>hello</b> · custom vs shell · 1 line"), "{h}");
    assert!(h.contains("<tr data-mode=\"docker\"><td>docker</td><td>2</td><td>4.50 s</td><td>5.00 s</td><td>4</td>"), "{h}");
    // Balanced where it matters.
    for tag in ["details", "summary", "table", "tr", "pre", "span", "div"] {
        assert_eq!(
            h.matches(&format!("<{tag}>")).count() + h.matches(&format!("<{tag} ")).count(),
            h.matches(&format!("</{tag}>")).count(),
            "<{tag}> balance"
        );
    }
}

#[test]
fn html_traces_normalised_and_capped() {
    // What the lab saves: section headers as `[name] header`, no markers, no escapes.
    let t = "Running with gitlab-runner\n[prepare_executor] Preparing\nUsing Shell\n\
             [step_script] Executing \"step_script\"\n$ echo a\n[1/2] not a section\n\
             [section_script_step_1] $ echo multi\nmulti\n[after_script] Running after\nx & y\nJob succeeded\n";
    let h = render_trace(t);
    assert_eq!(h.matches("<details class=\"sec\">").count(), 4, "{h}");
    let step = &h[h.find("step_script</span>").unwrap()..h.find("after_script</span>").unwrap()];
    assert!(step.contains("[1/2] not a section"), "{h}");
    assert!(
        step.contains("section_script_step_1</span>"),
        "script steps nest: {h}"
    );
    assert!(h.contains("x &amp; y"), "{h}");
    assert!(
        h.ends_with("</details>Job succeeded\n"),
        "the verdict closes the sections: {h}"
    );

    let big = "line of a large trace\n".repeat(20_000);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big.log"), &big).unwrap();
    let e = embed_trace(dir.path(), "big.log");
    assert!(e.len() < TRACE_CAP + 8 * 1024, "{}", e.len());
    assert!(
        e.contains("Trace cut after 200.0 KiB of 429.7 KiB"),
        "{}",
        &e[e.len() - 300..]
    );
    assert!(embed_trace(dir.path(), "../x.log").contains("outside the report"));
    assert!(embed_trace(dir.path(), "gone.log").contains("not readable"));
}

/// Render a real run's report: `RUNNERLAB_HTML_FROM=target/runnerlab/<run> cargo test -p
/// runnerlab --lib report::html -- --ignored` writes `<run>/report.html` (to look at it).
#[test]
#[ignore = "renders a real report directory named by RUNNERLAB_HTML_FROM"]
fn html_of_a_real_report() {
    let Some(dir) = std::env::var_os("RUNNERLAB_HTML_FROM") else {
        return;
    };
    let dir = Path::new(&dir);
    let text = std::fs::read_to_string(dir.join("report.json")).unwrap();
    let report: Report = serde_json::from_str(&text).unwrap();
    let html = report.html(dir);
    crate::paths::write_atomic(&dir.join("report.html"), html.as_bytes()).unwrap();
    eprintln!("{} bytes", html.len());
}
