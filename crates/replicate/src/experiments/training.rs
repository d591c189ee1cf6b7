//! Training manifests (E1–E6, N1, A1): every model × run × seed, the claimed runs and the
//! negative controls alike, then the summary (final metrics as mean ± std over seeds, the
//! claim's checks and controls with the verdict, [`super::checks`]) and the paper-style
//! figures (seed mean with a min–max band, controls dashed, milestones marked).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use explr_zoo::ModelSpec;

use super::checks::{self, AllRecords, Evidence};
use super::error::RunError;
use crate::context::{Progress, RunnerOptions};
use crate::data::{dtype, load_data};
use crate::plan::{self, OptimizerPlan};
use crate::plot::{Chart, Series};
use crate::records::EpochRecord;
use crate::spec::{Check, Metric, Training};
use crate::summary::Summary;
use crate::trainer::{self, RunSetup};

/// The folder of one run's results.
fn run_dir(dir: &Path, model: &str, run: &str, seed: u64) -> PathBuf {
    dir.join(model).join(run).join(format!("seed-{seed}"))
}

/// Runs a training manifest; returns its summary and figures.
pub fn run_training(
    spec: &Training,
    dir: &Path,
    opts: &RunnerOptions,
    progress: &dyn Progress,
) -> Result<(Summary, Vec<PathBuf>), RunError> {
    let dataset = load_data(&spec.data, opts.data_dir.as_deref())?;
    let device = &opts.device;
    let limited = opts.max_epochs.map(|m| limit_epochs(spec, m));
    let spec = limited.as_ref().unwrap_or(spec);
    let steps_per_epoch = dataset.train().len().div_ceil(spec.data.batch_size) as u64;
    let runs = spec.all_runs();
    let plans: BTreeMap<&str, OptimizerPlan> = runs
        .keys()
        .map(|name| Ok((name.as_str(), plan::plan(&runs, name, steps_per_epoch)?)))
        .collect::<Result<_, RunError>>()?;
    // The epochs whose weights a check compares: each run keeps a snapshot of them.
    let snapshot_epochs: BTreeSet<usize> = spec
        .checks
        .iter()
        .filter_map(|c| match c {
            Check::WeightDistance { epoch, .. } => Some(*epoch),
            _ => None,
        })
        .collect();
    let mut units = Vec::new();
    for (model_name, model) in &spec.models {
        for run_name in runs.keys() {
            for &seed in &spec.seeds {
                units.push((model_name.as_str(), model, run_name.as_str(), seed));
            }
        }
    }
    let run_unit = |&(model_name, model, run_name, seed): &(&str, &ModelSpec, &str, u64)|
     -> Result<Vec<EpochRecord>, RunError> {
        let setup = RunSetup {
            key: format!("{model_name}/{run_name}/seed-{seed}"),
            model,
            dataset: &dataset,
            batch_size: spec.data.batch_size,
            augment: spec.data.augment,
            dtype: dtype(spec.dtype),
            device,
            seed,
            epochs: spec.epochs,
            plan: plans[run_name].clone(),
            checkpoint_every: spec.checkpoint_every,
            snapshot_epochs: snapshot_epochs.iter().copied().collect(),
            dir: run_dir(dir, model_name, run_name, seed),
            resume: opts.resume,
        };
        let records = trainer::train(&setup, progress)?;
        let mut fields = serde_json::Map::new();
        fields.insert("model".into(), model_name.into());
        fields.insert("run".into(), run_name.into());
        fields.insert("seed".into(), seed.into());
        fields.insert("dtype".into(), format!("{:?}", setup.dtype).into());
        fields.insert("epochs".into(), records.len().into());
        fields.insert("steps".into(), records.last().map_or(0, |r| r.step).into());
        // The epochs' own wall times: a resumed run counts the epochs before the resume too.
        let wall_s = records.iter().map(|r| r.wall_s).sum::<f64>();
        crate::io::write_json(
            &setup.dir.join("metadata.json"),
            &crate::context::metadata(opts, fields, wall_s),
        )?;
        Ok(records)
    };
    let results = parallel_map(&units, opts.jobs, run_unit, |(m, _, r, s)| {
        format!("{m}/{r}/seed-{s}")
    })?;
    let records: AllRecords = units
        .iter()
        .zip(results)
        .map(|((m, _, r, s), rec)| ((m.to_string(), r.to_string(), *s), rec))
        .collect();
    let distance = |model: &str, a: &str, b: &str, seed: u64, epoch: usize| {
        weight_distance(dir, &records, &plans, (model, seed, epoch), (a, b))
    };
    let mut summary = Summary::default();
    summary.count("steps_per_epoch", steps_per_epoch as usize);
    final_metrics(spec, &records, &mut summary);
    checks::evaluate(
        &Evidence {
            spec,
            records: &records,
            distance: &distance,
        },
        &mut summary,
    )?;
    if let Some(expect) = &spec.expect {
        summary.expect(expect.verdict, &expect.reason);
    }
    let figures = figures(spec, &records, dir)?;
    Ok((summary, figures))
}

