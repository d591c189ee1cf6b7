//! One SGD step (momentum 0.9, weight decay on the scale-invariant group) over ~1M
//! parameters in three groups, f32 and f64. The PyTorch twin is
//! `scripts/pytorch/schedule_bench.py` (torch.optim.SGD(foreach=True), 2 threads).
//!
//!     cargo bench -p explr-schedule --bench sgd_step

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use criterion::{criterion_group, criterion_main, Criterion};
use explr_schedule::{ParamGroup, Schedule, Sgd, SgdConfig, Unit};

/// (group, count, shape): 24·36864 + 100000 + 40·256 = 994 976 parameters.
const LAYOUT: [(&str, usize, &[usize]); 3] = [
    ("scale_invariant", 24, &[64, 64, 3, 3]),
    ("head", 1, &[10, 10000]),
    ("norm_affine", 40, &[256]),
];

fn setup(dtype: DType) -> (Sgd, GradStore) {
    let dev = Device::Cpu;
    let mut grads = GradStore::default();
    let mut groups = Vec::new();
    for (name, count, shape) in LAYOUT {
        let mut vars = Vec::new();
        for i in 0..count {
            let n: usize = shape.iter().product();
            let v: Vec<f64> = (0..n)
                .map(|j| ((i * 7919 + j) % 1000) as f64 / 1000.0 - 0.5)
                .collect();
            let t = Tensor::from_vec(v, shape, &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let var = Var::from_tensor(&t).unwrap();
            grads.insert(var.as_tensor(), t.affine(0.01, 0.001).unwrap());
            vars.push((format!("{name}.{i}"), var));
        }
        let g = ParamGroup::new(name, vars);
        groups.push(match name {
            "scale_invariant" => g.weight_decay(5e-4),
            "head" => g.lr_scale(0.5),
            _ => g,
        });
    }
    let schedule = Schedule::multistep(0.1, &[1_000_000], 0.1, Unit::Steps).unwrap();
    (
        Sgd::new(schedule, groups, SgdConfig::momentum(0.9)).unwrap(),
        grads,
    )
}

fn bench(c: &mut Criterion) {
    for dtype in [DType::F32, DType::F64] {
        let (mut sgd, grads) = setup(dtype);
        sgd.step(&grads).unwrap(); // create the momentum buffers
        c.bench_function(&format!("sgd_step_1M_{dtype:?}"), |b| {
            b.iter(|| sgd.step(&grads).unwrap())
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
