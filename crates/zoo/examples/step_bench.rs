//! Times full training steps of one zoo model (on the CPU, or on a GPU with `--device cuda` in a
//! build with `--features cuda`) and prints one JSON object: forward in
//! training mode, cross-entropy, backward, and an `explr_schedule::Sgd` step (PyTorch form,
//! momentum 0.9, weight decay 5e-4 on every trainable parameter, constant LR 0.1). Its PyTorch
//! twin is scripts/pytorch/step_bench.py; `cargo xtask bench` runs both back to back.
//!
//! ```sh
//! RAYON_NUM_THREADS=2 cargo run --release -p explr-zoo --example step_bench -- \
//!     --model preresnet-20 --batch 128 --dtype f32 --warmup 2 --steps 10 [--kernels avx2]
//! ```
//!
//! `--width N` sets the base width (the cpu profile's claims train PreResNet-14 at width 8:
//! `--model preresnet-14 --width 8 --batch 32 --dtype f64`).
//!
//! One configuration per process, so `peak_rss_mb` (the kernel's `VmHWM`) is that
//! configuration's peak (host memory only). On a GPU every phase ends with a device
//! synchronization, so the times are those of the finished work.
//!
//! ```sh
//! cargo run --release --features cuda -p explr-zoo --example step_bench -- \
//!     --device cuda --model preresnet-32 --batch 128 --dtype f32
//! ```
//!
//! The JSON also splits the median step into its phases (forward with the loss, backward,
//! optimizer), each the median over the timed steps, and on the CPU gives the floating-point
//! operations of each phase, counted from the layer shapes as PyTorch's
//! `torch.utils.flop_counter` counts them (convolutions and the linear head, two per
//! multiply-add: [`explr_nn::conv_flops`]), and the convolution kernel set that ran
//! (`--kernels` forces one: [`explr_nn::ConvKernels`]). Like the `explr` binary, it starts with
//! [`explr_nn::tune_cpu_process`].
//!
//! `--peak` instead measures the machine's peak: every thread (`RAYON_NUM_THREADS`, as the
//! step uses) runs independent chains of vector FMAs that never touch memory, for each vector
//! width the CPU has (AVX-512, AVX2 + FMA), in f32 and f64; it prints the best of five runs in
//! GFLOP/s, with the kernel sets this CPU supports.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use explr_nn::{ConvKernels, ParamStore};
use explr_schedule::{ParamGroup, Schedule, Sgd, SgdConfig};
use explr_zoo::{Model, ModelSpec};

const USAGE: &str = "usage: step_bench [--model ARCH-DEPTH] [--width N] [--batch N] \
                     [--dtype f32|f64] [--warmup N] [--steps N] [--norm KIND] [--device cpu|cuda|cuda:N] \
                     [--kernels avx512|avx2|im2col] | step_bench --peak";

/// What to time (command-line arguments).
struct Args {
    model: String,
    /// The base width (`None`: the architecture's own, 16 for the ResNets); the cpu profile's
    /// claims train width 8.
    width: Option<usize>,
    norm: String,
    batch: usize,
    dtype: DType,
    warmup: usize,
    steps: usize,
    /// `None`: the CPU; `Some(n)`: CUDA device n.
    cuda: Option<usize>,
    /// The convolution kernel set to force (`None`: the widest this CPU has).
    kernels: Option<ConvKernels>,
    /// Measure the machine's peak instead of a training step.
    peak: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        model: "preresnet-20".into(),
        width: None,
        norm: "bn".into(),
        batch: 128,
        dtype: DType::F32,
        warmup: 2,
        steps: 10,
        cuda: None,
        kernels: None,
        peak: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        if flag == "--peak" {
            args.peak = true;
            continue;
        }
        let value = it
            .next()
            .with_context(|| format!("{flag} needs a value; {USAGE}"))?;
        let number = || -> Result<usize> {
            value
                .parse()
                .with_context(|| format!("{flag} {value}: expected a whole number"))
        };
        match flag.as_str() {
            "--model" => args.model = value.clone(),
            "--width" => args.width = Some(number()?),
            "--norm" => args.norm = value.clone(),
            "--batch" => args.batch = number()?,
            "--warmup" => args.warmup = number()?,
            "--steps" => args.steps = number()?,
            "--device" => {
                args.cuda = match value.as_str() {
                    "cpu" => None,
                    "cuda" => Some(0),
                    other => match other.strip_prefix("cuda:").map(str::parse) {
                        Some(Ok(n)) => Some(n),
                        _ => bail!("--device {other}: expected cpu, cuda or cuda:N"),
                    },
                }
            }
            "--kernels" => args.kernels = Some(value.parse().context("--kernels")?),
            "--dtype" => {
                args.dtype = match value.as_str() {
                    "f32" => DType::F32,
                    "f64" => DType::F64,
                    other => bail!("--dtype {other}: expected f32 or f64"),
                }
            }
            other => bail!("unknown argument {other}; {USAGE}"),
        }
    }
    if args.steps == 0 || args.batch == 0 || args.width == Some(0) {
        bail!("--steps, --batch and --width must be at least 1");
    }
    Ok(args)
}

