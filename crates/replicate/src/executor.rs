//! How a manifest's units of work are executed, behind one trait, [`Executor`]:
//!
//! - [`LocalPool`] (the default, `--jobs N`): threads of this process, one unit each at a time;
//! - [`SlurmArray`] (`--executor slurm`): a Slurm job array, one task per unit that is not
//!   complete yet, each running `explr replicate --task UNIT --resume`.
//!
//! A unit ([`Unit`]) is one training run (manifest, model, run, seed: controls are runs too),
//! or the whole experiment of another kind. The runner builds the [`Job`] (the units, how to
//! run one, where each stands) and, once the units are done, collects their results the same
//! way whichever executor ran them.

use std::path::{Path, PathBuf};

use crate::experiments::training::RunId;
use crate::experiments::{RunError, UnitState};
use crate::slurm::{self, ArrayScript, SlurmError, SubmissionRecord, TaskCommand};
use crate::spec::SlurmSection;

/// One unit of a manifest's work: what one Slurm array task runs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unit {
    /// One training run.
    Run(RunId),
    /// The whole experiment of a kind other than training (exactness, scale invariance, toy),
    /// which runs in one process.
    Experiment,
}

impl std::fmt::Display for Unit {
    /// The unit's key: `model/run/seed-N`, or `experiment` (`explr replicate --task KEY`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unit::Run(id) => id.fmt(f),
            Unit::Experiment => f.write_str("experiment"),
        }
    }
}

/// A manifest's work, as an executor sees it.
pub struct Job<'a> {
    /// The manifest's file stem (`e3`).
    pub manifest: &'a str,
    /// The profile.
    pub profile: &'a str,
    /// The manifest's results folder.
    pub dir: &'a Path,
    /// Every unit, in plan order: a unit's index is its Slurm array index.
    pub units: &'a [Unit],
    /// What one Slurm task asks for (the manifest's `slurm` section at this profile).
    pub resources: &'a SlurmSection,
    /// To be called once, before any unit runs here or once units are submitted (it marks the
    /// manifest's former summary stale); not when nothing runs.
    pub begin: &'a (dyn Fn() -> Result<(), RunError> + Sync),
    /// Where a unit stands on disk.
    pub state: &'a (dyn Fn(&Unit) -> Result<UnitState, RunError> + Sync),
    /// Runs a unit in this process.
    pub run: &'a (dyn Fn(&Unit) -> Result<(), RunError> + Sync),
}

/// What an executor did with a job.
#[derive(Debug)]
pub enum Execution {
    /// Every unit ran, here: its results are on disk.
    Done,
    /// The units were handed to a scheduler.
    Submitted(Submission),
}

/// A job array written (and submitted, unless only emitted).
#[derive(Debug)]
pub struct Submission {
    /// The job-array script.
    pub script: PathBuf,
    /// The Slurm job id; `None` when the script was only written (`--emit-only`) or there was
    /// nothing to submit.
    pub job_id: Option<String>,
    /// The tasks: array index and unit.
    pub tasks: Vec<(usize, String)>,
    /// Units left alone because they are complete.
    pub complete: usize,
    /// Units left alone because they are running or queued: the unit and why.
    pub active: Vec<(String, String)>,
}

/// Executes a manifest's units.
pub trait Executor {
    /// Runs the units of `job` (or hands them to a scheduler).
    fn execute(&self, job: &Job<'_>) -> Result<Execution, RunError>;
}

/// Threads of this process: up to `jobs` units at once, each from the start (or from its
/// checkpoint with `--resume`).
#[derive(Clone, Copy, Debug)]
pub struct LocalPool {
    /// Units at once (at least 1).
    pub jobs: usize,
}

impl Executor for LocalPool {
    fn execute(&self, job: &Job<'_>) -> Result<Execution, RunError> {
        (job.begin)()?;
        parallel_map(job.units, self.jobs, |u| (job.run)(u), Unit::to_string)?;
        Ok(Execution::Done)
    }
}

/// Maps `f` over `items` on up to `jobs` threads, keeping order; the first error wins. `name`
/// says which item a thread that panicked was working on.
fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    jobs: usize,
    f: impl Fn(&T) -> Result<R, RunError> + Sync,
    name: impl Fn(&T) -> String,
) -> Result<Vec<R>, RunError> {
    if jobs <= 1 || items.len() <= 1 {
        return items.iter().map(&f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<std::sync::Mutex<Option<Result<R, RunError>>>> =
        items.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(items.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= items.len() {
                    break;
                }
                let r = f(&items[i]);
                if let Ok(mut slot) = slots[i].lock() {
                    *slot = Some(r);
                }
            });
        }
    });
    slots
        .into_iter()
        .zip(items)
        .map(|(s, item)| {
            s.into_inner()
                .ok()
                .flatten()
                .unwrap_or_else(|| Err(RunError::WorkerPanicked { run: name(item) }))
        })
        .collect()
}

