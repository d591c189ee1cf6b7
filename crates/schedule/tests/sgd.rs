//! Optimizer behaviour not covered by the PyTorch fixtures: validation, untouched variables,
//! the heavy-ball variant, pre-fill, twin groups.

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use explr_schedule::{ParamGroup, Schedule, ScheduleError, Sgd, SgdConfig, SgdVariant, Twin, Unit};

fn var(v: &[f64]) -> Var {
    Var::from_tensor(&Tensor::new(v, &Device::Cpu).unwrap()).unwrap()
}

fn constant() -> Schedule {
    Schedule::constant(0.1).unwrap()
}

/// `Sgd::new` with `config` fails naming `field`.
fn check_invalid(config: SgdConfig, groups: Vec<ParamGroup>, field: &str) {
    let e = Sgd::new(constant(), groups, config).unwrap_err();
    match &e {
        ScheduleError::InvalidField { field: f, .. } => assert_eq!(f, field, "{e}"),
        other => panic!("expected InvalidField({field}), got {other:?}"),
    }
}

#[test]
fn invalid_settings_name_the_field() {
    let g = || vec![ParamGroup::new("g", vec![("w".into(), var(&[1.0]))])];
    check_invalid(
        SgdConfig {
            nesterov: true,
            ..Default::default()
        },
        g(),
        "nesterov",
    );
    check_invalid(
        SgdConfig {
            momentum: 0.9,
            dampening: 0.1,
            nesterov: true,
            ..Default::default()
        },
        g(),
        "nesterov",
    );
    check_invalid(
        SgdConfig {
            momentum: -0.1,
            ..Default::default()
        },
        g(),
        "momentum",
    );
    check_invalid(
        SgdConfig {
            dampening: 1.5,
            ..Default::default()
        },
        g(),
        "dampening",
    );
    check_invalid(
        SgdConfig {
            momentum: 0.9,
            dampening: 0.1,
            variant: SgdVariant::HeavyBall,
            ..Default::default()
        },
        g(),
        "variant",
    );
    check_invalid(
        SgdConfig::default(),
        vec![ParamGroup::new("g", vec![("w".into(), var(&[1.0]))]).weight_decay(-1.0)],
        "groups.g.weight_decay",
    );
    let w = var(&[1.0]);
    let twice = vec![
        ParamGroup::new("a", vec![("w".into(), w.clone())]),
        ParamGroup::new("b", vec![("w".into(), w)]),
    ];
    check_invalid(SgdConfig::default(), twice, "vars");
    // A twin trains in PyTorch's form with its own momentum and no weight decay (THEORY.md §2).
    let texp = Twin::texp(&constant(), 5e-4, 0.9).unwrap();
    let twin = || vec![ParamGroup::new("g", vec![("w".into(), var(&[1.0]))]).twin(texp.clone())];
    let nesterov = SgdConfig {
        momentum: 0.9,
        nesterov: true,
        ..Default::default()
    };
    check_invalid(nesterov, twin(), "groups.g.twin");
    let heavy = SgdConfig {
        momentum: 0.9,
        variant: SgdVariant::HeavyBall,
        ..Default::default()
    };
    check_invalid(heavy, twin(), "groups.g.twin");
    check_invalid(SgdConfig::momentum(0.5), twin(), "groups.g.twin");
    let decayed = twin().into_iter().map(|g| g.weight_decay(5e-4)).collect();
    check_invalid(SgdConfig::momentum(0.9), decayed, "groups.g.weight_decay");
    // Without a main schedule every group needs its own.
    let e = Sgd::from_groups(g(), SgdConfig::momentum(0.9)).unwrap_err();
    assert!(e.to_string().contains("`groups.g.lr`"), "{e}");
    assert!(e.to_string().contains("there is no main schedule"), "{e}");
    let mut sgd = Sgd::new(constant(), g(), SgdConfig::momentum(0.9)).unwrap();
    let e = sgd.prefill_momentum(1.0, &["nope"]).unwrap_err();
    assert!(e.to_string().contains("`groups` = nope"), "{e}");
}

#[test]
fn only_the_vars_handed_in_are_touched() {
    let (w, other) = (var(&[1.0, 2.0]), var(&[3.0, 4.0]));
    let mut grads = GradStore::default();
    grads.insert(
        w.as_tensor(),
        Tensor::new(&[1.0f64, 1.0], &Device::Cpu).unwrap(),
    );
    grads.insert(
        other.as_tensor(),
        Tensor::new(&[1.0f64, 1.0], &Device::Cpu).unwrap(),
    );
    let group = ParamGroup::new("g", vec![("w".into(), w.clone())]).weight_decay(0.5);
    let mut sgd = Sgd::new(constant(), vec![group], SgdConfig::default()).unwrap();
    sgd.step(&grads).unwrap();
    // θ − η(g + λθ) = [1 − 0.1·1.5, 2 − 0.1·2] (exact in binary? compare with tolerance).
    let got = w.as_tensor().to_vec1::<f64>().unwrap();
    assert!(
        (got[0] - 0.85).abs() < 1e-15 && (got[1] - 1.8).abs() < 1e-15,
        "{got:?}"
    );
    assert_eq!(other.as_tensor().to_vec1::<f64>().unwrap(), vec![3.0, 4.0]);
}

