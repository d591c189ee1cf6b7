//! Results that cannot lie (checkpoints written and read as one unit, resume that verifies,
//! one writer per results folder, a failed rerun that cannot pass for the old result):
//!
//! - a run killed at each file replacement of a checkpoint write (the metrics, then each file of
//!   the new checkpoint folder, then the `LATEST` pointer) resumes to records bit-identical to
//!   an uninterrupted run: every such state is built from the files of the two runs that
//!   bracket it;
//! - the `explr` binary killed with SIGKILL mid-training, then run with `--resume`, writes the
//!   same summary as a run that was never interrupted;
//! - a rerun without `--resume` clears the former checkpoint; an emptied `metrics.jsonl` or a
//!   checkpoint past the run's end is refused; a second process on one results folder fails at
//!   once naming the first.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use candle_core::{DType, Device};
use explr_data::{load_synthetic, Dataset, SyntheticConfig};
use explr_replicate::checkpoint::{self, CheckpointError};
use explr_replicate::context::Silent;
use explr_replicate::plan;
use explr_replicate::records::EpochRecord;
use explr_replicate::spec::{ModelSection, RunSpec};
use explr_replicate::trainer::{
    config_fingerprint, read_snapshot, snapshot_path, train, verify_snapshot, SnapshotAt,
    TrainError, TrainingSetup,
};

use common::TempDir;

const RUNS: &str = "
step_decay:
  momentum: 0.9
  weight_decay: 5.0e-4
  schedule: {kind: multistep, lr: 0.1, milestones: [2], gamma: 0.1}
";

fn data_of(seed: u64) -> Dataset {
    load_synthetic(&SyntheticConfig {
        seed,
        train_size: 64,
        test_size: 32,
        ..SyntheticConfig::default()
    })
    .unwrap()
}

fn data() -> Dataset {
    data_of(4)
}

/// The model of every run here.
fn model() -> ModelSection {
    serde_yaml::from_str("{arch: preresnet, depth: 8, width: 2}").unwrap()
}

/// The step decay for `epochs` in `dir`, a checkpoint every epoch.
fn setup<'a>(
    data: &'a Dataset,
    model: &'a ModelSection,
    epochs: usize,
    resume: bool,
    dir: &Path,
) -> TrainingSetup<'a> {
    let runs: BTreeMap<String, RunSpec> = serde_yaml::from_str(RUNS).unwrap();
    TrainingSetup {
        key: "tiny/step_decay/seed-1".into(),
        model,
        dataset: data,
        batch_size: 32,
        augment: true,
        dtype: DType::F64,
        device: &Device::Cpu,
        seed: 1,
        epochs,
        plan: plan::plan(&runs, "step_decay", 2).unwrap(),
        checkpoint_every: 1,
        snapshots: Vec::new(),
        dir: dir.to_path_buf(),
        resume,
        stop: Default::default(),
    }
}

/// Trains the step decay for `epochs` in `dir`, a checkpoint every epoch.
fn run(
    data: &Dataset,
    epochs: usize,
    resume: bool,
    dir: &Path,
) -> Result<Vec<EpochRecord>, TrainError> {
    train(&setup(data, &model(), epochs, resume, dir), &Silent)
}

