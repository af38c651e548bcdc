//! `report.json`: the [`Report`] itself, serialised (schema [`super::SCHEMA`], documented in
//! ARCHITECTURE.md).

use super::Report;

impl Report {
    /// The report as pretty-printed JSON, the content of `report.json`.
    pub fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(self)
    }
}

#[cfg(test)]
mod tests {
    use super::super::SCHEMA;
    use super::super::tests::sample;

    #[test]
    fn json_uses_the_documented_status_names() {
        let j = serde_json::to_value(sample()).unwrap();
        assert_eq!(j["cases"][0]["status"], "passed");
        assert_eq!(j["environment"]["runner"]["compat"], "19.4.0@abc");
        assert_eq!(j["schema"], SCHEMA);
    }
}
