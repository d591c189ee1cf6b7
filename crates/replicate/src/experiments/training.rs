//! Training manifests (E1–E6, N1, A1): every model × run × seed, then the summary (final metrics
//! as mean ± std over seeds, curve distances, the claim's checks) and the paper-style figures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::RunError;
use crate::context::{Progress, RunnerOptions};
use crate::data::{dtype, load_data};
use crate::plan;
use crate::plot::{Chart, Series};
use crate::records::EpochRecord;
use crate::spec::{Check, Metric, Training};
use crate::summary::Summary;
use crate::trainer::{self, RunSetup};

/// Records of every (model, run, seed).
pub type AllRecords = BTreeMap<(String, String, u64), Vec<EpochRecord>>;

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
    let mut units = Vec::new();
    for (model_name, model) in &spec.models {
        for run_name in spec.runs.keys() {
            for &seed in &spec.seeds {
                units.push((model_name.clone(), model, run_name.clone(), seed));
            }
        }
    }
    let run_unit = |(model_name, model, run_name, seed): &(
        String,
        &explr_zoo::ModelSpec,
        String,
        u64,
    )|
     -> Result<Vec<EpochRecord>, RunError> {
        let setup = RunSetup {
            key: format!("{model_name}/{run_name}/seed-{seed}"),
            model,
            dataset: &dataset,
            batch_size: spec.data.batch_size,
            augment: spec.data.augment,
            dtype: dtype(spec.dtype),
            device,
            seed: *seed,
            epochs: spec.epochs,
            plan: plan::plan(&spec.runs, run_name, steps_per_epoch)?,
            checkpoint_every: spec.checkpoint_every,
            dir: dir
                .join(model_name)
                .join(run_name)
                .join(format!("seed-{seed}")),
            resume: opts.resume,
        };
        let records = trainer::train(&setup, progress)?;
        let mut fields = serde_json::Map::new();
        fields.insert("model".into(), model_name.clone().into());
        fields.insert("run".into(), run_name.clone().into());
        fields.insert("seed".into(), (*seed).into());
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
        .map(|((m, _, r, s), rec)| ((m.clone(), r.clone(), *s), rec))
        .collect();
    let summary = summarize(spec, &records, steps_per_epoch)?;
    let figures = figures(spec, &records, dir)?;
    Ok((summary, figures))
}