/// ‖(P^b_t/P^a_t)·θ^a_t − θ^b_t‖ / ‖θ^b_t‖ of the scale-invariant group at the end of
/// `epoch`, from the two runs' weight snapshots, summed over tensors in name order (float64).
fn weight_distance(
    dir: &Path,
    records: &AllRecords,
    plans: &BTreeMap<&str, OptimizerPlan>,
    (model, seed, epoch): (&str, u64, usize),
    (a, b): (&str, &str),
) -> Result<f64, RunError> {
    let step = records[&(model.to_string(), a.to_string(), seed)][epoch - 1].step;
    let p = plans[b].scale(step)? / plans[a].scale(step)?;
    let load =
        |run: &str| trainer::read_snapshot(&run_dir(dir, model, run, seed), epoch, &Device::Cpu);
    let (wa, wb) = (load(a)?, load(b)?);
    let (mut diff, mut norm) = (0.0, 0.0);
    for (name, tb) in &wb {
        let ta = wa.get(name).ok_or_else(|| trainer::TrainError::Snapshot {
            path: run_dir(dir, model, a, seed),
            message: format!("has no tensor `{name}`"),
        })?;
        let (ta, tb) = (ta.to_dtype(DType::F64)?, tb.to_dtype(DType::F64)?);
        diff += sum_sq(&(ta.affine(p, 0.0)? - &tb)?)?;
        norm += sum_sq(&tb)?;
    }
    Ok(diff.sqrt() / norm.sqrt())
}

fn sum_sq(t: &Tensor) -> Result<f64, RunError> {
    Ok(t.sqr()?.sum_all()?.to_scalar::<f64>()?)
}

