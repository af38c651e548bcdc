//! The cross-mode comparison: each case's job output in every mode against the first mode's.

use super::CrossModeDiff;

/// Compare the outputs of each case across modes, against the first mode that ran it.
pub fn cross_mode(outputs: &[(&str, &str, String)]) -> Vec<CrossModeDiff> {
    let mut out = Vec::new();
    // Outputs come mode by mode: each case once, in first-seen order.
    let mut names: Vec<&str> = Vec::new();
    for o in outputs {
        if !names.contains(&o.0) {
            names.push(o.0);
        }
    }
    for name in names {
        let mut runs = outputs.iter().filter(|o| o.0 == name);
        let Some((_, base_mode, base)) = runs.next() else {
            continue;
        };
        for (_, mode, text) in runs {
            let (differing_lines, unified) = unified_diff(base, text, base_mode, mode);
            out.push(CrossModeDiff {
                case: name.to_owned(),
                base: (*base_mode).to_owned(),
                mode: (*mode).to_owned(),
                differing_lines,
                diff: unified,
            });
        }
    }
    out
}

/// Lines only in one of `a` and `b`, and their unified diff (2 lines of context, headed
/// `a_label`/`b_label`; empty when the texts are the same). The cross-mode comparison and
/// `runnerlab compare` diff job outputs alike.
pub(crate) fn unified_diff(a: &str, b: &str, a_label: &str, b_label: &str) -> (usize, String) {
    let diff = similar::TextDiff::from_lines(a, b);
    let differing_lines = diff
        .iter_all_changes()
        .filter(|c| c.tag() != similar::ChangeTag::Equal)
        .count();
    let unified = if differing_lines == 0 {
        String::new()
    } else {
        diff.unified_diff()
            .context_radius(2)
            .header(a_label, b_label)
            .to_string()
    };
    (differing_lines, unified)
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;

    #[test]
    fn cross_mode_compares_each_mode_with_the_first() {
        let r = sample();
        // Suites produce outputs mode by mode; each case is compared once per other mode.
        let d: Vec<(&str, &str, usize)> = r
            .cross_mode
            .iter()
            .map(|d| (d.case.as_str(), d.mode.as_str(), d.differing_lines))
            .collect();
        assert_eq!(
            d,
            [
                ("hello", "docker", 0),
                ("hello", "custom", 1),
                ("exit-code", "docker", 0)
            ]
        );
        assert!(
            r.cross_mode[1].diff.contains("+something else"),
            "{:?}",
            r.cross_mode[1]
        );
        let md = r.markdown();
        assert!(md.contains("| hello | docker | shell | same |"), "{md}");
        assert!(md.contains("| hello | custom | shell | 1 |"), "{md}");
    }
}
