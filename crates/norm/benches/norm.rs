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

use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Shape, Tensor, Var};
use criterion::{criterion_group, Criterion};
use explr_nn::ParamStore;
use explr_norm::{Kernel, NormConfig, NormKind};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

const SHAPE: (usize, usize, usize, usize) = (128, 64, 16, 16);

fn randn(rng: &mut ChaCha8Rng) -> Tensor {
    let n = SHAPE.0 * SHAPE.1 * SHAPE.2 * SHAPE.3;
    let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(rng)).collect();
    Tensor::from_vec(v, SHAPE, &Device::Cpu).expect("shape matches")
}

/// The seed of the backward pass: a scalar standing for `sum(y·G)` whose backward hands `G`
/// to the layer, as PyTorch's `y.backward(G)` does. Its value is never read, so the forward
/// pass does not compute the dot product (PyTorch's twin does not either).
struct SeedGrad;

impl CustomOp2 for SeedGrad {
    fn name(&self) -> &'static str {
        "seed-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        _l1: &Layout,
        _s2: &CpuStorage,
        _l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(_) = s1 else {
            candle_core::bail!("seed-grad: f32 only")
        };
        Ok((CpuStorage::F32(vec![0.0]), Shape::from(())))
    }

    fn bwd(
        &self,
        _y: &Tensor,
        g: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // The incoming gradient is the backward pass's seed, 1: hand G over without a copy.
        let s = grad.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let dy = if s == 1.0 {
            g.clone()
        } else {
            g.affine(s, 0.0)?
        };
        Ok((Some(dy), None))
    }
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
