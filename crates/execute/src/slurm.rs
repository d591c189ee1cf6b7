//! Slurm job arrays: the script of a manifest's array ([`ArrayScript`]), `sbatch` and
//! `squeue`, the record of what was submitted ([`SubmissionRecord`]) and the options the
//! command line adds (`--slurm-opt KEY=VALUE`, [`parse_override`]). Everything lives in the
//! manifest's results folder, under `slurm/`:
//!
//! ```text
//! results/<manifest>/<profile>/slurm/array.sbatch        the job-array script (latest submit)
//! results/<manifest>/<profile>/slurm/submissions.json    every submission: job id, index → unit
//! results/<manifest>/<profile>/slurm/logs/<job>_<i>.out  each task's output (requeues append)
//! ```
//!
//! A task runs `explr replicate MANIFEST … --resume --task UNIT` in the background of the
//! script's shell, which forwards `SIGUSR1` (sent `stop_before_limit_s` before the time limit)
//! and `SIGTERM` (scancel, preemption) to it: explr finishes its epoch, checkpoints and exits
//! with [`EXIT_STOPPED`]; after `SIGUSR1` the script then requeues the task, which resumes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use explr_io::{write_atomic, IoError};
use explr_manifest::spec::SlurmSection;

/// The folder of a manifest's Slurm files.
pub fn folder(manifest_dir: &Path) -> PathBuf {
    manifest_dir.join("slurm")
}

/// The job-array script's name in [`folder`].
pub const SCRIPT: &str = "array.sbatch";
/// The tasks' logs folder in [`folder`].
pub const LOGS: &str = "logs";
/// The submissions record's name in [`folder`].
pub const RECORD: &str = "submissions.json";
/// The exit status of `explr` stopped on request with its run checkpointed (`EX_TEMPFAIL`):
/// the task is worth requeueing.
pub const EXIT_STOPPED: u8 = 75;

/// `sbatch` options explr sets itself and `--slurm-opt` may not change.
const RESERVED: [&str; 7] = [
    "array",
    "output",
    "error",
    "open-mode",
    "chdir",
    "wrap",
    "parsable",
];

/// Why a Slurm step failed.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] IoError),
    /// A Slurm command could not be run, or failed.
    #[error("`{command}` {what}{}", if stderr.is_empty() { String::new() } else { format!(": {stderr}") })]
    Command {
        /// The command line.
        command: String,
        /// What happened (`could not be started (is Slurm installed?)`, `exited with 1`).
        what: String,
        /// Its error output, trimmed.
        stderr: String,
    },
    /// `sbatch` printed no job id.
    #[error("`sbatch --parsable {script}` printed `{stdout}`, not a job id", script = script.display())]
    NoJobId {
        /// The script.
        script: PathBuf,
        /// What it printed.
        stdout: String,
    },
    /// A `--slurm-opt` that is not `KEY=VALUE`, or that explr sets itself.
    #[error("--slurm-opt `{given}`: {message}")]
    BadOption {
        /// As given.
        given: String,
        /// What is wrong and what would do.
        message: String,
    },
    /// A path the script would name cannot be written into an `#SBATCH` line.
    #[error("{}: {message}", path.display())]
    Path {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Some runs' folders hold what a task could not resume.
    #[error(
        "{} run(s) in {} hold results a task cannot continue from:\n{}\nremove those run folders \
         (or the whole folder) and submit again",
        units.len(),
        dir.display(),
        units.iter().map(|(u, why)| format!("  {u}: {why}")).collect::<Vec<_>>().join("\n")
    )]
    Unusable {
        /// The manifest's results folder.
        dir: PathBuf,
        /// Each unit and what is wrong with it.
        units: Vec<(String, String)>,
    },
    /// The submissions record does not read.
    #[error("{}: not a record of submissions ({message}); move it away to start a new one", path.display())]
    Record {
        /// The file.
        path: PathBuf,
        /// The parse error.
        message: String,
    },
}

