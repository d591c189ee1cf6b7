//! YAML specs: every kind parses and builds; invalid specs give typed errors that name the
//! field and what would be valid.

use explr_schedule::{Schedule, ScheduleError, ScheduleSpec, Unit};

/// Builds `yaml` in steps and checks lr at a few steps against independently computed values.
fn check_ok(yaml: &str, expected: &[(u64, f64)]) {
    check_ok_in(yaml, Unit::Steps, expected)
}

/// Builds `yaml` with its counts in `unit` and checks lr at a few steps.
fn check_ok_in(yaml: &str, unit: Unit, expected: &[(u64, f64)]) {
    let s = Schedule::from_yaml(yaml, unit).unwrap_or_else(|e| panic!("{yaml}: {e}"));
    assert_eq!(s.unit(), unit);
    for &(k, want) in expected {
        let got = s.lr(k).unwrap();
        assert!(
            ((got - want) / want).abs() < 1e-13,
            "{yaml}\nlr({k}) = {got}, expected {want}"
        );
    }
    // Specs round-trip through YAML.
    let again = ScheduleSpec::from_yaml(&serde_yaml::to_string(s.spec()).unwrap()).unwrap();
    assert_eq!(&again, s.spec());
}

/// Building `yaml` in steps fails with a message containing every needle.
fn check_err(yaml: &str, needles: &[&str]) -> ScheduleError {
    check_err_in(yaml, Unit::Steps, needles)
}

/// Building `yaml` in `unit` fails with a message containing every needle.
fn check_err_in(yaml: &str, unit: Unit, needles: &[&str]) -> ScheduleError {
    let e = Schedule::from_yaml(yaml, unit).unwrap_err();
    for n in needles {
        assert!(e.to_string().contains(n), "{yaml}\nerror `{e}` lacks `{n}`");
    }
    e
}

#[test]
fn every_kind_builds_from_yaml() {
    let pi = std::f64::consts::PI;
    check_ok("kind: constant\nlr: 0.1", &[(0, 0.1), (10_000, 0.1)]);
    check_ok(
        "kind: multistep\nlr: 1\nmilestones: [2, 5]\ngamma: 0.5",
        &[(1, 1.0), (2, 0.5), (4, 0.5), (5, 0.25)],
    );
    check_ok_in(
        "kind: multistep\nlr: 1\nmilestones: [2, 5]\ngamma: 0.5",
        Unit::Epochs(10),
        &[(19, 1.0), (20, 0.5), (50, 0.25)],
    );
    check_ok(
        "kind: step\nlr: 1\nstep_size: 3\ngamma: 0.1",
        &[(2, 1.0), (3, 0.1), (6, 0.01)],
    );
    check_ok(
        "kind: exponential\nlr: 2\nfactor: 1.5",
        &[(0, 2.0), (2, 4.5)],
    );
    check_ok_in(
        "kind: exponential\nlr: 2\nfactor: 1.5",
        Unit::Epochs(4),
        &[(3, 2.0), (4, 3.0), (8, 4.5)],
    );
    check_ok(
        "kind: cosine\nlr: 1\nt_max: 8\neta_min: 0.1",
        &[
            (0, 1.0),
            (2, 0.1 + 0.9 * (1.0 + (pi / 4.0).cos()) / 2.0),
            (8, 0.1),
        ],
    );
    check_ok(
        "kind: warmup\nlr: 1\nstart_factor: 0.25\ntotal_iters: 4",
        &[(0, 0.25), (2, 0.625), (4, 1.0), (9, 1.0)],
    );
    check_ok(
        "kind: sequential\nmilestones: [3]\nschedules:\n  - {kind: warmup, lr: 1, start_factor: 0.5, total_iters: 3}\n  - {kind: step, lr: 1, step_size: 2, gamma: 0.5}",
        &[(0, 0.5), (3, 1.0), (4, 1.0), (5, 0.5)],
    );
    check_ok(
        "kind: exp_equivalent\nweight_decay: 0.0\nmomentum: 0.9\nbase: {kind: multistep, lr: 0.1, milestones: [5], gamma: 0.1}",
        // Without weight decay α_t = 1 for a constant LR, so the twin is the schedule itself.
        &[(0, 0.1), (4, 0.1)],
    );
}

#[test]
fn nested_specs_inherit_the_unit() {
    // Epochs of 10 steps reach every count, however deep: the sequential's boundary, its
    // parts' milestones, a product's factor, an exponential twin's base and weight decay.
    check_ok_in(
        "kind: sequential\nmilestones: [1]\nschedules:\n  - {kind: constant, lr: 1}\n  - {kind: multistep, lr: 1, milestones: [2], gamma: 0.5}",
        Unit::Epochs(10),
        &[(9, 1.0), (10, 1.0), (29, 1.0), (30, 0.5)],
    );
    check_ok_in(
        "kind: product\nschedules:\n  - {kind: exponential, lr: 1, factor: 2}\n  - {kind: step, lr: 1, step_size: 2, gamma: 0.5}",
        Unit::Epochs(10),
        &[(9, 1.0), (10, 2.0), (19, 2.0), (20, 2.0), (30, 4.0)],
    );
    // A cosine's half period is in epochs, but its LR moves every step.
    let cos = Schedule::cosine(1.0, 1, 0.0, Unit::Epochs(10)).unwrap();
    assert!((cos.lr(5).unwrap() - 0.5).abs() < 1e-15 && cos.lr(10).unwrap() < 1e-15);
    // TEXP-- in epochs: its weight-decay milestone (epoch 2) is where its growth slows.
    let tm = Schedule::from_yaml(
        "kind: texp_minus\nlr: 0.1\nmilestones: [2]\ngamma: 0.1\nweight_decay: 5.0e-4\nmomentum: 0.9",
        Unit::Epochs(10),
    )
    .unwrap();
    let growth = |k: u64| tm.lr(k + 1).unwrap() / tm.lr(k).unwrap();
    assert!(
        growth(18) > 1.001 && growth(21) < 1.0002,
        "{} {}",
        growth(18),
        growth(21)
    );
}

