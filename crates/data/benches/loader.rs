//! Images/s through augmentation + batching (the training input pipeline), and synthetic
//! generation. PyTorch twin: scripts/pytorch/data_loader_bench.py. Run:
//! `cargo bench -p explr-data --bench loader`.

use std::time::Duration;

use candle_core::{DType, Device};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use explr_data::{load_synthetic, Loader, LoaderConfig, SyntheticConfig};

const N: usize = 10_000;

fn pipeline(c: &mut Criterion) {
    let data = load_synthetic(&SyntheticConfig {
        train_size: N,
        test_size: 0,
        ..Default::default()
    })
    .unwrap();
    let mut g = c.benchmark_group("loader");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    for (name, cfg) in [
        ("train_epoch_f32_b128", LoaderConfig::train(128, 0)),
        (
            "train_epoch_f64_b128",
            LoaderConfig::train(128, 0).with_dtype(DType::F64),
        ),
        ("eval_epoch_f32_b500", LoaderConfig::eval(500)),
    ] {
        let loader = Loader::new(data.train(), cfg, &Device::Cpu).unwrap();
        let mut epoch = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                epoch += 1;
                let mut images = 0;
                for batch in loader.epoch(epoch) {
                    images += batch.unwrap().indices.len();
                }
                assert_eq!(images, N);
            })
        });
    }
    g.finish();
}

fn synthetic(c: &mut Criterion) {
    let mut g = c.benchmark_group("synthetic");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("generate_10k", |b| {
        b.iter(|| {
            load_synthetic(&SyntheticConfig {
                train_size: N,
                test_size: 0,
                ..Default::default()
            })
            .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, pipeline, synthetic);
criterion_main!(benches);
