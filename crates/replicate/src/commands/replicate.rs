//! `explr replicate`: run manifests at a profile (on local threads, or as Slurm job arrays to
//! collect later), check (or bless) the goldens, write figures and docs/REPLICATION.md.
//! [`ReplicateArgs`] is the typed request (the binary parses it from its arguments),
//! [`Environment`] what the binary knows of where it runs, and [`run`] the entry point; lines
//! for the user go to the [`Console`] the binary hands in.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use explr_train::context::{Progress, Provenance, RunnerOptions, StopSignal};

use crate::device::DeviceSpec;
use crate::error::{bail, CommandError, Context, Result};
use crate::executor::{LocalPool, SlurmArray, Submission, UnitKey, UnitState};
use crate::golden::{self, GoldenOutcome};
use crate::index::{GoldenStatus, IndexCheck, IndexEntry, ResultsIndex};
use crate::manifest::{self, ManifestError, Resolved};
use crate::runner::{self, ManifestOutcome, Outcome};
use crate::slurm::{self, SubmissionRecord, TaskCommand};
use crate::spec::Verdict;
use crate::summary::Outcome as CheckOutcome;

/// Where a command's lines for the user go, besides its progress: the binary's terminal.
pub trait Console: Progress {
    /// One line for the user.
    fn note(&self, line: &str);
}

/// `note!(console, "…", args)`: one formatted line for the user.
macro_rules! note {
    ($console:expr, $($arg:tt)*) => {
        $console.note(&format!($($arg)*))
    };
}

/// What the binary knows of where it runs, handed to [`run`]: nothing below it reads the
/// environment.
pub struct Environment<'a> {
    /// The CIFAR data folder: `--data-dir`, else `$EXPLR_DATA`, else the per-user cache.
    pub data_dir: Option<PathBuf>,
    /// Where the results come from (recorded in every `metadata.json`).
    pub provenance: Provenance,
    /// This program as the Slurm tasks run it (relative to the current folder when it lies
    /// inside it); `None` when it could not be found.
    pub program: Option<String>,
    /// Whether this runs under CI (`CI` set, as insta reads it): a golden check then writes
    /// no pending snapshot.
    pub ci: bool,
    /// Installs the signal handlers that ask training runs to stop, where runs train here.
    pub stop_on_signals: &'a dyn Fn() -> StopSignal,
    /// Where progress and lines for the user go.
    pub console: &'a dyn Console,
}

/// What to do with the goldens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GoldenMode {
    /// Compare with golden/ and fail on a difference (never writes).
    Check,
    /// Write the summaries as the new goldens.
    Bless,
    /// Neither.
    Skip,
}

/// Where a manifest's runs execute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExecutorKind {
    /// Threads of this process (`--jobs`).
    Local,
    /// A Slurm job array per manifest, one task per run, submitted with sbatch.
    Slurm,
}

/// Arguments of `explr replicate`.
#[derive(Debug, Args)]
pub struct ReplicateArgs {
    /// Manifest ids to run (`e3`, `T1`, …); all when none are given.
    pub ids: Vec<String>,
    /// Profile: smoke (CPU, synthetic data, minutes), cpu (real CIFAR-10 images, about an hour
    /// in all), cpu-long (longer, for the claims that define it), cpu-full (float32 on the whole
    /// CIFAR-10 with augmentation, hours, for the claims that define it), paper (full).
    #[arg(long, default_value = "smoke")]
    pub profile: String,
    /// Device: cpu, cuda or cuda:N (CUDA needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Train at most N epochs of each training run (e.g. 1: a quick look at a long profile).
    /// The summary covers those epochs only, checks needing later epochs are dropped, and the
    /// goldens are neither checked nor written.
    #[arg(long, value_name = "N", conflicts_with_all = ["check", "bless"])]
    pub max_epochs: Option<usize>,
    /// CIFAR data directory (else $EXPLR_DATA, else the per-user cache).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Compare the summaries with the goldens: a difference fails the command and leaves the
    /// new summary as `golden/<manifest>.<profile>.snap.new` for `cargo insta review` and
    /// `cargo insta accept` (nothing is written under `CI=true`).
    #[arg(long, conflicts_with = "bless")]
    pub check: bool,
    /// Write the summaries as the new goldens (and regenerate the profile's report,
    /// docs/REPLICATION.md for smoke, `docs/REPLICATION-<profile>.md` otherwise).
    #[arg(long)]
    pub bless: bool,
    /// Independent runs to train at once, locally (at least 1; default 1).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub jobs: Option<u64>,
    /// Resume runs from their last checkpoint (Slurm tasks always do).
    #[arg(long)]
    pub resume: bool,
    /// Where the runs execute: `local` threads, or `slurm`: a job array per manifest, one task
    /// per run not yet complete (controls included; a task per manifest for the other kinds),
    /// its script in `results/<manifest>/<profile>/slurm/`, submitted with sbatch. Collect the
    /// results with --collect.
    #[arg(long, value_enum, default_value_t = ExecutorKind::Local)]
    pub executor: ExecutorKind,
    /// With --executor slurm: an sbatch option of every task, over the manifest's `slurm`
    /// section (time, CPUs, memory): KEY=VALUE with sbatch's long option name, e.g.
    /// `partition=gpu`, `time=12:00:00`, `account=abc`. Repeatable.
    #[arg(long = "slurm-opt", value_name = "KEY=VALUE", value_parser = parse_slurm_opt)]
    pub slurm_opt: Vec<(String, String)>,
    /// With --executor slurm: the explr binary the tasks run (default: this one), as the
    /// compute nodes reach it from this folder, e.g. a CUDA build (`target/gpu/explr`) when
    /// this machine has no GPU to start one.
    #[arg(long, value_name = "PATH")]
    pub slurm_explr: Option<PathBuf>,
    /// With --executor slurm: write each manifest's job-array script, submit nothing.
    #[arg(long)]
    pub emit_only: bool,
    /// Summarize and check runs trained elsewhere (a Slurm array): from the results folder's
    /// own state, exactly as a local run does once its runs are done; a manifest with runs
    /// that are not complete is reported (with its tasks' job ids, states and logs) instead.
    #[arg(long, conflicts_with_all = ["emit_only", "dry_run"])]
    pub collect: bool,
    /// With --collect: first wait until Slurm holds no task of the manifests' submissions.
    #[arg(long, requires = "collect")]
    pub wait: bool,
    /// Run one unit of one manifest and nothing else (what a Slurm array task runs):
    /// `MODEL/RUN/seed-N` of a training manifest, `experiment` for the other kinds. No summary
    /// is written; --collect does that once every unit is complete.
    #[arg(long, value_name = "UNIT", conflicts_with_all = ["collect", "emit_only", "dry_run", "check", "bless"])]
    pub task: Option<String>,
    /// Only parse and validate the manifests at the profile; run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Folder of the manifests.
    #[arg(long, default_value = "experiments")]
    pub experiments_dir: PathBuf,
    /// Folder of the goldens.
    #[arg(long, default_value = "golden")]
    pub golden_dir: PathBuf,
    /// Folder of the results.
    #[arg(long, default_value = "results")]
    pub results_dir: PathBuf,
}

