//! Parity with PyTorch's `torch.nn` normalization layers.
//!
//! Expected values come from `scripts/pytorch/norm_fixtures.py` (rerun it from the repository
//! root to regenerate `tests/fixtures/norm_parity.safetensors`); its docstring states the
//! protocol that `check` below mirrors step by step. Tolerances: f64 1e-12, f32 1e-5, relative
//! to the largest magnitude of the reference tensor.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use explr_nn::ParamStore;
use explr_norm::{Kernel, NormConfig, NormKind};

use common::rel_err;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/norm_parity.safetensors"
);

fn fixture() -> (HashMap<String, Tensor>, String) {
    let bytes = std::fs::read(FIXTURE).expect("fixture is committed");
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("valid safetensors");
    let torch = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("torch_version").cloned())
        .expect("fixture records the torch version");
    let tensors = candle_core::safetensors::load(FIXTURE, &Device::Cpu).expect("loads");
    (tensors, torch)
}

fn case_layer(case: &str) -> (NormKind, NormConfig) {
    let d = NormConfig::default();
    match case {
        "bn_momentum" => (NormKind::Batch, d),
        "bn_cumulative" => (
            NormKind::Batch,
            NormConfig {
                momentum: None,
                ..d
            },
        ),
        "gn3" => (NormKind::Group(3), d.with_eps(1e-3)),
        "ln" => (NormKind::Layer, d),
        "in" => (NormKind::Instance, d),
        "in_running" => (
            NormKind::Instance,
            NormConfig {
                track_running_stats: Some(true),
                ..d
            },
        ),
        other => panic!("unknown case {other}"),
    }
}

/// Replays the fixture protocol for one case, dtype and kernel and compares every tensor.
fn check(case: &str, dtype: DType, kernel: Kernel) {
    let (fx, torch) = fixture();
    let dname = if dtype == DType::F64 { "f64" } else { "f32" };
    let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
    let get = |name: &str| -> Tensor {
        fx.get(&format!("{case}.{dname}.{name}"))
            .unwrap_or_else(|| panic!("fixture lacks {case}.{dname}.{name}"))
            .clone()
    };
    let (kind, cfg) = case_layer(case);
    let store = ParamStore::new(&Device::Cpu, dtype, 0);
    let norm = kind.build(&store.root().push("norm"), 6, &cfg).unwrap();
    let params: HashMap<String, Var> = store
        .params()
        .into_iter()
        .map(|(n, p)| (n, p.var))
        .collect();
    params["norm.weight"].set(&get("weight")).unwrap();
    params["norm.bias"].set(&get("bias")).unwrap();

    let assert_close = |what: &str, ours: &Tensor, reference: &Tensor| {
        let err = rel_err(ours, reference);
        assert!(
            err <= tol,
            "{case} {dname} {kernel:?} {what}: relative error {err:e} > {tol:e} (fixture from torch {torch})"
        );
    };

    let x0 = Var::from_tensor(&get("x0")).unwrap();
    let y = norm.forward_with(x0.as_tensor(), true, kernel).unwrap();
    assert_eq!(y.dtype(), dtype);
    assert_close("y_train", &y, &get("y_train"));
    let grads = (&y * &get("G"))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_close("dx", grads.get(x0.as_tensor()).unwrap(), &get("dx"));
    assert_close(
        "dweight",
        grads.get(&params["norm.weight"]).unwrap(),
        &get("dweight"),
    );
    assert_close(
        "dbias",
        grads.get(&params["norm.bias"]).unwrap(),
        &get("dbias"),
    );

    for k in 1..3 {
        norm.forward_with(&get(&format!("x{k}")), true, kernel)
            .unwrap();
    }
    let buffers: HashMap<String, Var> = store.buffers().into_iter().collect();
    if fx.contains_key(&format!("{case}.{dname}.running_mean")) {
        assert_close(
            "running_mean",
            &buffers["norm.running_mean"],
            &get("running_mean"),
        );
        assert_close(
            "running_var",
            &buffers["norm.running_var"],
            &get("running_var"),
        );
        let ours: i64 = buffers["norm.num_batches_tracked"].to_scalar().unwrap();
        let theirs: i64 = get("num_batches_tracked").to_scalar().unwrap();
        assert_eq!(ours, theirs, "{case} {dname} num_batches_tracked");
    } else {
        assert!(buffers.is_empty(), "{case} keeps no running statistics");
    }
    let y_eval = norm.forward_with(&get("xe"), false, kernel).unwrap();
    assert_close("y_eval", &y_eval, &get("y_eval"));
}

const CASES: [&str; 6] = [
    "bn_momentum",
    "bn_cumulative",
    "gn3",
    "ln",
    "in",
    "in_running",
];

#[test]
fn every_kind_matches_pytorch_f64() {
    for case in CASES {
        check(case, DType::F64, Kernel::Auto);
        check(case, DType::F64, Kernel::Composite);
    }
}

#[test]
fn every_kind_matches_pytorch_f32() {
    for case in CASES {
        check(case, DType::F32, Kernel::Auto);
        check(case, DType::F32, Kernel::Composite);
    }
}

#[test]
fn fixture_records_torch_version() {
    let (fx, torch) = fixture();
    assert!(torch.starts_with("2."), "unexpected torch version {torch}");
    assert_eq!(fx.len(), 162);
}
