//! A stack under comparison: the Podman engine, the runner build and the runner's configuration
//! overrides, parsed from `--a`/`--b` (`podman=trixie,runner=module:<v>,config=K=V;K2=V2`).

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::forge::runner::{GetOptions, Source};

/// The engines a stack may name (see [`crate::engine`]).
pub const ENGINES: &[&str] = &["host", crate::engine::trixie::NAME];

/// What a run is made of. `None` keys were not given and take their defaults: the host's Podman,
/// the default forge source of the default runner version, the default runner configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stack {
    /// Engine name (`host`, `trixie`).
    pub podman: Option<String>,
    /// Runner source as [`Source`] parses it (`module:<v>`, `path:<file>`, `image:<ref>`).
    pub runner: Option<String>,
    /// Runner environment overrides (`[runners] environment`); `Some(vec![])` is an explicit
    /// `config=default`.
    pub config: Option<Vec<(String, String)>>,
}

impl Stack {
    /// Parse the value of `flag` (`--a`, `--b`): comma-separated `key=value` items.
    pub fn parse(flag: &str, spec: &str) -> Result<Stack> {
        let mut st = Stack::default();
        let spec = spec.trim();
        if spec.is_empty() {
            return Ok(st);
        }
        for item in spec.split(',').map(str::trim) {
            if item.is_empty() {
                bail!(
                    "{flag}: empty item in {spec:?}: give key=value items separated by single commas"
                );
            }
            let Some((key, value)) = item.split_once('=') else {
                bail!(
                    "{flag}: {item:?} is not key=value: expected podman=<engine>, runner=<source> or config=<default|KEY=VALUE;…>"
                );
            };
            let (key, value) = (key.trim(), value.trim());
            let twice = || {
                anyhow::anyhow!("{flag}: key {key:?} given twice (in {spec:?}): give each key once")
            };
            match key {
                "podman" => {
                    if !ENGINES.contains(&value) {
                        bail!(
                            "{flag}: unknown Podman engine {value:?} in {item:?}: expected {} (install one with `runnerlab setup --engine <name>`)",
                            ENGINES.join(" or ")
                        );
                    }
                    if st.podman.replace(value.to_owned()).is_some() {
                        return Err(twice());
                    }
                }
                "runner" => {
                    if let Err(e) = value.parse::<Source>() {
                        bail!("{flag}: bad runner in {item:?}: {e}");
                    }
                    if st.runner.replace(value.to_owned()).is_some() {
                        return Err(twice());
                    }
                }
                "config" => {
                    let env = parse_config(flag, item, value)?;
                    if st.config.replace(env).is_some() {
                        return Err(twice());
                    }
                }
                other => bail!(
                    "{flag}: unknown key {other:?} in {item:?}: expected podman, runner or config"
                ),
            }
        }
        Ok(st)
    }

    /// The engine name, `host` unless given.
    pub fn engine(&self) -> &str {
        self.podman.as_deref().unwrap_or("host")
    }

    /// The runner environment overrides (empty: the default configuration).
    pub fn config_env(&self) -> &[(String, String)] {
        self.config.as_deref().unwrap_or(&[])
    }

    /// `base` (the command's `--runner-version`/`--from`/`--helper`) with this stack's runner
    /// source, when it names one.
    pub fn get_options(&self, base: &GetOptions) -> Result<GetOptions> {
        let mut o = base.clone();
        if let Some(r) = &self.runner {
            o.from = Some(r.parse()?);
        }
        Ok(o)
    }

    /// A short label for reports: the items given, in the order podman, runner, config
    /// (`podman=trixie`, `runner=module:v1,config=FF=1`); `default` when none were.
    pub fn label(&self) -> String {
        let mut parts = Vec::new();
        if let Some(p) = &self.podman {
            parts.push(format!("podman={p}"));
        }
        if let Some(r) = &self.runner {
            parts.push(format!("runner={r}"));
        }
        if let Some(c) = &self.config {
            if c.is_empty() {
                parts.push("config=default".into());
            } else {
                let kv: Vec<String> = c.iter().map(|(k, v)| format!("{k}={v}")).collect();
                parts.push(format!("config={}", kv.join(";")));
            }
        }
        if parts.is_empty() {
            "default".into()
        } else {
            parts.join(",")
        }
    }
}

impl std::fmt::Display for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

