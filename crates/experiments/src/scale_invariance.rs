//! S1: every model is scale invariant in its declared group, L(c·θ_SI) = L(θ) (THEORY.md §1),
//! checked in float64 with eps 0 on one probe batch.

use std::path::PathBuf;

use candle_core::{DType, Device};
use explr_data::{Batch, Loader, LoaderConfig};
use explr_nn::ParamStore;
use explr_zoo::Model;

use super::error::ExperimentError;
use explr_manifest::spec::ScaleInvariance;
use explr_results::summary::Summary;
use explr_train::context::Progress;
use explr_train::trainer::loss_and_correct;

fn loss_value(model: &Model, batch: &Batch) -> Result<f64, ExperimentError> {
    let logits = model.forward_t(&batch.images, true)?;
    let (loss, _) = loss_and_correct(&logits, &batch.labels)?;
    Ok(loss.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// S1: L(c·θ_SI) against L(θ) for every model and factor, on `device`.
pub fn run_scale_invariance(
    spec: &ScaleInvariance,
    device: &Device,
    progress: &dyn Progress,
) -> Result<(Summary, Vec<PathBuf>), ExperimentError> {
    let data = explr_data::load_synthetic(&explr_data::SyntheticConfig {
        seed: spec.seed,
        train_size: spec.batch_size,
        test_size: 1,
        ..Default::default()
    })?;
    let batch = Loader::new(
        data.train(),
        LoaderConfig::eval(spec.batch_size).with_dtype(DType::F64),
        device,
    )?
    .epoch(0)
    .next()
    .ok_or(ExperimentError::EmptySplit { split: "train" })??;
    let mut summary = Summary::default();
    let mut worst: f64 = 0.0;
    for (name, model_spec) in &spec.models {
        progress.start(name, spec.factors.len() as u64);
        let store = ParamStore::new(device, DType::F64, spec.seed);
        let model = Model::new(model_spec, &store)?;
        summary.count(
            format!("{name}.scale_invariant_tensors"),
            model.scale_invariant().len(),
        );
        let base = loss_value(&model, &batch)?;
        let mut model_worst: f64 = 0.0;
        for &c in &spec.factors {
            model.scale_scale_invariant(c)?;
            let scaled = loss_value(&model, &batch)?;
            model.scale_scale_invariant(1.0 / c)?;
            model_worst = model_worst.max((scaled - base).abs() / base.abs());
        }
        summary.magnitude(format!("{name}.max_relative_loss_change"), model_worst);
        worst = worst.max(model_worst);
        progress.finish(name, &format!("max relative loss change {model_worst:.2e}"));
    }
    summary.check_le(
        "all_models_scale_invariant",
        "max over models and factors of |L(cθ) − L(θ)|/|L(θ)| (float64, eps 0)",
        worst,
        spec.tolerance,
    );
    Ok((summary, Vec::new()))
}
