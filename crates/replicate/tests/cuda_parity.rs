//! CPU against CUDA in f32: the four normalization layers (forward, backward, running
//! statistics), `explr_nn::conv2d` (forward and both gradients), `explr_schedule::Sgd` steps
//! and a PreResNet-20 training-mode forward/backward, each within [`TOL`] relative to the
//! largest magnitude of the CPU tensor.
//!
//! The CPU side runs explr's own kernels (fused norms, im2col + gemm convolution); the CUDA side
//! runs candle's ops, so these tests check that every CPU-only path has a correct fallback.
//!
//! They exist only in a build with the `cuda` feature and need a GPU: `cargo xtask gpu-check`
//! runs them (it builds this target with `--features cuda`). A CPU-only build compiles the one
//! test at the bottom instead, so `cargo test --workspace` stays green without a GPU. Each
//! comparison prints a `PARITY name value` line that gpu-check copies into its report.

/// Largest accepted relative difference between the CPU and CUDA results (f32).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
const TOL: f64 = 1e-5;

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::{DType, Device, Tensor, Var};
    use explr_nn::ParamStore;
    use explr_norm::{NormConfig, NormKind};
    use explr_schedule::{ParamGroup, Schedule, Sgd, SgdConfig};
    use explr_zoo::{Arch, Model, ModelSpec};

    use super::TOL;

    fn gpu() -> Device {
        Device::new_cuda(0).unwrap_or_else(|e| {
            panic!(
                "the `cuda` feature is on but CUDA device 0 cannot be opened ({e}); these tests \
                 need an NVIDIA GPU and driver (cargo xtask gpu-check)"
            )
        })
    }

    /// A deterministic f32 tensor of `shape` on `dev` (the same values on every device).
    fn wave(shape: &[usize], phase: f64, dev: &Device) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| ((i as f64) * 0.7919 + phase).sin() as f32)
            .collect();
        Tensor::from_vec(v, shape, dev).unwrap()
    }

    /// max|cpu − gpu| / max|cpu|, computed in f64 on the CPU.
    fn rel(cpu: &Tensor, gpu: &Tensor) -> f64 {
        let a = cpu.to_dtype(DType::F64).unwrap();
        let b = gpu
            .to_device(&Device::Cpu)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        assert_eq!(a.dims(), b.dims());
        let scale = a
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let diff = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        diff / scale.max(f64::MIN_POSITIVE)
    }

    /// Prints and checks every comparison, failing with all of them listed.
    fn report(what: &str, pairs: &[(String, f64)]) {
        let mut bad = Vec::new();
        for (name, r) in pairs {
            println!("PARITY {what}/{name} {r:.3e}");
            if r.is_nan() || *r > TOL {
                bad.push(format!("{name}: {r:.3e}"));
            }
        }
        assert!(
            bad.is_empty(),
            "{what}: CPU and CUDA differ by more than {TOL:e} relative: {}",
            bad.join(", ")
        );
    }

    /// One norm layer on `dev`: training-mode forward, a weighted sum as the loss, backward;
    /// returns y, dx, dγ, dβ and the running statistics (if any) after the step.
    fn norm_step(kind: NormKind, cfg: &NormConfig, dev: &Device) -> Vec<(String, Tensor)> {
        let store = ParamStore::new(dev, DType::F32, 3);
        let norm = kind.build(&store.root().push("n"), 12, cfg).unwrap();
        let x = Var::from_tensor(&wave(&[6, 12, 7, 5], 0.3, dev)).unwrap();
        let y = norm.forward_t(x.as_tensor(), true).unwrap();
        let w = wave(&[6, 12, 7, 5], 1.7, dev);
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
            if b.dtype() == DType::F32 {
                out.push((name, b.as_tensor().clone()));
            }
        }
        out
    }

    #[test]
    fn norms_match_the_cpu() {
        let gpu = gpu();
        let d = NormConfig::default();
        let cases = [
            ("bn", NormKind::Batch, d.clone()),
            ("gn3", NormKind::Group(3), d.clone().with_eps(1e-3)),
            ("ln", NormKind::Layer, d.clone()),
            (
                "in_running",
                NormKind::Instance,
                NormConfig {
                    track_running_stats: Some(true),
                    ..d.clone()
                },
            ),
        ];
        for (name, kind, cfg) in cases {
            let cpu = norm_step(kind, &cfg, &Device::Cpu);
            let cuda = norm_step(kind, &cfg, &gpu);
            assert_eq!(cpu.len(), cuda.len(), "{name}: different outputs");
            let pairs: Vec<(String, f64)> = cpu
                .iter()
                .zip(&cuda)
                .map(|((n, a), (m, b))| {
                    assert_eq!(n, m);
                    (n.clone(), rel(a, b))
                })
                .collect();
            // y, dx, dγ, dβ at least.
            assert!(pairs.len() >= 4, "{name}: {pairs:?}");
            report(&format!("norm/{name}"), &pairs);
        }
    }

    fn conv_step(dev: &Device) -> Vec<(String, Tensor)> {
        let x = Var::from_tensor(&wave(&[4, 6, 11, 9], 0.1, dev)).unwrap();
        let w = Var::from_tensor(&wave(&[8, 6, 3, 3], 2.1, dev)).unwrap();
        let y = explr_nn::conv2d(x.as_tensor(), w.as_tensor(), 2, 1).unwrap();
        let up = wave(y.dims(), 0.9, dev);
        let g = (&y * &up).unwrap().sum_all().unwrap().backward().unwrap();
        vec![
            ("y".into(), y.clone()),
            ("dx".into(), g.get(x.as_tensor()).unwrap().clone()),
            ("dw".into(), g.get(w.as_tensor()).unwrap().clone()),
        ]
    }

    #[test]
    fn conv2d_matches_the_cpu() {
        let gpu = gpu();
        let (cpu, cuda) = (conv_step(&Device::Cpu), conv_step(&gpu));
        let pairs: Vec<(String, f64)> = cpu
            .iter()
            .zip(&cuda)
            .map(|((n, a), (_, b))| (n.clone(), rel(a, b)))
            .collect();
        report("conv2d", &pairs);
    }

    /// Five steps of PyTorch-form SGD (momentum, Nesterov off, weight decay) on two variables
    /// with fixed gradients; returns the variables and the momentum buffers' effect.
    fn sgd_steps(dev: &Device) -> Vec<(String, Tensor)> {
        let a = Var::from_tensor(&wave(&[64, 3, 3], 0.2, dev)).unwrap();
        let b = Var::from_tensor(&wave(&[10], 1.2, dev)).unwrap();
        let schedule =
            Schedule::from_yaml("kind: multistep\nlr: 0.1\nmilestones: [3]\ngamma: 0.1").unwrap();
        let groups = vec![
            ParamGroup::new("a", vec![("a".to_string(), a.clone())]).weight_decay(5e-4),
            ParamGroup::new("b", vec![("b".to_string(), b.clone())]),
        ];
        let mut sgd = Sgd::new(schedule, groups, SgdConfig::momentum(0.9)).unwrap();
        for k in 0..5 {
            let ca = wave(&[64, 3, 3], k as f64, dev);
            let cb = wave(&[10], 0.5 * k as f64, dev);
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

    #[test]
    fn sgd_steps_match_the_cpu() {
        let gpu = gpu();
        let (cpu, cuda) = (sgd_steps(&Device::Cpu), sgd_steps(&gpu));
        let pairs: Vec<(String, f64)> = cpu
            .iter()
            .zip(&cuda)
            .map(|((n, a), (_, b))| (n.clone(), rel(a, b)))
            .collect();
        report("sgd", &pairs);
    }

    /// PreResNet-20 (BatchNorm, trainable γ/β): training-mode forward of a batch of 16, the
    /// cross-entropy, backward; returns the logits, the loss, every gradient and every running
    /// statistic.
    fn preresnet_step(dev: &Device) -> Vec<(String, Tensor)> {
        let store = ParamStore::new(dev, DType::F32, 11);
        let model = Model::new(&ModelSpec::new(Arch::PreResNet, 20), &store).unwrap();
        let x = wave(&[16, 3, 32, 32], 0.0, dev);
        let y: Vec<u32> = (0..16u32).map(|i| i % 10).collect();
        let y = Tensor::from_vec(y, 16, dev).unwrap();
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
            if b.dtype() == DType::F32 {
                out.push((name, b.as_tensor().clone()));
            }
        }
        out
    }

    #[test]
    fn preresnet20_forward_backward_matches_the_cpu() {
        let gpu = gpu();
        let (cpu, cuda) = (preresnet_step(&Device::Cpu), preresnet_step(&gpu));
        assert_eq!(cpu.len(), cuda.len());
        let pairs: Vec<(String, f64)> = cpu
            .iter()
            .zip(&cuda)
            .map(|((n, a), (m, b))| {
                assert_eq!(n, m);
                (n.clone(), rel(a, b))
            })
            .collect();
        // Every parameter has a gradient: conv weights, γ/β, the head.
        assert!(pairs.len() > 40, "{}", pairs.len());
        report("preresnet20", &pairs);
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