/// θ after `n` steps of the gradient g = θ (a quadratic) under `schedule` and `variant`.
fn trajectory(schedule: &str, variant: SgdVariant, n: usize) -> Vec<f64> {
    let w = var(&[1.0, -2.0]);
    let config = SgdConfig {
        momentum: 0.9,
        variant,
        ..Default::default()
    };
    let mut sgd = Sgd::new(
        Schedule::from_yaml(schedule, Unit::Steps).unwrap(),
        vec![ParamGroup::new("g", vec![("w".into(), w.clone())])],
        config,
    )
    .unwrap();
    for _ in 0..n {
        let mut g = GradStore::default();
        g.insert(w.as_tensor(), w.as_tensor().copy().unwrap());
        sgd.step(&g).unwrap();
    }
    w.as_tensor().to_vec1().unwrap()
}

#[test]
fn heavy_ball_matches_pytorch_form_only_while_the_lr_is_constant() {
    // THEORY.md §2: v = γv + ηg; θ −= v equals η-outside-the-buffer SGD for fixed η.
    let rel = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / y.abs())
            .fold(0.0, f64::max)
    };
    let fixed = "kind: constant\nlr: 0.05";
    assert!(
        rel(
            &trajectory(fixed, SgdVariant::HeavyBall, 30),
            &trajectory(fixed, SgdVariant::PyTorch, 30)
        ) < 1e-13
    );
    let decayed = "kind: multistep\nlr: 0.05\nmilestones: [10]\ngamma: 0.1";
    assert!(
        rel(
            &trajectory(decayed, SgdVariant::HeavyBall, 30),
            &trajectory(decayed, SgdVariant::PyTorch, 30)
        ) > 1e-3
    );
}

#[test]
fn prefill_sets_the_buffer_to_a_multiple_of_the_weights() {
    let w = var(&[1.0, -2.0]);
    let mut sgd = Sgd::new(
        constant(),
        vec![ParamGroup::new("g", vec![("w".into(), w)])],
        SgdConfig::momentum(0.9),
    )
    .unwrap();
    assert!(sgd.momentum_buffer("w").is_none());
    sgd.prefill_momentum(-0.5, &["g"]).unwrap();
    assert_eq!(
        sgd.momentum_buffer("w").unwrap().to_vec1::<f64>().unwrap(),
        vec![-0.5, 1.0]
    );
}

#[test]
fn a_twin_group_pre_fills_and_corrects_its_buffer() {
    // THEORY.md §3, §5 by hand, with the gradient g = 0 (only the twin's terms move θ̃): update
    // 0 starts from ṽ_0 = p·θ_0, so ṽ = γ·p·θ_0 (+ c_0·θ_0); the first update of phase 1 adds
    // c_k·θ̃_k to γ·ṽ.
    let step_decay = Schedule::multistep(0.1, &[3], 0.1, Unit::Steps).unwrap();
    let twin = Twin::texp(&step_decay, 5e-4, 0.9).unwrap();
    let w = var(&[3.0, -4.0]);
    let mut sgd = Sgd::from_groups(
        vec![ParamGroup::new("g", vec![("w".into(), w.clone())]).twin(twin.clone())],
        SgdConfig::momentum(0.9),
    )
    .unwrap();
    let zero = || {
        let mut g = GradStore::default();
        g.insert(
            w.as_tensor(),
            Tensor::new(&[0.0f64, 0.0], &Device::Cpu).unwrap(),
        );
        g
    };
    let (mut theta, mut buf) = (vec![3.0f64, -4.0], vec![0.0f64; 2]);
    for k in 0..5u64 {
        let p = twin.prefill_coefficient();
        let c = twin.correction(k).unwrap();
        let lr = twin.lr(k).unwrap();
        for i in 0..2 {
            let previous = if k == 0 { p * theta[i] } else { buf[i] };
            buf[i] = 0.9 * previous + c * theta[i];
            theta[i] -= lr * buf[i];
        }
        sgd.step(&zero()).unwrap();
        let got = w.as_tensor().to_vec1::<f64>().unwrap();
        for i in 0..2 {
            assert!(
                ((got[i] - theta[i]) / theta[i]).abs() < 1e-14,
                "update {k}: {got:?} vs {theta:?}"
            );
        }
    }
    assert!(twin.correction(3).unwrap() != 0.0);
}
