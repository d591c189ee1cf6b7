//! One PreResNet-20 training step at batch 128 on 32×32 inputs: forward (train mode),
//! cross-entropy, backward, and a plain SGD update `θ ← θ − η·∇L` of every trainable
//! parameter, in f32 and f64. Its PyTorch twin is scripts/pytorch/zoo_bench.py.
//!
//! RAYON_NUM_THREADS=2 cargo bench -p explr-zoo --bench train_step --profile dev

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use explr_nn::ParamStore;
use explr_zoo::{Model, ModelSpec};

const BATCH: usize = 128;
const LR: f64 = 0.1;

fn setup(dtype: DType) -> (Model, Tensor, Tensor) {
    let dev = Device::Cpu;
    let spec = ModelSpec::new(explr_zoo::Arch::PreResNet, 20);
    let model = Model::new(&spec, &ParamStore::new(&dev, dtype, 0)).expect("model");
    let n = BATCH * 3 * 32 * 32;
    let v: Vec<f64> = (0..n).map(|i| ((i as f64) * 0.7919).sin()).collect();
    let x = Tensor::from_vec(v, (BATCH, 3, 32, 32), &dev)
        .and_then(|t| t.to_dtype(dtype))
        .expect("input");
    let y: Vec<u32> = (0..BATCH as u32).map(|i| i % 10).collect();
    let y = Tensor::from_vec(y, BATCH, &dev).expect("labels");
    (model, x, y)
}

fn step(model: &Model, x: &Tensor, y: &Tensor) -> candle_core::Result<()> {
    let logits = model.forward_t(x, true).map_err(candle_core::Error::wrap)?;
    let loss = candle_nn::loss::cross_entropy(&logits, y)?;
    let grads = loss.backward()?;
    for vars in model.trainable_groups().values() {
        for (_, v) in vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                v.set(&(v.as_tensor() - (g * LR)?)?)?;
            }
        }
    }
    Ok(())
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("preresnet20_train_step_b128");
    // A step takes seconds on 2 cores: 10 samples of one step each, after one warm-up step.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(std::time::Duration::from_millis(1));
    group.measurement_time(std::time::Duration::from_secs(1));
    for (name, dtype) in [("f32", DType::F32), ("f64", DType::F64)] {
        let (model, x, y) = setup(dtype);
        group.bench_function(name, |b| b.iter(|| step(&model, &x, &y).expect("step")));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