/// `preresnet-20` → the zoo spec (the norm as given).
fn model_spec(model: &str, norm: &str) -> Result<ModelSpec> {
    let (arch, depth) = model
        .rsplit_once('-')
        .with_context(|| format!("--model {model}: expected ARCH-DEPTH, e.g. preresnet-20"))?;
    let yaml = format!("{{arch: {arch}, depth: {depth}, norm: '{norm}'}}");
    serde_yaml::from_str(&yaml).with_context(|| format!("--model {model} --norm {norm}"))
}

/// A `VmHWM`/`VmRSS`-style line of /proc/self/status, in MiB.
fn proc_status_mb(key: &str) -> Result<f64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .with_context(|| format!("no {key} in /proc/self/status"))?;
    let kb: f64 = line
        .trim_start_matches(key)
        .trim_start_matches(':')
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("parsing {line:?}"))?;
    Ok(kb / 1024.0)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

fn main() -> Result<()> {
    // As the `explr` binary does (allocator and thread-pool settings; see the function).
    // SAFETY: the first statement of main, before any thread starts.
    unsafe { explr_nn::tune_cpu_process() };
    let args = parse_args()?;
    if args.peak {
        println!("{}", peak::measure(candle_core::utils::get_num_threads()));
        return Ok(());
    }
    if let Some(k) = args.kernels {
        ConvKernels::force(Some(k)).context("--kernels")?;
    }
    let base_rss_mb = proc_status_mb("VmRSS")?;
    let dev = match args.cuda {
        None => Device::Cpu,
        Some(n) => Device::new_cuda(n).with_context(|| {
            format!(
                "--device cuda:{n}: cannot open the CUDA device (a build without \
                 `--features cuda`, or no GPU/driver here); use --device cpu"
            )
        })?,
    };
    let mut spec = model_spec(&args.model, &args.norm)?;
    if let Some(width) = args.width {
        spec = spec.with_width(width);
    }
    let model = Model::new(&spec, &ParamStore::new(&dev, args.dtype, 0))?;

    // Deterministic input without an RNG: the same formula as the PyTorch twin.
    let n = args.batch * 3 * 32 * 32;
    let v: Vec<f64> = (0..n).map(|i| ((i as f64) * 0.7919).sin()).collect();
    let x = Tensor::from_vec(v, (args.batch, 3, 32, 32), &dev)?.to_dtype(args.dtype)?;
    let y: Vec<u32> = (0..args.batch as u32).map(|i| i % 10).collect();
    let y = Tensor::from_vec(y, args.batch, &dev)?;

    // One group, as `torch.optim.SGD(model.parameters(), lr, momentum, weight_decay)`.
    let vars: Vec<_> = model.trainable_groups().into_values().flatten().collect();
    let group = ParamGroup::new("all", vars).weight_decay(5e-4);
    let schedule = Schedule::constant(0.1)?;
    let mut sgd = Sgd::new(schedule, vec![group], SgdConfig::momentum(0.9))?;

    let (mut total, mut fwd, mut bwd, mut opt) = (vec![], vec![], vec![], vec![]);
    // Convolution work of each timed step's forward and backward pass (all alike).
    let mut conv_work = Vec::new();
    let mut last_loss = f64::NAN;
    for k in 0..args.warmup + args.steps {
        // `synchronize` waits for queued GPU work; on the CPU it does nothing.
        let (f0, t0) = (explr_nn::conv_flops(), Instant::now());
        let logits = model.forward_t(&x, true)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
        dev.synchronize()?;
        let (f1, t1) = (explr_nn::conv_flops(), Instant::now());
        let grads = loss.backward()?;
        dev.synchronize()?;
        let (f2, t2) = (explr_nn::conv_flops(), Instant::now());
        sgd.step(&grads)?;
        drop(grads);
        dev.synchronize()?;
        let t3 = Instant::now();
        if k >= args.warmup {
            total.push((t3 - t0).as_secs_f64());
            fwd.push((t1 - t0).as_secs_f64());
            bwd.push((t2 - t1).as_secs_f64());
            opt.push((t3 - t2).as_secs_f64());
            conv_work.push((f1.since(f0).forward, f2.since(f1).backward()));
        }
        last_loss = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    }
    if !last_loss.is_finite() {
        bail!("the loss diverged ({last_loss}); the timings would not be representative");
    }
    if conv_work.windows(2).any(|w| w[0] != w[1]) {
        bail!("the timed steps did different convolution work: {conv_work:?}");
    }
    let median_s = median(&total);
    let mut out = serde_json::json!({
        "impl": "explr",
        "model": args.model,
        "width": spec.resolved_width(),
        "norm": args.norm,
        "batch": args.batch,
        "dtype": format!("{:?}", args.dtype).to_lowercase(),
        "threads": candle_core::utils::get_num_threads(),
        "warmup": args.warmup,
        "steps": args.steps,
        "median_s": median_s,
        "min_s": total.iter().copied().fold(f64::INFINITY, f64::min),
        "max_s": total.iter().copied().fold(0.0, f64::max),
        "forward_s": median(&fwd),
        "backward_s": median(&bwd),
        "optimizer_s": median(&opt),
        "images_per_s": args.batch as f64 / median_s,
        "peak_rss_mb": proc_status_mb("VmHWM")?,
        "base_rss_mb": base_rss_mb,
        "final_loss": last_loss,
    });
    match args.cuda {
        Some(n) => out["device"] = serde_json::json!(format!("cuda:{n}")),
        None => {
            // The head: `x · Wᵀ` for an `[batch, in]` input and an `[out, in]` weight, and in the
            // backward pass the same product for the input gradient and (when trained) for the
            // weight gradient, as for the convolutions (whose counts come from explr-nn).
            let (&(conv_forward, conv_backward), head) = (
                conv_work.first().context("no timed step")?,
                2 * args.batch as u64 * model.head().weight().elem_count() as u64,
            );
            let head_grads = if spec.freeze_head { 1 } else { 2 };
            out["kernels"] = serde_json::json!(ConvKernels::in_use().name());
            out["flops_forward"] = serde_json::json!(conv_forward + head);
            out["flops_backward"] = serde_json::json!(conv_backward + head_grads * head);
        }
    }
    println!("{out}");
    Ok(())
}

