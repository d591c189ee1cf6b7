//! YAML specs: every kind parses and builds; invalid specs give typed errors that name the
//! field and what would be valid.

use explr_schedule::{Schedule, ScheduleError, ScheduleSpec};

/// Builds `yaml` and checks lr at a few steps against independently computed values.
fn check_ok(yaml: &str, expected: &[(u64, f64)]) {
    let s = Schedule::from_yaml(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
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

/// Building `yaml` fails with a message containing every needle.
fn check_err(yaml: &str, needles: &[&str]) -> ScheduleError {
    let e = Schedule::from_yaml(yaml).unwrap_err();
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
    check_ok(
        "kind: multistep\nlr: 1\nmilestones: [2, 5]\ngamma: 0.5\nsteps_per_epoch: 10",
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
    check_ok(
        "kind: exponential\nlr: 2\nfactor: 1.5\nsteps_per_epoch: 4",
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
    check_err(
        "kind: multistep\nlr: 0.1\nmilestones: [5]\ngamma: 0.1\nsteps_per_epoch: 0",
        &["`steps_per_epoch` = 0"],
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
