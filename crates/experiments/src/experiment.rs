//! [`Experiment`]: a manifest's work as the runner sees it, one implementation per kind of
//! work: [`TrainingPlan`] (a unit per training run) and [`OneProcess`] (exactness, scale
//! invariance and the toy example, each one unit run in one process).

use std::path::{Path, PathBuf};

use explr_execute::executor::{UnitKey, UnitState};
use explr_io::{read_if_exists, write_atomic, FolderLock};
use explr_manifest::manifest::Resolved;
use explr_manifest::spec::{self, Exactness, ScaleInvariance, Toy};
use explr_results::summary::Summary;
use explr_train::context::{Progress, RunnerOptions};
use serde::{Deserialize, Serialize};

use crate::training::TrainingPlan;
use crate::{exactness, scale_invariance, toy, ExperimentError};

/// A manifest's work, planned: its units, where each stands on disk, how to run one (here, or
/// in a Slurm array task), and its summary once every unit is complete.
pub trait Experiment: Sync {
    /// Every unit, in plan order (a unit's index is its Slurm array index).
    fn units(&self) -> Vec<UnitKey>;
    /// Where `unit` stands, from what is on disk.
    fn state(&self, unit: &UnitKey) -> Result<UnitState, ExperimentError>;
    /// Runs `unit` in this process.
    fn run(
        &self,
        unit: &UnitKey,
        opts: &RunnerOptions,
        progress: &dyn Progress,
    ) -> Result<(), ExperimentError>;
    /// The summary and figures, from what the (complete) units left on disk.
    fn summarize(&self) -> Result<Summarized, ExperimentError>;
    /// Whether its time is summed from its units' records ([`Summarized::trained_s`]) rather
    /// than measured by the process that runs it.
    fn timed_by_records(&self) -> bool {
        false
    }
}

/// What [`Experiment::summarize`] gives.
#[derive(Debug)]
pub struct Summarized {
    /// The summary before rounding.
    pub summary: Summary,
    /// The figures written.
    pub figures: Vec<PathBuf>,
    /// For training, the seconds its runs took to train, summed from their epochs' records
    /// (resumes and runs trained elsewhere included); `None` for the kinds whose time is the
    /// time this process took.
    pub trained_s: Option<f64>,
}

/// The manifest's work: a [`TrainingPlan`] for training, a [`OneProcess`] for the other kinds.
/// Results go under `dir`.
pub fn plan<'a>(
    resolved: &'a Resolved,
    dir: &Path,
    opts: &RunnerOptions,
) -> Result<Box<dyn Experiment + 'a>, ExperimentError> {
    let name = resolved.name.as_str();
    Ok(match resolved.experiment() {
        spec::Experiment::Training(t) => Box::new(TrainingPlan::new(t, name, dir, opts)?),
        spec::Experiment::Exactness(x) => OneProcess::boxed(name, x, dir),
        spec::Experiment::ScaleInvariance(s) => OneProcess::boxed(name, s, dir),
        spec::Experiment::Toy(t) => OneProcess::boxed(name, t, dir),
    })
}

/// The lock of an experiment's files in the manifest's folder (its writer: the local run, or
/// the array task that runs it).
pub const EXPERIMENT_LOCK: &str = ".experiment.lock";
/// What an experiment run in one process leaves for the summary.
const EXPERIMENT_RESULT: &str = "experiment.yaml";
/// The one unit of a [`OneProcess`] experiment.
const EXPERIMENT_UNIT: &str = "experiment";

/// A kind of experiment that runs whole in one process: its section of the manifest.
pub trait OneProcessKind: Serialize + Sync {
    /// Runs it, writing its figures into `dir`: the summary before rounding and the figures.
    fn run(
        &self,
        dir: &Path,
        opts: &RunnerOptions,
        progress: &dyn Progress,
    ) -> Result<(Summary, Vec<PathBuf>), ExperimentError>;
}

impl OneProcessKind for Exactness {
    fn run(
        &self,
        dir: &Path,
        opts: &RunnerOptions,
        progress: &dyn Progress,
    ) -> Result<(Summary, Vec<PathBuf>), ExperimentError> {
        exactness::run_exactness(self, dir, opts, progress)
    }
}

impl OneProcessKind for ScaleInvariance {
    fn run(
        &self,
        _dir: &Path,
        opts: &RunnerOptions,
        progress: &dyn Progress,
    ) -> Result<(Summary, Vec<PathBuf>), ExperimentError> {
        scale_invariance::run_scale_invariance(self, &opts.device, progress)
    }
}

impl OneProcessKind for Toy {
    fn run(
        &self,
        dir: &Path,
        _opts: &RunnerOptions,
        progress: &dyn Progress,
    ) -> Result<(Summary, Vec<PathBuf>), ExperimentError> {
        toy::run_toy(self, dir, progress)
    }
}

