//! `results/index.json`: what `explr replicate` found, for programs. One entry per (manifest,
//! profile), replaced each time that manifest runs at that profile: the claim, its verdict, the
//! golden comparison, every check with its value and bound, the device and the wall time.
//! `cargo xtask gpu-check` and anything else that needs the outcome read this file, never the
//! terminal output.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use explr_io::{write_atomic, IoError};
use explr_manifest::spec::Verdict;

/// The index file's name inside the results folder.
pub const FILE: &str = "index.json";

/// One check of a claim, as decided.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IndexCheck {
    /// What was checked, in words.
    pub what: String,
    /// The measured value.
    pub value: f64,
    /// The bound, in words (`<= 1e-10`).
    pub bound: String,
    /// Whether it held.
    pub pass: bool,
    /// Whether the seeds scattered too much to decide it (then `pass` is false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub undecided: bool,
}

/// How a manifest's summary compared with its golden.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GoldenStatus {
    /// Within its tolerance.
    #[serde(rename = "match")]
    Match,
    /// Outside it.
    #[serde(rename = "differs")]
    Differs,
    /// There is no golden.
    #[serde(rename = "missing")]
    Missing,
    /// The summary was written as the golden (`--bless`).
    #[serde(rename = "written")]
    Written,
    /// Not compared (neither `--check` nor `--bless`, or a run cut by `--max-epochs`).
    #[serde(rename = "not checked")]
    NotChecked,
}

impl GoldenStatus {
    /// As the index writes it (`match`, `differs`, `missing`, `written`, `not checked`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Match => "match",
            Self::Differs => "differs",
            Self::Missing => "missing",
            Self::Written => "written",
            Self::NotChecked => "not checked",
        }
    }
}

/// One manifest at one profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// Manifest file stem (`e3`).
    pub manifest: String,
    /// The claim's id (`E3`).
    pub id: String,
    /// The profile.
    pub profile: String,
    /// The verdict (`pass`, `fail`, `inconclusive`).
    pub verdict: Verdict,
    /// The golden comparison (`match`, `differs`, `missing`, `written`, `not checked`).
    pub golden: GoldenStatus,
    /// The checks, by key.
    pub checks: BTreeMap<String, IndexCheck>,
    /// The device it ran on (`cpu`, `cuda:0`).
    pub device: String,
    /// Wall time in seconds.
    pub wall_s: f64,
}

/// The whole index.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResultsIndex {
    /// The entries, sorted by manifest, then profile.
    pub entries: Vec<IndexEntry>,
}

/// Why the index could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// Reading or writing failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The file is not an index.
    #[error("{} is not a results index ({message}); delete it: the next run writes a new one", path.display())]
    Malformed {
        /// The file.
        path: std::path::PathBuf,
        /// The parser's message.
        message: String,
    },
}

impl ResultsIndex {
    /// The index in `results_dir`, empty when there is none yet.
    pub fn load(results_dir: &Path) -> Result<Self, IndexError> {
        let path = results_dir.join(FILE);
        match explr_io::read_if_exists(&path)? {
            Some(text) => serde_json::from_str(&text).map_err(|e| IndexError::Malformed {
                path,
                message: e.to_string(),
            }),
            None => Ok(Self::default()),
        }
    }

    /// Adds `entry`, replacing the one of the same manifest and profile.
    pub fn upsert(&mut self, entry: IndexEntry) {
        self.entries
            .retain(|e| (&e.manifest, &e.profile) != (&entry.manifest, &entry.profile));
        self.entries.push(entry);
        self.entries
            .sort_by(|a, b| (&a.manifest, &a.profile).cmp(&(&b.manifest, &b.profile)));
    }

    /// Adds `entry` to the index in `results_dir`, read and written under an exclusive lock of
    /// `results_dir/.index.lock`, so that two processes writing different manifests' results
    /// into one folder do not lose each other's entries.
    pub fn record(results_dir: &Path, entry: IndexEntry) -> Result<(), IndexError> {
        std::fs::create_dir_all(results_dir).map_err(|source| IoError {
            action: "creating",
            path: results_dir.to_path_buf(),
            source,
        })?;
        let lock_path = results_dir.join(".index.lock");
        let lock = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|source| IoError {
                action: "opening",
                path: lock_path.clone(),
                source,
            })?;
        lock.lock().map_err(|source| IoError {
            action: "locking",
            path: lock_path,
            source,
        })?;
        let mut index = Self::load(results_dir)?;
        index.upsert(entry);
        index.save(results_dir)?;
        Ok(())
    }

    /// Writes the index into `results_dir`, atomically.
    pub fn save(&self, results_dir: &Path) -> Result<(), IoError> {
        // Plain data: serializing cannot fail.
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        write_atomic(&results_dir.join(FILE), text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(manifest: &str, profile: &str, verdict: Verdict) -> IndexEntry {
        IndexEntry {
            manifest: manifest.into(),
            id: manifest.to_uppercase(),
            profile: profile.into(),
            verdict,
            golden: GoldenStatus::Match,
            checks: BTreeMap::new(),
            device: "cpu".into(),
            wall_s: 1.0,
        }
    }

    #[test]
    fn entries_are_replaced_per_manifest_and_profile_and_read_back() {
        let dir = std::env::temp_dir().join(format!("explr-index-{}", std::process::id()));
        assert_eq!(ResultsIndex::load(&dir).unwrap(), ResultsIndex::default());
        let mut index = ResultsIndex::default();
        index.upsert(entry("x1", "smoke", Verdict::Pass));
        index.upsert(entry("e3", "smoke", Verdict::Fail));
        index.upsert(entry("e3", "cpu", Verdict::Pass));
        index.upsert(entry("e3", "smoke", Verdict::Pass));
        let keys: Vec<(&str, &str, &str)> = index
            .entries
            .iter()
            .map(|e| (e.manifest.as_str(), e.profile.as_str(), e.verdict.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("e3", "cpu", "pass"),
                ("e3", "smoke", "pass"),
                ("x1", "smoke", "pass")
            ]
        );
        index.save(&dir).unwrap();
        assert_eq!(ResultsIndex::load(&dir).unwrap(), index);
        // The verdict and the golden comparison are written as words, and read back typed.
        let text = std::fs::read_to_string(dir.join(FILE)).unwrap();
        assert!(text.contains("\"verdict\": \"pass\"") && text.contains("\"golden\": \"match\""));
        let mut edited = index.clone();
        edited.entries[0].golden = GoldenStatus::NotChecked;
        edited.save(&dir).unwrap();
        let text = std::fs::read_to_string(dir.join(FILE)).unwrap();
        assert!(text.contains("\"golden\": \"not checked\""));
        assert_eq!(ResultsIndex::load(&dir).unwrap(), edited);
        std::fs::write(dir.join(FILE), "[").unwrap();
        assert!(matches!(
            ResultsIndex::load(&dir),
            Err(IndexError::Malformed { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
