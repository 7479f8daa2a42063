//! Where each setting's value comes from: the built-in default, the configuration file, or the
//! environment (the `config` table is the runtime settings' business, see `super`). Worked out
//! once at startup from the same file and environment [`crate::config::DaemonConfig::load`]
//! read, by which keys each of them names.

use std::{
    collections::{BTreeSet, HashMap},
    path::Path,
};

use serde::Serialize;

/// A value's origin, lowest layer first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Nothing set it.
    Default,
    /// The configuration file.
    File,
    /// A `WARDEN__*` or seed variable.
    Environment,
    /// A row of the `config` table (runtime settings only).
    Table,
}

/// The keys the file and the environment set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins {
    file: BTreeSet<String>,
    env: BTreeSet<String>,
}

impl Origins {
    /// The keys set by the file at `file` (if any; its syntax was checked already) and by
    /// `env` (`WARDEN__SECTION__KEY`, and the seed variables through `seeds`).
    pub fn of(file: Option<&Path>, env: &HashMap<String, String>, seeds: &[(&str, &str)]) -> Self {
        let mut out = Origins::default();
        if let Some(table) = file
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|text| text.parse::<toml::Table>().ok())
        {
            out.file.extend(
                crate::config::toml_leaves(&table)
                    .into_iter()
                    .map(|(key, _)| key),
            );
        }
        for var in env.keys() {
            if let Some(rest) = var.strip_prefix("WARDEN__") {
                out.env.insert(
                    rest.split("__")
                        .collect::<Vec<_>>()
                        .join(".")
                        .to_lowercase(),
                );
            } else if let Some((_, key)) = seeds.iter().find(|(seed, _)| seed == var) {
                out.env.insert((*key).to_owned());
            }
        }
        out
    }

    /// Where `key`'s value comes from, before the table.
    pub fn source(&self, key: &str) -> Source {
        if self.env.contains(key) {
            Source::Environment
        } else if self.file.contains(key) {
            Source::File
        } else {
            Source::Default
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_wins_over_the_file_over_the_default() {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::io::Write::write_all(
            &mut f,
            b"[breaker]\nfailure_threshold = 4\ncooldown = \"5s\"\n",
        )
        .unwrap();
        let env: HashMap<String, String> = [
            ("WARDEN__BREAKER__COOLDOWN", "9s"),
            ("DATABASE_URL", "postgres://x@y/z"),
            ("HOME", "/root"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let o = Origins::of(Some(f.path()), &env, &[("DATABASE_URL", "postgres.url")]);
        assert_eq!(o.source("breaker.failure_threshold"), Source::File);
        assert_eq!(o.source("breaker.cooldown"), Source::Environment);
        assert_eq!(o.source("postgres.url"), Source::Environment);
        assert_eq!(o.source("retry.max"), Source::Default);
    }
}
