//! Times each pass of `explr_nn::conv2d` on the convolution shapes of PreResNet-20 (forward,
//! input gradient, weight gradient, each alone), on the kernel set the CPU's best (or
//! `--kernels`), and prints one line per shape with the GFLOP/s of each pass and, at the end, the
//! totals weighted by how often PreResNet-20 runs each shape. A backward time includes candle's
//! autograd around the pass (a `dy` of ones is made for it).
//!
//! ```sh
//! RAYON_NUM_THREADS=2 cargo run --release -p explr-nn --example conv_passes -- \
//!     [--batch 128] [--width 16] [--dtype f32|f64] [--kernels avx512|avx2|im2col]
//! ```

use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use explr_nn::ConvKernels;

/// A convolution of PreResNet-20 and how many times a step runs it.
struct Shape {
    name: String,
    cin: usize,
    cout: usize,
    side: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    count: usize,
}

/// PreResNet-20's convolutions at `width` channels in its first stage (16 in the paper's
/// network; 2·width and 4·width in the next two): the 3 × 3 ones with padding 1, then the two
/// 1 × 1 stride-2 shortcuts.
fn shapes(width: usize) -> Vec<Shape> {
    let (a, b, c) = (width, 2 * width, 4 * width);
    let conv3 = |cin: usize, cout: usize, side: usize, stride: usize, count: usize| Shape {
        name: format!(
            "c{cin}k{cout}s{side}{}",
            if stride == 2 { "/2" } else { "" }
        ),
        cin,
        cout,
        side,
        kernel: 3,
        stride,
        padding: 1,
        count,
    };
    let shortcut = |cin: usize, cout: usize, side: usize| Shape {
        name: format!("c{cin}k{cout}s{side}/2 1×1"),
        kernel: 1,
        padding: 0,
        ..conv3(cin, cout, side, 2, 1)
    };
    let mut stem = conv3(3, a, 32, 1, 1);
    stem.name += " (stem)";
    vec![
        stem,
        conv3(a, a, 32, 1, 6),
        conv3(a, b, 32, 2, 1),
        conv3(b, b, 16, 1, 5),
        conv3(b, c, 16, 2, 1),
        conv3(c, c, 8, 1, 5),
        shortcut(a, b, 32),
        shortcut(b, c, 16),
    ]
}

/// Median over 8 runs, after one warm-up, of the seconds `timed` measures and returns (the
/// part of a run it times: all of it for the forward pass, the backward alone for a gradient).
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
            "--kernels" => ConvKernels::force(Some(value.parse().context("--kernels")?))?,
            other => bail!("unknown flag {other}: expected --batch, --width, --dtype or --kernels"),
        }
    }
    let dev = Device::Cpu;
    let mut totals = [0.0f64; 3];
    println!(
        "{} kernels, batch {batch}, width {width}, {dtype:?}: ms and GFLOP/s per pass",
        ConvKernels::in_use()
    );
    for s in shapes(width) {
        let x = Tensor::randn(0f32, 1., (batch, s.cin, s.side, s.side), &dev)?.to_dtype(dtype)?;
        let w =
            Tensor::randn(0f32, 1., (s.cout, s.cin, s.kernel, s.kernel), &dev)?.to_dtype(dtype)?;
        let (xv, wv) = (Var::from_tensor(&x)?, Var::from_tensor(&w)?);
        let out = (s.side + 2 * s.padding - s.kernel) / s.stride + 1;
        let flops = 2.0 * (batch * s.cout * s.cin * s.kernel * s.kernel * out * out) as f64;
        let conv = |x: &Tensor, w: &Tensor| explr_nn::conv2d(x, w, s.stride, s.padding);
        let forward = median(|| {
            let start = Instant::now();
            conv(&x, &w)?;
            Ok(start.elapsed().as_secs_f64())
        })?;
        // With only x (or only w) a variable, the backward runs that one gradient.
        let backward = |x: &Tensor, w: &Tensor| {
            median(|| {
                let y = conv(x, w)?;
                let start = Instant::now();
                drop(y.backward()?);
                Ok(start.elapsed().as_secs_f64())
            })
        };
        let times = [
            forward,
            backward(xv.as_tensor(), &w)?,
            backward(&x, wv.as_tensor())?,
        ];
        let mut line = format!("{:16} ×{}", s.name, s.count);
        for ((pass, t), total) in ["forward", "dx", "dw"].iter().zip(times).zip(&mut totals) {
            line += &format!("  {pass} {:6.2} ms {:5.1}", t * 1e3, flops / t / 1e9);
            *total += t * s.count as f64;
        }
        println!("{line}");
    }
    println!(
        "weighted by PreResNet-20's counts: forward {:.1} ms, dx {:.1} ms, dw {:.1} ms",
        totals[0] * 1e3,
        totals[1] * 1e3,
        totals[2] * 1e3
    );
    Ok(())
}
