//! A diverging run stops with `TrainError::NonFinite` naming the epoch, the step and the quantity,
//! and its message says what was kept: the last good checkpoint, or that none was written.
//!
//! What diverges was found by trying: with a constant LR of 1e10 or more the tiny BN network's
//! weight norm is NaN after the first epoch (f32 and f64); with weight decay as well, the
//! training loss goes NaN within the first epoch; a step decay with `gamma: 1e30` trains one
//! good epoch, then diverges in the second (in f64 a factor 1e30 stays finite: 1e300 is used).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device};
use explr_data::{load_synthetic, SyntheticConfig};
use explr_replicate::checkpoint::{self, CheckpointError};
use explr_replicate::context::Silent;
use explr_replicate::plan;
use explr_replicate::records::read_records;
use explr_replicate::spec::{ModelSection, RunSpec};
use explr_replicate::trainer::TrainError;
use explr_replicate::trainer::{train, TrainingSetup};

use common::TempDir;

const BATCH: usize = 32;
/// 128 training images in batches of 32.
const STEPS_PER_EPOCH: u64 = 4;

/// Every tensor of a safetensors file is finite.
fn all_finite(path: &Path) -> bool {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    tensors.values().all(|t| {
        t.to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
            .iter()
            .all(|x| x.is_finite())
    })
}

/// Training `run` (a run spec in YAML) stops in `want_epoch` with a non-finite `quantity`
/// (one of `quantities`); a checkpoint is kept exactly when `want_checkpoint`, and then it holds
/// the last good epoch with finite weights.
fn check(
    case: &str,
    run: &str,
    dtype: DType,
    checkpoint_every: usize,
    want_epoch: usize,
    quantities: &[&str],
    want_checkpoint: bool,
) {
    let data = load_synthetic(&SyntheticConfig {
        seed: 1,
        train_size: 128,
        test_size: 64,
        ..SyntheticConfig::default()
    })
    .unwrap();
    let model: ModelSection =
        serde_yaml::from_str("{arch: preresnet, depth: 8, width: 2}").unwrap();
    let runs: BTreeMap<String, RunSpec> = serde_yaml::from_str(&format!("r: {run}")).unwrap();
    let dir = TempDir::new("nonfinite");
    let setup = TrainingSetup {
        key: "tiny/r/seed-0".into(),
        model: &model,
        dataset: &data,
        batch_size: BATCH,
        augment: true,
        dtype,
        device: &Device::Cpu,
        seed: 0,
        epochs: 3,
        plan: plan::plan(&runs, "r", STEPS_PER_EPOCH).unwrap(),
        checkpoint_every,
        snapshots: Vec::new(),
        dir: dir.0.clone(),
        resume: false,
        stop: Default::default(),
    };
    let err = match train(&setup, &Silent) {
        Ok(records) => panic!("{case}: trained without diverging: {records:?}"),
        Err(e) => e,
    };
    let msg = err.to_string();
    let TrainError::NonFinite {
        run,
        epoch,
        step,
        quantity,
        value,
        checkpoint,
    } = err
    else {
        panic!("{case}: not a NonFinite error: {msg}");
    };
    assert_eq!(run, "tiny/r/seed-0", "{case}");
    assert_eq!(epoch, want_epoch, "{case}: {msg}");
    let steps = (want_epoch as u64 - 1) * STEPS_PER_EPOCH..=want_epoch as u64 * STEPS_PER_EPOCH;
    assert!(
        steps.contains(&step),
        "{case}: step {step} not in {steps:?}"
    );
    assert!(
        quantities.contains(&quantity.as_str()),
        "{case}: {quantity}"
    );
    assert!(!value.is_finite(), "{case}: value {value}");
    for needle in [
        "tiny/r/seed-0".to_string(),
        format!("{quantity} is {value}"),
        format!("at epoch {epoch}, step {step}"),
    ] {
        assert!(msg.contains(&needle), "{case}: `{msg}` lacks `{needle}`");
    }
    let ckpt = dir.0.join("checkpoints");
    if want_checkpoint {
        assert_eq!(checkpoint.as_deref(), Some(ckpt.as_path()), "{case}");
        let kept = format!("its last good checkpoint is kept in {}", ckpt.display());
        assert!(msg.contains(&kept), "{case}: `{msg}` lacks `{kept}`");
        // The checkpoint is the last good epoch, untouched by the diverged one.
        let latest = std::fs::read_to_string(ckpt.join("LATEST")).unwrap();
        assert_eq!(latest.trim(), format!("epoch-{}", want_epoch - 1), "{case}");
        let last = ckpt.join(latest.trim());
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(last.join("meta.json")).unwrap())
                .unwrap();
        assert_eq!(meta["epoch"], want_epoch - 1, "{case}");
        assert!(all_finite(&last.join("model.safetensors")), "{case}");
        assert!(all_finite(&last.join("optimizer.safetensors")), "{case}");
    } else {
        assert_eq!(checkpoint, None, "{case}");
        let none = "the run stopped before any checkpoint was written";
        assert!(msg.contains(none), "{case}: `{msg}` lacks `{none}`");
        assert!(!ckpt.join("LATEST").exists(), "{case}");
    }
    // The metrics hold the good epochs only, all finite.
    let metrics = dir.0.join("metrics.jsonl");
    let good = if metrics.exists() {
        read_records(&metrics).unwrap()
    } else {
        Vec::new()
    };
    assert_eq!(good.len(), want_epoch - 1, "{case}");
    for r in &good {
        assert!(
            r.train_loss.is_finite() && r.si_norm.is_finite(),
            "{case}: {r:?}"
        );
    }
}