fn parse_slurm_opt(s: &str) -> Result<(String, String), String> {
    slurm::parse_override(s).map_err(|e| e.to_string())
}

fn manifests(dir: &Path, ids: &[String]) -> Result<Vec<PathBuf>> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading the manifests folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    all.sort();
    if all.is_empty() {
        bail!(
            "no manifests (*.yaml) in {}; pass --experiments-dir with the folder that holds them",
            dir.display()
        );
    }
    if ids.is_empty() {
        return Ok(all);
    }
    let mut chosen = Vec::new();
    for id in ids {
        let want = id.to_ascii_lowercase();
        match all.iter().find(|p| {
            p.file_stem()
                .is_some_and(|s| s.to_string_lossy().to_ascii_lowercase() == want)
        }) {
            // An id named twice (`e1 E1`) runs once.
            Some(p) if chosen.contains(p) => {}
            Some(p) => chosen.push(p.clone()),
            None => {
                let known: Vec<String> = all
                    .iter()
                    .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                    .collect();
                bail!(
                    "no manifest `{id}` in {}; known: {}",
                    dir.display(),
                    known.join(", ")
                );
            }
        }
    }
    Ok(chosen)
}

/// Figures copied into the report for a manifest (the first model's main panels).
/// When this run left no figures for the manifest (it ran other manifests, or another
/// results folder), the figures the report already has are kept and linked.
fn report_figures(results: &Path, docs: &Path, name: &str, profile: &str) -> Result<Vec<String>> {
    let svgs_in = |dir: &Path| -> Vec<PathBuf> {
        match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "svg"))
                .collect(),
            Err(_) => Vec::new(),
        }
    };
    let kept = Path::new("figures").join(name).join(profile);
    let mut svgs = svgs_in(&results.join(name).join(profile));
    if svgs.is_empty() {
        let mut existing: Vec<String> = svgs_in(&docs.join(&kept))
            .iter()
            .filter_map(|p| p.file_name())
            .map(|f| format!("figures/{name}/{profile}/{}", f.to_string_lossy()))
            .collect();
        existing.sort();
        return Ok(existing);
    }
    svgs.sort();
    // Training manifests draw every panel for every model: keep the first model's main panels.
    // Other kinds draw only a few figures: keep them all.
    const PANELS: [&str; 6] = [
        "train_loss",
        "test_acc",
        "lr",
        "si_norm",
        "norm_sq_over_lr",
        "angular_update",
    ];
    let stem = |p: &PathBuf| {
        p.file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_string()
    };
    let first_model = svgs
        .iter()
        .find_map(|p| stem(p).strip_suffix("-train_loss").map(str::to_string));
    // Plus the distance curves of its weight-distance checks that record the first updates.
    let keep = |p: &PathBuf| match &first_model {
        Some(m) => {
            PANELS.iter().any(|panel| stem(p) == format!("{m}-{panel}"))
                || stem(p).starts_with(&format!("{m}-weight_distance-"))
        }
        None => true,
    };
    let mut out = Vec::new();
    for p in svgs.into_iter().filter(keep) {
        let file = p
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let rel = format!("figures/{name}/{profile}/{file}");
        let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        explr_io::write_atomic(&docs.join(&rel), &bytes)?;
        out.push(rel);
    }
    Ok(out)
}

