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
    /// What the binary knows about where it runs (recorded in every `metadata.json`).
    pub provenance: Provenance,
}

/// Where a result came from, as far as the binary can tell: recorded, with what the library
/// knows (versions, device, threads, CPU features, times), in the `metadata.json` next to
/// every manifest's summary and every training run's metrics.
#[derive(Clone, Debug, Default)]
pub struct Provenance {
    /// `git rev-parse HEAD` of the checkout that ran, with `+dirty` when tracked files had
    /// uncommitted changes; `None` outside a git checkout.
    pub git_revision: Option<String>,
    /// The command line.
    pub command: Vec<String>,
}

/// The metadata of a result: `fields` (what the result is) and the provenance.
pub fn metadata(
    opts: &RunnerOptions,
    fields: serde_json::Map<String, serde_json::Value>,
    wall_s: f64,
) -> serde_json::Value {
    use serde_json::json;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let device = match opts.device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    };
    let env = |k: &str| std::env::var(k).ok();
    let mut m = fields;
    for (k, v) in [
        ("wall_s", json!(wall_s)),
        ("finished_at_unix_s", json!(now)),
        ("device", json!(device)),
        ("git_revision", json!(opts.provenance.git_revision)),
        ("command", json!(opts.provenance.command)),
        (
            "versions",
            json!({
                "explr": env!("CARGO_PKG_VERSION"),
                "locked": env!("EXPLR_LOCKED_VERSIONS"),
                "rustc": env!("EXPLR_RUSTC_VERSION"),
            }),
        ),
        (
            "threads",
            json!({
                "available": std::thread::available_parallelism().map_or(0, |n| n.get()),
                "RAYON_NUM_THREADS": env("RAYON_NUM_THREADS"),
                "CANDLE_NUM_THREADS": env("CANDLE_NUM_THREADS"),
            }),
        ),
        ("os", json!(std::env::consts::OS)),
        ("arch", json!(std::env::consts::ARCH)),
        ("cpu_features", json!(cpu_features())),
    ] {
        m.insert(k.into(), v);
    }
    serde_json::Value::Object(m)
}

/// The SIMD extensions the kernels may use here: f32 results depend on them (summation order).
fn cpu_features() -> Vec<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        let mut f = Vec::new();
        if std::arch::is_x86_feature_detected!("avx2") {
            f.push("avx2");
        }
        if std::arch::is_x86_feature_detected!("fma") {
            f.push("fma");
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            f.push("avx512f");
        }
        f
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Vec::new()
    }
}

/// Writes `value` as pretty JSON to `path`, atomically.
pub fn write_metadata(path: &Path, value: &serde_json::Value) -> Result<(), RunError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| RunError::Serialize {
        what: "the metadata".into(),
        message: e.to_string(),
    })?;
    Ok(write_atomic(path, text.as_bytes())?)
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
    let wall_s = started.elapsed().as_secs_f64();
    let mut fields = serde_json::Map::new();
    fields.insert("manifest".into(), resolved.name.clone().into());
    fields.insert("profile".into(), resolved.profile.clone().into());
    fields.insert(
        "verdict".into(),
        value["verdict"].as_str().unwrap_or("?").into(),
    );
    write_metadata(&dir.join("metadata.json"), &metadata(opts, fields, wall_s))?;
    Ok(ManifestOutcome {
        passed: summary.passed(),
        summary: value,
        figures,
        wall_s,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_records_the_result_then_its_provenance() {
        let opts = RunnerOptions {
            results_dir: PathBuf::from("results"),
            resume: false,
            jobs: 1,
            data_dir: None,
            device: candle_core::Device::Cpu,
            max_epochs: None,
            provenance: Provenance {
                git_revision: Some("0123abcd+dirty".into()),
                command: vec!["explr".into(), "replicate".into(), "e3".into()],
            },
        };
        let mut fields = serde_json::Map::new();
        fields.insert("run".into(), "texp".into());
        let m = metadata(&opts, fields, 12.5);
        assert_eq!(m["run"], "texp");
        assert_eq!(m["wall_s"], 12.5);
        assert_eq!(m["device"], "cpu");
        assert_eq!(m["git_revision"], "0123abcd+dirty");
        assert_eq!(m["command"][2], "e3");
        assert_eq!(m["versions"]["explr"], env!("CARGO_PKG_VERSION"));
        // candle-core is the vendored, patched copy: a path dependency.
        let locked = m["versions"]["locked"].as_str().unwrap();
        assert!(locked.contains("candle-core 0.11.1 (path)"), "{locked}");
        assert!(locked.contains("gemm "), "{locked}");
        assert!(
            m["versions"]["rustc"]
                .as_str()
                .unwrap()
                .starts_with("rustc "),
            "{m}"
        );
        assert!(m["threads"]["available"].as_u64().unwrap() >= 1);
        assert_eq!(m["os"], std::env::consts::OS);
    }
}