/// `default`, or `KEY=VALUE` overrides separated by `;`.
fn parse_config(flag: &str, item: &str, value: &str) -> Result<Vec<(String, String)>> {
    if value == "default" {
        return Ok(Vec::new());
    }
    let fix = "expected config=default or config=KEY=VALUE[;KEY=VALUE…] (a runner environment variable per override)";
    let mut env: Vec<(String, String)> = Vec::new();
    for part in value.split(';').map(str::trim) {
        let Some((k, v)) = part.split_once('=') else {
            bail!("{flag}: bad config override {part:?} in {item:?}: {fix}");
        };
        let valid = k
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            bail!(
                "{flag}: bad variable name {k:?} in {item:?}: a name is letters, digits and _ (not first a digit); {fix}"
            );
        }
        if env.iter().any(|(e, _)| e == k) {
            bail!("{flag}: {k} set twice in {item:?}: set each variable once");
        }
        env.push((k.to_owned(), v.to_owned()));
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(flag: &str, spec: &str) -> String {
        format!("{:#}", Stack::parse(flag, spec).unwrap_err())
    }

    #[test]
    fn missing_keys_default() {
        let s = Stack::parse("--a", "").unwrap();
        assert_eq!(s, Stack::default());
        assert_eq!(s.engine(), "host");
        assert!(s.config_env().is_empty());
        assert_eq!(s.label(), "default");
        let o = s.get_options(&GetOptions::default()).unwrap();
        assert!(o.from.is_none());
    }

    #[test]
    fn parses_every_key() {
        let s = Stack::parse(
            "--b",
            "podman=trixie, runner=path:/opt/gitlab-runner-19.5/gitlab-runner,config=FF_NETWORK_PER_BUILD=false;A=b=c",
        )
        .unwrap();
        assert_eq!(s.engine(), "trixie");
        assert_eq!(
            s.config_env(),
            &[
                ("FF_NETWORK_PER_BUILD".to_owned(), "false".to_owned()),
                ("A".to_owned(), "b=c".to_owned())
            ]
        );
        let o = s.get_options(&GetOptions::default()).unwrap();
        assert_eq!(
            o.from,
            Some(Source::Path("/opt/gitlab-runner-19.5/gitlab-runner".into()))
        );
        assert_eq!(
            s.label(),
            "podman=trixie,runner=path:/opt/gitlab-runner-19.5/gitlab-runner,config=FF_NETWORK_PER_BUILD=false;A=b=c"
        );
    }

    #[test]
    fn labels_name_what_was_given() {
        assert_eq!(
            Stack::parse("--b", "podman=trixie").unwrap().label(),
            "podman=trixie"
        );
        assert_eq!(
            Stack::parse("--a", "config=default").unwrap().label(),
            "config=default"
        );
        assert_eq!(
            Stack::parse("--a", "runner=module:v0.0.0-x")
                .unwrap()
                .label(),
            "runner=module:v0.0.0-x"
        );
    }

    #[test]
    fn round_trips_through_json() {
        let s = Stack::parse("--a", "podman=host,config=K=V").unwrap();
        let back: Stack = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn bad_input_names_flag_item_and_fix() {
        assert_eq!(
            err("--b", "podmn=trixie"),
            r#"--b: unknown key "podmn" in "podmn=trixie": expected podman, runner or config"#
        );
        let e = err("--a", "trixie");
        assert!(e.starts_with(r#"--a: "trixie" is not key=value"#), "{e}");
        let e = err("--b", "podman=bookworm");
        assert!(
            e.contains(
                r#"unknown Podman engine "bookworm" in "podman=bookworm": expected host or trixie"#
            ),
            "{e}"
        );
        let e = err("--b", "runner=path:relative/gitlab-runner");
        assert!(e.starts_with("--b: bad runner in"), "{e}");
        assert!(e.contains("must be absolute"), "{e}");
        let e = err("--b", "runner=ftp:x");
        assert!(e.contains("expected path:/abs/gitlab-runner"), "{e}");
        let e = err("--a", "podman=host,podman=trixie");
        assert!(e.contains(r#"key "podman" given twice"#), "{e}");
        let e = err("--a", "config=FF");
        assert!(
            e.contains(r#"bad config override "FF" in "config=FF""#),
            "{e}"
        );
        let e = err("--a", "config=1X=2");
        assert!(e.contains(r#"bad variable name "1X""#), "{e}");
        let e = err("--a", "config=A=1;A=2");
        assert!(e.contains("A set twice"), "{e}");
        let e = err("--a", "podman=host,,config=default");
        assert!(e.contains("empty item"), "{e}");
    }
}
