//! Parity with `torch.optim.SGD` and `torch.optim.lr_scheduler` (StepLR, MultiStepLR,
//! ExponentialLR, CosineAnnealingLR, LinearLR, SequentialLR). The fixture and the cases come
//! from `scripts/pytorch/schedule_fixtures.py` (its header says how to rerun it); the torch
//! version is recorded inside the fixture.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use explr_schedule::{ParamGroup, ScheduleSpec, Sgd, SgdConfig, Unit};
use serde::Deserialize;

const FIXTURE: &[u8] = include_bytes!("fixtures/torch_sgd.safetensors");
const TOL: f64 = 1e-12;

#[derive(Deserialize)]
struct Case {
    name: String,
    schedule: ScheduleSpec,
    momentum: f64,
    dampening: f64,
    nesterov: bool,
    weight_decay_a: f64,
    lr_scale_b: f64,
    /// Group b's own schedule, where it is not a multiple of group a's (cosine's eta_min).
    schedule_b: Option<ScheduleSpec>,
}

struct Fixture {
    tensors: HashMap<String, Tensor>,
    cases: Vec<Case>,
    steps: usize,
    every: usize,
}

fn fixture() -> Fixture {
    let (_, meta) = safetensors::SafeTensors::read_metadata(FIXTURE).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert!(
        meta["torch_version"].starts_with("2."),
        "fixture made with torch {}",
        meta["torch_version"]
    );
    Fixture {
        tensors: candle_core::safetensors::load_buffer(FIXTURE, &Device::Cpu).unwrap(),
        cases: serde_json::from_str(&meta["cases"]).unwrap(),
        steps: meta["steps"].parse().unwrap(),
        every: meta["every"].parse().unwrap(),
    }
}

fn rel(a: &[f64], b: &[f64]) -> f64 {
    let d: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt();
    let n: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    d / n
}

/// Runs one fixture case through our schedule and SGD; returns (max LR error, max parameter
/// error), both relative.
fn run_case(fx: &Fixture, case: &Case) -> (f64, f64) {
    let t = |k: &str| fx.tensors[k].clone();
    let schedule = case.schedule.build(Unit::Steps).unwrap();
    let torch_lr: Vec<f64> = t(&format!("{}.lr", case.name)).to_vec1().unwrap();
    let lr_err = torch_lr
        .iter()
        .enumerate()
        .map(|(k, &l)| ((schedule.lr(k as u64).unwrap() - l) / l).abs())
        .fold(0.0, f64::max);

    let a = Var::from_tensor(&t("init.a.weight")).unwrap();
    let b = Var::from_tensor(&t("init.b.bias")).unwrap();
    let groups = vec![
        ParamGroup::new("a", vec![("a.weight".into(), a.clone())])
            .weight_decay(case.weight_decay_a),
        match &case.schedule_b {
            None => {
                ParamGroup::new("b", vec![("b.bias".into(), b.clone())]).lr_scale(case.lr_scale_b)
            }
            Some(spec) => ParamGroup::new("b", vec![("b.bias".into(), b.clone())])
                .schedule(spec.build(Unit::Steps).unwrap()),
        },
    ];
    let config = SgdConfig {
        momentum: case.momentum,
        dampening: case.dampening,
        nesterov: case.nesterov,
        ..Default::default()
    };
    let mut sgd = Sgd::new(schedule, groups, config).unwrap();
    let (m, c) = (t("A"), t("b"));
    let theta_torch: Vec<Vec<f64>> = t(&format!("{}.theta", case.name)).to_vec2().unwrap();
    let mut theta_err: f64 = 0.0;
    for k in 1..=fx.steps {
        let theta = Tensor::cat(
            &[a.as_tensor().flatten_all().unwrap(), b.as_tensor().clone()],
            0,
        )
        .unwrap();
        let g = (m
            .matmul(&theta.unsqueeze(1).unwrap())
            .unwrap()
            .squeeze(1)
            .unwrap()
            - &c)
            .unwrap();
        let mut grads = GradStore::default();
        grads.insert(
            a.as_tensor(),
            g.narrow(0, 0, 4).unwrap().reshape((2, 2)).unwrap(),
        );
        grads.insert(b.as_tensor(), g.narrow(0, 4, 2).unwrap());
        sgd.step(&grads).unwrap();
        if k % fx.every == 0 {
            let ours: Vec<f64> = Tensor::cat(
                &[a.as_tensor().flatten_all().unwrap(), b.as_tensor().clone()],
                0,
            )
            .unwrap()
            .to_vec1()
            .unwrap();
            theta_err = theta_err.max(rel(&ours, &theta_torch[k / fx.every - 1]));
        }
    }
    (lr_err, theta_err)
}

#[test]
fn matches_torch_sgd_and_lr_schedulers() {
    let fx = fixture();
    assert_eq!(fx.cases.len(), 9);
    let mut failures = Vec::new();
    for case in &fx.cases {
        let (lr_err, theta_err) = run_case(&fx, case);
        if !(lr_err <= TOL && theta_err <= TOL) {
            failures.push(format!(
                "{}: lr rel err {lr_err:.3e}, theta rel err {theta_err:.3e}",
                case.name
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "beyond {TOL:e}:\n{}",
        failures.join("\n")
    );
}
