//! `--dry-run` can be trusted: a manifest that parsing accepts never fails at run time for a
//! reason parsing could have seen. Manifests are generated from a palette of valid and invalid
//! values (depths that are not 6k+2, GroupNorm groups that do not divide the width, negative
//! eps, empty or zero-sized splits, duplicate seeds, unsorted milestones, milestones past the
//! end, cosine schedules whose exact twin breaks down, momentum 1, …); whatever parses is run
//! in full on tiny synthetic data. The only failure allowed at run time is divergence (a
//! non-finite loss), which depends on the training itself.

mod common;

use std::path::Path;

use explr_replicate::context::{RunnerOptions, Silent};
use explr_replicate::executor::LocalPool;
use explr_replicate::experiments::ExperimentError;
use explr_replicate::manifest;
use explr_replicate::runner;
use explr_replicate::trainer::TrainError;
use proptest::prelude::*;

use common::TempDir;

/// A local run into `dir`, from scratch, on the CPU.
fn options(dir: &TempDir) -> RunnerOptions {
    RunnerOptions::on_cpu(&dir.0)
}

/// One generated manifest's choices.
#[derive(Clone, Debug)]
struct Choice {
    model: &'static str,
    train_size: &'static str,
    test_size: &'static str,
    batch_size: &'static str,
    seeds: &'static str,
    epochs: usize,
    base: &'static str,
    weight_decay: &'static str,
    momentum: &'static str,
    transform: &'static str,
    check: &'static str,
    control: &'static str,
}

/// A value from `valid` nine times in ten, else one from `invalid`.
fn pick(valid: &[&'static str], invalid: &[&'static str]) -> impl Strategy<Value = &'static str> {
    prop_oneof![
        9 => prop::sample::select(valid.to_vec()),
        1 => prop::sample::select(invalid.to_vec()),
    ]
}

fn choice() -> impl Strategy<Value = Choice> {
    (
        pick(
            &[
                "{arch: preresnet, depth: 8, width: 2}",
                "{arch: preresnet, depth: 8, width: 4, norm: \"gn:2\"}",
                "{arch: resnet, depth: 8, width: 2, norm: ln}",
                "{arch: vgg, depth: 11, width: 2}",
                "{arch: preresnet, depth: 8, width: 2, eps: 0.0}",
            ],
            &[
                "{arch: preresnet, depth: 9, width: 2}",
                "{arch: preresnet, depth: 8, width: 0}",
                "{arch: preresnet, depth: 8, width: 4, norm: \"gn:3\"}",
                "{arch: resnet, depth: 8, width: 3}",
                "{arch: vgg, depth: 12, width: 2}",
                "{arch: preresnet, depth: 8, width: 2, eps: -1.0}",
                "{arch: preresnet, depth: 8, width: 2, num_classes: 5}",
                "{arch: preresnet, depth: 8, width: 2, final_norm: none}",
            ],
        ),
        pick(&["8", "12"], &["0"]),
        pick(&["4", "1"], &["0"]),
        pick(&["4", "16"], &["0"]),
        pick(&["[0]", "[0, 1]"], &["[]", "[1, 1]"]),
        1usize..=3,
        pick(
            &[
                "{kind: multistep, lr: 0.1, milestones: [1], gamma: 0.1}",
                "{kind: constant, lr: 0.1}",
                "{kind: cosine, lr: 0.1, t_max: 3, eta_min: 0.01}",
                "{kind: cosine, lr: 0.1, t_max: 2}",
            ],
            &[
                "{kind: multistep, lr: 0.1, milestones: [2, 1], gamma: 0.1}",
                "{kind: multistep, lr: 0.1, milestones: [3], gamma: 0.1}",
                "{kind: multistep, lr: -0.1, milestones: [1], gamma: 0.1}",
                "{kind: step, lr: 0.1, step_size: 0, gamma: 0.5}",
            ],
        ),
        pick(&["5.0e-4", "0.0"], &["-1.0", "0.5"]),
        pick(&["0.9", "0.0"], &["1.0"]),
        pick(&["texp", "texp_minus", "exact"], &["exact"]),
        pick(
            &[
                "{check: window_gap, a: base, b: twin, metric: train_acc, windows: [[1, 1]], bound: 0.5, reason: r}",
                "{check: weight_distance, a: base, b: twin, epoch: 1, bound: 1.0, reason: r}",
                "{check: angular_update, run: base, window: [1, 1], tolerance: 10.0, reason: r}",
                "{check: nearly_constant, run: twin, metric: norm_sq_over_lr, window: [1, 1], tolerance: 10.0, reason: r}",
                "{check: greater, a: base, b: twin, metric: lr, window: [1, 1], margin: -100.0, reason: r}",
            ],
            &[
                "{check: window_gap, a: base, b: twin, metric: test_acc, windows: [[2, 4]], bound: 0.5, reason: r}",
                "{check: weight_distance, a: base, b: twin, epoch: 1, bound: 1.0, reason: ''}",
                "{check: angular_update, run: twin, window: [1, 1], tolerance: 10.0, reason: r}",
                "{check: nearly_constant, run: twin, metric: norm_sq_over_lr, window: [2, 1], tolerance: 10.0, reason: r}",
                "{check: weight_distance, a: base, b: ctl, epoch: 1, bound: 1.0, reason: r}",
            ],
        ),
        pick(
            &[
                "{replaces: twin, why: the twin for twice the weight decay, run: {derive: {from: base, transform: exact, weight_decay_factor: 2.0}}}",
                "{replaces: base, why: another LR, run: {schedule: {kind: constant, lr: 0.05}}}",
            ],
            &[
                "{replaces: nothing, why: w, run: {schedule: {kind: constant, lr: 0.05}}}",
                "{replaces: twin, why: w, run: {derive: {from: ctl, transform: exact}}}",
                "{replaces: twin, why: w, run: {derive: {from: base, transform: exact, weight_decay_factor: 0.0}}}",
            ],
        ),
    )
        .prop_map(
            |(
                model,
                train_size,
                test_size,
                batch_size,
                seeds,
                epochs,
                base,
                weight_decay,
                momentum,
                transform,
                check,
                control,
            )| Choice {
                model,
                train_size,
                test_size,
                batch_size,
                seeds,
                epochs,
                base,
                weight_decay,
                momentum,
                transform,
                check,
                control,
            },
        )
}