/// Regenerates the profile's report (`REPLICATION.md` for smoke, else
/// `REPLICATION-<profile>.md`) from every manifest that has a golden at this profile. Bless
/// writes only what it owns: the repository's report in `docs/` is regenerated only from the
/// repository's own goldens (`--golden-dir golden`); goldens blessed into another folder get
/// their report (and figures) beside them, in that folder.
fn write_report(args: &ReplicateArgs) -> Result<PathBuf> {
    let docs = if args.golden_dir == Path::new("golden") {
        PathBuf::from("docs")
    } else {
        args.golden_dir.clone()
    };
    let (path, text) = report(args, &docs)?;
    explr_io::write_atomic(&path, text.as_bytes())?;
    Ok(path)
}

/// The profile's report as it would be written into `docs` (with its figures, copied there
/// from this run's results), and its path.
fn report(args: &ReplicateArgs, docs: &Path) -> Result<(PathBuf, String)> {
    let timings = crate::report::read_timings(&args.golden_dir, &args.profile)?;
    let mut entries = Vec::new();
    for path in manifests(&args.experiments_dir, &[])? {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let golden_path = golden::golden_path(&args.golden_dir, &name, &args.profile);
        let Some(summary) = golden::read_record(&golden_path)? else {
            continue;
        };
        let manifest: manifest::Manifest =
            serde_yaml::from_str(&std::fs::read_to_string(&path)?)
                .with_context(|| format!("reading {}", path.display()))?;
        let figures = report_figures(&args.results_dir, docs, &name, &args.profile)?;
        let wall_time = timings.get(&name).cloned();
        entries.push(crate::report::ReportEntry {
            name,
            profile: args.profile.clone(),
            manifest,
            summary,
            figures,
            wall_time,
        });
    }
    let path = docs.join(crate::report::report_file_name(&args.profile));
    let text = crate::report::replication_md(&args.profile, &entries);
    Ok((path, text))
}

/// What this invocation does with each manifest.
enum Action {
    /// Run every unit here, then summarize.
    Local(LocalPool),
    /// Submit a job array (or only write it).
    Submit(Box<SlurmArray>),
    /// Summarize what the units left on disk.
    Collect,
    /// Run one unit.
    Task(String),
}

/// The command each Slurm task runs (before `--task UNIT`): `--slurm-explr`, else this binary
/// (relative to the current folder when it lies inside it), with every option that decides
/// what a run is.
fn task_command(args: &ReplicateArgs, this_program: Option<&str>) -> Result<TaskCommand> {
    let program = match (&args.slurm_explr, this_program) {
        (Some(path), _) => path.display().to_string(),
        (None, Some(program)) => program.to_string(),
        (None, None) => {
            bail!("this program's path for the Slurm tasks is unknown: pass --slurm-explr PATH")
        }
    };
    // A bare name would be looked up on PATH: name the file in this folder.
    let program = if program.contains('/') {
        program
    } else {
        format!("./{program}")
    };
    let mut task_args: Vec<String> = vec![
        "--profile".into(),
        args.profile.clone(),
        "--device".into(),
        args.device.clone(),
    ];
    if let Some(dir) = &args.data_dir {
        task_args.extend(["--data-dir".into(), dir.display().to_string()]);
    }
    if let Some(n) = args.max_epochs {
        task_args.extend(["--max-epochs".into(), n.to_string()]);
    }
    task_args.extend([
        "--experiments-dir".into(),
        args.experiments_dir.display().to_string(),
        "--results-dir".into(),
        args.results_dir.display().to_string(),
    ]);
    Ok(TaskCommand {
        program,
        args: task_args,
    })
}

