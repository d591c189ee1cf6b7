//! Forward + backward of every normalization kind in training mode on a 128×64×16×16 f32
//! input, for the fused CPU kernel and candle's composite ops, and for the fused kernel with its
//! ReLU inside (`Norm::forward_relu_t`, as the zoo's models use it). The PyTorch twin is
//! `scripts/pytorch/norm_bench.py` (`y.backward(G)`); the README's table compares the two.
//!
//! The backward pass is seeded with a fixed upstream gradient G through [`SeedGrad`], a loss
//! `sum(y·G)` whose backward hands `G` to the layer directly: candle's own `(y * G).sum_all()`
//! backward broadcasts the scalar gradient through its strided slow path and costs ~70 ms
//! here, which would swamp the layer being measured.
//!
//! Run: `cargo bench -p explr-norm --bench norm`

mod common {
    pub mod seed_grad;
}

use candle_core::{DType, Device, Tensor, Var};
use criterion::{criterion_group, Criterion};
use explr_nn::ParamStore;
use explr_norm::{Kernel, NormConfig, NormKind};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use common::seed_grad::SeedGrad;

const SHAPE: (usize, usize, usize, usize) = (128, 64, 16, 16);

fn randn(rng: &mut ChaCha8Rng) -> Tensor {
    let n = SHAPE.0 * SHAPE.1 * SHAPE.2 * SHAPE.3;
    let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(rng)).collect();
    Tensor::from_vec(v, SHAPE, &Device::Cpu).expect("shape matches")
}

fn bench(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let x = Var::from_tensor(&randn(&mut rng)).expect("var");
    let g = randn(&mut rng);
    let mut group = c.benchmark_group("norm_fwd_bwd_128x64x16x16_f32");
    group.sample_size(20);
    for kind in ["bn", "gn:16", "ln", "in"] {
        let store = ParamStore::new(&Device::Cpu, DType::F32, 0);
        let norm = kind
            .parse::<NormKind>()
            .expect("known kind")
            .build(&store.root(), SHAPE.1, &NormConfig::default())
            .expect("builds");
        // The backward pass from the layer's output, seeded with G.
        let backward = |y: Tensor| {
            let loss = y.apply_op2(&g, SeedGrad).expect("loss");
            loss.backward().expect("backward")
        };
        for (kname, kernel) in [("fused", Kernel::Fused), ("composite", Kernel::Composite)] {
            group.bench_function(format!("{kind}/{kname}"), |b| {
                b.iter(|| {
                    backward(
                        norm.forward_with(x.as_tensor(), true, kernel)
                            .expect("forward"),
                    )
                })
            });
        }
        // The zoo's pre-activation: the norm with its ReLU inside the fused kernel.
        group.bench_function(format!("{kind}+relu/fused"), |b| {
            b.iter(|| backward(norm.forward_relu_t(x.as_tensor(), true).expect("forward")))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);

fn main() {
    // As the `explr` binary does (allocator and thread-pool settings; see the function).
    // SAFETY: before criterion or Rayon start any thread.
    unsafe { explr_nn::tune_cpu_process() };
    benches();
    Criterion::default().configure_from_args().final_summary();
}