/// The machine's peak: vector FMAs that never touch memory, on every thread at once.
mod peak {
    use std::time::Instant;

    use explr_nn::ConvKernels;

    /// Independent FMA chains of one vector type, `$chains` of them: enough to cover the FMA
    /// latency times the FMA units (4–5 cycles × 2 on current x86-64 cores) with registers to
    /// spare. Returns a value that depends on every chain, so nothing is optimized away.
    #[cfg(target_arch = "x86_64")]
    macro_rules! fma_chains {
        ($name:ident, $features:literal, $t:ty, $v:ty, $chains:literal, $set1:ident, $fmadd:ident,
         $add:ident, $storeu:ident, $lanes:literal) => {
            /// # Safety
            /// The CPU must have the target features.
            #[target_feature(enable = $features)]
            unsafe fn $name(iterations: u64) -> f64 {
                use std::arch::x86_64::*;
                // Opaque to the optimizer, or it would find that 1 is a fixed point of the
                // chains and drop the loop, and distinct, or it could merge the chains.
                let opaque = |v: $t| $set1(std::hint::black_box(v));
                let (a, b) = (opaque(0.999), opaque(0.001));
                let mut acc: [$v; $chains] = std::array::from_fn(|i| opaque(1.0 + i as $t));
                for _ in 0..iterations {
                    for x in &mut acc {
                        *x = $fmadd(*x, a, b);
                    }
                }
                let mut sum = $set1(0.0);
                for x in acc {
                    sum = $add(sum, x);
                }
                let mut lanes = [0.0 as $t; $lanes];
                // SAFETY: `lanes` holds one vector.
                unsafe { $storeu(lanes.as_mut_ptr(), sum) };
                lanes.iter().map(|&v| v as f64).sum()
            }
        };
    }
    #[cfg(target_arch = "x86_64")]
    fma_chains!(
        avx512_f32,
        "avx512f",
        f32,
        __m512,
        24,
        _mm512_set1_ps,
        _mm512_fmadd_ps,
        _mm512_add_ps,
        _mm512_storeu_ps,
        16
    );
    #[cfg(target_arch = "x86_64")]
    fma_chains!(
        avx512_f64,
        "avx512f",
        f64,
        __m512d,
        24,
        _mm512_set1_pd,
        _mm512_fmadd_pd,
        _mm512_add_pd,
        _mm512_storeu_pd,
        8
    );
    #[cfg(target_arch = "x86_64")]
    fma_chains!(
        avx2_f32,
        "avx2,fma",
        f32,
        __m256,
        12,
        _mm256_set1_ps,
        _mm256_fmadd_ps,
        _mm256_add_ps,
        _mm256_storeu_ps,
        8
    );
    #[cfg(target_arch = "x86_64")]
    fma_chains!(
        avx2_f64,
        "avx2,fma",
        f64,
        __m256d,
        12,
        _mm256_set1_pd,
        _mm256_fmadd_pd,
        _mm256_add_pd,
        _mm256_storeu_pd,
        4
    );

