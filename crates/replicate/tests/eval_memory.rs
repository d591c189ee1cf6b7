//! Evaluation keeps no autograd graph between batches. The model's weights are variables, so a
//! forward pass records the graph a backward pass would need; summing the batches' losses into
//! one tensor kept every batch's graph, and with it every activation, alive until the end of
//! the test split (a float32 PreResNet-20 on CIFAR-10's 10 000 test images was killed for
//! memory at 24 GB). This test runs alone in its binary, so the process's resident memory is
//! its own.

use candle_core::{DType, Device};
use explr_data::{load_synthetic, Loader, LoaderConfig, SyntheticConfig};
use explr_nn::ParamStore;
use explr_replicate::trainer::evaluate;
use explr_zoo::{Arch, Model, ModelSpec};

/// Resident memory of this process, in bytes.
fn resident() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap()
}

#[test]
fn evaluation_memory_does_not_grow_with_the_number_of_batches() {
    let data = load_synthetic(&SyntheticConfig {
        seed: 1,
        train_size: 128,
        test_size: 24 * 128,
        ..SyntheticConfig::default()
    })
    .unwrap();
    let store = ParamStore::new(&Device::Cpu, DType::F32, 0);
    let model = Model::new(&ModelSpec::new(Arch::PreResNet, 8).with_width(16), &store).unwrap();
    let loader = Loader::new(data.test(), LoaderConfig::eval(128), &Device::Cpu).unwrap();
    // One batch first, so that buffers every batch reuses are counted before the measurement.
    let one = Loader::new(data.train(), LoaderConfig::eval(128), &Device::Cpu).unwrap();
    evaluate(&model, &one).unwrap();
    let before = resident();
    let (loss, accuracy) = evaluate(&model, &loader).unwrap();
    let grown = resident().saturating_sub(before);
    assert!(loss.is_finite() && (0.0..=1.0).contains(&accuracy));
    // One batch's forward pass keeps about 16 activations of 128×16×32×32 floats (8 MiB each)
    // for its graph: 24 batches kept alive grew memory by 5.5 GiB. The bound is a
    // few batches' worth, for the allocator's own slack.
    let bound = 1 << 30;
    assert!(
        grown < bound,
        "evaluating 24 batches grew resident memory by {} MiB (bound {} MiB): the batches' \
         graphs are kept alive",
        grown >> 20,
        bound >> 20
    );
}
