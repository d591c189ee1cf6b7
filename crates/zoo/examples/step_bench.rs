//! Times full training steps of one zoo model (on the CPU, or on a GPU with `--device cuda` in a
//! build with `--features cuda`) and prints one JSON object: forward in
//! training mode, cross-entropy, backward, and an `explr_schedule::Sgd` step (PyTorch form,
//! momentum 0.9, weight decay 5e-4 on every trainable parameter, constant LR 0.1). Its PyTorch
//! twin is scripts/pytorch/step_bench.py; `cargo xtask bench` runs both back to back.
//!
//! ```sh
//! RAYON_NUM_THREADS=2 cargo run --release -p explr-zoo --example step_bench -- \
//!     --model preresnet-20 --batch 128 --dtype f32 --warmup 2 --steps 10
//! ```
//!
//! One configuration per process, so `peak_rss_mb` (the kernel's `VmHWM`) is that
//! configuration's peak (host memory only). On a GPU every phase ends with a device
//! synchronization, so the times are those of the finished work.
//!
//! ```sh
//! cargo run --release --features cuda -p explr-zoo --example step_bench -- \
//!     --device cuda --model preresnet-32 --batch 128 --dtype f32
//! ``` The JSON also splits the median step into its phases (forward with
//! the loss, backward, optimizer), each the median over the timed steps. Like the `explr`
//! binary, it starts with [`explr_nn::tune_cpu_process`].

use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use explr_nn::ParamStore;
use explr_schedule::{ParamGroup, Schedule, Sgd, SgdConfig};
use explr_zoo::{Model, ModelSpec};

const USAGE: &str = "usage: step_bench [--model ARCH-DEPTH] [--batch N] [--dtype f32|f64] \
                     [--warmup N] [--steps N] [--norm KIND] [--device cpu|cuda|cuda:N]";

/// What to time (command-line arguments).
struct Args {
    model: String,
    norm: String,
    batch: usize,
    dtype: DType,
    warmup: usize,
    steps: usize,
    /// `None`: the CPU; `Some(n)`: CUDA device n.
    cuda: Option<usize>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        model: "preresnet-20".into(),
        norm: "bn".into(),
        batch: 128,
        dtype: DType::F32,
        warmup: 2,
        steps: 10,
        cuda: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
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
    if args.steps == 0 || args.batch == 0 {
        bail!("--steps and --batch must be at least 1");
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
    let spec = model_spec(&args.model, &args.norm)?;
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
    let mut last_loss = f64::NAN;
    for k in 0..args.warmup + args.steps {
        // `synchronize` waits for queued GPU work; on the CPU it does nothing.
        let t0 = Instant::now();
        let logits = model.forward_t(&x, true)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
        dev.synchronize()?;
        let t1 = Instant::now();
        let grads = loss.backward()?;
        dev.synchronize()?;
        let t2 = Instant::now();
        sgd.step(&grads)?;
        drop(grads);
        dev.synchronize()?;
        let t3 = Instant::now();
        if k >= args.warmup {
            total.push((t3 - t0).as_secs_f64());
            fwd.push((t1 - t0).as_secs_f64());
            bwd.push((t2 - t1).as_secs_f64());
            opt.push((t3 - t2).as_secs_f64());
        }
        last_loss = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    }
    if !last_loss.is_finite() {
        bail!("the loss diverged ({last_loss}); the timings would not be representative");
    }
    let median_s = median(&total);
    let out = serde_json::json!({
        "impl": "explr",
        "model": args.model,
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
    let mut out = out;
    if let Some(n) = args.cuda {
        out["device"] = serde_json::json!(format!("cuda:{n}"));
    }
    println!("{out}");
    Ok(())
}
