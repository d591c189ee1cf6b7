//! Prints the S1 table for the README: max over c ∈ {0.1, 10} of |L(cθ) − L(θ)| / L(θ) for
//! each small zoo model × norm, in float64 and training mode, with eps = 0 and eps = 1e-5.
//!
//! cargo run -p explr-zoo --example scale_invariance

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use explr_nn::ParamStore;
use explr_zoo::{Model, ModelSpec};

fn loss(model: &Model, x: &Tensor, labels: &Tensor) -> Result<f64> {
    let logits = model.forward_t(x, true)?;
    Ok(candle_nn::loss::cross_entropy(&logits, labels)?.to_scalar::<f64>()?)
}

fn main() -> Result<()> {
    let dev = Device::Cpu;
    let n = 3;
    let v: Vec<f64> = (0..n * 3 * 32 * 32)
        .map(|i| ((i as f64) * 0.7919).sin() + 0.3 * ((i as f64) * 0.1371).cos())
        .collect();
    let x = Tensor::from_vec(v, (n, 3, 32, 32), &dev)?;
    let labels = Tensor::from_vec(vec![1u32, 4, 7], n, &dev)?;
    println!("| model | norm | eps = 0 | eps = 1e-5 |\n|---|---|---|---|");
    for (arch, depth) in [("preresnet", 8), ("resnet", 8), ("vgg", 11)] {
        for norm in ["bn", "gn:2", "ln", "in"] {
            let mut cells = Vec::new();
            for eps in [0.0, 1e-5] {
                let yaml = format!(
                    "{{arch: {arch}, depth: {depth}, width: 4, norm: '{norm}', eps: {eps}}}"
                );
                let spec: ModelSpec = serde_yaml::from_str(&yaml)?;
                let model = Model::new(&spec, &ParamStore::new(&dev, DType::F64, 3))?;
                let base = loss(&model, &x, &labels)?;
                let mut worst: f64 = 0.0;
                for c in [0.1, 10.0] {
                    model.scale_scale_invariant(c)?;
                    worst = worst.max((loss(&model, &x, &labels)? - base).abs() / base);
                    model.scale_scale_invariant(1.0 / c)?;
                }
                cells.push(format!("{worst:.1e}"));
            }
            println!(
                "| {arch}-{depth} w4 | {norm} | {} | {} |",
                cells[0], cells[1]
            );
        }
    }
    Ok(())
}
