//! Job variables: the predefined ones that depend on the ref, slugs, and the expansion of
//! `$VAR` references between variables.

use super::job::JobVariable;
use crate::state::RefKind;

/// GitLab's "variables inside other variables" (`BuildRunnerPresenter#runner_variables`:
/// `sort_and_expand_all(keep_undefined: true, expand_file_refs: false, expand_raw_refs: false)`):
/// GitLab resolves references between variables before it sends them, because the runner
/// expands a value only one level deep (`B: "$A-x"`, `C: "$B/y"` reach a job as `C=<A>-x/y`
/// only thanks to this). References (`$NAME`, `${NAME}`) take the referenced variable's
/// expanded value, the last definition of a name winning and a variable that references its own
/// name getting the definition before it; undefined names, references to file-type or raw
/// variables and `$$` stay as written; raw values are sent as written. A reference cycle
/// leaves every value as written, as GitLab does.
pub fn expand_references(vars: &mut [JobVariable]) {
    use std::collections::HashMap;
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, v) in vars.iter().enumerate() {
        last.insert(v.key.as_str(), i);
    }
    struct Resolver<'a> {
        vars: &'a [JobVariable],
        last: HashMap<&'a str, usize>,
        done: Vec<Option<String>>,
        visiting: Vec<bool>,
    }
    impl Resolver<'_> {
        /// The definition a reference to `name` from variable `from` means.
        fn target(&self, from: usize, name: &str) -> Option<usize> {
            match self.last.get(name) {
                Some(&j) if j != from => Some(j),
                Some(_) => (0..from).rev().find(|&j| self.vars[j].key == name),
                None => None,
            }
        }

        /// The expanded value of variable `i`; `None` on a reference cycle.
        fn resolve(&mut self, i: usize) -> Option<String> {
            if let Some(v) = &self.done[i] {
                return Some(v.clone());
            }
            let v = &self.vars[i];
            if v.raw || !v.value.contains('$') {
                self.done[i] = Some(v.value.clone());
                return Some(v.value.clone());
            }
            if self.visiting[i] {
                return None;
            }
            self.visiting[i] = true;
            let c: Vec<char> = v.value.chars().collect();
            let mut out = String::new();
            let mut k = 0;
            while k < c.len() {
                if c[k] != '$' {
                    out.push(c[k]);
                    k += 1;
                    continue;
                }
                if c.get(k + 1) == Some(&'$') {
                    out.push_str("$$");
                    k += 2;
                    continue;
                }
                let braced = c.get(k + 1) == Some(&'{');
                let start = if braced { k + 2 } else { k + 1 };
                let mut j = start;
                let first_ok = c
                    .get(start)
                    .is_some_and(|ch| ch.is_ascii_alphabetic() || *ch == '_');
                while first_ok && j < c.len() && (c[j].is_ascii_alphanumeric() || c[j] == '_') {
                    j += 1;
                }
                if j == start || (braced && c.get(j) != Some(&'}')) {
                    out.push('$');
                    k += 1;
                    continue;
                }
                let end = if braced { j + 1 } else { j };
                let written: String = c[k..end].iter().collect();
                let name: String = c[start..j].iter().collect();
                match self.target(i, &name) {
                    Some(t) if !self.vars[t].file && !self.vars[t].raw => {
                        out.push_str(&self.resolve(t)?)
                    }
                    _ => out.push_str(&written),
                }
                k = end;
            }
            self.visiting[i] = false;
            self.done[i] = Some(out.clone());
            Some(out)
        }
    }
    let n = vars.len();
    let mut r = Resolver {
        vars,
        last,
        done: vec![None; n],
        visiting: vec![false; n],
    };
    let mut expanded = Vec::with_capacity(n);
    for i in 0..n {
        match r.resolve(i) {
            Some(v) => expanded.push(v),
            None => return,
        }
    }
    for (v, e) in vars.iter_mut().zip(expanded) {
        v.value = e;
    }
}