/// Parses `--slurm-opt KEY=VALUE`: an `sbatch` long option without its dashes (`partition`,
/// `time`, `gres`, `account`, …) and its value, neither with whitespace; not one that explr
/// sets itself (the array, its logs, the working folder).
pub fn parse_override(given: &str) -> Result<(String, String), SlurmError> {
    let bad = |message: &str| SlurmError::BadOption {
        given: given.to_string(),
        message: message.to_string(),
    };
    let Some((key, value)) = given.split_once('=') else {
        return Err(bad(
            "write KEY=VALUE with an sbatch long option, e.g. partition=gpu or time=12:00:00",
        ));
    };
    let key = key.trim_start_matches("--");
    if key.is_empty()
        || !key.starts_with(|c: char| c.is_ascii_lowercase())
        || !key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(bad(
            "KEY must be an sbatch long option (lower-case letters, digits and dashes), e.g. \
             partition",
        ));
    }
    if RESERVED.contains(&key) {
        return Err(bad(&format!(
            "explr sets --{key} itself (the array is the runs not yet complete, the logs go to \
             the results folder, tasks run in the folder explr ran in)"
        )));
    }
    if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("VALUE must be non-empty, without whitespace"));
    }
    Ok((key.to_string(), value.to_string()))
}

/// The command an array task runs, before its unit: `PROGRAM replicate MANIFEST ARGS… --resume
/// --task UNIT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskCommand {
    /// The `explr` binary, as the tasks reach it (relative to the folder explr ran in when it
    /// lies inside it).
    pub program: String,
    /// The options after the manifest (`--profile P`, `--device D`, the folders, …).
    pub args: Vec<String>,
}

/// The job-array script of one manifest.
#[derive(Clone, Copy, Debug)]
pub struct ArrayScript<'a> {
    /// The manifest's file stem (`e3`).
    pub manifest: &'a str,
    /// The profile.
    pub profile: &'a str,
    /// The manifest's results folder, as the tasks reach it.
    pub dir: &'a Path,
    /// Every unit's key, by array index.
    pub units: &'a [String],
    /// The indices to run.
    pub pending: &'a [usize],
    /// The manifest's resources.
    pub resources: &'a SlurmSection,
    /// GPUs per task.
    pub gpus: u32,
    /// `--slurm-opt` options, over the generated ones.
    pub overrides: &'a [(String, String)],
    /// What each task runs.
    pub command: &'a TaskCommand,
}

