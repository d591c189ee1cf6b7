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

use serde_yaml::Value;

use explr_execute::executor::{Execution, Executor, Job, Submission, UnitKey, UnitState};
use explr_experiments::{Experiment, ExperimentError, Summarized, EXPERIMENT_LOCK};
use explr_io::{remove_leftovers, write_atomic, write_json, FolderLock, IoError, LockError};
use explr_manifest::manifest::Resolved;
use explr_manifest::spec::{SlurmSection, Verdict};
use explr_train::context::{metadata, Progress, RunnerOptions};

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
    pub checks: std::collections::BTreeMap<String, explr_results::summary::CheckResult>,
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

/// What [`run`] or [`collect`] did with a manifest.
#[derive(Debug)]
pub enum Outcome {
    /// Every unit was complete: the manifest's results are written.
    Finished(ManifestOutcome),
    /// The units were handed to a scheduler ([`run`] with a Slurm array): [`collect`] them
    /// once they are done.
    Submitted(Submission),
    /// Some units are not complete ([`collect`]; nothing was written): each with where it
    /// stands, the complete ones included, in plan order.
    Incomplete(Vec<(UnitKey, UnitState)>),
}

/// The folder of one manifest at one profile.
pub fn manifest_dir(opts: &RunnerOptions, resolved: &Resolved) -> PathBuf {
    opts.results_dir
        .join(&resolved.name)
        .join(&resolved.profile)
}

/// Runs `resolved`: its units through `executor`, then, when they ran here, [`collect`]. A
/// local run that ends with a unit incomplete is an error ([`ExperimentError::Incomplete`]).
pub fn run(
    resolved: &Resolved,
    opts: &RunnerOptions,
    executor: &dyn Executor<ExperimentError>,
    progress: &dyn Progress,
) -> Result<Outcome, ExperimentError> {
    let started = Instant::now();
    let dir = manifest_dir(opts, resolved);
    // One writer per results folder, for the whole run (each training run also locks its own
    // folder, which a Slurm array task writes on its own); what killed writers left is
    // removed.
    let _lock = FolderLock::acquire(&dir, &opts.provenance.holder())?;
    remove_leftovers_of_stopped_writers(&dir, opts)?;
    let experiment = explr_experiments::plan(resolved, &dir, opts)?;
    let units = experiment.units();
    let resources = resources(resolved);
    let state = |unit: &UnitKey| experiment.state(unit);
    let run_unit = |unit: &UnitKey| experiment.run(unit, opts, progress);
    // Once units start (or are submitted), the former summary is stale until a collection
    // writes its own.
    let begin = || mark_summary_stale(&dir);
    let ran_here = runs_here(experiment.as_ref(), &units)?;
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
        Execution::Done => {
            let outcome =
                collect_planned(resolved, experiment.as_ref(), &dir, opts, started, ran_here)?;
            if let Outcome::Incomplete(states) = &outcome {
                if let Some((unit, state)) = states.iter().find(|(_, s)| *s != UnitState::Complete)
                {
                    return Err(ExperimentError::Incomplete {
                        unit: unit.to_string(),
                        state: state.to_string(),
                    });
                }
            }
            Ok(outcome)
        }
        Execution::Submitted(submission) => Ok(Outcome::Submitted(submission)),
    }
}

/// Whether this process runs the experiment, for its time: only the kinds whose time is not
/// summed from records need it (a training manifest's time comes from its runs' records, so
/// their folders are not read an extra time for it).
fn runs_here(experiment: &dyn Experiment, units: &[UnitKey]) -> Result<bool, ExperimentError> {
    if experiment.timed_by_records() {
        return Ok(false);
    }
    for unit in units {
        if experiment.state(unit)? != UnitState::Complete {
            return Ok(true);
        }
    }
    Ok(false)
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
) -> Result<(), ExperimentError> {
    let dir = manifest_dir(opts, resolved);
    let experiment = explr_experiments::plan(resolved, &dir, opts)?;
    // A key the manifest does not have is the experiment's to refuse
    // (`ExperimentError::UnknownUnit`, naming its units).
    experiment.run(&UnitKey(unit.to_string()), opts, progress)
}

/// Builds the manifest's results from what its units left on disk, when every unit is
/// complete: the summary, figures and metadata, exactly as a local run writes them (a local
/// run ends with this). Otherwise writes nothing and says where each unit stands
/// ([`Outcome::Incomplete`]).
pub fn collect(resolved: &Resolved, opts: &RunnerOptions) -> Result<Outcome, ExperimentError> {
    let started = Instant::now();
    let dir = manifest_dir(opts, resolved);
    let _lock = FolderLock::acquire(&dir, &opts.provenance.holder())?;
    remove_leftovers_of_stopped_writers(&dir, opts)?;
    let experiment = explr_experiments::plan(resolved, &dir, opts)?;
    collect_planned(resolved, experiment.as_ref(), &dir, opts, started, false)
}

/// Removes what killed writers left in the manifest's folder (held under its lock): the
/// temporary files of the manifest's own results and, unless an experiment is running right
/// now (it holds `.experiment.lock`), of the experiment's files. Training runs' folders have
/// locks of their own and are cleaned by their writers.
fn remove_leftovers_of_stopped_writers(
    dir: &Path,
    opts: &RunnerOptions,
) -> Result<(), ExperimentError> {
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
fn mark_summary_stale(dir: &Path) -> Result<(), ExperimentError> {
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
const STALE_SUMMARY: &str = "summary.stale.yaml";

fn collect_planned(
    resolved: &Resolved,
    experiment: &dyn Experiment,
    dir: &Path,
    opts: &RunnerOptions,
    started: Instant,
    ran_here: bool,
) -> Result<Outcome, ExperimentError> {
    let states = experiment
        .units()
        .into_iter()
        .map(|u| {
            let s = experiment.state(&u)?;
            Ok((u, s))
        })
        .collect::<Result<Vec<_>, ExperimentError>>()?;
    if states.iter().any(|(_, s)| *s != UnitState::Complete) {
        return Ok(Outcome::Incomplete(states));
    }
    // The manifest's results, the summary last: the resolved manifest, the figures, the
    // metadata. Plain data: serializing cannot fail.
    let resolved_yaml = serde_yaml::to_string(&resolved.manifest).unwrap_or_default();
    write_atomic(
        &dir.join("manifest.resolved.yaml"),
        resolved_yaml.as_bytes(),
    )?;
    let Summarized {
        summary,
        figures,
        trained_s,
    } = experiment.summarize()?;
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
    fields.insert("verdict".into(), summary.verdict().as_str().into());
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
    Ok(Outcome::Finished(ManifestOutcome {
        verdict: summary.verdict(),
        expected: summary.expected().map(|(v, _)| v),
        checks: summary.checks().clone(),
        summary: value,
        figures,
        wall_s,
        timed,
    }))
}

/// The resources of one Slurm task of `resolved` (its `slurm` section at its profile, else
/// the defaults).
fn resources(resolved: &Resolved) -> SlurmSection {
    resolved.manifest.slurm.clone().unwrap_or_default()
}
