//! `explr replicate`: run manifests at a profile, check (or bless) the goldens, write figures
//! and docs/REPLICATION.md.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use explr_replicate::context::{Progress, Provenance, RunnerOptions};
use explr_replicate::device::DeviceSpec;
use explr_replicate::golden::{self, GoldenOutcome};
use explr_replicate::index::{IndexCheck, IndexEntry, ResultsIndex};
use explr_replicate::manifest;
use explr_replicate::runner;
use explr_replicate::spec::Verdict;

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

/// Arguments of `explr replicate`.
#[derive(Debug, Args)]
pub struct ReplicateArgs {
    /// Manifest ids to run (`e3`, `T1`, …); all when none are given.
    pub ids: Vec<String>,
    /// Profile: smoke (CPU, synthetic data, minutes), cpu (real CIFAR-10 subset), paper (full).
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
    /// Compare the summaries with the goldens (`cargo xtask replicate` checks them with insta
    /// instead, leaving pending snapshots for `cargo insta review`).
    #[arg(long, conflicts_with = "bless")]
    pub check: bool,
    /// Write the summaries as the new goldens (and regenerate the profile's report,
    /// docs/REPLICATION.md for smoke, `docs/REPLICATION-<profile>.md` otherwise).
    #[arg(long)]
    pub bless: bool,
    /// Independent runs to train at once (at least 1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub jobs: u64,
    /// Resume runs from their last checkpoint.
    #[arg(long)]
    pub resume: bool,
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

/// Progress as indicatif bars on a terminal, plain lines elsewhere.
struct TermProgress {
    bars: Option<indicatif::MultiProgress>,
    active: Mutex<std::collections::BTreeMap<String, (indicatif::ProgressBar, Instant)>>,
}

impl TermProgress {
    fn new() -> Self {
        Self {
            bars: std::io::stderr()
                .is_terminal()
                .then(indicatif::MultiProgress::new),
            active: Mutex::new(Default::default()),
        }
    }
}

impl Progress for TermProgress {
    fn start(&self, key: &str, total: u64) {
        let bar = match &self.bars {
            Some(m) => {
                let b = m.add(indicatif::ProgressBar::new(total));
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{prefix:>28} [{bar:30}] {pos}/{len} {msg} (eta {eta})",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                b.set_prefix(key.to_string());
                b
            }
            None => indicatif::ProgressBar::hidden(),
        };
        if let Ok(mut a) = self.active.lock() {
            a.insert(key.to_string(), (bar, Instant::now()));
        }
    }

