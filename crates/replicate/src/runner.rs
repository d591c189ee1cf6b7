//! Runs one resolved manifest: plans its units of work (every training run, or the whole
//! experiment of another kind), hands them to an [`Executor`] (the local thread pool, or a
//! Slurm job array), and builds what they produced into the manifest's results (the resolved
//! manifest, the summary, the metadata and the figures) under `results/<manifest>/<profile>/`.
//!
//! Whichever executor ran the units, the summary is built the same way, from what the units
//! left on disk ([`collect`]): a local run collects as soon as its pool is done, a Slurm
//! submission when `explr replicate --collect` asks.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use crate::context::{metadata, Progress, RunnerOptions};
use crate::executor::{Execution, Executor, Job, Submission, Unit};
use crate::experiments::training::TrainingPlan;
use crate::experiments::{exactness, scale_invariance, toy, RunError, UnitState};
use crate::io::{remove_leftovers, write_atomic, write_json, FolderLock, IoError, LockError};
use crate::manifest::Resolved;
use crate::spec::{Experiment, SlurmSection, Verdict};
use crate::summary::Summary;

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
    /// Seconds: for a training manifest, the time its runs took to train (the sum of their
    /// epochs' recorded wall times, resumes and runs trained elsewhere included); for the other
    /// kinds, the time this process took.
    pub wall_s: f64,
    /// Whether `wall_s` is the time the manifest's work took, as a record of it wants: always
    /// for training; for the other kinds only when the experiment ran in this process (not
    /// when it was complete before and only judged again, or collected).
    pub timed: bool,
}

/// What [`run`] did.
#[derive(Debug)]
pub enum Ran {
    /// The units ran here and were collected.
    Finished(ManifestOutcome),
    /// The units were handed to a scheduler: [`collect`] them once they are done.
    Submitted(Submission),
}

/// What [`collect`] found.
#[derive(Debug)]
pub enum Collected {
    /// Every unit was complete: the manifest's results are written.
    Finished(ManifestOutcome),
    /// Some units are not complete (nothing was written): each with where it stands, the
    /// complete ones included, in plan order.
    Incomplete(Vec<(Unit, UnitState)>),
}

/// The folder of one manifest at one profile.
pub fn manifest_dir(opts: &RunnerOptions, resolved: &Resolved) -> PathBuf {
    opts.results_dir
        .join(&resolved.name)
        .join(&resolved.profile)
}

/// Runs `resolved`: its units through `executor`, then, when they ran here, [`collect`].
pub fn run(
    resolved: &Resolved,
    opts: &RunnerOptions,
    executor: &dyn Executor,
    progress: &dyn Progress,
) -> Result<Ran, RunError> {
    let started = Instant::now();
    let dir = manifest_dir(opts, resolved);
    // One writer per results folder, for the whole run (each training run also locks its own
    // folder, which a Slurm array task writes on its own); what killed writers left is
    // removed.
    let _lock = FolderLock::acquire(&dir, &opts.provenance.holder())?;
    remove_leftovers_of_stopped_writers(&dir, opts)?;
    let work = Work::plan(resolved, &dir, opts)?;
    let units = work.units();
    let resources = resources(resolved);
    let state = |unit: &Unit| work.state(unit);
    let run_unit = |unit: &Unit| work.run(unit, opts, progress);
    // Once units start (or are submitted), the former summary is stale until a collection
    // writes its own.
    let begin = || mark_summary_stale(&dir);
    // Whether this process runs the experiment, for its time: only the other kinds need it (a
    // training manifest's time is summed from its runs' records), so training runs' folders
    // are not read an extra time for it.
    let ran_here = match &work {
        Work::Training(_) => false,
        Work::Experiment { .. } => work.state(&Unit::Experiment)? != UnitState::Complete,
    };
    let job = Job {
        manifest: &resolved.name,
        profile: &resolved.profile,
        dir: &dir,
        units: &units,
        resources: &resources,
        begin: &begin,
        state: &state,
        run: &run_unit,
    };
    match executor.execute(&job)? {
        Execution::Done => match collect_planned(resolved, &work, &dir, opts, started, ran_here)? {
            Collected::Finished(outcome) => Ok(Ran::Finished(outcome)),
            Collected::Incomplete(states) => {
                let (unit, state) = states
                    .into_iter()
                    .find(|(_, s)| *s != UnitState::Complete)
                    .expect("an incomplete collection names a unit");
                Err(RunError::Incomplete {
                    unit: unit.to_string(),
                    state: state.to_string(),
                })
            }
        },
        Execution::Submitted(submission) => Ok(Ran::Submitted(submission)),
    }
}