fn text(c: &Choice) -> String {
    format!(
        "id: D1\ntitle: generated\npaper: none\nclaim: none\ntraining:\n  \
         models:\n    m: {}\n  \
         data: {{dataset: synthetic, train_size: {}, test_size: {}, batch_size: {}, augment: false}}\n  \
         seeds: {}\n  epochs: {}\n  \
         runs:\n    base:\n      momentum: {}\n      weight_decay: {}\n      schedule: {}\n    \
         twin:\n      derive: {{from: base, transform: {}}}\n  \
         controls:\n    ctl: {}\n  \
         checks:\n    - {}\n",
        c.model,
        c.train_size,
        c.test_size,
        c.batch_size,
        c.seeds,
        c.epochs,
        c.momentum,
        c.weight_decay,
        c.base,
        c.transform,
        c.control,
        c.check
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_manifest_that_parses_runs(c in choice()) {
        let text = text(&c);
        let Ok(resolved) = manifest::parse(&text, Path::new("d1.yaml"), "d1", "smoke") else {
            // Rejected by parsing: nothing to run.
            return Ok(());
        };
        let dir = TempDir::new("dry-run");
        let opts = options(&dir);
        match runner::run(&resolved, &opts, &LocalPool { jobs: 1 }, &Silent) {
            Ok(_) => {}
            Err(ExperimentError::Train(e)) if matches!(*e, TrainError::NonFinite { .. }) => {}
            Err(e) => prop_assert!(false, "parsed, then failed at run time: {e}\n{text}"),
        }
    }
}

/// The palette reaches both sides: some generated manifests parse and some do not, so the
/// property above is not vacuous.
#[test]
fn the_generator_makes_valid_and_invalid_manifests() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut valid, mut invalid) = (0, 0);
    for _ in 0..200 {
        let c = choice().new_tree(&mut runner).unwrap().current();
        match manifest::parse(&text(&c), Path::new("d1.yaml"), "d1", "smoke") {
            Ok(_) => valid += 1,
            Err(_) => invalid += 1,
        }
    }
    assert!(
        valid >= 10 && invalid >= 10,
        "{valid} valid, {invalid} invalid"
    );
}

/// A rerun with `--resume` that finds every run complete trains nothing: it judges the records
/// again (same summary) and gives the same training time, summed from the runs' records. An
/// experiment of another kind judged again says its time is not a record of it.
#[test]
fn a_rerun_of_complete_runs_re_judges_them_without_training() {
    let c = Choice {
        model: "{arch: preresnet, depth: 8, width: 2}",
        train_size: "8",
        test_size: "4",
        batch_size: "4",
        seeds: "[0, 1]",
        epochs: 1,
        base: "{kind: constant, lr: 0.1}",
        weight_decay: "5.0e-4",
        momentum: "0.9",
        transform: "exact",
        check: "{check: greater, a: base, b: twin, metric: lr, window: [1, 1], margin: -100.0, reason: r}",
        control: "{replaces: base, why: another LR, run: {schedule: {kind: constant, lr: 0.05}}}",
    };
    let resolved = manifest::parse(&text(&c), Path::new("d1.yaml"), "d1", "smoke").unwrap();
    let dir = TempDir::new("rejudge");
    let mut opts = options(&dir);
    let finished = |opts: &RunnerOptions, resolved: &manifest::Resolved| match runner::run(
        resolved,
        opts,
        &LocalPool { jobs: 1 },
        &Silent,
    )
    .unwrap()
    {
        runner::Outcome::Finished(outcome) => outcome,
        other => panic!("a local pool runs every unit here: {other:?}"),
    };
    let first = finished(&opts, &resolved);
    assert!(first.timed && first.wall_s > 0.0);
    opts.resume = true;
    let again = finished(&opts, &resolved);
    assert!(again.timed);
    assert_eq!(again.wall_s.to_bits(), first.wall_s.to_bits());
    assert_eq!(again.summary, first.summary);
    let toy_manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/t1.yaml");
    let toy = manifest::load(&toy_manifest, "smoke").unwrap();
    opts.resume = false;
    assert!(finished(&opts, &toy).timed);
    opts.resume = true;
    assert!(!finished(&opts, &toy).timed);
    // Over two seeds a mean check carries its confidence bounds.
    assert!(first.summary["checks"]["m.0_greater"]["interval"].is_sequence());
}

