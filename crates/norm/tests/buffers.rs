//! Running statistics are buffers: saved and loaded with the model, never trainable; affine
//! modes register what they say.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use common::{randn, rel_err};
use explr_nn::{ParamStore, Role};
use explr_norm::{Affine, Norm, NormConfig, NormKind};

fn build(store: &ParamStore, kind: &str, cfg: &NormConfig) -> Norm {
    kind.parse::<NormKind>()
        .unwrap()
        .build(&store.root().push("layer1").push("bn"), 4, cfg)
        .unwrap()
}

fn trainable_names(store: &ParamStore) -> Vec<String> {
    store
        .trainable_groups()
        .values()
        .flatten()
        .map(|(n, _)| n.clone())
        .collect()
}

fn check_registration(
    kind: &str,
    cfg: NormConfig,
    params: &[&str],
    trainable: &[&str],
    buffers: &[&str],
) {
    let store = ParamStore::new(&Device::Cpu, DType::F64, 0);
    build(&store, kind, &cfg);
    let names = |v: Vec<(String, Var)>| v.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    let p: Vec<String> = store.params().into_iter().map(|(n, _)| n).collect();
    let full = |v: &[&str]| {
        v.iter()
            .map(|s| format!("layer1.bn.{s}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(p, full(params), "{kind} {cfg:?} params");
    assert_eq!(
        trainable_names(&store),
        full(trainable),
        "{kind} {cfg:?} trainable"
    );
    assert_eq!(
        names(store.buffers()),
        full(buffers),
        "{kind} {cfg:?} buffers"
    );
    assert_eq!(
        names(store.role(Role::NormAffine)),
        full(params),
        "{kind} affine role"
    );
}

#[test]
fn each_kind_registers_params_and_buffers_under_pytorch_names() {
    let d = NormConfig::default();
    let running = ["num_batches_tracked", "running_mean", "running_var"];
    let wb = ["bias", "weight"];
    check_registration("bn", d.clone(), &wb, &wb, &running);
    check_registration("bn", d.clone().frozen(), &wb, &[], &running);
    check_registration(
        "bn",
        NormConfig {
            affine: Affine::None,
            ..d.clone()
        },
        &[],
        &[],
        &running,
    );
    check_registration(
        "bn",
        NormConfig {
            track_running_stats: Some(false),
            ..d.clone()
        },
        &wb,
        &wb,
        &[],
    );
    check_registration("gn:2", d.clone(), &wb, &wb, &[]);
    check_registration("ln", d.clone().frozen(), &wb, &[], &[]);
    check_registration(
        "in",
        NormConfig {
            affine: Affine::None,
            ..d.clone()
        },
        &[],
        &[],
        &[],
    );
    check_registration(
        "in",
        NormConfig {
            track_running_stats: Some(true),
            ..d.clone()
        },
        &wb,
        &wb,
        &running,
    );
}

#[test]
fn frozen_affine_stays_at_identity_and_matches_no_affine() {
    for kind in ["bn", "gn:2", "ln", "in"] {
        let x = randn(7, &[3, 4, 5, 5], 2.0, 1.0, DType::F64);
        let frozen = build(
            &ParamStore::new(&Device::Cpu, DType::F64, 0),
            kind,
            &NormConfig::default().frozen(),
        );
        let none = build(
            &ParamStore::new(&Device::Cpu, DType::F64, 0),
            kind,
            &NormConfig {
                affine: Affine::None,
                ..NormConfig::default()
            },
        );
        let a = frozen.forward_t(&x, true).unwrap();
        let b = none.forward_t(&x, true).unwrap();
        assert!(rel_err(&a, &b) <= 1e-15, "{kind}");
    }
}

#[test]
fn running_stats_survive_a_save_load_round_trip() {
    for (kind, cfg) in [
        ("bn", NormConfig::default()),
        (
            "bn",
            NormConfig {
                momentum: None,
                ..NormConfig::default()
            },
        ),
        (
            "in",
            NormConfig {
                track_running_stats: Some(true),
                ..NormConfig::default()
            },
        ),
    ] {
        let store = ParamStore::new(&Device::Cpu, DType::F64, 0);
        let layer = build(&store, kind, &cfg);
        for step in 0..3 {
            layer
                .forward_t(&randn(step, &[3, 4, 5, 5], 2.0, 1.5, DType::F64), true)
                .unwrap();
        }
        let before: HashMap<String, Tensor> = store.state_dict().into_iter().collect();
        let file = std::env::temp_dir().join(format!(
            "explr-norm-{}-{kind}-{}.safetensors",
            std::process::id(),
            cfg.momentum.is_some()
        ));
        store.save(&file).unwrap();

        let fresh = ParamStore::new(&Device::Cpu, DType::F64, 1);
        let loaded = build(&fresh, kind, &cfg);
        let xe = randn(99, &[2, 4, 5, 5], 2.0, 1.5, DType::F64);
        let untrained = loaded.forward_t(&xe, false).unwrap();
        fresh.load(&file).unwrap();
        std::fs::remove_file(&file).unwrap();

        for (name, t) in fresh.state_dict() {
            let want = &before[&name];
            assert_eq!(t.dtype(), want.dtype(), "{kind} {name}");
            let same = t
                .to_dtype(DType::F64)
                .unwrap()
                .eq(&want.to_dtype(DType::F64).unwrap())
                .unwrap()
                .flatten_all()
                .unwrap()
                .min(0)
                .unwrap()
                .to_scalar::<u8>()
                .unwrap();
            assert_eq!(same, 1, "{kind} {name} differs after load");
        }
        let nbt: i64 = before["layer1.bn.num_batches_tracked"].to_scalar().unwrap();
        assert_eq!(nbt, if kind == "bn" { 3 } else { 0 }, "{kind}");
        // Evaluation now uses the loaded running statistics, not the initial (0, 1).
        let y1 = layer.forward_t(&xe, false).unwrap();
        let y2 = loaded.forward_t(&xe, false).unwrap();
        assert_eq!(rel_err(&y2, &y1), 0.0, "{kind}");
        assert!(
            rel_err(&untrained, &y1) > 0.1,
            "{kind}: the running statistics did move"
        );
    }
}

#[test]
fn evaluation_does_not_touch_running_stats() {
    let store = ParamStore::new(&Device::Cpu, DType::F64, 0);
    let layer = build(&store, "bn", &NormConfig::default());
    layer
        .forward_t(&randn(1, &[3, 4, 5, 5], 2.0, 1.5, DType::F64), true)
        .unwrap();
    let before = store.state_dict();
    layer
        .forward_t(&randn(2, &[3, 4, 5, 5], 2.0, 1.5, DType::F64), false)
        .unwrap();
    for (name, t) in store.state_dict() {
        assert_eq!(
            rel_err(
                &t.to_dtype(DType::F64).unwrap(),
                &before[&name].to_dtype(DType::F64).unwrap()
            ),
            0.0,
            "{name}"
        );
    }
}
