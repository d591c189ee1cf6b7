//! Runs one resolved manifest: dispatches on its experiment kind and writes what it produced
//! (the resolved manifest, the summary, the metadata and the figures) under
//! `results/<manifest>/<profile>/`.

use std::path::PathBuf;
use std::time::Instant;

use serde_yaml::Value;

use crate::context::{metadata, Progress, RunnerOptions};
use crate::experiments::{exactness, scale_invariance, toy, training, RunError};
use crate::io::{remove_leftovers, write_atomic, write_json, FolderLock};
use crate::manifest::Resolved;
use crate::spec::{Experiment, Verdict};

/// The result of one manifest.
#[derive(Clone, Debug)]
pub struct ManifestOutcome {
    /// The summary (what the golden checks).
    pub summary: Value,
    /// The claim's verdict.
    pub verdict: Verdict,
    /// The verdict the profile was expected to reach (other than pass), when it says.
    pub expected: Option<Verdict>,
    /// The checks that decided it.
    pub checks: std::collections::BTreeMap<String, crate::summary::CheckResult>,
    /// Figures written.
    pub figures: Vec<PathBuf>,
    /// Wall time in seconds.
    pub wall_s: f64,
}

/// The folder of one manifest at one profile.
pub fn manifest_dir(opts: &RunnerOptions, resolved: &Resolved) -> PathBuf {
    opts.results_dir
        .join(&resolved.name)
        .join(&resolved.profile)
}

/// Runs `resolved` and writes everything under [`manifest_dir`].
pub fn run(
    resolved: &Resolved,
    opts: &RunnerOptions,
    progress: &dyn Progress,
) -> Result<ManifestOutcome, RunError> {
    let started = Instant::now();
    let dir = manifest_dir(opts, resolved);
    // One writer per results folder, for the whole run; what killed writers left is removed,
    // and the former summary is marked stale until this run writes its own.
    let _lock = FolderLock::acquire(&dir, &opts.provenance.command.join(" "))?;
    remove_leftovers(&dir)?;
    let summary_path = dir.join("summary.yaml");
    if summary_path.exists() {
        let stale = dir.join("summary.stale.yaml");
        std::fs::rename(&summary_path, &stale).map_err(|source| crate::io::IoError {
            action: "marking the former summary stale, renaming it to",
            path: stale,
            source,
        })?;
    }
    // Plain data: serializing cannot fail.
    let resolved_yaml = serde_yaml::to_string(&resolved.manifest).unwrap_or_default();
    write_atomic(
        &dir.join("manifest.resolved.yaml"),
        resolved_yaml.as_bytes(),
    )?;
    let (summary, figures) = match resolved.experiment() {
        Experiment::Toy(t) => toy::run_toy(t, &dir, progress)?,
        Experiment::Training(t) => training::run_training(t, &dir, opts, progress)?,
        Experiment::Exactness(x) => exactness::run_exactness(x, &dir, opts, progress)?,
        Experiment::ScaleInvariance(s) => {
            scale_invariance::run_scale_invariance(s, &opts.device, progress)?
        }
    };
    let id = &resolved.manifest.id;
    let value = summary.to_value(id, &resolved.profile);
    let text = serde_yaml::to_string(&value).unwrap_or_default();
    let wall_s = started.elapsed().as_secs_f64();
    let mut fields = serde_json::Map::new();
    fields.insert("manifest".into(), resolved.name.clone().into());
    fields.insert("profile".into(), resolved.profile.clone().into());
    fields.insert(
        "verdict".into(),
        value["verdict"].as_str().unwrap_or("?").into(),
    );
    write_json(&dir.join("metadata.json"), &metadata(opts, fields, wall_s))?;
    // Last: a summary exists only for a run that finished.
    write_atomic(&summary_path, text.as_bytes())?;
    let stale = dir.join("summary.stale.yaml");
    if stale.exists() {
        std::fs::remove_file(&stale).map_err(|source| crate::io::IoError {
            action: "removing",
            path: stale,
            source,
        })?;
    }
    Ok(ManifestOutcome {
        verdict: summary.verdict(),
        expected: summary.expected().map(|(v, _)| v),
        checks: summary.checks().clone(),
        summary: value,
        figures,
        wall_s,
    })
}
