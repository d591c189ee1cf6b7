//! Step-level exactness on real networks (X1–X3): each exponential twin trained in lockstep
//! with the weight-decay run it derives from, on the same batches, compared after rescaling by
//! its own P_t (THEORY.md §3–§5).

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use explr_data::{Batch, Loader, LoaderConfig};
use explr_nn::ParamStore;
use explr_schedule::{check_equivalences, TwinRun};
use explr_zoo::Model;

use super::error::ExperimentError;
use explr_manifest::dataset::load_data;
use explr_manifest::plan;
use explr_manifest::spec::Exactness;
use explr_results::plot::{Chart, Series};
use explr_results::summary::Summary;
use explr_train::context::{Progress, RunnerOptions};

fn max_rel_diff(a: &Tensor, b: &Tensor) -> Result<f64, ExperimentError> {
    let scale = a
        .abs()?
        .max_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    let diff = (a - b)?
        .abs()?
        .max_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    Ok(diff / scale.max(f64::MIN_POSITIVE))
}

/// Loss and gradients of one step.
type StepResult = candle_core::Result<(f64, candle_core::backprop::GradStore)>;

/// Loss and gradients of `model` on the batch of step `t` (training mode).
fn objective<'a>(
    model: &'a Model,
    batches: &'a [Batch],
) -> impl FnMut(u64, &[(String, candle_core::Var)]) -> StepResult + 'a {
    move |t, _| {
        let b = &batches[t as usize];
        let logits = model
            .forward_t(&b.images, true)
            .map_err(candle_core::Error::wrap)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &b.labels)?;
        Ok((loss.to_scalar::<f64>()?, loss.backward()?))
    }
}

/// X1–X3: each derived twin trained in lockstep with its `derive.from` base run on the same
/// batches, compared after rescaling by the twin's own P_t; twins in `tolerance` are checked,
/// `variants` only recorded.
pub fn run_exactness(
    spec: &Exactness,
    dir: &Path,
    opts: &RunnerOptions,
    progress: &dyn Progress,
) -> Result<(Summary, Vec<PathBuf>), ExperimentError> {
    let device = &opts.device;
    let dataset = load_data(&spec.data, opts.data_dir.as_deref())?;
    let mut model_spec = spec.model.clone();
    model_spec.num_classes = dataset.num_classes();
    let (batches, spe) = lockstep_batches(spec, &dataset, device)?;
    let probe = probe_batch(spec, &dataset, device)?;
    let mut summary = Summary::default();
    let mut series = Vec::new();
    // Twins grouped by their base run, in the order of their first twin: each base is
    // trained once, in lockstep with all of its twins.
    let mut groups: Vec<(&String, Vec<&String>)> = Vec::new();
    for (name, r) in &spec.runs {
        if let Some(d) = &r.derive {
            match groups.iter_mut().find(|(base, _)| *base == &d.from) {
                Some((_, twins)) => twins.push(name),
                None => groups.push((&d.from, vec![name])),
            }
        }
    }
    let build = |name: &str| -> Result<(Model, explr_schedule::Sgd), ExperimentError> {
        let store = ParamStore::new(device, DType::F64, spec.seed);
        let model = Model::new(&model_spec, &store)?;
        let sgd = plan::plan(&spec.runs, name, spe)?.build_sgd(&model)?;
        Ok((model, sgd))
    };
    // (base, report, logit difference) per twin, by name: the order of `spec.runs`.
    let mut results = std::collections::BTreeMap::new();
    for (base_name, twin_names) in groups {
        let walks = twin_names
            .iter()
            .map(|t| plan::twin(&spec.runs, t, spe))
            .collect::<Result<Vec<_>, _>>()?;
        for twin_name in &twin_names {
            progress.start(&format!("{base_name}_vs_{twin_name}"), spec.steps as u64);
        }
        let (base_model, mut base_sgd) = build(base_name)?;
        let (twin_models, mut twin_sgds): (Vec<Model>, Vec<explr_schedule::Sgd>) = twin_names
            .iter()
            .map(|t| build(t))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .unzip();
        let compare: Vec<String> = base_model
            .scale_invariant()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let scales: Vec<_> = walks.iter().map(|w| move |t: u64| w.scale(t)).collect();
        let mut objectives: Vec<_> = twin_models
            .iter()
            .map(|model| objective(model, &batches))
            .collect();
        let mut runs: Vec<TwinRun> = twin_sgds
            .iter_mut()
            .zip(&mut objectives)
            .zip(&scales)
            .map(|((sgd, objective), scale)| TwinRun {
                sgd,
                objective,
                scale,
            })
            .collect();
        let reports = check_equivalences(
            &mut base_sgd,
            &mut objective(&base_model, &batches),
            &mut runs,
            spec.steps as u64,
            &compare,
        )?;
        let base_logits = base_model.forward_t(&probe.images, true)?;
        for ((twin_name, twin_model), report) in twin_names.iter().zip(&twin_models).zip(reports) {
            let logit_diff =
                max_rel_diff(&base_logits, &twin_model.forward_t(&probe.images, true)?)?;
            results.insert(*twin_name, (base_name, report, logit_diff));
        }
    }
    for (twin_name, (base_name, report, logit_diff)) in results {
        let key = format!("{base_name}_vs_{twin_name}");
        write_report_csv(&dir.join(format!("{key}.csv")), &report)?;
        let (dev, ang) = record_twin(
            &mut summary,
            spec,
            (base_name, twin_name),
            &report,
            logit_diff,
        );
        progress.finish(
            &key,
            &format!("max deviation {dev:.2e}, max angle {ang:.2e}, logits {logit_diff:.2e}"),
        );
        series.push(Series::line(
            twin_name.clone(),
            report
                .rows
                .iter()
                .map(|r| (r.step as f64, r.deviation.max(1e-18)))
                .collect(),
        ));
    }
    let chart = Chart {
        title: "relative deviation |P_t θ_t − θ̃_t| / |θ̃_t|".into(),
        x_label: "step".into(),
        y_label: "deviation".into(),
        log_y: true,
        log_x: false,
        series,
        markers: Vec::new(),
    };
    let path = dir.join("deviation.svg");
    explr_io::write_atomic(&path, chart.to_svg().as_bytes())?;
    Ok((summary, vec![path]))
}