/// Every number of each record but the wall time, as bits.
fn bits(records: &[EpochRecord]) -> Vec<Vec<u64>> {
    records.iter().map(common::measured_bits).collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// The files an epoch's end replaces, in the order the trainer replaces them: the metrics,
/// then the files of the new checkpoint folder, then the pointer that makes it the latest.
const REPLACEMENTS: [&str; 7] = [
    "metrics.jsonl",
    "metrics.csv",
    "checkpoints/epoch-2/model.safetensors",
    "checkpoints/epoch-2/optimizer.safetensors",
    "checkpoints/epoch-2/optimizer.json",
    "checkpoints/epoch-2/meta.json",
    "checkpoints/LATEST",
];

#[test]
fn a_run_killed_at_any_replacement_of_a_checkpoint_write_resumes_to_the_same_numbers() {
    let data = data();
    let straight = TempDir::new("straight");
    let want = bits(&run(&data, 3, false, &straight.0).unwrap());
    // The two states that bracket the write of epoch 2's checkpoint, one run's.
    let (after1, after2) = (TempDir::new("after-1"), TempDir::new("after-2"));
    run(&data, 1, false, &after1.0).unwrap();
    copy_dir(&after1.0, &after2.0);
    run(&data, 2, true, &after2.0).unwrap();
    for killed_after in 0..=REPLACEMENTS.len() {
        let dir = TempDir::new("killed");
        copy_dir(&after1.0, &dir.0);
        for f in &REPLACEMENTS[..killed_after] {
            let target = dir.0.join(f);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(after2.0.join(f), target).unwrap();
        }
        // A write cut short inside the next file leaves a partial temporary sibling.
        if let Some(next) = REPLACEMENTS.get(killed_after) {
            let next = dir.0.join(next);
            std::fs::create_dir_all(next.parent().unwrap()).unwrap();
            let name = next.file_name().unwrap().to_string_lossy().into_owned();
            std::fs::write(
                next.with_file_name(format!(".{name}.tmp-999999")),
                b"partial",
            )
            .unwrap();
        }
        let resumed = run(&data, 3, true, &dir.0)
            .unwrap_or_else(|e| panic!("killed after {killed_after} replacements: {e}"));
        assert_eq!(
            bits(&resumed),
            want,
            "killed after {killed_after} replacements"
        );
    }
}

#[test]
fn resume_verifies_before_it_trusts() {
    let data = data();
    let dir = TempDir::new("verify");
    run(&data, 2, false, &dir.0).unwrap();
    let refused = |what: &str, dir: &Path| match run(&data, 3, true, dir) {
        Err(TrainError::Checkpoint { source: e, .. })
            if matches!(*e, CheckpointError::Inconsistent { .. }) =>
        {
            e.to_string()
        }
        other => panic!("{what}: resumed anyway: {:?}", other.map(|r| r.len())),
    };
    // An emptied metrics.jsonl.
    let emptied = TempDir::new("emptied");
    copy_dir(&dir.0, &emptied.0);
    std::fs::write(emptied.0.join("metrics.jsonl"), "").unwrap();
    let msg = refused("emptied metrics", &emptied.0);
    assert!(
        msg.contains("metrics.jsonl") && msg.contains("holds 0 records"),
        "{msg}"
    );
    // A checkpoint whose metadata claims epoch 99.
    let edited = TempDir::new("epoch-99");
    copy_dir(&dir.0, &edited.0);
    let meta_path = edited.0.join("checkpoints/epoch-2/meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    meta["epoch"] = 99.into();
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    let msg = refused("epoch 99", &edited.0);
    assert!(
        msg.contains("epoch 99") && msg.contains("meta.json"),
        "{msg}"
    );
    // A metrics file that was replaced by another run's.
    let replaced = TempDir::new("replaced");
    copy_dir(&dir.0, &replaced.0);
    let other = TempDir::new("other");
    run(&data_of(5), 2, false, &other.0).unwrap();
    std::fs::copy(
        other.0.join("metrics.jsonl"),
        replaced.0.join("metrics.jsonl"),
    )
    .unwrap();
    let msg = refused("replaced metrics", &replaced.0);
    assert!(msg.contains("do not begin with the checkpoint's"), "{msg}");
}

#[test]
fn a_rerun_without_resume_starts_clean_and_a_killed_one_cannot_finish_on_stale_state() {
    let data = data();
    let dir = TempDir::new("rerun");
    run(&data, 1, false, &dir.0).unwrap();
    // A rerun without --resume clears the old run's checkpoint before its first epoch: a
    // rerun stopped before it trained anything (here: zero epochs) leaves nothing behind.
    assert!(run(&data, 0, false, &dir.0).unwrap().is_empty());
    assert!(!dir.0.join("checkpoints/LATEST").exists());
    assert!(!dir.0.join("metrics.jsonl").exists());
    // So --resume starts over instead of "finishing" with the old epoch.
    let resumed = run(&data, 3, true, &dir.0).unwrap();
    let straight = TempDir::new("rerun-straight");
    assert_eq!(
        bits(&resumed),
        bits(&run(&data, 3, false, &straight.0).unwrap())
    );
}

/// A sandbox with a copy of one manifest, shortened, for the binary.
struct Sandbox(TempDir);

impl Sandbox {
    fn new(manifest: &str, edit: impl Fn(String) -> String) -> Self {
        let dir = TempDir::new("durable-bin");
        std::fs::create_dir_all(dir.0.join("experiments")).unwrap();
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("../../experiments/{manifest}.yaml")),
        )
        .unwrap();
        std::fs::write(
            dir.0.join(format!("experiments/{manifest}.yaml")),
            edit(text),
        )
        .unwrap();
        Self(dir)
    }

    fn command(&self, args: &[&str], results: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_explr"));
        c.current_dir(&self.0 .0)
            .arg("replicate")
            .args(args)
            // --bless: the sandbox has no goldens to check against.
            .args([
                "--bless",
                "--results-dir",
                results,
                "--golden-dir",
                "golden",
            ])
            .args(["--experiments-dir", "experiments"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }

    fn summary(&self, results: &str, manifest: &str) -> String {
        std::fs::read_to_string(
            self.0
                 .0
                .join(results)
                .join(manifest)
                .join("smoke/summary.yaml"),
        )
        .unwrap()
    }
}

/// E4 at the smoke profile, shortened to four epochs of 8 steps with a checkpoint after each.
fn e4_sandbox() -> Sandbox {
    Sandbox::new("e4", |t| {
        t.replace(
            "      epochs: 8\n      checkpoint_every: 0\n",
            "      epochs: 4\n      checkpoint_every: 1\n",
        )
        .replace(
            "train_size: 512, test_size: 256",
            "train_size: 128, test_size: 64",
        )
        .replace("windows: [[4, 5], [7, 8]]", "windows: [[3, 4]]")
        .replace("          epoch: 8\n", "          epoch: 4\n")
    })
}

#[test]
fn a_killed_binary_resumes_to_the_summary_of_an_uninterrupted_run() {
    let sandbox = e4_sandbox();
    let straight = sandbox.command(&["e4"], "straight").output().unwrap();
    assert!(
        straight.status.success(),
        "{}",
        String::from_utf8_lossy(&straight.stderr)
    );
    let want = sandbox.summary("straight", "e4");
    // Killed at three moments of the run, each time resumed from what it left.
    for delay_ms in [700u64, 1500, 3000] {
        let mut child = sandbox
            .command(&["e4", "--resume"], "killed")
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
    }
    let resumed = sandbox
        .command(&["e4", "--resume"], "killed")
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(sandbox.summary("killed", "e4"), want);
}

#[test]
fn a_second_process_on_one_results_folder_fails_at_once_naming_the_first() {
    let sandbox = e4_sandbox();
    let mut first = sandbox.command(&["e4"], "shared").spawn().unwrap();
    // Wait until the first holds the folder.
    let lock = sandbox.0 .0.join("shared/e4/smoke/.lock");
    let started = Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|s| s.contains("pid")) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the first run never locked"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = Instant::now();
    let second = sandbox.command(&["e4"], "shared").output().unwrap();
    let took = t.elapsed();
    let _ = first.kill();
    let _ = first.wait();
    let err = String::from_utf8_lossy(&second.stderr).into_owned();
    assert!(!second.status.success(), "{err}");
    assert!(err.contains("in use by another explr process"), "{err}");
    assert!(err.contains(&format!("pid {}", first.id())), "{err}");
    // At once: it did not wait for the first to finish (that takes tens of seconds).
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn a_failed_rerun_does_not_leave_the_old_summary_looking_current() {
    let sandbox = Sandbox::new("t1", |t| t);
    let ok = sandbox.command(&["t1"], "results").output().unwrap();
    assert!(ok.status.success());
    let summary = sandbox.0 .0.join("results/t1/smoke/summary.yaml");
    assert!(summary.exists());
    // A rerun that fails (its folder cannot take the resolved manifest) leaves the former
    // summary marked stale, not in place.
    let folder = sandbox.0 .0.join("results/t1/smoke/manifest.resolved.yaml");
    std::fs::remove_file(&folder).unwrap();
    std::fs::create_dir_all(folder.join("blocker")).unwrap();
    let failed = sandbox.command(&["t1"], "results").output().unwrap();
    assert!(!failed.status.success());
    assert!(!summary.exists());
    assert!(summary.with_file_name("summary.stale.yaml").exists());
}

#[test]
fn bless_into_another_golden_folder_leaves_the_repository_report_alone() {
    let sandbox = Sandbox::new("t1", |t| t);
    let docs = sandbox.0 .0.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let report = "# Replication report\n\nevery claim, recorded\n";
    std::fs::write(docs.join("REPLICATION.md"), report).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_explr"))
        .current_dir(&sandbox.0 .0)
        .args(["replicate", "t1", "--bless", "--golden-dir", "elsewhere"])
        .args([
            "--results-dir",
            "results",
            "--experiments-dir",
            "experiments",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(docs.join("REPLICATION.md")).unwrap(),
        report
    );
    let beside = std::fs::read_to_string(sandbox.0 .0.join("elsewhere/REPLICATION.md")).unwrap();
    assert!(beside.contains("| [T1](#t1)"), "{beside}");
    assert!(sandbox.0 .0.join("elsewhere/t1.smoke.snap").exists());
}

/// The error's whole chain, as the binary prints it (`{:#}`).
fn chain(e: &TrainError) -> String {
    std::iter::successors(Some(e as &dyn std::error::Error), |e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

/// Flips one bit of `path`, `from_end` bytes before its end.
fn flip_bit(path: &Path, from_end: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = bytes.len() - from_end;
    bytes[i] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_flipped_bit_in_a_checkpoint_is_refused_naming_the_file() {
    let data = data();
    let dir = TempDir::new("flipped");
    run(&data, 2, false, &dir.0).unwrap();
    // Inside the tensor data of the safetensors files (their last bytes), and inside a digit of
    // the optimizer's JSON (its last number, before the closing braces).
    for (file, from_end) in [
        ("model.safetensors", 5),
        ("optimizer.safetensors", 5),
        ("optimizer.json", 0),
    ] {
        let copy = TempDir::new("flipped-copy");
        copy_dir(&dir.0, &copy.0);
        let path = copy.0.join("checkpoints/epoch-2").join(file);
        let from_end = if from_end > 0 {
            from_end
        } else {
            // The last digit of the file.
            let text = std::fs::read(&path).unwrap();
            text.len()
                - text
                    .iter()
                    .rposition(u8::is_ascii_digit)
                    .expect("a number in optimizer.json")
        };
        flip_bit(&path, from_end);
        // What a resume would continue from, as a run's state is judged: refused too.
        let model = model();
        let config = config_fingerprint(&setup(&data, &model, 3, true, &copy.0));
        match checkpoint::inspect(&copy.0, &config, 3) {
            Err(CheckpointError::Corrupt { path: named, .. }) => assert_eq!(named, path),
            other => panic!("{file}: inspect trusts a flipped bit: {other:?}"),
        }
        match run(&data, 3, true, &copy.0) {
            Err(e) => {
                let message = chain(&e);
                assert!(message.contains(file), "{file}: {message}");
                assert!(message.contains("without --resume"), "{file}: {message}");
            }
            Ok(records) => panic!(
                "{file}: a flipped bit was resumed silently ({} records)",
                records.len()
            ),
        }
    }
}

/// The weights a check compares (`weights/epoch-N.safetensors`) are checked when a complete
/// run is judged again: another run's snapshot copied in (with whatever else its `weights/`
/// folder holds), or a flipped bit in one, is reported naming the file, never judged.
#[test]
fn a_snapshot_of_another_run_is_not_judged() {
    let sandbox = e4_sandbox();
    let ok = sandbox.command(&["e4"], "results").output().unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let smoke = sandbox.0 .0.join("results/e4/smoke");
    let model = std::fs::read_dir(&smoke)
        .unwrap()
        .flatten()
        .find(|e| e.path().join("exp_cosine").is_dir())
        .expect("a model folder")
        .path();
    let weights = |run: &str| model.join(run).join("seed-0/weights");
    let snapshot = weights("exp_cosine").join("epoch-4.safetensors");
    assert!(snapshot.is_file());
    let original: Vec<(std::ffi::OsString, Vec<u8>)> = std::fs::read_dir(weights("exp_cosine"))
        .unwrap()
        .flatten()
        .map(|e| (e.file_name(), std::fs::read(e.path()).unwrap()))
        .collect();
    let restore = || {
        for (name, bytes) in &original {
            std::fs::write(weights("exp_cosine").join(name), bytes).unwrap();
        }
    };
    let judged_again = |what: &str| {
        let out = sandbox
            .command(&["e4", "--resume"], "results")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{what}: judged again\n{err}");
        assert!(err.contains("epoch-4.safetensors"), "{what}: {err}");
        assert!(err.contains("without --resume"), "{what}: {err}");
    };
    // Another run's snapshot, copied in with everything beside it.
    for e in std::fs::read_dir(weights("cosine")).unwrap().flatten() {
        std::fs::copy(e.path(), weights("exp_cosine").join(e.file_name())).unwrap();
    }
    judged_again("another run's snapshot");
    restore();
    // A flipped bit.
    flip_bit(&snapshot, 5);
    judged_again("a flipped bit");
    // Restored, it is judged again as before.
    restore();
    let again = sandbox
        .command(&["e4", "--resume"], "results")
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

/// A complete run is judged again only on the data it trained on: after the manifest's data
/// changed (another synthetic seed), `--resume` refuses to continue a run on it (the
/// checkpoint's fingerprint names `data`) and `--collect`, which judges the runs' state without
/// reading the data, reports them naming the data section, instead of judging the old runs as
/// the new manifest's.
#[test]
fn a_complete_run_on_other_data_is_not_judged_again() {
    let sandbox = e4_sandbox();
    let ok = sandbox.command(&["e4"], "results").output().unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let manifest = sandbox.0 .0.join("experiments/e4.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let edited = text.replace(
        "train_size: 128, test_size: 64,",
        "train_size: 128, test_size: 64, synthetic_seed: 7,",
    );
    assert_ne!(edited, text);
    std::fs::write(&manifest, edited).unwrap();
    for (flag, says) in [("--resume", "`data`"), ("--collect", "data section")] {
        let out = sandbox.command(&["e4", flag], "results").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{flag}: judged on other data\n{err}");
        assert!(err.contains(says), "{flag}: {err}");
        assert!(err.contains("without --resume"), "{flag}: {err}");
    }
}

/// Snapshots after an update are the weights after that update: with 2 updates an epoch,
/// the one after update 2 holds what the end of epoch 1 holds, and the one after update 3
/// differs; each is verified against its own record, so one copied in under another's name
/// is refused naming what its record says.
#[test]
fn a_snapshot_after_an_update_is_the_weights_after_it_and_verified() {
    let dir = TempDir::new("step-snapshots");
    let dir = &dir.0;
    let data = data();
    let model = model();
    let mut s = setup(&data, &model, 2, false, dir.as_path());
    s.snapshots = vec![
        SnapshotAt::Step(2),
        SnapshotAt::Epoch(1),
        SnapshotAt::Step(3),
    ];
    train(&s, &Silent).unwrap();
    let config = config_fingerprint(&s);
    let read = |at| read_snapshot(dir.as_path(), at, &config, &Device::Cpu).unwrap();
    let flat = |w: BTreeMap<String, candle_core::Tensor>| -> Vec<f64> {
        w.values()
            .flat_map(|t| t.flatten_all().unwrap().to_vec1::<f64>().unwrap())
            .collect()
    };
    let (step2, epoch1, step3) = (
        flat(read(SnapshotAt::Step(2))),
        flat(read(SnapshotAt::Epoch(1))),
        flat(read(SnapshotAt::Step(3))),
    );
    assert!(!step2.is_empty());
    assert_eq!(step2, epoch1);
    assert_ne!(step2, step3);
    // Update 3's snapshot copied in as update 2's.
    for ext in ["safetensors", "json"] {
        std::fs::copy(
            snapshot_path(dir.as_path(), SnapshotAt::Step(3)).with_extension(ext),
            snapshot_path(dir.as_path(), SnapshotAt::Step(2)).with_extension(ext),
        )
        .unwrap();
    }
    let err = verify_snapshot(dir.as_path(), SnapshotAt::Step(2), &config)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("step-2.safetensors") && err.contains("recorded for step-3"),
        "{err}"
    );
}

/// The drift curve is measured on the runs' own snapshots: E3 at the smoke profile (float64,
/// eps 0) on two seeds with `steps` added to its weight-distance check keeps the exact twin
/// within rounding of step decay after each of those updates, while its reference, the two
/// seeds of step decay, is apart by the distance of unrelated networks; the figure draws both.
#[test]
fn the_drift_curve_and_its_seed_reference_come_from_the_snapshots() {
    let sandbox = Sandbox::new("e3", |t| {
        let smoke = t.find("  smoke:").unwrap();
        let (head, tail) = t.split_at(smoke);
        let edited = tail
            .replacen(
                "train_size: 512, test_size: 256,",
                "train_size: 32, test_size: 32,",
                1,
            )
            .replacen("      seeds: [0]\n", "      seeds: [0, 1]\n", 1)
            .replacen(
                "          epoch: 8\n          bound: 1.0e-8\n",
                "          epoch: 8\n          steps: [1, 2, 4]\n          bound: 1.0e-8\n",
                1,
            );
        assert_eq!(edited.matches("steps: [1, 2, 4]").count(), 1, "{edited}");
        assert!(edited.contains("seeds: [0, 1]") && edited.contains("train_size: 32"));
        format!("{head}{edited}")
    });
    let out = sandbox.command(&["e3"], "results").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = sandbox.summary("results", "e3");
    let metric = |key: &str| -> f64 {
        let prefix = format!("  preresnet32.0_weight_distance_step_decay_vs_texp{key}: ");
        let line = summary
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{summary}"));
        line[prefix.len()..].parse().unwrap()
    };
    for step in [1, 2, 4] {
        let d = metric(&format!("_step_{step}"));
        assert!(d <= 1e-8, "twin after update {step}: {d}");
    }
    // Two independently initialized networks: √2 apart in expectation.
    let seeds = metric("_seeds_0_vs_1");
    assert!(seeds > 0.5, "seeds 0 and 1 of step decay: {seeds}");
    let svg = std::fs::read_to_string(
        sandbox
            .0
             .0
            .join("results/e3/smoke/preresnet32-weight_distance-0.svg"),
    )
    .unwrap();
    assert!(
        svg.contains("texp vs step_decay") && svg.contains("step_decay: seed 1 vs seed 0"),
        "{svg}"
    );
}
