//! JUnit reports as GitLab reads them for a pipeline's test report: the `junit` artifacts of
//! its jobs (gzip, as the runner uploads them), one suite per job name, each test case
//! `failed` (a `<failure>`), else `error` (`<error>`), else `skipped` (`<skipped>`), else
//! `success`. A report that cannot be read becomes the suite's `suite_error`, never a panic.

use std::io::Read;

/// Counts of one suite or of the whole pipeline.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TestCounts {
    pub count: u64,
    pub success: u64,
    pub failed: u64,
    pub skipped: u64,
    pub error: u64,
    /// Sum of the cases' `time` attributes, in seconds.
    pub time: f64,
}

impl TestCounts {
    fn add(&mut self, o: &TestCounts) {
        self.count += o.count;
        self.success += o.success;
        self.failed += o.failed;
        self.skipped += o.skipped;
        self.error += o.error;
        self.time += o.time;
    }
}

/// One job's suite in a pipeline's test report.
#[derive(Clone, Debug, PartialEq)]
pub struct TestSuite {
    /// The job name (GitLab groups a pipeline's reports by job).
    pub name: String,
    pub build_ids: Vec<u64>,
    pub counts: TestCounts,
    /// Why a report of this job could not be read.
    pub suite_error: Option<String>,
}

/// A pipeline's test report summary (`GET …/pipelines/:id/test_report_summary`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TestReportSummary {
    pub total: TestCounts,
    pub suites: Vec<TestSuite>,
}

/// The report's XML: gunzipped when the artifact's format is `gzip`.
pub fn decode(bytes: &[u8], format: &str) -> Result<String, String> {
    if format == "gzip" {
        let mut s = String::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_string(&mut s)
            .map_err(|e| format!("JUnit report is not gzip-compressed UTF-8: {e}"))?;
        Ok(s)
    } else {
        String::from_utf8(bytes.to_vec()).map_err(|_| "JUnit report is not UTF-8".to_string())
    }
}

/// The value of attribute `name` in a start tag's text (`testcase name="x" time="0.1"`).
fn attr(tag: &str, name: &str) -> Option<String> {
    let mut rest = tag;
    while let Some(i) = rest.find(name) {
        let before_ok = i == 0 || rest[..i].ends_with(|c: char| c.is_whitespace());
        let after = rest[i + name.len()..].trim_start();
        if before_ok && let Some(v) = after.strip_prefix('=') {
            let v = v.trim_start();
            let q = v.chars().next()?;
            if q == '"' || q == '\'' {
                let end = v[1..].find(q)?;
                return Some(v[1..1 + end].to_string());
            }
        }
        rest = &rest[i + name.len()..];
    }
    None
}

