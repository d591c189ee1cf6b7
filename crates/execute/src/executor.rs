//! How a manifest's units of work are executed, behind one trait, [`Executor`]:
//!
//! - [`LocalPool`] (the default, `--jobs N`): threads of this process, one unit each at a time;
//! - [`SlurmArray`] (`--executor slurm`): a Slurm job array, one task per unit that is not
//!   complete yet, each running `explr replicate --task UNIT --resume`.
//!
//! A unit is opaque here ([`UnitKey`]): the experiment says what its units are (a training run,
//! or the whole experiment of another kind), where each stands ([`UnitState`]) and how to run
//! one. The runner builds the [`Job`] from it and, once the units are done, collects their
//! results the same way whichever executor ran them. A unit's failure passes through as the
//! job's own error type; [`ExecError`] is the executors' own.

use std::path::{Path, PathBuf};

use crate::slurm::{self, ArrayScript, SlurmError, SubmissionRecord, TaskCommand};
use explr_io::IoError;
use explr_manifest::spec::SlurmSection;

/// One unit of a manifest's work, as executors see it: its key (`model/run/seed-N` for a
/// training run, `experiment` for an experiment of another kind), which is also what one Slurm
/// array task runs (`explr replicate --task KEY`). What the unit is belongs to the experiment.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnitKey(pub String);

impl std::fmt::Display for UnitKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where one unit of a manifest's work stands, as its folder shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnitState {
    /// Finished: its results are on disk and verify.
    Complete,
    /// `epoch` of `epochs` epochs trained: a resume continues from its checkpoint.
    Partial {
        /// Epochs done.
        epoch: usize,
        /// Epochs of the run.
        epochs: usize,
    },
    /// Nothing usable on disk yet.
    NotStarted,
    /// Another process holds its folder's lock: it is running, here or on another node.
    Busy {
        /// The holder, as its lock file names it (pid, command line, host).
        holder: String,
    },
    /// What is on disk cannot be resumed (written by another configuration, inconsistent, or
    /// finished without a file it needs).
    Unusable {
        /// What is wrong.
        reason: String,
    },
}

impl std::fmt::Display for UnitState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Complete => write!(f, "complete"),
            Self::Partial { epoch, epochs } => {
                write!(f, "partial: {epoch} of {epochs} epochs checkpointed")
            }
            Self::NotStarted => write!(f, "not started"),
            Self::Busy { holder } => write!(f, "running ({holder})"),
            Self::Unusable { reason } => write!(f, "unusable: {reason}"),
        }
    }
}

/// Why an executor could not run or submit a job's units (a unit's own failure is the job's
/// error type, passed through).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// Submitting to Slurm, or reading what was submitted, failed.
    #[error(transparent)]
    Slurm(#[from] SlurmError),
    /// Writing the array script or its logs folder failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// A worker thread running independent units panicked (a bug: please report it).
    #[error("the worker thread running {unit} panicked")]
    WorkerPanicked {
        /// The unit it was running.
        unit: String,
    },
}

/// A manifest's work, as an executor sees it.
pub struct Job<'a, E> {
    /// The manifest's file stem (`e3`).
    pub manifest: &'a str,
    /// The profile.
    pub profile: &'a str,
    /// The manifest's results folder.
    pub dir: &'a Path,
    /// Every unit, in plan order: a unit's index is its Slurm array index.
    pub units: &'a [UnitKey],
    /// What one Slurm task asks for (the manifest's `slurm` section at this profile).
    pub resources: &'a SlurmSection,
    /// To be called once, before any unit runs here or once units are submitted (it marks the
    /// manifest's former summary stale); not when nothing runs.
    pub begin: &'a (dyn Fn() -> Result<(), E> + Sync),
    /// Where a unit stands on disk.
    pub state: &'a (dyn Fn(&UnitKey) -> Result<UnitState, E> + Sync),
    /// Runs a unit in this process.
    pub run: &'a (dyn Fn(&UnitKey) -> Result<(), E> + Sync),
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