    fn update(&self, key: &str, done: u64, message: &str) {
        if let Ok(a) = self.active.lock() {
            if let Some((bar, started)) = a.get(key) {
                bar.set_position(done);
                bar.set_message(message.to_string());
                if self.bars.is_none() {
                    eprintln!(
                        "  {key}: {done} {message} ({:.0}s)",
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        }
    }

    fn finish(&self, key: &str, message: &str) {
        if let Ok(mut a) = self.active.lock() {
            if let Some((bar, started)) = a.remove(key) {
                bar.finish_and_clear();
                eprintln!(
                    "  {key}: {message} ({:.1}s)",
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
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
    let keep = |p: &PathBuf| match &first_model {
        Some(m) => PANELS.iter().any(|panel| stem(p) == format!("{m}-{panel}")),
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
        explr_replicate::io::write_atomic(&docs.join(&rel), &bytes)?;
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
    let timings = explr_replicate::report::read_timings(&args.golden_dir, &args.profile)?;
    let mut entries = Vec::new();
    for path in manifests(&args.experiments_dir, &[])? {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let golden_path = golden::golden_path(&args.golden_dir, &name, &args.profile);
        let Some(summary) = golden::read(&golden_path)? else {
            continue;
        };
        let manifest: manifest::Manifest =
            serde_yaml::from_str(&std::fs::read_to_string(&path)?)
                .with_context(|| format!("reading {}", path.display()))?;
        let figures = report_figures(&args.results_dir, &docs, &name, &args.profile)?;
        let wall_time = timings.get(&name).cloned();
        entries.push(explr_replicate::report::ReportEntry {
            name,
            profile: args.profile.clone(),
            manifest,
            summary,
            figures,
            wall_time,
        });
    }
    let path = docs.join(explr_replicate::report::report_file_name(&args.profile));
    explr_replicate::io::write_atomic(
        &path,
        explr_replicate::report::replication_md(&args.profile, &entries).as_bytes(),
    )?;
    Ok(path)
}

/// `git rev-parse HEAD` of the current directory's checkout, `+dirty` when tracked files have
/// uncommitted changes; `None` without git or outside a checkout.
fn git_revision() -> Option<String> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "HEAD"])?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{head}+dirty") } else { head })
}

/// Runs `explr replicate`.
pub fn run(args: ReplicateArgs) -> Result<()> {
    let device_spec: DeviceSpec = args.device.parse()?;
    if args.max_epochs == Some(0) {
        bail!("--max-epochs must be at least 1");
    }
    let mode = if args.bless {
        GoldenMode::Bless
    } else if args.max_epochs.is_some() {
        GoldenMode::Skip
    } else if args.check {
        GoldenMode::Check
    } else {
        GoldenMode::Skip
    };
    let cache = explr_data::user_cache_dir(
        std::env::var_os("XDG_CACHE_HOME").as_deref(),
        std::env::var_os("HOME").as_deref(),
    );
    let data_dir = explr_data::resolve_data_dir(
        args.data_dir.as_deref(),
        std::env::var_os("EXPLR_DATA").as_deref(),
        cache.as_deref(),
    )
    .ok();
    // The one place a device is opened; a dry run needs none.
    let device = if args.dry_run {
        candle_core::Device::Cpu
    } else {
        device_spec.open()?
    };
    let opts = RunnerOptions {
        data_dir,
        results_dir: args.results_dir.clone(),
        resume: args.resume,
        jobs: usize::try_from(args.jobs).unwrap_or(usize::MAX),
        device,
        max_epochs: args.max_epochs,
        provenance: Provenance {
            git_revision: git_revision(),
            command: std::env::args().collect(),
            threads: ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"]
                .into_iter()
                .map(|k| (k.to_string(), std::env::var(k).ok()))
                .collect(),
        },
    };
    let progress = TermProgress::new();
    let mut failures = Vec::new();
    let started = Instant::now();
    for path in manifests(&args.experiments_dir, &args.ids)? {
        let resolved = manifest::load(&path, &args.profile)?;
        if args.dry_run {
            eprintln!(
                "{} ({}) at profile {}: valid",
                resolved.manifest.id,
                path.display(),
                args.profile
            );
            continue;
        }
        eprintln!(
            "{} ({}) at profile {} on {device_spec}{}: {}",
            resolved.manifest.id,
            path.display(),
            args.profile,
            match args.max_epochs {
                Some(n) => format!(", at most {n} epoch(s) per training run"),
                None => String::new(),
            },
            resolved.manifest.title
        );
        let outcome = runner::run(&resolved, &opts, &progress)
            .with_context(|| format!("running {}", path.display()))?;
        let golden_path = golden::golden_path(&args.golden_dir, &resolved.name, &args.profile);
        let (golden_word, golden_note) = match mode {
            GoldenMode::Bless => {
                golden::bless(&golden_path, &outcome.summary)?;
                if args.profile != "smoke" {
                    let time = explr_replicate::report::WallTime {
                        wall_s: outcome.wall_s,
                        threads: std::thread::available_parallelism().map_or(0, |n| n.get()),
                        device: device_spec.to_string(),
                    };
                    explr_replicate::report::record_timing(
                        &args.golden_dir,
                        &args.profile,
                        &resolved.name,
                        time,
                    )?;
                }
                (
                    "written",
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
                GoldenOutcome::Match => ("match", "matches its golden".into()),
                GoldenOutcome::Missing(p) => {
                    failures.push(format!(
                        "{}: no golden at {} (run with --bless to create it)",
                        resolved.manifest.id,
                        p.display()
                    ));
                    ("missing", "no golden".into())
                }
                GoldenOutcome::Differ(diffs) => {
                    let lines: Vec<String> = diffs
                        .iter()
                        .map(|(k, g, a)| format!("    {k}: golden {g}, now {a}"))
                        .collect();
                    failures.push(format!(
                        "{}: differs from {}:\n{}",
                        resolved.manifest.id,
                        golden_path.display(),
                        lines.join("\n")
                    ));
                    ("differs", "DIFFERS from its golden".into())
                }
            },
            GoldenMode::Skip => ("not checked", "golden not checked".into()),
        };
        let summary_path = runner::manifest_dir(&opts, &resolved).join("summary.yaml");
        // A failed claim fails the command, unless the manifest says this profile fails (with
        // its reason); an inconclusive one is reported, never counted as a pass.
        if outcome.verdict == Verdict::Fail && outcome.expected != Some(Verdict::Fail) {
            failures.push(format!(
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
                " (some control also passes: see {})",
                summary_path.display()
            ),
            None => String::new(),
        };
        eprintln!(
            "  => {}: verdict {verdict}{expectation}, {golden_note}, {:.1}s",
            resolved.manifest.id, outcome.wall_s
        );
        // After each manifest, so that a run cut short keeps what it found.
        ResultsIndex::record(
            &args.results_dir,
            IndexEntry {
                manifest: resolved.name.clone(),
                id: resolved.manifest.id.clone(),
                profile: args.profile.clone(),
                verdict: verdict.into(),
                golden: golden_word.into(),
                checks: outcome
                    .checks
                    .iter()
                    .map(|(k, c)| {
                        let check = IndexCheck {
                            what: c.what.clone(),
                            value: c.value,
                            bound: c.bound.clone(),
                            pass: c.pass,
                        };
                        (k.clone(), check)
                    })
                    .collect(),
                device: device_spec.to_string(),
                wall_s: outcome.wall_s,
            },
        )?;
    }
    eprintln!("replicate: {:.1}s in all", started.elapsed().as_secs_f64());
    if mode == GoldenMode::Bless && !args.dry_run {
        let path = write_report(&args)?;
        eprintln!("report written to {}", path.display());
    }
    if !failures.is_empty() {
        bail!("{} problem(s):\n{}", failures.len(), failures.join("\n"));
    }
    Ok(())
}