/// What this invocation does with each manifest, from flags that must make sense together.
fn action(args: &ReplicateArgs, device_spec: DeviceSpec, env: &Environment) -> Result<Action> {
    let slurm = args.executor == ExecutorKind::Slurm;
    if !slurm && (args.emit_only || !args.slurm_opt.is_empty() || args.slurm_explr.is_some()) {
        bail!("--emit-only, --slurm-opt and --slurm-explr are options of --executor slurm");
    }
    if slurm && !args.collect {
        if args.jobs.is_some() {
            bail!("--jobs is for --executor local; a Slurm array runs as many tasks as the cluster gives it");
        }
        if args.check || args.bless {
            bail!(
                "--check and --bless apply when the results are collected: submit without them, \
                 then run with --collect --check (or --bless)"
            );
        }
        if let DeviceSpec::Cuda(n) = device_spec {
            if n > 0 {
                bail!(
                    "--device cuda:{n} with --executor slurm: each task gets its own GPU from \
                     Slurm, numbered 0 in its allocation; pass --device cuda"
                );
            }
        }
    }
    Ok(if let Some(unit) = &args.task {
        if args.ids.len() != 1 {
            bail!("--task runs one unit of one manifest: name exactly one manifest id");
        }
        if args.executor == ExecutorKind::Slurm || args.jobs.is_some() {
            bail!("--task runs here, in this process: leave out --executor and --jobs");
        }
        Action::Task(unit.clone())
    } else if args.collect {
        if args.jobs.is_some() {
            bail!("--collect trains nothing: leave out --jobs");
        }
        Action::Collect
    } else if slurm {
        Action::Submit(Box::new(SlurmArray {
            command: task_command(args, env.program.as_deref())?,
            gpus: u32::from(matches!(device_spec, DeviceSpec::Cuda(_))),
            overrides: args.slurm_opt.clone(),
            emit_only: args.emit_only,
            device: args.device.clone(),
        }))
    } else {
        Action::Local(LocalPool {
            jobs: usize::try_from(args.jobs.unwrap_or(1)).unwrap_or(usize::MAX),
        })
    })
}

/// Whether the goldens are checked, blessed or left alone (a run cut by `--max-epochs` is not
/// the manifest's full result: never checked or blessed).
fn golden_mode(args: &ReplicateArgs) -> GoldenMode {
    if args.bless {
        GoldenMode::Bless
    } else if args.max_epochs.is_some() {
        GoldenMode::Skip
    } else if args.check {
        GoldenMode::Check
    } else {
        GoldenMode::Skip
    }
}

/// The runner's options: the data folder, the device (opened only where runs train here), the
/// stop signal and the provenance every result records.
fn options(
    args: &ReplicateArgs,
    device_spec: DeviceSpec,
    action: &Action,
    env: &Environment,
) -> Result<RunnerOptions> {
    // The one place a device is opened: where runs train here. A dry run, a submission and a
    // collection train nothing (a collection compares weights on the CPU).
    let trains_here = matches!(action, Action::Local(_) | Action::Task(_));
    let device = if args.dry_run || !trains_here {
        candle_core::Device::Cpu
    } else {
        device_spec.open()?
    };
    let stop = if trains_here && !args.dry_run {
        (env.stop_on_signals)()
    } else {
        StopSignal::default()
    };
    Ok(RunnerOptions {
        data_dir: env.data_dir.clone(),
        results_dir: args.results_dir.clone(),
        resume: args.resume,
        device,
        max_epochs: args.max_epochs,
        provenance: env.provenance.clone(),
        stop,
    })
}

/// Runs `explr replicate`.
pub fn run(args: &ReplicateArgs, env: &Environment) -> Result<()> {
    let device_spec: DeviceSpec = args.device.parse()?;
    if args.max_epochs == Some(0) {
        bail!("--max-epochs must be at least 1");
    }
    let action = action(args, device_spec, env)?;
    let mode = golden_mode(args);
    let opts = options(args, device_spec, &action, env)?;
    let console = env.console;
    let progress: &dyn Progress = console;
    let paths = manifests(&args.experiments_dir, &args.ids)?;
    if args.wait && !args.dry_run {
        wait_for_tasks(args, &paths, console)?;
    }
    let mut checker = Checker {
        args,
        mode,
        pending: !env.ci,
        failures: Vec::new(),
        console,
    };
    let started = Instant::now();
    for path in paths {
        let resolved = match manifest::load(&path, &args.profile) {
            // Every manifest at an optional profile: the ones that define it.
            Err(ManifestError::NotDefined { .. }) if args.ids.is_empty() => {
                note!(
                    console,
                    "{}: no profile {} (only the claims that need it define it), skipped",
                    path.display(),
                    args.profile
                );
                continue;
            }
            resolved => resolved?,
        };
        if args.dry_run {
            note!(
                console,
                "{} ({}) at profile {}: valid",
                resolved.manifest.id,
                path.display(),
                args.profile
            );
            continue;
        }
        announce(console, args, &resolved, &path, &action, device_spec);
        let context = || format!("running {}", path.display());
        let outcome = match &action {
            Action::Task(unit) => match runner::run_unit(&resolved, &opts, unit, progress) {
                Ok(()) => {
                    note!(console, "  => {}: {unit} complete", resolved.manifest.id);
                    continue;
                }
                Err(e) => return Err(CommandError::failed(context(), e)),
            },
            Action::Local(pool) => {
                runner::run(&resolved, &opts, pool, progress).with_context(context)?
            }
            Action::Submit(array) => {
                runner::run(&resolved, &opts, array.as_ref(), progress).with_context(context)?
            }
            Action::Collect => runner::collect(&resolved, &opts)
                .with_context(|| format!("collecting {}", path.display()))?,
        };
        match outcome {
            Outcome::Finished(outcome) => {
                let device = device_of(&action, &opts, &resolved, device_spec)?;
                checker.report(&resolved, &opts, &outcome, &device)?;
            }
            Outcome::Submitted(submission) => report_submission(&resolved, &submission, console),
            Outcome::Incomplete(states) => {
                let problem = report_incomplete(&resolved, &opts, &states, console)?;
                checker.failures.push(problem);
            }
        }
    }
    note!(
        console,
        "replicate: {:.1}s in all",
        started.elapsed().as_secs_f64()
    );
    if mode == GoldenMode::Bless && !args.dry_run {
        let path = write_report(args)?;
        note!(console, "report written to {}", path.display());
    }
    if !checker.failures.is_empty() {
        return Err(CommandError::Problems(format!(
            "{} problem(s):\n{}",
            checker.failures.len(),
            checker.failures.join("\n")
        )));
    }
    Ok(())
}