/// Count the test cases of a JUnit XML document.
pub fn parse(xml: &str) -> Result<TestCounts, String> {
    #[derive(PartialEq)]
    enum Case {
        Success,
        Failed,
        Error,
        Skipped,
    }
    let mut counts = TestCounts::default();
    let mut current: Option<Case> = None;
    let mut seen_root = false;
    let mut rest = xml;
    fn finish(case: Case, counts: &mut TestCounts) {
        counts.count += 1;
        match case {
            Case::Success => counts.success += 1,
            Case::Failed => counts.failed += 1,
            Case::Error => counts.error += 1,
            Case::Skipped => counts.skipped += 1,
        }
    }
    while let Some(open) = rest.find('<') {
        rest = &rest[open..];
        // Comments, CDATA and declarations hold no tags.
        let skip_to = if rest.starts_with("<!--") {
            Some("-->")
        } else if rest.starts_with("<![CDATA[") {
            Some("]]>")
        } else {
            None
        };
        if let Some(end) = skip_to {
            let i = rest
                .find(end)
                .ok_or_else(|| format!("JUnit XML parsing failed: unterminated {end}"))?;
            rest = &rest[i + end.len()..];
            continue;
        }
        let close = rest
            .find('>')
            .ok_or("JUnit XML parsing failed: unterminated tag")?;
        let tag = &rest[1..close];
        rest = &rest[close + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        let self_closing = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let name = tag.split_whitespace().next().unwrap_or("");
        match name {
            "testsuites" | "testsuite" => seen_root = true,
            "testcase" => {
                if current.is_some() {
                    return Err("JUnit XML parsing failed: nested testcase".into());
                }
                counts.time += attr(tag, "time")
                    .and_then(|t| t.parse::<f64>().ok())
                    .unwrap_or(0.0);
                if self_closing {
                    finish(Case::Success, &mut counts);
                } else {
                    current = Some(Case::Success);
                }
            }
            "/testcase" => match current.take() {
                Some(c) => finish(c, &mut counts),
                None => {
                    return Err("JUnit XML parsing failed: </testcase> without <testcase>".into());
                }
            },
            "failure" | "error" | "skipped" => {
                if let Some(c) = current.as_mut() {
                    // GitLab's precedence: failure, then error, then skipped.
                    let new = match name {
                        "failure" => Case::Failed,
                        "error" => Case::Error,
                        _ => Case::Skipped,
                    };
                    let rank = |c: &Case| match c {
                        Case::Failed => 3,
                        Case::Error => 2,
                        Case::Skipped => 1,
                        Case::Success => 0,
                    };
                    if rank(&new) > rank(c) {
                        *c = new;
                    }
                }
            }
            _ => {}
        }
    }
    if current.is_some() {
        return Err("JUnit XML parsing failed: unterminated testcase".into());
    }
    if !seen_root {
        return Err("JUnit XML parsing failed: no testsuite or testsuites element".into());
    }
    Ok(counts)
}

/// Add one job's report to a summary (suites keyed by job name, in first-seen order).
pub(crate) fn add_report(
    summary: &mut TestReportSummary,
    job: &str,
    job_id: u64,
    bytes: &[u8],
    format: &str,
) {
    let parsed = decode(bytes, format).and_then(|x| parse(&x));
    let idx = match summary.suites.iter().position(|s| s.name == job) {
        Some(i) => i,
        None => {
            summary.suites.push(TestSuite {
                name: job.to_string(),
                build_ids: Vec::new(),
                counts: TestCounts::default(),
                suite_error: None,
            });
            summary.suites.len() - 1
        }
    };
    let suite = &mut summary.suites[idx];
    suite.build_ids.push(job_id);
    match parsed {
        Ok(c) => {
            suite.counts.add(&c);
            summary.total.add(&c);
        }
        Err(e) => suite.suite_error = Some(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_cases_by_outcome() {
        let xml = r#"<?xml version="1.0"?>
<!-- a <testcase> in a comment does not count -->
<testsuites><testsuite name="s">
  <testcase name="a" time="0.5"/>
  <testcase name='b' time="1.25"><failure message="x"><![CDATA[<testcase/>]]></failure></testcase>
  <testcase name="c"><error/><skipped/></testcase>
  <testcase name="d"><skipped/></testcase>
  <testcase name="e"><system-out>ok</system-out></testcase>
</testsuite></testsuites>"#;
        let c = parse(xml).unwrap();
        assert_eq!(
            (c.count, c.success, c.failed, c.error, c.skipped),
            (5, 2, 1, 1, 1)
        );
        assert!((c.time - 1.75).abs() < 1e-9);
    }

    #[test]
    fn bad_reports_are_errors_not_panics() {
        for bad in [
            "",
            "not xml",
            "<testsuite><testcase>",
            "<testsuite></testcase>",
            "<testsuite><!-- x",
            "<testsuite><testcase><testcase/></testcase></testsuite>",
            "<testsuite",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(decode(b"not gzip", "gzip").is_err());
        assert_eq!(
            attr("testcase time = '2' name=\"n\"", "name"),
            Some("n".into())
        );
        assert_eq!(attr("testcase mytime=\"1\"", "time"), None);
    }
}