/// An experiment of a kind that runs whole in one process, as one unit (`experiment`): its
/// result (`experiment.yaml`) is written under `.experiment.lock` in the manifest's folder and
/// read back for the summary.
pub struct OneProcess<'a, K> {
    /// The manifest's name (its file stem).
    pub manifest: &'a str,
    /// The manifest's section.
    pub kind: &'a K,
    /// The manifest's results folder.
    pub dir: PathBuf,
}

/// What an experiment run in one process produced (`experiment.yaml`): its summary before
/// rounding and its figures, with the fingerprint of the section it ran, so that a manifest
/// edited since does not pass for it.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExperimentResult {
    config: String,
    summary: Summary,
    /// File names in the manifest's folder.
    figures: Vec<String>,
}

impl<'a, K: OneProcessKind> OneProcess<'a, K> {
    /// The experiment of section `kind` of manifest `manifest`, into `dir`.
    fn boxed(manifest: &'a str, kind: &'a K, dir: &Path) -> Box<dyn Experiment + 'a> {
        Box::new(Self {
            manifest,
            kind,
            dir: dir.to_path_buf(),
        })
    }

    /// The fingerprint of the section (every field).
    fn config(&self) -> String {
        // Plain data: serializing cannot fail.
        explr_io::fingerprint(&serde_json::to_string(self.kind).unwrap_or_default())
    }

    /// The result on disk when it is there, reads, and belongs to this section.
    fn result(&self) -> Result<Option<ExperimentResult>, ExperimentError> {
        let Some(text) = read_if_exists(&self.dir.join(EXPERIMENT_RESULT))? else {
            return Ok(None);
        };
        Ok(serde_yaml::from_str::<ExperimentResult>(&text)
            .ok()
            .filter(|r| r.config == self.config()))
    }

    fn check_unit(&self, unit: &UnitKey) -> Result<(), ExperimentError> {
        if unit.0 == EXPERIMENT_UNIT {
            Ok(())
        } else {
            Err(ExperimentError::UnknownUnit {
                unit: unit.to_string(),
                manifest: self.manifest.to_string(),
                known: vec![EXPERIMENT_UNIT.into()],
            })
        }
    }
}

impl<K: OneProcessKind> Experiment for OneProcess<'_, K> {
    fn units(&self) -> Vec<UnitKey> {
        vec![UnitKey(EXPERIMENT_UNIT.into())]
    }

    fn state(&self, unit: &UnitKey) -> Result<UnitState, ExperimentError> {
        self.check_unit(unit)?;
        if let Some(holder) = FolderLock::holder_named(&self.dir, EXPERIMENT_LOCK)? {
            return Ok(UnitState::Busy { holder });
        }
        Ok(match self.result()? {
            Some(_) => UnitState::Complete,
            None => UnitState::NotStarted,
        })
    }

    fn run(
        &self,
        unit: &UnitKey,
        opts: &RunnerOptions,
        progress: &dyn Progress,
    ) -> Result<(), ExperimentError> {
        self.check_unit(unit)?;
        let _lock =
            FolderLock::acquire_named(&self.dir, EXPERIMENT_LOCK, &opts.provenance.holder())?;
        let (summary, figures) = self.kind.run(&self.dir, opts, progress)?;
        let result = ExperimentResult {
            config: self.config(),
            summary,
            figures: figures
                .iter()
                .filter_map(|f| f.file_name())
                .map(|f| f.to_string_lossy().into_owned())
                .collect(),
        };
        // Plain data: serializing cannot fail (YAML keeps NaN and every f64 bit).
        let text = serde_yaml::to_string(&result).unwrap_or_default();
        write_atomic(&self.dir.join(EXPERIMENT_RESULT), text.as_bytes())?;
        Ok(())
    }

    fn summarize(&self) -> Result<Summarized, ExperimentError> {
        let result = self.result()?.ok_or_else(|| ExperimentError::Incomplete {
            unit: EXPERIMENT_UNIT.into(),
            state: UnitState::NotStarted.to_string(),
        })?;
        Ok(Summarized {
            summary: result.summary,
            figures: result.figures.iter().map(|f| self.dir.join(f)).collect(),
            trained_s: None,
        })
    }
}

impl Experiment for TrainingPlan {
    fn units(&self) -> Vec<UnitKey> {
        self.runs()
            .into_iter()
            .map(|id| UnitKey(id.to_string()))
            .collect()
    }

    fn state(&self, unit: &UnitKey) -> Result<UnitState, ExperimentError> {
        self.run_state(&self.run_id(unit)?)
    }

    fn run(
        &self,
        unit: &UnitKey,
        opts: &RunnerOptions,
        progress: &dyn Progress,
    ) -> Result<(), ExperimentError> {
        self.train(&self.run_id(unit)?, opts, progress)
    }

    fn summarize(&self) -> Result<Summarized, ExperimentError> {
        let (summary, figures, trained_s) = self.summarize_runs()?;
        Ok(Summarized {
            summary,
            figures,
            trained_s: Some(trained_s),
        })
    }

    fn timed_by_records(&self) -> bool {
        true
    }
}