/// Runs one unit of `resolved` (`unit`: `model/run/seed-N` of a training manifest, or
/// `experiment` for the other kinds): what a Slurm array task does. A training run locks its
/// own folder; an experiment, which writes its files into the manifest's folder, locks them
/// with `.experiment.lock` there. Nothing is summarized: [`collect`] does that once every unit
/// is complete.
pub fn run_unit(
    resolved: &Resolved,
    opts: &RunnerOptions,
    unit: &str,
    progress: &dyn Progress,
) -> Result<(), RunError> {
    let dir = manifest_dir(opts, resolved);
    let work = Work::plan(resolved, &dir, opts)?;
    let units = work.units();
    let Some(found) = units.iter().find(|u| u.to_string() == unit) else {
        return Err(RunError::UnknownUnit {
            unit: unit.to_string(),
            manifest: resolved.name.clone(),
            known: units.iter().map(Unit::to_string).collect(),
        });
    };
    work.run(found, opts, progress)
}

/// Builds the manifest's results from what its units left on disk, when every unit is
/// complete: the summary, figures and metadata, exactly as a local run writes them (a local
/// run ends with this). Otherwise writes nothing and says where each unit stands.
pub fn collect(resolved: &Resolved, opts: &RunnerOptions) -> Result<Collected, RunError> {
    let started = Instant::now();
    let dir = manifest_dir(opts, resolved);
    let _lock = FolderLock::acquire(&dir, &opts.provenance.holder())?;
    remove_leftovers_of_stopped_writers(&dir, opts)?;
    let work = Work::plan(resolved, &dir, opts)?;
    collect_planned(resolved, &work, &dir, opts, started, false)
}