/// Executes a manifest's units; `E` is the error type of the jobs it runs.
pub trait Executor<E> {
    /// Runs the units of `job` (or hands them to a scheduler).
    fn execute(&self, job: &Job<'_, E>) -> Result<Execution, E>;
}

/// Threads of this process: up to `jobs` units at once, each from the start (or from its
/// checkpoint with `--resume`).
#[derive(Clone, Copy, Debug)]
pub struct LocalPool {
    /// Units at once (at least 1).
    pub jobs: usize,
}

impl<E: From<ExecError> + Send> Executor<E> for LocalPool {
    fn execute(&self, job: &Job<'_, E>) -> Result<Execution, E> {
        (job.begin)()?;
        parallel_map(job.units, self.jobs, |u| (job.run)(u), UnitKey::to_string)?;
        Ok(Execution::Done)
    }
}

/// Maps `f` over `items` on up to `jobs` threads, keeping order; the first error wins. `name`
/// says which item a thread that panicked was working on.
fn parallel_map<T: Sync, R: Send, E: From<ExecError> + Send>(
    items: &[T],
    jobs: usize,
    f: impl Fn(&T) -> Result<R, E> + Sync,
    name: impl Fn(&T) -> String,
) -> Result<Vec<R>, E> {
    if jobs <= 1 || items.len() <= 1 {
        return items.iter().map(&f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<std::sync::Mutex<Option<Result<R, E>>>> =
        items.iter().map(|_| std::sync::Mutex::new(None)).collect();
    let work = || loop {
        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if i >= items.len() {
            break;
        }
        let r = f(&items[i]);
        if let Ok(mut slot) = slots[i].lock() {
            *slot = Some(r);
        }
    };
    // The calling thread works too, rather than waiting on the others: in the `explr` binary it
    // is one of Rayon's workers (`explr_nn::tune_cpu_process`), which the kernels' loops of
    // every job need.
    std::thread::scope(|scope| {
        for _ in 1..jobs.min(items.len()) {
            scope.spawn(work);
        }
        work();
    });
    slots
        .into_iter()
        .zip(items)
        .map(|(s, item)| {
            s.into_inner()
                .ok()
                .flatten()
                .unwrap_or_else(|| Err(ExecError::WorkerPanicked { unit: name(item) }.into()))
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

impl<E: From<ExecError>> Executor<E> for SlurmArray {
    fn execute(&self, job: &Job<'_, E>) -> Result<Execution, E> {
        self.submit(job)
    }
}

impl SlurmArray {
    fn submit<E: From<ExecError>>(&self, job: &Job<'_, E>) -> Result<Execution, E> {
        let exec = |e: SlurmError| E::from(ExecError::from(e));
        let folder = slurm::folder(job.dir);
        let submitted = SubmissionRecord::read_all(&folder).map_err(exec)?;
        // Tasks of earlier submissions still queued or running (only asked when there were
        // any: writing a script needs no Slurm).
        let queued = if submitted.is_empty() || self.emit_only {
            Default::default()
        } else {
            slurm::active_tasks(&submitted).map_err(exec)?
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
            return Err(exec(SlurmError::Unusable {
                dir: job.dir.to_path_buf(),
                units: unusable,
            }));
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
        let keys: Vec<String> = job.units.iter().map(UnitKey::to_string).collect();
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
        let text = script.render().map_err(exec)?;
        explr_io::write_atomic(&script_path, text.as_bytes())
            .map_err(|e| E::from(ExecError::Io(e)))?;
        let logs = folder.join(slurm::LOGS);
        std::fs::create_dir_all(&logs).map_err(|source| {
            E::from(ExecError::Io(IoError {
                action: "creating",
                path: logs,
                source,
            }))
        })?;
        let job_id = if self.emit_only {
            None
        } else {
            let id = slurm::sbatch(&script_path).map_err(exec)?;
            SubmissionRecord {
                job_id: id.clone(),
                script: script_path.clone(),
                device: self.device.clone(),
                submitted_unix_s: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                tasks: tasks.iter().cloned().collect(),
            }
            .append(&folder)
            .map_err(exec)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every item is mapped once and in order, on at most `jobs` threads, one of them the
    /// calling thread (which the kernels need when it is a Rayon worker).
    #[test]
    fn parallel_map_keeps_order_and_works_on_the_calling_thread() {
        let me = std::thread::current().id();
        let items: Vec<usize> = (0..12).collect();
        let out = parallel_map::<_, _, ExecError>(
            &items,
            3,
            |&i| {
                std::thread::sleep(std::time::Duration::from_millis(5));
                Ok((i * i, std::thread::current().id()))
            },
            |i| i.to_string(),
        )
        .unwrap();
        let squares: Vec<usize> = out.iter().map(|(sq, _)| *sq).collect();
        assert_eq!(squares, items.iter().map(|i| i * i).collect::<Vec<_>>());
        let mut threads: Vec<_> = out.iter().map(|(_, t)| *t).collect();
        assert!(threads.contains(&me), "the calling thread mapped no item");
        threads.sort_by_key(|t| format!("{t:?}"));
        threads.dedup();
        assert!(threads.len() <= 3, "{} threads for 3 jobs", threads.len());
    }
}
