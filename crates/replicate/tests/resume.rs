//! Exact resume: training 3 epochs straight and training 2 epochs, then resuming to 3 from the
//! checkpoint in the same folder, give bit-identical records (all but the wall time), in f32 and
//! f64, for a step decay whose milestone falls after the resume point and for its TEXP twin
//! (pre-filled momentum, growing LR). Checkpoints and metrics are written atomically.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device};
use explr_data::{load_synthetic, Dataset, SyntheticConfig};
use explr_replicate::checkpoint::CheckpointError;
use explr_replicate::context::Progress;
use explr_replicate::plan;
use explr_replicate::records::{read_records, EpochRecord};
use explr_replicate::spec::{ModelSection, RunSpec};
use explr_replicate::trainer::TrainError;
use explr_replicate::trainer::{train, TrainingSetup};

use common::TempDir;

/// A step decay (milestone at epoch 2, so the resumed epoch runs at the decayed LR) and its
/// TEXP twin.
const RUNS: &str = "
step_decay:
  momentum: 0.9
  weight_decay: 5.0e-4
  schedule: {kind: multistep, lr: 0.1, milestones: [2], gamma: 0.1}
texp:
  derive: {from: step_decay, transform: texp}
";

const BATCH: usize = 32;

/// Records every `update` (the first one says where a run started).
#[derive(Default)]
struct Recorder(Mutex<Vec<u64>>);

impl Progress for Recorder {
    fn start(&self, _: &str, _: u64) {}
    fn update(&self, _: &str, done: u64, _: &str) {
        self.0.lock().unwrap().push(done);
    }
    fn finish(&self, _: &str, _: &str) {}
}

fn dataset() -> Dataset {
    load_synthetic(&SyntheticConfig {
        seed: 3,
        train_size: 128,
        test_size: 64,
        ..SyntheticConfig::default()
    })
    .unwrap()
}

/// Trains `run` for `epochs` in `dir`; returns the records and the epochs the progress saw.
#[allow(clippy::too_many_arguments)]
fn run(
    data: &Dataset,
    model: &ModelSection,
    runs: &BTreeMap<String, RunSpec>,
    run: &str,
    dtype: DType,
    epochs: usize,
    checkpoint_every: usize,
    resume: bool,
    dir: &Path,
) -> Result<(Vec<EpochRecord>, Vec<u64>), TrainError> {
    let steps_per_epoch = data.train().len().div_ceil(BATCH) as u64;
    let setup = TrainingSetup {
        key: format!("tiny/{run}/seed-5"),
        model,
        dataset: data,
        batch_size: BATCH,
        augment: true,
        dtype,
        device: &Device::Cpu,
        seed: 5,
        epochs,
        plan: plan::plan(runs, run, steps_per_epoch).unwrap(),
        checkpoint_every,
        snapshots: Vec::new(),
        dir: dir.to_path_buf(),
        resume,
        stop: Default::default(),
    };
    let progress = Recorder::default();
    let records = train(&setup, &progress)?;
    let seen = progress.0.into_inner().unwrap();
    Ok((records, seen))
}

/// Every number of a record but the wall time, as bits.
fn bits(r: &EpochRecord) -> Vec<u64> {
    vec![
        r.epoch as u64,
        r.step,
        r.lr.to_bits(),
        r.train_loss.to_bits(),
        r.train_acc.to_bits(),
        r.test_loss.to_bits(),
        r.test_acc.to_bits(),
        r.si_norm.to_bits(),
        r.layer_norm.to_bits(),
        r.norm_sq_over_lr.to_bits(),
        r.effective_lr.to_bits(),
        r.angular_update.to_bits(),
    ]
}

/// Files under `dir` (recursively) whose names mark an unfinished atomic write.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(temp_files(&p));
        } else if p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains(".tmp"))
        {
            out.push(p);
        }
    }
    out
}

