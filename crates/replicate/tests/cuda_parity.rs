//! CPU against CUDA in f32: the four normalization layers (forward, backward, running
//! statistics), `explr_nn::conv2d` (forward and both gradients), `explr_schedule::Sgd` steps
//! and a PreResNet-8 training-mode forward/backward, each within [`TOL`] relative to the
//! largest magnitude of the CPU tensor.
//!
//! The CPU side runs explr's own kernels (fused norms, direct convolutions); the CUDA side runs
//! candle's ops, so these tests check that every CPU-only path has a correct fallback.
//!
//! Two f32 implementations that are both correct still differ by their rounding, so the cases
//! must be well conditioned: a quantity that is a large sum cancelling to almost nothing (the
//! running mean of a zero-mean input, say) has a relative rounding error far above 1e-5 on any
//! device, and a ReLU input within rounding of zero lets one device pass a gradient that the
//! other stops (see [`MODEL_INPUT`]). The test that every build runs,
//! [`f32_rounding_leaves_room_under_the_tolerance`], computes every case on the CPU in f32 and
//! in f64 from the same values and checks that f32's own error is at most half of [`TOL`]: then
//! a correct CUDA result, with rounding of that size, passes.
//!
//! The CUDA tests exist only in a build with the `cuda` feature and need a GPU:
//! `cargo xtask gpu-check` runs them (it builds this target with `--features cuda`). Each
//! comparison is printed (`PARITY case/output value`, for the log) and, where the environment
//! variable [`PARITY_JSON_VAR`] names a file, written there as JSON ([`write_parity_json`]),
//! which gpu-check reads into its report.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use explr_nn::ParamStore;
use explr_norm::{NormConfig, NormKind};
use explr_schedule::{ParamGroup, Schedule, Sgd, SgdConfig, Unit};
use explr_zoo::{Arch, Model, ModelSpec};

/// Largest accepted relative difference between the CPU and CUDA results (f32).
const TOL: f64 = 1e-5;

/// Named results of one case.
type Outputs = Vec<(String, Tensor)>;

/// The environment variable that names the file the CUDA tests write their comparisons to
/// (`cargo xtask gpu-check` sets it); unset, they write none.
const PARITY_JSON_VAR: &str = "EXPLR_PARITY_JSON";

/// Writes `relative` (`case/output` → max|CPU − CUDA| / max|CPU|) to `path` atomically (a
/// temporary file renamed into place: a reader never sees half of it) as
/// `{"tolerance": TOL, "relative": {"conv2d/dw": 1.2e-7, …}}`, a value that is not finite (NaN,
/// infinite) as `null`.
fn write_parity_json(path: &Path, relative: &BTreeMap<String, f64>) {
    let relative: BTreeMap<&str, Option<f64>> = relative
        .iter()
        .map(|(name, r)| (name.as_str(), r.is_finite().then_some(*r)))
        .collect();
    let json = serde_json::json!({ "tolerance": TOL, "relative": relative });
    explr_io::write_atomic(path, format!("{json:#}\n").as_bytes())
        .unwrap_or_else(|e| panic!("{PARITY_JSON_VAR}: {e}"));
}

/// A deterministic tensor of `shape` on `dev`: a sine wave plus `offset`, drawn in f32 (so that
/// the f64 reference sees exactly the f32 values) and cast to `dtype`.
fn wave(shape: &[usize], phase: f64, offset: f32, dev: &Device, dtype: DType) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| {
            let h = ((i as f64) * 12.9898 + phase * 78.233).sin() * 43758.5453;
            (2.0 * (h - h.floor()) - 1.0) as f32 + offset
        })
        .collect();
    Tensor::from_vec(v, shape, dev)
        .and_then(|t| t.to_dtype(dtype))
        .unwrap()
}

/// max|a − b| / max|a|, computed in f64 on the CPU.
fn rel(a: &Tensor, b: &Tensor) -> f64 {
    let f64_on_cpu = |t: &Tensor| {
        t.to_device(&Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F64))
            .unwrap()
    };
    let (a, b) = (f64_on_cpu(a), f64_on_cpu(b));
    assert_eq!(a.dims(), b.dims());
    let max_abs = |t: &Tensor| {
        t.abs()
            .and_then(|t| t.max_all())
            .and_then(|t| t.to_scalar::<f64>())
            .unwrap()
    };
    let scale = max_abs(&a);
    max_abs(&(a - b).unwrap()) / scale.max(f64::MIN_POSITIVE)
}