/// Removes what killed writers left in the manifest's folder (held under its lock): the
/// temporary files of the manifest's own results and, unless an experiment is running right
/// now (it holds `.experiment.lock`), of the experiment's files. Training runs' folders have
/// locks of their own and are cleaned by their writers.
fn remove_leftovers_of_stopped_writers(dir: &Path, opts: &RunnerOptions) -> Result<(), RunError> {
    match FolderLock::acquire_named(dir, EXPERIMENT_LOCK, &opts.provenance.holder()) {
        Ok(_experiment) => {
            remove_leftovers(dir)?;
            Ok(())
        }
        Err(LockError::Held { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Renames the manifest's `summary.yaml`, if any, `summary.stale.yaml`.
fn mark_summary_stale(dir: &Path) -> Result<(), RunError> {
    let summary = dir.join(SUMMARY);
    if summary.exists() {
        let stale = dir.join(STALE_SUMMARY);
        std::fs::rename(&summary, &stale).map_err(|source| IoError {
            action: "marking the former summary stale, renaming it to",
            path: stale,
            source,
        })?;
    }
    Ok(())
}

const SUMMARY: &str = "summary.yaml";
/// The lock of an experiment's files in the manifest's folder (its writer: the local run, or
/// the array task that runs it).
const EXPERIMENT_LOCK: &str = ".experiment.lock";
const STALE_SUMMARY: &str = "summary.stale.yaml";
/// What an experiment of a kind other than training leaves for [`collect`].
const EXPERIMENT_RESULT: &str = "experiment.yaml";

fn collect_planned(
    resolved: &Resolved,
    work: &Work<'_>,
    dir: &Path,
    opts: &RunnerOptions,
    started: Instant,
    ran_here: bool,
) -> Result<Collected, RunError> {
    let states = work
        .units()
        .into_iter()
        .map(|u| {
            let s = work.state(&u)?;
            Ok((u, s))
        })
        .collect::<Result<Vec<_>, RunError>>()?;
    if states.iter().any(|(_, s)| *s != UnitState::Complete) {
        return Ok(Collected::Incomplete(states));
    }
    // The manifest's results, the summary last: the resolved manifest, the figures, the
    // metadata. Plain data: serializing cannot fail.
    let resolved_yaml = serde_yaml::to_string(&resolved.manifest).unwrap_or_default();
    write_atomic(
        &dir.join("manifest.resolved.yaml"),
        resolved_yaml.as_bytes(),
    )?;
    let (summary, figures, trained_s) = work.summarize()?;
    let id = &resolved.manifest.id;
    let value = summary.to_value(id, &resolved.profile);
    let text = serde_yaml::to_string(&value).unwrap_or_default();
    let (wall_s, timed) = match trained_s {
        Some(trained_s) => (trained_s, true),
        None => (started.elapsed().as_secs_f64(), ran_here),
    };
    let mut fields = serde_json::Map::new();
    fields.insert("manifest".into(), resolved.name.clone().into());
    fields.insert("profile".into(), resolved.profile.clone().into());
    fields.insert(
        "verdict".into(),
        value["verdict"].as_str().unwrap_or("?").into(),
    );
    write_json(&dir.join("metadata.json"), &metadata(opts, fields, wall_s))?;
    // Last: a summary exists only for a manifest whose units all finished.
    write_atomic(&dir.join(SUMMARY), text.as_bytes())?;
    let stale = dir.join(STALE_SUMMARY);
    if stale.exists() {
        std::fs::remove_file(&stale).map_err(|source| IoError {
            action: "removing",
            path: stale,
            source,
        })?;
    }
    Ok(Collected::Finished(ManifestOutcome {
        verdict: summary.verdict(),
        expected: summary.expected().map(|(v, _)| v),
        checks: summary.checks().clone(),
        summary: value,
        figures,
        wall_s,
        timed,
    }))
}

/// A manifest's work, planned.
enum Work<'a> {
    /// Training runs, each a unit.
    Training(Box<TrainingPlan>),
    /// One experiment of another kind: a single unit.
    Experiment {
        resolved: &'a Resolved,
        dir: PathBuf,
    },
}

/// What an experiment of a kind other than training produced (`experiment.yaml`), for
/// [`collect`]: its summary before rounding and its figures, with the fingerprint of the
/// section it ran, so that a manifest edited since does not pass for it.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExperimentResult {
    config: String,
    summary: Summary,
    /// File names in the manifest's folder.
    figures: Vec<String>,
}

impl<'a> Work<'a> {
    fn plan(resolved: &'a Resolved, dir: &Path, opts: &RunnerOptions) -> Result<Self, RunError> {
        Ok(match resolved.experiment() {
            Experiment::Training(t) => Work::Training(Box::new(TrainingPlan::new(t, dir, opts)?)),
            _ => Work::Experiment {
                resolved,
                dir: dir.to_path_buf(),
            },
        })
    }

    fn units(&self) -> Vec<Unit> {
        match self {
            Work::Training(plan) => plan.runs().into_iter().map(Unit::Run).collect(),
            Work::Experiment { .. } => vec![Unit::Experiment],
        }
    }

    fn state(&self, unit: &Unit) -> Result<UnitState, RunError> {
        match (self, unit) {
            (Work::Training(plan), Unit::Run(id)) => plan.state(id),
            (Work::Experiment { dir, .. }, Unit::Experiment) => {
                if let Some(holder) = FolderLock::holder_named(dir, EXPERIMENT_LOCK)? {
                    return Ok(UnitState::Busy { holder });
                }
                Ok(match self.experiment_result()? {
                    Some(_) => UnitState::Complete,
                    None => UnitState::NotStarted,
                })
            }
            _ => unreachable!("units come from the same plan"),
        }
    }

    fn run(
        &self,
        unit: &Unit,
        opts: &RunnerOptions,
        progress: &dyn Progress,
    ) -> Result<(), RunError> {
        match (self, unit) {
            (Work::Training(plan), Unit::Run(id)) => plan.train(id, opts, progress),
            (Work::Experiment { resolved, dir }, Unit::Experiment) => {
                let _lock =
                    FolderLock::acquire_named(dir, EXPERIMENT_LOCK, &opts.provenance.holder())?;
                let (summary, figures) = match resolved.experiment() {
                    Experiment::Toy(t) => toy::run_toy(t, dir, progress)?,
                    Experiment::Exactness(x) => exactness::run_exactness(x, dir, opts, progress)?,
                    Experiment::ScaleInvariance(s) => {
                        scale_invariance::run_scale_invariance(s, &opts.device, progress)?
                    }
                    Experiment::Training(_) => unreachable!("planned as Work::Training"),
                };
                let result = ExperimentResult {
                    config: experiment_fingerprint(resolved),
                    summary,
                    figures: figures
                        .iter()
                        .filter_map(|f| f.file_name())
                        .map(|f| f.to_string_lossy().into_owned())
                        .collect(),
                };
                // Plain data: serializing cannot fail (YAML keeps NaN and every f64 bit).
                let text = serde_yaml::to_string(&result).unwrap_or_default();
                write_atomic(&dir.join(EXPERIMENT_RESULT), text.as_bytes())?;
                Ok(())
            }
            _ => unreachable!("units come from the same plan"),
        }
    }

    /// The experiment's result on disk when it is there, reads, and belongs to this
    /// manifest's section.
    fn experiment_result(&self) -> Result<Option<ExperimentResult>, RunError> {
        let Work::Experiment { resolved, dir } = self else {
            return Ok(None);
        };
        let path = dir.join(EXPERIMENT_RESULT);
        let Some(text) = crate::io::read_if_exists(&path)? else {
            return Ok(None);
        };
        Ok(serde_yaml::from_str::<ExperimentResult>(&text)
            .ok()
            .filter(|r| r.config == experiment_fingerprint(resolved)))
    }

    /// The summary, the figures and, for training, the time the runs took to train.
    fn summarize(&self) -> Result<(Summary, Vec<PathBuf>, Option<f64>), RunError> {
        match self {
            Work::Training(plan) => {
                let (summary, figures, trained_s) = plan.summarize()?;
                Ok((summary, figures, Some(trained_s)))
            }
            Work::Experiment { dir, .. } => {
                let result = self
                    .experiment_result()?
                    .ok_or_else(|| RunError::Incomplete {
                        unit: Unit::Experiment.to_string(),
                        state: UnitState::NotStarted.to_string(),
                    })?;
                let figures = result.figures.iter().map(|f| dir.join(f)).collect();
                Ok((result.summary, figures, None))
            }
        }
    }
}

/// The fingerprint of the experiment section `resolved` runs (its kind and every field).
fn experiment_fingerprint(resolved: &Resolved) -> String {
    // Plain data: serializing cannot fail.
    let text = match resolved.experiment() {
        Experiment::Training(t) => serde_json::to_string(t),
        Experiment::Exactness(x) => serde_json::to_string(x),
        Experiment::ScaleInvariance(s) => serde_json::to_string(s),
        Experiment::Toy(t) => serde_json::to_string(t),
    }
    .unwrap_or_default();
    crate::io::fingerprint(&text)
}

/// The resources of one Slurm task of `resolved` (its `slurm` section at its profile, else
/// the defaults).
fn resources(resolved: &Resolved) -> SlurmSection {
    resolved.manifest.slurm.clone().unwrap_or_default()
}
