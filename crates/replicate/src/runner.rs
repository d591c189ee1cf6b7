//! Runs a resolved manifest: dispatches on its experiment kind, writes results, figures and the
//! summary under `results/<manifest>/<profile>/`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_yaml::Value;

use crate::io::{write_atomic, IoError};
use crate::manifest::Resolved;
use crate::plot::{Chart, Series};
use crate::spec::{Experiment, Toy};
use crate::summary::Summary;
use crate::toy::{self, ToyTrace, ToyVariant};

/// Where and how to run.
#[derive(Clone, Debug)]
pub struct RunnerOptions {
    /// Root of the results tree (`results/`).
    pub results_dir: PathBuf,
    /// Resume runs from their last checkpoint.
    pub resume: bool,
    /// Worker threads for independent runs.
    pub jobs: usize,
    /// CIFAR data directory (resolved by the binary from --data-dir, $EXPLR_DATA or the cache).
    pub data_dir: Option<PathBuf>,
    /// Where every tensor lives (opened once, by [`crate::device::DeviceSpec::open`]).
    pub device: candle_core::Device,
    /// Train at most this many epochs of each training run (a short check of a long profile);
    /// the summary then covers those epochs only and drops checks that need later ones.
    /// Other experiment kinds run in full.
    pub max_epochs: Option<usize>,
}

/// Receives progress; the binary draws bars or prints lines, the library never prints.
pub trait Progress: Sync {
    /// A unit of work (a run) starts with `total` steps.
    fn start(&self, key: &str, total: u64);
    /// `done` of the run's steps are finished; `message` says how it is going.
    fn update(&self, key: &str, done: u64, message: &str);
    /// The run finished.
    fn finish(&self, key: &str, message: &str);
}

/// A [`Progress`] that ignores everything (tests).
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: &str, _: u64) {}
    fn update(&self, _: &str, _: u64, _: &str) {}
    fn finish(&self, _: &str, _: &str) {}
}