    /// A chain kernel (`iterations ↦ result`) and its floating-point operations per iteration.
    type ChainKernel = (fn(u64) -> f64, f64);

    /// The f32 and f64 chain kernels of a direct kernel set this CPU runs, each with its
    /// floating-point operations per iteration (chains × lanes × 2).
    #[cfg(target_arch = "x86_64")]
    fn kernels(set: ConvKernels) -> Option<[ChainKernel; 2]> {
        if !set.is_supported() {
            return None;
        }
        // SAFETY (every closure): the CPU runs `set`, whose features are the kernels'.
        match set {
            ConvKernels::Avx512 => Some([
                (|n| unsafe { avx512_f32(n) }, 24.0 * 16.0 * 2.0),
                (|n| unsafe { avx512_f64(n) }, 24.0 * 8.0 * 2.0),
            ]),
            ConvKernels::Avx2 => Some([
                (|n| unsafe { avx2_f32(n) }, 12.0 * 8.0 * 2.0),
                (|n| unsafe { avx2_f64(n) }, 12.0 * 4.0 * 2.0),
            ]),
            ConvKernels::Im2col => None,
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn kernels(_set: ConvKernels) -> Option<[ChainKernel; 2]> {
        None
    }

    /// GFLOP/s of `kernel` on `threads` threads at once, best of five runs of about 0.2 s.
    fn gflops(kernel: fn(u64) -> f64, flops_per_iteration: f64, threads: usize) -> f64 {
        // Calibrated to about 0.2 s on one thread.
        let mut iterations = 1u64 << 14;
        loop {
            let t = Instant::now();
            std::hint::black_box(kernel(iterations));
            let s = t.elapsed().as_secs_f64();
            if s > 0.02 || iterations > 1 << 40 {
                iterations = ((iterations as f64) * 0.2 / s).max(1.0) as u64;
                break;
            }
            iterations *= 4;
        }
        (0..5)
            .map(|_| {
                let t = Instant::now();
                std::thread::scope(|scope| {
                    for _ in 0..threads {
                        scope.spawn(|| std::hint::black_box(kernel(iterations)));
                    }
                });
                threads as f64 * iterations as f64 * flops_per_iteration
                    / t.elapsed().as_secs_f64()
                    / 1e9
            })
            .fold(0.0, f64::max)
    }

    /// The JSON object `--peak` prints.
    pub fn measure(threads: usize) -> serde_json::Value {
        let mut peak = serde_json::Map::new();
        for set in ConvKernels::ALL {
            if let Some([(f32_kernel, f32_flops), (f64_kernel, f64_flops)]) = kernels(set) {
                peak.insert(
                    set.name().into(),
                    serde_json::json!({
                        "f32": gflops(f32_kernel, f32_flops, threads),
                        "f64": gflops(f64_kernel, f64_flops, threads),
                    }),
                );
            }
        }
        serde_json::json!({
            "impl": "peak",
            "threads": threads,
            "gflops": peak,
            "kernels_supported": ConvKernels::ALL
                .into_iter()
                .filter(|k| k.is_supported())
                .map(ConvKernels::name)
                .collect::<Vec<_>>(),
            "kernels_detected": ConvKernels::detected().name(),
        })
    }
}
