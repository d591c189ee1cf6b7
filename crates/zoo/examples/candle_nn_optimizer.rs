//! A zoo model trained by a candle-nn optimizer, its layers read through typed accessors.
//!
//! `ParamStore::trainable_vars` is what any `candle_nn::Optimizer` takes: the trainable
//! parameters in name order, never the BatchNorm running statistics (store buffers), so even
//! AdamW's decoupled weight decay cannot shrink them. `Model::norms`, `Model::convs` and
//! `Model::head` reach each layer's variables without string names.
//!
//! ```sh
//! cargo run --release -p explr-zoo --example candle_nn_optimizer
//! ```
//! `cargo test -p explr-zoo --example candle_nn_optimizer` runs its test.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use explr_nn::ParamStore;
use explr_zoo::{Arch, Model, ModelSpec};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const EPOCHS: u64 = 3;
const STEPS_PER_EPOCH: usize = 8;
const BATCH: usize = 32;
const CLASSES: usize = 4;

/// A narrow PreResNet-8 with trainable γ/β and head, and its AdamW.
fn build(store: &ParamStore) -> Result<(Model, AdamW)> {
    let spec = ModelSpec {
        num_classes: CLASSES,
        ..ModelSpec::new(Arch::PreResNet, 8).with_width(4)
    };
    let model = Model::new(&spec, store)?;
    let params = ParamsAdamW {
        lr: 0.01,
        weight_decay: 0.05,
        ..Default::default()
    };
    let adamw = AdamW::new(store.trainable_vars(), params)?;
    Ok((model, adamw))
}

/// `n` noisy 32×32 images from image `first` on, and their labels: class k tints the image
/// (k < 3: channel k brighter; 3: every channel darker), which a global average pool sees.
fn images(first: usize, n: usize) -> Result<(Tensor, Tensor)> {
    let plane = 32 * 32;
    let mut pixels = Vec::with_capacity(n * 3 * plane);
    let mut labels = Vec::with_capacity(n);
    for i in first..first + n {
        let class = i % CLASSES;
        for c in 0..3 {
            let tint = match class {
                3 => -0.5,
                k if k == c => 0.5,
                _ => 0.0,
            };
            for p in 0..plane {
                // Deterministic noise in [-1, 1].
                let noise = ((((i * 3 + c) * plane + p) as f64) * 12.9898).sin();
                pixels.push((noise + tint) as f32);
            }
        }
        labels.push(class as u32);
    }
    Ok((
        Tensor::from_vec(pixels, (n, 3, 32, 32), &Device::Cpu)?,
        Tensor::from_vec(labels, n, &Device::Cpu)?,
    ))
}

/// Mean training loss per epoch and the accuracy on held-out images (evaluation mode, so
/// through the running statistics).
fn train(model: &Model, adamw: &mut AdamW) -> Result<(Vec<f64>, f64)> {
    let (x, y) = images(0, STEPS_PER_EPOCH * BATCH)?;
    let mut losses = Vec::new();
    for _epoch in 0..EPOCHS {
        let mut sum = 0.0;
        for b in 0..STEPS_PER_EPOCH {
            let (xb, yb) = (
                x.narrow(0, b * BATCH, BATCH)?,
                y.narrow(0, b * BATCH, BATCH)?,
            );
            let loss = candle_nn::loss::cross_entropy(&model.forward_t(&xb, true)?, &yb)?;
            adamw.backward_step(&loss)?;
            sum += f64::from(loss.to_scalar::<f32>()?);
        }
        losses.push(sum / STEPS_PER_EPOCH as f64);
    }
    let (x_test, y_test) = images(STEPS_PER_EPOCH * BATCH, 64)?;
    let predicted = model.forward_t(&x_test, false)?.argmax(D::Minus1)?;
    let accuracy = predicted.eq(&y_test)?.to_dtype(DType::F64)?.mean_all()?;
    Ok((losses, accuracy.to_scalar::<f64>()?))
}

