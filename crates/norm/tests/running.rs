//! Evaluation with running statistics (BatchNorm, and InstanceNorm tracking them) on the fused
//! kernel is the composite path bit for bit (outputs, with and without the fused ReLU, every
//! affine mode, f32 and f64, special values included), and its evaluation-mode gradients match
//! the composite path's.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::{bits, randn, rel_err, values};
use explr_nn::ParamStore;
use explr_norm::{Affine, Kernel, Norm, NormConfig, NormKind};

/// A norm of `kind` (`bn`, or `in` tracking running statistics) with random γ, β (where it
/// has them) and running statistics from two training batches.
fn with_running(
    kind: &str,
    store: &ParamStore,
    shape: &[usize],
    affine: Affine,
    dtype: DType,
) -> Norm {
    let cfg = NormConfig {
        affine,
        track_running_stats: Some(true),
        ..NormConfig::default()
    };
    let norm = kind
        .parse::<NormKind>()
        .unwrap()
        .build(&store.root(), shape[1], &cfg)
        .unwrap();
    for (i, (_, p)) in store.params().into_iter().enumerate() {
        p.var
            .set(&randn(10 + i as u64, &[shape[1]], 0.5, 0.2, dtype))
            .unwrap();
    }
    for seed in [3, 4] {
        norm.forward_t(&randn(seed, shape, 1.5, 0.4, dtype), true)
            .unwrap();
    }
    // Channel 0's running mean exactly 0, so that the input's −0 there stays −0 through
    // `x − μ̂` and the division (and, without γ and β, reaches the ReLU as −0).
    let mean = norm.running_mean().unwrap();
    let mut m = values(mean.as_tensor());
    m[0] = 0.0;
    mean.set(
        &Tensor::new(m, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap(),
    )
    .unwrap();
    norm
}

/// An input with signed zeros, a NaN and values at the running mean among random ones.
fn input(norm: &Norm, shape: &[usize], dtype: DType) -> Tensor {
    let mut v = values(&randn(7, shape, 2.0, 0.3, dtype));
    let mean = values(norm.running_mean().unwrap().as_tensor());
    let plane = shape[2] * shape[3];
    v[0] = -0.0;
    v[1] = 0.0;
    v[2] = f64::NAN;
    for c in 0..shape[1] {
        v[c * plane + 3] = mean[c];
    }
    Tensor::from_vec(v, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

#[test]
fn evaluation_is_the_composite_path_bit_for_bit() {
    let mut cases = 0;
    // One shape on one thread with a plane off the vector width, one split across threads.
    for (kind, shape) in [
        ("bn", [2, 3, 5, 7]),
        ("bn", [16, 8, 32, 32]),
        ("in", [2, 3, 5, 7]),
    ] {
        for dtype in [DType::F32, DType::F64] {
            for affine in [Affine::Trainable, Affine::Frozen, Affine::None] {
                let store = ParamStore::new(&Device::Cpu, dtype, 0);
                let norm = with_running(kind, &store, &shape, affine, dtype);
                let x = input(&norm, &shape, dtype);
                let what = format!("{kind} {shape:?} {dtype:?} {affine:?}");
                let composite = norm.forward_with(&x, false, Kernel::Composite).unwrap();
                let fused = norm.forward_with(&x, false, Kernel::Fused).unwrap();
                assert_eq!(bits(&fused), bits(&composite), "{what}");
                // The ReLU fused into the pass (forward_relu_t runs the fused kernel here).
                let relu = explr_nn::relu(&composite).unwrap();
                let fused_relu = norm.forward_relu_t(&x, false).unwrap();
                assert_eq!(bits(&fused_relu), bits(&relu), "{what} + ReLU");
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 18);
}

#[test]
fn evaluation_gradients_match_the_composite_path() {
    let shape = [4, 3, 6, 5];
    for dtype in [DType::F32, DType::F64] {
        let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
        for relu in [false, true] {
            let store = ParamStore::new(&Device::Cpu, dtype, 0);
            let norm = with_running("bn", &store, &shape, Affine::Trainable, dtype);
            let x = Var::from_tensor(&randn(8, &shape, 2.0, 0.3, dtype)).unwrap();
            let g = randn(9, &shape, 1.0, 0.1, dtype);
            let grads = |kernel: Kernel| {
                let y = norm.forward_with(x.as_tensor(), false, kernel).unwrap();
                let y = if relu { explr_nn::relu(&y).unwrap() } else { y };
                let bw = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
                let mut out = vec![bw.get(x.as_tensor()).unwrap().clone()];
                for v in [norm.weight().unwrap(), norm.bias().unwrap()] {
                    out.push(bw.get(v.as_tensor()).unwrap().clone());
                }
                out
            };
            let (f, c) = (grads(Kernel::Fused), grads(Kernel::Composite));
            for (name, (a, b)) in ["x", "weight", "bias"].iter().zip(f.iter().zip(&c)) {
                let e = rel_err(a, b);
                assert!(e <= tol, "{dtype:?} relu {relu} {name}: {e:e} > {tol:e}");
            }
            if relu {
                // Through forward_relu_t, the ReLU inside the fused op: the same gradient.
                let y = norm.forward_relu_t(x.as_tensor(), false).unwrap();
                let bw = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
                let e = rel_err(bw.get(x.as_tensor()).unwrap(), &c[0]);
                assert!(e <= tol, "{dtype:?} fused ReLU x: {e:e} > {tol:e}");
            }
        }
    }
}