#[test]
fn absurd_constant_lr_stops_in_the_first_epoch() {
    let norm_or_loss = ["weight norm", "training loss", "test loss"];
    check(
        "lr 1e30, f32",
        "{weight_decay: 0.0, schedule: {kind: constant, lr: 1.0e30}}",
        DType::F32,
        1,
        1,
        &norm_or_loss,
        false,
    );
    check(
        "lr 1e300, f64",
        "{weight_decay: 0.0, schedule: {kind: constant, lr: 1.0e300}}",
        DType::F64,
        1,
        1,
        &norm_or_loss,
        false,
    );
    check(
        "lr 1e30 with weight decay, f32: the loss goes first",
        "{weight_decay: 5.0e-4, schedule: {kind: constant, lr: 1.0e30}}",
        DType::F32,
        1,
        1,
        &["training loss"],
        false,
    );
}

#[test]
fn divergence_after_a_good_epoch_keeps_its_checkpoint() {
    for (dtype, gamma) in [(DType::F32, "1.0e30"), (DType::F64, "1.0e300")] {
        check(
            &format!("step decay by {gamma} after epoch 1, {dtype:?}"),
            &format!(
                "{{weight_decay: 0.0, schedule: {{kind: multistep, lr: 0.1, milestones: [1], gamma: {gamma}}}}}"
            ),
            dtype,
            1,
            2,
            &["weight norm", "training loss", "test loss"],
            true,
        );
    }
}

/// A checkpoint whose weights are not finite (here: one tensor set to NaN, the file otherwise
/// well formed, its digest in `meta.json` made to match) is never resumed, so it can never be
/// kept as the "last good checkpoint" of the run that diverges from it.
#[test]
fn a_checkpoint_with_non_finite_weights_is_never_the_last_good_one() {
    let data = load_synthetic(&SyntheticConfig {
        seed: 1,
        train_size: 128,
        test_size: 64,
        ..SyntheticConfig::default()
    })
    .unwrap();
    let model: ModelSection =
        serde_yaml::from_str("{arch: preresnet, depth: 8, width: 2}").unwrap();
    let runs: BTreeMap<String, RunSpec> =
        serde_yaml::from_str("r: {weight_decay: 5.0e-4, schedule: {kind: constant, lr: 0.1}}")
            .unwrap();
    let dir = TempDir::new("nan-checkpoint");
    let setup = |epochs, resume| TrainingSetup {
        key: "tiny/r/seed-0".into(),
        model: &model,
        dataset: &data,
        batch_size: BATCH,
        augment: true,
        dtype: DType::F32,
        device: &Device::Cpu,
        seed: 0,
        epochs,
        plan: plan::plan(&runs, "r", STEPS_PER_EPOCH).unwrap(),
        checkpoint_every: 1,
        snapshots: Vec::new(),
        dir: dir.0.clone(),
        resume,
        stop: Default::default(),
    };
    train(&setup(1, false), &Silent).unwrap();
    let last = dir.0.join("checkpoints/epoch-1");
    let model_file = last.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&model_file, &Device::Cpu).unwrap();
    let name = tensors
        .keys()
        .find(|n| n.ends_with("conv1.weight"))
        .expect("a conv weight")
        .clone();
    let t = &tensors[&name];
    let nan = (t.ones_like().unwrap() * f64::NAN).unwrap();
    tensors.insert(name, nan);
    candle_core::safetensors::save(&tensors, &model_file).unwrap();
    forge_digest(&last, "model.safetensors");
    let err = match train(&setup(3, true), &Silent) {
        Ok(records) => panic!("resumed NaN weights and trained on: {records:?}"),
        Err(e) => e,
    };
    let msg = err.to_string();
    if let TrainError::NonFinite {
        checkpoint: Some(kept),
        ..
    } = &err
    {
        let latest = std::fs::read_to_string(kept.join("LATEST")).unwrap();
        assert!(
            all_finite(&kept.join(latest.trim()).join("model.safetensors")),
            "`{msg}` keeps a checkpoint with NaN weights as the last good one"
        );
    }
    let full = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ");
    assert!(full.contains("model.safetensors"), "{full}");
    assert!(full.contains("not finite"), "{full}");
    assert!(full.contains("without --resume"), "{full}");
}

