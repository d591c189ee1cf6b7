//! Times the fused BatchNorm + ReLU of the zoo's pre-activation blocks on the shapes PreResNet-20
//! normalizes, forward and backward apart, and prints for each the milliseconds, the bandwidth
//! of its compulsory traffic (forward: read `x`, write `y`; backward: read `x` and `dy`, write
//! `dx`), and how long a plain streaming pass over the same tensors takes on the same pool
//! (forward `y = a·x + b`, backward `dx = a·x + b·dy`, into a new vector as the norms write
//! theirs), with the ratio to it: what moving the compulsory bytes costs here, the data as warm
//! in the caches as the norm's. Then the totals weighted by how often PreResNet-20 runs each
//! shape.
//!
//! ```sh
//! RAYON_NUM_THREADS=2 cargo run --release -p explr-norm --example norm_passes -- \
//!     [--batch 128] [--width 16] [--dtype f32|f64]
//! ```

use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use explr_nn::ParamStore;
use explr_norm::{NormConfig, NormKind};

#[path = "../benches/common/seed_grad.rs"]
mod seed_grad;

use seed_grad::SeedGrad;

/// `out[i] = f(x[i], y[i])` into a new vector, in parallel chunks: the streaming pass the
/// norms' passes are compared with (the compiler vectorizes the loop over each chunk).
fn stream<T: Copy + Send + Sync>(x: &[T], y: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 14;
    let mut out = Vec::with_capacity(x.len());
    out.spare_capacity_mut()
        .par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(y.par_chunks(CHUNK)))
        .for_each(|(o, (x, y))| {
            for ((o, &x), &y) in o.iter_mut().zip(x).zip(y) {
                o.write(f(x, y));
            }
        });
    // SAFETY: the chunks cover the first `x.len()` slots, each written above.
    unsafe { out.set_len(x.len()) };
    out
}

/// Median seconds of [`stream`] over `x` and `y` with `f`.
fn stream_time<T: Copy + Send + Sync>(
    x: &[T],
    y: &[T],
    f: impl Fn(T, T) -> T + Sync + Copy,
) -> Result<f64> {
    median(|| {
        let start = Instant::now();
        std::hint::black_box(stream(x, y, f));
        Ok(start.elapsed().as_secs_f64())
    })
}

/// Seconds of the streaming forward and backward passes over `x` and `g` (f32 or f64).
fn stream_times(x: &Tensor, g: &Tensor) -> Result<(f64, f64)> {
    fn times<T: candle_core::WithDType>(x: &Tensor, g: &Tensor) -> Result<(f64, f64)> {
        let (x, g) = (
            x.flatten_all()?.to_vec1::<T>()?,
            g.flatten_all()?.to_vec1::<T>()?,
        );
        let (a, b) = (T::from_f64(0.5), T::from_f64(0.25));
        // The forward reads one stream (`g` only by the backward).
        Ok((
            stream_time(&x, &g, move |x, _| x * a + b)?,
            stream_time(&x, &g, move |x, g| x * a + g * b)?,
        ))
    }
    match x.dtype() {
        DType::F32 => times::<f32>(x, g),
        _ => times::<f64>(x, g),
    }
}

/// Median over 8 runs, after one warm-up, of the seconds `timed` returns.
fn median(mut timed: impl FnMut() -> Result<f64>) -> Result<f64> {
    timed()?;
    let mut t = (0..8).map(|_| timed()).collect::<Result<Vec<f64>>>()?;
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

fn main() -> Result<()> {
    // SAFETY: first thing in main, before any other thread exists.
    unsafe { explr_nn::tune_cpu_process() };
    let (mut batch, mut dtype, mut width) = (128, DType::F32, 16);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--batch" => batch = value.parse().context("--batch")?,
            "--width" => width = value.parse().context("--width")?,
            "--dtype" => {
                dtype = match value.as_str() {
                    "f32" => DType::F32,
                    "f64" => DType::F64,
                    other => bail!("--dtype {other}: expected f32 or f64"),
                }
            }
            other => bail!("unknown flag {other}: expected --batch, --width or --dtype"),
        }
    }
    let dev = Device::Cpu;
    // PreResNet-20's normalized activations: (channels, side, how many per step).
    let shapes = [(width, 32, 7), (2 * width, 16, 6), (4 * width, 8, 6)];
    println!("BatchNorm + ReLU, batch {batch}, width {width}, {dtype:?}: ms and GB/s per pass");
    let mut totals = [0.0f64; 4];
    for (c, side, count) in shapes {
        let store = ParamStore::new(&dev, dtype, 0);
        let norm = NormKind::Batch.build(&store.root(), c, &NormConfig::default())?;
        let shape = (batch, c, side, side);
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., shape, &dev)?.to_dtype(dtype)?)?;
        let g = Tensor::randn(0f32, 1., shape, &dev)?.to_dtype(dtype)?;
        let bytes = (batch * c * side * side * dtype.size_in_bytes()) as f64;
        let forward = median(|| {
            let start = Instant::now();
            norm.forward_relu_t(x.as_tensor(), true)?;
            Ok(start.elapsed().as_secs_f64())
        })?;
        let backward = median(|| {
            let loss = norm
                .forward_relu_t(x.as_tensor(), true)?
                .apply_op2(&g, SeedGrad)?;
            let start = Instant::now();
            drop(loss.backward()?);
            Ok(start.elapsed().as_secs_f64())
        })?;
        let (stream_fwd, stream_bwd) = stream_times(x.as_tensor(), &g)?;
        println!(
            "c{c:<3} {side:2}×{side:<2} ×{count}  forward {:5.2} ms {:5.1} GB/s (stream {:5.2} ms, ×{:.2})  \
             backward {:5.2} ms {:5.1} GB/s (stream {:5.2} ms, ×{:.2})",
            forward * 1e3,
            2.0 * bytes / forward / 1e9,
            stream_fwd * 1e3,
            forward / stream_fwd,
            backward * 1e3,
            3.0 * bytes / backward / 1e9,
            stream_bwd * 1e3,
            backward / stream_bwd,
        );
        for (total, t) in totals
            .iter_mut()
            .zip([forward, stream_fwd, backward, stream_bwd])
        {
            *total += t * count as f64;
        }
    }
    println!(
        "weighted by PreResNet-20's counts: forward {:.1} ms (stream {:.1}), backward {:.1} ms \
         (stream {:.1})",
        totals[0] * 1e3,
        totals[1] * 1e3,
        totals[2] * 1e3,
        totals[3] * 1e3
    );
    Ok(())
}