/// The training batches of the first `spec.steps` steps, in order (float64), and the steps
/// per epoch.
fn lockstep_batches(
    spec: &Exactness,
    dataset: &explr_data::Dataset,
    device: &candle_core::Device,
) -> Result<(Vec<Batch>, u64), ExperimentError> {
    let cfg = LoaderConfig {
        augment: if spec.data.augment {
            LoaderConfig::train(1, 0).augment
        } else {
            None
        },
        ..LoaderConfig::train(spec.data.batch_size, spec.seed)
    }
    .with_dtype(DType::F64);
    let loader = Loader::new(dataset.train(), cfg, device)?;
    let spe = loader.steps_per_epoch() as u64;
    let mut batches = Vec::new();
    for epoch in 0..spec.steps.div_ceil(spe as usize) {
        for b in loader.epoch(epoch as u64) {
            batches.push(b?);
        }
    }
    Ok((batches, spe))
}

/// The first test batch (float64), on which the trained base and twin are compared as
/// functions.
fn probe_batch(
    spec: &Exactness,
    dataset: &explr_data::Dataset,
    device: &candle_core::Device,
) -> Result<Batch, ExperimentError> {
    Ok(Loader::new(
        dataset.test(),
        LoaderConfig::eval(spec.data.batch_size).with_dtype(DType::F64),
        device,
    )?
    .epoch(0)
    .next()
    .ok_or(ExperimentError::EmptySplit { split: "test" })??)
}

/// Writes the step-by-step comparison of one base and twin as CSV.
fn write_report_csv(
    path: &Path,
    report: &explr_schedule::EquivalenceReport,
) -> Result<(), ExperimentError> {
    let mut csv = String::from("step,scale,deviation,angle,loss,twin_loss\n");
    for r in &report.rows {
        csv.push_str(&format!(
            "{},{:e},{:e},{:e},{:e},{:e}\n",
            r.step, r.scale, r.deviation, r.angle, r.loss, r.twin_loss
        ));
    }
    explr_io::write_atomic(path, csv.as_bytes())?;
    Ok(())
}

/// Records the comparison of `twin` with its `base` in `summary`, checked where the manifest
/// gives the twin a tolerance; returns the largest deviation and angle.
fn record_twin(
    summary: &mut Summary,
    spec: &Exactness,
    (base_name, twin_name): (&str, &str),
    report: &explr_schedule::EquivalenceReport,
    logit_diff: f64,
) -> (f64, f64) {
    let (dev, ang) = (report.max_deviation(), report.max_angle());
    let final_scale = report.rows.last().map(|r| r.scale).unwrap_or(f64::NAN);
    summary.magnitude(format!("{twin_name}.max_deviation"), dev);
    summary.magnitude(format!("{twin_name}.max_angle"), ang);
    summary.magnitude(format!("{twin_name}.final_logit_difference"), logit_diff);
    summary.metric(format!("{twin_name}.final_scale_p"), final_scale);
    // A variant (no tolerance) is recorded above, not judged.
    if let Some(&tol) = spec.tolerance.get(twin_name) {
        summary.check_le(
            format!("{twin_name}_exact"),
            format!("max over steps of |P_t θ_t − θ̃_t|/|θ̃_t| for {twin_name} (float64)"),
            dev,
            tol,
        );
        summary.check_le(
            format!("{twin_name}_same_function"),
            format!("relative logit difference of {base_name} and {twin_name} after training"),
            logit_diff,
            tol,
        );
    }
    (dev, ang)
}