/// Makes the digest `meta.json` records for `file` of the checkpoint `dir` match the file (what
/// a forger, or a bug in the writer, would leave), when the checkpoint records digests.
fn forge_digest(dir: &Path, file: &str) {
    let meta_path = dir.join("meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    if meta.get("files").is_some() {
        meta["files"][file] = explr_io::file_digest(&dir.join(file)).unwrap().into();
        std::fs::write(&meta_path, meta.to_string()).unwrap();
    }
}

/// `checkpoint::save` refuses records whose watched quantities are not finite: the checkpoint
/// `LATEST` names stays the last good one, and nothing of the refused one is named.
#[test]
fn a_checkpoint_with_a_non_finite_record_is_never_written() {
    let data = load_synthetic(&SyntheticConfig {
        seed: 1,
        train_size: 64,
        test_size: 32,
        ..SyntheticConfig::default()
    })
    .unwrap();
    let model: ModelSection =
        serde_yaml::from_str("{arch: preresnet, depth: 8, width: 2}").unwrap();
    let runs: BTreeMap<String, RunSpec> =
        serde_yaml::from_str("r: {weight_decay: 5.0e-4, schedule: {kind: constant, lr: 0.1}}")
            .unwrap();
    let dir = TempDir::new("nan-record");
    let setup = TrainingSetup {
        key: "tiny/r/seed-0".into(),
        model: &model,
        dataset: &data,
        batch_size: BATCH,
        augment: true,
        dtype: DType::F32,
        device: &Device::Cpu,
        seed: 0,
        epochs: 1,
        plan: plan::plan(&runs, "r", 2).unwrap(),
        checkpoint_every: 1,
        snapshots: Vec::new(),
        dir: dir.0.clone(),
        resume: false,
        stop: Default::default(),
    };
    let good = train(&setup, &Silent).unwrap();
    let store = explr_nn::ParamStore::new(&Device::Cpu, DType::F32, 0);
    let net = explr_zoo::Model::new(&model, &store).unwrap();
    let sgd = setup.plan.build_sgd(&net).unwrap();
    let config = explr_replicate::trainer::config_fingerprint(&setup);
    for (quantity, value) in [
        ("training loss", f64::NAN),
        ("weight norm", f64::INFINITY),
        ("test loss", f64::NAN),
    ] {
        let mut records = good.clone();
        let mut bad = good[0].clone();
        bad.epoch = 2;
        match quantity {
            "training loss" => bad.train_loss = value,
            "weight norm" => bad.si_norm = value,
            _ => bad.test_loss = value,
        }
        records.push(bad);
        let err = checkpoint::save(&dir.0, &store, &sgd, &config, &records)
            .expect_err("a non-finite record was checkpointed");
        assert!(
            matches!(err, CheckpointError::NonFinite { .. }),
            "{quantity}: {err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(quantity) && msg.contains("epoch 2"), "{msg}");
        let latest = std::fs::read_to_string(dir.0.join("checkpoints/LATEST")).unwrap();
        assert_eq!(latest.trim(), "epoch-1", "{quantity}");
    }
}