/// `spec` cut to its first `max_epochs` epochs (at least 1): the schedules stay those of the
/// full run (they are built from the runs, in epochs), only training stops early; checks that
/// need later epochs are dropped.
pub fn limit_epochs(spec: &Training, max_epochs: usize) -> Training {
    let epochs = spec.epochs.min(max_epochs.max(1));
    let mut limited = spec.clone();
    limited.epochs = epochs;
    limited
        .checks
        .retain(|c| c.windows().iter().all(|w| w[1] <= epochs));
    limited
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

fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// Each run's final metrics (mean over seeds, and the spread of accuracies), and per model the
/// best final test accuracy of the claimed runs: the level the claim was tested at.
fn final_metrics(spec: &Training, records: &AllRecords, s: &mut Summary) {
    let runs = spec.all_runs();
    for model in spec.models.keys() {
        let mut best_test = 0.0f64;
        for run in runs.keys() {
            for metric in [
                Metric::TrainLoss,
                Metric::TrainAcc,
                Metric::TestAcc,
                Metric::SiNorm,
                Metric::AngularUpdate,
            ] {
                let finals: Vec<f64> = spec
                    .seeds
                    .iter()
                    .map(|seed| {
                        records[&(model.clone(), run.clone(), *seed)]
                            .last()
                            .expect("epochs > 0")
                            .get(metric)
                    })
                    .collect();
                let (mean, std) = mean_std(&finals);
                s.metric(format!("{model}.{run}.final_{metric}"), mean);
                let accuracy = matches!(metric, Metric::TrainAcc | Metric::TestAcc);
                if spec.seeds.len() > 1 && accuracy {
                    s.metric(format!("{model}.{run}.final_{metric}_std"), std);
                }
                if metric == Metric::TestAcc && spec.runs.contains_key(run) {
                    best_test = best_test.max(mean);
                }
            }
        }
        s.metric(format!("{model}.best_final_test_acc"), best_test);
    }
}

/// "PreResNet-20 (bn, width 8)": the model actually trained, for figure titles.
fn model_title(m: &ModelSpec) -> String {
    let arch = match m.arch {
        explr_zoo::Arch::PreResNet => "PreResNet",
        explr_zoo::Arch::ResNet => "ResNet",
        explr_zoo::Arch::Vgg => "VGG",
    };
    format!(
        "{arch}-{} ({}, width {})",
        m.depth,
        m.norm,
        m.resolved_width()
    )
}

fn figures(spec: &Training, records: &AllRecords, dir: &Path) -> Result<Vec<PathBuf>, RunError> {
    let mut out = Vec::new();
    let panels = [
        (Metric::TrainLoss, "train loss", false),
        (Metric::TestAcc, "test accuracy", false),
        (Metric::TrainAcc, "train accuracy", false),
        (Metric::Lr, "learning rate", true),
        (Metric::SiNorm, "‖θ‖ of the scale-invariant group", true),
        (Metric::NormSqOverLr, "‖θ‖²/η", true),
        (Metric::AngularUpdate, "angular update per step (rad)", true),
    ];
    let runs = spec.all_runs();
    let milestones: BTreeSet<u64> = spec
        .runs
        .values()
        .filter_map(|r| r.schedule.as_ref())
        .chain(
            spec.runs
                .values()
                .filter_map(|r| r.weight_decay_schedule.as_ref()),
        )
        .flat_map(|s| s.milestones())
        .collect();
    for (model, model_spec) in &spec.models {
        for (metric, label, log_y) in panels {
            let series = runs
                .keys()
                .map(|run| {
                    let per_epoch: Vec<Vec<f64>> = (0..spec.epochs)
                        .map(|e| {
                            spec.seeds
                                .iter()
                                .map(|seed| {
                                    records[&(model.clone(), run.clone(), *seed)][e].get(metric)
                                })
                                .collect()
                        })
                        .collect();
                    let x = |e: usize| (e + 1) as f64;
                    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
                    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
                    let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let control = spec.controls.contains_key(run);
                    Series {
                        label: if control {
                            format!("{run} (control)")
                        } else {
                            run.clone()
                        },
                        points: per_epoch
                            .iter()
                            .enumerate()
                            .map(|(e, v)| (x(e), mean(v)))
                            .collect(),
                        band: if spec.seeds.len() > 1 {
                            per_epoch
                                .iter()
                                .enumerate()
                                .map(|(e, v)| (x(e), min(v), max(v)))
                                .collect()
                        } else {
                            Vec::new()
                        },
                        dashed: control,
                    }
                })
                .collect();
            let chart = Chart {
                title: format!("{}: {label}", model_title(model_spec)),
                x_label: "epoch".into(),
                y_label: if spec.seeds.len() > 1 {
                    format!("{label}, mean and range of {} seeds", spec.seeds.len())
                } else {
                    label.into()
                },
                log_y,
                series,
                markers: milestones
                    .iter()
                    // A milestone at epoch m starts epoch m + 1: the line sits between them.
                    .map(|&m| (m as f64 + 0.5, format!("milestone {m}")))
                    .collect(),
            };
            let path = dir.join(format!("{model}-{metric}.svg"));
            crate::io::write_atomic(&path, chart.to_svg().as_bytes())?;
            out.push(path);
        }
    }
    Ok(out)
}