impl ArrayScript<'_> {
    /// The `#SBATCH` options: explr's (the array, its logs, requeue, the stop signal), the
    /// manifest's resources, then the command line's (replacing any with the same key).
    pub fn options(&self) -> Vec<(String, Option<String>)> {
        let SlurmSection {
            time,
            cpus_per_task,
            mem,
            stop_before_limit_s,
        } = self.resources;
        let logs = folder(self.dir).join(LOGS).join("%A_%a.out");
        let mut options: Vec<(String, Option<String>)> = vec![
            (
                "job-name".into(),
                Some(format!("explr-{}-{}", self.manifest, self.profile)),
            ),
            ("array".into(), Some(array_spec(self.pending))),
            ("output".into(), Some(logs.display().to_string())),
            ("open-mode".into(), Some("append".into())),
            ("requeue".into(), None),
            (
                "signal".into(),
                Some(format!("B:USR1@{stop_before_limit_s}")),
            ),
            ("time".into(), Some(time.clone())),
            ("cpus-per-task".into(), Some(cpus_per_task.to_string())),
        ];
        if let Some(mem) = mem {
            options.push(("mem".into(), Some(mem.clone())));
        }
        if self.gpus > 0 {
            options.push(("gres".into(), Some(format!("gpu:{}", self.gpus))));
        }
        for (key, value) in self.overrides {
            match options.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = Some(value.clone()),
                None => options.push((key.clone(), Some(value.clone()))),
            }
        }
        options
    }

    /// The script's text.
    pub fn render(&self) -> Result<String, SlurmError> {
        let dir = self.dir.display().to_string();
        if dir.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(SlurmError::Path {
                path: self.dir.to_path_buf(),
                message: "a results folder for Slurm must have no whitespace in its path (it \
                          goes into #SBATCH lines); pass another --results-dir"
                    .into(),
            });
        }
        let mut s = String::new();
        let line = |s: &mut String, l: &str| {
            s.push_str(l);
            s.push('\n');
        };
        line(&mut s, "#!/bin/bash");
        line(
            &mut s,
            &format!(
                "# explr: {} at profile {}, one Slurm array task per unit of work ({} in all; {} \
                 in this array).",
                self.manifest,
                self.profile,
                self.units.len(),
                self.pending.len()
            ),
        );
        for comment in [
            "# Written by `explr replicate --executor slurm`; submit it from the folder explr ran in",
            "# (the paths below are relative to it). Each task trains its unit with --resume, so a",
            "# requeued task continues from its last checkpoint to the same numbers. SIGUSR1 before",
            "# the time limit (--signal) makes explr checkpoint at the end of its epoch and exit",
            "# with status 75; the task then requeues itself. Collect the results with",
            "# `explr replicate --collect`.",
        ] {
            line(&mut s, comment);
        }
        for (key, value) in self.options() {
            match value {
                Some(v) => line(&mut s, &format!("#SBATCH --{key}={v}")),
                None => line(&mut s, &format!("#SBATCH --{key}")),
            }
        }
        line(&mut s, "set -u");
        line(&mut s, "units=(");
        for (i, unit) in self.units.iter().enumerate() {
            line(&mut s, &format!("  {} # {i}", shell_quote(unit)));
        }
        line(&mut s, ")");
        let command: Vec<String> = std::iter::once(self.command.program.clone())
            .chain(["replicate".to_string(), self.manifest.to_string()])
            .chain(self.command.args.iter().cloned())
            .map(|a| shell_quote(&a))
            .collect();
        for l in [
            "unit=${units[$SLURM_ARRAY_TASK_ID]}",
            "task=${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}",
            "export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}",
            "echo \"explr: task $task, start $((${SLURM_RESTART_COUNT:-0} + 1)), on $(hostname): $unit\"",
            &format!("{} --resume --task \"$unit\" &", command.join(" ")),
            "explr=$!",
            "limit=0",
            "trap 'limit=1; kill -USR1 \"$explr\" 2>/dev/null' USR1",
            "trap 'kill -TERM \"$explr\" 2>/dev/null' TERM",
            "# wait returns early when a trap runs: wait until explr is gone, then for its status.",
            "while kill -0 \"$explr\" 2>/dev/null; do wait \"$explr\"; done",
            "wait \"$explr\"; status=$?",
            &format!(
                "if [ \"$status\" -eq {EXIT_STOPPED} ] && [ \"$limit\" -eq 1 ]; then"
            ),
            "  echo \"explr: checkpointed before the time limit; requeueing $task\"",
            "  scontrol requeue \"$task\"",
            "fi",
            "exit \"$status\"",
        ] {
            line(&mut s, l);
        }
        Ok(s)
    }
}