/// Peak memory (KiB) of `explr replicate --dry-run --profile smoke e1` on a copy
/// of `experiments/e1.yaml` with `edit` applied, with whether it succeeded and its stderr.
// The child is reaped by `wait4` (which also reports its peak memory), not `Child::wait`.
#[allow(clippy::zombie_processes)]
fn dry_run_e1(edit: impl Fn(&str) -> String) -> (bool, String, u64) {
    use std::process::{Command, Stdio};
    let dir = TempDir::new("dry-run-limits");
    std::fs::create_dir_all(dir.0.join("experiments")).unwrap();
    let e1 = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/e1.yaml");
    let text = edit(&std::fs::read_to_string(e1).unwrap());
    std::fs::write(dir.0.join("experiments/e1.yaml"), text).unwrap();
    let stderr = dir.0.join("stderr.txt");
    let mut command = Command::new(env!("CARGO_BIN_EXE_explr"));
    // A regression must not take the machine's memory with it (the audit's billion epochs
    // asked for 6 GiB): the child gets 4 GiB of address space and fails past it.
    // SAFETY: only setrlimit, which is async-signal-safe, runs between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            let limit = libc::rlimit {
                rlim_cur: 4 << 30,
                rlim_max: 4 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let child = command
        .current_dir(&dir.0)
        .args(["replicate", "--dry-run", "--profile", "smoke"])
        .args([
            "--experiments-dir",
            "experiments",
            "--results-dir",
            "results",
        ])
        .arg("e1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    // wait4 reports this child's own peak resident set (ru_maxrss, KiB on Linux).
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid, and wait4 writes only into the two out-pointers.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: `pid` is our own unwaited child; the pointers are to live locals.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4 failed");
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    let text = std::fs::read_to_string(&stderr).unwrap();
    (ok, text, u64::try_from(usage.ru_maxrss).unwrap_or(0))
}

/// `e1.yaml` with its smoke profile's `key: value` line (the first after `smoke:`) replaced.
fn smoke_override(text: &str, from: &str, to: &str) -> String {
    let (head, smoke) = text.split_once("\n  smoke:\n").unwrap();
    assert!(
        smoke.contains(from),
        "`{from}` is not in e1's smoke profile"
    );
    format!("{head}\n  smoke:\n{}", smoke.replacen(from, to, 1))
}

/// `--dry-run` costs the same whatever the manifest's numbers: each huge value is refused
/// before anything is built or looped over, naming the file, line, field and limit, in under
/// 100 MB (the audit's billion epochs asked for 6 GiB and aborted; u64::MAX epochs
/// overflowed). The unedited manifest passes the same way, so the bound is not vacuous. (Time
/// is not asserted: the machines are shared; `/usr/bin/time -v` measured 0.04 s and 12 MB for
/// the billion epochs.)
#[test]
fn dry_run_memory_does_not_grow_with_the_manifests_numbers() {
    const MEMORY_KIB: u64 = 100 * 1024;
    let (ok, stderr, kib) = dry_run_e1(str::to_string);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("valid"), "{stderr}");
    assert!(kib < MEMORY_KIB, "unedited: {kib} KiB");
    for (case, from, to, field, needle) in [
        (
            "a billion epochs",
            "      epochs: 8\n",
            "      epochs: 1000000000\n",
            "training.epochs",
            "limit of 10000 epochs",
        ),
        (
            "u64::MAX epochs",
            "      epochs: 8\n",
            "      epochs: 18446744073709551615\n",
            "training.epochs",
            "limit of 10000 epochs",
        ),
        (
            "10^11 training images",
            "train_size: 512,",
            "train_size: 100000000000,",
            "training.data.train_size",
            "50000",
        ),
        (
            "a model a million wide",
            "preresnet32: {depth: 8, width: 8, eps: 0.0}",
            "preresnet32: {depth: 8, width: 1000000, eps: 0.0}",
            "training.models.preresnet32.width",
            "limit of 50000000",
        ),
    ] {
        let (ok, stderr, kib) = dry_run_e1(|t| smoke_override(t, from, to));
        assert!(!ok, "{case}: accepted\n{stderr}");
        assert!(
            stderr.contains("e1.yaml:")
                && stderr.contains(&format!("`{field}`"))
                && stderr.contains(needle)
                && !stderr.contains("panicked"),
            "{case}: {stderr}"
        );
        assert!(kib < MEMORY_KIB, "{case}: peak memory {kib} KiB");
    }
}