/// A Slurm job array per manifest: one task per unit that is neither complete nor already
/// running or queued, each running [`TaskCommand`] for its unit with `--resume` (a requeued
/// task continues from its checkpoint). The script goes to `<manifest folder>/slurm/array.sbatch`,
/// the tasks' logs to `slurm/logs/<job>_<index>.out`, and each submission is recorded in
/// `slurm/submissions.json` (what `--collect` reports failed tasks from).
#[derive(Clone, Debug)]
pub struct SlurmArray {
    /// The command every task runs, before `--task UNIT`.
    pub command: TaskCommand,
    /// GPUs per task (`--gres=gpu:N`; 1 for `--device cuda`, 0 on the CPU).
    pub gpus: u32,
    /// `sbatch` options from the command line (`--slurm-opt KEY=VALUE`), over the manifest's.
    pub overrides: Vec<(String, String)>,
    /// Write the scripts only, submit nothing (`--emit-only`).
    pub emit_only: bool,
    /// The device the tasks run on, as the command line names it (recorded per submission).
    pub device: String,
}

impl Executor for SlurmArray {
    fn execute(&self, job: &Job<'_>) -> Result<Execution, RunError> {
        let folder = slurm::folder(job.dir);
        let submitted = SubmissionRecord::read_all(&folder)?;
        // Tasks of earlier submissions still queued or running (only asked when there were
        // any: writing a script needs no Slurm).
        let queued = if submitted.is_empty() || self.emit_only {
            Default::default()
        } else {
            slurm::active_tasks(&submitted)?
        };
        let mut pending = Vec::new();
        let (mut complete, mut active, mut unusable) = (0, Vec::new(), Vec::new());
        for (index, unit) in job.units.iter().enumerate() {
            let key = unit.to_string();
            match (job.state)(unit)? {
                UnitState::Complete => complete += 1,
                UnitState::Busy { holder } => active.push((key, format!("running ({holder})"))),
                UnitState::Unusable { reason } => unusable.push((key, reason)),
                UnitState::Partial { .. } | UnitState::NotStarted => match queued.get(&key) {
                    Some(task) => active.push((key, task.clone())),
                    None => pending.push(index),
                },
            }
        }
        if !unusable.is_empty() {
            return Err(SlurmError::Unusable {
                dir: job.dir.to_path_buf(),
                units: unusable,
            }
            .into());
        }
        let script_path = folder.join(slurm::SCRIPT);
        let tasks: Vec<(usize, String)> = pending
            .iter()
            .map(|&i| (i, job.units[i].to_string()))
            .collect();
        if tasks.is_empty() {
            return Ok(Execution::Submitted(Submission {
                script: script_path,
                job_id: None,
                tasks,
                complete,
                active,
            }));
        }
        let keys: Vec<String> = job.units.iter().map(Unit::to_string).collect();
        let script = ArrayScript {
            manifest: job.manifest,
            profile: job.profile,
            dir: job.dir,
            units: &keys,
            pending: &pending,
            resources: job.resources,
            gpus: self.gpus,
            overrides: &self.overrides,
            command: &self.command,
        };
        let text = script.render()?;
        crate::io::write_atomic(&script_path, text.as_bytes())?;
        let logs = folder.join(slurm::LOGS);
        std::fs::create_dir_all(&logs).map_err(|source| crate::io::IoError {
            action: "creating",
            path: logs,
            source,
        })?;
        let job_id = if self.emit_only {
            None
        } else {
            let id = slurm::sbatch(&script_path)?;
            SubmissionRecord {
                job_id: id.clone(),
                script: script_path.clone(),
                device: self.device.clone(),
                submitted_unix_s: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                tasks: tasks.iter().cloned().collect(),
            }
            .append(&folder)?;
            (job.begin)()?;
            Some(id)
        };
        Ok(Execution::Submitted(Submission {
            script: script_path,
            job_id,
            tasks,
            complete,
            active,
        }))
    }
}