/// The result of one manifest.
#[derive(Clone, Debug)]
pub struct ManifestOutcome {
    /// The summary (what the golden checks).
    pub summary: Value,
    /// Whether every check of the claim passed.
    pub passed: bool,
    /// Figures written.
    pub figures: Vec<PathBuf>,
    /// Wall time in seconds.
    pub wall_s: f64,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Writing results failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// A toy run was misconfigured.
    #[error(transparent)]
    Toy(#[from] toy::ToyError),
    /// Serializing a result failed.
    #[error("serializing {what}: {message}")]
    Serialize {
        /// What was serialized.
        what: String,
        /// The cause.
        message: String,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Loading or batching data failed.
    #[error(transparent)]
    Data(#[from] explr_data::DataError),
    /// Building or running a model failed.
    #[error(transparent)]
    Zoo(#[from] explr_zoo::ZooError),
    /// Saving or loading parameters failed.
    #[error(transparent)]
    Nn(#[from] explr_nn::NnError),
    /// A schedule or the optimizer failed.
    #[error(transparent)]
    Schedule(#[from] explr_schedule::ScheduleError),
    /// Training diverged.
    #[error("{run}: {quantity} is {value} at epoch {epoch}, step {step}; the run stopped{}", match checkpoint {
        Some(c) => format!(" and its last good checkpoint is kept in {}", c.display()),
        None => " before any checkpoint was written".to_string(),
    })]
    NonFinite {
        /// The run.
        run: String,
        /// Epoch (1-based).
        epoch: usize,
        /// Updates done.
        step: u64,
        /// What went non-finite.
        quantity: String,
        /// Its value.
        value: f64,
        /// The last good checkpoint.
        checkpoint: Option<PathBuf>,
    },
    /// `--resume` found a checkpoint written by a run with another configuration.
    #[error("{run}: the checkpoint in {} was written by a run with another model, data, batch size, dtype, seed or optimizer plan (the manifest changed since it was written); run without --resume to start this run over", checkpoint.display())]
    StaleCheckpoint {
        /// The run.
        run: String,
        /// The checkpoint folder.
        checkpoint: PathBuf,
    },
    /// An experiment kind this build cannot run yet.
    #[error("{0}")]
    Unsupported(String),
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
    let resolved_yaml =
        serde_yaml::to_string(&resolved.manifest).map_err(|e| RunError::Serialize {
            what: "the resolved manifest".into(),
            message: e.to_string(),
        })?;
    write_atomic(
        &dir.join("manifest.resolved.yaml"),
        resolved_yaml.as_bytes(),
    )?;
    let (summary, figures) = match resolved.experiment() {
        Experiment::Toy(t) => run_toy(t, &dir, progress)?,
        Experiment::Training(t) => crate::training::run_training(t, &dir, opts, progress)?,
        Experiment::Exactness(x) => crate::exactness::run_exactness(x, &dir, opts, progress)?,
        Experiment::ScaleInvariance(s) => {
            crate::exactness::run_scale_invariance(s, &opts.device, progress)?
        }
    };
    let id = &resolved.manifest.id;
    let value = summary.to_value(id, &resolved.profile);
    let text = serde_yaml::to_string(&value).map_err(|e| RunError::Serialize {
        what: "the summary".into(),
        message: e.to_string(),
    })?;
    write_atomic(&dir.join("summary.yaml"), text.as_bytes())?;
    Ok(ManifestOutcome {
        passed: summary.passed(),
        summary: value,
        figures,
        wall_s: started.elapsed().as_secs_f64(),
    })
}

fn write_csv(
    path: &Path,
    header: &str,
    rows: impl Iterator<Item = String>,
) -> Result<(), RunError> {
    let mut text = String::from(header);
    text.push('\n');
    for r in rows {
        text.push_str(&r);
        text.push('\n');
    }
    Ok(write_atomic(path, text.as_bytes())?)
}

fn write_figure(
    dir: &Path,
    name: &str,
    chart: &Chart,
    figures: &mut Vec<PathBuf>,
) -> Result<(), RunError> {
    let path = dir.join(format!("{name}.svg"));
    write_atomic(&path, chart.to_svg().as_bytes())?;
    figures.push(path);
    Ok(())
}

/// Upward crossings of `level` by the error after step `from`.
fn jumps(trace: &ToyTrace, from: usize, level: f64) -> usize {
    (1..trace.error.len())
        .filter(|&i| trace.step[i] > from && trace.error[i] > level && trace.error[i - 1] <= level)
        .count()
}

/// Mean error over the last fifth of the recorded trace.
fn tail_error(trace: &ToyTrace) -> f64 {
    let n = trace.error.len();
    let tail = &trace.error[n - (n / 5).max(1)..];
    tail.iter().sum::<f64>() / tail.len() as f64
}

/// T1 (THEORY.md §7): WD alone or BN alone converges, BN + WD keeps jumping back up.
fn run_toy(
    spec: &Toy,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<(Summary, Vec<PathBuf>), RunError> {
    let mut summary = Summary::default();
    let mut figures = Vec::new();
    for (regime, cfg) in [
        ("population", &spec.population),
        ("minibatch", &spec.minibatch),
    ] {
        let mut traces = Vec::new();
        for variant in ToyVariant::ALL {
            let key = format!("{regime}/{}", variant.as_str());
            progress.start(&key, cfg.steps as u64);
            let trace = toy::run(cfg, variant)?;
            let rows = (0..trace.step.len()).map(|i| {
                format!(
                    "{},{:e},{:e}",
                    trace.step[i], trace.error[i], trace.log_norm[i]
                )
            });
            write_csv(
                &dir.join(&key).with_extension("csv"),
                "step,train_error,log_norm",
                rows,
            )?;
            progress.finish(
                &key,
                &format!(
                    "final error {:.4}",
                    trace.error.last().copied().unwrap_or(f64::NAN)
                ),
            );
            traces.push((variant, trace));
        }
        let warmup = cfg.steps / 4;
        for (variant, trace) in &traces {
            let name = format!("{regime}.{}", variant.as_str());
            summary.metric(
                format!("{name}.final_error"),
                *trace.error.last().unwrap_or(&f64::NAN),
            );
            summary.metric(format!("{name}.tail_error"), tail_error(trace));
            summary.metric(
                format!("{name}.final_log_norm"),
                *trace.log_norm.last().unwrap_or(&f64::NAN),
            );
            summary.metric(
                format!("{name}.max_error_after_warmup"),
                trace
                    .error
                    .iter()
                    .zip(&trace.step)
                    .filter(|(_, s)| **s > warmup)
                    .map(|(e, _)| *e)
                    .fold(0.0, f64::max),
            );
            if regime == "population" {
                summary.count(format!("{name}.error_jumps"), jumps(trace, warmup, 0.05));
            }
        }
        let get = |v: ToyVariant| {
            &traces
                .iter()
                .find(|(x, _)| *x == v)
                .expect("all variants ran")
                .1
        };
        if regime == "population" {
            summary.check_le(
                "population_wd_only_converges",
                "WD only: final train error",
                *get(ToyVariant::WdOnly).error.last().unwrap_or(&1.0),
                0.01,
            );
            summary.check_le(
                "population_bn_only_converges",
                "BN only: final train error",
                *get(ToyVariant::BnOnly).error.last().unwrap_or(&1.0),
                0.01,
            );
            summary.check_ge(
                "population_bn_wd_keeps_jumping",
                "BN + WD: error jumps above 0.05 after the first quarter",
                jumps(get(ToyVariant::BnWd), warmup, 0.05) as f64,
                2.0,
            );
        } else {
            let others =
                tail_error(get(ToyVariant::WdOnly)).max(tail_error(get(ToyVariant::BnOnly)));
            summary.check_ge(
                "minibatch_bn_wd_has_higher_error_floor",
                "BN + WD tail error over the larger of WD-only and BN-only",
                tail_error(get(ToyVariant::BnWd)) / others,
                1.5,
            );
        }
        let series = |f: fn(&ToyTrace) -> &Vec<f64>| -> Vec<Series> {
            traces
                .iter()
                .map(|(v, t)| Series {
                    label: v.as_str().into(),
                    points: t
                        .step
                        .iter()
                        .map(|s| *s as f64)
                        .zip(f(t).iter().copied())
                        .collect(),
                })
                .collect()
        };
        write_figure(
            dir,
            &format!("{regime}-train-error"),
            &Chart {
                title: format!("T1 toy example ({regime}): train error"),
                x_label: "step".into(),
                y_label: "train error".into(),
                log_y: false,
                series: series(|t| &t.error),
            },
            &mut figures,
        )?;
        write_figure(
            dir,
            &format!("{regime}-log-norm"),
            &Chart {
                title: format!("T1 toy example ({regime}): ln ‖w‖"),
                x_label: "step".into(),
                y_label: "ln ‖w‖".into(),
                log_y: false,
                series: series(|t| &t.log_norm),
            },
            &mut figures,
        )?;
    }
    Ok((summary, figures))
}
