//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use explr_nn::ParamStore;
use explr_zoo::{Model, ModelSpec};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn fixture_json() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("zoo_fixtures.json"))
        .expect("zoo_fixtures.json: run scripts/pytorch/zoo_fixtures.py");
    serde_json::from_str(&text).expect("zoo_fixtures.json parses")
}

pub fn spec(yaml: &str) -> ModelSpec {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("spec `{yaml}`: {e}"))
}

pub fn build(spec: &ModelSpec, dtype: DType, seed: u64) -> Model {
    let store = ParamStore::new(&Device::Cpu, dtype, seed);
    Model::new(spec, &store).unwrap_or_else(|e| panic!("{spec:?}: {e}"))
}

/// A deterministic, non-trivial batch (N, 3, s, s) without any RNG.
pub fn batch(n: usize, s: usize, dtype: DType) -> Tensor {
    let len = n * 3 * s * s;
    let v: Vec<f64> = (0..len)
        .map(|i| ((i as f64) * 0.7919).sin() + 0.3 * ((i as f64) * 0.1371).cos())
        .collect();
    Tensor::from_vec(v, (n, 3, s, s), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// max |a − b| / max |b|.
pub fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_dtype(DType::F64).unwrap();
    let b = b.to_dtype(DType::F64).unwrap();
    let num = (&a - &b).unwrap().abs().unwrap().max_all().unwrap();
    let den = b.abs().unwrap().max_all().unwrap();
    num.to_scalar::<f64>().unwrap() / den.to_scalar::<f64>().unwrap().max(1e-300)
}
