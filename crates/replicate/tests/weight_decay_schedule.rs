//! `weight_decay_schedule` reaches the optimizer (E6 once trained with no weight decay at all
//! because the trainer dropped it): a run whose weight decay follows a schedule trains exactly
//! like the same constant weight decay while the two values are equal, and departs from it
//! once the schedule moves; a schedule that never moves is the constant, bit for bit.

mod common;

use std::collections::BTreeMap;

use candle_core::{DType, Device};
use explr_data::{load_synthetic, Dataset, SyntheticConfig};
use explr_replicate::context::Silent;
use explr_replicate::plan;
use explr_replicate::records::EpochRecord;
use explr_replicate::spec::{ModelSection, RunSpec};
use explr_replicate::trainer::{train, TrainingSetup};

use common::TempDir;

const BATCH: usize = 32;
/// 64 training images in batches of 32.
const STEPS_PER_EPOCH: u64 = 2;

const RUNS: &str = "
constant:
  weight_decay: 5.0e-3
  schedule: {kind: constant, lr: 0.1}
scheduled:
  schedule: {kind: constant, lr: 0.1}
  weight_decay_schedule: {kind: multistep, lr: 5.0e-3, milestones: [2], gamma: 0.1}
never_moves:
  schedule: {kind: constant, lr: 0.1}
  weight_decay_schedule: {kind: multistep, lr: 5.0e-3, milestones: [2], gamma: 1.0}
none:
  schedule: {kind: constant, lr: 0.1}
";

fn records(data: &Dataset, run: &str) -> Vec<EpochRecord> {
    let runs: BTreeMap<String, RunSpec> = serde_yaml::from_str(RUNS).unwrap();
    // The head and the norm affine parameters train too, so every group is covered.
    let model: ModelSection =
        serde_yaml::from_str("{arch: preresnet, depth: 8, width: 4, norm: bn}").unwrap();
    let dir = TempDir::new("wd-schedule");
    let setup = TrainingSetup {
        key: run.into(),
        model: &model,
        dataset: data,
        batch_size: BATCH,
        augment: true,
        dtype: DType::F64,
        device: &Device::Cpu,
        seed: 0,
        epochs: 3,
        plan: plan::plan(&runs, run, STEPS_PER_EPOCH).unwrap(),
        checkpoint_every: 0,
        snapshots: Vec::new(),
        dir: dir.0.clone(),
        resume: false,
        stop: Default::default(),
    };
    train(&setup, &Silent).unwrap()
}

#[test]
fn weight_decay_schedule_trains_like_the_constant_until_it_moves() {
    let data = load_synthetic(&SyntheticConfig {
        seed: 2,
        train_size: 64,
        test_size: 32,
        ..SyntheticConfig::default()
    })
    .unwrap();
    let constant = records(&data, "constant");
    let scheduled = records(&data, "scheduled");
    let never_moves = records(&data, "never_moves");
    let none = records(&data, "none");
    // Epochs 1 and 2 (steps 0..4) run at λ = 5e-3 in both: identical to the last bit.
    for e in 0..2 {
        assert_eq!(
            common::measured_bits(&constant[e]),
            common::measured_bits(&scheduled[e]),
            "epoch {}",
            e + 1
        );
    }
    // From epoch 3 the schedule's λ is 5e-4: the weights shrink less than under the constant.
    assert!(
        scheduled[2].si_norm > constant[2].si_norm,
        "{} vs {}",
        scheduled[2].si_norm,
        constant[2].si_norm
    );
    // A schedule that never moves is the constant, every epoch.
    for e in 0..3 {
        assert_eq!(
            common::measured_bits(&constant[e]),
            common::measured_bits(&never_moves[e]),
            "epoch {}",
            e + 1
        );
    }
    // And the weight decay does act: without it the first epoch already differs.
    assert_ne!(constant[0].si_norm, none[0].si_norm);
}
