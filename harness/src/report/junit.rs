//! `junit.xml` for CI: a test suite per mode, a test case per case.

use super::{CaseResult, Report, Status};

impl Report {
    pub fn junit(&self) -> String {
        let counts = self.counts();
        let mut s = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"runnerlab\" tests=\"{}\" failures=\"{}\" time=\"{:.3}\">\n",
            self.cases.len(),
            counts.get("failed").unwrap_or(&0),
            self.duration_s
        );
        let mut modes: Vec<&str> = self.cases.iter().map(|c| c.mode.as_str()).collect();
        modes.sort();
        modes.dedup();
        for m in modes {
            let cs: Vec<&CaseResult> = self.cases.iter().filter(|c| c.mode == m).collect();
            s.push_str(&format!(
                "  <testsuite name=\"conformance.{m}\" tests=\"{}\" failures=\"{}\">\n",
                cs.len(),
                cs.iter().filter(|c| c.status == Status::Failed).count()
            ));
            for c in cs {
                s.push_str(&format!(
                    "    <testcase classname=\"conformance.{m}\" name=\"{}\" time=\"{:.3}\"",
                    xml(&c.name),
                    c.duration_s
                ));
                match c.status {
                    Status::Passed | Status::KnownFinding => s.push_str("/>\n"),
                    Status::Failed => s.push_str(&format!(
                        ">\n      <failure message=\"case failed\">{}</failure>\n    </testcase>\n",
                        xml(c.detail.as_deref().unwrap_or(""))
                    )),
                    Status::Skipped => s.push_str(&format!(
                        ">\n      <skipped message=\"{}\"/>\n    </testcase>\n",
                        xml(c.detail.as_deref().unwrap_or(""))
                    )),
                }
            }
            s.push_str("  </testsuite>\n");
        }
        s.push_str("</testsuites>\n");
        s
    }
}

fn xml(s: &str) -> String {
    s.chars()
        .filter(|c| *c == '\n' || *c == '\t' || !c.is_control())
        .collect::<String>()
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;

    #[test]
    fn junit_escapes_and_counts_failures() {
        let x = sample().junit();
        assert!(x.contains("tests=\"2\" failures=\"1\""), "{x}");
        assert!(x.contains("exit code &lt;None&gt; &amp; more"), "{x}");
    }
}