/// `0-3,5,7-8`: Slurm's array syntax for sorted `indices`.
pub fn array_spec(indices: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < indices.len() {
        let mut j = i;
        while j + 1 < indices.len() && indices[j + 1] == indices[j] + 1 {
            j += 1;
        }
        parts.push(if j == i {
            indices[i].to_string()
        } else {
            format!("{}-{}", indices[i], indices[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

/// `s` as one bash word: as it is when it holds only safe characters, else single-quoted.
pub fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Runs a Slurm command; its standard output.
fn slurm_command(program: &str, args: &[&str]) -> Result<String, SlurmError> {
    let command = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| SlurmError::Command {
            command: command.clone(),
            what: format!("could not be started ({e}); is Slurm's client installed and on PATH?"),
            stderr: String::new(),
        })?;
    if !out.status.success() {
        return Err(SlurmError::Command {
            command,
            what: format!("failed ({})", out.status),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Submits `script` with `sbatch --parsable` (from the current folder); the job id.
pub fn sbatch(script: &Path) -> Result<String, SlurmError> {
    let path = script.display().to_string();
    let stdout = slurm_command("sbatch", &["--parsable", &path])?;
    // `--parsable` prints `ID` or `ID;CLUSTER`.
    let id = stdout.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SlurmError::NoJobId {
            script: script.to_path_buf(),
            stdout: stdout.trim().to_string(),
        });
    }
    Ok(id)
}

/// The array tasks of `job_ids` that Slurm still holds (pending, running, completing,
/// requeued, …), by (job id, array index): their state and reason (`PENDING (Resources)`).
/// Tasks that are done are no longer listed.
pub fn squeue(job_ids: &[String]) -> Result<BTreeMap<(String, usize), String>, SlurmError> {
    let stdout = slurm_command(
        "squeue",
        &["--me", "--noheader", "--array", "--format=%i %T %r"],
    )?;
    Ok(parse_squeue(&stdout, job_ids))
}

/// [`squeue`]'s parsing: lines `JOB_INDEX STATE REASON` of the given jobs.
fn parse_squeue(stdout: &str, job_ids: &[String]) -> BTreeMap<(String, usize), String> {
    let mut tasks = BTreeMap::new();
    for line in stdout.lines() {
        let mut words = line.split_whitespace();
        let (Some(id), Some(state)) = (words.next(), words.next()) else {
            continue;
        };
        let reason = words.collect::<Vec<_>>().join(" ");
        let Some((job, index)) = id.split_once('_') else {
            continue;
        };
        let Ok(index) = index.parse::<usize>() else {
            continue;
        };
        if job_ids.iter().any(|j| j == job) {
            let described = match reason.as_str() {
                "" | "None" => state.to_string(),
                r => format!("{state} ({r})"),
            };
            tasks.insert((job.to_string(), index), described);
        }
    }
    tasks
}

/// The units whose latest submission Slurm still holds: unit → `job_index STATE`.
pub fn active_tasks(records: &[SubmissionRecord]) -> Result<BTreeMap<String, String>, SlurmError> {
    let ids: Vec<String> = records.iter().map(|r| r.job_id.clone()).collect();
    let queued = squeue(&ids)?;
    let mut active = BTreeMap::new();
    for (unit, (record, index)) in latest_tasks(records) {
        if let Some(state) = queued.get(&(record.job_id.clone(), index)) {
            active.insert(unit, format!("task {}_{index} {state}", record.job_id));
        }
    }
    Ok(active)
}

/// Each unit's latest submission and its array index there.
pub fn latest_tasks(records: &[SubmissionRecord]) -> BTreeMap<String, (&SubmissionRecord, usize)> {
    let mut latest = BTreeMap::new();
    for record in records {
        for (&index, unit) in &record.tasks {
            latest.insert(unit.clone(), (record, index));
        }
    }
    latest
}

/// The log of array task `index` of job `job_id`, in the manifest's Slurm folder.
pub fn log_path(slurm_folder: &Path, job_id: &str, index: usize) -> PathBuf {
    slurm_folder
        .join(LOGS)
        .join(format!("{job_id}_{index}.out"))
}

/// One submission of a manifest's array.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmissionRecord {
    /// Slurm's job id.
    pub job_id: String,
    /// The script submitted.
    pub script: PathBuf,
    /// The device the tasks run on (`cpu`, `cuda`).
    pub device: String,
    /// When (Unix seconds).
    pub submitted_unix_s: u64,
    /// Array index → unit.
    pub tasks: BTreeMap<usize, String>,
}

impl SubmissionRecord {
    /// Every submission recorded in `slurm_folder`, oldest first (none when there is no record).
    pub fn read_all(slurm_folder: &Path) -> Result<Vec<Self>, SlurmError> {
        let path = slurm_folder.join(RECORD);
        let Some(text) = explr_io::read_if_exists(&path)? else {
            return Ok(Vec::new());
        };
        serde_json::from_str(&text).map_err(|e| SlurmError::Record {
            path,
            message: e.to_string(),
        })
    }

    /// Adds this submission to the record in `slurm_folder` (rewritten atomically).
    pub fn append(&self, slurm_folder: &Path) -> Result<(), SlurmError> {
        let mut all = Self::read_all(slurm_folder)?;
        all.push(self.clone());
        // Plain data: serializing cannot fail.
        let text = serde_json::to_string_pretty(&all).unwrap_or_default();
        write_atomic(&slurm_folder.join(RECORD), text.as_bytes())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_specs_compress_runs_of_indices() {
        assert_eq!(array_spec(&[0, 1, 2, 3, 5, 7, 8]), "0-3,5,7-8");
        assert_eq!(array_spec(&[4]), "4");
        assert_eq!(array_spec(&[]), "");
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_quote("results/e3/paper"), "results/e3/paper");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn overrides_are_long_options_with_values_and_not_explrs_own() {
        assert_eq!(
            parse_override("partition=gpu").unwrap(),
            ("partition".into(), "gpu".into())
        );
        assert_eq!(
            parse_override("--time=1-00:00:00").unwrap(),
            ("time".into(), "1-00:00:00".into())
        );
        for (given, needle) in [
            ("partition", "KEY=VALUE"),
            ("array=0-3", "explr sets --array itself"),
            ("output=x.log", "explr sets --output itself"),
            ("Partition=gpu", "long option"),
            ("comment=a b", "without whitespace"),
            ("mem=", "non-empty"),
        ] {
            let e = parse_override(given).unwrap_err().to_string();
            assert!(e.contains(needle), "{given}: {e}");
            assert!(e.contains(given), "{given}: {e}");
        }
    }

    #[test]
    fn scripts_take_the_resources_then_the_command_lines_options() {
        let resources = SlurmSection {
            mem: Some("16G".into()),
            ..SlurmSection::default()
        };
        let units = ["m/a/seed-0".to_string(), "m/it's/seed-1".to_string()];
        let command = TaskCommand {
            program: "target/release/explr".into(),
            args: vec!["--profile".into(), "paper".into()],
        };
        let overrides = [
            ("time".to_string(), "12:00:00".to_string()),
            ("partition".to_string(), "gpu".to_string()),
        ];
        let script = ArrayScript {
            manifest: "e3",
            profile: "paper",
            dir: Path::new("results/e3/paper"),
            units: &units,
            pending: &[1],
            resources: &resources,
            gpus: 1,
            overrides: &overrides,
            command: &command,
        };
        let text = script.render().unwrap();
        let sbatch: Vec<&str> = text.lines().filter(|l| l.starts_with("#SBATCH")).collect();
        assert_eq!(
            sbatch,
            [
                "#SBATCH --job-name=explr-e3-paper",
                "#SBATCH --array=1",
                "#SBATCH --output=results/e3/paper/slurm/logs/%A_%a.out",
                "#SBATCH --open-mode=append",
                "#SBATCH --requeue",
                "#SBATCH --signal=B:USR1@300",
                "#SBATCH --time=12:00:00",
                "#SBATCH --cpus-per-task=1",
                "#SBATCH --mem=16G",
                "#SBATCH --gres=gpu:1",
                "#SBATCH --partition=gpu",
            ]
        );
        assert!(
            text.contains("  m/a/seed-0 # 0\n  'm/it'\\''s/seed-1' # 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "target/release/explr replicate e3 --profile paper --resume --task \"$unit\" &"
            ),
            "{text}"
        );
        let spaced = ArrayScript {
            dir: Path::new("my results/e3/paper"),
            ..script
        };
        let e = spaced.render().unwrap_err().to_string();
        assert!(
            e.contains("no whitespace") && e.contains("my results"),
            "{e}"
        );
    }

    #[test]
    fn squeue_lines_of_other_jobs_and_unexpanded_arrays_are_left_out() {
        let out = "12_3 RUNNING None\n12_4 PENDING Resources\n13_0 RUNNING None\n\
                   12_[5-6] PENDING Priority\n99 RUNNING None\n";
        let tasks = parse_squeue(out, &["12".to_string()]);
        let want: BTreeMap<(String, usize), String> = [
            (("12".to_string(), 3), "RUNNING".to_string()),
            (("12".to_string(), 4), "PENDING (Resources)".to_string()),
        ]
        .into_iter()
        .collect();
        assert_eq!(tasks, want);
    }

    #[test]
    fn the_latest_submission_of_a_unit_wins() {
        let record = |job: &str, tasks: &[(usize, &str)]| SubmissionRecord {
            job_id: job.into(),
            script: "s".into(),
            device: "cpu".into(),
            submitted_unix_s: 0,
            tasks: tasks.iter().map(|(i, u)| (*i, u.to_string())).collect(),
        };
        let records = [
            record("12", &[(0, "m/a/seed-0"), (1, "m/b/seed-0")]),
            record("15", &[(1, "m/b/seed-0")]),
        ];
        let latest = latest_tasks(&records);
        assert_eq!(latest["m/a/seed-0"].0.job_id, "12");
        assert_eq!(latest["m/b/seed-0"].0.job_id, "15");
        assert_eq!(latest["m/b/seed-0"].1, 1);
    }
}