/// `spec` cut to its first `max_epochs` epochs (at least 1): the schedules stay those of the
/// full run (they are built from the runs, in epochs), only training stops early; checks that
/// need later epochs are dropped.
pub fn limit_epochs(spec: &Training, max_epochs: usize) -> Training {
    let epochs = spec.epochs.min(max_epochs.max(1));
    let mut limited = spec.clone();
    limited.epochs = epochs;
    limited.checks.retain(|c| match c {
        Check::CurvesOverlap { from_epoch, .. }
        | Check::WithinSeedNoise { from_epoch, .. }
        | Check::AngularUpdate { from_epoch, .. } => *from_epoch <= epochs,
        Check::NearlyConstant { to_epoch, .. } => *to_epoch <= epochs,
        Check::FinalGreater { from_epoch, .. } => from_epoch.is_none_or(|f| f <= epochs),
    });
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

/// The curve of `metric` for (model, run, seed).
fn seed_curve(records: &AllRecords, model: &str, run: &str, seed: u64, metric: Metric) -> Vec<f64> {
    records[&(model.to_string(), run.to_string(), seed)]
        .iter()
        .map(|r| r.get(metric))
        .collect()
}

/// Max over epochs `from_epoch..` (1-based) of |x − y|, or of |x/y − 1| when `relative`.
fn max_gap(x: &[f64], y: &[f64], from_epoch: usize, relative: bool) -> f64 {
    x.iter()
        .zip(y)
        .skip(from_epoch - 1)
        .map(|(x, y)| {
            if relative {
                (x / y - 1.0).abs()
            } else {
                (x - y).abs()
            }
        })
        .fold(0.0, f64::max)
}

/// The gap between runs `a` and `b` trained from the same seed (mean over seeds of
/// [`max_gap`]) and the seed-to-seed gap (mean of [`max_gap`] over every pair of seeds of `a`
/// and every pair of seeds of `b`): the two numbers `within_seed_noise` compares.
fn paired_and_seed_gaps(
    spec: &Training,
    records: &AllRecords,
    model: &str,
    (a, b): (&str, &str),
    metric: Metric,
    from_epoch: usize,
) -> Result<(f64, f64), RunError> {
    let curves = |run: &str| {
        spec.seeds
            .iter()
            .map(|&seed| seed_curve(records, model, run, seed, metric))
            .collect::<Vec<_>>()
    };
    let (ca, cb) = (curves(a), curves(b));
    let paired: Vec<f64> = ca
        .iter()
        .zip(&cb)
        .map(|(x, y)| max_gap(x, y, from_epoch, false))
        .collect();
    let mut between_seeds = Vec::new();
    for c in [&ca, &cb] {
        for i in 0..c.len() {
            for j in i + 1..c.len() {
                between_seeds.push(max_gap(&c[i], &c[j], from_epoch, false));
            }
        }
    }
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
    Ok((mean(&paired), mean(&between_seeds)))
}

/// The seed-averaged curve of `metric` for (model, run).
fn mean_curve(
    spec: &Training,
    records: &AllRecords,
    model: &str,
    run: &str,
    metric: Metric,
) -> Vec<f64> {
    let mut curve = vec![0.0; spec.epochs];
    for &seed in &spec.seeds {
        for (e, v) in seed_curve(records, model, run, seed, metric)
            .iter()
            .enumerate()
        {
            curve[e] += v / spec.seeds.len() as f64;
        }
    }
    curve
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

fn summarize(
    spec: &Training,
    records: &AllRecords,
    steps_per_epoch: u64,
) -> Result<Summary, RunError> {
    let mut s = Summary::default();
    s.count("steps_per_epoch", steps_per_epoch as usize);
    for model in spec.models.keys() {
        for run in spec.runs.keys() {
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
                if spec.seeds.len() > 1 && matches!(metric, Metric::TrainAcc | Metric::TestAcc) {
                    s.metric(format!("{model}.{run}.final_{metric}_std"), std);
                }
            }
        }
        for (i, check) in spec.checks.iter().enumerate() {
            let key = |what: &str| format!("{model}.{i}_{what}");
            match check {
                Check::CurvesOverlap {
                    a,
                    b,
                    metric,
                    tolerance,
                    relative,
                    from_epoch,
                } => {
                    let (ca, cb) = (
                        mean_curve(spec, records, model, a, *metric),
                        mean_curve(spec, records, model, b, *metric),
                    );
                    let dist = max_gap(&ca, &cb, *from_epoch, *relative);
                    let what = if *relative { "relative" } else { "max" };
                    s.metric(key(&format!("{what}_gap_{metric}_{a}_vs_{b}")), dist);
                    s.check_le(key("overlap"), format!("{model}: {what} gap over epochs {from_epoch}.. of {metric}({a}) and {metric}({b})"), dist, *tolerance);
                }
                Check::WithinSeedNoise {
                    a,
                    b,
                    metric,
                    factor,
                    from_epoch,
                } => {
                    let (paired, noise) =
                        paired_and_seed_gaps(spec, records, model, (a, b), *metric, *from_epoch)?;
                    s.metric(key(&format!("paired_gap_{metric}_{a}_vs_{b}")), paired);
                    s.metric(key(&format!("seed_gap_{metric}")), noise);
                    // No seed noise at all (every seed gave the same curve, e.g. a model
                    // stuck at chance) leaves nothing to compare with: that fails.
                    let ratio = if noise > 0.0 {
                        paired / noise
                    } else {
                        f64::INFINITY
                    };
                    s.check_le(
                        key("within_seed_noise"),
                        format!("{model}: max gap over epochs {from_epoch}.. of {metric}({a}) and {metric}({b}) from the same seed, divided by the same gap between two seeds of one run"),
                        ratio,
                        *factor,
                    );
                }
                Check::FinalGreater {
                    a,
                    b,
                    metric,
                    margin,
                    from_epoch,
                } => {
                    let from = from_epoch.unwrap_or(spec.epochs);
                    let end_mean = |run: &str| -> Result<f64, RunError> {
                        let c = mean_curve(spec, records, model, run, *metric);
                        let w = &c[from - 1..];
                        Ok(w.iter().sum::<f64>() / w.len() as f64)
                    };
                    let gap = end_mean(a)? - end_mean(b)?;
                    s.metric(key(&format!("final_gap_{metric}_{a}_vs_{b}")), gap);
                    let what = if from == spec.epochs {
                        format!("{model}: final {metric}({a}) - {metric}({b})")
                    } else {
                        format!(
                            "{model}: mean over epochs {from}.. of {metric}({a}) - {metric}({b})"
                        )
                    };
                    s.check_ge(key("greater"), what, gap, *margin);
                }
                Check::AngularUpdate {
                    run,
                    from_epoch,
                    tolerance,
                } => {
                    let r = &spec.runs[run];
                    let lr_curve = mean_curve(spec, records, model, run, Metric::Lr);
                    let measured = mean_curve(spec, records, model, run, Metric::AngularUpdate);
                    let window = *from_epoch - 1..spec.epochs;
                    let n = window.len() as f64;
                    let got = measured[window.clone()].iter().sum::<f64>() / n;
                    // THEORY.md §8: sqrt(2ηλ/(1+γ)) at equilibrium.
                    let predicted = lr_curve[window]
                        .iter()
                        .map(|lr| (2.0 * lr * r.weight_decay / (1.0 + r.momentum)).sqrt())
                        .sum::<f64>()
                        / n;
                    s.metric(key(&format!("angular_update_{run}")), got);
                    s.metric(key(&format!("angular_update_predicted_{run}")), predicted);
                    s.check_le(
                        key("angular_update"),
                        format!("{model}: |measured/predicted - 1| of the angular update of {run}"),
                        (got / predicted - 1.0).abs(),
                        *tolerance,
                    );
                }
                Check::NearlyConstant {
                    run,
                    metric,
                    from_epoch,
                    to_epoch,
                    tolerance,
                } => {
                    let c = mean_curve(spec, records, model, run, *metric);
                    let w = &c[*from_epoch - 1..*to_epoch];
                    let mean = w.iter().sum::<f64>() / w.len() as f64;
                    let spread = w.iter().map(|x| (x / mean - 1.0).abs()).fold(0.0, f64::max);
                    s.metric(key(&format!("spread_{metric}_{run}")), spread);
                    s.check_le(key("constant"), format!("{model}: max relative deviation of {metric}({run}) from its mean over epochs {from_epoch}..={to_epoch}"), spread, *tolerance);
                }
            }
        }
    }
    Ok(s)
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
    for model in spec.models.keys() {
        for (metric, label, log_y) in panels {
            let series = spec
                .runs
                .keys()
                .map(|run| {
                    let c = mean_curve(spec, records, model, run, metric);
                    Ok::<_, RunError>(Series {
                        label: run.clone(),
                        points: c
                            .iter()
                            .enumerate()
                            .map(|(e, y)| ((e + 1) as f64, *y))
                            .collect(),
                    })
                })
                .collect::<Result<Vec<_>, RunError>>()?;
            let chart = Chart {
                title: format!("{model}: {label}"),
                x_label: "epoch".into(),
                y_label: label.into(),
                log_y,
                series,
            };
            let path = dir.join(format!("{model}-{metric}.svg"));
            crate::io::write_atomic(&path, chart.to_svg().as_bytes())?;
            out.push(path);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Training {
        serde_yaml::from_str(
            r#"
models: {m: {arch: preresnet, depth: 8}}
data: {dataset: synthetic, batch_size: 4}
seeds: [0]
epochs: 10
runs:
  a: {weight_decay: 5.0e-4, schedule: {kind: multistep, lr: 0.1, milestones: [5], gamma: 0.1}}
checks:
  - {check: curves_overlap, a: a, b: a, metric: train_acc, tolerance: 0.1}
  - {check: curves_overlap, a: a, b: a, metric: train_acc, tolerance: 0.1, from_epoch: 5}
  - {check: angular_update, run: a, from_epoch: 3, tolerance: 0.2}
  - {check: nearly_constant, run: a, metric: lr, from_epoch: 1, to_epoch: 3, tolerance: 0.1}
  - {check: nearly_constant, run: a, metric: lr, from_epoch: 1, to_epoch: 9, tolerance: 0.1}
  - {check: final_greater, a: a, b: a, metric: test_acc, margin: 0.0}
  - {check: final_greater, a: a, b: a, metric: test_acc, margin: 0.0, from_epoch: 5}
"#,
        )
        .unwrap()
    }

    #[test]
    fn limit_epochs_stops_early_and_drops_checks_beyond_the_limit() {
        let full = spec();
        let three = limit_epochs(&full, 3);
        assert_eq!(three.epochs, 3);
        // Kept: overlap from epoch 1, angular update from 3, constant over 1..=3, final.
        let kept: Vec<&str> = three
            .checks
            .iter()
            .map(|c| match c {
                Check::CurvesOverlap { .. } => "overlap",
                Check::WithinSeedNoise { .. } => "noise",
                Check::AngularUpdate { .. } => "angular",
                Check::NearlyConstant { .. } => "constant",
                Check::FinalGreater { .. } => "final",
            })
            .collect();
        // The final_greater averaging from epoch 5 is dropped.
        assert_eq!(kept, ["overlap", "angular", "constant", "final"]);
        // The runs (their schedules, in epochs) are untouched.
        assert_eq!(three.runs, full.runs);
        assert_eq!(limit_epochs(&full, 0).epochs, 1);
        // A limit past the end changes nothing.
        assert_eq!(limit_epochs(&full, 50), full);
    }

    fn record(epoch: usize, test_acc: f64) -> EpochRecord {
        EpochRecord {
            epoch,
            step: epoch as u64,
            lr: 0.1,
            train_loss: 1.0,
            train_acc: 0.5,
            test_loss: 1.0,
            test_acc,
            si_norm: 1.0,
            layer_norm: 1.0,
            norm_sq_over_lr: 10.0,
            effective_lr: 0.1,
            angular_update: 0.01,
            wall_s: 1.0,
        }
    }

    /// Records of runs `a` and `b` over seeds 0 and 1: seed `s` of run `r` has test accuracy
    /// `0.5 + seed_shift·s + run_shift·[r = b]` at every epoch but the first (0.1 everywhere).
    fn records(seed_shift: f64, run_shift: f64) -> AllRecords {
        let mut all = AllRecords::new();
        for (run, shift) in [("a", 0.0), ("b", run_shift)] {
            for seed in [0u64, 1] {
                let curve = (1..=4)
                    .map(|e| {
                        let acc = if e == 1 {
                            0.1
                        } else {
                            0.5 + seed_shift * seed as f64 + shift
                        };
                        record(e, acc)
                    })
                    .collect();
                all.insert(("m".into(), run.into(), seed), curve);
            }
        }
        all
    }

    fn noise_spec(factor: f64, from_epoch: usize) -> Training {
        serde_yaml::from_str(&format!(
            r#"
models: {{m: {{arch: preresnet, depth: 8}}}}
data: {{dataset: synthetic, batch_size: 4}}
seeds: [0, 1]
epochs: 4
runs:
  a: {{schedule: {{kind: constant, lr: 0.1}}}}
  b: {{schedule: {{kind: constant, lr: 0.1}}}}
checks:
  - {{check: within_seed_noise, a: a, b: b, metric: test_acc, factor: {factor}, from_epoch: {from_epoch}}}
"#
        ))
        .unwrap()
    }

    #[test]
    fn within_seed_noise_compares_the_paired_gap_with_the_seed_to_seed_gap() {
        let verdict = |seed_shift, run_shift, factor| {
            let s = summarize(&noise_spec(factor, 2), &records(seed_shift, run_shift), 1).unwrap();
            let check = &s.checks()["m.0_within_seed_noise"];
            (check.value, check.pass)
        };
        // Seeds 0.1 apart, runs 0.05 apart: the ratio is 0.5.
        let (ratio, pass) = verdict(0.1, 0.05, 1.0);
        assert!((ratio - 0.5).abs() < 1e-12, "{ratio}");
        assert!(pass);
        // Runs 0.2 apart: twice the seed noise, fails at factor 1, passes at 2.5.
        let (ratio, pass) = verdict(0.1, 0.2, 1.0);
        assert!((ratio - 2.0).abs() < 1e-12, "{ratio}");
        assert!(!pass);
        assert!(verdict(0.1, 0.2, 2.5).1);
        // Without seed noise there is nothing to compare with, even when the runs agree:
        // curves that never move (a model stuck at chance) must not pass.
        assert!(!verdict(0.0, 0.0, 1.0).1);
        assert!(!verdict(0.0, 0.01, 1.0).1);
    }

    #[test]
    fn within_seed_noise_defaults_to_one_and_a_half_times_the_seed_gap() {
        let check: Check =
            serde_yaml::from_str("{check: within_seed_noise, a: a, b: b, metric: test_acc}")
                .unwrap();
        let Check::WithinSeedNoise {
            factor, from_epoch, ..
        } = check
        else {
            panic!("{check:?}")
        };
        assert_eq!((factor, from_epoch), (1.5, 1));
    }

    #[test]
    fn within_seed_noise_counts_from_its_first_epoch() {
        // The first epoch is 0.1 for every run and seed: from epoch 1 the seed gap is the same
        // as from epoch 2, but a run gap only in epoch 1 would count. Shift only epoch 1 of b.
        let mut all = records(0.1, 0.0);
        for seed in [0u64, 1] {
            all.get_mut(&("m".to_string(), "b".to_string(), seed))
                .unwrap()[0]
                .test_acc = 0.9;
        }
        let value = |from| {
            summarize(&noise_spec(1.0, from), &all, 1).unwrap().checks()["m.0_within_seed_noise"]
                .value
        };
        assert!((value(1) - 8.0).abs() < 1e-12, "{}", value(1));
        assert_eq!(value(2), 0.0);
    }

    #[test]
    fn final_greater_compares_the_last_epoch_or_the_mean_from_its_first_epoch() {
        // Run b is 0.2 above a in epochs 2 and 3, 0.1 below it in epoch 4.
        let mut all = records(0.0, 0.0);
        for seed in [0u64, 1] {
            let b = all
                .get_mut(&("m".to_string(), "b".to_string(), seed))
                .unwrap();
            b[1].test_acc += 0.2;
            b[2].test_acc += 0.2;
            b[3].test_acc -= 0.1;
        }
        let gap = |from: Option<usize>| {
            let mut spec = noise_spec(1.0, 1);
            spec.checks = vec![Check::FinalGreater {
                a: "b".into(),
                b: "a".into(),
                metric: Metric::TestAcc,
                margin: 0.0,
                from_epoch: from,
            }];
            let s = summarize(&spec, &all, 1).unwrap();
            let c = &s.checks()["m.0_greater"];
            (c.value, c.pass)
        };
        let (last, pass) = gap(None);
        assert!((last + 0.1).abs() < 1e-12 && !pass, "{last}");
        let (mean, pass) = gap(Some(2));
        assert!((mean - 0.1).abs() < 1e-12 && pass, "{mean}");
    }
}
