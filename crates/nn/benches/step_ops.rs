//! Forward + backward of the non-conv ops of a PreResNet-20 training step at batch 128, with
//! candle's generic ops (f32): training-mode BatchNorm written as mean/variance/normalize/affine
//! (what a BatchNorm2d without a fused kernel costs), ReLU, residual add, global average
//! pooling and cross-entropy. Shows what dominates once convolutions are fast.
//!
//! `cargo bench -p explr-nn --bench step_ops`.

use candle_core::{Device, Tensor, Var};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn uniform(rng: &mut ChaCha8Rng, dims: &[usize]) -> Tensor {
    let len = dims.iter().product();
    let v: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, dims, &Device::Cpu).expect("building a bench tensor")
}

/// Training-mode BatchNorm over (n, h, w) per channel, as composed candle ops.
fn batch_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor) -> candle_core::Result<Tensor> {
    let mean = x.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc
        .sqr()?
        .mean_keepdim(0)?
        .mean_keepdim(2)?
        .mean_keepdim(3)?;
    let xn = xc.broadcast_div(&(var + 1e-5)?.sqrt()?)?;
    xn.broadcast_mul(gamma)?.broadcast_add(beta)
}

fn bench(c: &mut Criterion) {
    let n = 128;
    let mut group = c.benchmark_group("step_ops/f32");
    group.sample_size(10);
    group.warm_up_time(std::time::Duration::from_millis(500));
    group.measurement_time(std::time::Duration::from_secs(2));
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for (name, ch, side) in [("c16s32", 16, 32), ("c32s16", 32, 16), ("c64s8", 64, 8)] {
        let x = Var::from_tensor(&uniform(&mut rng, &[n, ch, side, side])).unwrap();
        let y = Var::from_tensor(&uniform(&mut rng, &[n, ch, side, side])).unwrap();
        let gamma = Var::from_tensor(&uniform(&mut rng, &[1, ch, 1, 1])).unwrap();
        let beta = Var::from_tensor(&uniform(&mut rng, &[1, ch, 1, 1])).unwrap();
        group.bench_function(BenchmarkId::new("batch_norm", name), |b| {
            b.iter(|| {
                batch_norm(x.as_tensor(), gamma.as_tensor(), beta.as_tensor())
                    .and_then(|t| t.backward())
                    .unwrap()
            })
        });
        group.bench_function(BenchmarkId::new("relu_candle", name), |b| {
            b.iter(|| x.as_tensor().relu().and_then(|t| t.backward()).unwrap())
        });
        group.bench_function(BenchmarkId::new("relu", name), |b| {
            b.iter(|| {
                explr_nn::relu(x.as_tensor())
                    .and_then(|t| t.backward())
                    .unwrap()
            })
        });
        group.bench_function(BenchmarkId::new("add", name), |b| {
            b.iter(|| {
                (x.as_tensor() + y.as_tensor())
                    .and_then(|t| t.backward())
                    .unwrap()
            })
        });
    }
    let x = Var::from_tensor(&uniform(&mut rng, &[n, 64, 8, 8])).unwrap();
    group.bench_function("avg_pool_8x8", |b| {
        b.iter(|| {
            x.as_tensor()
                .mean((2, 3))
                .and_then(|t| t.backward())
                .unwrap()
        })
    });
    let logits = Var::from_tensor(&uniform(&mut rng, &[n, 10])).unwrap();
    let labels = Tensor::from_vec(
        (0..n as u32).map(|i| i % 10).collect::<Vec<_>>(),
        n,
        &Device::Cpu,
    )
    .unwrap();
    group.bench_function("cross_entropy", |b| {
        b.iter(|| {
            candle_nn::loss::cross_entropy(logits.as_tensor(), &labels)
                .and_then(|t| t.backward())
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