/// Says which manifest runs, how and where.
fn announce(
    console: &dyn Console,
    args: &ReplicateArgs,
    resolved: &Resolved,
    path: &Path,
    action: &Action,
    device_spec: DeviceSpec,
) {
    let doing = match action {
        Action::Local(_) => format!("on {device_spec}"),
        Action::Submit(s) if s.emit_only => "as a Slurm array script".into(),
        Action::Submit(_) => "as a Slurm array".into(),
        Action::Collect => "collected".into(),
        Action::Task(unit) => format!("on {device_spec}, unit {unit}"),
    };
    note!(
        console,
        "{} ({}) at profile {} {doing}{}: {}",
        resolved.manifest.id,
        path.display(),
        args.profile,
        match args.max_epochs {
            Some(n) => format!(", at most {n} epoch(s) per training run"),
            None => String::new(),
        },
        resolved.manifest.title
    );
}

/// The device a finished manifest ran on: this process's, or for a collection the one its
/// Slurm tasks were submitted for.
fn device_of(
    action: &Action,
    opts: &RunnerOptions,
    resolved: &Resolved,
    device_spec: DeviceSpec,
) -> Result<String> {
    Ok(match action {
        Action::Collect => {
            let dir = runner::manifest_dir(opts, resolved);
            let records = SubmissionRecord::read_all(&slurm::folder(&dir))?;
            records
                .last()
                .map_or_else(|| device_spec.to_string(), |r| r.device.clone())
        }
        _ => device_spec.to_string(),
    })
}

/// Checks (or blesses) each finished manifest's golden, reports its verdict and records it in
/// `results/index.json`: the same for a local run and a collection.
struct Checker<'a> {
    args: &'a ReplicateArgs,
    mode: GoldenMode,
    /// Whether a summary that differs from its golden leaves a pending snapshot beside it
    /// (insta's `.snap.new`, for `cargo insta review`): not under `CI=true`, as with insta.
    pending: bool,
    /// What fails the command.
    failures: Vec<String>,
    /// Where the verdicts go.
    console: &'a dyn Console,
}