/// `rel` of every pair of outputs, which must have the same names in the same order.
fn compare(reference: &Outputs, other: &Outputs) -> Vec<(String, f64)> {
    assert_eq!(reference.len(), other.len(), "different outputs");
    reference
        .iter()
        .zip(other)
        .map(|((n, a), (m, b))| {
            assert_eq!(n, m);
            (n.clone(), rel(a, b))
        })
        .collect()
}

/// Prints every comparison as `TAG what/name value` and fails, with all of the offenders
/// listed, if any is above `limit` (or NaN).
fn report(tag: &str, what: &str, pairs: &[(String, f64)], limit: f64) {
    let mut bad = Vec::new();
    for (name, r) in pairs {
        println!("{tag} {what}/{name} {r:.3e}");
        if r.is_nan() || *r > limit {
            bad.push(format!("{name}: {r:.3e}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{what}: {tag} above {limit:e} relative: {}",
        bad.join(", ")
    );
}

/// The norm layers compared, with their configurations.
fn norm_cases() -> Vec<(&'static str, NormKind, NormConfig)> {
    let d = NormConfig::default();
    vec![
        ("bn", NormKind::Batch, d.clone()),
        ("gn3", NormKind::Group(3), d.clone().with_eps(1e-3)),
        ("ln", NormKind::Layer, d.clone()),
        (
            "in_running",
            NormKind::Instance,
            NormConfig {
                track_running_stats: Some(true),
                ..d
            },
        ),
    ]
}

/// One norm layer: training-mode forward of an input with a nonzero mean (so that the running
/// mean is no cancelling sum), a weighted sum as the loss, backward; returns y, dx, dγ, dβ and
/// the running statistics (if any) after the step.
fn norm_step(kind: NormKind, cfg: &NormConfig, dev: &Device, dtype: DType) -> Outputs {
    let store = ParamStore::new(dev, dtype, 3);
    let norm = kind.build(&store.root().push("n"), 12, cfg).unwrap();
    let x = Var::from_tensor(&wave(&[6, 12, 7, 5], 0.3, 0.5, dev, dtype)).unwrap();
    let y = norm.forward_t(x.as_tensor(), true).unwrap();
    let w = wave(&[6, 12, 7, 5], 1.7, 0.0, dev, dtype);
    let grads = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
    let mut out = vec![
        ("y".to_string(), y.clone()),
        ("dx".to_string(), grads.get(x.as_tensor()).unwrap().clone()),
    ];
    for (name, p) in store.params() {
        if let Some(g) = grads.get(p.var.as_tensor()) {
            out.push((format!("d_{name}"), g.clone()));
        }
    }
    for (name, b) in store.buffers() {
        if b.dtype() == dtype {
            out.push((name, b.as_tensor().clone()));
        }
    }
    out
}

/// A stride-2 convolution forward and backward.
fn conv_step(dev: &Device, dtype: DType) -> Outputs {
    let x = Var::from_tensor(&wave(&[4, 6, 11, 9], 0.1, 0.0, dev, dtype)).unwrap();
    let w = Var::from_tensor(&wave(&[8, 6, 3, 3], 2.1, 0.0, dev, dtype)).unwrap();
    let y = explr_nn::conv2d(x.as_tensor(), w.as_tensor(), 2, 1).unwrap();
    let up = wave(y.dims(), 0.9, 0.0, dev, dtype);
    let g = (&y * &up).unwrap().sum_all().unwrap().backward().unwrap();
    vec![
        ("y".into(), y.clone()),
        ("dx".into(), g.get(x.as_tensor()).unwrap().clone()),
        ("dw".into(), g.get(w.as_tensor()).unwrap().clone()),
    ]
}

/// Five steps of PyTorch-form SGD (momentum, weight decay on one group) on two variables with
/// fixed gradients, across an LR milestone; returns the variables.
fn sgd_steps(dev: &Device, dtype: DType) -> Outputs {
    let a = Var::from_tensor(&wave(&[64, 3, 3], 0.2, 0.0, dev, dtype)).unwrap();
    let b = Var::from_tensor(&wave(&[10], 1.2, 0.0, dev, dtype)).unwrap();
    let schedule = Schedule::multistep(0.1, &[3], 0.1, Unit::Steps).unwrap();
    let groups = vec![
        ParamGroup::new("a", vec![("a".to_string(), a.clone())]).weight_decay(5e-4),
        ParamGroup::new("b", vec![("b".to_string(), b.clone())]),
    ];
    let mut sgd = Sgd::new(schedule, groups, SgdConfig::momentum(0.9)).unwrap();
    for k in 0..5 {
        let ca = wave(&[64, 3, 3], k as f64, 0.0, dev, dtype);
        let cb = wave(&[10], 0.5 * k as f64, 0.0, dev, dtype);
        let loss = ((a.as_tensor() * &ca).unwrap().sum_all().unwrap()
            + (b.as_tensor().sqr().unwrap() * &cb)
                .unwrap()
                .sum_all()
                .unwrap())
        .unwrap();
        sgd.step(&loss.backward().unwrap()).unwrap();
    }
    vec![
        ("a".into(), a.as_tensor().clone()),
        ("b".into(), b.as_tensor().clone()),
    ]
}

/// The model of the model case.
fn model_spec() -> ModelSpec {
    ModelSpec::new(Arch::PreResNet, 8).with_width(4)
}

/// The values of every parameter and buffer of `store`, copied.
fn snapshot(store: &ParamStore) -> HashMap<String, Tensor> {
    store
        .state_dict()
        .into_iter()
        .map(|(k, v)| (k, v.copy().unwrap()))
        .collect()
}

/// Images, channels and side of the model case: small enough that no ReLU input is likely to
/// lie within f32 rounding of zero, where two correct devices may pass or stop a gradient
/// differently. (PreResNet-20 on 16 images of 32×32 has 2.5 million ReLU inputs; on one such
/// batch a single one of them fell on the other side of zero in f32 than in f64, on the CPU,
/// and moved a bias gradient by 1e-3 relative. Here there are under 5 000.)
const MODEL_INPUT: [usize; 4] = [4, 3, 8, 8];

/// PreResNet-8 at width 4 (BatchNorm, trainable γ/β; every block kind, the stride-2 shortcut
/// too): training-mode forward of 4 images of 8×8, the cross-entropy, backward; returns the
/// logits, the loss, every gradient and every running statistic. The weights are drawn from
/// seed 11, or set to `init`.
fn preresnet_step(dev: &Device, dtype: DType, init: Option<&HashMap<String, Tensor>>) -> Outputs {
    let store = ParamStore::new(dev, dtype, 11);
    let model = Model::new(&model_spec(), &store).unwrap();
    if let Some(values) = init {
        store.load_state_dict(values, "the f32 weights").unwrap();
    }
    let x = wave(&MODEL_INPUT, 0.0, 0.0, dev, dtype);
    let n = MODEL_INPUT[0] as u32;
    let y: Vec<u32> = (0..n).map(|i| (3 * i) % 10).collect();
    let y = Tensor::from_vec(y, MODEL_INPUT[0], dev).unwrap();
    let logits = model.forward_t(&x, true).unwrap();
    let loss = candle_nn::loss::cross_entropy(&logits, &y).unwrap();
    let grads = loss.backward().unwrap();
    let mut out = vec![
        ("logits".to_string(), logits.clone()),
        ("loss".to_string(), loss.clone()),
    ];
    for (name, p) in store.params() {
        let g = grads
            .get(p.var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        out.push((format!("d_{name}"), g.clone()));
    }
    for (name, b) in store.buffers() {
        if b.dtype() == dtype {
            out.push((name, b.as_tensor().clone()));
        }
    }
    out
}

/// Every case in f32 against f64 from the same values, on the CPU: f32's own rounding must
/// leave room for another device's under [`TOL`].
#[test]
fn f32_rounding_leaves_room_under_the_tolerance() {
    let cpu = Device::Cpu;
    let limit = TOL / 2.0;
    for (name, kind, cfg) in norm_cases() {
        let pairs = compare(
            &norm_step(kind, &cfg, &cpu, DType::F64),
            &norm_step(kind, &cfg, &cpu, DType::F32),
        );
        report("F32_ROUNDING", &format!("norm/{name}"), &pairs, limit);
    }
    let conv = compare(&conv_step(&cpu, DType::F64), &conv_step(&cpu, DType::F32));
    report("F32_ROUNDING", "conv2d", &conv, limit);
    let sgd = compare(&sgd_steps(&cpu, DType::F64), &sgd_steps(&cpu, DType::F32));
    report("F32_ROUNDING", "sgd", &sgd, limit);
    // The f64 model starts from the f32 model's weights, before its step moved the statistics.
    let store = ParamStore::new(&cpu, DType::F32, 11);
    Model::new(&model_spec(), &store).unwrap();
    let weights = snapshot(&store);
    let pairs = compare(
        &preresnet_step(&cpu, DType::F64, Some(&weights)),
        &preresnet_step(&cpu, DType::F32, None),
    );
    assert!(pairs.len() > 20, "{}", pairs.len());
    report("F32_ROUNDING", "preresnet8", &pairs, limit);
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::sync::{Mutex, PoisonError};

    use super::*;

    /// Every comparison that the tests of this process have made so far, by `case/output`.
    static MEASURED: Mutex<BTreeMap<String, f64>> = Mutex::new(BTreeMap::new());

    /// Adds `pairs` to [`MEASURED`] (as `what/name`) and, where [`PARITY_JSON_VAR`] is set,
    /// rewrites that file with all of them (the tests of one process share it); then prints
    /// and checks them against [`TOL`], as [`report`] does.
    fn parity(what: &str, pairs: &[(String, f64)]) {
        {
            let mut all = MEASURED.lock().unwrap_or_else(PoisonError::into_inner);
            all.extend(pairs.iter().map(|(name, r)| (format!("{what}/{name}"), *r)));
            if let Some(path) = std::env::var_os(PARITY_JSON_VAR) {
                write_parity_json(Path::new(&path), &all);
            }
        }
        report("PARITY", what, pairs, TOL);
    }

    fn gpu() -> Device {
        Device::new_cuda(0).unwrap_or_else(|e| {
            panic!(
                "the `cuda` feature is on but CUDA device 0 cannot be opened ({e}); these tests \
                 need an NVIDIA GPU and driver (cargo xtask gpu-check)"
            )
        })
    }

    #[test]
    fn norms_match_the_cpu() {
        let gpu = gpu();
        for (name, kind, cfg) in norm_cases() {
            let pairs = compare(
                &norm_step(kind, &cfg, &Device::Cpu, DType::F32),
                &norm_step(kind, &cfg, &gpu, DType::F32),
            );
            // y, dx, dγ, dβ at least.
            assert!(pairs.len() >= 4, "{name}: {pairs:?}");
            parity(&format!("norm/{name}"), &pairs);
        }
    }

    #[test]
    fn conv2d_matches_the_cpu() {
        let gpu = gpu();
        let pairs = compare(
            &conv_step(&Device::Cpu, DType::F32),
            &conv_step(&gpu, DType::F32),
        );
        parity("conv2d", &pairs);
    }

    #[test]
    fn sgd_steps_match_the_cpu() {
        let gpu = gpu();
        let pairs = compare(
            &sgd_steps(&Device::Cpu, DType::F32),
            &sgd_steps(&gpu, DType::F32),
        );
        parity("sgd", &pairs);
    }

    #[test]
    fn preresnet8_forward_backward_matches_the_cpu() {
        let gpu = gpu();
        let pairs = compare(
            &preresnet_step(&Device::Cpu, DType::F32, None),
            &preresnet_step(&gpu, DType::F32, None),
        );
        // Every parameter has a gradient: conv weights, γ/β, the head.
        assert!(pairs.len() > 20, "{}", pairs.len());
        parity("preresnet8", &pairs);
    }
}

/// A build without the `cuda` feature has no CUDA device to compare with: the tests above are
/// compiled only with `--features cuda` (and run by `cargo xtask gpu-check` on a GPU machine).
#[cfg(not(feature = "cuda"))]
#[test]
fn parity_tests_need_the_cuda_feature() {
    let err = explr_replicate::device::DeviceSpec::Cuda(0)
        .open()
        .unwrap_err();
    assert!(err.to_string().contains("--features cuda"), "{err}");
}

/// What [`write_parity_json`] writes, for gpu-check to read: every value under its name, the
/// tolerance, `null` for what is not finite, and no temporary file left behind.
#[test]
fn parity_json_is_written_whole() {
    let dir = std::env::temp_dir().join(format!("explr-parity-json-{}", std::process::id()));
    let path = dir.join("sub/parity.json");
    let mut relative = BTreeMap::from([("conv2d/y".to_string(), 2.5e-7)]);
    write_parity_json(&path, &relative);
    relative.insert("sgd/a".into(), f64::NAN);
    write_parity_json(&path, &relative);
    let text = std::fs::read_to_string(&path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"tolerance": 1e-5, "relative": {"conv2d/y": 2.5e-7, "sgd/a": null}}),
        "{text}"
    );
    let files = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
    assert_eq!(files, 1, "a temporary file was left behind");
    std::fs::remove_dir_all(dir).unwrap();
}
