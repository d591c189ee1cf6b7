//! `Norm::forward_relu_conv_t` is `conv(Norm::forward_relu_t(..))` (plus the residual) bit for
//! bit: the output, the gradients of the input, the convolution's weight, γ, β and the
//! residual, the running statistics, and the evaluation output, for every kind, in f32 and f64,
//! with stride 1 and 2, with and without a residual, on every convolution kernel set this CPU
//! has (the direct kernels apply the normalization as they lay the input out; im2col writes it
//! first). A mean large against the spread takes f32 through the rounded-mean path.

mod common;

use candle_core::{DType, Device, Module, Tensor, Var};
use common::{bits, randn};
use explr_nn::{Conv2d, Conv2dConfig, ConvKernels, ParamStore, Role};
use explr_norm::{NormConfig, NormKind};

/// What one case varies.
#[derive(Clone, Copy, Debug)]
struct Case {
    kind: &'static str,
    dtype: DType,
    /// Input `[n, c, h, w]`.
    shape: [usize; 4],
    stride: usize,
    residual: bool,
    /// The input's mean (its spread is about 1).
    offset: f64,
}

/// One training step's output and gradients, the evaluation output, and the state, as bits.
fn run(case: Case, fused: bool) -> Vec<Vec<u64>> {
    let Case {
        kind,
        dtype,
        shape,
        stride,
        ..
    } = case;
    let store = ParamStore::new(&Device::Cpu, dtype, 0);
    let root = store.root();
    let norm = kind
        .parse::<NormKind>()
        .unwrap()
        .build(&root.push("norm"), shape[1], &NormConfig::default())
        .unwrap();
    let k = 5;
    let cfg = Conv2dConfig::same(stride);
    let conv = Conv2d::new(&root.push("conv"), shape[1], k, 3, cfg, false, Role::Other).unwrap();
    for (i, (name, p)) in store.params().into_iter().enumerate() {
        if name.starts_with("norm") {
            let dims = p.var.dims().to_vec();
            p.var
                .set(&randn(10 + i as u64, &dims, 0.5, 0.2, dtype))
                .unwrap();
        }
    }
    let out_shape = [
        shape[0],
        k,
        (shape[2] - 1) / stride + 1,
        (shape[3] - 1) / stride + 1,
    ];
    let residual = Var::from_tensor(&randn(3, &out_shape, 1.0, 0.0, dtype)).unwrap();
    let r = case.residual.then_some(residual.as_tensor());
    let forward = |x: &Tensor, train: bool| {
        if fused {
            norm.forward_relu_conv_t(x, &conv, r, train).unwrap()
        } else {
            let y = conv
                .forward(&norm.forward_relu_t(x, train).unwrap())
                .unwrap();
            match r {
                Some(r) => (&y + r).unwrap(),
                None => y,
            }
        }
    };
    let x = Var::from_tensor(&randn(1, &shape, 1.0, case.offset, dtype)).unwrap();
    let g = randn(2, &out_shape, 1.0, 0.1, dtype);
    let y = forward(x.as_tensor(), true);
    let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
    let mut out = vec![bits(&y), bits(grads.get(x.as_tensor()).unwrap())];
    for (_, p) in store.params() {
        out.push(bits(grads.get(p.var.as_tensor()).unwrap()));
    }
    if case.residual {
        out.push(bits(grads.get(residual.as_tensor()).unwrap()));
    }
    let eval_x = randn(4, &shape, 1.0, case.offset, dtype);
    out.push(bits(&forward(&eval_x, false)));
    for (_, t) in store.state_dict() {
        out.push(bits(&t));
    }
    out
}

#[test]
fn the_normalized_convolution_is_the_convolution_of_the_normalization_bit_for_bit() {
    // One test: the kernel set is process-wide, and no other test of this binary may run
    // while it changes.
    let mut cases = Vec::new();
    for kind in ["bn", "gn:2", "ln", "in", "none"] {
        for dtype in [DType::F32, DType::F64] {
            for (shape, stride) in [([3, 4, 9, 7], 1), ([4, 4, 10, 12], 2), ([16, 8, 16, 16], 1)] {
                for residual in [false, true] {
                    cases.push(Case {
                        kind,
                        dtype,
                        shape,
                        stride,
                        residual,
                        offset: 0.3,
                    });
                }
            }
        }
    }
    for dtype in [DType::F32, DType::F64] {
        cases.push(Case {
            kind: "bn",
            dtype,
            shape: [4, 4, 8, 8],
            stride: 1,
            residual: true,
            offset: 1000.0,
        });
    }
    let sets: Vec<ConvKernels> = ConvKernels::ALL
        .into_iter()
        .filter(|k| k.is_supported())
        .collect();
    for set in sets {
        ConvKernels::force(Some(set)).unwrap();
        for &case in &cases {
            let fused = run(case, true);
            let reference = run(case, false);
            assert_eq!(fused.len(), reference.len(), "{set} {case:?}");
            for (i, (a, b)) in fused.iter().zip(&reference).enumerate() {
                assert!(a == b, "{set} {case:?}: output {i} differs");
            }
            // Not vacuous: the gradients of the input and of the weight are not all zero.
            for i in [1, 2] {
                assert!(
                    fused[i].iter().any(|v| f64::from_bits(*v) != 0.0),
                    "{case:?}"
                );
            }
        }
    }
    ConvKernels::force(None).unwrap();
}