impl Checker<'_> {
    /// Leaves `summary` as the pending snapshot of the golden at `golden_path` when pending
    /// snapshots are wanted; the words that say so in the failure.
    fn leave_pending(&self, golden_path: &Path, summary: &serde_yaml::Value) -> Result<String> {
        if !self.pending {
            return Ok(String::new());
        }
        let pending = golden::write_pending(golden_path, summary)?;
        Ok(format!(
            " (the new summary is in {}: review it with `cargo insta review`, take it with \
             `cargo insta accept` or --bless)",
            pending.display()
        ))
    }

    /// Checks or blesses the manifest's golden (recording its wall time at a recorded profile
    /// when it blesses): the word for the index and the note for the terminal.
    fn golden(
        &mut self,
        resolved: &Resolved,
        outcome: &ManifestOutcome,
        device: &str,
    ) -> Result<(GoldenStatus, String)> {
        let args = self.args;
        let golden_path = golden::golden_path(&args.golden_dir, &resolved.name, &args.profile);
        Ok(match self.mode {
            GoldenMode::Bless => {
                golden::bless(&golden_path, &outcome.summary)?;
                // An experiment that only was judged again (or collected) keeps the time
                // recorded when it ran; training times come from the runs' own records.
                if args.profile != "smoke" && outcome.timed {
                    let time = crate::report::WallTime {
                        wall_s: outcome.wall_s,
                        threads: std::thread::available_parallelism().map_or(0, |n| n.get()),
                        device: device.to_string(),
                    };
                    crate::report::record_timing(
                        &args.golden_dir,
                        &args.profile,
                        &resolved.name,
                        time,
                    )?;
                }
                (
                    GoldenStatus::Written,
                    format!("golden written to {}", golden_path.display()),
                )
            }
            GoldenMode::Check => match golden::check(
                &golden_path,
                &outcome.summary,
                resolved
                    .manifest
                    .golden_tolerance
                    .unwrap_or(golden::REL_TOL),
            )? {
                GoldenOutcome::Match => {
                    if self.pending {
                        golden::remove_pending(&golden_path)?;
                    }
                    (GoldenStatus::Match, "matches its golden".into())
                }
                GoldenOutcome::Missing(p) => {
                    let left = self.leave_pending(&golden_path, &outcome.summary)?;
                    self.failures.push(format!(
                        "{}: no golden at {}{left} (run with --bless to create it)",
                        resolved.manifest.id,
                        p.display()
                    ));
                    (GoldenStatus::Missing, "no golden".into())
                }
                GoldenOutcome::Differ(diffs) => {
                    let lines: Vec<String> = diffs
                        .iter()
                        .map(|(k, g, a)| format!("    {k}: golden {g}, now {a}"))
                        .collect();
                    let left = self.leave_pending(&golden_path, &outcome.summary)?;
                    self.failures.push(format!(
                        "{}: differs from {}{left}:\n{}",
                        resolved.manifest.id,
                        golden_path.display(),
                        lines.join("\n")
                    ));
                    (GoldenStatus::Differs, "DIFFERS from its golden".into())
                }
            },
            GoldenMode::Skip => (GoldenStatus::NotChecked, "golden not checked".into()),
        })
    }

    fn report(
        &mut self,
        resolved: &Resolved,
        opts: &RunnerOptions,
        outcome: &ManifestOutcome,
        device: &str,
    ) -> Result<()> {
        let args = self.args;
        let (golden_status, golden_note) = self.golden(resolved, outcome, device)?;
        let summary_path = runner::manifest_dir(opts, resolved).join("summary.yaml");
        // A failed claim fails the command, unless the manifest says this profile fails (with
        // its reason); an inconclusive one is reported, never counted as a pass.
        if outcome.verdict == Verdict::Fail && outcome.expected != Some(Verdict::Fail) {
            self.failures.push(format!(
                "{}: the claim's checks failed (see {})",
                resolved.manifest.id,
                summary_path.display()
            ));
        }
        let verdict = outcome.verdict.as_str();
        let expectation = match outcome.expected {
            Some(e) if e == outcome.verdict => format!(" (expected at profile {})", args.profile),
            Some(e) => format!(" (the manifest expects {} here)", e.as_str()),
            None if outcome.verdict == Verdict::Inconclusive => format!(
                " (this profile cannot decide the claim: see {} for the control or check that left it open)",
                summary_path.display()
            ),
            None => String::new(),
        };
        note!(
            self.console,
            "  => {}: verdict {verdict}{expectation}, {golden_note}, {:.1}s",
            resolved.manifest.id,
            outcome.wall_s
        );
        // After each manifest, so that a run cut short keeps what it found.
        ResultsIndex::record(
            &args.results_dir,
            IndexEntry {
                manifest: resolved.name.clone(),
                id: resolved.manifest.id.clone(),
                profile: args.profile.clone(),
                verdict: outcome.verdict,
                golden: golden_status,
                checks: outcome
                    .checks
                    .iter()
                    .map(|(k, c)| {
                        let check = IndexCheck {
                            what: c.what.clone(),
                            value: c.value,
                            bound: c.bound.clone(),
                            pass: c.pass(),
                            undecided: c.outcome == CheckOutcome::Undecided,
                        };
                        (k.clone(), check)
                    })
                    .collect(),
                device: device.to_string(),
                wall_s: outcome.wall_s,
            },
        )?;
        Ok(())
    }
}

/// What a submission did, for the terminal.
fn report_submission(resolved: &Resolved, s: &Submission, console: &dyn Console) {
    let id = &resolved.manifest.id;
    let left = match (s.complete, s.active.len()) {
        (0, 0) => String::new(),
        (c, a) => format!(" ({c} complete, {a} running or queued: left alone)"),
    };
    match (&s.job_id, s.tasks.is_empty()) {
        (_, true) => note!(
            console,
            "  => {id}: nothing to submit{left}; collect with --collect once they are done"
        ),
        (Some(job), false) => note!(
            console,
            "  => {id}: submitted job {job}, {} task(s){left}: {}; logs in {}",
            s.tasks.len(),
            s.script.display(),
            s.script
                .parent()
                .map(|p| p.join(slurm::LOGS).display().to_string())
                .unwrap_or_default()
        ),
        (None, false) => note!(
            console,
            "  => {id}: {} task(s) written to {}{left}; submit it with `sbatch {}` from this \
             folder",
            s.tasks.len(),
            s.script.display(),
            s.script.display()
        ),
    }
    for (unit, why) in &s.active {
        note!(console, "     {unit}: {why}");
    }
}

