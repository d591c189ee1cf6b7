//! `Norm::forward_relu_t` is `explr_nn::relu(Norm::forward_t(..))` bit for bit: outputs,
//! gradients of the input and of γ, β, and the running statistics, for every kind, in f32 and
//! f64, in training and in evaluation (running statistics), on the fused kernel: a shape on one
//! thread with a spatial size off the vector width, and one on several threads.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::{bits, randn};
use explr_nn::ParamStore;
use explr_norm::{NormConfig, NormKind};

/// One training step's output and gradients, then an evaluation output, and the state.
fn run(kind: &str, shape: &[usize], dtype: DType, fused_relu: bool) -> Vec<Vec<u64>> {
    let store = ParamStore::new(&Device::Cpu, dtype, 0);
    let norm = kind
        .parse::<NormKind>()
        .unwrap()
        .build(&store.root(), shape[1], &NormConfig::default())
        .unwrap();
    for (i, (_, p)) in store.params().into_iter().enumerate() {
        p.var
            .set(&randn(10 + i as u64, &[shape[1]], 0.5, 0.2, dtype))
            .unwrap();
    }
    let forward = |x: &Tensor, train: bool| {
        if fused_relu {
            norm.forward_relu_t(x, train).unwrap()
        } else {
            explr_nn::relu(&norm.forward_t(x, train).unwrap()).unwrap()
        }
    };
    let x = Var::from_tensor(&randn(1, shape, 2.0, 0.3, dtype)).unwrap();
    let g = randn(2, shape, 1.0, 0.1, dtype);
    let y = forward(x.as_tensor(), true);
    let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
    let mut out = vec![bits(&y), bits(grads.get(x.as_tensor()).unwrap())];
    for (_, p) in store.params() {
        out.push(bits(grads.get(p.var.as_tensor()).unwrap()));
    }
    out.push(bits(&forward(&randn(4, shape, 1.0, 0.0, dtype), false)));
    for (_, t) in store.state_dict() {
        out.push(bits(&t));
    }
    out
}

#[test]
fn fused_relu_is_relu_of_the_norm_bit_for_bit() {
    for kind in ["bn", "gn:2", "ln", "in", "none"] {
        for dtype in [DType::F32, DType::F64] {
            for shape in [[4, 6, 5, 7], [16, 4, 16, 16]] {
                let fused = run(kind, &shape, dtype, true);
                let reference = run(kind, &shape, dtype, false);
                assert_eq!(fused.len(), reference.len());
                for (i, (a, b)) in fused.iter().zip(&reference).enumerate() {
                    assert!(a == b, "{kind} {dtype:?} {shape:?}: output {i} differs");
                }
                // The ReLU did something: some outputs are zero, some positive.
                let y = &fused[0];
                assert!(y.contains(&0) && y.iter().any(|v| f64::from_bits(*v) > 0.0));
            }
        }
    }
}
