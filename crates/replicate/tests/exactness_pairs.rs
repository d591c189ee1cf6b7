//! X1–X3's lockstep check pairs each twin with its own `derive.from` base run and rescales by
//! the twin's own P_t: a manifest with two base runs (a step decay, and a constant LR whose
//! weight decay is divided) holds every twin of either to 1e-10 in float64. Pairing every twin
//! with the first base run by name (what the check once did) fails it.

mod common;

use explr_replicate::context::{RunnerOptions, Silent};
use explr_replicate::experiments::exactness::run_exactness;
use explr_replicate::spec::{Exactness, FieldError, Manifest};
use explr_replicate::validate::validate;

/// What validation says of a manifest made of `spec`.
fn problems(spec: &Exactness) -> Vec<FieldError> {
    validate(&Manifest {
        id: "X0".into(),
        title: "t".into(),
        paper: "p".into(),
        claim: "c".into(),
        training: None,
        exactness: Some(spec.clone()),
        scale_invariance: None,
        toy: None,
        golden_tolerance: None,
        slurm: None,
        profiles: Default::default(),
    })
}

const SPEC: &str = r#"
model: {arch: preresnet, depth: 8, width: 4, norm: bn, eps: 0.0, freeze_norm_affine: true, freeze_head: true}
data: {dataset: synthetic, train_size: 64, test_size: 16, batch_size: 16, augment: false}
steps: 12
seed: 3
runs:
  a_step_decay:
    weight_decay: 5.0e-4
    schedule: {kind: multistep, lr: 0.1, milestones: [1, 2], gamma: 0.1}
  b_wd_decay:
    schedule: {kind: constant, lr: 0.1}
    weight_decay_schedule: {kind: multistep, lr: 5.0e-4, milestones: [1, 2], gamma: 0.1}
  a_texp:
    derive: {from: a_step_decay, transform: texp}
  a_texp_plain:
    derive: {from: a_step_decay, transform: texp_plain}
  b_exact:
    derive: {from: b_wd_decay, transform: exact}
  b_texp_minus:
    derive: {from: b_wd_decay, transform: texp_minus}
tolerance: {a_texp: 1.0e-10, b_exact: 1.0e-10, b_texp_minus: 1.0e-10}
variants: [a_texp_plain]
"#;

#[test]
fn each_twin_is_compared_with_its_own_base_run() {
    let spec: Exactness = serde_yaml::from_str(SPEC).unwrap();
    assert_eq!(problems(&spec), []);
    let dir = common::TempDir::new("exactness-pairs");
    let opts = RunnerOptions::on_cpu(&dir.0);
    let (summary, _) = run_exactness(&spec, &dir.0, &opts, &Silent).unwrap();
    let checks = summary.checks();
    let names: Vec<&str> = checks.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "a_texp_exact",
            "a_texp_same_function",
            "b_exact_exact",
            "b_exact_same_function",
            "b_texp_minus_exact",
            "b_texp_minus_same_function",
        ],
        "the variant is recorded, not checked"
    );
    for (name, c) in checks {
        assert!(c.pass(), "{name}: {} > {}", c.value, c.bound);
    }
    let value = summary.to_value("X", "test");
    let metric = |k: &str| value["metrics"][k].as_f64().unwrap();
    // The twins of the constant-LR run grow differently from the step decay's (P_t of their
    // own), and plain TEXP is recorded beside corrected TEXP.
    assert_ne!(
        metric("a_texp.final_scale_p"),
        metric("b_exact.final_scale_p")
    );
    assert!(metric("a_texp_plain.max_deviation_log10") > metric("a_texp.max_deviation_log10"));
    for pair in [
        "a_step_decay_vs_a_texp",
        "b_wd_decay_vs_b_exact",
        "b_wd_decay_vs_b_texp_minus",
    ] {
        assert!(dir.0.join(format!("{pair}.csv")).is_file(), "{pair}.csv");
    }
}

#[test]
fn every_twin_is_bounded_or_a_variant() {
    let check = |edit: &dyn Fn(&mut Exactness), needle: &str| {
        let mut spec: Exactness = serde_yaml::from_str(SPEC).unwrap();
        edit(&mut spec);
        let e = problems(&spec);
        assert!(format!("{e:?}").contains(needle), "{e:?} lacks {needle}");
    };
    check(&|s| s.variants.clear(), "exactness.runs.a_texp_plain");
    check(
        &|s| s.variants.push("a_texp".into()),
        "exactness.runs.a_texp",
    );
    check(
        &|s| s.variants.push("a_step_decay".into()),
        "exactness.variants.1",
    );
}