/// 3 epochs straight == 2 epochs + resume to 3, bit for bit; the resume really resumed.
fn check(run_name: &str, dtype: DType) {
    let case = format!("{run_name} {dtype:?}");
    let data = dataset();
    let model: ModelSection =
        serde_yaml::from_str("{arch: preresnet, depth: 8, width: 2}").unwrap();
    let runs: BTreeMap<String, RunSpec> = serde_yaml::from_str(RUNS).unwrap();
    let straight_dir = TempDir::new("straight");
    let resumed_dir = TempDir::new("resumed");

    let (straight, _) = run(
        &data,
        &model,
        &runs,
        run_name,
        dtype,
        3,
        0,
        false,
        &straight_dir.0,
    )
    .unwrap();
    let (first, _) = run(
        &data,
        &model,
        &runs,
        run_name,
        dtype,
        2,
        1,
        false,
        &resumed_dir.0,
    )
    .unwrap();
    let (resumed, seen) = run(
        &data,
        &model,
        &runs,
        run_name,
        dtype,
        3,
        1,
        true,
        &resumed_dir.0,
    )
    .unwrap();

    assert_eq!(straight.len(), 3, "{case}");
    assert_eq!(resumed.len(), 3, "{case}");
    for (a, b) in straight.iter().zip(&resumed) {
        assert_eq!(bits(a), bits(b), "{case}: epoch {}\n{a:?}\n{b:?}", a.epoch);
    }
    // It resumed: progress started at epoch 2, and epochs 1-2 are the first run's records,
    // wall time included (read back from metrics.jsonl, not retrained).
    assert_eq!(seen, vec![2, 3], "{case}");
    assert_eq!(&resumed[..2], &first[..], "{case}");
    // The LR did change at the milestone, so the resumed epoch depended on the restored step.
    assert_ne!(resumed[2].lr.to_bits(), resumed[0].lr.to_bits(), "{case}");
    // What is on disk is what was returned (same epochs and steps; the floats are compared bit
    // for bit above, through the records the resume read back from this file).
    let on_disk = read_records(&resumed_dir.0.join("metrics.jsonl")).unwrap();
    let index = |rs: &[EpochRecord]| rs.iter().map(|r| (r.epoch, r.step)).collect::<Vec<_>>();
    assert_eq!(index(&on_disk), index(&resumed), "{case}");
    assert_eq!(
        std::fs::read_to_string(resumed_dir.0.join("checkpoints/LATEST")).unwrap(),
        "epoch-3\n",
        "{case}"
    );
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(resumed_dir.0.join("checkpoints/epoch-3/meta.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["epoch"], 3, "{case}");
    assert_eq!(meta["step"], resumed[2].step, "{case}");
    for dir in [&straight_dir.0, &resumed_dir.0] {
        for f in [
            "metrics.jsonl",
            "metrics.csv",
            "checkpoints/epoch-3/model.safetensors",
            "checkpoints/epoch-3/optimizer.safetensors",
        ] {
            assert!(dir.join(f).is_file(), "{case}: no {f}");
        }
        assert_eq!(
            temp_files(dir),
            Vec::<PathBuf>::new(),
            "{case}: temp files left"
        );
    }

    // Resuming a finished run trains nothing and returns the same records.
    let (again, seen) = run(
        &data,
        &model,
        &runs,
        run_name,
        dtype,
        3,
        1,
        true,
        &resumed_dir.0,
    )
    .unwrap();
    assert_eq!(index(&again), index(&resumed), "{case}");
    assert_eq!(seen, vec![3], "{case}");
}

#[test]
fn step_decay_resumes_exactly_in_f32() {
    check("step_decay", DType::F32);
}

#[test]
fn step_decay_resumes_exactly_in_f64() {
    check("step_decay", DType::F64);
}

#[test]
fn texp_twin_resumes_exactly_in_f32() {
    check("texp", DType::F32);
}

#[test]
fn texp_twin_resumes_exactly_in_f64() {
    check("texp", DType::F64);
}

/// `resume` without a checkpoint is a fresh run.
#[test]
fn resume_without_a_checkpoint_starts_fresh() {
    let data = dataset();
    let model: ModelSection =
        serde_yaml::from_str("{arch: preresnet, depth: 8, width: 2}").unwrap();
    let runs: BTreeMap<String, RunSpec> = serde_yaml::from_str(RUNS).unwrap();
    let (a_dir, b_dir) = (TempDir::new("fresh-a"), TempDir::new("fresh-b"));
    let (a, _) = run(
        &data,
        &model,
        &runs,
        "step_decay",
        DType::F32,
        1,
        0,
        false,
        &a_dir.0,
    )
    .unwrap();
    let (b, seen) = run(
        &data,
        &model,
        &runs,
        "step_decay",
        DType::F32,
        1,
        0,
        true,
        &b_dir.0,
    )
    .unwrap();
    assert_eq!(seen, vec![0, 1]);
    assert_eq!(bits(&a[0]), bits(&b[0]));
}

/// A checkpoint resumes only into the configuration that wrote it: after the manifest changed
/// (here the dtype, or the schedule) `--resume` is an error naming the checkpoint, and a longer
/// run of the same configuration still resumes.
#[test]
fn a_checkpoint_of_another_configuration_does_not_resume() {
    let data = dataset();
    let model: ModelSection =
        serde_yaml::from_str("{arch: preresnet, depth: 8, width: 2}").unwrap();
    let runs: BTreeMap<String, RunSpec> = serde_yaml::from_str(RUNS).unwrap();
    let dir = TempDir::new("stale");
    run(
        &data,
        &model,
        &runs,
        "step_decay",
        DType::F32,
        1,
        1,
        false,
        &dir.0,
    )
    .unwrap();
    let stale = |runs: &BTreeMap<String, RunSpec>, dtype| match run(
        &data,
        &model,
        runs,
        "step_decay",
        dtype,
        2,
        1,
        true,
        &dir.0,
    ) {
        Err(e @ TrainError::Checkpoint { .. }) if matches!(&e, TrainError::Checkpoint { source, .. } if matches!(**source, CheckpointError::OtherConfiguration { .. })) =>
        {
            // The whole chain, as the binary prints it (`{:#}`).
            let message = std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(": ");
            assert!(message.contains("without --resume"), "{message}");
            assert!(message.contains("checkpoints/epoch-1"), "{message}");
        }
        other => panic!(
            "resumed into another configuration: {:?}",
            other.map(|r| r.1)
        ),
    };
    stale(&runs, DType::F64);
    let other_milestone: BTreeMap<String, RunSpec> =
        serde_yaml::from_str(&RUNS.replace("milestones: [2]", "milestones: [3]")).unwrap();
    stale(&other_milestone, DType::F32);
    let (records, seen) = run(
        &data,
        &model,
        &runs,
        "step_decay",
        DType::F32,
        2,
        1,
        true,
        &dir.0,
    )
    .unwrap();
    assert_eq!((records.len(), seen), (2, vec![1, 2]));
}

/// The error's whole chain, as the binary prints it (`{:#}`).
fn chain(e: &TrainError) -> String {
    std::iter::successors(Some(e as &dyn std::error::Error), |e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

/// A checkpoint resumes only on the data that wrote it: another synthetic seed, another tint,
/// or other images under another name (the manifest's `dataset:` changed) is refused with an
/// error naming the field that changed (`data`), never continued on the other data.
#[test]
fn a_checkpoint_resumes_only_on_the_data_that_wrote_it() {
    let model: ModelSection =
        serde_yaml::from_str("{arch: preresnet, depth: 8, width: 2}").unwrap();
    let runs: BTreeMap<String, RunSpec> = serde_yaml::from_str(RUNS).unwrap();
    let synthetic = |seed: u64, tint: f32| {
        load_synthetic(&SyntheticConfig {
            seed,
            train_size: 128,
            test_size: 64,
            tint,
            ..SyntheticConfig::default()
        })
        .unwrap()
    };
    let tint = SyntheticConfig::default().tint;
    let data = synthetic(3, tint);
    let dir = TempDir::new("other-data");
    run(
        &data,
        &model,
        &runs,
        "step_decay",
        DType::F32,
        1,
        1,
        false,
        &dir.0,
    )
    .unwrap();
    let renamed = Dataset::new(
        "cifar10",
        data.train().clone(),
        data.test().clone(),
        data.class_names().to_vec(),
    )
    .unwrap();
    for (case, other) in [
        ("another synthetic seed", synthetic(4, tint)),
        ("another synthetic tint", synthetic(3, tint * 0.5)),
        ("another dataset", renamed),
    ] {
        match run(
            &other,
            &model,
            &runs,
            "step_decay",
            DType::F32,
            2,
            1,
            true,
            &dir.0,
        ) {
            Err(e) => {
                let message = chain(&e);
                assert!(
                    matches!(&e, TrainError::Checkpoint { source, .. } if matches!(**source, CheckpointError::OtherConfiguration { .. })),
                    "{case}: {message}"
                );
                assert!(message.contains("`data`"), "{case}: {message}");
                assert!(message.contains("without --resume"), "{case}: {message}");
            }
            Ok((records, seen)) => panic!(
                "{case}: resumed on other data: {} records, progress {seen:?}",
                records.len()
            ),
        }
    }
    // The data that wrote it still resumes.
    let (records, seen) = run(
        &data,
        &model,
        &runs,
        "step_decay",
        DType::F32,
        2,
        1,
        true,
        &dir.0,
    )
    .unwrap();
    assert_eq!((records.len(), seen), (2, vec![1, 2]));
}

/// A checkpoint written by an older explr (one fingerprint string, no file digests) is refused
/// with a clear message, not a parse error.
#[test]
fn a_checkpoint_of_an_older_explr_is_refused_clearly() {
    let data = dataset();
    let model: ModelSection =
        serde_yaml::from_str("{arch: preresnet, depth: 8, width: 2}").unwrap();
    let runs: BTreeMap<String, RunSpec> = serde_yaml::from_str(RUNS).unwrap();
    let dir = TempDir::new("older");
    run(
        &data,
        &model,
        &runs,
        "step_decay",
        DType::F32,
        1,
        1,
        false,
        &dir.0,
    )
    .unwrap();
    let meta_path = dir.0.join("checkpoints/epoch-1/meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    let meta = meta.as_object_mut().unwrap();
    meta.insert("config".into(), "0123456789abcdef".into());
    meta.remove("files");
    std::fs::write(&meta_path, serde_json::to_string(meta).unwrap()).unwrap();
    match run(
        &data,
        &model,
        &runs,
        "step_decay",
        DType::F32,
        2,
        1,
        true,
        &dir.0,
    ) {
        Err(e) => {
            let message = chain(&e);
            assert!(message.contains("older explr"), "{message}");
            assert!(message.contains("without --resume"), "{message}");
            assert!(message.contains("meta.json"), "{message}");
        }
        Ok((records, _)) => panic!("resumed an older checkpoint: {} records", records.len()),
    }
}
