//! Forward + backward of every conv shape of PreResNet-20 at batch 128, explr's `conv2d` vs
//! candle's `Tensor::conv2d`, in f32 and f64. The PyTorch twin is
//! `scripts/pytorch/conv_bench.py`; `scripts/pytorch/conv_report.py` turns both into the table
//! of docs/PERFORMANCE.md.
//!
//! `cargo bench -p explr-nn --bench conv` (all), or filter, e.g. `-- 'conv/f32/ours'`.
//! Set `EXPLR_BENCH_BATCH` to change the batch size (default 128).

use candle_core::{DType, Device, Tensor, Var};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `(name, in channels, out channels, input side, kernel, stride, padding)`.
const SHAPES: [(&str, usize, usize, usize, usize, usize, usize); 7] = [
    ("c3k16s32", 3, 16, 32, 3, 1, 1),
    ("c16k16s32", 16, 16, 32, 3, 1, 1),
    ("c16k32s32st2", 16, 32, 32, 3, 2, 1),
    ("c32k32s16", 32, 32, 16, 3, 1, 1),
    ("c32k64s16st2", 32, 64, 16, 3, 2, 1),
    ("c64k64s8", 64, 64, 8, 3, 1, 1),
    ("c16k32s32st2k1", 16, 32, 32, 1, 2, 0),
];

fn uniform(rng: &mut ChaCha8Rng, dims: &[usize], dtype: DType) -> Tensor {
    let len = dims.iter().product();
    let v: Vec<f64> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, dims, &Device::Cpu)
        .and_then(|t| t.to_dtype(dtype))
        .expect("building a bench tensor")
}

/// `y = conv(x, w)` and its backward with `dy = 1` (candle seeds a non-scalar root with
/// ones), like PyTorch's `y.backward(torch.ones_like(y))`.
fn step(
    conv: &dyn Fn(&Tensor, &Tensor) -> Tensor,
    x: &Var,
    w: &Var,
) -> candle_core::backprop::GradStore {
    conv(x.as_tensor(), w.as_tensor())
        .backward()
        .expect("backward")
}

fn bench(c: &mut Criterion) {
    let n: usize = std::env::var("EXPLR_BENCH_BATCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(128);
    for dtype in [DType::F32, DType::F64] {
        let mut group = c.benchmark_group(format!("conv/{}", dtype.as_str()));
        group.sample_size(10);
        group.warm_up_time(std::time::Duration::from_millis(500));
        group.measurement_time(std::time::Duration::from_secs(2));
        for (name, cin, cout, side, k, stride, pad) in SHAPES {
            let mut rng = ChaCha8Rng::seed_from_u64(0);
            let x = Var::from_tensor(&uniform(&mut rng, &[n, cin, side, side], dtype)).unwrap();
            let w = Var::from_tensor(&uniform(&mut rng, &[cout, cin, k, k], dtype)).unwrap();
            let ours = move |x: &Tensor, w: &Tensor| explr_nn::conv2d(x, w, stride, pad).unwrap();
            let candle = move |x: &Tensor, w: &Tensor| x.conv2d(w, pad, stride, 1, 1).unwrap();
            group.bench_function(BenchmarkId::new("ours", name), |b| {
                b.iter(|| step(&ours, &x, &w))
            });
            group.bench_function(BenchmarkId::new("candle", name), |b| {
                b.iter(|| step(&candle, &x, &w))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
