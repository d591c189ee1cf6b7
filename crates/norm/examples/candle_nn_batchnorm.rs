//! A plain candle-nn model with explr's `BatchNorm2d`, trained by explr's `Sgd` with TEXP.
//!
//! The convs and the classifier are candle-nn's own layers (`candle_nn::conv2d_no_bias`,
//! `candle_nn::linear`), built through `Path::var_builder` so that they live in the same
//! `ParamStore` as the BatchNorms: one seeded store, every parameter with its role, the running
//! statistics as buffers that no optimizer sees. With γ/β frozen (the paper's setup) the convs
//! are scale invariant (THEORY.md §1), so they take the TEXP schedule without weight decay while
//! the head keeps step decay with weight decay (THEORY.md §1's exact alternative, §5).
//!
//! ```sh
//! cargo run --release -p explr-norm --example candle_nn_batchnorm
//! ```
//! `cargo test -p explr-norm --example candle_nn_batchnorm` runs its test.

use std::collections::BTreeMap;

use candle_core::{DType, Device, ModuleT, Tensor, D};
use candle_nn::{Conv2d, Conv2dConfig, Linear};
use explr_nn::{ParamStore, Path, Role};
use explr_norm::{BatchNorm2d, NormConfig};
use explr_schedule::{ParamGroup, Schedule, Sgd, SgdConfig, Twin, Unit};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const CLASSES: usize = 4;
const SIDE: usize = 8;
const STEPS_PER_EPOCH: usize = 4;
const BATCH: usize = 16;
const EPOCHS: u64 = 12;
/// Step decay ÷10 at these epochs, and its TEXP twin.
const MILESTONES: [u64; 2] = [6, 9];
const LR: f64 = 0.1;
const WEIGHT_DECAY: f64 = 5e-3;
const MOMENTUM: f64 = 0.9;

/// conv → BN → ReLU → conv → BN → ReLU → 4×4 average pool (a 2×2 map per channel, which
/// keeps where in the image a feature is) → linear.
struct Net {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    fc: Linear,
}

impl Net {
    fn new(root: &Path) -> Result<Self> {
        let same = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        // The paper's setup: γ = 1, β = 0 frozen, so that the convs are scale invariant.
        let frozen = NormConfig::default().frozen();
        let conv = |name: &str, cin, cout| {
            let vb = root.push(name).var_builder(Role::ScaleInvariant);
            candle_nn::conv2d_no_bias(cin, cout, 3, same, vb)
        };
        Ok(Self {
            conv1: conv("conv1", 3, 8)?,
            bn1: BatchNorm2d::new(&root.push("bn1"), 8, &frozen)?,
            conv2: conv("conv2", 8, 8)?,
            bn2: BatchNorm2d::new(&root.push("bn2"), 8, &frozen)?,
            fc: candle_nn::linear(8 * 4, CLASSES, root.push("fc").var_builder(Role::Head))?,
        })
    }
}

impl ModuleT for Net {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        x.apply(&self.conv1)?
            .apply_t(&self.bn1, train)?
            .relu()?
            .apply(&self.conv2)?
            .apply_t(&self.bn2, train)?
            .relu()?
            .avg_pool2d(SIDE / 2)?
            .flatten_from(1)?
            .apply(&self.fc)
    }
}

/// `n` noisy images whose class is the quadrant holding a bright square, and their labels.
fn images(n: usize, seed: u64) -> Result<(Tensor, Tensor)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let half = SIDE / 2;
    let mut pixels = Vec::with_capacity(n * 3 * SIDE * SIDE);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = i % CLASSES;
        let (top, left) = ((class / 2) * half, (class % 2) * half);
        for _channel in 0..3 {
            for y in 0..SIDE {
                for x in 0..SIDE {
                    let inside = (top..top + half).contains(&y) && (left..left + half).contains(&x);
                    let noise: f64 = StandardNormal.sample(&mut rng);
                    pixels.push(if inside { 1.0 } else { 0.0 } + 0.5 * noise);
                }
            }
        }
        labels.push(class as u32);
    }
    Ok((
        Tensor::from_vec(pixels, (n, 3, SIDE, SIDE), &Device::Cpu)?,
        Tensor::from_vec(labels, n, &Device::Cpu)?,
    ))
}

/// What training reports.
struct Outcome {
    /// Mean training loss of the first and the last epoch.
    first_loss: f64,
    last_loss: f64,
    /// Accuracy on held-out images, in evaluation mode (running statistics).
    test_accuracy: f64,
    /// The LR of the last update: TEXP for the convs, step decay for the head.
    last_lr_texp: f64,
    last_lr_step_decay: f64,
}