/// Where each unit of an incomplete manifest stands: for those a Slurm task ran, its job id,
/// its state in Slurm (or gone from the queue), its log and the log's last line. The problem
/// line for the command's failure.
fn report_incomplete(
    resolved: &Resolved,
    opts: &RunnerOptions,
    states: &[(UnitKey, UnitState)],
    console: &dyn Console,
) -> Result<String> {
    let dir = runner::manifest_dir(opts, resolved);
    let folder = slurm::folder(&dir);
    let records = SubmissionRecord::read_all(&folder)?;
    let latest = slurm::latest_tasks(&records);
    let queued = if records.is_empty() {
        Default::default()
    } else {
        let ids: Vec<String> = records.iter().map(|r| r.job_id.clone()).collect();
        slurm::squeue(&ids).unwrap_or_else(|e| {
            note!(
                console,
                "     (squeue: {e}; the tasks' states come from the results folder only)"
            );
            Default::default()
        })
    };
    let id = &resolved.manifest.id;
    let incomplete: Vec<&(UnitKey, UnitState)> = states
        .iter()
        .filter(|(_, s)| *s != UnitState::Complete)
        .collect();
    note!(
        console,
        "  => {id}: {} of {} unit(s) not complete; nothing written",
        incomplete.len(),
        states.len()
    );
    for (unit, state) in incomplete {
        let key = unit.to_string();
        let task = match latest.get(&key) {
            None => "never submitted".to_string(),
            Some((record, index)) => {
                let log = slurm::log_path(&folder, &record.job_id, *index);
                let in_queue = queued
                    .get(&(record.job_id.clone(), *index))
                    .cloned()
                    .unwrap_or_else(|| "no longer queued".into());
                let last = std::fs::read_to_string(&log)
                    .ok()
                    .and_then(|t| {
                        t.lines()
                            .rev()
                            .find(|l| !l.trim().is_empty())
                            .map(str::to_string)
                    })
                    .map(|l| format!("; last line: {l}"))
                    .unwrap_or_default();
                format!(
                    "task {}_{index} {in_queue}, log {}{last}",
                    record.job_id,
                    log.display()
                )
            }
        };
        note!(console, "     {key}: {state}; {task}");
    }
    Ok(format!(
        "{id}: not every unit is complete in {} (submit again to run only those)",
        dir.display()
    ))
}

