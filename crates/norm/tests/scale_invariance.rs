//! THEORY.md §1: with eps = 0, norm(conv(x, c·W)) = norm(conv(x, W)) and ∇_W L(c·W) = ∇_W L(W)/c.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::{randn, rel_err};
use explr_nn::ParamStore;
use explr_norm::{Kernel, NormConfig, NormKind};

/// `norm(conv(x, c·W))` and `∇_W sum(y·G)` at c·W.
fn forward_backward(kind: &str, kernel: Kernel, c: f64) -> (Tensor, Tensor) {
    let store = ParamStore::new(&Device::Cpu, DType::F64, 0);
    let norm = kind
        .parse::<NormKind>()
        .unwrap()
        .build(&store.root(), 6, &NormConfig::default().with_eps(0.0))
        .unwrap();
    // Non-trivial γ, β so the affine part is exercised too.
    for (i, (_, p)) in store.params().into_iter().enumerate() {
        p.var
            .set(&randn(50 + i as u64, &[6], 0.5, 1.0, DType::F64))
            .unwrap();
    }
    let x = randn(1, &[4, 3, 6, 5], 1.0, 0.3, DType::F64);
    let w =
        Var::from_tensor(&(randn(2, &[6, 3, 3, 3], 0.3, 0.0, DType::F64) * c).unwrap()).unwrap();
    let g = randn(3, &[4, 6, 6, 5], 1.0, 0.0, DType::F64);
    let y = norm
        .forward_with(&x.conv2d(w.as_tensor(), 1, 1, 1, 1).unwrap(), true, kernel)
        .unwrap();
    let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
    (y, grads.get(w.as_tensor()).unwrap().clone())
}

fn check(kind: &str, kernel: Kernel) {
    let (y1, g1) = forward_backward(kind, kernel, 1.0);
    for c in [1e-3, 10.0, 1e6] {
        let (yc, gc) = forward_backward(kind, kernel, c);
        let ey = rel_err(&yc, &y1);
        assert!(
            ey <= 1e-12,
            "{kind} {kernel:?} c={c}: output changed by {ey:e}"
        );
        let eg = rel_err(&(gc * c).unwrap(), &g1);
        assert!(
            eg <= 1e-12,
            "{kind} {kernel:?} c={c}: c·∇W(cW) differs from ∇W(W) by {eg:e}"
        );
    }
    // The gradient is orthogonal to W (THEORY.md §1): ⟨∇L(W), W⟩ = 0.
    let w = (randn(2, &[6, 3, 3, 3], 0.3, 0.0, DType::F64))
        .flatten_all()
        .unwrap();
    let dot: f64 = (g1.flatten_all().unwrap() * &w)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    let scale: f64 = g1
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .sqrt()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
        * w.sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .sqrt()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
    assert!(
        dot.abs() <= 1e-12 * scale,
        "{kind} {kernel:?}: <grad, W> = {dot:e}"
    );
}

#[test]
fn every_kind_is_scale_invariant_in_the_conv_weight() {
    for kind in ["bn", "gn:3", "ln", "in"] {
        check(kind, Kernel::Fused);
        check(kind, Kernel::Composite);
    }
}

#[test]
fn without_normalization_scaling_changes_the_output() {
    let store = ParamStore::new(&Device::Cpu, DType::F64, 0);
    let none = NormKind::None
        .build(&store.root(), 6, &NormConfig::default())
        .unwrap();
    let x = randn(1, &[2, 3, 4, 4], 1.0, 0.0, DType::F64);
    let w = randn(2, &[6, 3, 3, 3], 0.3, 0.0, DType::F64);
    let y1 = none
        .forward_t(&x.conv2d(&w, 1, 1, 1, 1).unwrap(), true)
        .unwrap();
    let y10 = none
        .forward_t(&x.conv2d(&(&w * 10.0).unwrap(), 1, 1, 1, 1).unwrap(), true)
        .unwrap();
    assert!(rel_err(&y10, &y1) > 1.0);
}