fn train(store: &ParamStore, net: &Net) -> Result<Outcome> {
    let unit = Unit::Epochs(STEPS_PER_EPOCH as u64);
    let step_decay = Schedule::multistep(LR, &MILESTONES, 0.1, unit)?;
    // THEORY.md §5: TEXP, with its pre-fill and one-time momentum corrections.
    let texp = Twin::texp(&step_decay, WEIGHT_DECAY, MOMENTUM)?;
    // The store's groups by role: trainable parameters only, never the running statistics.
    let mut groups: BTreeMap<Role, Vec<_>> = store.trainable_groups();
    let scale_invariant = groups.remove(&Role::ScaleInvariant).unwrap_or_default();
    let head = groups.remove(&Role::Head).unwrap_or_default();
    let groups = vec![
        // The twin pre-fills the momentum buffer (THEORY.md §3) and applies its corrections.
        ParamGroup::new("scale_invariant", scale_invariant).twin(texp.clone()),
        ParamGroup::new("head", head)
            .schedule(step_decay.clone())
            .weight_decay(WEIGHT_DECAY),
    ];
    let mut sgd = Sgd::from_groups(groups, SgdConfig::momentum(MOMENTUM))?;

    let (x, y) = images(STEPS_PER_EPOCH * BATCH, 1)?;
    let mut epoch_losses = Vec::new();
    for _epoch in 0..EPOCHS {
        let mut sum = 0.0;
        for b in 0..STEPS_PER_EPOCH {
            let (xb, yb) = (
                x.narrow(0, b * BATCH, BATCH)?,
                y.narrow(0, b * BATCH, BATCH)?,
            );
            let loss = candle_nn::loss::cross_entropy(&net.forward_t(&xb, true)?, &yb)?;
            sgd.step(&loss.backward()?)?;
            sum += loss.to_scalar::<f64>()?;
        }
        epoch_losses.push(sum / STEPS_PER_EPOCH as f64);
    }
    let (x_test, y_test) = images(64, 2)?;
    let predicted = net.forward_t(&x_test, false)?.argmax(D::Minus1)?;
    let correct = predicted.eq(&y_test)?.to_dtype(DType::F64)?.mean_all()?;
    Ok(Outcome {
        first_loss: epoch_losses[0],
        last_loss: epoch_losses[epoch_losses.len() - 1],
        test_accuracy: correct.to_scalar::<f64>()?,
        last_lr_texp: texp.lr(sgd.step_count() - 1)?,
        last_lr_step_decay: step_decay.lr(sgd.step_count() - 1)?,
    })
}

fn main() -> Result<()> {
    let store = ParamStore::new(&Device::Cpu, DType::F64, 0);
    let net = Net::new(&store.root())?;
    let outcome = train(&store, &net)?;
    println!(
        "train loss {:.4} → {:.4}, held-out accuracy {:.3}, last LR {:.5} (TEXP) vs {:.5} \
         (step decay)",
        outcome.first_loss,
        outcome.last_loss,
        outcome.test_accuracy,
        outcome.last_lr_texp,
        outcome.last_lr_step_decay
    );
    let running_mean = net
        .bn1
        .running_mean()
        .ok_or("BatchNorm keeps running statistics")?;
    println!(
        "bn1.running_mean = {:?}",
        running_mean.as_tensor().to_vec1::<f64>()?
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trains_with_running_statistics_outside_the_optimizer() -> Result<()> {
        let store = ParamStore::new(&Device::Cpu, DType::F64, 0);
        let net = Net::new(&store.root())?;
        let buffers: Vec<String> = store.buffers().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            buffers,
            [
                "bn1.num_batches_tracked",
                "bn1.running_mean",
                "bn1.running_var",
                "bn2.num_batches_tracked",
                "bn2.running_mean",
                "bn2.running_var"
            ]
        );
        let trainable: Vec<String> = store
            .trainable_groups()
            .into_values()
            .flatten()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            trainable,
            ["conv1.weight", "conv2.weight", "fc.bias", "fc.weight"]
        );

        let outcome = train(&store, &net)?;
        // A model that learned nothing sits at the chance loss ln 4 and accuracy 1/4.
        let chance_loss = (CLASSES as f64).ln();
        assert!(
            outcome.last_loss <= 0.5 * chance_loss && outcome.last_loss < outcome.first_loss,
            "loss {} → {}",
            outcome.first_loss,
            outcome.last_loss
        );
        assert!(
            outcome.test_accuracy >= 0.9,
            "accuracy {}",
            outcome.test_accuracy
        );
        // The running statistics moved with the 48 training batches, and only through them.
        let tracked = net.bn1.num_batches_tracked().ok_or("bn1 counts batches")?;
        assert_eq!(tracked.as_tensor().to_scalar::<i64>()?, 48);
        // Without weight decay, TEXP's LR ends above step decay's (THEORY.md §5: it grows
        // inside each phase).
        assert!(
            outcome.last_lr_texp > outcome.last_lr_step_decay,
            "{} vs {}",
            outcome.last_lr_texp,
            outcome.last_lr_step_decay
        );
        Ok(())
    }
}