#[test]
fn short_constructors_equal_their_specs() {
    let unit = Unit::Epochs(7);
    let pairs = [
        (Schedule::constant(0.1).unwrap(), "kind: constant\nlr: 0.1"),
        (
            Schedule::multistep(0.1, &[2, 5], 0.1, unit).unwrap(),
            "kind: multistep\nlr: 0.1\nmilestones: [2, 5]\ngamma: 0.1",
        ),
        (
            Schedule::step(0.1, 3, 0.5, unit).unwrap(),
            "kind: step\nlr: 0.1\nstep_size: 3\ngamma: 0.5",
        ),
        (
            Schedule::exponential(0.1, 1.5, unit).unwrap(),
            "kind: exponential\nlr: 0.1\nfactor: 1.5",
        ),
        (
            Schedule::cosine(0.1, 4, 0.001, unit).unwrap(),
            "kind: cosine\nlr: 0.1\nt_max: 4\neta_min: 0.001",
        ),
        (
            Schedule::warmup(0.1, 0.25, 1.0, 2, unit).unwrap(),
            "kind: warmup\nlr: 0.1\nstart_factor: 0.25\nend_factor: 1.0\ntotal_iters: 2",
        ),
    ];
    for (built, yaml) in pairs {
        let unit = if yaml.contains("constant") {
            Unit::Steps
        } else {
            unit
        };
        let parsed = Schedule::from_yaml(yaml, unit).unwrap();
        assert_eq!(built.spec(), parsed.spec(), "{yaml}");
        assert_eq!(built.unit(), parsed.unit(), "{yaml}");
        for k in [0, 6, 7, 14, 35, 40] {
            assert_eq!(built.lr(k).unwrap(), parsed.lr(k).unwrap(), "{yaml} at {k}");
        }
    }
}

#[test]
fn invalid_specs_name_the_field() {
    check_err("kind: constant\nlr: 0.1\nlrr: 2", &["unknown field `lrr`"]);
    check_err(
        "kind: linear\nlr: 0.1",
        &["unknown variant `linear`", "multistep"],
    );
    check_err("kind: constant\nlr: -0.1", &["`lr` = -0.1", "> 0"]);
    check_err(
        "kind: multistep\nlr: 0.1\nmilestones: [5, 5]\ngamma: 0.1",
        &["`milestones`", "strictly increasing"],
    );
    check_err(
        "kind: multistep\nlr: 0.1\nmilestones: [5]\ngamma: 0.0",
        &["`gamma` = 0"],
    );
    check_err(
        "kind: step\nlr: 0.1\nstep_size: 0\ngamma: 0.1",
        &["`step_size` = 0", ">= 1"],
    );
    check_err(
        "kind: cosine\nlr: 0.1\nt_max: 10\neta_min: 0.2",
        &["`eta_min` = 0.2", "[0, lr = 0.1)"],
    );
    check_err_in(
        "kind: multistep\nlr: 0.1\nmilestones: [5]\ngamma: 0.1",
        Unit::Epochs(0),
        &["`steps_per_epoch` = 0"],
    );
    check_err(
        "kind: multistep\nlr: 0.1\nmilestones: [5]\ngamma: 0.1\nsteps_per_epoch: 10",
        &["unknown field `steps_per_epoch`"],
    );
    check_err(
        "kind: exp_equivalent\nweight_decay: 5.0e-4\nmomentum: 0.9\nbase: {kind: constant, lr: 0.1}\nweight_decay_schedule: {kind: multistep, lr: 5.0e-4, milestones: [5], gamma: 0.1}",
        &["`weight_decay` = 0.0005", "give one of them"],
    );
    check_err(
        "kind: exp_equivalent\nmomentum: 0.9\nalpha: tapered\nbase: {kind: constant, lr: 0.1}",
        &["unknown variant `tapered`", "recursion", "root"],
    );
    check_err(
        "kind: texp_minus\nlr: 0.1\nmilestones: [5]\ngamma: 0.1\nweight_decay: -1.0\nmomentum: 0.9",
        &["`weight_decay` = -1", ">= 0"],
    );
    check_err(
        "kind: sequential\nmilestones: []\nschedules: [{kind: constant, lr: 1}, {kind: constant, lr: 2}]",
        &["`milestones`", "one boundary fewer than the 2 schedules"],
    );
    let e = check_err(
        "kind: texp\nlr: 0.1\nmilestones: [5]\ngamma: 0.1\nweight_decay: 1.0\nmomentum: 0.9",
        &["weight_decay = 1", "(1 − √momentum)²"],
    );
    assert!(matches!(e, ScheduleError::NoRealAlpha { .. }), "{e:?}");
}

#[test]
fn exact_transform_of_a_cosine_without_floor_breaks_down_with_a_hint() {
    let s = Schedule::from_yaml(
        "kind: exp_equivalent\nweight_decay: 5.0e-4\nmomentum: 0.9\nbase: {kind: cosine, lr: 0.1, t_max: 10}",
        Unit::Steps,
    )
    .unwrap();
    assert!(s.lr(5).unwrap() > 0.0);
    let e = s.lr(12).unwrap_err();
    assert!(
        matches!(e, ScheduleError::TransformBreaksDown { step: 12, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("eta_min"), "{e}");
}