/// Waits until Slurm holds no task of the chosen manifests' submissions.
fn wait_for_tasks(args: &ReplicateArgs, paths: &[PathBuf], console: &dyn Console) -> Result<()> {
    let mut ids = Vec::new();
    for path in paths {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let folder = slurm::folder(&args.results_dir.join(name).join(&args.profile));
        ids.extend(
            SubmissionRecord::read_all(&folder)?
                .into_iter()
                .map(|r| r.job_id),
        );
    }
    if ids.is_empty() {
        return Ok(());
    }
    let mut last = usize::MAX;
    loop {
        let queued = slurm::squeue(&ids)?;
        if queued.is_empty() {
            return Ok(());
        }
        if queued.len() != last {
            note!(
                console,
                "waiting for {} task(s) of job(s) {}",
                queued.len(),
                ids.join(", ")
            );
            last = queued.len();
        }
        std::thread::sleep(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// Keeps the lines a command writes for the user.
    #[derive(Default)]
    struct Lines(std::sync::Mutex<Vec<String>>);

    impl Progress for Lines {
        fn start(&self, _: &str, _: u64) {}
        fn update(&self, _: &str, _: u64, _: &str) {}
        fn finish(&self, _: &str, _: &str) {}
    }

    impl Console for Lines {
        fn note(&self, line: &str) {
            self.0.lock().unwrap().push(line.to_string());
        }
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ReplicateArgs,
    }

    const TOY: &str = "id: T1\ntitle: toy\npaper: §7\nclaim: c\ntoy:\n  \
      population: {lr: 0.1, weight_decay: 0.01, steps: 10, w0: [0.2, 1.0], dim: 2, seed: 0, record_every: 1}\n  \
      minibatch: {lr: 0.1, weight_decay: 0.01, steps: 10, w0: [0.2, 1.0], dim: 2, seed: 0, record_every: 1, batch_size: 4}\n";

    fn args(dir: &Path, flags: &[&str]) -> ReplicateArgs {
        let golden = dir.join("golden").display().to_string();
        let results = dir.join("results").display().to_string();
        let mut argv = vec!["x", "--golden-dir", &golden, "--results-dir", &results];
        argv.extend(flags);
        Cli::parse_from(argv).args
    }

    fn outcome(verdict: Verdict, value: f64) -> ManifestOutcome {
        let summary: serde_yaml::Value = serde_yaml::from_str(&format!(
            "id: T1\nverdict: {}\nx: {value}\n",
            verdict.as_str()
        ))
        .unwrap();
        ManifestOutcome {
            summary,
            verdict,
            expected: None,
            checks: Default::default(),
            figures: Vec::new(),
            wall_s: 1.0,
            timed: true,
        }
    }

    fn judge(
        args: &ReplicateArgs,
        mode: GoldenMode,
        pending: bool,
        outcome: &ManifestOutcome,
    ) -> (Vec<String>, Vec<String>) {
        let resolved = manifest::parse(TOY, "t1.yaml".as_ref(), "t1", "smoke").unwrap();
        let opts = RunnerOptions::on_cpu(&args.results_dir);
        let lines = Lines::default();
        let mut checker = Checker {
            args,
            mode,
            pending,
            failures: Vec::new(),
            console: &lines,
        };
        checker.report(&resolved, &opts, outcome, "cpu").unwrap();
        let said = lines.0.lock().unwrap().clone();
        (checker.failures, said)
    }

    #[test]
    fn a_blessed_golden_matches_and_a_changed_summary_differs_with_its_pending_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let args = args(dir.path(), &[]);
        let golden = golden::golden_path(&args.golden_dir, "t1", "smoke");
        let (failures, said) = judge(&args, GoldenMode::Check, true, &outcome(Verdict::Pass, 1.0));
        assert!(failures[0].contains("no golden"), "{failures:?}");
        assert!(said[0].contains("verdict pass") && said[0].contains("no golden"));
        assert!(golden::pending_path(&golden).exists());
        let (failures, _) = judge(&args, GoldenMode::Bless, true, &outcome(Verdict::Pass, 1.0));
        assert!(failures.is_empty() && golden.exists());
        let (failures, said) = judge(&args, GoldenMode::Check, true, &outcome(Verdict::Pass, 1.0));
        assert!(failures.is_empty(), "{failures:?}");
        assert!(said[0].contains("matches its golden"));
        assert!(
            !golden::pending_path(&golden).exists(),
            "a match removes the pending snapshot"
        );
        let (failures, said) = judge(&args, GoldenMode::Check, true, &outcome(Verdict::Pass, 2.0));
        assert!(failures[0].contains("differs from") && failures[0].contains("x: golden 1"));
        assert!(said[0].contains("DIFFERS"));
        assert!(golden::pending_path(&golden).exists());
        // Under CI, nothing is written beside the golden.
        std::fs::remove_file(golden::pending_path(&golden)).unwrap();
        let (failures, _) = judge(
            &args,
            GoldenMode::Check,
            false,
            &outcome(Verdict::Pass, 2.0),
        );
        assert_eq!(failures.len(), 1);
        assert!(!golden::pending_path(&golden).exists());
    }

    #[test]
    fn a_failed_claim_fails_the_command_unless_the_profile_expects_it_and_the_index_records_it() {
        let dir = tempfile::tempdir().unwrap();
        let args = args(dir.path(), &[]);
        let (failures, _) = judge(&args, GoldenMode::Skip, true, &outcome(Verdict::Fail, 1.0));
        assert!(
            failures[0].contains("the claim's checks failed"),
            "{failures:?}"
        );
        let mut expected = outcome(Verdict::Fail, 1.0);
        expected.expected = Some(Verdict::Fail);
        let (failures, said) = judge(&args, GoldenMode::Skip, true, &expected);
        assert!(failures.is_empty(), "{failures:?}");
        assert!(said[0].contains("expected at profile smoke"));
        let index = ResultsIndex::load(&args.results_dir).unwrap();
        assert_eq!(index.entries.len(), 1);
        assert_eq!(index.entries[0].verdict, Verdict::Fail);
        assert_eq!(index.entries[0].golden, GoldenStatus::NotChecked);
        let (failures, said) = judge(
            &args,
            GoldenMode::Skip,
            true,
            &outcome(Verdict::Inconclusive, 1.0),
        );
        assert!(failures.is_empty());
        assert!(said[0].contains("cannot decide the claim"));
    }

    /// The committed reports are what the committed goldens say: regenerated from them (and
    /// from the figures already in docs/, with no results of this run), each is byte for byte
    /// the file in docs/.
    #[test]
    fn the_committed_reports_are_regenerated_from_the_goldens_unchanged() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let empty = tempfile::tempdir().unwrap();
        let mut compared = 0;
        for profile in manifest::PROFILES {
            let experiments = root.join("experiments").display().to_string();
            let golden = root.join("golden").display().to_string();
            let results = empty.path().display().to_string();
            let args = Cli::parse_from([
                "x",
                "--profile",
                profile,
                "--experiments-dir",
                &experiments,
                "--golden-dir",
                &golden,
                "--results-dir",
                &results,
            ])
            .args;
            let (path, text) = report(&args, &root.join("docs")).unwrap();
            let Ok(committed) = std::fs::read_to_string(&path) else {
                continue;
            };
            assert!(
                text == committed,
                "{} differs from its goldens",
                path.display()
            );
            compared += 1;
        }
        assert!(compared >= 3, "only {compared} reports found");
    }

    #[test]
    fn flags_that_do_not_fit_together_are_refused_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let lines = Lines::default();
        let env = Environment {
            data_dir: None,
            provenance: Default::default(),
            program: None,
            ci: true,
            stop_on_signals: &StopSignal::default,
            console: &lines,
        };
        for (flags, says) in [
            (&["--emit-only"][..], "options of --executor slurm"),
            (
                &["--executor", "slurm", "--jobs", "2"][..],
                "--jobs is for --executor local",
            ),
            (&["--executor", "slurm"][..], "--slurm-explr"),
            (
                &["--task", "experiment"][..],
                "name exactly one manifest id",
            ),
            (
                &["--collect", "--jobs", "2"][..],
                "--collect trains nothing",
            ),
        ] {
            let args = args(dir.path(), flags);
            let e = run(&args, &env).unwrap_err();
            assert!(
                matches!(e, CommandError::Usage(_)) && e.to_string().contains(says),
                "{flags:?}: {e}"
            );
        }
    }
}