/// Lowercase, non-alphanumerics to `-`, at most 63 chars, no leading or
/// trailing `-` (GitLab's `CI_*_SLUG` rule).
pub fn slugify(s: &str) -> String {
    let lowered: String = s
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let cut: String = lowered.chars().take(63).collect();
    cut.trim_matches('-').to_string()
}

pub(super) fn host_and_port(url: &str) -> (String, String) {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    let hostport = rest.split('/').next().unwrap_or(rest);
    match hostport.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.chars().all(|c| c.is_ascii_digit()) => {
            (h.to_string(), p.to_string())
        }
        _ => (hostport.to_string(), "80".to_string()),
    }
}

/// The predefined variables that depend on what a pipeline runs for, as GitLab sets them:
/// `CI_COMMIT_BRANCH` for branches only, `CI_COMMIT_TAG` (and `CI_COMMIT_TAG_MESSAGE`) for tags
/// only, `CI_MERGE_REQUEST_*` for merge requests only, whose `CI_COMMIT_REF_NAME` is the source
/// branch. Used for `rules:if` at creation and in the job payload, so both agree.
pub fn ref_variables(
    kind: &RefKind,
    git_ref: &str,
    project_id: u64,
    project_path: &str,
    project_url: &str,
) -> Vec<(&'static str, String)> {
    let ref_name = match kind {
        RefKind::MergeRequest(mr) => mr.source_branch.as_str(),
        _ => git_ref,
    };
    let mut v = vec![
        ("CI_COMMIT_REF_NAME", ref_name.to_string()),
        ("CI_COMMIT_REF_SLUG", slugify(ref_name)),
    ];
    match kind {
        RefKind::Branch => v.push(("CI_COMMIT_BRANCH", git_ref.to_string())),
        RefKind::Tag { message } => {
            v.push(("CI_COMMIT_TAG", git_ref.to_string()));
            v.push(("CI_COMMIT_TAG_MESSAGE", message.clone().unwrap_or_default()));
        }
        RefKind::MergeRequest(mr) => {
            // One project: source and target project are the same.
            v.extend([
                ("CI_MERGE_REQUEST_ID", mr.id.to_string()),
                ("CI_MERGE_REQUEST_IID", mr.iid.to_string()),
                ("CI_MERGE_REQUEST_REF_PATH", git_ref.to_string()),
                ("CI_MERGE_REQUEST_PROJECT_ID", project_id.to_string()),
                ("CI_MERGE_REQUEST_PROJECT_PATH", project_path.to_string()),
                ("CI_MERGE_REQUEST_PROJECT_URL", project_url.to_string()),
                (
                    "CI_MERGE_REQUEST_TARGET_BRANCH_NAME",
                    mr.target_branch.clone(),
                ),
                ("CI_MERGE_REQUEST_TARGET_BRANCH_PROTECTED", "true".into()),
                ("CI_MERGE_REQUEST_TITLE", mr.title.clone()),
                ("CI_MERGE_REQUEST_SQUASH_ON_MERGE", "false".into()),
                ("CI_MERGE_REQUEST_DRAFT", "false".into()),
                ("CI_MERGE_REQUEST_SOURCE_PROJECT_ID", project_id.to_string()),
                (
                    "CI_MERGE_REQUEST_SOURCE_PROJECT_PATH",
                    project_path.to_string(),
                ),
                (
                    "CI_MERGE_REQUEST_SOURCE_PROJECT_URL",
                    project_url.to_string(),
                ),
                (
                    "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME",
                    mr.source_branch.clone(),
                ),
                ("CI_MERGE_REQUEST_SOURCE_BRANCH_PROTECTED", "true".into()),
                ("CI_MERGE_REQUEST_EVENT_TYPE", "detached".into()),
                ("CI_MERGE_REQUEST_DIFF_ID", mr.iid.to_string()),
                ("CI_MERGE_REQUEST_DIFF_BASE_SHA", mr.target_sha.clone()),
                // Set for merged-results pipelines only; empty in detached ones.
                ("CI_MERGE_REQUEST_SOURCE_BRANCH_SHA", String::new()),
                ("CI_MERGE_REQUEST_TARGET_BRANCH_SHA", String::new()),
            ]);
        }
    }
    v
}
