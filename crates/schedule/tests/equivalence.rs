//! THEORY.md §6: the toy scale-invariant objective (f64, d = 50, 3000 steps, η = 0.1,
//! λ = 5e-4, γ = 0.9), a weight-decay run beside its exponential twin.

mod common;

use candle_core::DType;
use explr_schedule::{
    alpha, check_equivalence, CheckOptions, EquivalenceReport, ParamGroup, Schedule, Sgd, SgdConfig,
};

use common::Toy;

const STEPS: u64 = 3000;
const LR: f64 = 0.1;
const WD: f64 = 5e-4;
const MOMENTUM: f64 = 0.9;

/// Runs `base` with weight decay against `twin` without, `prefill` deciding the twin's
/// momentum pre-fill (THEORY.md §3), and `scale` giving P_t.
fn run(
    base: &Schedule,
    twin: &Schedule,
    prefill: bool,
    scale: &dyn Fn(u64) -> explr_schedule::Result<f64>,
) -> EquivalenceReport {
    let toy = Toy::new(6, DType::F64);
    let (w, w_twin) = (toy.var(1.0), toy.var(1.0));
    let mut reference = Sgd::new(
        base.clone(),
        vec![ParamGroup::new("scale_invariant", vec![("theta".into(), w)]).weight_decay(WD)],
        SgdConfig::momentum(MOMENTUM),
    )
    .unwrap();
    let mut exp = Sgd::new(
        twin.clone(),
        vec![ParamGroup::new(
            "scale_invariant",
            vec![("theta".into(), w_twin)],
        )],
        SgdConfig::momentum(MOMENTUM),
    )
    .unwrap();
    if prefill {
        exp.prefill_momentum(
            twin.prefill_coefficient().unwrap_or_else(|_| {
                let a = alpha(LR, WD, MOMENTUM).unwrap();
                (a - 1.0) / (a * LR)
            }),
            &[],
        )
        .unwrap();
    }
    let options = CheckOptions {
        steps: STEPS,
        scale,
        compare: vec![],
    };
    let mut obj = |s: u64, v: &[(String, candle_core::Var)]| toy.loss_and_grads(s, v);
    let mut obj_twin = |s: u64, v: &[(String, candle_core::Var)]| toy.loss_and_grads(s, v);
    let report =
        check_equivalence(&mut reference, &mut obj, &mut exp, &mut obj_twin, &options).unwrap();
    assert_eq!(report.rows.len(), STEPS as usize + 1);
    report
}

fn constant() -> (Schedule, Schedule, f64) {
    let a = alpha(LR, WD, MOMENTUM).unwrap();
    let base = Schedule::from_yaml("kind: constant\nlr: 0.1").unwrap();
    // ExpLR of THEORY.md §3: η/α · (α^−2)^k.
    let exp = Schedule::from_yaml(&format!(
        "kind: exponential\nlr: {:e}\nfactor: {:e}",
        LR / a,
        a.powi(-2)
    ))
    .unwrap();
    (base, exp, a)
}

#[test]
fn constant_lr_with_wd_equals_explr_with_prefilled_buffer() {
    let (base, exp, a) = constant();
    let r = run(&base, &exp, true, &|t| Ok(a.powf(-(t as f64))));
    assert!(
        r.max_deviation() <= 1e-10,
        "max deviation {:e}",
        r.max_deviation()
    );
    // The run really moved: the WD run's loss changed and the twin's weights grew.
    assert!(r.rows[STEPS as usize].scale > 4.0);
    assert!((r.rows[0].loss - r.rows[STEPS as usize - 1].loss).abs() > 1e-3);
}

#[test]
fn without_prefill_the_deviation_is_visibly_larger() {
    let (base, exp, a) = constant();
    let with = run(&base, &exp, true, &|t| Ok(a.powf(-(t as f64)))).max_deviation();
    let without = run(&base, &exp, false, &|t| Ok(a.powf(-(t as f64)))).max_deviation();
    assert!(
        without > 1e-6 && without > 1e4 * with,
        "without pre-fill {without:e}, with {with:e}"
    );
}

fn multistep() -> Schedule {
    Schedule::from_yaml("kind: multistep\nlr: 0.1\nmilestones: [1000, 2000]\ngamma: 0.1").unwrap()
}

#[test]
fn multistep_with_wd_equals_its_exact_section_4_transform() {
    let base = multistep();
    let twin = base.exp_twin(WD, MOMENTUM).unwrap();
    let r = run(&base, &twin, true, &|t| twin.twin_scale(t));
    assert!(
        r.max_deviation() <= 1e-10,
        "max deviation {:e}",
        r.max_deviation()
    );
}

#[test]
fn multistep_with_wd_stays_within_a_microradian_of_texp() {
    let base = multistep();
    let exact = base.exp_twin(WD, MOMENTUM).unwrap();
    let texp = Schedule::from_yaml(
        "kind: texp\nlr: 0.1\nmilestones: [1000, 2000]\ngamma: 0.1\nweight_decay: 5.0e-4\nmomentum: 0.9",
    )
    .unwrap();
    let r = run(&base, &texp, true, &|t| exact.twin_scale(t));
    assert!(r.max_angle() <= 1e-6, "max angle {:e}", r.max_angle());
    // TEXP is not exact: its deviation exceeds the exact transform's.
    assert!(
        r.max_deviation() > 1e-10,
        "TEXP deviation {:e}",
        r.max_deviation()
    );
}

#[test]
fn cosine_with_wd_equals_the_exponential_cosine() {
    let base = Schedule::from_yaml("kind: cosine\nlr: 0.1\nt_max: 3000\neta_min: 0.001").unwrap();
    let twin = base.exp_twin(WD, MOMENTUM).unwrap();
    let r = run(&base, &twin, true, &|t| twin.twin_scale(t));
    assert!(
        r.max_deviation() <= 1e-10,
        "max deviation {:e}",
        r.max_deviation()
    );
}