fn main() -> Result<()> {
    let store = ParamStore::new(&Device::Cpu, DType::F32, 0);
    let (model, mut adamw) = build(&store)?;
    let (losses, accuracy) = train(&model, &mut adamw)?;
    println!("train loss per epoch {losses:.3?}, test accuracy {accuracy:.3}");
    for norm in model.norms().into_iter().take(2) {
        let mean = norm
            .running_mean()
            .ok_or("BatchNorm keeps running statistics")?;
        let gamma = norm.weight().ok_or("γ is trainable here")?;
        println!(
            "{}: running_mean {:.3?}, γ {:.3?}",
            norm.name().unwrap_or("?"),
            mean.as_tensor().to_vec1::<f32>()?,
            gamma.as_tensor().to_vec1::<f32>()?
        );
    }
    let head = model.head();
    let norm = head.weight().as_tensor().sqr()?.sum_all()?.sqrt()?;
    println!(
        "{}.weight: ‖W‖ = {:.3}",
        head.name(),
        norm.to_scalar::<f32>()?
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1())
            .expect("a numeric tensor")
    }

    #[test]
    fn adamw_never_touches_the_running_statistics() -> Result<()> {
        let store = ParamStore::new(&Device::Cpu, DType::F32, 0);
        let (model, mut adamw) = build(&store)?;
        let buffers = store.buffers();
        let buffer_ids: Vec<_> = buffers.iter().map(|(_, v)| v.as_tensor().id()).collect();
        assert!(!buffers.is_empty());
        assert!(store
            .trainable_vars()
            .iter()
            .all(|v| !buffer_ids.contains(&v.as_tensor().id())));

        // One step on an evaluation-mode loss (which reads the running statistics and does
        // not update them): every trainable parameter with a gradient moves, no buffer does.
        // The values of the trainable parameters and of the buffers.
        let snapshot = || -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
            let params = store.trainable_vars();
            let params = params.iter().map(|v| values(v.as_tensor())).collect();
            (
                params,
                buffers.iter().map(|(_, v)| values(v.as_tensor())).collect(),
            )
        };
        let (params_before, buffers_before) = snapshot();
        let x = Tensor::arange(0f32, 2.0 * 3.0 * 32.0 * 32.0, &Device::Cpu)?
            .reshape((2, 3, 32, 32))?
            .sin()?;
        let labels = Tensor::new(&[3u32, 1], &Device::Cpu)?;
        let loss = candle_nn::loss::cross_entropy(&model.forward_t(&x, false)?, &labels)?;
        adamw.backward_step(&loss)?;
        let (params_after, buffers_after) = snapshot();
        assert_eq!(buffers_after, buffers_before);
        for (i, (a, b)) in params_after.iter().zip(&params_before).enumerate() {
            assert_ne!(a, b, "trainable parameter {i} did not move");
        }
        Ok(())
    }

    #[test]
    fn trains_and_reports_its_layers() -> Result<()> {
        let store = ParamStore::new(&Device::Cpu, DType::F32, 0);
        let (model, mut adamw) = build(&store)?;
        let (losses, accuracy) = train(&model, &mut adamw)?;
        // A model that learned nothing sits at the chance loss ln 4 and accuracy 1/4.
        let last = losses[losses.len() - 1];
        assert!(last < 0.5 * (CLASSES as f64).ln(), "{losses:?}");
        assert!(accuracy >= 0.9, "test accuracy {accuracy}");
        // The accessors name what the store holds.
        let names: Vec<&str> = model.norms().iter().filter_map(|n| n.name()).collect();
        assert_eq!(
            names,
            [
                "layer1.0.bn1",
                "layer1.0.bn2",
                "layer2.0.bn1",
                "layer2.0.bn2",
                "layer3.0.bn1",
                "layer3.0.bn2",
                "bn"
            ]
        );
        assert_eq!(model.head().name(), "fc");
        Ok(())
    }
}
